//! The controller: three voters of the metadata quorum, each the shipped `QuorumNode` with its
//! raft log (`LogFile`) on its own simulated disk. Every change (a registration, an ISR
//! change, a fence) is proposed to the raft leader and takes effect once raft committed and
//! applied it, through the same two `Ready` halves the broker's driver carries out.
//! Which brokers to fence and unfence is decided by the leader's controller duties inside
//! `QuorumNode` (`quorum::controller`): a broker not heard from for `SESSION_TIMEOUT_MS` is
//! fenced, and unfenced once its heartbeats come back. A broker that (re)starts registers
//! with a new incarnation; the same incarnation registering again (a retried message)
//! changes nothing.
//!
//! The voters talk over a reliable in-process link and their disks do not fail: after the
//! first election no follower ever times out, so raft's randomized election timeouts (from a
//! generator raft-rs does not let us seed) never matter and a seed replays exactly. Faults
//! in the quorum itself are the quorum simulation's (`engine/cluster/tests/quorum_sim.rs`).
//!
//! Every committed change is pushed to every broker and producer as versioned metadata, and
//! each heartbeat is answered with the current version, so lost pushes are repaired.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shardlog::cluster::quorum::node::{Message as RaftMessage, NodeSettings, QuorumNode};
use shardlog::cluster::quorum::storage::{LogFile, QuorumStorage};
use shardlog::cluster::quorum::{broker_id, raft_id};
use shardlog::cluster::state::{
    BrokerId, ClusterState, Command, PartitionState, Refusal, TopicConfig,
};
use shardlog::storage::SimDisk;
use shardlog::Storage;
use uuid::Uuid;

use super::broker::TOPIC;
use super::network::{Message, Node};

pub const SESSION_TIMEOUT_MS: u64 = 300;
/// The voters' broker ids (not the simulated brokers': the quorum is its own nodes here).
const VOTERS: [BrokerId; 3] = [101, 102, 103];

/// One voter: its raft node and log.
struct Voter {
    node: QuorumNode,
    log: LogFile,
}

pub struct Controller {
    /// The leader's applied state (the controller's view).
    pub state: ClusterState,
    pub version: u64,
    voters: Vec<Voter>,
    /// Raft messages between voters, delivered in order.
    link: VecDeque<RaftMessage>,
    /// Outcomes of proposals, by id, as the voters applied them.
    outcomes: BTreeMap<Uuid, Result<(), Refusal>>,
    next_proposal: u64,
    base: Instant,
    incarnations: BTreeMap<BrokerId, u64>,
    subscribers: Vec<Node>,
    outputs: Vec<(Node, Message)>,
    notes: Vec<String>,
}

fn settings(id: BrokerId) -> NodeSettings {
    NodeSettings {
        node_id: id,
        election_ticks: 10,
        election_ticks_max: 11,
        heartbeat_ticks: 2,
        broker_session_timeout: Duration::from_millis(SESSION_TIMEOUT_MS),
        snapshot_every_entries: 512,
    }
}

impl Controller {
    /// Brokers `ids`, registered and live, and topic `TOPIC` with one partition on all of
    /// them, committed through the quorum.
    pub async fn new(ids: &[BrokerId], subscribers: Vec<Node>) -> Controller {
        let raft_ids: Vec<u64> = VOTERS.iter().map(|&id| raft_id(id)).collect();
        let mut voters = Vec::new();
        for (index, &id) in VOTERS.iter().enumerate() {
            let disk = Storage::Sim(SimDisk::new(index as u64));
            let dir = PathBuf::from("/sim/metadata");
            let loaded = QuorumStorage::load(&disk, &dir, &raft_ids).expect("load");
            let log = LogFile::open(disk, &dir, &loaded).await.expect("open");
            let (state, applied) = QuorumNode::recover_state(&loaded.storage).expect("recover");
            let node =
                QuorumNode::new(&settings(id), loaded.storage, state, applied).expect("voter");
            voters.push(Voter { node, log });
        }
        let base = Instant::now();
        let mut controller = Controller {
            state: ClusterState::default(),
            version: 0,
            voters,
            link: VecDeque::new(),
            outcomes: BTreeMap::new(),
            next_proposal: 0,
            base,
            // The brokers' first processes are the ones registered below.
            incarnations: ids.iter().map(|&id| (id, 1)).collect(),
            subscribers,
            outputs: Vec::new(),
            notes: Vec::new(),
        };
        controller.voters[0].node.campaign().expect("campaign");
        controller.pump(0).await;
        for &id in ids {
            for voter in &mut controller.voters {
                voter.node.heard(id, base);
            }
            controller
                .commit(Command::RegisterBroker {
                    id,
                    host: "sim".into(),
                    port: 9000 + id,
                })
                .await
                .expect("register");
        }
        controller
            .commit(Command::CreateTopic {
                name: TOPIC.into(),
                id: Uuid::nil(),
                config: TopicConfig {
                    segment_bytes: 1 << 20,
                    retention_bytes: None,
                    retention_ms: None,
                },
                replicas: vec![ids.to_vec()],
            })
            .await
            .expect("create the topic");
        controller.outputs.clear();
        controller.notes.clear();
        controller.version = 1;
        controller
    }

    pub fn partition(&self) -> PartitionState {
        self.state.topic(TOPIC).expect("topic").assignment[0].clone()
    }

    pub fn is_fenced(&self, id: BrokerId) -> bool {
        self.state.brokers.get(&id).is_none_or(|info| info.fenced)
    }

    pub fn take_outputs(&mut self) -> (Vec<(Node, Message)>, Vec<String>) {
        (
            std::mem::take(&mut self.outputs),
            std::mem::take(&mut self.notes),
        )
    }

    fn metadata(&self) -> Message {
        Message::Metadata {
            version: self.version,
            partition: self.partition(),
        }
    }

    fn at(&self, now_ms: u64) -> Instant {
        self.base + Duration::from_millis(now_ms)
    }

    fn leader(&self) -> usize {
        self.voters
            .iter()
            .position(|voter| voter.node.is_leader())
            .expect("the quorum has a leader (its link never fails)")
    }

    /// Proposes `command` to the leader and returns its outcome once raft applied it.
    async fn commit(&mut self, command: Command) -> Result<(), Refusal> {
        let id = Uuid::from_u64_pair(0, self.next_proposal);
        self.next_proposal += 1;
        let leader = self.leader();
        self.voters[leader]
            .node
            .propose(id, command.clone())
            .expect("the leader takes a proposal");
        self.pump(0).await;
        let outcome = self
            .outcomes
            .remove(&id)
            .expect("a proposal to a leader over a reliable link commits");
        self.notes.push(format!(
            "ctl commits {command:?}: {}",
            if outcome.is_ok() { "ok" } else { "refused" }
        ));
        outcome
    }

    /// Carries out every voter's `Ready`s and delivers their messages until nothing moves,
    /// then publishes the leader's state if it changed.
    async fn pump(&mut self, now_ms: u64) {
        let now = self.at(now_ms);
        loop {
            let mut moved = false;
            for index in 0..self.voters.len() {
                while self.voters[index].node.has_ready() {
                    moved = true;
                    let voter = &mut self.voters[index];
                    let writes = voter.node.begin_ready().expect("begin_ready");
                    self.link.extend(writes.send_now);
                    if let Some(image) = writes.rewrite {
                        voter.log.rewrite(image).await.expect("rewrite");
                    }
                    voter.log.append(&writes.records).await.expect("append");
                    let done = voter.node.finish_ready().expect("finish_ready");
                    self.link.extend(done.send_persisted);
                    voter
                        .log
                        .append(&done.commit_records)
                        .await
                        .expect("append the commit index");
                    self.link.extend(done.send_after);
                    for (id, outcome) in done.outcomes {
                        self.outcomes.entry(id).or_insert(outcome);
                    }
                }
                let voter = &mut self.voters[index];
                if let Some(image) = voter.node.compact_if_due().expect("compact") {
                    voter.log.rewrite(image).await.expect("compact");
                }
            }
            while let Some(message) = self.link.pop_front() {
                moved = true;
                let to = broker_id(message.to).expect("a voter");
                let index = VOTERS.iter().position(|&id| id == to).expect("a voter");
                let _ = self.voters[index].node.step(message);
                self.voters[index].node.follow_role(now);
            }
            if !moved {
                break;
            }
        }
        // Outcomes nobody waits for (the controller duties' own proposals) are dropped.
        let waiting_below = Uuid::from_u64_pair(0, self.next_proposal);
        self.outcomes
            .retain(|id, _| id.as_u64_pair().0 == 0 && *id < waiting_below);
        let leader = &self.voters[self.leader()].node;
        let state = leader.state();
        if serde_json::to_string(state).ok() != serde_json::to_string(&self.state).ok() {
            self.state = state.clone();
            self.version += 1;
            let partition = self
                .state
                .topic(TOPIC)
                .and_then(|topic| topic.assignment.first().cloned());
            if let Some(partition) = partition {
                self.notes.push(format!(
                    "ctl state v{} (raft index {}): leader={} epoch={} isr={:?}",
                    self.version,
                    leader.applied(),
                    partition.leader,
                    partition.leader_epoch,
                    partition.isr
                ));
                for index in 0..self.subscribers.len() {
                    let to = self.subscribers[index];
                    let message = self.metadata();
                    self.outputs.push((to, message));
                }
            }
        }
    }

    pub async fn tick(&mut self, now_ms: u64) {
        let now = self.at(now_ms);
        for voter in &mut self.voters {
            voter.node.tick(now);
        }
        self.pump(now_ms).await;
    }

    pub async fn receive(&mut self, from: Node, message: Message, now_ms: u64) {
        let now = self.at(now_ms);
        match (from, message) {
            (Node::Broker(id), Message::Register { incarnation }) => {
                for voter in &mut self.voters {
                    voter.node.heard(id, now);
                }
                if self.incarnations.get(&id) != Some(&incarnation) {
                    self.incarnations.insert(id, incarnation);
                    let _ = self
                        .commit(Command::RegisterBroker {
                            id,
                            host: "sim".into(),
                            port: 9000 + id,
                        })
                        .await;
                }
                let response = Message::RegisterResponse {
                    incarnation,
                    version: self.version,
                    partition: self.partition(),
                };
                self.outputs.push((from, response));
            }
            (Node::Broker(id), Message::Heartbeat) => {
                // Unfencing waits for the leader's next tick, as in the broker.
                for voter in &mut self.voters {
                    voter.node.heard(id, now);
                }
                let metadata = self.metadata();
                self.outputs.push((from, metadata));
            }
            (Node::Producer(_), Message::Heartbeat) => {
                let metadata = self.metadata();
                self.outputs.push((from, metadata));
            }
            (Node::Broker(_), Message::AlterIsr { proposal, command }) => {
                let refusal = self.commit(command).await.err();
                self.outputs
                    .push((from, Message::AlterIsrResponse { proposal, refusal }));
            }
            _ => {}
        }
    }
}
