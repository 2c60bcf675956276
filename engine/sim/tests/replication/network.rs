//! The simulated network: every message between the voters, the brokers and the producers
//! goes through here, arrives after a seeded random delay or is dropped, and is lost when a
//! partition cuts its link at sending or at delivery time. A voter lives on its broker's
//! machine: a partition that cuts a broker off cuts its voter off too, and messages between
//! a broker and its own voter always arrive, at once.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use shardlog::cluster::quorum::node::Message as RaftMessage;
use shardlog::cluster::state::{BrokerId, Command, PartitionState, Refusal};

use super::log;
use shardlog_sim::Rng;

/// Everything that sends or receives messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Broker(BrokerId),
    /// The quorum voter running on broker N's machine.
    Voter(BrokerId),
    Producer(u8),
}

impl Node {
    /// The machine a node runs on: a voter runs on its broker's.
    pub fn machine(self) -> Node {
        match self {
            Node::Voter(id) => Node::Broker(id),
            other => other,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Voter(id) => write!(formatter, "v{id}"),
            Node::Broker(id) => write!(formatter, "b{id}"),
            Node::Producer(id) => write!(formatter, "p{id}"),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Message {
    /// acks=all produce of one single-record batch per value.
    Produce {
        request: u64,
        values: Vec<u64>,
    },
    /// The real response carries the base offset of each batch; the simulation's batches
    /// hold one record each, so that is every record's offset.
    ProduceResponse {
        request: u64,
        error: i16,
        offsets: Vec<i64>,
    },
    /// A follower's replica fetch; `session` names the follower's fetch loop and request.
    Fetch {
        session: Session,
        offset: i64,
        current_leader_epoch: i32,
    },
    FetchResponse {
        session: Session,
        error: i16,
        high_watermark: i64,
        /// Whole batches, as the leader's log returned them.
        batches: Bytes,
    },
    /// OffsetForLeaderEpoch.
    EpochEnd {
        session: Session,
        current_leader_epoch: i32,
        epoch: i32,
    },
    EpochEndResponse {
        session: Session,
        error: i16,
        leader_epoch: i32,
        end_offset: i64,
    },
    /// A (re)started broker announces itself; `incarnation` tells restarts apart.
    Register {
        incarnation: u64,
    },
    /// The registration is applied; the broker starts from this metadata.
    RegisterResponse {
        incarnation: u64,
        version: u64,
        partition: PartitionState,
    },
    Heartbeat,
    /// A leader's ISR change, for the controller to apply.
    AlterIsr {
        proposal: u64,
        command: Command,
    },
    AlterIsrResponse {
        proposal: u64,
        /// `None`: applied.
        refusal: Option<Refusal>,
    },
    /// A voter's applied state of the partition; `version` is the raft index it was
    /// applied at, and the newest wins.
    Metadata {
        version: u64,
        partition: PartitionState,
    },
    /// Between voters.
    Raft(Box<RaftMessage>),
}

/// Which fetch loop (role generation) and which request of it a replica message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub incarnation: u64,
    pub generation: u64,
    pub request: u64,
}

#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: Node,
    pub to: Node,
    pub message: Message,
}

impl fmt::Display for Envelope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}->{} ", self.from, self.to)?;
        match &self.message {
            Message::FetchResponse {
                error,
                high_watermark,
                batches,
                ..
            } => {
                write!(
                    formatter,
                    "FetchResponse error={error} hw={high_watermark} records=["
                )?;
                for record in log::decode_all(batches) {
                    write!(
                        formatter,
                        " {}:e{}:v{}",
                        record.offset, record.epoch, record.value
                    )?;
                }
                write!(formatter, " ]")
            }
            Message::Metadata { version, partition } => write!(
                formatter,
                "Metadata v{version} leader={} epoch={} isr={:?} pepoch={}",
                partition.leader, partition.leader_epoch, partition.isr, partition.partition_epoch
            ),
            Message::Raft(message) => write!(
                formatter,
                "{:?} term={} log_term={} index={} commit={} entries={} reject={}",
                message.get_msg_type(),
                message.term,
                message.log_term,
                message.index,
                message.commit,
                message.entries.len(),
                message.reject
            ),
            other => write!(formatter, "{other:?}"),
        }
    }
}

/// Delays, losses and partitions.
#[derive(Debug)]
pub struct Network {
    delay_ms_min: u64,
    delay_ms_max: u64,
    drop_per_mille: u64,
    /// Links that are cut, as (smaller, larger) pairs of machines, with how many partitions
    /// cut each (partitions overlap: a link heals when the last one ends).
    cut: BTreeMap<(Node, Node), u32>,
}

impl Network {
    pub fn new(delay_ms_min: u64, delay_ms_max: u64, drop_per_mille: u64) -> Network {
        Network {
            delay_ms_min,
            delay_ms_max,
            drop_per_mille,
            cut: BTreeMap::new(),
        }
    }

    fn link(one: Node, other: Node) -> (Node, Node) {
        let (one, other) = (one.machine(), other.machine());
        (one.min(other), one.max(other))
    }

    pub fn cut(&mut self, one: Node, other: Node) {
        *self.cut.entry(Network::link(one, other)).or_insert(0) += 1;
    }

    pub fn heal(&mut self, one: Node, other: Node) {
        let link = Network::link(one, other);
        if let Some(count) = self.cut.get_mut(&link) {
            *count -= 1;
            if *count == 0 {
                self.cut.remove(&link);
            }
        }
    }

    pub fn connected(&self, one: Node, other: Node) -> bool {
        one.machine() == other.machine() || !self.cut.contains_key(&Network::link(one, other))
    }

    pub fn cut_links(&self) -> impl Iterator<Item = &(Node, Node)> {
        self.cut.keys()
    }

    /// When a message sent now arrives, or `None` if it is lost.
    pub fn transit_ms(&self, rng: &mut Rng, from: Node, to: Node) -> Option<u64> {
        if from.machine() == to.machine() {
            return Some(0);
        }
        if !self.connected(from, to) || rng.chance(self.drop_per_mille) {
            return None;
        }
        Some(rng.between(self.delay_ms_min, self.delay_ms_max))
    }
}
