//! shardlog's broker and cluster layers, over the storage engine.
//!
//! The storage layers live in the `shardlog-storage` crate and the cluster layer in
//! `shardlog-cluster`; both are re-exported here under their old paths (`shardlog::batch`,
//! `shardlog::log`, `shardlog::cluster`, ...), so code above them names one crate. See
//! `docs/architecture.md` for the crates and the direction of imports.
//! - [`cluster`]: the cluster state, the metadata quorum and the replication rules.
//! - [`broker`]: the Kafka-protocol server over the partition logs.

pub use shardlog_storage::{batch, error, fifo_lock, index, log, runtime, segment, storage};

pub mod broker;

pub use shardlog_cluster as cluster;

pub use shardlog_storage::{AppendInfo, Durability, LogConfig, LogError, PartitionLog};
pub use shardlog_storage::{Storage, StorageError, StrategyKind};
