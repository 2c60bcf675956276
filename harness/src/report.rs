//! Summaries, result folders and the side-by-side table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use serde::Serialize;

use hdrhistogram::Histogram;

use crate::broker_workload::{BrokerOutcome, BrokerWorkload, CpuUse};
use crate::engine_workload::{EngineWorkload, Outcome};
use crate::faults::FaultReport;
use crate::machine;
use crate::rate_search::SearchSummary;
use crate::verify::Verification;

/// Latency percentiles in microseconds, from one merged histogram.
#[derive(Serialize, Debug, Clone)]
pub struct Latency {
    pub avg: f64,
    pub p50: u64,
    pub p75: u64,
    pub p95: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
    /// (percentile, microseconds) from 0 to 100 with ever more nines, for percentile
    /// curves (`scripts/charts.py`).
    pub distribution: Vec<(f64, u64)>,
}

/// Steps per decade of nines in [`Latency::distribution`]: 90, 99, 99.9... and 4 points
/// between each.
const DISTRIBUTION_STEPS_PER_NINE: i32 = 4;

/// The deepest percentile in [`Latency::distribution`] before 100: 99.9999.
const DISTRIBUTION_NINES_MAX: i32 = 6;

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        let mut distribution: Vec<(f64, u64)> = (0..DISTRIBUTION_NINES_MAX
            * DISTRIBUTION_STEPS_PER_NINE)
            .map(|step| {
                let nines = f64::from(step) / f64::from(DISTRIBUTION_STEPS_PER_NINE);
                let quantile = 1.0 - 10f64.powf(-nines);
                (quantile * 100.0, histogram.value_at_quantile(quantile))
            })
            .collect();
        distribution.push((100.0, histogram.max()));
        Latency {
            distribution,
            avg: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p75: histogram.value_at_quantile(0.75),
            p95: histogram.value_at_quantile(0.95),
            p99: histogram.value_at_quantile(0.99),
            p99_9: histogram.value_at_quantile(0.999),
            p99_99: histogram.value_at_quantile(0.9999),
            max: histogram.max(),
        }
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Summary {
    pub workload: String,
    pub strategy: String,
    pub durability: String,
    pub appenders: usize,
    pub batch_bytes: u64,
    pub appends: u64,
    pub records: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub throughput_mb_s: f64,
    pub records_per_s: f64,
    pub append_latency_us: Latency,
    /// Process CPU seconds per GB appended (engine and load generator together).
    pub cpu_s_per_gb: f64,
    /// Throughput of each one-second window, MB/s.
    pub window_mb_s: Vec<f64>,
    pub segment_bytes: u64,
    /// Retention by size, if the run had it (then the log is in a steady state).
    pub retention_bytes: Option<u64>,
    /// Segment files retention kept as spares, and rolls that started in one.
    pub segments_recycled_kept: u64,
    pub segments_recycled_reused: u64,
}

/// `engine-append-<bytes>B-x<appenders>-<durability>`, plus `-retained<bytes>B` (and
/// `-norecycle`) for a steady-state run with retention.
pub fn workload_name(workload: &EngineWorkload) -> String {
    let mut name = format!(
        "engine-append-{}B-x{}-{}",
        workload.append_bytes,
        workload.appenders,
        workload.durability.name()
    );
    if let Some(retention_bytes) = workload.retention_bytes {
        name += &format!("-seg{}B-retained{retention_bytes}B", workload.segment_bytes);
        if !workload.recycle_segments {
            name += "-norecycle";
        }
    }
    name
}

pub fn summarize(workload: &EngineWorkload, outcome: &Outcome) -> Summary {
    let histogram = &outcome.latency_us;
    let elapsed_s = outcome.elapsed.as_secs_f64().max(1e-9);
    Summary {
        workload: workload_name(workload),
        strategy: workload.strategy.name().to_string(),
        durability: workload.durability.name().to_string(),
        appenders: workload.appenders,
        batch_bytes: outcome.batch_bytes,
        appends: outcome.appends,
        records: outcome.records,
        bytes: outcome.bytes,
        elapsed_s,
        throughput_mb_s: outcome.bytes as f64 / elapsed_s / 1e6,
        records_per_s: outcome.records as f64 / elapsed_s,
        append_latency_us: Latency::of(histogram),
        cpu_s_per_gb: outcome.cpu.as_secs_f64() / (outcome.bytes as f64 / 1e9).max(1e-9),
        window_mb_s: outcome
            .windows
            .iter()
            .map(|window| window.bytes as f64 / 1e6)
            .collect(),
        segment_bytes: workload.segment_bytes,
        retention_bytes: workload.retention_bytes,
        segments_recycled_kept: outcome.recycle.kept,
        segments_recycled_reused: outcome.recycle.reused,
    }
}

/// Creates `results_dir/name`, or `name-2`, `name-3`... when a run of the same workload on the
/// same day already saved there: a run never overwrites another's results.
fn new_folder(results_dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(results_dir)?;
    for attempt in 1u32.. {
        let folder = match attempt {
            1 => results_dir.join(name),
            _ => results_dir.join(format!("{name}-{attempt}")),
        };
        match std::fs::create_dir(&folder) {
            Ok(()) => return Ok(folder),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    unreachable!("some attempt number is free")
}

/// Writes `results/<date>-<workload>-<strategy>/`: summary.json, latency.hlog (HdrHistogram
/// interval log), config.json and machine.json.
pub fn save(
    results_dir: &Path,
    workload: &EngineWorkload,
    outcome: &Outcome,
    summary: &Summary,
) -> std::io::Result<PathBuf> {
    let date = chrono::Local::now().format("%Y-%m-%d");
    let folder = new_folder(
        results_dir,
        &format!("{date}-{}-{}", summary.workload, summary.strategy),
    )?;
    let config = serde_json::json!({
        "mode": "engine",
        "strategy": workload.strategy.name(),
        "durability": format!("{:?}", workload.durability),
        "commit_mode": format!("{:?}", workload.commit_mode),
        "append_bytes": workload.append_bytes,
        "record_bytes": workload.record_bytes,
        "appenders": workload.appenders,
        "duration_s": workload.duration.as_secs_f64(),
        "warmup_s": workload.warmup.as_secs_f64(),
        "segment_bytes": workload.segment_bytes,
        "retention_bytes": workload.retention_bytes,
        "recycle_segments": workload.recycle_segments,
        "data_dir": workload.data_dir,
        "io_memory_bytes": workload.io_memory_bytes,
        "command": std::env::args().collect::<Vec<_>>(),
    });
    std::fs::write(folder.join("summary.json"), pretty(summary))?;
    std::fs::write(folder.join("config.json"), pretty(&config))?;
    std::fs::write(
        folder.join("machine.json"),
        pretty(&machine::describe(&workload.data_dir)),
    )?;
    write_latency_log(
        &folder.join("latency.hlog"),
        &outcome.latency_us,
        outcome.elapsed,
        &format!(
            "shardlog harness: {} on {}",
            summary.workload, summary.strategy
        ),
        "append latency in microseconds",
    )?;
    Ok(folder)
}

/// Writes the histogram at `path` as an HdrHistogram interval log of one interval.
fn write_latency_log(
    path: &Path,
    histogram: &Histogram<u64>,
    elapsed: Duration,
    title: &str,
    unit: &str,
) -> std::io::Result<()> {
    let mut log_bytes = Vec::new();
    {
        let mut serializer = V2DeflateSerializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment(title)
            .add_comment(unit)
            .with_start_time(SystemTime::now())
            .begin_log_with(&mut log_bytes, &mut serializer)?;
        writer
            .write_histogram(histogram, Duration::ZERO, elapsed, None)
            .map_err(|error| std::io::Error::other(format!("{error:?}")))?;
    }
    std::fs::File::create(path)?.write_all(&log_bytes)
}

fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// A side-by-side table of the runs, one row per strategy.
pub fn table(summaries: &[Summary]) -> String {
    let mut text = format!(
        "\n{:<10} {:>10} {:>12} {:>9} {:>9} {:>9} {:>10} {:>9} {:>10}\n",
        "strategy",
        "MB/s",
        "records/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "p99.99 us",
        "max us",
        "cpu s/GB"
    );
    for summary in summaries {
        let latency = &summary.append_latency_us;
        text += &format!(
            "{:<10} {:>10.0} {:>12.0} {:>9} {:>9} {:>9} {:>10} {:>9} {:>10.2}\n",
            summary.strategy,
            summary.throughput_mb_s,
            summary.records_per_s,
            latency.p50,
            latency.p99,
            latency.p99_9,
            latency.p99_99,
            latency.max,
            summary.cpu_s_per_gb
        );
    }
    text
}

/// The publish side of a broker run.
#[derive(Serialize, Debug, Clone)]
pub struct PublishSummary {
    pub bytes: u64,
    pub batches: u64,
    pub records: u64,
    pub elapsed_s: f64,
    /// Record-batch bytes acknowledged per second (payload is records x record_bytes).
    pub throughput_mb_s: f64,
    pub records_per_s: f64,
    /// From the intended send time (see the producer) to the acknowledgement; every
    /// producer's histogram merged.
    pub latency_us: Latency,
    /// The harness's own CPU seconds per GB published (producers, receivers, sampling).
    pub harness_cpu_s_per_gb: f64,
    /// The broker's CPU seconds per GB published, when its pid was given.
    pub broker_cpu_s_per_gb: Option<f64>,
    pub cpu_s: CpuSummary,
    /// MB acknowledged in each second of the measured period (the last may be partial).
    pub window_mb_s: Vec<f64>,
    /// With consumers tailing (`--consume during`): MB acknowledged and not yet consumed at
    /// the end of each window, and at the end of the measured period.
    pub window_backlog_mb: Vec<f64>,
    pub backlog_mb_at_end: Option<f64>,
    /// Batches sent and never acknowledged (in flight when the run ended during a failover).
    pub unacknowledged_batches: u64,
}

/// CPU seconds used during a phase. `other` is what neither the harness nor the broker used
/// (other processes, and kernel work not charged to either): a busy machine shows here.
#[derive(Serialize, Debug, Clone)]
pub struct CpuSummary {
    pub harness: f64,
    pub broker: Option<f64>,
    pub machine_busy: Option<f64>,
    pub other: Option<f64>,
    /// Seconds of wall time times the machine's cores: the CPU time there was.
    pub available: f64,
}

fn cpu_summary(cpu: &CpuUse, elapsed: Duration) -> CpuSummary {
    let harness = cpu.harness.as_secs_f64();
    let broker = cpu.broker.map(|broker| broker.as_secs_f64());
    let machine_busy = cpu.machine_busy.map(|busy| busy.as_secs_f64());
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    CpuSummary {
        harness,
        broker,
        machine_busy,
        other: machine_busy
            .zip(broker)
            .map(|(busy, broker)| (busy - broker - harness).max(0.0)),
        available: elapsed.as_secs_f64() * cores as f64,
    }
}

/// The consume side of a broker run.
#[derive(Serialize, Debug, Clone)]
pub struct ConsumeSummary {
    pub bytes: u64,
    pub batches: u64,
    pub records: u64,
    pub fetches: u64,
    pub elapsed_s: f64,
    pub throughput_mb_s: f64,
    pub records_per_s: f64,
    pub harness_cpu_s_per_gb: f64,
    pub broker_cpu_s_per_gb: Option<f64>,
    pub cpu_s: CpuSummary,
    pub window_mb_s: Vec<f64>,
    /// With `--consume during`: from each record's intended send time to the fetch that
    /// brought it, for records sent in the measured period; every consumer's histogram
    /// merged (one count per record).
    pub end_to_end_latency_us: Option<Latency>,
}

/// One broker run (`--bootstrap`).
#[derive(Serialize, Debug, Clone)]
pub struct BrokerSummary {
    pub mode: &'static str,
    pub workload: String,
    pub label: String,
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub producers: usize,
    pub consumers: usize,
    pub record_bytes: u64,
    /// Bytes of the record batch each produce request carries.
    pub batch_bytes: u64,
    pub records_per_batch: u64,
    pub acks: &'static str,
    pub in_flight: usize,
    pub rate_records_per_s: u64,
    pub consume_mode: &'static str,
    pub key_distributor: &'static str,
    pub publish: Option<PublishSummary>,
    pub consume: Option<ConsumeSummary>,
    pub broker_peak_rss_bytes: Option<u64>,
    /// With `--find-max-rate`: the search, whose half-maximum rate this run used.
    pub rate_search: Option<SearchSummary>,
    /// Whether every acknowledged record was consumed once and in order (with acks=all,
    /// whose producers are idempotent, when producers and consumers both ran).
    pub verification: Option<Verification>,
    /// With `--kill-leader-at`: what was killed and restarted, and the failovers.
    pub faults: Option<FaultReport>,
}

pub fn broker_workload_name(workload: &BrokerWorkload) -> String {
    if let Some(file) = &workload.workload_file {
        return file.clone();
    }
    let rate = match workload.rate_records_per_s {
        0 => String::new(),
        rate => format!("-{rate}rps"),
    };
    format!(
        "broker-{}B-{}B-{}p-{}p{}c-acks{}{rate}",
        workload.record_bytes,
        workload.batch_bytes,
        workload.partitions,
        workload.producers,
        workload.consumers,
        workload.acks_name()
    )
}

fn per_gb(cpu: Duration, bytes: u64) -> f64 {
    cpu.as_secs_f64() / (bytes as f64 / 1e9).max(1e-9)
}

fn windows_mb_s(window_bytes: &[u64]) -> Vec<f64> {
    window_bytes
        .iter()
        .map(|&bytes| bytes as f64 / 1e6)
        .collect()
}

pub fn summarize_broker(workload: &BrokerWorkload, outcome: &BrokerOutcome) -> BrokerSummary {
    let publish = outcome.publish.as_ref().map(|publish| {
        let elapsed_s = publish.elapsed.as_secs_f64().max(1e-9);
        PublishSummary {
            bytes: publish.bytes,
            batches: publish.batches,
            records: publish.records,
            elapsed_s,
            throughput_mb_s: publish.bytes as f64 / elapsed_s / 1e6,
            records_per_s: publish.records as f64 / elapsed_s,
            latency_us: Latency::of(&publish.latency_us),
            harness_cpu_s_per_gb: per_gb(publish.cpu.harness, publish.bytes),
            broker_cpu_s_per_gb: publish.cpu.broker.map(|cpu| per_gb(cpu, publish.bytes)),
            cpu_s: cpu_summary(&publish.cpu, publish.elapsed),
            window_mb_s: windows_mb_s(&publish.window_bytes),
            window_backlog_mb: windows_mb_s(&publish.window_backlog_bytes),
            backlog_mb_at_end: publish.backlog_bytes_at_end.map(|bytes| bytes as f64 / 1e6),
            unacknowledged_batches: publish.unacknowledged_batches,
        }
    });
    let consume = outcome.consume.as_ref().map(|consume| {
        let elapsed_s = consume.elapsed.as_secs_f64().max(1e-9);
        ConsumeSummary {
            bytes: consume.bytes,
            batches: consume.batches,
            records: consume.records,
            fetches: consume.fetches,
            elapsed_s,
            throughput_mb_s: consume.bytes as f64 / elapsed_s / 1e6,
            records_per_s: consume.records as f64 / elapsed_s,
            harness_cpu_s_per_gb: per_gb(consume.cpu.harness, consume.bytes),
            broker_cpu_s_per_gb: consume.cpu.broker.map(|cpu| per_gb(cpu, consume.bytes)),
            cpu_s: cpu_summary(&consume.cpu, consume.elapsed),
            window_mb_s: windows_mb_s(&consume.window_bytes),
            end_to_end_latency_us: consume.end_to_end_us.as_ref().map(Latency::of),
        }
    });
    BrokerSummary {
        mode: "bootstrap",
        workload: broker_workload_name(workload),
        label: workload.label.clone(),
        bootstrap: workload.bootstrap.clone(),
        topic: workload.topic.clone(),
        partitions: workload.partitions,
        producers: workload.producers,
        consumers: workload.consumers,
        record_bytes: workload.record_bytes,
        batch_bytes: outcome.batch_bytes,
        records_per_batch: workload.records_per_batch(),
        acks: workload.acks_name(),
        in_flight: workload.in_flight,
        rate_records_per_s: workload.rate_records_per_s,
        consume_mode: workload.consume.name(),
        key_distributor: workload.key_distributor.name(),
        publish,
        consume,
        broker_peak_rss_bytes: outcome.broker_peak_rss_bytes,
        rate_search: None,
        verification: outcome.verification.clone(),
        faults: outcome.faults.clone(),
    }
}

/// Writes `results/<date>-<workload>-<label>/`: summary.json, config.json, machine.json and,
/// when there were producers, latency.hlog (publish latency) and, with `--consume during`,
/// end-to-end-latency.hlog.
pub fn save_broker(
    results_dir: &Path,
    workload: &BrokerWorkload,
    outcome: &BrokerOutcome,
    summary: &BrokerSummary,
) -> std::io::Result<PathBuf> {
    let date = chrono::Local::now().format("%Y-%m-%d");
    let folder = new_folder(
        results_dir,
        &format!("{date}-{}-{}", summary.workload, summary.label),
    )?;
    let config = serde_json::json!({
        "mode": "bootstrap",
        "bootstrap": workload.bootstrap,
        "topic": workload.topic,
        "partitions": workload.partitions,
        "producers": workload.producers,
        "consumers": workload.consumers,
        "record_bytes": workload.record_bytes,
        "batch_bytes": workload.batch_bytes,
        "acks": workload.acks,
        "in_flight": workload.in_flight,
        "rate_records_per_s": workload.rate_records_per_s,
        "fetch_bytes": workload.fetch_bytes,
        "fetch_wait_ms": workload.fetch_wait_ms,
        "consume": workload.consume.name(),
        "duration_s": workload.duration.as_secs_f64(),
        "warmup_s": workload.warmup.as_secs_f64(),
        "label": workload.label,
        "key_distributor": workload.key_distributor.name(),
        "kill_leader_at_s": workload.faults.map(|plan| plan.kill_leader_at.as_secs_f64()),
        "restart_after_s": workload
            .faults
            .and_then(|plan| plan.restart_after)
            .map(|after| after.as_secs_f64()),
        "workload_file": workload.workload_file,
        "broker_pids": workload.broker_pids,
        "replication": workload.replication,
        "end_offsets": outcome.end_offsets,
        "command": std::env::args().collect::<Vec<_>>(),
    });
    std::fs::write(folder.join("summary.json"), pretty(summary))?;
    std::fs::write(folder.join("config.json"), pretty(&config))?;
    std::fs::write(
        folder.join("machine.json"),
        pretty(&machine::describe(results_dir)),
    )?;
    if let Some(publish) = &outcome.publish {
        write_latency_log(
            &folder.join("latency.hlog"),
            &publish.latency_us,
            publish.elapsed,
            &format!("shardlog harness: {} ({})", summary.workload, summary.label),
            "publish latency in microseconds, from the intended send time",
        )?;
    }
    let end_to_end = outcome
        .consume
        .as_ref()
        .and_then(|consume| Some((consume.end_to_end_us.as_ref()?, consume.elapsed)));
    if let Some((histogram, elapsed)) = end_to_end {
        write_latency_log(
            &folder.join("end-to-end-latency.hlog"),
            histogram,
            elapsed,
            &format!("shardlog harness: {} ({})", summary.workload, summary.label),
            "end-to-end latency in microseconds, from the intended send time to the fetch",
        )?;
    }
    Ok(folder)
}

/// A note when other work took a noticeable share of the machine during a phase.
fn other_cpu(cpu: &CpuSummary) -> String {
    match cpu.other {
        Some(other) if other > 0.05 * cpu.available => format!(
            "         note: {other:.1} of {:.1} CPU seconds went to neither the harness nor the broker\n",
            cpu.available
        ),
        _ => String::new(),
    }
}

fn fault_line(faults: &FaultReport) -> String {
    let Some(killed_at_s) = faults.killed_at_s else {
        return "faults: the kill was not due within the measured period\n".to_string();
    };
    format!(
        "faults: killed broker {} ({}), leader of partition {}, at {killed_at_s:.1} s{}; failovers: {} producer, {} consumer\n",
        faults.killed_node.map_or("?".to_string(), |node| node.to_string()),
        faults.killed_address.as_deref().unwrap_or("?"),
        faults.killed_partition,
        faults
            .restarted_at_s
            .map(|at| format!(", restarted at {at:.1} s"))
            .unwrap_or_default(),
        faults.producer_failovers,
        faults.consumer_failovers
    )
}

fn verification_line(verdict: &Verification) -> String {
    if verdict.passed() {
        format!(
            "verified: all {} acknowledged records consumed, once each, in order\n",
            verdict.acknowledged_records
        )
    } else {
        format!(
            "VERIFICATION FAILED: of {} acknowledged records, {} lost, {} duplicated, {} batches out of order\n",
            verdict.acknowledged_records,
            verdict.lost_records,
            verdict.duplicated_records,
            verdict.out_of_order_batches
        )
    }
}

/// Broker runs side by side, one line per run (per storage strategy).
pub fn strategies_table(summaries: &[BrokerSummary]) -> String {
    let mut text = String::from(
        "\nrun                                 publish MB/s  p50 us  p99 us  p99.9 us  consume MB/s  e2e p50 us  e2e p99 us  max rec/s  lost  dup\n",
    );
    for summary in summaries {
        let (publish_mb_s, p50, p99, p99_9) =
            summary
                .publish
                .as_ref()
                .map_or((f64::NAN, 0, 0, 0), |publish| {
                    let latency = &publish.latency_us;
                    (
                        publish.throughput_mb_s,
                        latency.p50,
                        latency.p99,
                        latency.p99_9,
                    )
                });
        let consume_mb_s = summary
            .consume
            .as_ref()
            .map_or(f64::NAN, |consume| consume.throughput_mb_s);
        let end_to_end = summary
            .consume
            .as_ref()
            .and_then(|consume| consume.end_to_end_latency_us.as_ref());
        let (e2e_p50, e2e_p99) = end_to_end.map_or(("-".to_string(), "-".to_string()), |e2e| {
            (e2e.p50.to_string(), e2e.p99.to_string())
        });
        let max_rate = summary
            .rate_search
            .as_ref()
            .map_or("-".to_string(), |search| {
                search.max_sustainable_records_per_s.to_string()
            });
        let (lost, duplicated) =
            summary
                .verification
                .as_ref()
                .map_or(("-".to_string(), "-".to_string()), |verdict| {
                    (
                        verdict.lost_records.to_string(),
                        verdict.duplicated_records.to_string(),
                    )
                });
        text += &format!(
            "{:<36}{publish_mb_s:>12.0}{p50:>8}{p99:>8}{p99_9:>10}{consume_mb_s:>14.0}{e2e_p50:>12}{e2e_p99:>12}{max_rate:>11}{lost:>6}{duplicated:>5}\n",
            summary.label
        );
    }
    text
}

/// "avg 1 p50 2 ... max 9" for the terminal.
fn percentiles(latency: &Latency) -> String {
    format!(
        "avg {:.0} p50 {} p75 {} p95 {} p99 {} p99.9 {} p99.99 {} max {}",
        latency.avg,
        latency.p50,
        latency.p75,
        latency.p95,
        latency.p99,
        latency.p99_9,
        latency.p99_99,
        latency.max
    )
}

/// The broker run's figures, for the terminal.
pub fn broker_table(summary: &BrokerSummary) -> String {
    let mut text = format!("\n{} ({})\n", summary.workload, summary.label);
    if let Some(search) = &summary.rate_search {
        text += &format!(
            "maximum sustainable rate {} records/s ({} trials of {:.0} s); this run at {} records/s\n",
            search.max_sustainable_records_per_s,
            search.trials.len(),
            search.trial_duration_s,
            search.run_records_per_s
        );
    }
    if let Some(publish) = &summary.publish {
        let latency = &publish.latency_us;
        text += &format!(
            "publish  {:>8.0} MB/s {:>10.0} records/s  latency us: {}  harness {:.2} cpu s/GB{}\n",
            publish.throughput_mb_s,
            publish.records_per_s,
            percentiles(latency),
            publish.harness_cpu_s_per_gb,
            publish
                .broker_cpu_s_per_gb
                .map(|cpu| format!(", broker {cpu:.2} cpu s/GB"))
                .unwrap_or_default()
        );
        text += &other_cpu(&publish.cpu_s);
    }
    if let Some(consume) = &summary.consume {
        text += &format!(
            "consume  {:>8.0} MB/s {:>10.0} records/s  {} fetches  harness {:.2} cpu s/GB{}\n",
            consume.throughput_mb_s,
            consume.records_per_s,
            consume.fetches,
            consume.harness_cpu_s_per_gb,
            consume
                .broker_cpu_s_per_gb
                .map(|cpu| format!(", broker {cpu:.2} cpu s/GB"))
                .unwrap_or_default()
        );
        text += &other_cpu(&consume.cpu_s);
        if let Some(end_to_end) = &consume.end_to_end_latency_us {
            text += &format!("end-to-end latency us: {}\n", percentiles(end_to_end));
        }
    }
    if let Some(faults) = &summary.faults {
        text += &fault_line(faults);
    }
    if let Some(verdict) = &summary.verification {
        text += &verification_line(verdict);
    }
    if let Some(rss) = summary.broker_peak_rss_bytes {
        text += &format!("broker peak RSS {:.1} MiB\n", rss as f64 / (1 << 20) as f64);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_on_the_same_day_gets_its_own_folder() {
        let temporary = tempfile::tempdir().expect("temporary directory");
        let root = temporary.path().join("results");
        let first = new_folder(&root, "2026-11-26-run").expect("first");
        let second = new_folder(&root, "2026-11-26-run").expect("second");
        let third = new_folder(&root, "2026-11-26-run").expect("third");
        assert_eq!(first, root.join("2026-11-26-run"));
        assert_eq!(second, root.join("2026-11-26-run-2"));
        assert_eq!(third, root.join("2026-11-26-run-3"));
    }
}
