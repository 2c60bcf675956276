//! A small Kafka client for load generation: just enough of the protocol to create a topic,
//! produce pre-built record batches with requests pipelined, and fetch them back.
//!
//! - [`metadata`]: topic metadata, partition leaders, CreateTopics, DeleteTopics.
//! - [`failover`]: finding the leaders again after one is lost; which errors are retriable.
//! - [`produce`]: an idempotent producer with one pipelined connection per leader (up to N
//!   requests in flight, a sender and a receiver thread), latency into an HdrHistogram.
//! - [`fetch`]: a consumer that fetches from offset 0 and counts what it receives.
//! - [`stamp`]: the send time (and idempotent producer fields) stamped into each batch.
//!
//! Connections, framing, correlation ids and version negotiation are the one Kafka client's,
//! `shardlog_protocol::client` (blocking connections here). Request and response types come
//! from `kafka-protocol`; record batches come from `shardlog::batch::BatchBuilder`. The hot
//! paths allocate nothing per record: a batch is built once and its request frame encoded
//! once; each send writes a fresh 12-byte frame prefix (size, API key, version, correlation
//! id) and then the shared frame body.

pub mod failover;
pub mod fetch;
pub mod metadata;
pub mod produce;
pub mod stamp;

use shardlog_protocol::client::Connection;
pub use shardlog_protocol::client::{response_error, ClientError};

/// The client software name the harness gives brokers in ApiVersions.
pub const CLIENT_SOFTWARE: &str = "shardlog-harness";

/// Connects to a broker and asks which API versions it serves.
pub fn open(address: &str, client_id: &str) -> Result<Connection, ClientError> {
    Connection::open(address, client_id, CLIENT_SOFTWARE)
}

/// What stopped a workload: the client's errors (talking to a broker), and what the harness
/// itself checks in the answers and the run. Every variant names the broker, the partition
/// or the setting concerned, so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("bad record batch from {topic}/{partition} at offset {offset}: {reason}")]
    BadBatch {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("{what}")]
    Unsupported { what: String },
    #[error("{what}: no progress for {waited_s} s")]
    Stalled { what: String, waited_s: u64 },
}
