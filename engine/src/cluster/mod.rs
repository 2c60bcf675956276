//! Making brokers a cluster: the replicated metadata (`state`), the quorum that agrees on it,
//! and data replication between partition leaders and followers.

pub mod epochs;
pub mod fetcher;
pub mod quorum;
pub mod replica;
pub mod state;
