//! shardlog's Kafka wire layer, below the cluster and the broker.
//!
//! - [`error_code`]: the one table of Kafka error codes. Lower layers return their own error
//!   enums; the broker's API handlers turn them into these codes.
//! - [`frame`]: reading a frame's size prefix with bounds, before any byte of it is trusted.
//! - [`buffers`]: reused buffers for large frames, and the byte budget for requests on a core.
//! - [`decode_guard`]: the allocator that keeps hostile array lengths from aborting a process.
//! - [`client`]: the one Kafka client (codec, version negotiation, a blocking and a glommio
//!   connection) used by the harness, the integration tests and the follower's fetcher.
//!
//! See `docs/architecture.md` for where this crate sits.

pub mod buffers;
pub mod client;
pub mod decode_guard;
pub mod error_code;
pub mod frame;
