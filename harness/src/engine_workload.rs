//! The in-process storage workload: appenders on one core append batches to one partition
//! log as fast as it acknowledges them (a closed loop: no coordinated omission to correct),
//! recording each append's latency, from the call to the acknowledgement, in microseconds.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::LocalExecutorBuilder;
use hdrhistogram::Histogram;
use shardlog::batch::{BatchBuilder, Compression};
use shardlog::storage::CommitMode;
use shardlog::{Durability, LogConfig, PartitionLog, Storage, StrategyKind};

/// One run's settings.
#[derive(Clone, Debug)]
pub struct EngineWorkload {
    pub strategy: StrategyKind,
    pub durability: Durability,
    pub commit_mode: CommitMode,
    pub append_bytes: u64,
    pub record_bytes: u64,
    pub appenders: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub segment_bytes: u64,
    /// Retention by size: whole old segments are dropped while the log stays at least this
    /// big, checked every [`RETENTION_CHECK_INTERVAL`]. With it the log reaches a steady state
    /// in which rolls can recycle dropped segments' files.
    pub retention_bytes: Option<u64>,
    /// `LogConfig::recycle_segments`.
    pub recycle_segments: bool,
    pub data_dir: PathBuf,
    pub io_memory_bytes: usize,
}

/// One second of the measured period.
#[derive(Clone, Debug)]
pub struct Window {
    pub bytes: u64,
}

/// What a run measured.
pub struct Outcome {
    /// Bytes of batches acknowledged in the measured period.
    pub bytes: u64,
    pub appends: u64,
    pub records: u64,
    /// From the end of the warm-up to the last acknowledgement and a final flush.
    pub elapsed: Duration,
    /// Append latency in microseconds, all appenders merged into one histogram.
    pub latency_us: Histogram<u64>,
    pub windows: Vec<Window>,
    pub batch_bytes: u64,
    /// CPU time the process used during the measured period.
    pub cpu: Duration,
    /// Segment files kept by retention and rolls that reused one, over the whole run.
    pub recycle: shardlog::log::RecycleStats,
}

/// How often the retention task runs: often enough that a segment (64 MiB or more at a few
/// GB/s) is dropped soon after the log grows past the limit.
pub const RETENTION_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// Highest latency the histogram tracks: 60 s, in microseconds, at 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;

fn template_batch(workload: &EngineWorkload) -> Vec<u8> {
    let records = (workload.append_bytes / workload.record_bytes).max(1);
    let value = vec![0x5a; workload.record_bytes as usize];
    let mut builder = BatchBuilder::new(0, Compression::None);
    for index in 0..records {
        let key = index.to_be_bytes();
        builder.push_kv(Some(&key), Some(&value), &[], index as i64);
    }
    builder
        .build(0)
        .expect("a batch of harness records encodes")
}

/// Runs the workload on a fresh executor thread and returns what it measured.
pub fn run(workload: &EngineWorkload) -> Result<Outcome, String> {
    let _ = std::fs::remove_dir_all(&workload.data_dir);
    let workload = workload.clone();
    let data_dir = workload.data_dir.clone();
    let handle = LocalExecutorBuilder::default()
        .name("harness-engine")
        .io_memory(workload.io_memory_bytes)
        .spawn(move || async move { drive(workload).await })
        .map_err(|error| {
            format!("cannot start a glommio executor ({error}): io_uring must be enabled and RLIMIT_MEMLOCK above --io-memory (README: memlock)")
        })?;
    let result = handle
        .join()
        .map_err(|error| format!("executor failed: {error}"))?;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

/// CPU time this process has used (user + system).
pub fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

struct Shared {
    measuring: Cell<bool>,
    stopping: Cell<bool>,
    bytes: Cell<u64>,
    appends: Cell<u64>,
    latency_us: RefCell<Histogram<u64>>,
    failure: RefCell<Option<String>>,
}

async fn drive(workload: EngineWorkload) -> Result<Outcome, String> {
    let config = LogConfig {
        segment_bytes: workload.segment_bytes,
        retention_bytes: workload.retention_bytes,
        recycle_segments: workload.recycle_segments,
        durability: workload.durability,
        commit_mode: workload.commit_mode,
        max_batch_bytes: (workload.append_bytes as usize + 1024 * 1024).max(8 << 20),
        ..LogConfig::default()
    };
    let storage = Storage::new(workload.strategy);
    let log = PartitionLog::open(storage, &workload.data_dir, config)
        .await
        .map_err(|error| format!("open {}: {error}", workload.data_dir.display()))?;
    let template = Rc::new(template_batch(&workload));
    let records_per_batch = (workload.append_bytes / workload.record_bytes).max(1);
    let histogram =
        Histogram::new_with_max(LATENCY_US_MAX, 3).map_err(|error| error.to_string())?;
    let shared = Rc::new(Shared {
        measuring: Cell::new(false),
        stopping: Cell::new(false),
        bytes: Cell::new(0),
        appends: Cell::new(0),
        latency_us: RefCell::new(histogram),
        failure: RefCell::new(None),
    });

    let appenders: Vec<_> = (0..workload.appenders)
        .map(|_| {
            let log = log.clone();
            let template = Rc::clone(&template);
            let shared = Rc::clone(&shared);
            glommio::spawn_local(async move {
                let mut batch = template.to_vec();
                while !shared.stopping.get() {
                    batch.copy_from_slice(&template);
                    let started = Instant::now();
                    if let Err(error) = log.append(&batch, 0).await {
                        shared.failure.borrow_mut().get_or_insert(error.to_string());
                        shared.stopping.set(true);
                        break;
                    }
                    if shared.measuring.get() {
                        let latency_us = started.elapsed().as_micros() as u64;
                        let _ = shared
                            .latency_us
                            .borrow_mut()
                            .record(latency_us.clamp(1, LATENCY_US_MAX));
                        shared.bytes.set(shared.bytes.get() + batch.len() as u64);
                        shared.appends.set(shared.appends.get() + 1);
                    }
                }
            })
        })
        .collect();

    let retention = workload.retention_bytes.map(|_| {
        let log = log.clone();
        let shared = Rc::clone(&shared);
        glommio::spawn_local(async move {
            while !shared.stopping.get() {
                glommio::timer::sleep(RETENTION_CHECK_INTERVAL).await;
                if let Err(error) = log.enforce_retention(0).await {
                    shared.failure.borrow_mut().get_or_insert(error.to_string());
                    shared.stopping.set(true);
                }
            }
        })
    });

    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_message(format!("{}: warming up", workload.strategy));
    glommio::timer::sleep(workload.warmup).await;
    shared.measuring.set(true);
    let started = Instant::now();
    let cpu_started = cpu_time();
    let mut windows = Vec::new();
    let mut bytes_seen = 0;
    while started.elapsed() < workload.duration && !shared.stopping.get() {
        glommio::timer::sleep(Duration::from_secs(1).min(workload.duration)).await;
        let bytes = shared.bytes.get();
        windows.push(Window {
            bytes: bytes - bytes_seen,
        });
        bytes_seen = bytes;
        let elapsed_s = started.elapsed().as_secs_f64();
        let p99_us = shared.latency_us.borrow().value_at_quantile(0.99);
        progress.set_message(format!(
            "{}: {elapsed_s:.0}s {:.0} MB/s, p99 {p99_us} us",
            workload.strategy,
            bytes as f64 / elapsed_s / 1e6
        ));
        progress.tick();
    }
    shared.measuring.set(false);
    shared.stopping.set(true);
    for appender in appenders {
        appender.await;
    }
    if let Some(retention) = retention {
        retention.await;
    }
    // Count the write-behind still in flight: acknowledged bytes must reach the file.
    log.flush()
        .await
        .map_err(|error| format!("final flush: {error}"))?;
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_started);
    progress.finish_and_clear();
    log.close()
        .await
        .map_err(|error| format!("close: {error}"))?;
    if let Some(failure) = shared.failure.borrow_mut().take() {
        return Err(format!("append failed: {failure}"));
    }
    let recycle = log.recycle_stats();
    let appends = shared.appends.get();
    let latency_us = shared.latency_us.borrow().clone();
    Ok(Outcome {
        bytes: shared.bytes.get(),
        appends,
        records: appends * records_per_batch,
        elapsed,
        latency_us,
        windows,
        batch_bytes: template.len() as u64,
        cpu,
        recycle,
    })
}
