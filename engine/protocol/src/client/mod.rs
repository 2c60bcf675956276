//! The one Kafka client: what the harness, the integration tests and the follower's fetcher
//! use to talk to a broker.
//!
//! - [`codec`]: request frames out (header and body for a version, the 12-byte prefix that
//!   lets one encoded frame go out under many correlation ids), response frames in (header,
//!   correlation check, body, nothing left over). The byte layouts are drawn there.
//! - [`versions`]: ApiVersions, and the version to use per API.
//! - [`blocking`]: a connection over `std::net::TcpStream`, for threads; plain calls, or a
//!   writer and a reader for pipelining.
//! - [`on_glommio`]: a connection on a glommio executor, reading responses into reused
//!   buffers, for the broker's own requests to other brokers.
//! - [`ClientError`]: what went wrong, naming the broker's address or the API.
//!
//! Both connections use the same codec and read every frame's size through
//! [`crate::frame`], so a response is bounded before it is read. Request and response types
//! come from `kafka-protocol`; the client interprets no response: error codes in an answer
//! are the caller's to read.

pub mod blocking;
pub mod codec;
mod error;
pub mod on_glommio;
pub mod versions;

pub use blocking::{Connection, FrameReader, FrameWriter};
pub use error::{response_error, ClientError};
pub use on_glommio::AsyncConnection;
pub use versions::BrokerVersions;

/// The correlation id of a connection's first request; each request takes the next one.
pub const FIRST_CORRELATION_ID: i32 = 1;

#[cfg(test)]
mod tests;
