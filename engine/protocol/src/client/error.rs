//! What can go wrong talking to a broker, in one enum for every user of the client.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

use crate::frame::FrameError;

/// What went wrong talking to a broker. Every variant names the broker's address or the API
/// (and the partition where one is concerned), so a caller can print it as is.
///
/// `kafka-protocol` reports encode and decode failures as `anyhow::Error`; only their text
/// is kept (`reason`), with the API and version they happened on.
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
    #[error("{address} did not answer a {api:?} request within {waited:?}")]
    Timeout {
        address: String,
        api: ApiKey,
        waited: Duration,
    },
    #[error("{address} closed the connection")]
    Closed { address: String },
    #[error("{address} sent a bad frame: {source}")]
    FrameSize { address: String, source: FrameError },
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
    #[error("{address} sent {bytes} bytes after a {api:?} v{version} response")]
    TrailingBytes {
        address: String,
        api: ApiKey,
        version: i16,
        bytes: usize,
    },
    #[error(
        "{address} answered a {api:?} request with correlation id {found}, expected {expected} \
         (responses out of order)"
    )]
    CorrelationMismatch {
        address: String,
        api: ApiKey,
        expected: i32,
        found: i32,
    },
    #[error(
        "{address} serves {api:?} versions {}; this client speaks {client_min}..={client_max}",
        describe_range(*broker_versions)
    )]
    UnsupportedVersion {
        address: String,
        api: ApiKey,
        /// `None` when the broker does not serve the API at all.
        broker_versions: Option<(i16, i16)>,
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
}

/// "topic t" for topic-level errors (partition -1), "t/3" for a partition.
fn where_(topic: &str, partition: i32) -> String {
    if partition < 0 {
        format!("topic {topic}")
    } else {
        format!("{topic}/{partition}")
    }
}

fn describe_range(range: Option<(i16, i16)>) -> String {
    match range {
        Some((min, max)) => format!("{min}..={max}"),
        None => "none".to_string(),
    }
}

/// A Kafka error code as an error, or `None` for 0.
pub fn response_error(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}
