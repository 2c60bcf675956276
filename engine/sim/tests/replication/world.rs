//! The simulated cluster and its event loop: one seeded RNG, one clock in milliseconds, one
//! queue of timed events, handled one at a time (a step), with every invariant checked after
//! each step. Faults are events too: crashes of a broker's machine, its voter with it
//! (restarts follow), and network partitions between machines (which heal).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;

use shardlog::cluster::state::BrokerId;

use super::broker::{Output, SimBroker};
use super::invariants::Checker;
use super::log::Policy;
use super::network::{Envelope, Message, Network, Node};
use super::producer::Producer;
use super::quorum::Quorum;
use shardlog_sim::Rng;

/// The brokers, each with a voter of the metadata quorum on its machine.
pub const BROKERS: [BrokerId; 3] = [1, 2, 3];
const PRODUCERS: u8 = 2;
const TICK_MS: u64 = 10;
/// Events kept for a failure's trace.
const TRACE_EVENTS_MAX: usize = 120;
/// Notable events (faults, role changes, cuts, quorum decisions) kept for the trace.
const TRACE_NOTES_MAX: usize = 80;

#[derive(Debug)]
enum Event {
    Deliver(Envelope),
    TickBroker(BrokerId),
    TickVoter(BrokerId),
    TickProducer(u8),
    Append {
        broker: BrokerId,
        incarnation: u64,
        produce: u64,
    },
    Fault,
    Restart(BrokerId),
    Heal(Node, Node),
}

struct Scheduled {
    at_ms: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.sequence) == (other.at_ms, other.sequence)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.sequence).cmp(&(other.at_ms, other.sequence))
    }
}

enum TraceLine {
    Delivered(Envelope),
    Lost(Envelope, &'static str),
    Note(String),
}

struct TraceEntry {
    step: u64,
    at_ms: u64,
    line: TraceLine,
}

/// What a run did, to compare two runs of one seed.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub steps: u64,
    pub time_ms: u64,
    pub committed: usize,
    pub acknowledged: usize,
    pub crashes: u64,
    pub partitions: u64,
    /// Raft elections of the metadata quorum (the highest term reached).
    pub quorum_terms: u64,
}

pub struct World {
    seed: u64,
    policy: Policy,
    rng: Rng,
    now_ms: u64,
    step: u64,
    sequence: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    network: Network,
    brokers: Vec<SimBroker>,
    quorum: Quorum,
    producers: Vec<Producer>,
    checker: Checker,
    events: VecDeque<TraceEntry>,
    notes: VecDeque<TraceEntry>,
    crashes: u64,
    partitions: u64,
}

impl World {
    /// Even seeds run durability `always`, odd ones `none`.
    pub async fn new(seed: u64) -> World {
        let policy = if seed.is_multiple_of(2) {
            Policy::Always
        } else {
            Policy::None
        };
        let mut rng = Rng::new(seed);
        let delay_ms_max = rng.between(5, 40);
        let drop_per_mille = rng.between(0, 50);
        let mut brokers = Vec::new();
        for id in BROKERS {
            brokers.push(SimBroker::new(id, policy, rng.next_u64()).await);
        }
        let disks = brokers.iter().map(|broker| broker.disk.clone()).collect();
        let mut world = World {
            seed,
            policy,
            now_ms: 0,
            step: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            network: Network::new(1, delay_ms_max, drop_per_mille),
            brokers,
            quorum: Quorum::new(&BROKERS, disks).await,
            producers: (0..PRODUCERS).map(Producer::new).collect(),
            checker: Checker::default(),
            events: VecDeque::new(),
            notes: VecDeque::new(),
            crashes: 0,
            partitions: 0,
            rng,
        };
        for id in BROKERS {
            let phase = world.rng.between(0, TICK_MS - 1);
            world.schedule(phase, Event::TickBroker(id));
        }
        for id in BROKERS {
            let phase = world.rng.between(0, TICK_MS - 1);
            world.schedule(phase, Event::TickVoter(id));
        }
        for id in 0..PRODUCERS {
            let phase = world.rng.between(0, TICK_MS - 1);
            world.schedule(phase, Event::TickProducer(id));
        }
        let first_fault_ms = world.rng.between(200, 600);
        world.schedule(first_fault_ms, Event::Fault);
        world
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse(Scheduled {
            at_ms: self.now_ms + after_ms,
            sequence: self.sequence,
            event,
        }));
    }

    fn broker(&mut self, id: BrokerId) -> &mut SimBroker {
        &mut self.brokers[(id - 1) as usize]
    }

    fn trace(&mut self, line: TraceLine) {
        let notable = matches!(line, TraceLine::Note(_));
        let entry = TraceEntry {
            step: self.step,
            at_ms: self.now_ms,
            line,
        };
        let (buffer, limit) = if notable {
            (&mut self.notes, TRACE_NOTES_MAX)
        } else {
            (&mut self.events, TRACE_EVENTS_MAX)
        };
        if buffer.len() == limit {
            buffer.pop_front();
        }
        buffer.push_back(entry);
    }

    fn note(&mut self, text: String) {
        self.trace(TraceLine::Note(text));
    }

    fn send(&mut self, from: Node, to: Node, message: Message) {
        let envelope = Envelope { from, to, message };
        match self.network.transit_ms(&mut self.rng, from, to) {
            Some(delay_ms) => self.schedule(delay_ms, Event::Deliver(envelope)),
            None => self.trace(TraceLine::Lost(envelope, "at send")),
        }
    }

    /// Runs `steps` events, checking the invariants after each. `Err` is a failure report.
    pub async fn run(&mut self, steps: u64) -> Result<Summary, String> {
        while self.step < steps {
            let Some(Reverse(next)) = self.queue.pop() else {
                break;
            };
            self.step += 1;
            self.now_ms = next.at_ms;
            self.handle(next.event)
                .await
                .and_then(|()| self.checker.check(&mut self.brokers, &self.quorum))
                .map_err(|violation| self.report(&violation))?;
        }
        Ok(Summary {
            steps: self.step,
            time_ms: self.now_ms,
            committed: self.checker.committed_len(),
            acknowledged: self.checker.acked_count(),
            crashes: self.crashes,
            partitions: self.partitions,
            quorum_terms: self.quorum.highest_term(),
        })
    }

    async fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver(envelope) => return self.deliver(envelope).await,
            Event::TickBroker(id) => {
                let now_ms = self.now_ms;
                self.broker(id).tick(now_ms).await;
                self.collect_broker_outputs(id);
                self.schedule(TICK_MS, Event::TickBroker(id));
            }
            Event::TickVoter(id) => {
                if self.broker(id).up {
                    self.quorum.tick(id, self.now_ms).await;
                    self.collect_quorum_outputs();
                }
                self.schedule(TICK_MS, Event::TickVoter(id));
            }
            Event::TickProducer(id) => {
                let producer = &mut self.producers[id as usize];
                producer.tick(self.now_ms, &mut self.rng);
                for (to, message) in producer.take_outputs() {
                    self.send(Node::Producer(id), to, message);
                }
                self.schedule(TICK_MS, Event::TickProducer(id));
            }
            Event::Append {
                broker,
                incarnation,
                produce,
            } => {
                let now_ms = self.now_ms;
                let target = self.broker(broker);
                if target.incarnation == incarnation {
                    target.append_next(produce, now_ms).await;
                    self.collect_broker_outputs(broker);
                }
            }
            Event::Fault => {
                self.inject_fault().await;
                let next_ms = self.rng.between(50, 400);
                self.schedule(next_ms, Event::Fault);
            }
            Event::Restart(id) => {
                let now_ms = self.now_ms;
                self.broker(id).restart(now_ms);
                self.collect_broker_outputs(id);
                self.quorum.restart(id, now_ms).await;
                self.collect_quorum_outputs();
            }
            Event::Heal(one, other) => {
                self.network.heal(one, other);
                self.note(format!("heal {one}-{other}"));
            }
        }
        Ok(())
    }

    async fn deliver(&mut self, envelope: Envelope) -> Result<(), String> {
        if !self.network.connected(envelope.from, envelope.to) {
            self.trace(TraceLine::Lost(envelope, "in a partition"));
            return Ok(());
        }
        let Envelope { from, to, message } = envelope.clone();
        self.trace(TraceLine::Delivered(envelope));
        let now_ms = self.now_ms;
        match to {
            Node::Broker(id) => {
                self.broker(id).receive(from, message, now_ms).await;
                self.collect_broker_outputs(id);
            }
            Node::Voter(id) => {
                self.quorum.receive(id, from, message, now_ms).await;
                self.collect_quorum_outputs();
            }
            Node::Producer(id) => {
                let producer = &mut self.producers[id as usize];
                let acknowledged = producer.receive(message, now_ms, &mut self.rng);
                for (to, message) in producer.take_outputs() {
                    self.send(Node::Producer(id), to, message);
                }
                self.checker.acknowledged(&acknowledged)?;
            }
        }
        Ok(())
    }

    fn collect_broker_outputs(&mut self, id: BrokerId) {
        let incarnation = self.broker(id).incarnation;
        for output in self.broker(id).take_outputs() {
            match output {
                Output::Send(to, message) => self.send(Node::Broker(id), to, message),
                Output::AppendLater { produce } => {
                    // Usually quick; sometimes the append lock or the disk is slow.
                    let delay_ms = if self.rng.chance(50) {
                        self.rng.between(5, 60)
                    } else {
                        self.rng.between(0, 3)
                    };
                    let event = Event::Append {
                        broker: id,
                        incarnation,
                        produce,
                    };
                    self.schedule(delay_ms, event);
                }
                Output::Note(text) => self.note(text),
            }
        }
    }

    fn collect_quorum_outputs(&mut self) {
        let (messages, notes) = self.quorum.take_outputs();
        for text in notes {
            self.note(text);
        }
        for (from, to, message) in messages {
            self.send(from, to, message);
        }
    }

    // ---- faults ----

    /// Under `none` a crash loses the unsynced tail, so only a crash that the others can
    /// repair is injected: no partition is in progress, no broker has an ISR proposal in
    /// flight and the quorum has no change in flight (one applied after the crash could
    /// still name the crashed broker the only ISR member: seeds 1511 and 7271), and every other broker is up, registered, in the ISR and holds
    /// every committed record. Under `always`
    /// any broker may crash at any time.
    fn may_crash(&self, victim: BrokerId) -> bool {
        if self.policy == Policy::Always {
            return true;
        }
        let isr = self.quorum.partition().isr;
        self.network.cut_links().next().is_none()
            && self.quorum.settled()
            && self.brokers.iter().all(|broker| !broker.proposing_isr())
            && self.brokers.iter().all(|broker| {
                broker.up
                    && (broker.id == victim
                        || (broker.registered
                            && isr.contains(&broker.id)
                            && self.checker.holds_everything_committed(broker.id)))
            })
    }

    /// Under `none`, no partition while a crashed broker is not back and registered: the
    /// crash is the one fault at a time (a dead replica still listed in the ISR, with the
    /// others fenced by a partition, would be the last ISR member and lead with what it
    /// lost; Kafka without fsync loses acknowledged records there too).
    fn may_partition(&self) -> bool {
        self.policy == Policy::Always
            || self
                .brokers
                .iter()
                .all(|broker| broker.up && broker.registered)
    }

    async fn inject_fault(&mut self) {
        let victim = self.rng.pick(&BROKERS);
        let kind = self.rng.between(0, 99);
        let duration_ms = self.rng.between(20, 1_500);
        match kind {
            0..=24 => {
                if !self.broker(victim).up || !self.may_crash(victim) {
                    return;
                }
                // The machine goes down: the voter stops, the broker's crash takes the disk's
                // unsynced writes (the voter's log syncs each write).
                self.quorum.stop(victim);
                self.broker(victim).crash().await;
                self.crashes += 1;
                self.collect_broker_outputs(victim);
                self.schedule(duration_ms, Event::Restart(victim));
            }
            25..=74 if !self.may_partition() => {}
            25..=44 => {
                let others: Vec<Node> = BROKERS
                    .iter()
                    .filter(|&&id| id != victim)
                    .map(|&id| Node::Broker(id))
                    .collect();
                self.cut(Node::Broker(victim), &others, duration_ms, "isolated");
            }
            45..=59 => {
                // From the machine of the voter that leads the quorum, if it is another's.
                if let Some(leader) = self.quorum.leader().filter(|&id| id != victim) {
                    self.cut(
                        Node::Broker(victim),
                        &[Node::Broker(leader)],
                        duration_ms,
                        "cut from the quorum leader's machine",
                    );
                }
            }
            60..=74 => {
                let other = BROKERS[(victim as usize) % BROKERS.len()];
                self.cut(
                    Node::Broker(victim),
                    &[Node::Broker(other)],
                    duration_ms,
                    "cut from one peer",
                );
            }
            _ => {}
        }
    }

    fn cut(&mut self, node: Node, others: &[Node], duration_ms: u64, what: &str) {
        self.partitions += 1;
        for &other in others {
            self.network.cut(node, other);
            self.schedule(duration_ms, Event::Heal(node, other));
        }
        self.note(format!(
            "PARTITION {node} {what} ({others:?}) for {duration_ms} ms"
        ));
    }

    // ---- failure report ----

    fn report(&self, violation: &str) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "replication simulation failed: seed {} (durability {:?}), step {}, {} ms\n  {violation}",
            self.seed, self.policy, self.step, self.now_ms
        );
        let _ = writeln!(
            text,
            "replay: SHARDLOG_SIM_SEED={} cargo test -p shardlog-sim --test replication",
            self.seed
        );
        let partition = self.quorum.partition();
        let _ = writeln!(
            text,
            "\nnewest applied state (raft index {}): leader {} epoch {} isr {:?} partition epoch {}; \
             fenced {:?}\nvoters: {}",
            self.quorum.version(),
            partition.leader,
            partition.leader_epoch,
            partition.isr,
            partition.partition_epoch,
            BROKERS
                .iter()
                .filter(|&&id| self.quorum.is_fenced(id))
                .collect::<Vec<_>>(),
            self.quorum.describe().join("; ")
        );
        let _ = writeln!(
            text,
            "committed records: {}, acknowledged: {}; cut links: {:?}",
            self.checker.committed_len(),
            self.checker.acked_count(),
            self.network.cut_links().collect::<Vec<_>>()
        );
        for broker in &self.brokers {
            let records = broker.log.records();
            let tail: Vec<String> = records[records.len().saturating_sub(12)..]
                .iter()
                .map(|record| format!("{}:e{}:v{}", record.offset, record.epoch, record.value))
                .collect();
            let _ = writeln!(
                text,
                "b{}: up={} incarnation={} registered={} role={:?} epoch={} hw={} log end={} \
                 epochs={:?}\n    last records: {}",
                broker.id,
                broker.up,
                broker.incarnation,
                broker.registered,
                broker.replica.role(),
                broker.replica.leader_epoch(),
                broker.replica.high_watermark(),
                broker.log.log_end_offset(),
                broker
                    .epochs
                    .borrow()
                    .entries()
                    .iter()
                    .map(|entry| (entry.epoch, entry.start_offset))
                    .collect::<Vec<_>>(),
                tail.join(" ")
            );
        }
        let _ = writeln!(text, "\nnotable events (last {TRACE_NOTES_MAX}):");
        for entry in &self.notes {
            write_entry(&mut text, entry);
        }
        let _ = writeln!(text, "\nmessages (last {TRACE_EVENTS_MAX}):");
        for entry in &self.events {
            write_entry(&mut text, entry);
        }
        text
    }
}

fn write_entry(text: &mut String, entry: &TraceEntry) {
    let _ = match &entry.line {
        TraceLine::Delivered(envelope) => writeln!(
            text,
            "  [{:>6} @{:>6}ms] {envelope}",
            entry.step, entry.at_ms
        ),
        TraceLine::Lost(envelope, how) => writeln!(
            text,
            "  [{:>6} @{:>6}ms] LOST {how}: {envelope}",
            entry.step, entry.at_ms
        ),
        TraceLine::Note(note) => {
            writeln!(text, "  [{:>6} @{:>6}ms] {note}", entry.step, entry.at_ms)
        }
    };
}
