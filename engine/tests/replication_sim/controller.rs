//! The controller: the quorum's role, reduced to one node that applies `ClusterState`
//! commands in order. Which brokers to fence and unfence is decided by the shipped
//! controller duties (`cluster::quorum::controller::Controller`, the leader's in a real
//! quorum): a broker not heard from for `SESSION_TIMEOUT_MS` is fenced, and unfenced once
//! its heartbeats come back (a decision is not proposed again within its repropose
//! interval, as in the broker). A broker that (re)starts registers with a new incarnation;
//! the same incarnation registering again (a retried message) changes nothing.
//!
//! Every committed change is pushed to every broker and producer as versioned metadata, and
//! each heartbeat is answered with the current version, so lost pushes are repaired.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shardlog::cluster::quorum::controller::Controller as Liveness;

use shardlog::cluster::state::{
    BrokerId, ClusterState, Command, PartitionState, Refusal, TopicConfig,
};

use super::broker::TOPIC;
use super::network::{Message, Node};

pub const SESSION_TIMEOUT_MS: u64 = 300;

pub struct Controller {
    pub state: ClusterState,
    pub version: u64,
    /// The shipped fence/unfence decisions, on a clock of `base` + simulated milliseconds.
    liveness: Liveness,
    base: Instant,
    incarnations: BTreeMap<BrokerId, u64>,
    subscribers: Vec<Node>,
    outputs: Vec<(Node, Message)>,
    notes: Vec<String>,
}

impl Controller {
    /// Brokers `ids`, registered and live, and topic `TOPIC` with one partition on all of them.
    pub fn new(ids: &[BrokerId], subscribers: Vec<Node>) -> Controller {
        let mut state = ClusterState::default();
        for &id in ids {
            state
                .apply(&Command::RegisterBroker {
                    id,
                    host: "sim".into(),
                    port: 9000 + id,
                })
                .expect("register");
        }
        state
            .apply(&Command::CreateTopic {
                name: TOPIC.into(),
                id: uuid::Uuid::nil(),
                config: TopicConfig {
                    segment_bytes: 1 << 20,
                    retention_bytes: None,
                    retention_ms: None,
                },
                replicas: vec![ids.to_vec()],
            })
            .expect("create the topic");
        let base = Instant::now();
        let mut liveness = Liveness::new(Duration::from_millis(SESSION_TIMEOUT_MS));
        // This controller leads from the start; every broker counts as heard then.
        liveness.set_leader(true, base);
        Controller {
            state,
            version: 1,
            liveness,
            base,
            // The brokers' first processes are the ones registered above.
            incarnations: ids.iter().map(|&id| (id, 1)).collect(),
            subscribers,
            outputs: Vec::new(),
            notes: Vec::new(),
        }
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

    fn apply(&mut self, command: Command) -> Result<(), Refusal> {
        let applied = self.state.apply(&command);
        let partition = self.partition();
        self.notes.push(format!(
            "ctl applies {command:?}: {} -> leader={} epoch={} isr={:?}",
            if applied.is_ok() { "ok" } else { "refused" },
            partition.leader,
            partition.leader_epoch,
            partition.isr
        ));
        applied?;
        self.version += 1;
        for index in 0..self.subscribers.len() {
            let to = self.subscribers[index];
            let message = self.metadata();
            self.outputs.push((to, message));
        }
        Ok(())
    }

    fn at(&self, now_ms: u64) -> Instant {
        self.base + Duration::from_millis(now_ms)
    }

    pub fn tick(&mut self, now_ms: u64) {
        let now = self.at(now_ms);
        for command in self.liveness.due(&self.state, now) {
            let _ = self.apply(command);
        }
    }

    pub fn receive(&mut self, from: Node, message: Message, now_ms: u64) {
        match (from, message) {
            (Node::Broker(id), Message::Register { incarnation }) => {
                self.liveness.heard(id, self.at(now_ms));
                if self.incarnations.get(&id) != Some(&incarnation) {
                    self.incarnations.insert(id, incarnation);
                    let _ = self.apply(Command::RegisterBroker {
                        id,
                        host: "sim".into(),
                        port: 9000 + id,
                    });
                }
                let response = Message::RegisterResponse {
                    incarnation,
                    version: self.version,
                    partition: self.partition(),
                };
                self.outputs.push((from, response));
            }
            (Node::Broker(id), Message::Heartbeat) => {
                // Unfencing waits for the next tick's decision, as in the broker.
                self.liveness.heard(id, self.at(now_ms));
                let metadata = self.metadata();
                self.outputs.push((from, metadata));
            }
            (Node::Producer(_), Message::Heartbeat) => {
                let metadata = self.metadata();
                self.outputs.push((from, metadata));
            }
            (Node::Broker(_), Message::AlterIsr { proposal, command }) => {
                let refusal = self.apply(command).err();
                self.outputs
                    .push((from, Message::AlterIsrResponse { proposal, refusal }));
            }
            _ => {}
        }
    }
}
