//! A property test: random sequences of append, read, truncate, roll, sync, clean reopen and
//! crash on the simulated strategy, checked after every step against a plain in-memory model
//! (a vector of the batches the log should hold).

mod common;

use std::path::Path;

use common::{as_stored, make_batch, read_all, run, split_batches};
use proptest::prelude::*;
use shardlog_storage::batch;
use shardlog_storage::storage::{SimDisk, Storage};
use shardlog_storage::{Durability, LogConfig, PartitionLog};

#[derive(Clone, Debug)]
enum Step {
    Append { records: usize, value_bytes: usize },
    Read { at_per_mille: u32, max_bytes: u64 },
    Truncate { at_per_mille: u32 },
    Roll,
    Sync,
    Reopen,
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (1usize..20, 1usize..2000)
            .prop_map(|(records, value_bytes)| Step::Append { records, value_bytes }),
        3 => (0u32..1000, 1u64..200_000)
            .prop_map(|(at_per_mille, max_bytes)| Step::Read { at_per_mille, max_bytes }),
        1 => (0u32..1000).prop_map(|at_per_mille| Step::Truncate { at_per_mille }),
        1 => Just(Step::Roll),
        1 => Just(Step::Sync),
        1 => Just(Step::Reopen),
        1 => Just(Step::Crash),
    ]
}

fn header(batch: &[u8]) -> batch::BatchHeader {
    batch::validate(batch, usize::MAX).expect("model batches are valid")
}

fn end_offset(model: &[Vec<u8>]) -> i64 {
    model
        .last()
        .map_or(0, |batch| header(batch).last_offset() + 1)
}

fn check_sequence(steps: Vec<Step>, always: bool, seed: u64) {
    run(async move {
        let disk = SimDisk::new(seed);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/model");
        let config = LogConfig {
            segment_bytes: 48 * 1024,
            chunk_bytes: 8 * 1024,
            write_behind_max: 2,
            index_interval_bytes: 1024,
            durability: if always {
                Durability::Always
            } else {
                Durability::None
            },
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .expect("open");
        let mut model: Vec<Vec<u8>> = Vec::new();
        // Batches below this many are durable whatever the policy (synced, rolled or closed).
        let mut durable_batches = 0usize;
        for (index, step) in steps.into_iter().enumerate() {
            match step {
                Step::Append {
                    records,
                    value_bytes,
                } => {
                    let batch = make_batch(records, value_bytes, index as i64, index as u64);
                    let info = log
                        .append(&batch, 0)
                        .await
                        .unwrap_or_else(|error| panic!("step {index}: append: {error}"));
                    assert_eq!(info.base_offset, end_offset(&model));
                    model.push(as_stored(batch, info.base_offset, 0));
                    if always {
                        durable_batches = model.len();
                    }
                }
                Step::Read {
                    at_per_mille,
                    max_bytes,
                } => {
                    let end = end_offset(&model);
                    let offset = end * i64::from(at_per_mille) / 1000;
                    let regions = log.read(offset, max_bytes).await.expect("read");
                    let first = model
                        .iter()
                        .position(|batch| header(batch).last_offset() >= offset);
                    match first {
                        None => assert!(regions.is_empty()),
                        Some(first) => {
                            let bytes = regions[0].read_bytes().await.expect("bytes");
                            let got = split_batches(&bytes);
                            assert!(!got.is_empty());
                            assert!(got.len() == 1 || bytes.len() as u64 <= max_bytes);
                            assert_eq!(got[..], model[first..first + got.len()]);
                        }
                    }
                }
                Step::Truncate { at_per_mille } => {
                    let end = end_offset(&model);
                    let offset = end * i64::from(at_per_mille) / 1000;
                    let new_end = log.truncate_to(offset).await.expect("truncate");
                    model.retain(|batch| header(batch).last_offset() < offset);
                    assert_eq!(new_end, end_offset(&model));
                    durable_batches = durable_batches.min(model.len());
                }
                Step::Roll => {
                    log.roll_now().await.expect("roll");
                    durable_batches = model.len();
                }
                Step::Sync => {
                    log.sync().await.expect("sync");
                    durable_batches = model.len();
                }
                Step::Reopen => {
                    log.close().await.expect("close");
                    log = PartitionLog::open(storage.clone(), dir, config.clone())
                        .await
                        .expect("reopen");
                    assert!(log.recovery_report().clean_shutdown);
                    durable_batches = model.len();
                }
                Step::Crash => {
                    disk.crash();
                    drop(log);
                    log = PartitionLog::open(storage.clone(), dir, config.clone())
                        .await
                        .expect("reopen after crash");
                    let recovered = read_all(&log, 0, 1 << 20).await;
                    assert!(recovered.len() >= durable_batches, "lost durable batches");
                    assert!(recovered.len() <= model.len());
                    assert_eq!(recovered[..], model[..recovered.len()], "not a prefix");
                    model = recovered;
                    durable_batches = model.len();
                }
            }
            assert_eq!(log.log_end_offset(), end_offset(&model));
        }
        assert_eq!(read_all(&log, 0, 1 << 20).await, model);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_vector_of_batches(
        steps in proptest::collection::vec(step(), 1..60),
        always in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_sequence(steps, always, seed);
    }
}

#[test]
fn regression_truncate_to_start_then_reopen() {
    let steps = vec![
        Step::Append {
            records: 10,
            value_bytes: 1839,
        },
        Step::Append {
            records: 10,
            value_bytes: 268,
        },
        Step::Append {
            records: 17,
            value_bytes: 976,
        },
        Step::Append {
            records: 7,
            value_bytes: 1480,
        },
        Step::Truncate { at_per_mille: 0 },
        Step::Append {
            records: 1,
            value_bytes: 1,
        },
        Step::Append {
            records: 1,
            value_bytes: 1,
        },
        Step::Reopen,
        Step::Append {
            records: 1,
            value_bytes: 1,
        },
    ];
    check_sequence(steps, false, 0);
}
