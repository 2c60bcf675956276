//! shardlog's storage engine: Kafka-format partition logs on interchangeable storage strategies.
//!
//! The bottom layer of shardlog (`docs/architecture.md`): it imports no other shardlog crate,
//! and knows nothing of the wire protocol, the cluster or the broker.
//!
//! Layers, bottom up (each a module; see `docs/storage.md`):
//! - [`batch`]: Kafka's RecordBatch v2 bytes: validate, patch offsets, build, decode.
//! - [`storage`]: the seam between the log and the device, and its strategies
//!   (`direct`, `buffered`, `uring`, `sim`), all driven by one [`storage::Appender`].
//! - [`index`]: the sparse offset and time indexes beside each segment.
//! - [`segment`]: one log file and its indexes.
//! - [`log`]: the partition log: append, read, look up, truncate, retain, recover.
//! - [`runtime`]: running engine code on glommio executors.
//! - [`fifo_lock`]: the strictly first-come lock that keeps appends in arrival order.

pub mod batch;
pub mod error;
pub mod fifo_lock;
pub mod index;
pub mod log;
pub mod runtime;
pub mod segment;
pub mod storage;

pub use error::{LogError, StorageError};
pub use log::{AppendInfo, Durability, LogConfig, PartitionLog};
pub use storage::{Storage, StrategyKind};
