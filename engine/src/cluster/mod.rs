//! Making brokers a cluster: the replicated metadata (`state`), the quorum that agrees on it,
//! and data replication between partition leaders and followers.

pub mod quorum;
pub mod state;
