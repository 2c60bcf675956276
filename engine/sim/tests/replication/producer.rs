//! A producer: acks=all produces of one to three fresh values, one request in flight, sent
//! to the broker the newest metadata it got from a voter names as leader. A request unanswered for
//! `REQUEST_TIMEOUT_MS` has an unknown outcome and is not retried (values are never reused,
//! so the invariants can tell every record apart).

use shardlog::broker::shard::error_code;
use shardlog::cluster::state::{BrokerId, NO_LEADER};

use super::network::{Message, Node};
use super::world::BROKERS;
use shardlog_sim::Rng;

const REQUEST_TIMEOUT_MS: u64 = 1_500;
const PAUSE_MS_MAX: u64 = 40;

/// Values a producer learned are acknowledged, with their offsets.
pub type Acknowledged = Vec<(i64, u64)>;

pub struct Producer {
    pub id: u8,
    leader: BrokerId,
    metadata_version: u64,
    in_flight: Option<InFlight>,
    next_send_ms: u64,
    next_value: u64,
    next_request: u64,
    outputs: Vec<(Node, Message)>,
}

struct InFlight {
    request: u64,
    values: Vec<u64>,
    deadline_ms: u64,
}

impl Producer {
    pub fn new(id: u8) -> Producer {
        Producer {
            id,
            leader: NO_LEADER,
            metadata_version: 0,
            in_flight: None,
            next_send_ms: 0,
            next_value: 0,
            next_request: 0,
            outputs: Vec::new(),
        }
    }

    pub fn take_outputs(&mut self) -> Vec<(Node, Message)> {
        std::mem::take(&mut self.outputs)
    }

    /// Asks a voter, any of them, for its state of the partition.
    fn refresh_metadata(&mut self, rng: &mut Rng) {
        let voter = rng.pick(&BROKERS);
        self.outputs.push((Node::Voter(voter), Message::Heartbeat));
    }

    pub fn tick(&mut self, now_ms: u64, rng: &mut Rng) {
        if let Some(in_flight) = &self.in_flight {
            if now_ms < in_flight.deadline_ms {
                return;
            }
            self.in_flight = None;
            self.refresh_metadata(rng);
        }
        if now_ms < self.next_send_ms {
            return;
        }
        if self.leader == NO_LEADER {
            self.next_send_ms = now_ms + 100;
            self.refresh_metadata(rng);
            return;
        }
        let count = rng.between(1, 3);
        let values: Vec<u64> = (0..count)
            .map(|_| {
                self.next_value += 1;
                (u64::from(self.id) << 32) | self.next_value
            })
            .collect();
        self.next_request += 1;
        self.in_flight = Some(InFlight {
            request: self.next_request,
            values: values.clone(),
            deadline_ms: now_ms + REQUEST_TIMEOUT_MS,
        });
        let request = self.next_request;
        self.outputs.push((
            Node::Broker(self.leader),
            Message::Produce { request, values },
        ));
    }

    /// Handles a message; returns the records it learned are acknowledged.
    pub fn receive(&mut self, message: Message, now_ms: u64, rng: &mut Rng) -> Acknowledged {
        match message {
            Message::Metadata { version, partition } => {
                if version > self.metadata_version {
                    self.metadata_version = version;
                    self.leader = partition.leader;
                }
                Vec::new()
            }
            Message::ProduceResponse {
                request,
                error,
                offsets,
            } => {
                let Some(in_flight) = self.in_flight.take_if(|sent| sent.request == request) else {
                    return Vec::new();
                };
                self.next_send_ms = now_ms + rng.between(0, PAUSE_MS_MAX);
                if error != error_code::NONE {
                    self.refresh_metadata(rng);
                    return Vec::new();
                }
                assert_eq!(
                    offsets.len(),
                    in_flight.values.len(),
                    "an acknowledgement names one offset per record"
                );
                offsets.into_iter().zip(in_flight.values).collect()
            }
            _ => Vec::new(),
        }
    }
}
