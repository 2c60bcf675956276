//! Making brokers a cluster: the replicated metadata (`state`), the quorum that agrees on it,
//! and data replication between partition leaders and followers. The rules are sans-I/O
//! machines (`state`, `replica`, `epochs`, `producers`, `admission`, `leader`, `follower`)
//! that the broker drives and the replication simulation drives too.
//!
//! This crate imports the storage and protocol crates and never the broker: the only I/O it
//! does itself is the quorum's (its Raft log and peer links) and the follower's fetch client.

// The storage layers, under the paths the engine crate re-exports them at.
use shardlog_storage::{batch, error, log, storage};
use shardlog_storage::{LogError, StorageError};

pub mod admission;
pub mod epochs;
pub mod fetcher;
pub mod follower;
pub mod leader;
pub mod producers;
pub mod quorum;
pub mod replica;
pub mod state;
