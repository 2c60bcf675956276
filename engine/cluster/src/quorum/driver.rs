//! The driver: the one task that owns the raft node. Each turn it takes what the inbox
//! holds (messages, heartbeats, proposals), ticks raft on time, handles `Ready`, and runs
//! the controller duties while it leads.
//!
//! `Ready` handling follows raft-rs's contract:
//! 1. send `messages` at once (they do not depend on this node's log);
//! 2. install a received snapshot, append the new entries and the hard state, and wait for
//!    `fdatasync` (on a helper thread, so the executor keeps serving);
//! 3. only then send `persisted_messages` (votes and append responses promise what is now
//!    on disk);
//! 4. apply committed entries, publish the new state, answer the waiting proposers;
//! 5. `advance`, persist the new commit index, send and apply what the `LightReady` holds.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use futures_lite::FutureExt;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use uuid::Uuid;

use super::controller::Controller;
use super::frame::{self, Frame};
use super::proposal::Proposal;
use super::storage::{LogFile, QuorumStorage, QuorumStorageError};
use super::transport::Transport;
use super::{broker_id, raft_id, Pending, ProposeError, Quorum, QuorumError, Recovered};
use crate::state::{ClusterState, Command, Refusal};

/// Applies one committed entry to `state`. Returns the proposal's id and the outcome, or
/// `None` for an entry that carries no command (a leader's no-op, a configuration change).
pub(super) fn apply_entry(
    state: &mut ClusterState,
    entry: &Entry,
) -> Option<(Uuid, Result<(), Refusal>)> {
    if entry.get_entry_type() != EntryType::EntryNormal {
        // Membership changes are never proposed (see docs/cluster.md).
        tracing::warn!(index = entry.index, "ignoring a configuration-change entry");
        return None;
    }
    if entry.data.is_empty() {
        return None;
    }
    match Proposal::decode(&entry.data) {
        Ok(proposal) => {
            let outcome = state.apply(&proposal.command);
            match &outcome {
                Ok(()) => {
                    tracing::debug!(index = entry.index, command = ?proposal.command, "applied")
                }
                Err(refusal) => {
                    tracing::debug!(index = entry.index, command = ?proposal.command, %refusal, "refused")
                }
            }
            Some((proposal.id, outcome))
        }
        Err(error) => {
            // Every member skips the same entry, so the states stay equal.
            tracing::error!(index = entry.index, %error, "undecodable metadata entry; skipped");
            None
        }
    }
}

/// A proposal handed to raft, waiting to be applied.
struct Waiter {
    deadline: Instant,
    reply: oneshot::Sender<Result<(), ProposeError>>,
}

/// How long the metadata log waits before writing again after the file system was full.
const PERSIST_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// One warning per this many failed attempts (every 30 s at the interval above).
const PERSIST_RETRY_LOG_EVERY: u64 = 60;

pub(super) struct Driver {
    quorum: Arc<Quorum>,
    node: RawNode<QuorumStorage>,
    log: LogFile,
    transport: Option<Rc<Transport>>,
    /// The applied state (published to `quorum.state` after each change).
    state: ClusterState,
    applied: u64,
    /// Proposals not yet handed to raft (no leader known yet).
    queued: VecDeque<Pending>,
    waiting: HashMap<Uuid, Waiter>,
    controller: Controller,
    next_tick: Instant,
    next_heartbeat: Instant,
}

impl Driver {
    /// Opens the log file, builds the raft node from what `open` recovered, and binds the
    /// transport. Must run on a glommio executor.
    pub(super) async fn start(
        quorum: Arc<Quorum>,
        recovered: Recovered,
    ) -> Result<Driver, QuorumError> {
        let config = &quorum.config;
        let log = LogFile::open(
            shardlog_storage::Storage::new(super::LOG_STRATEGY),
            &config.data_dir.join("metadata"),
            &recovered.loaded,
        )
        .await?;
        let raft_config = raft::Config {
            id: raft_id(config.node_id),
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: recovered.applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = super::logger::raft_logger(raft_config.id);
        let node = RawNode::new(&raft_config, recovered.loaded.storage, &logger)?;
        let transport = if config.voters.len() > 1 {
            Some(Transport::start(&quorum)?)
        } else {
            None
        };
        let now = Instant::now();
        Ok(Driver {
            controller: Controller::new(config.broker_session_timeout),
            next_tick: now + config.tick_interval,
            next_heartbeat: now,
            quorum,
            node,
            log,
            transport,
            state: recovered.state,
            applied: recovered.applied,
            queued: VecDeque::new(),
            waiting: HashMap::new(),
        })
    }

    pub(super) async fn run(mut self) -> Result<(), QuorumError> {
        if self.node.raft.prs().conf().voters().ids().len() == 1 {
            // Alone: nobody to wait for, elect at once.
            self.node.campaign()?;
            self.follow_leadership(Instant::now());
        }
        let result = self.turns().await;
        for waiter in self.waiting.drain().map(|(_, waiter)| waiter.reply) {
            let _ = waiter.send(Err(ProposeError::Stopped));
        }
        for pending in self.queued.drain(..) {
            let _ = pending.reply.send(Err(ProposeError::Stopped));
        }
        for pending in self.quorum.lock_inbox().proposals.drain(..) {
            let _ = pending.reply.send(Err(ProposeError::Stopped));
        }
        if let Some(transport) = self.transport.take() {
            transport.stop();
        }
        result
    }

    async fn turns(&mut self) -> Result<(), QuorumError> {
        loop {
            self.wait_for_work().await;
            if self.quorum.is_stopping() {
                return Ok(());
            }
            self.take_inbox();
            let now = Instant::now();
            if now >= self.next_tick {
                self.tick(now);
            }
            // Roles change only in step, tick and campaign: publish the leader before any
            // proposal is answered, so a proposer that returns sees the current controller.
            self.follow_leadership(now);
            self.submit_queued();
            while self.node.has_ready() {
                self.handle_ready().await?;
            }
            self.compact_if_due().await?;
        }
    }

    /// Waits until the inbox has something, the next tick is due, or a stop is requested.
    async fn wait_for_work(&self) {
        let quorum = &self.quorum;
        let pending = || {
            let inbox = quorum.lock_inbox();
            !inbox.messages.is_empty()
                || !inbox.heartbeats.is_empty()
                || !inbox.proposals.is_empty()
        };
        let until_tick = self.next_tick.saturating_duration_since(Instant::now());
        if pending() || until_tick.is_zero() || quorum.is_stopping() {
            return;
        }
        let listener = quorum.inbox_changed.listen();
        if pending() || quorum.is_stopping() {
            return;
        }
        listener.or(glommio::timer::sleep(until_tick)).await;
    }

    fn take_inbox(&mut self) {
        let (messages, heartbeats, proposals) = {
            let mut inbox = self.quorum.lock_inbox();
            (
                std::mem::take(&mut inbox.messages),
                std::mem::take(&mut inbox.heartbeats),
                std::mem::take(&mut inbox.proposals),
            )
        };
        let now = Instant::now();
        for message in messages {
            let kind = message.get_msg_type();
            if let Err(error) = self.node.step(message) {
                tracing::debug!(?kind, %error, "raft refused a message");
            }
        }
        for broker in heartbeats {
            self.controller.heard(broker, now);
        }
        self.queued.extend(proposals);
    }

    fn tick(&mut self, now: Instant) {
        let quorum = Arc::clone(&self.quorum);
        let config = &quorum.config;
        self.node.tick();
        self.next_tick += config.tick_interval;
        if self.next_tick <= now {
            // The executor was held up for more than a tick: do not tick in a burst.
            self.next_tick = now + config.tick_interval;
        }
        self.expire(now);
        self.controller.heard(config.node_id, now);
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + config.heartbeat_interval;
            if let Some(transport) = &self.transport {
                if let Some(bytes) = frame::encode(&Frame::Heartbeat {
                    broker_id: config.node_id,
                }) {
                    transport.broadcast(&bytes);
                }
            }
        }
        self.follow_leadership(now);
        for command in self.controller.due(&self.state, now) {
            tracing::info!(?command, "controller proposes");
            self.propose_internal(command);
        }
    }

    /// Fails proposals whose time is up, those still in the inbox included, without
    /// stepping raft: for use while a write of raft's log is pending.
    fn expire_while_waiting(&mut self, now: Instant) {
        let expired: Vec<Pending> = {
            let mut inbox = self.quorum.lock_inbox();
            let (expired, kept): (Vec<Pending>, Vec<Pending>) = inbox
                .proposals
                .drain(..)
                .partition(|pending| pending.deadline <= now);
            inbox.proposals = kept.into();
            expired
        };
        for pending in expired {
            let _ = pending.reply.send(Err(ProposeError::Timeout));
        }
        self.expire(now);
    }

    /// Fails proposals whose time is up.
    fn expire(&mut self, now: Instant) {
        let leaderless = self.node.raft.leader_id == raft::INVALID_ID;
        let (expired, kept): (Vec<Pending>, Vec<Pending>) = self
            .queued
            .drain(..)
            .partition(|pending| pending.deadline <= now);
        self.queued = kept.into();
        for pending in expired {
            let error = if leaderless {
                ProposeError::NoController
            } else {
                ProposeError::Timeout
            };
            let _ = pending.reply.send(Err(error));
        }
        let expired: Vec<Uuid> = self
            .waiting
            .iter()
            .filter(|(_, waiter)| waiter.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(waiter) = self.waiting.remove(&id) {
                let _ = waiter.reply.send(Err(ProposeError::Timeout));
            }
        }
    }

    /// Hands queued proposals to raft once a leader is known (raft forwards a follower's
    /// proposal to the leader).
    fn submit_queued(&mut self) {
        while let Some(pending) = self.queued.pop_front() {
            if self.node.raft.leader_id == raft::INVALID_ID {
                self.queued.push_front(pending);
                return;
            }
            match self.node.propose(Vec::new(), pending.data) {
                Ok(()) => {
                    self.waiting.insert(
                        pending.id,
                        Waiter {
                            deadline: pending.deadline,
                            reply: pending.reply,
                        },
                    );
                }
                Err(error) => {
                    // Dropped (a leader transfer, or too much uncommitted): the proposer
                    // times out, as it would if a forwarded proposal were lost.
                    tracing::debug!(%error, "raft dropped a proposal");
                    let _ = pending.reply.send(Err(ProposeError::Timeout));
                }
            }
        }
    }

    /// A proposal of the controller's own: nobody waits on it.
    fn propose_internal(&mut self, command: Command) {
        let data = Proposal {
            id: Uuid::new_v4(),
            command,
        }
        .encode();
        if let Err(error) = self.node.propose(Vec::new(), data) {
            tracing::debug!(%error, "raft dropped a controller proposal");
        }
    }

    async fn handle_ready(&mut self) -> Result<(), QuorumError> {
        let mut ready = self.node.ready();
        let mut after_advance = AfterAdvance::default();
        self.send(ready.take_messages(), &mut after_advance);

        let mut rewrite = None;
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.restore(&snapshot)?;
            rewrite = Some(self.node.mut_store().install_snapshot(snapshot));
        }
        let mut records = Vec::new();
        if !ready.entries().is_empty() {
            self.node.mut_store().append(ready.entries(), &mut records);
        }
        if let Some(hard_state) = ready.hs() {
            self.node
                .mut_store()
                .set_hard_state(hard_state.clone(), &mut records);
        }
        self.persist(rewrite, records).await?;
        self.send(ready.take_persisted_messages(), &mut after_advance);
        self.apply(ready.take_committed_entries());

        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut records = Vec::new();
            self.node.mut_store().set_commit(commit, &mut records);
            self.persist(None, records).await?;
        }
        self.send(light.take_messages(), &mut after_advance);
        self.apply(light.take_committed_entries());
        self.node.advance_apply();
        after_advance.report(&mut self.node);
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>, after_advance: &mut AfterAdvance) {
        let Some(transport) = &self.transport else {
            return;
        };
        for message in messages {
            let to = message.to;
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let sent =
                frame::encode(&Frame::Raft(message)).is_some_and(|bytes| transport.send(to, bytes));
            if !sent {
                after_advance.unreachable.push(to);
            }
            if is_snapshot {
                // Raft pauses the follower until told: say how the hand-off went. A snapshot
                // lost after this is found by raft's next probe, which sends another.
                after_advance.snapshots.push((to, sent));
            }
        }
    }

    /// Replaces the applied state with a snapshot's (received from the leader).
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), QuorumError> {
        let state: ClusterState = serde_json::from_slice(&snapshot.data)
            .map_err(|error| QuorumError::State(format!("snapshot from the leader: {error}")))?;
        let index = snapshot.get_metadata().index;
        tracing::info!(index, "installed a metadata snapshot from the leader");
        self.state = state;
        self.applied = index;
        self.quorum.publish(self.state.clone(), index);
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let mut outcomes = Vec::new();
        for entry in &entries {
            if entry.index <= self.applied {
                continue;
            }
            self.applied = entry.index;
            if let Some(outcome) = apply_entry(&mut self.state, entry) {
                outcomes.push(outcome);
            }
        }
        if entries.is_empty() {
            return;
        }
        // Publish before answering, so a proposer sees its change in `state()`.
        self.quorum.publish(self.state.clone(), self.applied);
        for (id, outcome) in outcomes {
            if let Some(waiter) = self.waiting.remove(&id) {
                let _ = waiter.reply.send(outcome.map_err(ProposeError::Refused));
            }
        }
    }

    /// Writes a whole-file rewrite, then appended records; returns once both are durable.
    ///
    /// A full file system does not stop the quorum: raft must not go on before its log is
    /// durable, so the write is retried every `PERSIST_RETRY_INTERVAL` until space is freed
    /// (or the quorum stops), and meanwhile the metadata does not advance; the broker keeps
    /// serving the partitions it has. Other errors stop the quorum, as before.
    async fn persist(
        &mut self,
        rewrite: Option<Vec<u8>>,
        records: Vec<u8>,
    ) -> Result<(), QuorumStorageError> {
        if rewrite.is_none() && records.is_empty() {
            return Ok(());
        }
        let mut attempts: u64 = 0;
        loop {
            match self.persist_once(rewrite.clone(), records.clone()).await {
                Err(error) if error.is_no_space() && !self.quorum.is_stopping() => {
                    if attempts.is_multiple_of(PERSIST_RETRY_LOG_EVERY) {
                        tracing::warn!(%error, attempts, "metadata log: no space; retrying");
                    }
                    attempts += 1;
                    glommio::timer::sleep(PERSIST_RETRY_INTERVAL).await;
                    // Proposers are answered at their deadline meanwhile, as usual.
                    self.expire_while_waiting(Instant::now());
                }
                result => return result,
            }
        }
    }

    async fn persist_once(
        &mut self,
        rewrite: Option<Vec<u8>>,
        records: Vec<u8>,
    ) -> Result<(), QuorumStorageError> {
        if let Some(image) = rewrite {
            self.log.rewrite(image).await?;
        }
        self.log.append(&records).await
    }

    /// Publishes the leader and starts or stops the controller duties.
    fn follow_leadership(&mut self, now: Instant) {
        let leader = broker_id(self.node.raft.leader_id).map_or(-1, i64::from);
        let previous = self
            .quorum
            .leader
            .swap(leader, std::sync::atomic::Ordering::AcqRel);
        if previous != leader {
            tracing::info!(
                leader,
                term = self.node.raft.term,
                node_id = self.quorum.config.node_id,
                "metadata quorum leader changed"
            );
        }
        self.controller
            .set_leader(self.node.raft.state == StateRole::Leader, now);
    }

    /// Snapshots the applied state and drops the entries it covers, every
    /// `snapshot_every_entries` applied entries.
    async fn compact_if_due(&mut self) -> Result<(), QuorumError> {
        let store = self.node.store();
        if self.applied < store.snapshot_index() + self.quorum.config.snapshot_every_entries {
            return Ok(());
        }
        let term = raft::Storage::term(store, self.applied)?;
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = self.applied;
        metadata.term = term;
        metadata.set_conf_state(ConfState::clone(store.conf_state()));
        snapshot.data = serde_json::to_vec(&self.state)
            .map_err(|error| QuorumError::State(error.to_string()))?
            .into();
        let image = self.node.mut_store().compact(snapshot);
        self.persist(Some(image), Vec::new()).await?;
        tracing::info!(index = self.applied, "metadata log compacted by a snapshot");
        Ok(())
    }
}

/// Reports to raft that must wait until `advance`.
#[derive(Default)]
struct AfterAdvance {
    unreachable: Vec<u64>,
    snapshots: Vec<(u64, bool)>,
}

impl AfterAdvance {
    fn report(self, node: &mut RawNode<QuorumStorage>) {
        for to in self.unreachable {
            node.report_unreachable(to);
        }
        for (to, sent) in self.snapshots {
            let status = if sent {
                SnapshotStatus::Finish
            } else {
                SnapshotStatus::Failure
            };
            node.report_snapshot(to, status);
        }
    }
}
