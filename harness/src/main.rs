//! `harness`: drives shardlog workloads and reports latency histograms and throughput.
//!
//! Two modes:
//! - `--engine` (the default): the storage engine in-process, the same append workload on
//!   each storage strategy in turn, with per-append latency in a merged HdrHistogram.
//! - `--bootstrap HOST:PORT`: a running broker over the Kafka protocol: producers with
//!   pipelined requests, then (or alongside) consumers; see `broker_workload`.
//!
//! - `--brokers N --replication R`: starts a local cluster of N broker processes (see
//!   `cluster`), runs the broker workload against it on each storage strategy in turn, and
//!   stops it.
//!
//! In the broker modes: `--workload FILE.yaml` takes the settings from an OpenMessaging
//! Benchmark workload file (`workload_file`), `--find-max-rate` measures at half the
//! maximum sustainable rate (`rate_search`), and `--kill-leader-at` kills a leader mid-run
//! (`faults`); acks=all runs check every acknowledged record afterwards (`verify`).
//! docs/harness.md describes them all.

mod broker_workload;
mod cluster;
mod engine_workload;
mod faults;
mod kafka;
mod machine;
mod rate_search;
mod report;
mod verify;
mod workload_file;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use shardlog::storage::CommitMode;
use shardlog::{Durability, StrategyKind};
use shardlog_protocol::decode_guard::ReservingAllocator;

use broker_workload::{BrokerWorkload, ConsumeMode};
use cluster::{ClusterSpec, LocalCluster};

/// The brokers of `--brokers` are this executable run as `harness broker`; they get the
/// broker binary's allocator (see `decode_guard`).
#[global_allocator]
static ALLOCATOR: ReservingAllocator = ReservingAllocator;
use engine_workload::EngineWorkload;
use faults::{FaultInjector, FaultPlan};
use kafka::produce::IDEMPOTENT_IN_FLIGHT_MAX;
use workload_file::KeyDistributor;

/// Command-line options. Sizes take units (`4KiB`, `1MiB`, `4GiB`); durations too (`10s`).
#[derive(Parser, Debug)]
#[command(
    name = "harness",
    version,
    about = "Drive shardlog workloads; report latency and throughput"
)]
struct Options {
    /// Drive the storage engine in-process, one partition log per strategy (the default mode).
    #[arg(long, default_value_t = true)]
    engine: bool,

    /// Drive a running broker at this address over the Kafka protocol instead of the engine.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,

    /// Start a local cluster of this many broker processes and drive it (one run per
    /// strategy, each on a fresh cluster).
    #[arg(long)]
    brokers: Option<usize>,

    /// Replicas per partition of the topic the harness creates (default: 3 with
    /// `--brokers` of 3 or more, else the brokers' count; 1 with `--bootstrap`).
    #[arg(long)]
    replication: Option<i16>,

    /// In-sync replicas acks=all needs, for the brokers `--brokers` starts (default: 2 with
    /// replication of 2 or more, as OpenMessaging Benchmark's Kafka driver sets).
    #[arg(long)]
    min_insync_replicas: Option<usize>,

    /// Storage strategies to run in turn, comma-separated: direct, buffered, uring.
    #[arg(long, value_delimiter = ',', default_value = "direct,buffered,uring")]
    strategy: Vec<String>,

    /// When appends become durable: none, interval or always.
    #[arg(long, default_value = "none")]
    durability: String,

    /// With `--durability interval`: fsync at least this often.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    durability_interval: Duration,

    /// Group commit shape: auto (the strategy's choice), linked, or pipelined.
    #[arg(long, default_value = "auto")]
    commit_mode: String,

    /// Bytes per appended or produced batch (records of `--record-bytes` each, rounded down).
    #[arg(long, visible_alias = "batch-bytes", default_value = "1MiB", value_parser = parse_bytes)]
    append_bytes: u64,

    /// Value bytes per record.
    #[arg(long, default_value = "1KiB", value_parser = parse_bytes)]
    record_bytes: u64,

    /// Concurrent appenders (tasks on the core that owns the log).
    #[arg(long, default_value_t = 1)]
    appenders: usize,

    /// Broker mode: an OpenMessaging Benchmark workload file (YAML; see docs/harness.md).
    /// Flags given on the command line override the file's values.
    #[arg(long, value_name = "FILE.yaml")]
    workload: Option<PathBuf>,

    /// Set from `--workload`: the file's stem, which names the results folder.
    #[arg(skip)]
    workload_name: Option<String>,

    /// Broker mode: how record keys are chosen (OMB's keyDistributor).
    #[arg(long, value_enum, default_value = "NO_KEY")]
    key_distributor: KeyDistributor,

    /// Broker mode: the topic (created with `--partitions` if missing).
    #[arg(long, default_value = "harness")]
    topic: String,

    /// Broker mode: partitions of the topic.
    #[arg(long, default_value_t = 1)]
    partitions: i32,

    /// Broker mode: producers, each on its own connection and threads.
    #[arg(long, default_value_t = 1)]
    producers: usize,

    /// Broker mode: consumers, each reading its share of the partitions from offset 0.
    #[arg(long, default_value_t = 1)]
    consumers: usize,

    /// Broker mode: acknowledgements: 0, 1 or all. On one broker, all = 1 plus the broker's
    /// durability policy.
    #[arg(long, default_value = "all")]
    acks: String,

    /// Broker mode: produce requests in flight per producer connection.
    #[arg(long, default_value_t = 5)]
    in_flight: usize,

    /// Broker mode: records per second over all producers; 0 = as fast as acknowledged.
    #[arg(long, default_value_t = 0)]
    rate: u64,

    /// Broker mode: find the maximum sustainable rate with short trials, then measure at
    /// half of it (see docs/harness.md).
    #[arg(long)]
    find_max_rate: bool,

    /// With `--find-max-rate`: the measured length of each trial (each also warms up for
    /// `--warmup`).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    trial_duration: Duration,

    /// With `--find-max-rate`: the most trials, the first (as fast as acknowledged) included.
    #[arg(long, default_value_t = 6)]
    trials_max: usize,

    /// With `--brokers`: SIGKILL the leader of partition 0 this far into the measured
    /// period; afterwards every acknowledged record is checked for (needs `--acks all`).
    #[arg(long, value_parser = humantime::parse_duration)]
    kill_leader_at: Option<Duration>,

    /// With `--kill-leader-at`: start the killed broker again this long after the kill.
    #[arg(long, value_parser = humantime::parse_duration)]
    restart_after: Option<Duration>,

    /// With `--brokers`: a broker silent this long is fenced and loses its leaderships
    /// (Kafka's broker.session.timeout.ms; default the brokers' own, 9 s).
    #[arg(long, value_parser = humantime::parse_duration)]
    broker_session_timeout: Option<Duration>,

    /// Broker mode: fetch max_bytes (and partition_max_bytes).
    #[arg(long, default_value = "4MiB", value_parser = parse_bytes)]
    fetch_bytes: u64,

    /// Broker mode: fetch max_wait_ms.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    fetch_wait: Duration,

    /// Broker mode: when consumers read: after (everything the producers wrote, once they
    /// stop) or during (tailing, alongside the producers).
    #[arg(long, default_value = "after")]
    consume: String,

    /// Broker mode: a name for the run's results folder, e.g. the broker's strategy and
    /// durability (`direct-none`).
    #[arg(long, default_value = "broker")]
    label: String,

    /// Broker mode: the broker's process id, to report its CPU per GB and peak RSS.
    #[arg(long)]
    broker_pid: Option<u32>,

    /// How long to measure, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// How long to run before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// Segment size of the log (rolls and fsyncs the old segment when full).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    segment_bytes: u64,

    /// Engine mode: retention by size (e.g. 256MiB), enforced every 10 ms, so a long run
    /// reaches a steady state where rolls recycle dropped segments' files. Unlimited if unset.
    #[arg(long, value_parser = parse_bytes)]
    retention_bytes: Option<u64>,

    /// Engine mode: delete dropped segments instead of recycling their files
    /// (`LogConfig::recycle_segments = false`), for comparison.
    #[arg(long)]
    no_recycle: bool,

    /// Where the logs are written (must support O_DIRECT: not tmpfs). Deleted afterwards.
    #[arg(long, default_value = "target/harness-data")]
    data_dir: PathBuf,

    /// Where each run's folder of results goes.
    #[arg(long, default_value = "results")]
    results_dir: PathBuf,

    /// Do not write a results folder.
    #[arg(long)]
    no_save: bool,

    /// Print one JSON summary per strategy on stdout (for scripts).
    #[arg(long)]
    json: bool,

    /// Locked memory glommio registers for DMA buffers (needs RLIMIT_MEMLOCK above it).
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    io_memory: u64,
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size::parse_size(text).map_err(|error| format!("{text:?} is not a size: {error}"))
}

fn main() -> ExitCode {
    // `harness broker ...` is a broker process of a local cluster.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "broker")
    {
        return shardlog::broker::cli::main_from(std::env::args_os().skip(1));
    }
    let matches = Options::command().get_matches();
    let mut options = Options::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let Some(path) = options.workload.clone() {
        if options.brokers.is_none() && options.bootstrap.is_none() {
            eprintln!("harness: --workload needs --brokers or --bootstrap");
            return ExitCode::from(2);
        }
        match apply_workload_file(&mut options, &matches, &path) {
            Ok(name) => options.workload_name = Some(name),
            Err(error) => {
                eprintln!("harness: {error}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(brokers) = options.brokers {
        if options.bootstrap.is_some() {
            eprintln!("harness: --brokers starts a cluster; --bootstrap drives one: pick one");
            return ExitCode::from(2);
        }
        return run_cluster(&options, brokers);
    }
    if let Some(bootstrap) = &options.bootstrap {
        let replication = options.replication.unwrap_or(1);
        return run_broker(&options, bootstrap, replication, Vec::new(), &options.label);
    }
    let durability = match options.durability.as_str() {
        "none" => Durability::None,
        "always" => Durability::Always,
        "interval" => Durability::Interval {
            interval_ms: options.durability_interval.as_millis() as u64,
            interval_bytes: u64::MAX,
        },
        other => {
            eprintln!("harness: --durability {other:?}: expected none, interval or always");
            return ExitCode::from(2);
        }
    };
    let commit_mode = match options.commit_mode.as_str() {
        "auto" => CommitMode::Auto,
        "linked" => CommitMode::Linked,
        "pipelined" => CommitMode::Pipelined,
        other => {
            eprintln!("harness: --commit-mode {other:?}: expected auto, linked or pipelined");
            return ExitCode::from(2);
        }
    };
    let mut strategies = Vec::new();
    for name in &options.strategy {
        match StrategyKind::from_name(name) {
            Ok(StrategyKind::Sim) | Err(_) => {
                eprintln!("harness: --strategy {name:?}: expected direct, buffered or uring");
                return ExitCode::from(2);
            }
            Ok(kind) => strategies.push(kind),
        }
    }
    if options.appenders == 0
        || options.record_bytes == 0
        || options.append_bytes < options.record_bytes
    {
        eprintln!("harness: need --appenders >= 1 and --append-bytes >= --record-bytes >= 1");
        return ExitCode::from(2);
    }

    let mut outcomes = Vec::new();
    for strategy in strategies {
        let workload = EngineWorkload {
            strategy,
            durability,
            commit_mode,
            append_bytes: options.append_bytes,
            record_bytes: options.record_bytes,
            appenders: options.appenders,
            duration: options.duration,
            warmup: options.warmup,
            segment_bytes: options.segment_bytes,
            retention_bytes: options.retention_bytes,
            recycle_segments: !options.no_recycle,
            data_dir: options.data_dir.join(strategy.name()),
            io_memory_bytes: options.io_memory as usize,
        };
        match engine_workload::run(&workload) {
            Ok(outcome) => {
                let summary = report::summarize(&workload, &outcome);
                if options.json {
                    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
                }
                if !options.no_save {
                    match report::save(&options.results_dir, &workload, &outcome, &summary) {
                        Ok(folder) => eprintln!("harness: results saved in {}", folder.display()),
                        Err(error) => {
                            eprintln!("harness: cannot save results: {error}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                outcomes.push(summary);
            }
            Err(error) => {
                eprintln!("harness: {strategy}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    eprint!("{}", report::table(&outcomes));
    ExitCode::SUCCESS
}

/// Applies a workload file's settings to the options the command line left at their
/// defaults; returns the file's name for the results folder.
fn apply_workload_file(
    options: &mut Options,
    matches: &ArgMatches,
    path: &std::path::Path,
) -> Result<String, String> {
    let settings = workload_file::load(path)?;
    let from_file = |id: &str| matches.value_source(id) != Some(ValueSource::CommandLine);
    fn set<T>(target: &mut T, value: Option<T>, allowed: bool) {
        if let (Some(value), true) = (value, allowed) {
            *target = value;
        }
    }
    set(
        &mut options.partitions,
        settings.partitions,
        from_file("partitions"),
    );
    set(
        &mut options.record_bytes,
        settings.record_bytes,
        from_file("record_bytes"),
    );
    set(
        &mut options.producers,
        settings.producers,
        from_file("producers"),
    );
    set(
        &mut options.consumers,
        settings.consumers,
        from_file("consumers"),
    );
    set(
        &mut options.rate,
        settings.rate_records_per_s,
        from_file("rate"),
    );
    set(
        &mut options.duration,
        settings.duration,
        from_file("duration"),
    );
    set(&mut options.warmup, settings.warmup, from_file("warmup"));
    set(
        &mut options.key_distributor,
        settings.key_distributor,
        from_file("key_distributor"),
    );
    eprintln!(
        "harness: workload {} ({}): {} partitions, {} B records, {} producers, {} consumers, \
         rate {}, {:?} after {:?} of warm-up",
        settings.file_stem,
        settings.name.as_deref().unwrap_or("unnamed"),
        options.partitions,
        options.record_bytes,
        options.producers,
        options.consumers,
        match options.rate {
            0 => "max".to_string(),
            rate => format!("{rate}/s"),
        },
        options.duration,
        options.warmup
    );
    Ok(settings.file_stem)
}

/// `--brokers`: for each strategy, a fresh local cluster, the broker workload, a clean stop;
/// then the strategies side by side.
fn run_cluster(options: &Options, brokers: usize) -> ExitCode {
    let replication = options.replication.unwrap_or(brokers.min(3) as i16);
    if brokers == 0 || replication < 1 || replication as usize > brokers {
        eprintln!("harness: need --brokers >= 1 and 1 <= --replication <= --brokers");
        return ExitCode::from(2);
    }
    let min_insync_replicas = options
        .min_insync_replicas
        .unwrap_or((replication as usize).min(2));
    if min_insync_replicas == 0 || min_insync_replicas > replication as usize {
        eprintln!("harness: need 1 <= --min-insync-replicas <= --replication");
        return ExitCode::from(2);
    }
    if let Err(error) = check_disk_room(options, replication) {
        eprintln!("harness: {error}");
        return ExitCode::from(2);
    }
    let mut summaries = Vec::new();
    for strategy in &options.strategy {
        if !matches!(strategy.as_str(), "direct" | "buffered" | "uring") {
            eprintln!("harness: --strategy {strategy:?}: expected direct, buffered or uring");
            return ExitCode::from(2);
        }
        let spec = ClusterSpec {
            brokers,
            strategy: strategy.clone(),
            durability: options.durability.clone(),
            min_insync_replicas,
            segment_bytes: options.segment_bytes,
            io_memory_bytes: options.io_memory,
            data_dir: options.data_dir.join(format!("cluster-{strategy}")),
            session_timeout: options.broker_session_timeout,
        };
        eprintln!("harness: starting {brokers} brokers ({strategy}, durability {}, replication {replication})", options.durability);
        let mut cluster = match LocalCluster::start(&spec) {
            Ok(cluster) => cluster,
            Err(error) => {
                eprintln!("harness: {error}");
                return ExitCode::FAILURE;
            }
        };
        let label = format!(
            "{strategy}-{}-{brokers}brokers-rf{replication}",
            options.durability
        );
        let bootstrap = cluster.first_address().to_string();
        let pids = cluster.pids();
        let ran = run_workload(
            options,
            &bootstrap,
            replication,
            pids,
            &label,
            Some(&mut cluster),
        );
        if let Err(error) = cluster.stop(ran.is_none()) {
            eprintln!("harness: stopping the cluster: {error}");
            return ExitCode::FAILURE;
        }
        match ran {
            Some(summary) => summaries.push(summary),
            None => return ExitCode::FAILURE,
        }
    }
    eprint!("{}", report::strategies_table(&summaries));
    if summaries.iter().all(verified) {
        ExitCode::SUCCESS
    } else {
        eprintln!("harness: some acknowledged records were lost, duplicated or reordered");
        ExitCode::FAILURE
    }
}

/// The brokers reserve a new segment's space in steps as it fills, the first of
/// `PREALLOCATE_STEP_MIN_BYTES` (1 MiB); refuses a run whose partition replicas cannot
/// each take that first step on the data directory's file system, before any broker
/// starts. What the run then writes needs room too: a full disk is answered with
/// KAFKA_STORAGE_ERROR, which the run reports as failed produces.
fn check_disk_room(options: &Options, replication: i16) -> Result<(), String> {
    let replicas = options.partitions.max(1) as u64 * replication.max(1) as u64;
    let first_step = options
        .segment_bytes
        .min(shardlog::storage::PREALLOCATE_STEP_MIN_BYTES);
    let needed_bytes = replicas.saturating_mul(first_step);
    let _ = std::fs::create_dir_all(&options.data_dir);
    let Some(free_bytes) = machine::free_bytes(&options.data_dir) else {
        return Ok(());
    };
    if needed_bytes > free_bytes {
        return Err(format!(
            "{replicas} partition replicas need {:.1} GB for their first segments' reservation, \
             and {} has {:.1} GB free: use fewer partitions or another --data-dir",
            needed_bytes as f64 / 1e9,
            options.data_dir.display(),
            free_bytes as f64 / 1e9,
        ));
    }
    Ok(())
}

/// Whether the run's verification passed (or there was none to do).
fn verified(summary: &report::BrokerSummary) -> bool {
    summary
        .verification
        .as_ref()
        .is_none_or(|verdict| verdict.passed())
}

/// `--bootstrap`: the broker workload, printed and saved like the engine mode.
fn run_broker(
    options: &Options,
    bootstrap: &str,
    replication: i16,
    broker_pids: Vec<u32>,
    label: &str,
) -> ExitCode {
    match run_workload(options, bootstrap, replication, broker_pids, label, None) {
        Some(summary) if verified(&summary) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Runs, prints and saves one broker workload (after the rate search, with
/// `--find-max-rate`); `None` (after saying why) if it failed.
fn run_workload(
    options: &Options,
    bootstrap: &str,
    replication: i16,
    broker_pids: Vec<u32>,
    label: &str,
    injector: Option<&mut dyn FaultInjector>,
) -> Option<report::BrokerSummary> {
    let mut workload = broker_workload(options, bootstrap, replication, broker_pids, label)?;
    let mut rate_search = None;
    if options.find_max_rate {
        let found =
            match rate_search::find_max_rate(&workload, options.trial_duration, options.trials_max)
            {
                Ok(found) => found,
                Err(error) => {
                    eprintln!("harness: {error}");
                    return None;
                }
            };
        eprintln!(
            "harness: maximum sustainable rate {} records/s; measuring at half of it, {} records/s",
            found.max_sustainable_records_per_s, found.run_records_per_s
        );
        workload.rate_records_per_s = found.run_records_per_s;
        rate_search = Some(found);
    }
    let outcome = match broker_workload::run_with_faults(&workload, injector) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("harness: {error}");
            return None;
        }
    };
    let mut summary = report::summarize_broker(&workload, &outcome);
    summary.rate_search = rate_search;
    if options.json {
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    }
    if !options.no_save {
        match report::save_broker(&options.results_dir, &workload, &outcome, &summary) {
            Ok(folder) => eprintln!("harness: results saved in {}", folder.display()),
            Err(error) => {
                eprintln!("harness: cannot save results: {error}");
                return None;
            }
        }
    }
    eprint!("{}", report::broker_table(&summary));
    Some(summary)
}

/// The broker workload the options describe; `None` (after saying why) if they do not fit.
fn broker_workload(
    options: &Options,
    bootstrap: &str,
    replication: i16,
    broker_pids: Vec<u32>,
    label: &str,
) -> Option<BrokerWorkload> {
    let acks = match options.acks.as_str() {
        "0" => 0,
        "1" => 1,
        "all" | "-1" => -1,
        other => {
            eprintln!("harness: --acks {other:?}: expected 0, 1 or all");
            return None;
        }
    };
    let consume = match options.consume.as_str() {
        "after" => ConsumeMode::After,
        "during" => ConsumeMode::During,
        other => {
            eprintln!("harness: --consume {other:?}: expected after or during");
            return None;
        }
    };
    if options.partitions < 1
        || options.producers + options.consumers == 0
        || options.in_flight == 0
        || options.record_bytes == 0
        || options.append_bytes < options.record_bytes
    {
        eprintln!(
            "harness: need --partitions >= 1, --producers + --consumers >= 1, --in-flight >= 1 \
             and --batch-bytes >= --record-bytes >= 1"
        );
        return None;
    }
    if acks == -1 && options.in_flight > IDEMPOTENT_IN_FLIGHT_MAX {
        eprintln!(
            "harness: --acks all makes the producers idempotent, which allows at most \
             {IDEMPOTENT_IN_FLIGHT_MAX} requests in flight (--in-flight)"
        );
        return None;
    }
    if let Some(kill_at) = options.kill_leader_at {
        if options.brokers.is_none() || acks != -1 || kill_at >= options.duration {
            eprintln!(
                "harness: --kill-leader-at needs --brokers, --acks all (to check every \
                 acknowledged record afterwards) and a time within --duration"
            );
            return None;
        }
    } else if options.restart_after.is_some() {
        eprintln!("harness: --restart-after needs --kill-leader-at");
        return None;
    }
    if consume == ConsumeMode::During && acks == 0 && options.consumers > 0 {
        eprintln!("harness: --consume during needs --acks 1 or all (consumers stop where the acknowledged data ends)");
        return None;
    }
    let workload = BrokerWorkload {
        bootstrap: bootstrap.to_string(),
        topic: options.topic.clone(),
        partitions: options.partitions,
        producers: options.producers,
        consumers: options.consumers,
        record_bytes: options.record_bytes,
        batch_bytes: options.append_bytes,
        acks,
        duration: options.duration,
        warmup: options.warmup,
        in_flight: options.in_flight,
        rate_records_per_s: options.rate,
        fetch_bytes: options.fetch_bytes,
        fetch_wait_ms: options.fetch_wait.as_millis().min(i32::MAX as u128) as i32,
        consume,
        label: label.to_string(),
        replication,
        broker_pids: if broker_pids.is_empty() {
            options.broker_pid.into_iter().collect()
        } else {
            broker_pids
        },
        key_distributor: options.key_distributor,
        faults: options.kill_leader_at.map(|kill_leader_at| FaultPlan {
            kill_leader_at,
            restart_after: options.restart_after,
        }),
        workload_file: options.workload_name.clone(),
    };
    Some(workload)
}
