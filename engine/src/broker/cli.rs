//! The broker's command line: defaults, then an optional TOML file (`--config`), then flags.
//!
//! Shared by the `broker` binary and the harness, which starts its local clusters as real
//! broker processes by running itself with `broker` as the first argument.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::BrokerConfig;

#[derive(Parser, Debug)]
#[command(
    name = "broker",
    version,
    about = "A shardlog broker (Kafka wire protocol)"
)]
struct Options {
    /// TOML file of settings (field names as in BrokerConfig; flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:9092 (port 0: any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Host name advertised to clients in metadata.
    #[arg(long)]
    advertised_host: Option<String>,
    /// Broker id.
    #[arg(long)]
    node_id: Option<i32>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Cores (executors) to run; 0 = all.
    #[arg(long)]
    cores: Option<usize>,
    /// CPU to pin the first executor to (the others follow).
    #[arg(long)]
    first_cpu: Option<usize>,
    /// Pin each executor to a CPU (true/false).
    #[arg(long)]
    pin_cores: Option<bool>,
    /// Storage strategy: direct, buffered or uring.
    #[arg(long)]
    strategy: Option<String>,
    /// Durability: none, interval or always.
    #[arg(long)]
    durability: Option<String>,
    /// Segment size of new topics, in bytes.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Retention of new topics, in bytes (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    retention_bytes: Option<i64>,
    /// Retention of new topics, in milliseconds (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    retention_ms: Option<i64>,
    /// Partitions of auto-created topics.
    #[arg(long)]
    default_partitions: Option<i32>,
    /// Create unknown topics on produce and metadata (true/false).
    #[arg(long)]
    auto_create_topics: Option<bool>,
    /// Largest request accepted, in bytes.
    #[arg(long)]
    max_request_bytes: Option<usize>,
    /// Metadata quorum voters, ID@HOST:PORT,... (their controller addresses, this broker's
    /// included). Absent: a quorum of this broker alone.
    #[arg(long)]
    quorum: Option<String>,
    /// Address to accept the other voters' connections on (default: this broker's address
    /// in --quorum).
    #[arg(long)]
    controller_listen: Option<SocketAddr>,
    /// Fence a broker not heard from for this long, in milliseconds.
    #[arg(long)]
    broker_session_timeout_ms: Option<u64>,
    /// How often to tell the voters this broker is alive, in milliseconds.
    #[arg(long)]
    heartbeat_interval_ms: Option<u64>,
    /// Replicas per partition of new topics when the request says -1, and of auto-created ones.
    #[arg(long)]
    default_replication_factor: Option<i16>,
    /// Fewest in-sync replicas for an acks=all produce.
    #[arg(long)]
    min_insync_replicas: Option<usize>,
    /// A follower not caught up for this long leaves the ISR, in milliseconds.
    #[arg(long)]
    replica_lag_time_max_ms: Option<u64>,
    /// Partitions of __consumer_offsets when it is created.
    #[arg(long)]
    offsets_topic_partitions: Option<i32>,
    /// How long the first rebalance of an empty group waits for more members, in ms.
    #[arg(long)]
    group_initial_rebalance_delay_ms: Option<u64>,
    /// How long a share-group member holds fetched records, in milliseconds.
    #[arg(long)]
    share_record_lock_duration_ms: Option<u64>,
    /// Deliveries of one record to a share group before it is archived.
    #[arg(long)]
    share_delivery_count_limit: Option<u16>,
    /// Where a share group starts in a partition it never read: earliest or latest.
    #[arg(long)]
    share_auto_offset_reset: Option<String>,
    /// A share-group member not heard from for this long is removed, in milliseconds.
    #[arg(long)]
    share_session_timeout_ms: Option<u64>,
}

/// Parses `args` (the program name first) and runs the broker until SIGTERM or SIGINT.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log redirected to a file stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let options = Options::parse_from(args);
    let mut config = match &options.config {
        Some(path) => match BrokerConfig::from_toml_file(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("broker: {error}");
                return ExitCode::from(2);
            }
        },
        None => BrokerConfig::default(),
    };
    let unlimited = |value: i64| (value >= 0).then_some(value as u64);
    macro_rules! set {
        ($($field:ident),*) => {$( if let Some(value) = options.$field.clone() { config.$field = value; } )*};
    }
    set!(
        listen,
        node_id,
        data_dir,
        cores,
        first_cpu,
        pin_cores,
        strategy,
        durability,
        segment_bytes
    );
    set!(default_partitions, auto_create_topics, max_request_bytes);
    set!(offsets_topic_partitions, group_initial_rebalance_delay_ms);
    set!(
        share_record_lock_duration_ms,
        share_delivery_count_limit,
        share_auto_offset_reset,
        share_session_timeout_ms
    );
    set!(
        broker_session_timeout_ms,
        heartbeat_interval_ms,
        default_replication_factor,
        min_insync_replicas,
        replica_lag_time_max_ms
    );
    if let Some(voters) = options.quorum.clone() {
        config.quorum = Some(voters);
    }
    if let Some(address) = options.controller_listen {
        config.controller_listen = Some(address);
    }
    if let Some(host) = options.advertised_host.clone() {
        config.advertised_host = Some(host);
    }
    if let Some(bytes) = options.retention_bytes {
        config.retention_bytes = unlimited(bytes);
    }
    if let Some(ms) = options.retention_ms {
        config.retention_ms = unlimited(ms);
    }
    match super::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("broker: {error}");
            ExitCode::FAILURE
        }
    }
}
