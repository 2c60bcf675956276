//! A voter of the metadata quorum as the broker runs it, for a simulation: the shipped
//! `QuorumNode` (raft, the applied cluster state, the controller duties) and its raft log
//! (`LogFile`) on a simulated disk, driven the way `quorum/driver.rs` drives them. The
//! simulation owns the network: [`SimVoter::drive`] returns the raft messages to send, in
//! the order the driver would send them, and the outcomes of the proposals it applied.
//!
//! Contract kept from the driver: the messages raft wants sent only once the log is durable
//! (`send_persisted`) are returned only if the write succeeded; a failed write stops the
//! voter (as it stops a real broker), and it comes back with [`SimVoter::restart`] from what
//! its disk kept.

use std::path::{Path, PathBuf};
use std::time::Instant;

use shardlog_cluster::quorum::node::{Message, NodeSettings, QuorumNode};
use shardlog_cluster::quorum::raft_id;
use shardlog_cluster::quorum::storage::{LogFile, QuorumStorage};
use shardlog_cluster::state::{BrokerId, ClusterState, Refusal};
use shardlog_storage::storage::SimDisk;
use shardlog_storage::Storage;
use uuid::Uuid;

/// Where a voter keeps its raft log on its disk (as the broker: `<data dir>/metadata`).
const LOG_DIR: &str = "/sim/metadata";

/// What one call of [`SimVoter::drive`] produced.
#[derive(Debug, Default)]
pub struct Driven {
    /// Raft messages for other voters, in sending order.
    pub messages: Vec<Message>,
    /// Proposals applied, with their outcomes (every voter applies every entry, so every
    /// voter reports every outcome; only the one that proposed is waiting for it).
    pub outcomes: Vec<(Uuid, Result<(), Refusal>)>,
    /// `Some` when the voter stopped because its log could not be written: why.
    pub failed: Option<String>,
}

/// One voter: its identity, its disk (which outlives the process), and the running node.
pub struct SimVoter {
    pub id: BrokerId,
    pub disk: SimDisk,
    settings: NodeSettings,
    /// Every voter's raft id.
    voters: Vec<u64>,
    running: Option<(QuorumNode, LogFile)>,
}

impl SimVoter {
    /// Starts voter `id` of `voters` from whatever `disk` holds under its log directory.
    pub async fn start(settings: NodeSettings, voters: &[BrokerId], disk: SimDisk) -> SimVoter {
        let mut voter = SimVoter {
            id: settings.node_id,
            disk,
            settings,
            voters: voters.iter().map(|&id| raft_id(id)).collect(),
            running: None,
        };
        voter.restart().await;
        voter
    }

    /// A process start on the same disk: loads the raft log, rebuilds the applied state.
    pub async fn restart(&mut self) {
        let storage = Storage::Sim(self.disk.clone());
        let dir = PathBuf::from(LOG_DIR);
        let loaded = QuorumStorage::load(&storage, &dir, &self.voters).expect("load the raft log");
        let log = LogFile::open(storage, Path::new(&dir), &loaded)
            .await
            .expect("open the raft log");
        let (state, applied) = QuorumNode::recover_state(&loaded.storage).expect("recover");
        let node = QuorumNode::new(&self.settings, loaded.storage, state, applied).expect("node");
        self.running = Some((node, log));
    }

    /// The process stops; the disk is the caller's (crash it to lose what was not synced).
    pub fn stop(&mut self) {
        self.running = None;
    }

    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    pub fn node(&self) -> Option<&QuorumNode> {
        self.running.as_ref().map(|(node, _)| node)
    }

    pub fn node_mut(&mut self) -> Option<&mut QuorumNode> {
        self.running.as_mut().map(|(node, _)| node)
    }

    /// Carries out every pending `Ready` as the driver does: the first half's messages,
    /// its writes made durable, then the second half's messages and the commit index.
    /// `on_applied` sees the state after each `Ready` that applied entries.
    pub async fn drive(&mut self, mut on_applied: impl FnMut(u64, &ClusterState)) -> Driven {
        let mut driven = Driven::default();
        loop {
            let Some((node, log)) = &mut self.running else {
                return driven;
            };
            if !node.has_ready() {
                break;
            }
            let writes = node.begin_ready().expect("begin_ready");
            driven.messages.extend(writes.send_now);
            let mut written = Ok(());
            if let Some(image) = writes.rewrite {
                written = log.rewrite(image).await;
            }
            if written.is_ok() {
                written = log.append(&writes.records).await;
            }
            if let Err(error) = written {
                return self.failed(driven, error.to_string());
            }
            let done = node.finish_ready().expect("finish_ready");
            driven.messages.extend(done.send_persisted);
            if done.applied_any {
                on_applied(node.applied(), node.state());
            }
            driven.outcomes.extend(done.outcomes);
            if let Err(error) = log.append(&done.commit_records).await {
                return self.failed(driven, error.to_string());
            }
            driven.messages.extend(done.send_after);
        }
        if let Some((node, log)) = &mut self.running {
            if let Some(image) = node.compact_if_due().expect("compact") {
                if let Err(error) = log.rewrite(image).await {
                    return self.failed(driven, error.to_string());
                }
            }
        }
        driven
    }

    fn failed(&mut self, mut driven: Driven, why: String) -> Driven {
        self.running = None;
        driven.failed = Some(why);
        driven
    }

    /// One raft tick; also what the driver does on every turn (follow the role).
    pub fn tick(&mut self, now: Instant) {
        if let Some(node) = self.node_mut() {
            node.tick(now);
        }
    }

    /// A raft message arrived (ignored while the voter is down).
    pub fn step(&mut self, message: Message, now: Instant) {
        if let Some(node) = self.node_mut() {
            let _ = node.step(message);
            node.follow_role(now);
        }
    }
}
