//! A small Kafka client for load generation: just enough of the protocol to create a topic,
//! produce pre-built record batches with requests pipelined, and fetch them back.
//!
//! - [`connection`]: one blocking TCP connection; framing, correlation ids, version
//!   negotiation (ApiVersions), and plain request/response calls for admin APIs.
//! - [`metadata`]: topic metadata, partition leaders, CreateTopics, DeleteTopics.
//! - [`failover`]: finding the leaders again after one is lost; which errors are retriable.
//! - [`produce`]: an idempotent producer with one pipelined connection per leader (up to N
//!   requests in flight, a sender and a receiver thread), latency into an HdrHistogram.
//! - [`fetch`]: a consumer that fetches from offset 0 and counts what it receives.
//! - [`stamp`]: the send time (and idempotent producer fields) stamped into each batch.
//!
//! Request and response types come from `kafka-protocol`; record batches come from
//! `shardlog::batch::BatchBuilder`. The hot paths allocate nothing per record: a batch is
//! built once and its request frame encoded once; each send writes a fresh 12-byte frame
//! prefix (size, API key, version, correlation id) and then the shared frame body.

pub mod connection;
pub mod failover;
pub mod fetch;
pub mod metadata;
pub mod produce;
pub mod stamp;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

/// What went wrong talking to a broker. Every variant names the broker's address or the
/// partition, so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("{address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("{address} did not answer a {api:?} request within {waited_s} s")]
    Timeout {
        address: String,
        api: ApiKey,
        waited_s: u64,
    },
    #[error("{address} closed the connection")]
    Closed { address: String },
    #[error("{address} sent a frame of {size} bytes; the limit is {limit_bytes}")]
    FrameTooLarge {
        address: String,
        size: i64,
        limit_bytes: usize,
    },
    #[error("cannot encode a {api:?} v{version} request: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot decode a {api:?} v{version} response from {address}: {reason}")]
    Decode {
        address: String,
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error(
        "{address} answered correlation id {found}, expected {expected} (responses out of order)"
    )]
    CorrelationMismatch {
        address: String,
        expected: i32,
        found: i32,
    },
    #[error(
        "{address} serves {api:?} versions {broker_range}; this client speaks {client_min}..={client_max}"
    )]
    UnsupportedVersion {
        address: String,
        api: ApiKey,
        broker_range: String,
        client_min: i16,
        client_max: i16,
    },
    #[error("{api:?} for {}: broker error {} ({error}){}", where_(topic, *partition), error.code(), message.as_deref().map(|text| format!(": {text}")).unwrap_or_default())]
    Broker {
        api: ApiKey,
        topic: String,
        partition: i32,
        error: ResponseError,
        message: Option<String>,
    },
    #[error("{api:?}: broker error {} ({error})", error.code())]
    BrokerRequest { api: ApiKey, error: ResponseError },
    #[error("{address} answered a {api:?} request without {what}")]
    MissingInResponse {
        address: String,
        api: ApiKey,
        what: String,
    },
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

/// "topic t" for topic-level errors (partition -1), "t/3" for a partition.
fn where_(topic: &str, partition: i32) -> String {
    if partition < 0 {
        format!("topic {topic}")
    } else {
        format!("{topic}/{partition}")
    }
}

/// A Kafka error code as an error, or `None` for 0.
pub fn response_error(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}
