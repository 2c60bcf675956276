//! The metadata quorum, as the brokers run it: every broker hosts a voter (the shipped
//! `QuorumNode` and its raft log on the broker's own simulated disk, driven as the driver
//! drives it: `shardlog_sim::SimVoter`). Raft messages between voters cross the simulated
//! network like any other message, so they are delayed, lost and cut by partitions, and a
//! voter crashes and restarts with its broker.
//!
//! A broker talks to the quorum as the real one does:
//! - **Registration and ISR changes** go to its own voter, which proposes them (raft
//!   forwards a follower's proposal to the leader) and answers once it has applied the
//!   entry. A proposal raft drops, or whose forwarding is lost, is never answered: the
//!   broker gives up after its timeout and asks again.
//! - **Heartbeats** go to every voter; whichever leads fences a broker it has not heard
//!   from for `SESSION_TIMEOUT_MS` and unfences it once heartbeats come back (the
//!   controller duties inside `QuorumNode`). Each voter answers a heartbeat with its own
//!   applied state of the partition.
//! - **Metadata**: a voter pushes its applied partition state to its broker whenever it
//!   changes. Its version is the raft index it was applied at, so a broker (or a producer,
//!   which asks any voter) keeps the newest it has seen.
//!
//! Election timeouts are fixed per voter (10, 13 and 16 ticks), so a seed replays exactly.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use raft::eraftpb::MessageType;
use shardlog::cluster::quorum::broker_id;
use shardlog::cluster::quorum::node::{Message as RaftMessage, NodeSettings};
use shardlog::cluster::state::{BrokerId, ClusterState, Command, PartitionState, TopicConfig};
use shardlog::storage::SimDisk;
use shardlog_sim::SimVoter;
use uuid::Uuid;

use super::broker::TOPIC;
use super::network::{Message, Node};

pub const SESSION_TIMEOUT_MS: u64 = 300;
/// A registration proposed this long ago and not applied is proposed again.
const REGISTER_RETRY_MS: u64 = 500;

/// Voter `index`'s settings: a fixed election timeout, different per voter.
fn settings(id: BrokerId, index: usize) -> NodeSettings {
    let election_ticks = 10 + 3 * index;
    NodeSettings {
        node_id: id,
        election_ticks,
        election_ticks_max: election_ticks + 1,
        heartbeat_ticks: 2,
        broker_session_timeout: Duration::from_millis(SESSION_TIMEOUT_MS),
        snapshot_every_entries: 512,
    }
}

/// What a voter proposed for its broker and has not seen applied yet.
#[derive(Debug)]
enum Pending {
    Register { incarnation: u64 },
    AlterIsr { proposal: u64 },
}

/// A voter and what it keeps for its broker.
struct Seat {
    voter: SimVoter,
    pending: BTreeMap<Uuid, Pending>,
    /// The broker incarnation whose registration this voter has seen applied.
    registered: Option<u64>,
    /// The incarnation being registered, and when it was proposed.
    registering: Option<(u64, u64)>,
    /// The partition state last pushed to the broker.
    pushed: Option<PartitionState>,
}

pub struct Quorum {
    seats: Vec<Seat>,
    base: Instant,
    /// The newest state any voter has applied, and its raft index: applied entries are
    /// committed and never roll back, so this is the cluster's state as far as it is known.
    view: (u64, ClusterState),
    next_proposal: u64,
    /// The highest raft term any voter reached: the first election is term 1.
    highest_term: u64,
    outputs: Vec<(Node, Node, Message)>,
    notes: Vec<String>,
}

impl Quorum {
    /// A voter on each broker's disk; brokers `ids` registered and topic `TOPIC` created
    /// with one partition on all of them, committed before the simulation starts (the
    /// voters talk directly until then).
    pub async fn new(ids: &[BrokerId], disks: Vec<SimDisk>) -> Quorum {
        let mut seats = Vec::new();
        for (index, (&id, disk)) in ids.iter().zip(disks).enumerate() {
            let voter = SimVoter::start(settings(id, index), ids, disk).await;
            seats.push(Seat {
                voter,
                pending: BTreeMap::new(),
                registered: Some(1),
                registering: None,
                pushed: None,
            });
        }
        let base = Instant::now();
        let mut quorum = Quorum {
            seats,
            base,
            view: (0, ClusterState::default()),
            next_proposal: 0,
            highest_term: 0,
            outputs: Vec::new(),
            notes: Vec::new(),
        };
        quorum.seats[0]
            .voter
            .node_mut()
            .expect("up")
            .campaign()
            .expect("campaign");
        quorum.settle(base).await;
        for &id in ids {
            for seat in &mut quorum.seats {
                seat.voter.node_mut().expect("up").heard(id, base);
            }
            let register = Command::RegisterBroker {
                id,
                host: "sim".into(),
                port: 9000 + id,
            };
            quorum.commit_at_start(register).await;
        }
        let create = Command::CreateTopic {
            name: TOPIC.into(),
            id: Uuid::nil(),
            config: TopicConfig {
                segment_bytes: 1 << 20,
                retention_bytes: None,
                retention_ms: None,
            },
            replicas: vec![ids.to_vec()],
        };
        quorum.commit_at_start(create).await;
        for seat in &mut quorum.seats {
            seat.pushed = partition_of(seat.voter.node().expect("up").state());
        }
        quorum
    }

    /// Before the simulation: proposes to the leader and delivers every message at once.
    async fn commit_at_start(&mut self, command: Command) {
        let id = self.proposal_id();
        let leader = self
            .seats
            .iter_mut()
            .find(|seat| seat.voter.node().is_some_and(|node| node.is_leader()))
            .expect("a leader after the first election");
        leader
            .voter
            .node_mut()
            .expect("up")
            .propose(id, command)
            .expect("the leader takes a proposal");
        self.settle(self.base).await;
    }

    /// Drives every voter and delivers raft messages directly until nothing moves.
    async fn settle(&mut self, now: Instant) {
        let mut link: VecDeque<RaftMessage> = VecDeque::new();
        loop {
            for index in 0..self.seats.len() {
                let driven = self.seats[index].voter.drive(|_, _| {}).await;
                assert!(driven.failed.is_none(), "no disk fault before the start");
                link.extend(driven.messages);
            }
            let Some(message) = link.pop_front() else {
                break;
            };
            let to = broker_id(message.to).expect("a voter");
            self.seat_mut(to).voter.step(message, now);
        }
        let leader = self.seats[0].voter.node().expect("up");
        self.view = (leader.applied(), leader.state().clone());
    }

    fn proposal_id(&mut self) -> Uuid {
        self.next_proposal += 1;
        Uuid::from_u64_pair(0, self.next_proposal)
    }

    fn seat(&self, id: BrokerId) -> &Seat {
        &self.seats[(id - 1) as usize]
    }

    fn seat_mut(&mut self, id: BrokerId) -> &mut Seat {
        &mut self.seats[(id - 1) as usize]
    }

    fn at(&self, now_ms: u64) -> Instant {
        self.base + Duration::from_millis(now_ms)
    }

    /// The partition as the newest applied state has it.
    pub fn partition(&self) -> PartitionState {
        partition_of(&self.view.1).expect("the topic exists from the start")
    }

    /// Whether no change is in flight: no voter waits for a proposal of its broker, every
    /// voter is up and has applied everything in its log, and all logs end at the same index. A change proposed before a crash and applied
    /// after it (a fence electing the broker that just crashed) cannot happen from here.
    pub fn settled(&self) -> bool {
        if self.seats.iter().any(|seat| !seat.pending.is_empty()) {
            return false;
        }
        let mut ends = self.seats.iter().map(|seat| {
            seat.voter.node().and_then(|node| {
                let last = raft::Storage::last_index(node.store()).ok()?;
                (node.applied() == last).then_some(last)
            })
        });
        let Some(Some(first)) = ends.next() else {
            return false;
        };
        ends.all(|end| end == Some(first))
    }

    /// The highest raft term any voter reached (elections held, counting the first).
    pub fn highest_term(&self) -> u64 {
        self.highest_term
    }

    /// The raft index of the newest applied state.
    pub fn version(&self) -> u64 {
        self.view.0
    }

    pub fn is_fenced(&self, id: BrokerId) -> bool {
        self.view.1.brokers.get(&id).is_none_or(|info| info.fenced)
    }

    /// The broker whose voter leads, if one does.
    pub fn leader(&self) -> Option<BrokerId> {
        self.seats
            .iter()
            .find(|seat| seat.voter.node().is_some_and(|node| node.is_leader()))
            .map(|seat| seat.voter.id)
    }

    /// Each voter: (up, term, applied index, leader), for a failure report.
    pub fn describe(&self) -> Vec<String> {
        self.seats
            .iter()
            .map(|seat| match seat.voter.node() {
                Some(node) => format!(
                    "v{}: term {} applied {} leader {:?}",
                    seat.voter.id,
                    node.term(),
                    node.applied(),
                    node.leader()
                ),
                None => format!("v{}: down", seat.voter.id),
            })
            .collect()
    }

    /// Messages to send, as (from, to, message), and notes for the trace.
    pub fn take_outputs(&mut self) -> (Vec<(Node, Node, Message)>, Vec<String>) {
        (
            std::mem::take(&mut self.outputs),
            std::mem::take(&mut self.notes),
        )
    }

    /// The voter's applied partition state, as a message.
    fn metadata(&self, id: BrokerId) -> Option<Message> {
        let node = self.seat(id).voter.node()?;
        Some(Message::Metadata {
            version: node.applied(),
            partition: partition_of(node.state())?,
        })
    }

    /// Broker `id` crashed: its voter stops with it (the broker crashes the disk).
    pub fn stop(&mut self, id: BrokerId) {
        let seat = self.seat_mut(id);
        seat.voter.stop();
        seat.pending.clear();
        seat.registering = None;
        seat.registered = None;
        seat.pushed = None;
    }

    /// Broker `id` restarts: its voter recovers from the log on the disk.
    pub async fn restart(&mut self, id: BrokerId, now_ms: u64) {
        self.seat_mut(id).voter.restart().await;
        let applied = self.seat(id).voter.node().map_or(0, |node| node.applied());
        self.notes.push(format!(
            "v{id} restarts from its log at applied index {applied}"
        ));
        self.drive(id, now_ms).await;
    }

    pub async fn tick(&mut self, id: BrokerId, now_ms: u64) {
        let now = self.at(now_ms);
        self.seat_mut(id).voter.tick(now);
        self.drive(id, now_ms).await;
        if let Some(node) = self.seat(id).voter.node() {
            self.highest_term = self.highest_term.max(node.term());
        }
    }

    /// A message for voter `id`.
    pub async fn receive(&mut self, id: BrokerId, from: Node, message: Message, now_ms: u64) {
        let now = self.at(now_ms);
        if !self.seat(id).voter.is_up() {
            return;
        }
        match (from, message) {
            (Node::Voter(_), Message::Raft(message)) => self.seat_mut(id).voter.step(*message, now),
            (Node::Broker(broker), Message::Heartbeat) => {
                if let Some(node) = self.seat_mut(id).voter.node_mut() {
                    node.heard(broker, now);
                }
                if let Some(metadata) = self.metadata(id) {
                    self.outputs.push((Node::Voter(id), from, metadata));
                }
            }
            (Node::Producer(_), Message::Heartbeat) => {
                if let Some(metadata) = self.metadata(id) {
                    self.outputs.push((Node::Voter(id), from, metadata));
                }
            }
            (Node::Broker(broker), Message::Register { incarnation }) if broker == id => {
                if let Some(node) = self.seat_mut(id).voter.node_mut() {
                    node.heard(broker, now);
                }
                self.register(id, incarnation, now_ms);
            }
            (Node::Broker(broker), Message::AlterIsr { proposal, command }) if broker == id => {
                let uuid = self.proposal_id();
                let seat = self.seat_mut(id);
                let proposed = seat
                    .voter
                    .node_mut()
                    .is_some_and(|node| node.propose(uuid, command).is_ok());
                if proposed {
                    seat.pending.insert(uuid, Pending::AlterIsr { proposal });
                }
            }
            _ => {}
        }
        self.drive(id, now_ms).await;
    }

    fn register(&mut self, id: BrokerId, incarnation: u64, now_ms: u64) {
        if self.seat(id).registered == Some(incarnation) {
            self.answer_registration(id, incarnation);
            return;
        }
        let recent = self
            .seat(id)
            .registering
            .is_some_and(|(pending, since_ms)| {
                pending == incarnation && now_ms < since_ms + REGISTER_RETRY_MS
            });
        if recent {
            return;
        }
        let uuid = self.proposal_id();
        let command = Command::RegisterBroker {
            id,
            host: "sim".into(),
            port: 9000 + id,
        };
        let seat = self.seat_mut(id);
        let proposed = seat
            .voter
            .node_mut()
            .is_some_and(|node| node.propose(uuid, command).is_ok());
        if proposed {
            seat.registering = Some((incarnation, now_ms));
            seat.pending.insert(uuid, Pending::Register { incarnation });
        }
    }

    fn answer_registration(&mut self, id: BrokerId, incarnation: u64) {
        if let Some(Message::Metadata { version, partition }) = self.metadata(id) {
            let response = Message::RegisterResponse {
                incarnation,
                version,
                partition,
            };
            self.outputs
                .push((Node::Voter(id), Node::Broker(id), response));
        }
    }

    /// Carries out voter `id`'s `Ready`s; sends its raft messages, answers what it applied,
    /// pushes a changed partition to its broker. A failed log write stops the voter.
    async fn drive(&mut self, id: BrokerId, now_ms: u64) {
        let mut newest: Option<(u64, ClusterState)> = None;
        let driven = self
            .seat_mut(id)
            .voter
            .drive(|applied, state| newest = Some((applied, state.clone())))
            .await;
        for message in driven.messages {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                // As the driver: handed to the transport counts as sent (a lost one is
                // noticed by raft when the follower keeps rejecting appends).
                if let Some(node) = self.seat_mut(id).voter.node_mut() {
                    node.report_snapshot(message.to, true);
                }
            }
            if let Some(to) = broker_id(message.to) {
                let message = Message::Raft(Box::new(message));
                self.outputs
                    .push((Node::Voter(id), Node::Voter(to), message));
            }
        }
        if let Some(error) = driven.failed {
            self.notes
                .push(format!("v{id} stops: its log write failed ({error})"));
            self.stop(id);
            return;
        }
        for (uuid, outcome) in driven.outcomes {
            match self.seat_mut(id).pending.remove(&uuid) {
                Some(Pending::Register { incarnation }) => {
                    self.notes.push(format!(
                        "v{id} applied b{id}'s registration (incarnation {incarnation})"
                    ));
                    let seat = self.seat_mut(id);
                    seat.registered = Some(incarnation);
                    seat.registering = None;
                    self.answer_registration(id, incarnation);
                }
                Some(Pending::AlterIsr { proposal }) => {
                    let refusal = outcome.err();
                    let response = Message::AlterIsrResponse { proposal, refusal };
                    self.outputs
                        .push((Node::Voter(id), Node::Broker(id), response));
                }
                None => {}
            }
        }
        if let Some((applied, state)) = newest {
            let partition = partition_of(&state);
            if applied > self.view.0 {
                if partition_of(&self.view.1) != partition {
                    if let Some(changed) = &partition {
                        self.notes.push(format!(
                            "quorum state at raft index {applied} (v{id}, {now_ms} ms): \
                             leader={} epoch={} isr={:?}",
                            changed.leader, changed.leader_epoch, changed.isr
                        ));
                    }
                }
                self.view = (applied, state);
            }
            if partition.is_some() && self.seat(id).pushed != partition {
                self.seat_mut(id).pushed.clone_from(&partition);
                if let Some(metadata) = self.metadata(id) {
                    self.outputs
                        .push((Node::Voter(id), Node::Broker(id), metadata));
                }
            }
        }
    }
}

fn partition_of(state: &ClusterState) -> Option<PartitionState> {
    state
        .topic(TOPIC)
        .and_then(|topic| topic.assignment.first().cloned())
}
