//! Produce-path throughput of [`PartitionLog::append`] on real files.
//!
//! - `append/<strategy>/<durability>/<size>`: one task appends batches of `<size>` (~1 KiB
//!   records) one after another, for each strategy (`direct`, `buffered`, `uring`), durability
//!   (`none`, `always`) and size (4 KiB, 64 KiB, 1 MiB).
//! - `group_commit/<strategy>/<durability>/16x64KiB`: 16 tasks append 64 KiB batches to one
//!   log at once; with `always` they share fdatasyncs. One iteration is one batch from each
//!   task, and throughput counts all 16.
//!
//! **What one sample times.** Each criterion sample opens a fresh log (256 MiB segments,
//! preallocated) in a new directory, then times from the first append until the last one is
//! acknowledged: with `always` that means durable; with `none` the run ends with
//! [`PartitionLog::flush`], so every byte has reached the file (page cache for `buffered`, the
//! device for the O_DIRECT strategies), and the flush is timed too. Opening and deleting the
//! log are not timed. Runs longer than 256 MiB roll segments, and each roll's fsync is timed.
//!
//! **The copy.** An append patches the batch in place, so each append first copies the batch
//! from a template into the producer's buffer. That copy is timed: a broker pays it anyway
//! when the request lands in its receive buffer.
//!
//! Timing defaults (overridable on the command line): 1 s warm-up, 3 s measurement, 10
//! samples of equal iteration counts (flat sampling: an fdatasync costs milliseconds).

use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use shardlog_bench::{
    batch_of_bytes, bench_root, executor, log_config, size_label, TempLog, KIB, MIB,
};
use shardlog_storage::storage::UringIo;
use shardlog_storage::{Durability, StrategyKind};

const SIZES_BYTES: [usize; 3] = [4 * KIB, 64 * KIB, MIB];
const DURABILITIES: [Durability; 2] = [Durability::None, Durability::Always];
const GROUP_COMMIT_TASKS: usize = 16;
const GROUP_COMMIT_BATCH_BYTES: usize = 64 * KIB;
/// The leader epoch stamped into every batch; its value does not matter.
const LEADER_EPOCH: i32 = 1;

fn append(criterion: &mut Criterion) {
    let root = bench_root(env!("CARGO_TARGET_TMPDIR"));
    let mut group = criterion.benchmark_group("append");
    group.sampling_mode(SamplingMode::Flat);
    for kind in StrategyKind::ALL_REAL {
        for durability in DURABILITIES {
            for size_bytes in SIZES_BYTES {
                let template = batch_of_bytes(size_bytes);
                let executor = executor();
                let id = format!("{kind}/{}/{}", durability.name(), size_label(size_bytes));
                group.throughput(Throughput::Bytes(size_bytes as u64));
                group.bench_function(id, |bencher| {
                    bencher.iter_custom(|iters| {
                        executor.run(timed_appends(kind, &root, durability, &template, iters))
                    })
                });
            }
        }
    }
    group.finish();
    report_uring_path();
}

/// Appends `iters` copies of `template` to a fresh log and returns how long they took.
async fn timed_appends(
    kind: StrategyKind,
    root: &std::path::Path,
    durability: Durability,
    template: &[u8],
    iters: u64,
) -> Duration {
    let temp = TempLog::open(kind, root, log_config(durability)).await;
    let mut buffer = template.to_vec();
    let start = Instant::now();
    for _ in 0..iters {
        // The append patched the last copy in place; start again from the template (timed).
        buffer.copy_from_slice(template);
        temp.log
            .append(&buffer, LEADER_EPOCH)
            .await
            .expect("append");
    }
    if durability == Durability::None {
        temp.log.flush().await.expect("flush");
    }
    let elapsed = start.elapsed();
    drop(temp);
    elapsed
}

fn group_commit(criterion: &mut Criterion) {
    let root = bench_root(env!("CARGO_TARGET_TMPDIR"));
    let mut group = criterion.benchmark_group("group_commit");
    group.sampling_mode(SamplingMode::Flat);
    let template: Rc<[u8]> = batch_of_bytes(GROUP_COMMIT_BATCH_BYTES).into();
    let round_bytes = (GROUP_COMMIT_TASKS * GROUP_COMMIT_BATCH_BYTES) as u64;
    group.throughput(Throughput::Bytes(round_bytes));
    for kind in StrategyKind::ALL_REAL {
        for durability in DURABILITIES {
            let executor = executor();
            let id = format!(
                "{kind}/{}/{GROUP_COMMIT_TASKS}x{}",
                durability.name(),
                size_label(GROUP_COMMIT_BATCH_BYTES)
            );
            group.bench_function(id, |bencher| {
                bencher.iter_custom(|iters| {
                    let template = Rc::clone(&template);
                    executor.run(timed_concurrent_appends(
                        kind, &root, durability, template, iters,
                    ))
                })
            });
        }
    }
    group.finish();
    report_uring_path();
}

/// Says which write path the `uring` benches took: registered buffers need memlock headroom,
/// and without it writes come from the heap (slower), which changes what the numbers mean.
fn report_uring_path() {
    let stats = UringIo::stats();
    if stats.registered_writes + stats.unregistered_writes > 0 {
        eprintln!(
            "uring so far: {} registered buffers, {} registered writes, {} heap writes, \
             {} SQEs in {} submits",
            stats.pool_buffers,
            stats.registered_writes,
            stats.unregistered_writes,
            stats.sqes_submitted,
            stats.submit_calls
        );
    }
}

/// [`GROUP_COMMIT_TASKS`] tasks each append `iters` copies of `template` to one fresh log;
/// returns how long until the last append is acknowledged.
async fn timed_concurrent_appends(
    kind: StrategyKind,
    root: &std::path::Path,
    durability: Durability,
    template: Rc<[u8]>,
    iters: u64,
) -> Duration {
    let temp = TempLog::open(kind, root, log_config(durability)).await;
    let buffers: Vec<Vec<u8>> = (0..GROUP_COMMIT_TASKS).map(|_| template.to_vec()).collect();
    let start = Instant::now();
    let tasks: Vec<_> = buffers
        .into_iter()
        .map(|mut buffer| {
            let log = temp.log.clone();
            let template = Rc::clone(&template);
            glommio::spawn_local(async move {
                for _ in 0..iters {
                    // Each append starts from the template again, as above (timed).
                    buffer.copy_from_slice(&template);
                    log.append(&buffer, LEADER_EPOCH).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    if durability == Durability::None {
        temp.log.flush().await.expect("flush");
    }
    let elapsed = start.elapsed();
    drop(temp);
    elapsed
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = append, group_commit
}
criterion_main!(benches);
