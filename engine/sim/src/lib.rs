//! What shardlog's seeded simulations share. The simulations are this crate's tests:
//!
//! - `tests/replication.rs`: a 3-broker cluster, each broker holding a replica of one
//!   partition (the shipped replication rules over the real `PartitionLog` on a simulated
//!   disk) and a voter of the metadata quorum, under network, disk and process faults.
//! - `tests/quorum.rs`: three voters of the metadata quorum alone, with failed fsyncs,
//!   duplicated messages and many more elections.
//!
//! Both run single-threaded on one glommio executor, with one seeded generator ([`Rng`]) for
//! every delay, loss and fault, and a clock that jumps from event to event, so a failing
//! seed replays exactly. See docs/cluster.md, "Simulations".

pub mod rng;
pub mod voter;

pub use rng::Rng;
pub use voter::SimVoter;
