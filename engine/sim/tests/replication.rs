//! Kafka's replication safety, under a seeded single-threaded simulation of a 3-broker
//! cluster: the shipped replication rules (`cluster::leader`, `cluster::follower`,
//! `cluster::admission`, `cluster::replica`, `cluster::epochs`, `cluster::state`) and the
//! real `PartitionLog` on a `SimDisk`, wired as `broker/replication.rs` and
//! `broker/partition/` wire them, with the metadata quorum as the brokers run it (a
//! `QuorumNode` voter on each broker's machine, its raft log on that machine's disk), over a
//! simulated network (delays, drops, partitions between machines) and disks (crashes that
//! lose what was not synced; recovery decides what survived). Every step is checked against
//! the invariants listed in `replication/invariants.rs`; a failure prints its seed, which
//! replays it exactly.
//!
//! `SHARDLOG_SIM_SEEDS=N` runs seeds 0..N (default 200), `SHARDLOG_SIM_SEED=S` runs only
//! seed S, `SHARDLOG_SIM_STEPS=K` sets the steps per seed (default 12000). See
//! docs/cluster.md, "Replication simulation".

#[path = "replication/broker.rs"]
mod broker;
#[path = "replication/invariants.rs"]
mod invariants;
#[path = "replication/log.rs"]
mod log;
#[path = "replication/network.rs"]
mod network;
#[path = "replication/producer.rs"]
mod producer;
#[path = "replication/quorum.rs"]
mod quorum;
#[path = "replication/world.rs"]
mod world;

use world::World;

const SEEDS_DEFAULT: u64 = 200;
const STEPS_DEFAULT: u64 = 12_000;

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

/// Runs one seed on a glommio executor of this thread (the log is single-core, and the
/// simulated disk answers at once, so nothing waits on real I/O or time).
fn run_seed(seed: u64, steps: u64) -> world::Summary {
    shardlog::runtime::run_local(shardlog::runtime::IO_MEMORY_BYTES_DEFAULT, async {
        World::new(seed).await.run(steps).await
    })
    .unwrap_or_else(|report| panic!("{report}"))
}

#[test]
fn replication_keeps_kafkas_guarantees_under_faults() {
    let steps = env_number("SHARDLOG_SIM_STEPS").unwrap_or(STEPS_DEFAULT);
    let seeds = match env_number("SHARDLOG_SIM_SEED") {
        Some(seed) => seed..seed + 1,
        None => 0..env_number("SHARDLOG_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT),
    };
    let (mut acknowledged, mut crashes, mut partitions, mut terms) = (0, 0, 0, 0);
    for seed in seeds.clone() {
        let summary = run_seed(seed, steps);
        acknowledged += summary.acknowledged;
        crashes += summary.crashes;
        partitions += summary.partitions;
        terms += summary.quorum_terms;
    }
    eprintln!(
        "seeds {seeds:?}, {steps} steps each: {acknowledged} records acknowledged, \
         {crashes} crashes, {partitions} partitions, {} quorum elections",
        terms - (seeds.end - seeds.start)
    );
    // The faults must not stop all progress, or the run proves little.
    assert!(acknowledged > 0, "no record was ever acknowledged");
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [7, 8] {
        assert_eq!(run_seed(seed, 3_000), run_seed(seed, 3_000));
    }
}
