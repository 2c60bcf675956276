//! Summaries, result folders and the side-by-side table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use serde::Serialize;

use crate::engine_workload::{EngineWorkload, Outcome};
use crate::machine;

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
}

pub fn workload_name(workload: &EngineWorkload) -> String {
    format!(
        "engine-append-{}B-x{}-{}",
        workload.append_bytes,
        workload.appenders,
        workload.durability.name()
    )
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
        append_latency_us: Latency {
            avg: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p75: histogram.value_at_quantile(0.75),
            p95: histogram.value_at_quantile(0.95),
            p99: histogram.value_at_quantile(0.99),
            p99_9: histogram.value_at_quantile(0.999),
            p99_99: histogram.value_at_quantile(0.9999),
            max: histogram.max(),
        },
        cpu_s_per_gb: outcome.cpu.as_secs_f64() / (outcome.bytes as f64 / 1e9).max(1e-9),
        window_mb_s: outcome
            .windows
            .iter()
            .map(|window| window.bytes as f64 / 1e6)
            .collect(),
    }
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
    let folder = results_dir.join(format!("{date}-{}-{}", summary.workload, summary.strategy));
    std::fs::create_dir_all(&folder)?;
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
    let mut log_bytes = Vec::new();
    {
        let mut serializer = V2DeflateSerializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "shardlog harness: {} on {}",
                summary.workload, summary.strategy
            ))
            .add_comment("append latency in microseconds")
            .with_start_time(SystemTime::now())
            .begin_log_with(&mut log_bytes, &mut serializer)?;
        writer
            .write_histogram(&outcome.latency_us, Duration::ZERO, outcome.elapsed, None)
            .map_err(|error| std::io::Error::other(format!("{error:?}")))?;
    }
    std::fs::File::create(folder.join("latency.hlog"))?.write_all(&log_bytes)?;
    Ok(folder)
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
