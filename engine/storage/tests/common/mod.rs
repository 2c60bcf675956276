//! Helpers shared by the integration tests: batches with known contents, and a log on any
//! strategy in a fresh place.
#![allow(dead_code)]

use std::path::PathBuf;

use shardlog_storage::batch::{self, BatchBuilder, Compression};
use shardlog_storage::storage::{SimDisk, Storage, StrategyKind};

/// Where a test's log lives: a temporary directory on a real file system (O_DIRECT needs one
/// that supports it, so not tmpfs), or a path on a simulated disk.
pub struct Place {
    pub storage: Storage,
    pub dir: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl Place {
    /// Opens (or reopens) the log here with `config`; panics naming `what` if it cannot.
    pub async fn open(
        &self,
        config: shardlog_storage::LogConfig,
        what: &str,
    ) -> shardlog_storage::PartitionLog {
        shardlog_storage::PartitionLog::open(self.storage.clone(), &self.dir, config)
            .await
            .unwrap_or_else(|error| panic!("{what}: {error}"))
    }
}

/// A fresh place for `kind`. Call inside an executor: the simulated disk is single-core.
pub fn place(kind: StrategyKind) -> Place {
    match kind {
        StrategyKind::Sim => Place {
            storage: Storage::Sim(SimDisk::new(7)),
            dir: PathBuf::from("/sim/topic-0"),
            _temporary: None,
        },
        real => {
            let temporary = tempfile::Builder::new()
                .prefix("shardlog-test-")
                .tempdir_in(test_root())
                .expect("temporary directory");
            Place {
                storage: Storage::new(real),
                dir: temporary.path().join("topic-0"),
                _temporary: Some(temporary),
            }
        }
    }
}

/// The directory real-file tests write under: `$SHARDLOG_TEST_DIR`, else the target dir.
pub fn test_root() -> PathBuf {
    let root = std::env::var_os("SHARDLOG_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&root).expect("test root");
    root
}

/// Runs a test body on a glommio executor.
pub fn run<T>(body: impl std::future::Future<Output = T>) -> T {
    shardlog_storage::runtime::run_local(shardlog_storage::runtime::IO_MEMORY_BYTES_DEFAULT, body)
}

/// A batch of `records` records whose values are `value_bytes` long and derived from `seed`,
/// stamped from `timestamp_ms` on (one millisecond apart).
pub fn make_batch(records: usize, value_bytes: usize, timestamp_ms: i64, seed: u64) -> Vec<u8> {
    make_batch_with(records, value_bytes, timestamp_ms, seed, Compression::None)
}

pub fn make_batch_with(
    records: usize,
    value_bytes: usize,
    timestamp_ms: i64,
    seed: u64,
    compression: Compression,
) -> Vec<u8> {
    let mut builder = BatchBuilder::new(timestamp_ms, compression);
    for index in 0..records {
        let key = format!("key-{seed}-{index}");
        let value: Vec<u8> = (0..value_bytes)
            .map(|byte| (seed as usize * 31 + index * 7 + byte) as u8)
            .collect();
        builder.push_kv(
            Some(key.as_bytes()),
            Some(&value),
            &[(b"h".as_slice(), Some(b"v".as_slice()))],
            timestamp_ms + index as i64,
        );
    }
    // The producer's base offset is meaningless; the log overwrites it.
    builder.build(0).expect("a batch of test records encodes")
}

/// Splits bytes read from the log into batches, checking each one's CRC.
pub fn split_batches(bytes: &[u8]) -> Vec<Vec<u8>> {
    batch::batches(bytes, usize::MAX)
        .map(|item| {
            let (position, header) = item.expect("the log returns only whole, valid batches");
            bytes[position..position + header.total_bytes()].to_vec()
        })
        .collect()
}

/// A batch as the log stores it: base offset and leader epoch patched in.
pub fn as_stored(mut batch: Vec<u8>, base_offset: i64, leader_epoch: i32) -> Vec<u8> {
    batch::patch_base_offset(&mut batch, base_offset);
    batch::patch_partition_leader_epoch(&mut batch, leader_epoch);
    batch
}

/// Every batch from `offset` to the end, read in `max_bytes` steps.
pub async fn read_all(
    log: &shardlog_storage::PartitionLog,
    from_offset: i64,
    max_bytes: u64,
) -> Vec<Vec<u8>> {
    let mut offset = from_offset;
    let mut batches = Vec::new();
    loop {
        let regions = log.read(offset, max_bytes).await.expect("read");
        if regions.is_empty() {
            break;
        }
        for region in regions {
            let bytes = region.read_bytes().await.expect("region bytes");
            for batch in split_batches(&bytes) {
                let header = shardlog_storage::batch::validate(&batch, usize::MAX).expect("valid");
                offset = header.last_offset() + 1;
                batches.push(batch);
            }
        }
    }
    assert_eq!(offset, log.log_end_offset(), "reading stops at the log end");
    batches
}

/// How each round of [`crash_rounds`] crashes: four producers append `steps_per_producer`
/// batches each (the first also enforcing retention after each append when
/// `enforce_retention`), and the disk crashes after between 1 and `turns_max` scheduler
/// turns, by seed and round.
pub struct CrashPlan {
    pub steps_per_producer: u64,
    pub turns_max: u64,
    pub enforce_retention: bool,
}

/// Six rounds on a simulated disk seeded with `seed`: reopen the log at `dir` with `config`
/// and check it holds every batch acknowledged so far ([`reopen_and_check`]), then crash it
/// while producers append at the round's leader epoch ([`CrashPlan`]). `after_crash` sees
/// each round's log after its crash.
pub async fn crash_rounds(
    seed: u64,
    dir: &std::path::Path,
    config: &shardlog_storage::LogConfig,
    plan: &CrashPlan,
    mut after_crash: impl FnMut(&shardlog_storage::PartitionLog),
) {
    let disk = SimDisk::new(seed);
    let storage = Storage::Sim(disk.clone());
    let mut acknowledged = std::collections::BTreeMap::new();
    for round in 0..6u64 {
        let context = format!("seed {seed} round {round}");
        let (log, recovered) =
            reopen_and_check(&storage, dir, config, &acknowledged, &context).await;
        acknowledged = recovered;
        let crash = CrashRound {
            seed,
            round,
            epoch: round as i32,
            steps_per_producer: plan.steps_per_producer,
            turns: (seed * 7 + round * 13) % plan.turns_max + 1,
            enforce_retention: plan.enforce_retention,
        };
        let log = std::rc::Rc::new(log);
        let acked = crash_while_appending(&log, &disk, &crash).await;
        after_crash(&log);
        acknowledged.extend(acked);
    }
}

/// One round of [`crash_rounds`].
struct CrashRound {
    seed: u64,
    round: u64,
    epoch: i32,
    steps_per_producer: u64,
    turns: u64,
    enforce_retention: bool,
}

/// Runs one [`CrashRound`] against `log` on `disk`; returns every acknowledged batch as the
/// log stored it, with its base offset.
async fn crash_while_appending(
    log: &std::rc::Rc<shardlog_storage::PartitionLog>,
    disk: &SimDisk,
    crash: &CrashRound,
) -> Vec<(i64, Vec<u8>)> {
    let acked = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let producers: Vec<_> = (0..4u64)
        .map(|producer| {
            let log = std::rc::Rc::clone(log);
            let acked = std::rc::Rc::clone(&acked);
            let (seed, round, epoch) = (crash.seed, crash.round, crash.epoch);
            let (steps, retention) = (crash.steps_per_producer, crash.enforce_retention);
            glommio::spawn_local(async move {
                for step in 0..steps {
                    let tag = seed * 10_000 + round * 100 + producer * 10 + step;
                    let batch = make_batch(3, 700, 0, tag);
                    match log.append(&batch, epoch).await {
                        Ok(info) => acked
                            .borrow_mut()
                            .push((info.base_offset, as_stored(batch, info.base_offset, epoch))),
                        Err(_) => break,
                    }
                    if retention && producer == 0 && log.enforce_retention(0).await.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    for _ in 0..crash.turns {
        futures_lite::future::yield_now().await;
    }
    disk.crash();
    for producer in producers {
        producer.await;
    }
    acked.take()
}

/// Linked and pipelined group commits, alternately by seed: pipelined commits must not
/// declare early.
pub fn alternating_commit_mode(seed: u64) -> shardlog_storage::storage::CommitMode {
    if seed.is_multiple_of(2) {
        shardlog_storage::storage::CommitMode::Linked
    } else {
        shardlog_storage::storage::CommitMode::Pipelined
    }
}

/// Reopens a log after a crash and checks what recovery kept: batches that run contiguously
/// from the log start to the log end, holding every batch of `acknowledged` at or after the
/// start byte for byte. Returns the log and what it holds by base offset, which is durable
/// now: the next round's baseline.
async fn reopen_and_check(
    storage: &Storage,
    dir: &std::path::Path,
    config: &shardlog_storage::LogConfig,
    acknowledged: &std::collections::BTreeMap<i64, Vec<u8>>,
    context: &str,
) -> (
    shardlog_storage::PartitionLog,
    std::collections::BTreeMap<i64, Vec<u8>>,
) {
    let log = shardlog_storage::PartitionLog::open(storage.clone(), dir, config.clone())
        .await
        .unwrap_or_else(|error| panic!("{context}: reopen: {error}"));
    let start = log.log_start_offset();
    let recovered = read_all(&log, start, 1 << 20).await;
    let mut next = start;
    for batch in &recovered {
        let header = batch::validate(batch, usize::MAX).expect("valid recovered batch");
        assert_eq!(header.base_offset, next, "{context}: offsets contiguous");
        next = header.last_offset() + 1;
    }
    assert_eq!(
        next,
        log.log_end_offset(),
        "{context}: recovered up to the end"
    );
    let by_offset: std::collections::BTreeMap<i64, Vec<u8>> = recovered
        .into_iter()
        .map(|batch| {
            let base_offset = batch::validate(&batch, usize::MAX)
                .expect("valid recovered batch")
                .base_offset;
            (base_offset, batch)
        })
        .collect();
    for (offset, batch) in acknowledged.range(start..) {
        assert_eq!(
            by_offset.get(offset),
            Some(batch),
            "{context}: acknowledged batch at offset {offset} lost"
        );
    }
    (log, by_offset)
}
