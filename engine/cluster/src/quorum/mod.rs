//! The metadata quorum: the brokers' [`ClusterState`] as a replicated log on raft, in the role
//! KRaft plays in Kafka. Consensus is tikv's `raft` crate (a pure state machine); this module
//! drives it on one glommio executor, stores its log, carries its messages, and runs the
//! controller duties on the leader. See `docs/cluster.md`.
//!
//! - [`Quorum`] is the handle every core shares (`Send + Sync`, in an `Arc`): read the applied
//!   state without locks, wait for a change, propose a command and wait until it is applied.
//! - [`Quorum::run`] is the driver, one task on core 0: tick, step, handle `Ready`.
//! - [`storage`] keeps raft's log durable; [`transport`] carries [`frame`]s between voters;
//!   [`controller`] fences silent brokers.
//! - A broker that is not among the voters is an **observer** (KRaft's "broker" role): it
//!   runs no raft node. [`observer`] keeps a session with one voter that pushes the applied
//!   state and commits its proposals, so the handle's API is the same on every broker.
//!
//! **Ids.** Raft node ids must be non-zero and broker ids may be 0, so a voter's raft id is
//! its broker id + 1 ([`raft_id`], [`broker_id`]).

pub mod controller;
mod driver;
pub mod frame;
mod logger;
pub mod node;
mod observer;
pub mod proposal;
pub mod record;
pub mod storage;
mod subscription;
mod transport;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use event_listener::Event;
use futures_channel::oneshot;
use raft::eraftpb::Message;
use uuid::Uuid;

use self::storage::{QuorumStorage, QuorumStorageError};
use super::state::{BrokerId, ClusterState, Command, Refusal};

/// The raft node id of broker `broker` (raft ids must be non-zero; broker ids start at 0).
pub fn raft_id(broker: BrokerId) -> u64 {
    debug_assert!(broker >= 0, "broker ids are non-negative");
    broker as u64 + 1
}

/// The broker whose raft node id is `raft_id` (0, raft's "none", has no broker).
pub fn broker_id(raft_id: u64) -> Option<BrokerId> {
    raft_id
        .checked_sub(1)
        .and_then(|id| BrokerId::try_from(id).ok())
}

/// Raft messages waiting for the driver; further ones are dropped (raft resends).
pub const INBOX_MESSAGES_MAX: usize = 4096;
/// The storage strategy of the raft log (why `buffered`: see [`storage`]).
pub const LOG_STRATEGY: shardlog_storage::StrategyKind = shardlog_storage::StrategyKind::Buffered;
/// Proposals waiting for the driver; further ones fail at once.
pub const PROPOSALS_QUEUED_MAX: usize = 1024;

/// Settings of one quorum member.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// This broker's id.
    pub node_id: BrokerId,
    /// Every voter's broker id and controller address. Empty: a quorum of this broker alone
    /// (no transport). A broker not listed is an observer.
    pub voters: Vec<(BrokerId, SocketAddr)>,
    /// Where to accept the other voters' and the observers' connections (default: this
    /// broker's address in `voters`; unused on an observer).
    pub listen: Option<SocketAddr>,
    /// The raft log lives in `<data_dir>/metadata/`.
    pub data_dir: PathBuf,
    /// One raft tick.
    pub tick_interval: Duration,
    /// Ticks without a leader before a follower campaigns (raft randomises up to twice this).
    pub election_ticks: usize,
    /// Ticks between the leader's raft heartbeats.
    pub heartbeat_ticks: usize,
    /// How often this broker tells every voter it is alive.
    pub heartbeat_interval: Duration,
    /// A registered broker not heard from for this long is fenced by the leader.
    pub broker_session_timeout: Duration,
    /// How long `propose` waits for its command to be applied.
    pub propose_timeout: Duration,
    /// Applied entries after the last snapshot that trigger a new snapshot (log compaction).
    pub snapshot_every_entries: u64,
}

impl QuorumConfig {
    /// Defaults: 100 ms ticks, elections after 1-2 s, heartbeats every 2 s, sessions of 9 s
    /// (Kafka's `broker.heartbeat.interval.ms` and `broker.session.timeout.ms`).
    pub fn new(node_id: BrokerId, data_dir: PathBuf) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters: Vec::new(),
            listen: None,
            data_dir,
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            heartbeat_interval: Duration::from_secs(2),
            broker_session_timeout: Duration::from_secs(9),
            propose_timeout: Duration::from_secs(10),
            snapshot_every_entries: 1024,
        }
    }

    /// True for a broker that is not a voter: it follows the quorum through a voter.
    pub fn is_observer(&self) -> bool {
        !self.voters.is_empty() && !self.voters.iter().any(|(id, _)| *id == self.node_id)
    }

    /// The voters' raft ids (this broker alone when `voters` is empty).
    fn voter_raft_ids(&self) -> Vec<u64> {
        if self.voters.is_empty() {
            return vec![raft_id(self.node_id)];
        }
        self.voters.iter().map(|(id, _)| raft_id(*id)).collect()
    }

    fn problem(&self) -> Option<String> {
        if self.node_id < 0 {
            return Some(format!("node id {} is negative", self.node_id));
        }
        let mut ids: Vec<BrokerId> = self.voters.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.voters.len() {
            return Some("a voter is listed twice".to_string());
        }
        if ids.iter().any(|id| *id < 0) {
            return Some("voter ids must be non-negative".to_string());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Some("election ticks must exceed heartbeat ticks (> 0)".to_string());
        }
        if self.tick_interval.is_zero() || self.heartbeat_interval.is_zero() {
            return Some("tick and heartbeat intervals must be positive".to_string());
        }
        if self.broker_session_timeout <= self.heartbeat_interval {
            // Also keeps voter connections alive: they are closed after a session timeout
            // without a frame, and heartbeats cross every one of them.
            return Some("the broker session timeout must exceed the heartbeat interval".into());
        }
        if self.snapshot_every_entries == 0 {
            return Some("snapshot_every_entries must be positive".to_string());
        }
        None
    }
}

/// Why the quorum cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("invalid quorum configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] QuorumStorageError),
    #[error("the persisted cluster state is unreadable: {0}")]
    State(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("cannot listen for the quorum on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("run called twice")]
    AlreadyRunning,
    #[error(transparent)]
    Node(#[from] node::NodeError),
}

/// Why a proposal did not change the state. Each maps to a Kafka error code. Serialisable:
/// a voter answers an observer's proposal with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// Committed and applied, but the state refused it.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// No leader was known for the whole timeout.
    #[error("no quorum leader")]
    NoController,
    /// Handed to raft but not applied within the timeout (it may still be, later).
    #[error("not applied within the timeout")]
    Timeout,
    #[error("too many proposals waiting")]
    Busy,
    #[error("the proposal is larger than {} bytes", proposal::PROPOSAL_BYTES_MAX)]
    TooLarge,
    #[error("the quorum stopped")]
    Stopped,
}

/// A proposal waiting for the driver.
struct Pending {
    id: Uuid,
    data: Vec<u8>,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), ProposeError>>,
}

/// What other threads hand the driver. Every queue is bounded.
#[derive(Default)]
struct Inbox {
    messages: VecDeque<Message>,
    heartbeats: Vec<BrokerId>,
    proposals: VecDeque<Pending>,
}

/// What `open` recovered, until `run` takes it (and opens the log file on its core).
struct Recovered {
    loaded: storage::Loaded,
    applied: u64,
    state: ClusterState,
}

/// A member of the metadata quorum. `Send + Sync`: any core or thread reads the state,
/// waits for changes and proposes; one task ([`run`](Quorum::run)) drives raft.
pub struct Quorum {
    config: QuorumConfig,
    state: ArcSwap<ClusterState>,
    /// The raft index of the last applied entry: the state's version.
    applied: AtomicU64,
    changed: Event,
    /// The leader's broker id, or -1.
    leader: AtomicI64,
    inbox: Mutex<Inbox>,
    inbox_changed: Event,
    running: AtomicBool,
    /// What a voter's `open` recovered, until `run` takes it; `None` on an observer.
    recovered: Mutex<Option<Recovered>>,
    stopping: AtomicBool,
}

impl Quorum {
    /// Loads the persisted raft log (creating it on first start) and the applied state.
    pub fn open(config: QuorumConfig) -> Result<Arc<Quorum>, QuorumError> {
        if let Some(problem) = config.problem() {
            return Err(QuorumError::Config(problem));
        }
        if config.is_observer() {
            // Nothing on disk: the state arrives from a voter (version 0 until then).
            tracing::info!(
                node_id = config.node_id,
                "metadata quorum: joining as an observer"
            );
            return Ok(Arc::new(Quorum::new(
                config,
                ClusterState::default(),
                0,
                None,
            )));
        }
        let disk = shardlog_storage::Storage::new(LOG_STRATEGY);
        let opened = QuorumStorage::load(
            &disk,
            &config.data_dir.join("metadata"),
            &config.voter_raft_ids(),
        )?;
        if opened.cut_bytes > 0 {
            tracing::warn!(
                cut_bytes = opened.cut_bytes,
                "metadata log had a torn tail (a crash during a write); cut"
            );
        }
        let (state, applied) = recover_state(&opened.storage)?;
        tracing::info!(
            node_id = config.node_id,
            applied,
            brokers = state.brokers.len(),
            topics = state.topics.len(),
            "metadata quorum opened"
        );
        let recovered = Recovered {
            loaded: opened,
            applied,
            state: state.clone(),
        };
        Ok(Arc::new(Quorum::new(
            config,
            state,
            applied,
            Some(recovered),
        )))
    }

    fn new(
        config: QuorumConfig,
        state: ClusterState,
        applied: u64,
        recovered: Option<Recovered>,
    ) -> Quorum {
        Quorum {
            config,
            state: ArcSwap::from_pointee(state),
            applied: AtomicU64::new(applied),
            changed: Event::new(),
            leader: AtomicI64::new(-1),
            inbox: Mutex::new(Inbox::default()),
            inbox_changed: Event::new(),
            running: AtomicBool::new(false),
            recovered: Mutex::new(recovered),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// This broker's id.
    pub fn node_id(&self) -> BrokerId {
        self.config.node_id
    }

    /// The applied cluster state, without locking.
    pub fn state(&self) -> Arc<ClusterState> {
        self.state.load_full()
    }

    /// The state's version: the raft index of the last applied entry. Grows with every change.
    pub fn version(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Resolves once the version is above `seen` (at once if it already is), with the new
    /// version. Any core or thread may wait.
    pub async fn changed_since(&self, seen: u64) -> u64 {
        loop {
            let version = self.version();
            if version > seen || self.is_stopping() {
                return version;
            }
            let listener = self.changed.listen();
            let version = self.version();
            if version > seen || self.is_stopping() {
                return version;
            }
            listener.await;
        }
    }

    /// The raft leader, which acts as the controller.
    pub fn controller_id(&self) -> Option<BrokerId> {
        let leader = self.leader.load(Ordering::Acquire);
        (leader >= 0).then_some(leader as BrokerId)
    }

    /// Commits `command` through raft and resolves once it is applied here, with the state's
    /// refusal if it refused it. Callable from any core or thread (it only queues for the
    /// driver and waits on a channel); the driver enforces the timeout.
    pub async fn propose(&self, command: Command) -> Result<(), ProposeError> {
        let id = Uuid::new_v4();
        let data = proposal::Proposal { id, command }.encode();
        if data.len() > proposal::PROPOSAL_BYTES_MAX {
            return Err(ProposeError::TooLarge);
        }
        if self.is_stopping() {
            return Err(ProposeError::Stopped);
        }
        let (reply, answer) = oneshot::channel();
        {
            let mut inbox = self.lock_inbox();
            if inbox.proposals.len() >= PROPOSALS_QUEUED_MAX {
                return Err(ProposeError::Busy);
            }
            inbox.proposals.push_back(Pending {
                id,
                data,
                deadline: Instant::now() + self.config.propose_timeout,
                reply,
            });
        }
        self.inbox_changed.notify(1);
        answer.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Asks the driver to stop; `run` returns soon after, failing waiting proposals.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.inbox_changed.notify(usize::MAX);
        self.changed.notify(usize::MAX);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Drives raft until [`stop`](Quorum::stop): must run on a glommio executor (the broker's
    /// core 0). Returns an error if the log cannot be written or the listener cannot bind;
    /// the broker must then stop, since its metadata can no longer advance safely.
    pub async fn run(self: Arc<Self>) -> Result<(), QuorumError> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(QuorumError::AlreadyRunning);
        }
        let result = if self.config.is_observer() {
            observer::run(Arc::clone(&self)).await
        } else {
            let recovered = self
                .recovered
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take()
                .ok_or(QuorumError::AlreadyRunning)?;
            driver::Driver::start(Arc::clone(&self), recovered)
                .await?
                .run()
                .await
        };
        self.stop();
        self.leader.store(-1, Ordering::Release);
        result
    }

    fn lock_inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A raft message from the transport (dropped if the inbox is full: raft resends).
    fn deliver_message(&self, message: Message) {
        {
            let mut inbox = self.lock_inbox();
            if inbox.messages.len() >= INBOX_MESSAGES_MAX {
                return;
            }
            inbox.messages.push_back(message);
        }
        self.inbox_changed.notify(1);
    }

    /// A broker heartbeat from the transport.
    fn deliver_heartbeat(&self, broker: BrokerId) {
        {
            let mut inbox = self.lock_inbox();
            if inbox.heartbeats.len() >= controller::BROKERS_TRACKED_MAX
                || inbox.heartbeats.contains(&broker)
            {
                return;
            }
            inbox.heartbeats.push(broker);
        }
        self.inbox_changed.notify(1);
    }

    fn publish(&self, state: ClusterState, applied: u64) {
        self.state.store(Arc::new(state));
        self.applied.store(applied, Ordering::Release);
        self.changed.notify(usize::MAX);
    }

    /// Records the controller (-1: none known); returns the previous value.
    fn set_controller(&self, controller: i64) -> i64 {
        self.leader.swap(controller, Ordering::AcqRel)
    }
}

/// The state at the persisted commit index (see [`node::QuorumNode::recover_state`]).
fn recover_state(storage: &QuorumStorage) -> Result<(ClusterState, u64), QuorumError> {
    node::QuorumNode::recover_state(storage).map_err(|error| QuorumError::State(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_ids_are_broker_ids_plus_one() {
        assert_eq!(raft_id(0), 1);
        assert_eq!(broker_id(1), Some(0));
        assert_eq!(broker_id(0), None);
        assert_eq!(broker_id(raft_id(41)), Some(41));
    }

    #[test]
    fn configurations_are_checked() {
        let mut config = QuorumConfig::new(1, PathBuf::from("x"));
        assert!(config.problem().is_none(), "single-node default");
        let address: SocketAddr = "127.0.0.1:1".parse().expect("address");
        config.voters = vec![(0, address), (2, address)];
        assert!(config.problem().is_none(), "an observer");
        assert!(config.is_observer());
        config.voters = vec![(1, address), (1, address)];
        assert!(config.problem().is_some(), "listed twice");
        config.voters = vec![(0, address), (1, address), (2, address)];
        assert!(config.problem().is_none());
    }
}
