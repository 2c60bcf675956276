//! The metadata quorum with real raft nodes, real files and real TCP on loopback: three
//! voters in this process, each driven on its own glommio executor thread, as core 0 of three
//! brokers would drive them.
//!
//! One scenario per test: election and replication (a proposal made on a follower is applied
//! everywhere, a refusal comes back to the proposer), failover (stopping the leader elects
//! another that keeps the state), fencing (the stopped broker's partitions move to another
//! ISR member with a higher leader epoch), and restart (a node recovers from its files and
//! catches up, by snapshot when the leader compacted its log meanwhile).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use shardlog::cluster::quorum::{ProposeError, Quorum, QuorumConfig, QuorumError};
use shardlog::cluster::state::{
    place_replicas, BrokerId, ClusterState, Command, Refusal, TopicConfig,
};
use uuid::Uuid;

/// Long enough for an election (200-400 ms here) and a few round trips on a loaded machine.
const WAIT: Duration = Duration::from_secs(20);
const SESSION_TIMEOUT: Duration = Duration::from_millis(1500);
/// Entries between snapshots: small, so a node that was down must catch up by snapshot.
const SNAPSHOT_EVERY: u64 = 8;

fn free_port_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address")
}

fn config(node_id: BrokerId, voters: &[(BrokerId, SocketAddr)], data_dir: &Path) -> QuorumConfig {
    let mut config = QuorumConfig::new(node_id, data_dir.to_path_buf());
    config.voters = voters.to_vec();
    config.tick_interval = Duration::from_millis(20);
    config.election_ticks = 10;
    config.heartbeat_ticks = 2;
    config.heartbeat_interval = Duration::from_millis(100);
    config.broker_session_timeout = SESSION_TIMEOUT;
    config.propose_timeout = Duration::from_secs(10);
    config.snapshot_every_entries = SNAPSHOT_EVERY;
    config
}

/// One voter: its quorum handle and the executor thread that drives it.
struct Node {
    id: BrokerId,
    config: QuorumConfig,
    quorum: Arc<Quorum>,
    executor: Option<ExecutorJoinHandle<Result<(), QuorumError>>>,
}

impl Node {
    fn start(config: QuorumConfig) -> Node {
        let quorum = Quorum::open(config.clone()).expect("open the quorum");
        Node::run(config, quorum)
    }

    fn run(config: QuorumConfig, quorum: Arc<Quorum>) -> Node {
        let driven = Arc::clone(&quorum);
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("quorum-{}", config.node_id))
            .io_memory(shardlog::runtime::IO_MEMORY_BYTES_DEFAULT)
            .spawn(move || async move { driven.run().await })
            .expect("start an executor");
        Node {
            id: config.node_id,
            config,
            quorum,
            executor: Some(executor),
        }
    }

    fn stop(&mut self) {
        self.quorum.stop();
        if let Some(executor) = self.executor.take() {
            let result = executor.join().expect("the executor ends");
            assert!(result.is_ok(), "node {} stopped with {result:?}", self.id);
        }
    }

    fn propose(&self, command: Command) -> Result<(), ProposeError> {
        block_on(self.quorum.propose(command))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.quorum.stop();
        if let Some(executor) = self.executor.take() {
            let _ = executor.join();
        }
    }
}

/// Logs to the test's output (`RUST_LOG=info` to see elections, fencing and snapshots).
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The leader every running node agrees on.
fn agreed_leader(nodes: &[&Node]) -> Option<BrokerId> {
    let first = nodes.first()?.quorum.controller_id()?;
    nodes
        .iter()
        .all(|node| node.quorum.controller_id() == Some(first))
        .then_some(first)
}

fn register(node: &Node) {
    node.propose(Command::RegisterBroker {
        id: node.id,
        host: "127.0.0.1".into(),
        port: 9092 + node.id,
    })
    .expect("register");
}

fn create_topic(
    node: &Node,
    name: &str,
    partitions: i32,
    brokers: &[BrokerId],
) -> Result<(), ProposeError> {
    node.propose(Command::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        config: TopicConfig {
            segment_bytes: 1 << 20,
            retention_bytes: None,
            retention_ms: None,
        },
        replicas: place_replicas(brokers, partitions, brokers.len(), 0).expect("placement"),
    })
}

fn temporary_dirs(count: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
    let root = tempfile::Builder::new()
        .prefix("quorum-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temporary directory");
    let dirs = (0..count)
        .map(|index| root.path().join(format!("node-{index}")))
        .collect();
    (root, dirs)
}

fn start_three(dirs: &[PathBuf]) -> Vec<Node> {
    init_logging();
    let voters: Vec<(BrokerId, SocketAddr)> = (0..3).map(|id| (id, free_port_address())).collect();
    (0..3)
        .map(|id| Node::start(config(id, &voters, &dirs[id as usize])))
        .collect()
}

fn same_topics(a: &ClusterState, b: &ClusterState) -> bool {
    a.topics.len() == b.topics.len()
        && a.topics
            .iter()
            .zip(&b.topics)
            .all(|((name_a, topic_a), (name_b, topic_b))| {
                name_a == name_b
                    && topic_a.id == topic_b.id
                    && topic_a.assignment == topic_b.assignment
            })
}

#[test]
fn a_follower_proposal_is_applied_everywhere_and_failover_keeps_the_state() {
    let (_root, dirs) = temporary_dirs(3);
    let mut nodes = start_three(&dirs);
    wait_until("the three agree on a leader", || {
        agreed_leader(&nodes.iter().collect::<Vec<_>>()).is_some()
    });
    for node in &nodes {
        register(node);
    }
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).expect("leader");
    let follower = nodes
        .iter()
        .find(|node| node.id != leader)
        .expect("a follower");
    create_topic(follower, "orders", 3, &[0, 1, 2]).expect("create on a follower");
    // The proposer sees its change as soon as propose returns.
    assert!(follower.quorum.state().topic("orders").is_some());
    assert_eq!(
        create_topic(follower, "orders", 1, &[0]),
        Err(ProposeError::Refused(Refusal::TopicExists("orders".into())))
    );
    wait_until("every node applied the topic", || {
        nodes.iter().all(|node| {
            node.quorum.state().topic("orders").is_some() && node.quorum.state().brokers.len() == 3
        })
    });

    // Stop the leader: the other two elect a new one that has the same state.
    let stopped = nodes
        .iter()
        .position(|node| node.id == leader)
        .expect("leader node");
    nodes[stopped].stop();
    let alive: Vec<&Node> = nodes.iter().filter(|node| node.id != leader).collect();
    wait_until("the survivors elect a new leader", || {
        agreed_leader(&alive).is_some_and(|new| new != leader)
    });
    let new_leader = agreed_leader(&alive).expect("new leader");
    for node in &alive {
        assert!(
            node.quorum.state().topic("orders").is_some(),
            "node {} lost the topic",
            node.id
        );
    }
    create_topic(alive[1], "after-failover", 1, &[0, 1, 2]).expect("the new quorum commits");
    assert!(alive[1].quorum.state().topic("after-failover").is_some());
    wait_until("both survivors have the new topic", || {
        alive
            .iter()
            .all(|node| node.quorum.state().topic("after-failover").is_some())
    });
    assert_ne!(new_leader, leader);
}

#[test]
fn a_silent_broker_is_fenced_its_partitions_move_and_a_restart_catches_up() {
    let (_root, dirs) = temporary_dirs(3);
    let mut nodes = start_three(&dirs);
    wait_until("the three agree on a leader", || {
        agreed_leader(&nodes.iter().collect::<Vec<_>>()).is_some()
    });
    for node in &nodes {
        register(node);
    }
    create_topic(&nodes[0], "events", 6, &[0, 1, 2]).expect("create");
    let before = nodes[0]
        .quorum
        .state()
        .topic("events")
        .expect("events")
        .clone();
    wait_until("every node has the topic", || {
        nodes
            .iter()
            .all(|node| node.quorum.state().topic("events").is_some())
    });

    // Stop a follower: nobody hears its heartbeats any more.
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).expect("leader");
    let silent = nodes
        .iter()
        .position(|node| node.id != leader)
        .expect("a follower");
    let silent_id = nodes[silent].id;
    nodes[silent].stop();
    let alive: Vec<&Node> = nodes.iter().filter(|node| node.id != silent_id).collect();
    wait_until("the silent broker is fenced", || {
        alive
            .iter()
            .all(|node| node.quorum.state().brokers[&silent_id].fenced)
    });
    let after = alive[0]
        .quorum
        .state()
        .topic("events")
        .expect("events")
        .clone();
    let mut moved = 0;
    for (partition, (was, now)) in before.assignment.iter().zip(&after.assignment).enumerate() {
        assert!(
            !now.isr.contains(&silent_id),
            "partition {partition}: still in the ISR: {now:?}"
        );
        assert_ne!(
            now.leader, silent_id,
            "partition {partition} still led by the fenced broker"
        );
        if was.leader == silent_id {
            moved += 1;
            assert!(
                was.isr.contains(&now.leader),
                "partition {partition}: new leader from the ISR"
            );
            assert!(
                now.leader_epoch > was.leader_epoch,
                "partition {partition}: epoch {was:?} -> {now:?}"
            );
        } else {
            assert_eq!(
                now.leader, was.leader,
                "partition {partition}: an unaffected leader moved"
            );
        }
    }
    assert_eq!(moved, 2, "the silent broker led 2 of 6 partitions");

    // While it is down, enough changes for the leader to compact its log past it.
    for index in 0..(SNAPSHOT_EVERY * 2) {
        create_topic(alive[0], &format!("while-down-{index}"), 1, &[leader]).expect("create");
    }
    let expected = alive[0].quorum.state();

    // Restarted, it has what it had applied before it stopped, from its own files...
    let restarted = Quorum::open(nodes[silent].config.clone()).expect("reopen");
    assert!(restarted.state().topic("events").is_some());
    assert!(
        !restarted.state().brokers[&silent_id].fenced,
        "it stopped before it was fenced"
    );
    // ...then catches up (by snapshot) and, heartbeating again, is unfenced.
    nodes[silent] = Node::run(nodes[silent].config.clone(), restarted);
    wait_until("the restarted node catches up and is unfenced", || {
        let state = nodes[silent].quorum.state();
        same_topics(&state, &expected)
            && nodes
                .iter()
                .all(|node| !node.quorum.state().brokers[&silent_id].fenced)
    });
}

#[test]
fn a_single_node_quorum_elects_itself_and_recovers_after_a_restart() {
    init_logging();
    let (_root, dirs) = temporary_dirs(1);
    let config = config(7, &[], &dirs[0]);
    let mut node = Node::start(config.clone());
    register(&node);
    assert_eq!(node.quorum.controller_id(), Some(7));
    for index in 0..(SNAPSHOT_EVERY + 3) {
        create_topic(&node, &format!("t{index}"), 2, &[7]).expect("create");
    }
    node.propose(Command::DeleteTopic { name: "t0".into() })
        .expect("delete");
    let version = node.quorum.version();
    let expected = node.quorum.state();
    node.stop();

    let reopened = Quorum::open(config.clone()).expect("reopen");
    assert_eq!(
        reopened.version(),
        version,
        "everything applied before the stop"
    );
    assert!(same_topics(&reopened.state(), &expected));
    let node = Node::run(config, reopened);
    wait_until("it leads again", || node.quorum.controller_id() == Some(7));
    create_topic(&node, "after-restart", 1, &[7]).expect("create after restart");
    assert!(node.quorum.state().topic("t0").is_none());
}
