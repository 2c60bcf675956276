//! One core's share of the broker: the partitions it owns, opening (and recovering) them on
//! first use, deleting them, retention and a clean close.
//!
//! What is done on a partition is in [`partition`](super::partition); how work reaches the
//! core that owns a partition is in [`routing`](super::routing). Nothing on the produce or
//! fetch path takes a lock: the owner core's state is plain `RefCell`s, and what crosses cores
//! (`Bytes`, file descriptors, `Arc<Topic>`) is immutable.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use event_listener::Event;
use glommio::channels::channel_mesh::Senders;

use super::group::Coordinator;
use super::metadata::Topic;
use super::read_ahead::{PartitionKey, ReadAhead};
use super::routing::CoreTask;
use super::share::ShareCore;
use super::shared::Shared;
use super::tail_cache::TailCache;
use crate::cluster::epochs::LeaderEpochCache;
use crate::cluster::replica::ReplicaState;
use crate::error::LogError;
use crate::fifo_lock::FifoLock;
use crate::log::{LogConfig, PartitionLog};
use crate::storage::{Storage, StrategyKind};
use shardlog_protocol::buffers::{BufferPool, RequestBudget};

pub(super) use super::partition::rebuild_producers;
pub use super::partition::{Partition, PartitionError};
pub use super::routing::partition_owner;
pub use shardlog_protocol::error_code;

/// Least time between two attempts to reopen a partition whose log failed a write or sync.
const REOPEN_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// One core's state. Lives in an `Rc` on its executor.
pub struct Shard {
    pub core: usize,
    pub shared: Arc<Shared>,
    storage: Storage,
    pub(super) partitions: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
    /// Turns to open a partition not open yet, one first-come lock per partition.
    opening: RefCell<HashMap<PartitionKey, Rc<FifoLock>>>,
    pub(super) peers: Senders<CoreTask>,
    /// Large request frames are read into these buffers, which are used again.
    pub(super) request_buffers: Arc<BufferPool>,
    /// Bytes of requests this core may hold unanswered (`request_memory_bytes`).
    pub(super) request_budget: RequestBudget,
    /// Catch-up reads of O_DIRECT-written data, a window ahead of each reader.
    pub(super) read_ahead: ReadAhead,
    /// Turns to send to each core. glommio's channel wakes senders waiting for room in no
    /// set order; taking turns keeps this core's messages to another in the order sent.
    pub(super) send_turns: Vec<FifoLock>,
    /// The consumer groups of the `__consumer_offsets` partitions this core owns.
    pub groups: Coordinator,
    /// The share groups, share partitions and share state this core owns.
    pub shares: ShareCore,
}

impl Shard {
    pub fn new(core: usize, shared: Arc<Shared>, peers: Senders<CoreTask>) -> Shard {
        let shared_cores = shared.cores;
        let request_memory_bytes = shared.config.request_memory_bytes;
        let read_ahead = ReadAhead::new(
            shared.config.read_ahead_bytes,
            shared.config.read_memory_bytes,
        );
        Shard {
            groups: Coordinator::new(&shared.config),
            shares: ShareCore::new(&shared.config),
            core,
            storage: Storage::new(shared.config.strategy_kind()),
            shared,
            partitions: RefCell::new(HashMap::new()),
            opening: RefCell::new(HashMap::new()),
            send_turns: (0..shared_cores).map(|_| FifoLock::new()).collect(),
            request_buffers: BufferPool::new(request_memory_bytes as usize),
            request_budget: RequestBudget::new(request_memory_bytes),
            read_ahead,
            peers,
        }
    }
    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.shared
            .config
            .data_dir
            .join(format!("{topic}-{partition}"))
    }
    fn log_config(&self, topic: &Topic) -> LogConfig {
        let config = &self.shared.config;
        LogConfig {
            segment_bytes: topic.config.segment_bytes,
            retention_bytes: topic.config.retention_bytes,
            retention_age_max: topic
                .config
                .retention_ms
                .map(std::time::Duration::from_millis),
            durability: config.durability_policy(),
            max_batch_bytes: config.max_batch_bytes,
            preallocate_step_bytes: config.segment_fallocation_step_bytes,
            ..LogConfig::default()
        }
    }
    /// The partition's open state, opening (and recovering) its log on first use.
    ///
    /// Requests that arrive while the partition opens wait their turn in arrival order (a
    /// first-come lock per partition) and then find it open. The order matters: pipelined
    /// produces of one idempotent producer must reach the log in the order they came, or
    /// their sequence numbers arrive out of order.
    pub(crate) async fn partition(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
    ) -> Result<Rc<Partition>, PartitionError> {
        if partition < 0 || partition >= topic.partitions {
            return Err(PartitionError::Unknown {
                topic: topic.name.clone(),
                partition,
            });
        }
        let key = (topic.name.clone(), partition);
        // While anyone waits for a turn, the partition is reached only through the turns,
        // even once it is open: a newcomer taking the open partition directly would pass
        // those still queued.
        let queued = self.opening.borrow().get(&key).cloned();
        if queued.is_none() {
            if let Some(open) = self.partitions.borrow().get(&key) {
                // A failed log is opened again under the turns, as a closed one is.
                if !open.log.is_failed() {
                    return Ok(Rc::clone(open));
                }
            }
        }
        let turns = queued.unwrap_or_else(|| {
            let turns = Rc::new(FifoLock::new());
            self.opening
                .borrow_mut()
                .insert(key.clone(), Rc::clone(&turns));
            turns
        });
        let turn = turns.lock().await.map_err(|_| PartitionError::Closed {
            topic: topic.name.clone(),
            partition,
        })?;
        let found = self.partitions.borrow().get(&key).cloned();
        let outcome = match found {
            Some(open) if open.log.is_failed() => {
                self.reopen_failed(&key, open, topic, partition).await
            }
            Some(open) => Ok(open),
            None => match self.open_partition(topic, partition).await {
                Ok(open) => {
                    self.partitions
                        .borrow_mut()
                        .insert(key.clone(), Rc::clone(&open));
                    self.adopt_current_state(&open, topic, partition);
                    Ok(open)
                }
                Err(error) => Err(error),
            },
        };
        // The last one through (the map's reference and ours are all that is left) closes
        // the queue; later callers take the open partition directly.
        if Rc::strong_count(&turns) == 2 {
            self.opening.borrow_mut().remove(&key);
        }
        drop(turn);
        outcome
    }
    /// A partition whose log failed a write or an fdatasync (ENOSPC, EIO) takes no produce
    /// until its log is opened again through recovery (`PartitionLog::reopen`: what lies past
    /// the failure is unknown, and recovery cuts the log at the first batch that is not whole
    /// and valid). Its producers' sequences, leader epochs and replica state are then rebuilt
    /// from what the log holds, as at start, and the new partition replaces the old one.
    ///
    /// While the device still refuses, the failed partition stays: it serves reads up to the
    /// last byte known written, and produces get KAFKA_STORAGE_ERROR. Attempts are at least
    /// `REOPEN_RETRY_INTERVAL` apart, since each walks the active segment.
    async fn reopen_failed(
        self: &Rc<Self>,
        key: &PartitionKey,
        failed: Rc<Partition>,
        topic: &Arc<Topic>,
        partition: i32,
    ) -> Result<Rc<Partition>, PartitionError> {
        if failed
            .reopen_attempted
            .get()
            .is_some_and(|attempted| attempted.elapsed() < REOPEN_RETRY_INTERVAL)
        {
            return Ok(failed);
        }
        failed.reopen_attempted.set(Some(std::time::Instant::now()));
        let log = match failed.log.reopen().await {
            Ok(log) => log,
            Err(error) => {
                tracing::warn!(topic = %topic.name, partition, %error, "cannot reopen a failed partition log yet");
                return Ok(failed);
            }
        };
        // The old log is closed from here on: whatever follows, the old partition goes.
        self.partitions.borrow_mut().remove(key);
        failed.role_generation.set(failed.role_generation.get() + 1);
        failed.appended.notify(usize::MAX);
        let dir = self.partition_dir(&topic.name, partition);
        let reopened = self.partition_over(topic, partition, &dir, log).await?;
        tracing::info!(
            topic = %topic.name,
            partition,
            log_end_offset = reopened.log.log_end_offset(),
            report = ?reopened.log.recovery_report(),
            "reopened a failed partition log"
        );
        self.partitions
            .borrow_mut()
            .insert(key.clone(), Rc::clone(&reopened));
        self.adopt_current_state(&reopened, topic, partition);
        Ok(reopened)
    }
    async fn open_partition(
        &self,
        topic: &Topic,
        partition: i32,
    ) -> Result<Rc<Partition>, PartitionError> {
        let dir = self.partition_dir(&topic.name, partition);
        let log = PartitionLog::open(self.storage.clone(), &dir, self.log_config(topic))
            .await
            .map_err(|error| {
                tracing::error!(topic = %topic.name, partition, %error, "cannot open partition");
                log_failed(topic, partition, error)
            })?;
        self.partition_over(topic, partition, &dir, log).await
    }
    /// A partition's state over its freshly opened (recovered) log.
    async fn partition_over(
        &self,
        topic: &Topic,
        partition: i32,
        dir: &std::path::Path,
        log: PartitionLog,
    ) -> Result<Rc<Partition>, PartitionError> {
        let report = log.recovery_report();
        if !report.truncated.is_empty() || report.segments_dropped > 0 {
            tracing::warn!(topic = %topic.name, partition, ?report, "recovery cut the log");
        }
        let producers = rebuild_producers(&log).await.map_err(|error| {
            tracing::error!(topic = %topic.name, partition, %error, "cannot rebuild producer state");
            log_failed(topic, partition, error)
        })?;
        let mut epochs = LeaderEpochCache::load(self.storage.clone(), dir)
            .await
            .map_err(|error| {
                tracing::error!(topic = %topic.name, partition, %error, "cannot read leader epochs");
                log_failed(topic, partition, error)
            })?;
        // Recovery may have cut the log below epochs the checkpoint still lists.
        if let Some(checkpoint) = epochs.stage_truncate_from_end(log.log_end_offset()) {
            if let Err(source) = checkpoint.write().await {
                tracing::error!(topic = %topic.name, partition, %source, "cannot trim leader epochs");
                return Err(PartitionError::Epochs {
                    topic: topic.name.clone(),
                    partition,
                    source,
                });
            }
        }
        let direct_io = matches!(
            self.storage.kind(),
            StrategyKind::Direct | StrategyKind::Uring
        );
        // The watermark is not checkpointed: it starts at the log start and catches up as
        // soon as the ISR fetches (at once when this broker is the whole ISR).
        let high_watermark = log.log_start_offset();
        Ok(Rc::new(Partition {
            producers: RefCell::new(producers),
            tail: direct_io
                .then(|| RefCell::new(TailCache::new(self.shared.config.tail_cache_bytes))),
            appended: Arc::new(Event::new()),
            end_offset: Arc::new(AtomicI64::new(log.log_end_offset())),
            replica: RefCell::new(ReplicaState::new(
                self.shared.config.node_id,
                high_watermark,
            )),
            high_watermark: Arc::new(AtomicI64::new(high_watermark)),
            epochs: RefCell::new(epochs),
            role_generation: Cell::new(0),
            isr_proposal_in_flight: Cell::new(false),
            reopen_attempted: Cell::new(None),
            log,
        }))
    }
    pub(super) async fn delete_topic_here(&self, topic: &Topic) {
        for partition in 0..topic.partitions {
            if self.owner(&topic.name, partition) == self.core {
                self.delete_partition_here(&topic.name, partition).await;
            }
        }
    }
    /// Closes a partition of a deleted topic (stopping its follower task) and deletes its
    /// directory.
    pub(super) async fn delete_partition_here(&self, topic: &str, partition: i32) {
        let removed = self
            .partitions
            .borrow_mut()
            .remove(&(topic.to_string(), partition));
        self.read_ahead.forget(&(topic.to_string(), partition));
        if let Some(open) = removed {
            // Stops a follower's fetch task.
            open.role_generation.set(open.role_generation.get() + 1);
            if let Err(error) = open.log.close().await {
                tracing::warn!(topic, partition, %error, "closing a deleted partition");
            }
        }
        // Unlinking a partition's segments frees all their extents: off the executor's thread.
        let dir = self.partition_dir(topic, partition);
        if let Err(error) = self.storage.remove_dir_all_off_thread(&dir).await {
            tracing::warn!(dir = %dir.display(), %error, "cannot delete a partition directory");
        }
    }
    /// Opens every partition this core owns that has data on disk, so recovery happens at
    /// start rather than on the first request.
    pub async fn open_existing(self: &Rc<Self>) {
        let snapshot = self.shared.metadata.snapshot();
        for topic in snapshot.topics.values() {
            for partition in 0..topic.partitions {
                let owned = self.owner(&topic.name, partition) == self.core;
                if owned && self.partition_dir(&topic.name, partition).exists() {
                    let _ = self.partition(topic, partition).await;
                }
            }
        }
    }
    /// Deletes old segments beyond every owned partition's retention.
    pub async fn enforce_retention(&self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        let open: Vec<(PartitionKey, Rc<Partition>)> = self
            .partitions
            .borrow()
            .iter()
            .map(|(key, partition)| (key.clone(), Rc::clone(partition)))
            .collect();
        for ((topic, partition), open) in open {
            match open.log.enforce_retention(now_ms).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(%topic, partition, deleted, "retention deleted segments")
                }
                Err(error) => tracing::warn!(%topic, partition, %error, "retention failed"),
            }
        }
    }
    /// Closes every open log cleanly (flush, seal, clean-shutdown marker).
    pub async fn close_all(&self) {
        let reads = self.read_ahead.stats();
        if reads.windows > 0 || reads.over_budget > 0 {
            tracing::info!(
                core = self.core,
                windows = reads.windows,
                window_bytes = reads.window_bytes,
                windows_ahead = reads.windows_ahead,
                over_budget = reads.over_budget,
                "catch-up reads"
            );
        }
        let open: Vec<(PartitionKey, Rc<Partition>)> =
            self.partitions.borrow_mut().drain().collect();
        for ((topic, partition), open) in open {
            if let Err(error) = open.log.close().await {
                tracing::error!(%topic, partition, %error, "unclean close");
            }
        }
    }
}

/// The partition's log could not be opened (or read while opening it).
fn log_failed(topic: &Topic, partition: i32, source: LogError) -> PartitionError {
    PartitionError::Log {
        topic: topic.name.clone(),
        partition,
        source: Box::new(source),
    }
}
