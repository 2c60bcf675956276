//! The controller: the quorum's role, reduced to one node that applies `ClusterState`
//! commands in order. It keeps its own liveness view: a broker it has not heard from for
//! `SESSION_TIMEOUT_MS` is fenced, and unfenced when its heartbeats come back. A broker that
//! (re)starts registers with a new incarnation; the same incarnation registering again (a
//! retried message) changes nothing.
//!
//! Every committed change is pushed to every broker and producer as versioned metadata, and
//! each heartbeat is answered with the current version, so lost pushes are repaired.

use std::collections::BTreeMap;

use shardlog::cluster::state::{
    BrokerId, ClusterState, Command, PartitionState, Refusal, TopicConfig,
};

use super::broker::TOPIC;
use super::network::{Message, Node};

pub const SESSION_TIMEOUT_MS: u64 = 300;

pub struct Controller {
    pub state: ClusterState,
    pub version: u64,
    last_heard_ms: BTreeMap<BrokerId, u64>,
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
        Controller {
            state,
            version: 1,
            last_heard_ms: ids.iter().map(|&id| (id, 0)).collect(),
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

    pub fn tick(&mut self, now_ms: u64) {
        let silent: Vec<BrokerId> = self
            .last_heard_ms
            .iter()
            .filter(|(id, heard)| {
                !self.is_fenced(**id) && now_ms.saturating_sub(**heard) > SESSION_TIMEOUT_MS
            })
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            let _ = self.apply(Command::FenceBroker { id });
        }
    }

    pub fn receive(&mut self, from: Node, message: Message, now_ms: u64) {
        match (from, message) {
            (Node::Broker(id), Message::Register { incarnation }) => {
                self.last_heard_ms.insert(id, now_ms);
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
                self.last_heard_ms.insert(id, now_ms);
                if self.is_fenced(id) {
                    let _ = self.apply(Command::UnfenceBroker { id });
                }
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
