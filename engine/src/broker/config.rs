//! The broker's settings: command-line flags over an optional TOML file over defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Settings of one broker process. Every bound on memory is here (see `memory_bound_bytes`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id (Kafka `node.id`), non-negative. Its raft id in the metadata quorum
    /// is `node_id + 1`.
    pub node_id: i32,
    /// The cluster id reported to clients. Default: derived from `quorum` (the same on every
    /// broker of the cluster), or a random id kept in the data directory for a lone broker.
    pub cluster_id: Option<String>,
    /// Address to listen on (every core accepts on it, with SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Host name clients should use to reach this broker (default: the listen address).
    pub advertised_host: Option<String>,
    /// Where partition directories and metadata live.
    pub data_dir: PathBuf,
    /// Executors (one per core, pinned). 0 = every online core.
    pub cores: usize,
    /// The CPU the first executor is pinned to; the others follow (wrapping around). Lets
    /// several brokers on one machine spread over its CPUs.
    pub first_cpu: usize,
    /// Pin each executor to its CPU (the default). Off, the kernel places the executors:
    /// better when several brokers share fewer CPUs than they have executors together.
    pub pin_cores: bool,
    /// Storage strategy: direct, buffered or uring.
    pub strategy: String,
    /// none, interval or always.
    pub durability: String,
    pub durability_interval_ms: u64,
    pub durability_interval_bytes: u64,
    /// Default segment size of new topics (Kafka `log.segment.bytes`).
    pub segment_bytes: u64,
    /// Default retention of new topics (Kafka `log.retention.bytes`, `log.retention.ms`);
    /// none = unlimited.
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    /// How often each core enforces retention.
    pub retention_check_interval_ms: u64,
    /// Partitions of auto-created topics (Kafka `num.partitions`).
    pub default_partitions: i32,
    /// Create unknown topics on produce and metadata requests (Kafka `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Largest request accepted; larger frames close the connection
    /// (Kafka `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Largest record batch accepted (Kafka `message.max.bytes`). A batch travels inside a
    /// request, so `start` lowers this to `max_request_bytes` when it is larger.
    pub max_batch_bytes: usize,
    /// Requests of one connection processed at once (pipelining); later ones wait to be read.
    pub max_in_flight_per_connection: usize,
    /// Connections one core serves at once; further connections are closed on accept.
    pub max_connections_per_core: usize,
    /// Bytes of large requests (64 KiB and up) one core holds read and not yet answered,
    /// across its connections (Kafka's `queued.max.request.bytes`); a connection waits for
    /// room before it reads such a frame. As much again may be kept as idle request buffers
    /// for reuse.
    pub request_memory_bytes: u64,
    /// Recent batches kept in memory per partition for strategies that write with O_DIRECT.
    pub tail_cache_bytes: u64,
    /// The largest step in which a segment's space is reserved (fallocate) ahead of its
    /// writes; steps start at 1 MiB and double up to this (Redpanda's
    /// `segment_fallocation_step`). A multiple of 4096.
    pub segment_fallocation_step_bytes: u64,
    /// For strategies that write with O_DIRECT: catch-up fetches (older than the tail cache)
    /// are read with O_DIRECT in windows of this size, one window ahead of each reader.
    /// 0 sends them from the file with `sendfile` instead.
    pub read_ahead_bytes: u64,
    /// Bytes of read-ahead windows, and of responses made from them, one core may hold; as
    /// much again may be kept as idle buffers for reuse.
    pub read_memory_bytes: u64,
    /// Locked memory glommio registers per core for DMA buffers.
    pub io_memory_bytes: usize,
    /// Longest a fetch waits for `min_bytes` (caps the client's `max_wait_ms`).
    pub fetch_wait_max_ms: u64,
    /// acks=all needs at least this many in-sync replicas (Kafka `min.insync.replicas`).
    pub min_insync_replicas: usize,
    /// A follower not caught up for this long leaves the ISR
    /// (Kafka `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// Most bytes a follower asks for per fetch (Kafka `replica.fetch.max.bytes`).
    pub replica_fetch_max_bytes: u32,
    /// How long a follower's fetch waits at the leader for new data
    /// (Kafka `replica.fetch.wait.max.ms`).
    pub replica_fetch_wait_max_ms: u64,
    /// Partitions of `__consumer_offsets` when it is created (Kafka
    /// `offsets.topic.num.partitions`); an existing topic keeps its count.
    pub offsets_topic_partitions: i32,
    /// How long the first rebalance of an empty group waits for more members (Kafka
    /// `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Session timeouts a member may ask for (Kafka `group.min.session.timeout.ms`,
    /// `group.max.session.timeout.ms`).
    pub group_min_session_timeout_ms: u64,
    pub group_max_session_timeout_ms: u64,
    /// Members one group may have (Kafka `group.max.size`).
    pub group_max_size: usize,
    /// Protocol metadata one member may send in a JoinGroup (all its protocols), and the
    /// assignment the leader may give one member.
    pub group_member_metadata_bytes_max: usize,
    /// Metadata string of one committed offset (Kafka `offset.metadata.max.bytes`).
    pub offset_metadata_bytes_max: usize,
    /// The metadata quorum's voters, `ID@HOST:PORT,...`, each voter's controller address
    /// (Kafka `controller.quorum.voters`). None: a quorum of this broker alone.
    pub quorum: Option<String>,
    /// Where this broker accepts the other voters' connections (default: its own address in
    /// `quorum`).
    pub controller_listen: Option<SocketAddr>,
    /// A broker the controller has not heard from for this long is fenced (Kafka
    /// `broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// How often every broker tells every voter it is alive (Kafka
    /// `broker.heartbeat.interval.ms`).
    pub heartbeat_interval_ms: u64,
    /// One raft tick; elections start after 10 to 20 ticks without a leader.
    pub quorum_tick_ms: u64,
    /// Replicas per partition when a request leaves it to the broker (-1) and for auto-created
    /// topics (Kafka `default.replication.factor`).
    pub default_replication_factor: i16,
    /// How long a share-group member holds the records a ShareFetch gave it before they are
    /// offered again (Kafka `group.share.record.lock.duration.ms`).
    pub share_record_lock_duration_ms: u64,
    /// Deliveries of one record to a share group before it is archived instead of offered
    /// again (Kafka `group.share.delivery.count.limit`).
    pub share_delivery_count_limit: u16,
    /// Records one share partition may have in flight, from its start offset on (Kafka
    /// `group.share.partition.max.record.locks`); also caps one fetch's records.
    pub share_partition_max_record_locks: u32,
    /// A share-group member not heard from for this long is removed (Kafka
    /// `group.share.session.timeout.ms`).
    pub share_session_timeout_ms: u64,
    /// How often share-group members should heartbeat (Kafka
    /// `group.share.heartbeat.interval.ms`).
    pub share_heartbeat_interval_ms: u64,
    /// Members one share group may have (Kafka `group.share.max.size`).
    pub share_group_max_size: usize,
    /// Where a share group starts in a partition it has never read: `earliest` or `latest`
    /// (Kafka's group config `share.auto.offset.reset`).
    pub share_auto_offset_reset: String,
    /// Partitions of `__share_group_state` when it is created (Kafka
    /// `share.coordinator.state.topic.num.partitions`).
    pub share_state_topic_partitions: i32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 0,
            cluster_id: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: None,
            data_dir: PathBuf::from("data"),
            cores: 0,
            first_cpu: 0,
            pin_cores: true,
            strategy: "buffered".to_string(),
            durability: "none".to_string(),
            durability_interval_ms: 100,
            durability_interval_bytes: 16 << 20,
            segment_bytes: 128 << 20,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_check_interval_ms: 60_000,
            default_partitions: 1,
            auto_create_topics: true,
            max_request_bytes: 100 << 20,
            max_batch_bytes: 8 << 20,
            max_in_flight_per_connection: 16,
            max_connections_per_core: 1024,
            request_memory_bytes: 128 << 20,
            tail_cache_bytes: 8 << 20,
            segment_fallocation_step_bytes: crate::log::PREALLOCATE_STEP_BYTES_DEFAULT,
            read_ahead_bytes: 8 << 20,
            read_memory_bytes: 64 << 20,
            io_memory_bytes: 32 << 20,
            fetch_wait_max_ms: 30_000,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 8 << 20,
            replica_fetch_wait_max_ms: 500,
            offsets_topic_partitions: 50,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 1_000,
            group_member_metadata_bytes_max: 1 << 20,
            offset_metadata_bytes_max: 4_096,
            quorum: None,
            controller_listen: None,
            broker_session_timeout_ms: 9_000,
            heartbeat_interval_ms: 2_000,
            quorum_tick_ms: 100,
            default_replication_factor: 1,
            share_record_lock_duration_ms: 30_000,
            share_delivery_count_limit: 5,
            share_partition_max_record_locks: 2_000,
            share_session_timeout_ms: 45_000,
            share_heartbeat_interval_ms: 5_000,
            share_group_max_size: 200,
            share_auto_offset_reset: "latest".to_string(),
            share_state_topic_partitions: 50,
        }
    }
}

/// One voter: `ID@HOST:PORT`, the host resolved now.
fn parse_voter(text: &str) -> Result<(i32, SocketAddr), String> {
    use std::net::ToSocketAddrs;
    let text = text.trim();
    let (id, address) = text
        .split_once('@')
        .ok_or_else(|| format!("quorum voter {text:?}: expected ID@HOST:PORT"))?;
    let id: i32 = id
        .parse()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| format!("quorum voter {text:?}: the id is not a non-negative number"))?;
    let address = address
        .to_socket_addrs()
        .map_err(|error| format!("quorum voter {text:?}: {error}"))?
        .next()
        .ok_or_else(|| format!("quorum voter {text:?}: the host resolves to nothing"))?;
    Ok((id, address))
}

impl BrokerConfig {
    /// Reads a TOML file of settings (any subset; the rest keep their defaults).
    pub fn from_toml_file(path: &std::path::Path) -> Result<BrokerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        toml::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Why these settings cannot work, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if crate::StrategyKind::from_name(&self.strategy).is_err() || self.strategy == "sim" {
            return Some(format!(
                "strategy {:?}: expected direct, buffered or uring",
                self.strategy
            ));
        }
        if crate::Durability::from_name(&self.durability, 1, 1).is_none() {
            return Some(format!(
                "durability {:?}: expected none, interval or always",
                self.durability
            ));
        }
        if self.segment_fallocation_step_bytes == 0
            || !self.segment_fallocation_step_bytes.is_multiple_of(4096)
        {
            return Some(
                "segment_fallocation_step_bytes must be a positive multiple of 4096".to_string(),
            );
        }
        if self.default_partitions < 1 {
            return Some("default_partitions must be at least 1".to_string());
        }
        if self.min_insync_replicas == 0 {
            return Some("min_insync_replicas must be at least 1".to_string());
        }
        if self.max_in_flight_per_connection == 0 || self.max_connections_per_core == 0 {
            return Some("connection limits must be at least 1".to_string());
        }
        if self.request_memory_bytes < 1 << 20 {
            return Some("request_memory_bytes must be at least 1 MiB".to_string());
        }
        if self.read_ahead_bytes > self.read_memory_bytes {
            return Some(
                "read_ahead_bytes must not exceed read_memory_bytes (0 turns read-ahead off)"
                    .to_string(),
            );
        }
        if !(1..=super::metadata::PARTITIONS_MAX).contains(&self.offsets_topic_partitions) {
            return Some("offsets_topic_partitions must be between 1 and 10000".to_string());
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
            || self.group_max_size == 0
        {
            return Some(
                "group session timeouts must be ordered and group_max_size at least 1".to_string(),
            );
        }
        if self.node_id < 0 {
            return Some("node_id must not be negative".to_string());
        }
        if self.default_replication_factor < 1 || self.min_insync_replicas < 1 {
            return Some(
                "default_replication_factor and min_insync_replicas must be at least 1".to_string(),
            );
        }
        if self.heartbeat_interval_ms == 0
            || self.quorum_tick_ms == 0
            || self.broker_session_timeout_ms <= self.heartbeat_interval_ms
        {
            return Some(
                "broker_session_timeout_ms must exceed heartbeat_interval_ms (> 0), and \
                 quorum_tick_ms must be positive"
                    .to_string(),
            );
        }
        if let Err(problem) = self.quorum_voters() {
            return Some(problem);
        }
        self.share_problem()
    }

    /// Why the share-group settings cannot work, if they cannot.
    fn share_problem(&self) -> Option<String> {
        if self.share_record_lock_duration_ms < 100 {
            return Some("share_record_lock_duration_ms must be at least 100".to_string());
        }
        if !(2..=10).contains(&self.share_delivery_count_limit) {
            return Some("share_delivery_count_limit must be between 2 and 10".to_string());
        }
        if !(100..=10_000).contains(&self.share_partition_max_record_locks) {
            return Some(
                "share_partition_max_record_locks must be between 100 and 10000".to_string(),
            );
        }
        if self.share_heartbeat_interval_ms == 0
            || self.share_session_timeout_ms <= self.share_heartbeat_interval_ms
        {
            return Some(
                "share_session_timeout_ms must exceed share_heartbeat_interval_ms (> 0)"
                    .to_string(),
            );
        }
        if self.share_group_max_size == 0 {
            return Some("share_group_max_size must be at least 1".to_string());
        }
        if OffsetReset::from_name(&self.share_auto_offset_reset).is_none() {
            return Some(format!(
                "share_auto_offset_reset {:?}: expected earliest or latest",
                self.share_auto_offset_reset
            ));
        }
        if !(1..=super::metadata::PARTITIONS_MAX).contains(&self.share_state_topic_partitions) {
            return Some("share_state_topic_partitions must be between 1 and 10000".to_string());
        }
        None
    }

    /// The voters of `quorum`, parsed and resolved: `ID@HOST:PORT,...`. Empty when unset.
    pub fn quorum_voters(&self) -> Result<Vec<(i32, SocketAddr)>, String> {
        let Some(text) = self
            .quorum
            .as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty())
        else {
            return Ok(Vec::new());
        };
        text.split(',').map(parse_voter).collect()
    }

    /// The metadata quorum's settings for this broker.
    pub fn quorum_config(&self) -> Result<crate::cluster::quorum::QuorumConfig, String> {
        use std::time::Duration;
        let mut config =
            crate::cluster::quorum::QuorumConfig::new(self.node_id, self.data_dir.clone());
        config.voters = self.quorum_voters()?;
        config.listen = self.controller_listen;
        config.tick_interval = Duration::from_millis(self.quorum_tick_ms);
        config.heartbeat_interval = Duration::from_millis(self.heartbeat_interval_ms);
        config.broker_session_timeout = Duration::from_millis(self.broker_session_timeout_ms);
        Ok(config)
    }

    pub fn strategy_kind(&self) -> crate::StrategyKind {
        crate::StrategyKind::from_name(&self.strategy).unwrap_or(crate::StrategyKind::Buffered)
    }

    pub fn durability_policy(&self) -> crate::Durability {
        crate::Durability::from_name(
            &self.durability,
            self.durability_interval_ms,
            self.durability_interval_bytes,
        )
        .unwrap_or(crate::Durability::None)
    }

    /// An upper bound on the memory the broker's buffers can take, per core, given
    /// `partitions_per_core` partitions on that core:
    /// - requests read and not yet answered: frames of 64 KiB or more share
    ///   `request_memory_bytes` (one request larger than that waits for all of it), and as
    ///   much again is kept in idle buffers for reuse; smaller frames, at most connections x
    ///   in-flight of them;
    /// - per followed partition: a replica fetch response being appended and one idle buffer
    ///   kept for the next, `replica_fetch_max_bytes` each;
    /// - per partition: twice the tail cache (a cached batch may keep the request buffer it
    ///   came in alive, but only when it is at least half of it) plus the log's write buffers
    ///   (one chunk being filled plus `write_behind_max` in flight, 1 MiB each);
    /// - catch-up reads: `read_memory_bytes` of windows and responses, as much again idle,
    ///   and with `uring` the aligned read buffers it keeps.
    pub fn memory_bound_bytes(&self, partitions_per_core: u64) -> u64 {
        let small_frames = self.max_connections_per_core as u64
            * self.max_in_flight_per_connection as u64
            * shardlog_protocol::buffers::POOLED_MIN_BYTES as u64;
        let requests =
            2 * self.request_memory_bytes.max(self.max_request_bytes as u64) + small_frames;
        let per_partition = 2 * self.tail_cache_bytes
            + 17 * (1 << 20)
            + 2 * u64::from(self.replica_fetch_max_bytes);
        requests
            + partitions_per_core * per_partition
            + 2 * self.read_memory_bytes
            + if self.strategy == "uring" {
                crate::storage::KEPT_READ_BUFFERS_BYTES_MAX
            } else {
                0
            }
            + self.io_memory_bytes as u64
    }
}

/// Where a share group starts in a partition it has never read (`share_auto_offset_reset`,
/// or the group config `share.auto.offset.reset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    pub fn from_name(name: &str) -> Option<OffsetReset> {
        match name {
            "earliest" => Some(OffsetReset::Earliest),
            "latest" => Some(OffsetReset::Latest),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_voters_parse_and_bad_ones_are_named() {
        let mut config = BrokerConfig {
            quorum: Some("0@127.0.0.1:9093, 1@localhost:9094".to_string()),
            ..BrokerConfig::default()
        };
        let voters = config.quorum_voters().expect("voters");
        assert_eq!(voters[0], (0, SocketAddr::from(([127, 0, 0, 1], 9093))));
        assert_eq!((voters[1].0, voters[1].1.port()), (1, 9094));
        for bad in [
            "0127.0.0.1:9093",
            "x@127.0.0.1:1",
            "-1@127.0.0.1:1",
            "1@nowhere",
        ] {
            config.quorum = Some(bad.to_string());
            assert!(config.problem().is_some(), "{bad:?}");
        }
        config.quorum = None;
        assert!(config.quorum_voters().expect("none").is_empty());
    }
}
