//! One voter of the metadata quorum without I/O: the raft node, the applied cluster state and
//! the controller duties. The driver (`driver.rs`) gives it messages, ticks and proposals
//! and carries out what it asks: make bytes durable, send messages, answer proposers. A
//! simulation can do the same with a simulated disk and network, and so run the code that
//! ships.
//!
//! A `Ready` is handled in two halves, following raft-rs's contract:
//!
//! ```text
//!   begin_ready() -> ReadyWrites { send_now, rewrite, records, restored }
//!       caller: send `send_now` (they do not depend on this node's log);
//!               make `rewrite` (a whole-file image) and then `records` durable
//!   finish_ready() -> ReadyDone { send_persisted, commit_records, send_after, outcomes, .. }
//!       caller: send `send_persisted` (votes and append answers promise what is now on disk);
//!               make `commit_records` durable; send `send_after`;
//!               answer the proposers in `outcomes`; report unreachable peers and snapshot
//!               hand-offs with `report_unreachable` / `report_snapshot`
//! ```
//!
//! Between the halves nothing else may touch the node: [`QuorumNode::begin_ready`] refuses
//! to start a second one.
//!
//! Time is whatever `Instant` the caller passes: the node never reads a clock.

use std::time::{Duration, Instant};

/// A raft message between voters (what `ReadyWrites` and `ReadyDone` ask to send).
pub use raft::eraftpb::Message;
use raft::eraftpb::{ConfState, Entry, EntryType, Snapshot};
use raft::{RawNode, Ready, SnapshotStatus, StateRole};
use uuid::Uuid;

use super::controller::Controller;
use super::proposal::Proposal;
use super::storage::QuorumStorage;
use super::{broker_id, raft_id};
use crate::state::{BrokerId, ClusterState, Command, Refusal};

/// What a node needs to know of its configuration.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub node_id: BrokerId,
    /// Ticks without a leader before a follower campaigns, at least.
    pub election_ticks: usize,
    /// Raft draws each election timeout from `election_ticks..election_ticks_max` with a
    /// generator of its own, so that voters rarely campaign at once. The broker uses twice
    /// `election_ticks`; a simulation uses `election_ticks + 1` (a fixed timeout, different
    /// per voter) so that a seed replays its elections exactly.
    pub election_ticks_max: usize,
    /// Ticks between the leader's raft heartbeats.
    pub heartbeat_ticks: usize,
    /// A registered broker not heard from for this long is fenced by the leader.
    pub broker_session_timeout: Duration,
    /// Applied entries after the last snapshot that trigger a new snapshot.
    pub snapshot_every_entries: u64,
}

/// Why the node cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("cluster state: {0}")]
    State(String),
    #[error("a Ready is already being handled")]
    ReadyInProgress,
    #[error("finish_ready without begin_ready")]
    NoReady,
}

/// The first half of a `Ready`: what to send at once and what to make durable.
#[derive(Default)]
pub struct ReadyWrites {
    pub send_now: Vec<Message>,
    /// A whole-file image to write atomically before `records` (a snapshot was installed).
    pub rewrite: Option<Vec<u8>>,
    /// Records to append durably (entries, hard state).
    pub records: Vec<u8>,
    /// The applied state was replaced by a snapshot from the leader.
    pub restored: bool,
}

/// The second half of a `Ready`, once the writes are durable.
#[derive(Default)]
pub struct ReadyDone {
    pub send_persisted: Vec<Message>,
    /// The new commit index, to append durably (not needed for safety: raft learns the
    /// commit index again from the leader).
    pub commit_records: Vec<u8>,
    pub send_after: Vec<Message>,
    /// The proposals applied now, with their outcomes.
    pub outcomes: Vec<(Uuid, Result<(), Refusal>)>,
    /// Entries were applied: the state changed.
    pub applied_any: bool,
}

/// One voter's raft node and applied state. Not `Send`-bound by itself, but owned by one task.
pub struct QuorumNode {
    raw: RawNode<QuorumStorage>,
    state: ClusterState,
    applied: u64,
    controller: Controller,
    snapshot_every_entries: u64,
    ready: Option<Ready>,
}

impl QuorumNode {
    /// A node over what was recovered from its log: `storage` and the state at `applied`
    /// (see [`QuorumNode::recover_state`]).
    pub fn new(
        settings: &NodeSettings,
        storage: QuorumStorage,
        state: ClusterState,
        applied: u64,
    ) -> Result<QuorumNode, NodeError> {
        let raft_config = raft::Config {
            id: raft_id(settings.node_id),
            election_tick: settings.election_ticks,
            min_election_tick: settings.election_ticks,
            max_election_tick: settings.election_ticks_max,
            heartbeat_tick: settings.heartbeat_ticks,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = super::logger::raft_logger(raft_config.id);
        let raw = RawNode::new(&raft_config, storage, &logger)?;
        Ok(QuorumNode {
            raw,
            state,
            applied,
            controller: Controller::new(settings.broker_session_timeout),
            snapshot_every_entries: settings.snapshot_every_entries,
            ready: None,
        })
    }

    /// The state at the persisted commit index: the snapshot's, then every committed entry
    /// after it applied in order.
    pub fn recover_state(storage: &QuorumStorage) -> Result<(ClusterState, u64), NodeError> {
        let mut state = if storage.snapshot_index() > 0 {
            serde_json::from_slice(&storage.snapshot().data)
                .map_err(|error| NodeError::State(error.to_string()))?
        } else {
            ClusterState::default()
        };
        let commit = storage.hard_state().commit;
        for entry in storage.entries_between(storage.snapshot_index(), commit) {
            apply_entry(&mut state, entry);
        }
        Ok((state, commit.max(storage.snapshot_index())))
    }

    /// Starts an election now (a simulation that wants a known first leader).
    pub fn campaign(&mut self) -> Result<(), NodeError> {
        Ok(self.raw.campaign()?)
    }

    /// A quorum of one elects itself at once: nobody to wait for.
    pub fn campaign_if_alone(&mut self) -> Result<(), NodeError> {
        if self.raw.raft.prs().conf().voters().ids().len() == 1 {
            self.raw.campaign()?;
        }
        Ok(())
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The raft index of the last applied entry: the state's version.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The broker id of the leader this node knows of.
    pub fn leader(&self) -> Option<BrokerId> {
        broker_id(self.raw.raft.leader_id)
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn store(&self) -> &QuorumStorage {
        self.raw.store()
    }

    /// A raft message from a peer. Refusals (a stale term, a message for another node) are
    /// raft's to decide and are returned for logging only.
    pub fn step(&mut self, message: Message) -> Result<(), NodeError> {
        Ok(self.raw.step(message)?)
    }

    /// A heartbeat of `broker` arrived.
    pub fn heard(&mut self, broker: BrokerId, now: Instant) {
        self.controller.heard(broker, now);
    }

    /// One raft tick at `now`; the controller's duties run while this node leads (their
    /// proposals go to raft directly: nobody waits for them).
    pub fn tick(&mut self, now: Instant) {
        self.raw.tick();
        self.follow_role(now);
        for command in self.controller.due(&self.state, now) {
            tracing::info!(?command, "controller proposes");
            let data = Proposal {
                id: Uuid::new_v4(),
                command,
            }
            .encode();
            if let Err(error) = self.raw.propose(Vec::new(), data) {
                tracing::debug!(%error, "raft dropped a controller proposal");
            }
        }
    }

    /// Tells the controller whether this node leads; call after anything that can change
    /// the role (step, tick, campaign).
    pub fn follow_role(&mut self, now: Instant) {
        self.controller.set_leader(self.is_leader(), now);
    }

    /// Hands a proposal to raft (a follower forwards it to the leader). Fails when no leader
    /// is known or raft drops it (a leader transfer, too much uncommitted).
    pub fn propose(&mut self, id: Uuid, command: Command) -> Result<(), NodeError> {
        let data = Proposal { id, command }.encode();
        Ok(self.raw.propose(Vec::new(), data)?)
    }

    /// [`propose`](Self::propose) with the proposal already encoded.
    pub fn propose_bytes(&mut self, data: Vec<u8>) -> Result<(), NodeError> {
        Ok(self.raw.propose(Vec::new(), data)?)
    }

    pub fn has_ready(&self) -> bool {
        self.ready.is_none() && self.raw.has_ready()
    }

    /// The first half of a `Ready` (see the module documentation).
    pub fn begin_ready(&mut self) -> Result<ReadyWrites, NodeError> {
        if self.ready.is_some() {
            return Err(NodeError::ReadyInProgress);
        }
        let mut ready = self.raw.ready();
        let mut writes = ReadyWrites {
            send_now: ready.take_messages(),
            ..ReadyWrites::default()
        };
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.restore(&snapshot)?;
            writes.rewrite = Some(self.raw.mut_store().install_snapshot(snapshot));
            writes.restored = true;
        }
        if !ready.entries().is_empty() {
            self.raw
                .mut_store()
                .append(ready.entries(), &mut writes.records);
        }
        if let Some(hard_state) = ready.hs() {
            self.raw
                .mut_store()
                .set_hard_state(hard_state.clone(), &mut writes.records);
        }
        self.ready = Some(ready);
        Ok(writes)
    }

    /// The second half of a `Ready`, once what `begin_ready` returned is durable.
    pub fn finish_ready(&mut self) -> Result<ReadyDone, NodeError> {
        let mut ready = self.ready.take().ok_or(NodeError::NoReady)?;
        let mut done = ReadyDone {
            send_persisted: ready.take_persisted_messages(),
            ..ReadyDone::default()
        };
        self.apply(ready.take_committed_entries(), &mut done);
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw
                .mut_store()
                .set_commit(commit, &mut done.commit_records);
        }
        done.send_after = light.take_messages();
        self.apply(light.take_committed_entries(), &mut done);
        self.raw.advance_apply();
        Ok(done)
    }

    /// A message to `to` could not be sent: raft probes it again later.
    pub fn report_unreachable(&mut self, to: u64) {
        self.raw.report_unreachable(to);
    }

    /// How the hand-off of a snapshot to `to` went: raft pauses that follower until told.
    pub fn report_snapshot(&mut self, to: u64, sent: bool) {
        let status = if sent {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
    }

    /// Every `snapshot_every_entries` applied entries: snapshots the applied state, drops
    /// the entries it covers, and returns the log image to write atomically.
    pub fn compact_if_due(&mut self) -> Result<Option<Vec<u8>>, NodeError> {
        let store = self.raw.store();
        if self.applied < store.snapshot_index() + self.snapshot_every_entries {
            return Ok(None);
        }
        let term = raft::Storage::term(store, self.applied)?;
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = self.applied;
        metadata.term = term;
        metadata.set_conf_state(ConfState::clone(store.conf_state()));
        snapshot.data = serde_json::to_vec(&self.state)
            .map_err(|error| NodeError::State(error.to_string()))?
            .into();
        let image = self.raw.mut_store().compact(snapshot);
        tracing::info!(index = self.applied, "metadata log compacted by a snapshot");
        Ok(Some(image))
    }

    /// Replaces the applied state with a snapshot's (received from the leader).
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        let state: ClusterState = serde_json::from_slice(&snapshot.data)
            .map_err(|error| NodeError::State(format!("snapshot from the leader: {error}")))?;
        let index = snapshot.get_metadata().index;
        tracing::info!(index, "installed a metadata snapshot from the leader");
        self.state = state;
        self.applied = index;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>, done: &mut ReadyDone) {
        for entry in &entries {
            if entry.index <= self.applied {
                continue;
            }
            self.applied = entry.index;
            done.applied_any = true;
            if let Some(outcome) = apply_entry(&mut self.state, entry) {
                done.outcomes.push(outcome);
            }
        }
    }
}

/// Applies one committed entry to `state`. Returns the proposal's id and the outcome, or
/// `None` for an entry that carries no command (a leader's no-op, a configuration change).
pub fn apply_entry(state: &mut ClusterState, entry: &Entry) -> Option<(Uuid, Result<(), Refusal>)> {
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
