//! Appends across frequent rolls: what a roll costs the producers of its partition.
//!
//! - `roll/<strategy>/<durability>/16x64KiB/1MiB-segments`: 16 tasks append 64 KiB batches to
//!   one log whose segments are 1 MiB, so every 16 batches (one iteration: a batch from each
//!   task) the log rolls. Throughput counts all 16 batches.
//!
//! **What one sample times.** As in `append.rs`: a fresh log per sample, timed from the first
//! append until the last is acknowledged (durable with `always`; with `none` a final
//! [`PartitionLog::flush`](shardlog_storage::PartitionLog::flush) is timed too). The rolls'
//! own work (syncing, trimming and indexing the old segment, creating the new file) happens
//! inside the timed region, wherever it runs.
//!
//! **Latency.** Each append's time from call to acknowledgement is recorded too (warm-up
//! included); after each bench its p50, p99 and largest are printed to stderr
//! (`roll latency ...`), because a roll
//! that holds the append lock shows up as a tail of slow appends more than as lost
//! throughput.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use shardlog_bench::{batch_of_bytes, bench_root, executor, size_label, TempLog, KIB, MIB};
use shardlog_storage::{Durability, LogConfig, StrategyKind};

const TASKS: usize = 16;
const BATCH_BYTES: usize = 64 * KIB;
/// Small segments, so a roll comes every `SEGMENT_BYTES / BATCH_BYTES` appends.
const SEGMENT_BYTES: u64 = MIB as u64;
const DURABILITIES: [Durability; 2] = [Durability::None, Durability::Always];
/// The leader epoch stamped into every batch; its value does not matter.
const LEADER_EPOCH: i32 = 1;
/// Most latencies kept per bench (the first ones; enough for a p99 of a few seconds' run).
const LATENCIES_MAX: usize = 1 << 20;

fn roll_config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        preallocate: true,
        durability,
        ..LogConfig::default()
    }
}

fn roll(criterion: &mut Criterion) {
    let root = bench_root(env!("CARGO_TARGET_TMPDIR"));
    let mut group = criterion.benchmark_group("roll");
    group.sampling_mode(SamplingMode::Flat);
    let template: Rc<[u8]> = batch_of_bytes(BATCH_BYTES).into();
    group.throughput(Throughput::Bytes((TASKS * BATCH_BYTES) as u64));
    for kind in StrategyKind::ALL_REAL {
        for durability in DURABILITIES {
            let executor = executor();
            let id = format!(
                "{kind}/{}/{TASKS}x{}/{}-segments",
                durability.name(),
                size_label(BATCH_BYTES),
                size_label(SEGMENT_BYTES as usize)
            );
            let latencies_us: Rc<RefCell<Vec<u32>>> = Rc::default();
            group.bench_function(&id, |bencher| {
                bencher.iter_custom(|iters| {
                    executor.run(timed_rolling_appends(
                        kind,
                        &root,
                        durability,
                        Rc::clone(&template),
                        iters,
                        Rc::clone(&latencies_us),
                    ))
                })
            });
            report_latencies(&id, &mut latencies_us.borrow_mut());
        }
    }
    group.finish();
}

/// [`TASKS`] tasks each append `iters` copies of `template` to one fresh log of small
/// segments; returns how long until the last append is acknowledged.
async fn timed_rolling_appends(
    kind: StrategyKind,
    root: &std::path::Path,
    durability: Durability,
    template: Rc<[u8]>,
    iters: u64,
    latencies_us: Rc<RefCell<Vec<u32>>>,
) -> Duration {
    let temp = TempLog::open(kind, root, roll_config(durability)).await;
    let buffers: Vec<Vec<u8>> = (0..TASKS).map(|_| template.to_vec()).collect();
    let start = Instant::now();
    let tasks: Vec<_> = buffers
        .into_iter()
        .map(|mut buffer| {
            let log = temp.log.clone();
            let template = Rc::clone(&template);
            let latencies_us = Rc::clone(&latencies_us);
            glommio::spawn_local(async move {
                for _ in 0..iters {
                    // The append patched the last copy in place; start from the template.
                    buffer.copy_from_slice(&template);
                    let called = Instant::now();
                    log.append(&buffer, LEADER_EPOCH).await.expect("append");
                    let mut latencies_us = latencies_us.borrow_mut();
                    if latencies_us.len() < LATENCIES_MAX {
                        let elapsed_us = called.elapsed().as_micros();
                        latencies_us.push(u32::try_from(elapsed_us).unwrap_or(u32::MAX));
                    }
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

/// Prints the p50, p99 and largest append latency recorded for bench `id`, and forgets them.
fn report_latencies(id: &str, latencies_us: &mut Vec<u32>) {
    if latencies_us.is_empty() {
        return;
    }
    latencies_us.sort_unstable();
    let at = |per_mille: usize| latencies_us[(latencies_us.len() - 1) * per_mille / 1000];
    eprintln!(
        "roll latency {id}: p50 {} us, p99 {} us, max {} us over {} appends",
        at(500),
        at(990),
        latencies_us[latencies_us.len() - 1],
        latencies_us.len()
    );
    latencies_us.clear();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = roll
}
criterion_main!(benches);
