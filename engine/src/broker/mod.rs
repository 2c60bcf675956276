//! The broker: a thread-per-core server that speaks the Kafka wire protocol.
//!
//! - [`server`] starts one glommio executor per core; every core accepts connections.
//! - [`shard`] is one core's state: the partitions it owns, opened on first use;
//!   [`routing`] says which core owns a partition and carries work to it (one generic
//!   cross-core call); [`partition`] is one partition's state and its produce, fetch and
//!   offset paths.
//! - [`connection`] reads framed requests, runs them (pipelined, bounded) and writes the
//!   responses in order; `shardlog_protocol::buffers` reuses large request buffers and bounds the
//!   bytes of requests a core holds.
//! - [`api`] answers each Kafka API; [`fetch_response`] and [`zero_copy`] send fetched batches
//!   straight from segment files with `sendfile`.
//! - [`replication`] makes each core lead or follow its partitions as the metadata says.
//! - [`metadata`] holds the topics; idempotent producers are deduplicated by
//!   `cluster::admission`;
//!   [`tail_cache`] keeps recent batches in memory for O_DIRECT strategies, and
//!   [`read_ahead`] reads older ones for them ahead of catch-up readers.
//! - [`group`] coordinates consumer groups and keeps their committed offsets in
//!   `__consumer_offsets`.
//! - [`internal_topic`] is the one rule by which both rebuild their state from an internal
//!   topic's partition: replayed on first use, only by its leader, dropped on a change.
//! - [`share`] serves share groups (queues: records leased to one member at a time) and keeps
//!   their state in `__share_group_state`.
//!
//! See `docs/broker.md` for the design and its bounds.

pub mod api;
pub mod chunks;
pub mod cli;
pub mod config;
pub mod connection;
pub mod fetch_response;
pub mod group;
pub mod internal_topic;
pub mod metadata;
pub mod ownership;
pub mod partition;
pub mod producer_ids;
pub mod read_ahead;
pub mod replay;
pub mod replication;
pub mod routing;
pub mod server;
pub mod shard;
pub mod share;
pub mod shared;
pub mod tail_cache;
pub mod zero_copy;

pub use config::BrokerConfig;
pub use server::run;
