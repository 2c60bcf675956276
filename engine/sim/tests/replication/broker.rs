//! One simulated broker holding a replica of the partition. Every decision is the shipped
//! code's: `cluster::leader` (produce acceptance, the acks=all verdict, answering fetches and
//! OffsetForLeaderEpoch, ISR proposals), `cluster::follower` (the fetch loop's steps and
//! appending fetched batches), `cluster::admission` (under the append lock), `ReplicaState`
//! and `LeaderEpochCache`, over the real `PartitionLog` on a `SimDisk`. What this file adds
//! is what the broker does with I/O: timers, messages instead of TCP, and the order of
//! events the real tasks could see.
//!
//! Where the real code awaits (a disk append, a request to the leader), the simulation lets
//! other events run in between, so the interleavings the real broker can see are explored:
//! - a produce checks leadership when it arrives and appends each batch after a simulated
//!   disk delay, stamping the epoch it read at arrival (as `produce_here` does);
//! - a follower's OffsetForLeaderEpoch answer is applied even when the role changed while
//!   it was in flight (as `truncate_divergent` does); a fetch answer is not (`follow`
//!   checks `current()` after the fetch).
//!
//! Not modelled: producer idempotence, the tail cache, batches of several records, and the
//! follower's own append latency (a fetched response is appended in one step; the
//! simulated disk answers at once).

use std::cell::RefCell;
use std::collections::BTreeMap;

use bytes::Bytes;
use shardlog::broker::api::codes::KafkaCode;
use shardlog::broker::shard::error_code;
use shardlog::cluster::admission::{self, Admission};
use shardlog::cluster::epochs::LeaderEpochCache;
use shardlog::cluster::follower::{
    AfterFetch, Divergence, EpochEndAnswer, FetchAnswer, Follower, FollowerRequest,
};
use shardlog::cluster::leader;
use shardlog::cluster::producers::ProducerStates;
use shardlog::cluster::replica::{ReplicaState, Transition};
use shardlog::cluster::state::{BrokerId, Command, PartitionState, Refusal};
use shardlog::storage::{SimDisk, Storage};

use super::log::{partition_dir, Policy, SimLog};
use super::network::{Message, Node, Session};
use super::world::BROKERS;

pub const TOPIC: &str = "t";
pub const MIN_INSYNC_REPLICAS: usize = 2;
pub const REPLICA_LAG_TIME_MAX_MS: u64 = 400;
/// How often leaders look for ISR changes (the real broker: a quarter of the lag limit).
const ISR_CHECK_MS: u64 = REPLICA_LAG_TIME_MAX_MS / 4;
pub const HEARTBEAT_MS: u64 = 50;
/// A follower's pause after a failed exchange (`RETRY_PAUSE` in replication.rs).
const RETRY_PAUSE_MS: u64 = 100;
/// A request to the leader unanswered for this long counts as a broken connection.
const LEADER_REQUEST_TIMEOUT_MS: u64 = 250;
/// A follower whose fetch came back empty asks again after this long (the real leader
/// holds the fetch open instead; the effect on progress is the same).
const FETCH_IDLE_MS: u64 = 10;
/// Bytes per fetch response at most (`replica_fetch_max_bytes`): about eight records.
const FETCH_BYTES_MAX: u64 = 600;
/// acks=all waits this long for the ISR (the produce request's timeout).
const PRODUCE_TIMEOUT_MS: u64 = 600;
/// An ISR change the controller did not answer within this long is given up.
const ISR_PROPOSAL_TIMEOUT_MS: u64 = 500;
/// Under durability `none`, the OS writes dirty pages back about this often.
const WRITE_BACK_MS: u64 = 700;

/// What a broker asks of the world after handling an event.
#[derive(Debug)]
pub enum Output {
    Send(Node, Message),
    /// Run `append_next` for this produce after a disk delay (an append in progress).
    AppendLater {
        produce: u64,
    },
    /// Something worth showing in a failure's trace.
    Note(String),
}

/// A follower's fetch loop for one leader and role generation (`follow` in replication.rs):
/// the shipped [`Follower`] machine, and the request it waits on.
#[derive(Debug)]
struct FollowLoop {
    machine: Follower,
    generation: u64,
    waiting: Option<Waiting>,
    next_request_ms: u64,
}

#[derive(Clone, Copy, Debug)]
struct Waiting {
    session: Session,
    deadline_ms: u64,
}

/// A produce between its leadership check and its last append.
#[derive(Debug)]
struct Appending {
    producer: Node,
    request: u64,
    leader_epoch: i32,
    values: Vec<u64>,
    offsets: Vec<i64>,
}

/// A produce whose records are appended, waiting for the watermark (`await_replication`).
#[derive(Debug)]
struct AwaitingReplication {
    producer: Node,
    request: u64,
    leader_epoch: i32,
    last_offset: i64,
    offsets: Vec<i64>,
    deadline_ms: u64,
}

pub struct SimBroker {
    pub id: BrokerId,
    pub up: bool,
    pub incarnation: u64,
    /// The controller has seen this incarnation's registration.
    pub registered: bool,
    pub log: SimLog,
    /// The machine's disk: the log's and the voter's.
    pub disk: SimDisk,
    pub epochs: RefCell<LeaderEpochCache>,
    producers: RefCell<ProducerStates>,
    pub replica: ReplicaState,
    role_generation: u64,
    metadata_version: u64,
    follower: Option<FollowLoop>,
    /// OffsetForLeaderEpoch requests of fetch loops that have since ended: their answers
    /// still cut the log, as the real task finishes `truncate_divergent` before it stops.
    orphaned_truncations: Vec<Session>,
    next_request: u64,
    appending: BTreeMap<u64, Appending>,
    awaiting: Vec<AwaitingReplication>,
    isr_proposal: Option<(u64, u64)>,
    next_heartbeat_ms: u64,
    next_isr_check_ms: u64,
    next_write_back_ms: u64,
    outputs: Vec<Output>,
}

fn open_epochs(disk: &SimDisk, log_end: i64) -> LeaderEpochCache {
    let mut epochs =
        LeaderEpochCache::open(Storage::Sim(disk.clone()), partition_dir()).expect("epoch cache");
    // As `open_partition`: recovery may have cut the log below epochs the checkpoint lists.
    epochs.truncate_from_end(log_end).expect("trim epochs");
    epochs
}

impl SimBroker {
    pub async fn new(id: BrokerId, policy: Policy, disk_seed: u64) -> SimBroker {
        let disk = SimDisk::with_alignment(disk_seed, 1);
        let log = SimLog::open(disk.clone(), policy).await;
        let epochs = RefCell::new(open_epochs(&disk, log.log_end_offset()));
        SimBroker {
            id,
            up: true,
            incarnation: 1,
            registered: false,
            epochs,
            producers: RefCell::new(ProducerStates::default()),
            replica: ReplicaState::new(id, log.log_start_offset()),
            log,
            disk,
            role_generation: 0,
            metadata_version: 0,
            follower: None,
            orphaned_truncations: Vec::new(),
            next_request: 0,
            appending: BTreeMap::new(),
            awaiting: Vec::new(),
            isr_proposal: None,
            next_heartbeat_ms: 0,
            next_isr_check_ms: 0,
            next_write_back_ms: WRITE_BACK_MS,
            outputs: Vec::new(),
        }
    }

    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    fn send(&mut self, to: Node, message: Message) {
        self.outputs.push(Output::Send(to, message));
    }

    fn note(&mut self, text: String) {
        self.outputs.push(Output::Note(text));
    }

    /// Power loss: the process dies, the disk keeps what was durable.
    pub async fn crash(&mut self) {
        let lost = self.log.crash().await;
        self.up = false;
        self.note(format!(
            "b{} CRASH: lost {lost} unsynced records, log end now {}",
            self.id,
            self.log.log_end_offset()
        ));
    }

    /// A new process on the same disk: recover, then register before doing anything else.
    pub fn restart(&mut self, now_ms: u64) {
        self.up = true;
        self.incarnation += 1;
        self.registered = false;
        self.epochs = RefCell::new(open_epochs(&self.disk, self.log.log_end_offset()));
        self.producers = RefCell::new(ProducerStates::default());
        // The watermark is not checkpointed: it starts at the log start (`open_partition`).
        self.replica = ReplicaState::new(self.id, self.log.log_start_offset());
        self.role_generation += 1;
        self.metadata_version = 0;
        self.follower = None;
        self.orphaned_truncations.clear();
        self.appending.clear();
        self.awaiting.clear();
        self.isr_proposal = None;
        self.next_heartbeat_ms = now_ms;
        self.next_isr_check_ms = now_ms;
        self.note(format!(
            "b{} RESTART (incarnation {}): log end {}, epochs {:?}",
            self.id,
            self.incarnation,
            self.log.log_end_offset(),
            self.epochs.borrow().entries()
        ));
    }

    /// Timers: registration and heartbeats, ISR checks, write-back, the fetch loop, and the
    /// produce timeouts.
    pub async fn tick(&mut self, now_ms: u64) {
        if !self.up {
            return;
        }
        if now_ms >= self.next_heartbeat_ms {
            self.next_heartbeat_ms = now_ms + HEARTBEAT_MS;
            if self.registered {
                // To every voter, as the broker does: whichever leads fences and unfences.
                for voter in BROKERS {
                    self.send(Node::Voter(voter), Message::Heartbeat);
                }
            } else {
                let incarnation = self.incarnation;
                self.send(Node::Voter(self.id), Message::Register { incarnation });
            }
        }
        if now_ms >= self.next_write_back_ms {
            self.next_write_back_ms = now_ms + WRITE_BACK_MS;
            self.log.write_back().await.expect("write back");
        }
        if !self.registered {
            return;
        }
        if let Some((_, deadline_ms)) = self.isr_proposal {
            if now_ms >= deadline_ms {
                // Unanswered: the outcome is unknown; the next check sends it again.
                self.isr_proposal = None;
            }
        }
        if now_ms >= self.next_isr_check_ms {
            self.next_isr_check_ms = now_ms + ISR_CHECK_MS;
            self.propose_isr_changes(now_ms);
        }
        self.step_follower(now_ms);
        self.settle_produces(now_ms);
    }

    pub async fn receive(&mut self, from: Node, message: Message, now_ms: u64) {
        if !self.up {
            return;
        }
        match message {
            Message::RegisterResponse {
                incarnation,
                version,
                partition,
            } => {
                if incarnation == self.incarnation && !self.registered {
                    self.registered = true;
                    self.adopt_if_newer(version, &partition, now_ms);
                }
            }
            Message::Metadata { version, partition } if self.registered => {
                self.adopt_if_newer(version, &partition, now_ms);
            }
            Message::Metadata { .. } => {}
            Message::AlterIsrResponse { proposal, refusal } => {
                if self.isr_proposal.is_some_and(|(id, _)| id == proposal) {
                    self.isr_proposal = None;
                    if let Some(refusal) = refusal {
                        self.isr_proposal_refused(proposal, &refusal);
                    }
                }
            }
            Message::Produce { request, values } => self.produce(from, request, values),
            Message::Fetch {
                session,
                offset,
                current_leader_epoch,
            } => {
                self.answer_fetch(from, session, offset, current_leader_epoch, now_ms)
                    .await
            }
            Message::EpochEnd {
                session,
                current_leader_epoch,
                epoch,
            } => self.answer_epoch_end(from, session, current_leader_epoch, epoch),
            Message::FetchResponse {
                session,
                error,
                high_watermark,
                batches,
            } => {
                self.fetched(session, error, high_watermark, &batches, now_ms)
                    .await
            }
            Message::EpochEndResponse {
                session,
                error,
                leader_epoch,
                end_offset,
            } => {
                self.epoch_end_answered(session, error, (leader_epoch, end_offset), now_ms)
                    .await
            }
            Message::ProduceResponse { .. }
            | Message::Register { .. }
            | Message::Heartbeat
            | Message::AlterIsr { .. }
            | Message::Raft(_) => {}
        }
        self.settle_produces(now_ms);
    }

    // ---- metadata (`follow_metadata`, `adopt`) ----

    fn adopt_if_newer(&mut self, version: u64, partition: &PartitionState, now_ms: u64) {
        if version <= self.metadata_version {
            return;
        }
        self.metadata_version = version;
        self.adopt(partition, now_ms);
        self.propose_isr_changes(now_ms);
    }

    fn adopt(&mut self, state: &PartitionState, now_ms: u64) {
        let log_end = self.log.log_end_offset();
        let transition = self.replica.update(state, log_end, now_ms);
        if transition != Transition::Unchanged {
            self.role_generation += 1;
            self.note(format!(
                "b{} {transition:?} at epoch {} (log end {log_end}, hw {})",
                self.id,
                state.leader_epoch,
                self.replica.high_watermark()
            ));
            self.end_follow_loop();
        }
        match transition {
            Transition::BecameLeader => {
                self.epochs
                    .borrow_mut()
                    .assign(state.leader_epoch, log_end)
                    .expect("record the leader epoch");
            }
            Transition::BecameFollower { leader } => {
                self.follower = Some(FollowLoop {
                    machine: Follower::new(leader),
                    generation: self.role_generation,
                    waiting: None,
                    next_request_ms: now_ms,
                });
            }
            Transition::Unchanged | Transition::WentOffline => {}
        }
    }

    /// The role generation moved on: the fetch loop stops, but an OffsetForLeaderEpoch
    /// already sent is still acted on when it is answered.
    fn end_follow_loop(&mut self) {
        if let Some(follow) = self.follower.take() {
            if let Some(waiting) = follow.waiting {
                if follow.machine.needs_truncation() {
                    self.orphaned_truncations.push(waiting.session);
                }
            }
        }
    }

    /// Whether this broker has an ISR proposal in flight (sent, not answered, not timed out).
    pub fn proposing_isr(&self) -> bool {
        self.isr_proposal.is_some()
    }

    /// `propose_isr_changes`: one proposal in flight at a time; a pending one whose answer
    /// was lost goes again unchanged.
    fn propose_isr_changes(&mut self, now_ms: u64) {
        if self.isr_proposal.is_some() {
            return;
        }
        let proposal = leader::isr_proposal(
            &mut self.replica,
            &self.epochs.borrow(),
            now_ms,
            REPLICA_LAG_TIME_MAX_MS,
        );
        if let Some((isr, partition_epoch)) = proposal {
            self.send_isr_proposal(isr, partition_epoch, now_ms);
        }
    }

    fn isr_proposal_refused(&mut self, proposal: u64, refusal: &Refusal) {
        self.note(format!(
            "b{} ISR proposal {proposal} refused: {refusal}",
            self.id
        ));
        leader::isr_proposal_refused(&mut self.replica, refusal);
    }

    fn send_isr_proposal(&mut self, isr: Vec<BrokerId>, partition_epoch: i32, now_ms: u64) {
        self.next_request += 1;
        let proposal = self.next_request;
        self.isr_proposal = Some((proposal, now_ms + ISR_PROPOSAL_TIMEOUT_MS));
        self.note(format!(
            "b{} proposes ISR {isr:?} at partition epoch {partition_epoch}",
            self.id
        ));
        let command = Command::AlterIsr {
            topic: TOPIC.to_string(),
            partition: 0,
            leader: self.id,
            partition_epoch,
            isr,
        };
        self.send(
            Node::Voter(self.id),
            Message::AlterIsr { proposal, command },
        );
    }

    // ---- the leader's side (`produce_here`, `await_replication`, `fetch_here`) ----

    fn produce(&mut self, producer: Node, request: u64, values: Vec<u64>) {
        let accepted = if self.registered {
            leader::accept_produce(&self.replica, true, MIN_INSYNC_REPLICAS)
        } else {
            Err(leader::ProduceRefusal::NotLeader)
        };
        let leader_epoch = match accepted {
            Ok(leader_epoch) => leader_epoch,
            Err(refusal) => {
                let response = Message::ProduceResponse {
                    request,
                    error: refusal.code(),
                    offsets: Vec::new(),
                };
                self.send(producer, response);
                return;
            }
        };
        self.next_request += 1;
        let produce = self.next_request;
        self.appending.insert(
            produce,
            Appending {
                producer,
                request,
                leader_epoch,
                values,
                offsets: Vec::new(),
            },
        );
        self.outputs.push(Output::AppendLater { produce });
    }

    /// One batch of a produce reaches the log, with the epoch read when it arrived, if the
    /// broker's admission rule (asked under the append lock, as `produce_here` does) lets it.
    pub async fn append_next(&mut self, produce: u64, now_ms: u64) {
        if !self.up {
            return;
        }
        let Some(appending) = self.appending.get_mut(&produce) else {
            return;
        };
        let value = appending.values[appending.offsets.len()];
        let leader_epoch = appending.leader_epoch;
        let (replica, producers) = (&self.replica, &self.producers);
        let decided = std::cell::Cell::new(Admission::Append);
        let admit = |stored: &shardlog::batch::BatchHeader| {
            let admission =
                admission::admit(replica, leader_epoch, &mut producers.borrow_mut(), stored);
            decided.set(admission);
            admission == Admission::Append
        };
        let appended = self
            .log
            .append_as_leader(leader_epoch, value, admit)
            .await
            .expect("the simulated disk accepts appends");
        let Some(offset) = appended else {
            let error = match decided.get() {
                Admission::Refused(refusal) => refusal.code(),
                other => panic!("admission declined without a refusal: {other:?}"),
            };
            let appending = self.appending.remove(&produce).expect("present");
            self.send(
                appending.producer,
                Message::ProduceResponse {
                    request: appending.request,
                    error,
                    offsets: Vec::new(),
                },
            );
            return;
        };
        let appending = self.appending.get_mut(&produce).expect("present");
        appending.offsets.push(offset);
        let done = appending.offsets.len() == appending.values.len();
        self.replica.appended(self.log.log_end_offset());
        if !done {
            self.outputs.push(Output::AppendLater { produce });
            return;
        }
        let appending = self.appending.remove(&produce).expect("present");
        self.awaiting.push(AwaitingReplication {
            producer: appending.producer,
            request: appending.request,
            leader_epoch: appending.leader_epoch,
            last_offset: *appending.offsets.last().expect("one record at least"),
            offsets: appending.offsets,
            deadline_ms: now_ms + PRODUCE_TIMEOUT_MS,
        });
        self.settle_produces(now_ms);
    }

    /// `await_replication`'s checks, for every produce waiting on the watermark.
    fn settle_produces(&mut self, now_ms: u64) {
        let mut index = 0;
        while index < self.awaiting.len() {
            let waiting = &self.awaiting[index];
            let verdict = match leader::replication_verdict(
                &self.replica,
                waiting.leader_epoch,
                waiting.last_offset,
                MIN_INSYNC_REPLICAS,
            ) {
                Some(Ok(())) => Some(error_code::NONE),
                Some(Err(refusal)) => Some(refusal.code()),
                None if now_ms >= waiting.deadline_ms => Some(error_code::REQUEST_TIMED_OUT),
                None => None,
            };
            match verdict {
                None => index += 1,
                Some(error) => {
                    let done = self.awaiting.swap_remove(index);
                    let offsets = if error == error_code::NONE {
                        done.offsets
                    } else {
                        Vec::new()
                    };
                    let response = Message::ProduceResponse {
                        request: done.request,
                        error,
                        offsets,
                    };
                    self.send(done.producer, response);
                }
            }
        }
    }

    /// `fetch_here` for a follower.
    async fn answer_fetch(
        &mut self,
        from: Node,
        session: Session,
        offset: i64,
        current_leader_epoch: i32,
        now_ms: u64,
    ) {
        let Node::Broker(follower) = from else {
            return;
        };
        let served = leader::serve_fetch(
            &mut self.replica,
            Some(follower),
            current_leader_epoch,
            offset,
            (self.log.log_start_offset(), self.log.log_end_offset()),
            now_ms,
        );
        let response = match served {
            Err(refusal) => Message::FetchResponse {
                session,
                error: refusal.code(),
                high_watermark: -1,
                batches: Bytes::new(),
            },
            Ok(plan) if plan.out_of_range => Message::FetchResponse {
                session,
                error: error_code::OFFSET_OUT_OF_RANGE,
                high_watermark: plan.high_watermark,
                batches: Bytes::new(),
            },
            Ok(plan) => {
                let batches = if offset < plan.upper_offset {
                    self.log
                        .read(offset, plan.upper_offset, FETCH_BYTES_MAX)
                        .await
                        .expect("the simulated disk reads")
                } else {
                    Bytes::new()
                };
                Message::FetchResponse {
                    session,
                    error: error_code::NONE,
                    high_watermark: plan.high_watermark,
                    batches,
                }
            }
        };
        self.send(from, response);
    }

    /// `epoch_end_here`.
    fn answer_epoch_end(
        &mut self,
        from: Node,
        session: Session,
        current_leader_epoch: i32,
        epoch: i32,
    ) {
        let answer = leader::epoch_end(
            &self.replica,
            &self.epochs.borrow(),
            current_leader_epoch,
            epoch,
            self.log.log_end_offset(),
        );
        let response = match answer {
            Err(refusal) => Message::EpochEndResponse {
                session,
                error: refusal.code(),
                leader_epoch: -1,
                end_offset: -1,
            },
            Ok((leader_epoch, end_offset)) => Message::EpochEndResponse {
                session,
                error: error_code::NONE,
                leader_epoch,
                end_offset,
            },
        };
        self.send(from, response);
    }

    // ---- the follower's side (`follow`, `truncate_divergent`, `append_fetched`) ----

    fn new_session(&mut self, generation: u64) -> Session {
        self.next_request += 1;
        Session {
            incarnation: self.incarnation,
            generation,
            request: self.next_request,
        }
    }

    fn step_follower(&mut self, now_ms: u64) {
        let Some(follow) = self.follower.as_mut() else {
            return;
        };
        if let Some(waiting) = follow.waiting {
            if now_ms < waiting.deadline_ms {
                return;
            }
            // No answer: the connection is broken; a new one starts with a truncation check.
            follow.waiting = None;
            follow.machine.resync();
            follow.next_request_ms = now_ms + RETRY_PAUSE_MS;
            return;
        }
        if now_ms < follow.next_request_ms {
            return;
        }
        let generation = follow.generation;
        let latest_epoch = self.epochs.borrow().latest_epoch();
        let log_end = self.log.log_end_offset();
        let follow = self.follower.as_mut().expect("following");
        let request = follow.machine.next_request(latest_epoch, log_end);
        let leader = follow.machine.leader();
        let current_leader_epoch = self.replica.leader_epoch();
        let session = self.new_session(generation);
        let message = match request {
            FollowerRequest::EpochEnd { epoch } => Message::EpochEnd {
                session,
                current_leader_epoch,
                epoch,
            },
            FollowerRequest::Fetch { offset } => Message::Fetch {
                session,
                offset,
                current_leader_epoch,
            },
        };
        let follow = self.follower.as_mut().expect("following");
        follow.waiting = Some(Waiting {
            session,
            deadline_ms: now_ms + LEADER_REQUEST_TIMEOUT_MS,
        });
        self.send(Node::Broker(leader), message);
    }

    /// The current fetch loop, if `session` is the request it waits on.
    fn loop_waiting_on(&mut self, session: Session) -> Option<&mut FollowLoop> {
        self.follower.as_mut().filter(|follow| {
            follow
                .waiting
                .is_some_and(|waiting| waiting.session == session)
        })
    }

    async fn fetched(
        &mut self,
        session: Session,
        error: i16,
        high_watermark: i64,
        batches: &Bytes,
        now_ms: u64,
    ) {
        // `if !current() { break; }` after the fetch: answers to ended loops are dropped.
        let Some(follow) = self.loop_waiting_on(session) else {
            return;
        };
        follow.waiting = None;
        let answer = match error {
            error_code::NONE => FetchAnswer::Records,
            error_code::OFFSET_OUT_OF_RANGE => FetchAnswer::OffsetOutOfRange,
            _ => FetchAnswer::Refused,
        };
        match follow.machine.fetch_answered(answer) {
            AfterFetch::Append => {
                follow.next_request_ms = if batches.is_empty() {
                    now_ms + FETCH_IDLE_MS
                } else {
                    now_ms
                };
                let appended = self
                    .log
                    .append_fetched(&self.epochs, &self.producers, batches)
                    .await;
                if let Err(error) = appended {
                    self.note(format!(
                        "b{} cannot append fetched batches: {error}",
                        self.id
                    ));
                    if let Some(follow) = self.follower.as_mut() {
                        follow.machine.resync();
                        follow.next_request_ms = now_ms + RETRY_PAUSE_MS;
                    }
                    return;
                }
                self.replica
                    .follow_high_watermark(high_watermark, self.log.log_end_offset());
            }
            // Leader changes reach us through the metadata; until then, wait.
            AfterFetch::Pause => follow.next_request_ms = now_ms + RETRY_PAUSE_MS,
        }
    }

    async fn epoch_end_answered(
        &mut self,
        session: Session,
        error: i16,
        answer: (i32, i64),
        now_ms: u64,
    ) {
        let orphan = self
            .orphaned_truncations
            .iter()
            .position(|waited| *waited == session);
        if let Some(index) = orphan {
            // As `truncate_divergent` does: the role changed while the question was out, so
            // the answer is about a log this broker no longer follows.
            self.orphaned_truncations.swap_remove(index);
            self.note(format!(
                "b{} ignores an OffsetForLeaderEpoch answer {answer:?} of an ended fetch loop",
                self.id
            ));
            return;
        }
        let high_watermark = self.replica.high_watermark();
        let log_start = self.log.log_start_offset();
        let log_end = self.log.log_end_offset();
        let answer = if error == error_code::NONE {
            EpochEndAnswer::Ended {
                leader_epoch: answer.0,
                end_offset: answer.1,
            }
        } else {
            EpochEndAnswer::Refused
        };
        let epochs = &self.epochs;
        let Some(follow) = self.follower.as_mut().filter(|follow| {
            follow
                .waiting
                .is_some_and(|waiting| waiting.session == session)
        }) else {
            return;
        };
        follow.waiting = None;
        let divergence =
            follow
                .machine
                .divergence(answer, &epochs.borrow(), high_watermark, log_start, log_end);
        let target = match divergence {
            Divergence::None => {
                follow.next_request_ms = now_ms;
                return;
            }
            Divergence::AskAgainLater => {
                follow.next_request_ms = now_ms + RETRY_PAUSE_MS;
                return;
            }
            Divergence::CutTo(target) => target,
        };
        follow.next_request_ms = now_ms;
        follow.machine.cut();
        // `truncate_partition`.
        let log_end = self
            .log
            .truncate_to(target)
            .await
            .expect("the simulated disk truncates");
        self.epochs
            .borrow_mut()
            .truncate_from_end(log_end)
            .expect("trim epochs");
        self.replica.truncated(log_end);
        self.producers.borrow_mut().clear();
        self.note(format!(
            "b{} cuts its log to {log_end} (leader answered {answer:?}, hw was {high_watermark})",
            self.id
        ));
    }
}
