//! Making brokers a cluster: the replicated metadata (`state`), the quorum that agrees on it,
//! and data replication between partition leaders and followers. The rules are sans-I/O
//! machines (`state`, `replica`, `epochs`, `producers`, `admission`, `leader`, `follower`) that the broker drives
//! and the replication simulation drives too.

pub mod admission;
pub mod epochs;
pub mod fetcher;
pub mod follower;
pub mod leader;
pub mod producers;
pub mod quorum;
pub mod replica;
pub mod state;
