//! One simulated broker holding a replica of the partition: the steps of
//! `broker/replication.rs` and the produce/fetch paths of `broker/shard.rs`, in their order,
//! around the real protocol rules (`ReplicaState`, `LeaderEpochCache` on a `SimDisk`).
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
//! follower's own append latency (a fetched response is appended in one step).

use std::collections::BTreeMap;
use std::path::Path;

use shardlog::broker::api::codes::KafkaCode;
use shardlog::broker::shard::error_code;
use shardlog::cluster::epochs::LeaderEpochCache;
use shardlog::cluster::replica::{ReplicaState, Role, Transition};
use shardlog::cluster::state::{BrokerId, Command, PartitionState};
use shardlog::storage::{SimDisk, Storage};

use super::log::{Policy, Record, SimLog};
use super::network::{Message, Node, Session};

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
/// Records per fetch response at most (`replica_fetch_max_bytes`).
const FETCH_RECORDS_MAX: usize = 8;
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

/// A follower's fetch loop for one leader and role generation (`follow` in replication.rs).
#[derive(Debug)]
struct FollowLoop {
    leader: BrokerId,
    generation: u64,
    needs_truncation: bool,
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
    disk: SimDisk,
    pub epochs: LeaderEpochCache,
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

fn partition_dir() -> &'static Path {
    Path::new("/sim/t-0")
}

fn open_epochs(disk: &SimDisk, log_end: i64) -> LeaderEpochCache {
    let mut epochs =
        LeaderEpochCache::open(Storage::Sim(disk.clone()), partition_dir()).expect("epoch cache");
    // As `open_partition`: recovery may have cut the log below epochs the checkpoint lists.
    epochs.truncate_from_end(log_end).expect("trim epochs");
    epochs
}

impl SimBroker {
    pub fn new(id: BrokerId, policy: Policy, disk_seed: u64) -> SimBroker {
        let disk = SimDisk::with_alignment(disk_seed, 1);
        let log = SimLog::new(policy);
        let epochs = open_epochs(&disk, log.log_end_offset());
        SimBroker {
            id,
            up: true,
            incarnation: 1,
            registered: false,
            epochs,
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
    pub fn crash(&mut self, rng: &mut super::rng::Rng) {
        let lost = self.log.crash(rng);
        self.disk.crash();
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
        self.epochs = open_epochs(&self.disk, self.log.log_end_offset());
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
            self.epochs.entries()
        ));
    }

    /// Timers: registration and heartbeats, ISR checks, write-back, the fetch loop, and the
    /// produce timeouts.
    pub fn tick(&mut self, now_ms: u64) {
        if !self.up {
            return;
        }
        if now_ms >= self.next_heartbeat_ms {
            self.next_heartbeat_ms = now_ms + HEARTBEAT_MS;
            let message = if self.registered {
                Message::Heartbeat
            } else {
                Message::Register {
                    incarnation: self.incarnation,
                }
            };
            self.send(Node::Controller, message);
        }
        if now_ms >= self.next_write_back_ms {
            self.next_write_back_ms = now_ms + WRITE_BACK_MS;
            self.log.flush();
        }
        if !self.registered {
            return;
        }
        if let Some((_, deadline_ms)) = self.isr_proposal {
            if now_ms >= deadline_ms {
                self.resend_isr_proposal(now_ms);
            }
        }
        if now_ms >= self.next_isr_check_ms {
            self.next_isr_check_ms = now_ms + ISR_CHECK_MS;
            self.propose_isr_changes(now_ms);
        }
        self.step_follower(now_ms);
        self.settle_produces(now_ms);
    }

    pub fn receive(&mut self, from: Node, message: Message, now_ms: u64) {
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
            Message::AlterIsrResponse { proposal, accepted } => {
                // Even a refusal leaves the proposal pending: it may be the answer to a resend
                // of a change the controller already applied. The metadata settles it.
                if self.isr_proposal.is_some_and(|(id, _)| id == proposal) {
                    self.isr_proposal = None;
                    if !accepted {
                        self.note(format!("b{} ISR proposal {proposal} refused", self.id));
                    }
                }
            }
            Message::Produce { request, values } => self.produce(from, request, values),
            Message::Fetch {
                session,
                offset,
                current_leader_epoch,
            } => self.answer_fetch(from, session, offset, current_leader_epoch, now_ms),
            Message::EpochEnd {
                session,
                current_leader_epoch,
                epoch,
            } => self.answer_epoch_end(from, session, current_leader_epoch, epoch),
            Message::FetchResponse {
                session,
                error,
                high_watermark,
                records,
            } => self.fetched(session, error, high_watermark, &records, now_ms),
            Message::EpochEndResponse {
                session,
                error,
                leader_epoch,
                end_offset,
            } => self.epoch_end_answered(session, error, (leader_epoch, end_offset), now_ms),
            Message::ProduceResponse { .. }
            | Message::Register { .. }
            | Message::Heartbeat
            | Message::AlterIsr { .. } => {}
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
                    .assign(state.leader_epoch, log_end)
                    .expect("record the leader epoch");
            }
            Transition::BecameFollower { leader } => {
                self.follower = Some(FollowLoop {
                    leader,
                    generation: self.role_generation,
                    needs_truncation: true,
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
                if follow.needs_truncation {
                    self.orphaned_truncations.push(waiting.session);
                }
            }
        }
    }

    /// `propose_isr_changes`.
    fn propose_isr_changes(&mut self, now_ms: u64) {
        let epoch_start = self
            .epochs
            .entries()
            .last()
            .map_or(0, |entry| entry.start_offset);
        let Some(isr) = self
            .replica
            .wanted_isr(epoch_start, now_ms, REPLICA_LAG_TIME_MAX_MS)
        else {
            return;
        };
        let partition_epoch = self.replica.proposing_isr(isr.clone());
        self.send_isr_proposal(isr, partition_epoch, now_ms);
    }

    /// The controller did not answer: the outcome is unknown, so the same change goes again.
    fn resend_isr_proposal(&mut self, now_ms: u64) {
        self.isr_proposal = None;
        if let Some((isr, partition_epoch)) = self.replica.pending_isr() {
            let isr = isr.to_vec();
            self.send_isr_proposal(isr, partition_epoch, now_ms);
        }
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
        self.send(Node::Controller, Message::AlterIsr { proposal, command });
    }

    // ---- the leader's side (`produce_here`, `await_replication`, `fetch_here`) ----

    fn produce(&mut self, producer: Node, request: u64, values: Vec<u64>) {
        let refuse = |code| Message::ProduceResponse {
            request,
            error: code,
            offsets: Vec::new(),
        };
        if !self.registered || self.replica.role() != Role::Leader {
            self.send(producer, refuse(error_code::NOT_LEADER_OR_FOLLOWER));
            return;
        }
        if self.replica.isr().len() < MIN_INSYNC_REPLICAS {
            self.send(producer, refuse(error_code::NOT_ENOUGH_REPLICAS));
            return;
        }
        self.next_request += 1;
        let produce = self.next_request;
        self.appending.insert(
            produce,
            Appending {
                producer,
                request,
                leader_epoch: self.replica.leader_epoch(),
                values,
                offsets: Vec::new(),
            },
        );
        self.outputs.push(Output::AppendLater { produce });
    }

    /// One batch of a produce reaches the log, with the epoch read when it arrived.
    pub fn append_next(&mut self, produce: u64, now_ms: u64) {
        if !self.up {
            return;
        }
        let Some(appending) = self.appending.get_mut(&produce) else {
            return;
        };
        // The broker's own admission rule (`cluster::admission` calls the same check under
        // the append lock): still the leader, at the epoch the request was accepted in, or
        // the rest of the produce is refused.
        if !self.replica.leads_at(appending.leader_epoch) {
            let appending = self.appending.remove(&produce).expect("present");
            self.send(
                appending.producer,
                Message::ProduceResponse {
                    request: appending.request,
                    error: error_code::NOT_LEADER_OR_FOLLOWER,
                    offsets: Vec::new(),
                },
            );
            return;
        }
        let value = appending.values[appending.offsets.len()];
        let offset = self.log.append_as_leader(appending.leader_epoch, value);
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
            let verdict = if self.replica.role() != Role::Leader
                || self.replica.leader_epoch() != waiting.leader_epoch
            {
                Some(error_code::NOT_LEADER_OR_FOLLOWER)
            } else if self.replica.high_watermark() > waiting.last_offset {
                if self.replica.isr().len() < MIN_INSYNC_REPLICAS {
                    Some(error_code::NOT_ENOUGH_REPLICAS_AFTER_APPEND)
                } else {
                    Some(error_code::NONE)
                }
            } else if now_ms >= waiting.deadline_ms {
                Some(error_code::REQUEST_TIMED_OUT)
            } else {
                None
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

    fn answer_fetch(
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
        let log_end_offset = self.log.log_end_offset();
        let failed = |error| Message::FetchResponse {
            session,
            error,
            high_watermark: -1,
            records: Vec::new(),
        };
        if let Err(refusal) = self.replica.check_leader(current_leader_epoch) {
            self.send(from, failed(refusal.code()));
            return;
        }
        // A follower fetching from `offset` holds everything below it.
        self.replica
            .follower_fetched(follower, offset, log_end_offset, now_ms);
        let high_watermark = self.replica.high_watermark();
        let mut response = Message::FetchResponse {
            session,
            error: error_code::NONE,
            high_watermark,
            records: Vec::new(),
        };
        if offset < self.log.log_start_offset() || offset > log_end_offset {
            if let Message::FetchResponse { error, .. } = &mut response {
                *error = error_code::OFFSET_OUT_OF_RANGE;
            }
        } else if let Message::FetchResponse { records, .. } = &mut response {
            let start = offset as usize;
            let end = (start + FETCH_RECORDS_MAX).min(log_end_offset as usize);
            records.extend_from_slice(&self.log.records()[start..end]);
        }
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
        let response = match self.replica.check_leader(current_leader_epoch) {
            Err(refusal) => Message::EpochEndResponse {
                session,
                error: refusal.code(),
                leader_epoch: -1,
                end_offset: -1,
            },
            Ok(()) => {
                let (leader_epoch, end_offset) =
                    self.epochs.end_offset_for(epoch, self.log.log_end_offset());
                Message::EpochEndResponse {
                    session,
                    error: error_code::NONE,
                    leader_epoch,
                    end_offset,
                }
            }
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
            follow.needs_truncation = true;
            follow.next_request_ms = now_ms + RETRY_PAUSE_MS;
            return;
        }
        if now_ms < follow.next_request_ms {
            return;
        }
        let (leader, generation) = (follow.leader, follow.generation);
        let current_leader_epoch = self.replica.leader_epoch();
        let needs_truncation = follow.needs_truncation;
        let session = self.new_session(generation);
        let message = match (needs_truncation, self.epochs.latest_epoch()) {
            (true, Some(latest)) => Message::EpochEnd {
                session,
                current_leader_epoch,
                epoch: latest,
            },
            // An empty epoch cache has nothing to cut (`truncate_divergent` returns Ok).
            _ => {
                let follow = self.follower.as_mut().expect("following");
                follow.needs_truncation = false;
                Message::Fetch {
                    session,
                    offset: self.log.log_end_offset(),
                    current_leader_epoch,
                }
            }
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

    fn fetched(
        &mut self,
        session: Session,
        error: i16,
        high_watermark: i64,
        records: &[Record],
        now_ms: u64,
    ) {
        // `if !current() { break; }` after the fetch: answers to ended loops are dropped.
        let Some(follow) = self.loop_waiting_on(session) else {
            return;
        };
        follow.waiting = None;
        if error == error_code::NONE {
            follow.next_request_ms = if records.is_empty() {
                now_ms + FETCH_IDLE_MS
            } else {
                now_ms
            };
            self.append_fetched(high_watermark, records);
            return;
        }
        if error == error_code::OFFSET_OUT_OF_RANGE {
            follow.needs_truncation = true;
        }
        // Leader changes reach us through the metadata; until then, wait.
        follow.next_request_ms = now_ms + RETRY_PAUSE_MS;
    }

    fn append_fetched(&mut self, leader_high_watermark: i64, records: &[Record]) {
        for record in records {
            if record.offset < self.log.log_end_offset() {
                continue;
            }
            self.epochs
                .assign(record.epoch, record.offset)
                .expect("record the batch's epoch");
            self.log.append_replicated(*record);
        }
        self.replica
            .follow_high_watermark(leader_high_watermark, self.log.log_end_offset());
    }

    fn epoch_end_answered(
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
        let Some(follow) = self.loop_waiting_on(session) else {
            return;
        };
        follow.waiting = None;
        if error != error_code::NONE {
            follow.next_request_ms = now_ms + RETRY_PAUSE_MS;
            return;
        }
        follow.needs_truncation = false;
        follow.next_request_ms = now_ms;
        self.truncate_divergent(answer);
    }

    /// `truncate_divergent` after the leader answered, and `truncate_partition`.
    fn truncate_divergent(&mut self, answer: (i32, i64)) {
        let log_end = self.log.log_end_offset();
        let high_watermark = self.replica.high_watermark();
        let target = self
            .epochs
            .divergence_point(answer, high_watermark, log_end);
        if target >= log_end {
            return;
        }
        let target = target.max(self.log.log_start_offset());
        let log_end = self.log.truncate_to(target);
        self.epochs.truncate_from_end(log_end).expect("trim epochs");
        self.replica.truncated(log_end);
        self.note(format!(
            "b{} cuts its log to {log_end} (leader answered {answer:?}, hw was {high_watermark})",
            self.id
        ));
    }
}
