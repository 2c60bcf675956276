//! The driver: the one task that owns the raft node. Each turn it takes what the inbox
//! holds (messages, heartbeats, proposals), ticks raft on time, handles `Ready`, and runs
//! the controller duties while it leads.
//!
//! The raft rules themselves are in [`QuorumNode`](super::node::QuorumNode), which does no
//! I/O; the driver carries out what its two `Ready` halves ask, in order:
//! 1. send `send_now` at once (they do not depend on this node's log);
//! 2. write a received snapshot's log image, append the new entries and the hard state, and
//!    wait for `fdatasync` (the executor keeps serving meanwhile);
//! 3. only then send `send_persisted` (votes and append responses promise what is now on
//!    disk);
//! 4. publish the new state, answer the waiting proposers;
//! 5. persist the new commit index, send `send_after`, report unreachable peers.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use futures_lite::FutureExt;
use raft::eraftpb::{Message, MessageType};
use uuid::Uuid;

use super::frame::{self, Frame};
use super::node::{NodeSettings, QuorumNode};
use super::storage::{LogFile, QuorumStorageError};
use super::transport::Transport;
use super::{Pending, ProposeError, Quorum, QuorumError, Recovered};

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
    node: QuorumNode,
    log: LogFile,
    transport: Option<Rc<Transport>>,
    /// Proposals not yet handed to raft (no leader known yet).
    queued: VecDeque<Pending>,
    waiting: HashMap<Uuid, Waiter>,
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
        let settings = NodeSettings {
            node_id: config.node_id,
            election_ticks: config.election_ticks,
            election_ticks_max: 2 * config.election_ticks,
            heartbeat_ticks: config.heartbeat_ticks,
            broker_session_timeout: config.broker_session_timeout,
            snapshot_every_entries: config.snapshot_every_entries,
        };
        let node = QuorumNode::new(
            &settings,
            recovered.loaded.storage,
            recovered.state,
            recovered.applied,
        )?;
        let transport = if config.voters.len() > 1 {
            Some(Transport::start(&quorum)?)
        } else {
            None
        };
        let now = Instant::now();
        Ok(Driver {
            next_tick: now + config.tick_interval,
            next_heartbeat: now,
            quorum,
            node,
            log,
            transport,
            queued: VecDeque::new(),
            waiting: HashMap::new(),
        })
    }

    pub(super) async fn run(mut self) -> Result<(), QuorumError> {
        self.node.campaign_if_alone()?;
        self.follow_leadership(Instant::now());
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
            self.node.heard(broker, now);
        }
        self.queued.extend(proposals);
    }

    fn tick(&mut self, now: Instant) {
        let quorum = Arc::clone(&self.quorum);
        let config = &quorum.config;
        self.next_tick += config.tick_interval;
        if self.next_tick <= now {
            // The executor was held up for more than a tick: do not tick in a burst.
            self.next_tick = now + config.tick_interval;
        }
        self.expire(now);
        self.node.heard(config.node_id, now);
        self.node.tick(now);
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
        let leaderless = self.node.leader().is_none();
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
            if self.node.leader().is_none() {
                self.queued.push_front(pending);
                return;
            }
            match self.node.propose_bytes(pending.data) {
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

    async fn handle_ready(&mut self) -> Result<(), QuorumError> {
        let mut unreachable = Vec::new();
        let writes = self.node.begin_ready()?;
        self.send(writes.send_now, &mut unreachable);
        if writes.restored {
            self.publish();
        }
        self.persist(writes.rewrite, writes.records).await?;
        let done = self.node.finish_ready()?;
        self.send(done.send_persisted, &mut unreachable);
        if done.applied_any {
            // Publish before answering, so a proposer sees its change in `state()`.
            self.publish();
        }
        for (id, outcome) in done.outcomes {
            if let Some(waiter) = self.waiting.remove(&id) {
                let _ = waiter.reply.send(outcome.map_err(ProposeError::Refused));
            }
        }
        self.persist(None, done.commit_records).await?;
        self.send(done.send_after, &mut unreachable);
        for (to, snapshot_sent) in unreachable {
            match snapshot_sent {
                Some(sent) => self.node.report_snapshot(to, sent),
                None => self.node.report_unreachable(to),
            }
        }
        Ok(())
    }

    fn publish(&self) {
        self.quorum
            .publish(self.node.state().clone(), self.node.applied());
    }

    /// Sends raft messages; notes, for the report after the `Ready`, each peer a message
    /// could not reach (`None`) and each snapshot hand-off (`Some(sent)`).
    fn send(&mut self, messages: Vec<Message>, reports: &mut Vec<(u64, Option<bool>)>) {
        let Some(transport) = &self.transport else {
            return;
        };
        for message in messages {
            let to = message.to;
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let sent =
                frame::encode(&Frame::Raft(message)).is_some_and(|bytes| transport.send(to, bytes));
            if !sent {
                reports.push((to, None));
            }
            if is_snapshot {
                // Raft pauses the follower until told: say how the hand-off went. A snapshot
                // lost after this is found by raft's next probe, which sends another.
                reports.push((to, Some(sent)));
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
        let leader = self.node.leader().map_or(-1, i64::from);
        let previous = self
            .quorum
            .leader
            .swap(leader, std::sync::atomic::Ordering::AcqRel);
        if previous != leader {
            tracing::info!(
                leader,
                term = self.node.term(),
                node_id = self.quorum.config.node_id,
                "metadata quorum leader changed"
            );
        }
        self.node.follow_role(now);
    }

    /// Snapshots the applied state and drops the entries it covers, every
    /// `snapshot_every_entries` applied entries.
    async fn compact_if_due(&mut self) -> Result<(), QuorumError> {
        if let Some(image) = self.node.compact_if_due()? {
            self.persist(Some(image), Vec::new()).await?;
        }
        Ok(())
    }
}
