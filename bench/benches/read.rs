//! Fetch-path cost of [`PartitionLog::read`] on a prefilled log, per strategy.
//!
//! Each strategy gets one log, filled when its first benchmark runs (not timed) with 256 MiB
//! of 16 KiB batches (Kafka's default producer `batch.size`) of ~1 KiB records: one full
//! segment, indexed every 4 KiB. Every iteration reads at a random offset whose batch starts
//! a 1 MiB run of whole batches (64 of them).
//!
//! - `read/<strategy>/with_bytes/1MiB`: `read(offset, 1 MiB)` and then
//!   [`FileRegion::read_bytes`](shardlog_storage::segment::FileRegion::read_bytes): what a fetch that
//!   copies costs.
//! - `read/<strategy>/index_walk/1MiB`: `read` alone: the index lookup plus the walk over the
//!   batch headers that decides where the 1 MiB region ends, which a `sendfile` fetch pays
//!   before sending a byte.
//!
//! The log was just written, so `buffered` reads come from the page cache, while `direct` and
//! `uring` (O_DIRECT) bypass it and go to the device every time.
//!
//! Timing defaults (overridable on the command line): 1 s warm-up, 3 s measurement, 20 samples.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardlog_bench::{
    batch_of_bytes, bench_root, executor, log_config, BenchRng, TempLog, KIB, MIB,
};
use shardlog_storage::{Durability, StrategyKind};

const PREFILL_BATCH_BYTES: usize = 16 * KIB;
const READ_BYTES: usize = MIB;
const BATCHES_PER_READ: u64 = (READ_BYTES / PREFILL_BATCH_BYTES) as u64;
const LEADER_EPOCH: i32 = 1;

/// A log holding `batches` batches of `records_per_batch` records each, all the same size.
struct Prefilled {
    temp: TempLog,
    batches: u64,
    records_per_batch: u64,
}

/// Fills one segment of a fresh log with [`PREFILL_BATCH_BYTES`] batches and flushes it.
async fn prefill(kind: StrategyKind, root: &std::path::Path) -> Prefilled {
    let config = log_config(Durability::None);
    let batches = config.segment_bytes / PREFILL_BATCH_BYTES as u64;
    let temp = TempLog::open(kind, root, config).await;
    let template = batch_of_bytes(PREFILL_BATCH_BYTES);
    let mut buffer = template.clone();
    let mut records_per_batch = 0;
    for _ in 0..batches {
        buffer.copy_from_slice(&template);
        let info = temp
            .log
            .append(&buffer, LEADER_EPOCH)
            .await
            .expect("append");
        records_per_batch = (info.last_offset - info.base_offset + 1) as u64;
    }
    temp.log.flush().await.expect("flush");
    assert_eq!(temp.log.segment_count(), 1, "the prefill fits one segment");
    Prefilled {
        temp,
        batches,
        records_per_batch,
    }
}

/// Times `iters` reads of 1 MiB at random offsets, copying the bytes out if `with_bytes`.
async fn timed_reads(
    prefilled: &Prefilled,
    rng: &mut BenchRng,
    iters: u64,
    with_bytes: bool,
) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let batch = rng.below(prefilled.batches - BATCHES_PER_READ + 1);
        let offset = batch * prefilled.records_per_batch + rng.below(prefilled.records_per_batch);
        let regions = prefilled
            .temp
            .log
            .read(offset as i64, READ_BYTES as u64)
            .await
            .expect("read");
        assert_eq!(regions.len(), 1);
        assert_eq!(
            regions[0].len, READ_BYTES as u64,
            "a whole 1 MiB run of batches"
        );
        if with_bytes {
            let bytes = regions[0].read_bytes().await.expect("read bytes");
            assert_eq!(bytes.len(), READ_BYTES);
        }
    }
    start.elapsed()
}

fn read(criterion: &mut Criterion) {
    let root = bench_root(env!("CARGO_TARGET_TMPDIR"));
    let mut group = criterion.benchmark_group("read");
    group.throughput(Throughput::Bytes(READ_BYTES as u64));
    let mut rng = BenchRng::new(3);
    for kind in StrategyKind::ALL_REAL {
        let executor = executor();
        // Filled by the first benchmark of this strategy that the filter lets run.
        let mut prefilled: Option<Prefilled> = None;
        for (mode, with_bytes) in [("with_bytes", true), ("index_walk", false)] {
            group.bench_function(format!("{kind}/{mode}/1MiB"), |bencher| {
                bencher.iter_custom(|iters| {
                    executor.run(async {
                        let filled = match &prefilled {
                            Some(filled) => filled,
                            None => prefilled.insert(prefill(kind, &root).await),
                        };
                        timed_reads(filled, &mut rng, iters, with_bytes).await
                    })
                })
            });
        }
        // The files close inside the executor, before it goes.
        executor.run(async move { drop(prefilled) });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = read
}
criterion_main!(benches);
