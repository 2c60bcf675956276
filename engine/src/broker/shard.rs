//! One core's share of the broker: the partitions it owns, and how other cores reach them.
//!
//! Every partition is owned by exactly one core, chosen by hashing (topic, partition); only
//! that core opens its log. A request that lands on another core is forwarded over glommio's
//! cross-core channel mesh and answered through a one-shot channel. Nothing on the produce or
//! fetch path takes a lock: the owner core's state is plain `RefCell`s, and what crosses cores
//! (`Bytes`, file descriptors, `Arc<Topic>`) is immutable.

use crate::broker::api::codes::KafkaCode;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use event_listener::Event;
use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use super::chunks::{Chunk, FileChunk, Records};
use super::group::{self, Coordinator, GroupAnswer, GroupCall};
use super::metadata::Topic;
use super::producer_state::{ProducerStates, Verdict};
use super::read_ahead::{PartitionKey, ReadAhead};
use super::replication::{now_ms, Reader};
use super::server::Shared;
use super::share::{self, ShareAnswer, ShareCall, ShareCore};
use super::tail_cache::TailCache;
use crate::batch;
use crate::cluster::epochs::LeaderEpochCache;
use crate::cluster::replica::{ReplicaState, Role};
use crate::error::LogError;
use crate::fifo_lock::FifoLock;
use crate::log::{LogConfig, PartitionLog};
use crate::storage::{Storage, StrategyKind};
use shardlog_protocol::buffers::{BufferPool, RequestBudget};

pub use shardlog_protocol::error_code;

/// The core that owns a partition: FNV-1a over the topic name and partition, modulo cores.
pub fn partition_owner(topic: &str, partition: i32, cores: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.bytes().chain(partition.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % cores.max(1) as u64) as usize
}

/// The outcome of producing to one partition.
#[derive(Debug, Clone, Copy)]
pub struct ProduceOutcome {
    pub error_code: i16,
    pub base_offset: i64,
    pub log_start_offset: i64,
}

impl ProduceOutcome {
    /// A refusal with this Kafka error code and no offsets.
    pub fn failed(error_code: i16) -> ProduceOutcome {
        ProduceOutcome {
            error_code,
            base_offset: -1,
            log_start_offset: -1,
        }
    }
}

/// The outcome of fetching from one partition.
#[derive(Debug, Clone)]
pub struct FetchOutcome {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Records,
    /// Notified when the partition receives new batches (for long polling).
    pub appended: Option<Arc<Event>>,
    /// The partition's log end offset, kept current by its owner: a waiter registers on
    /// `appended`, then re-reads this, so a batch appended in between is not missed.
    pub end_offset: Option<Arc<AtomicI64>>,
}

impl FetchOutcome {
    /// A refusal with this Kafka error code: no offsets, no records, nothing to wait on.
    pub fn failed(error_code: i16) -> FetchOutcome {
        FetchOutcome {
            error_code,
            high_watermark: -1,
            log_start_offset: -1,
            records: Records::default(),
            appended: None,
            end_offset: None,
        }
    }
}

/// The outcome of ListOffsets for one partition.
#[derive(Debug, Clone, Copy)]
pub struct OffsetOutcome {
    pub error_code: i16,
    pub offset: i64,
    pub timestamp_ms: i64,
}

impl OffsetOutcome {
    /// A refusal with this Kafka error code and no offset.
    pub fn failed(error_code: i16) -> OffsetOutcome {
        OffsetOutcome {
            error_code,
            offset: -1,
            timestamp_ms: -1,
        }
    }
}

/// One partition's records (one or more batches) from a produce request, and the size of the
/// request they arrived in: a slice kept in the tail cache keeps that whole request buffer
/// alive, so the tail cache copies a partition's batches when they are under half of it.
pub struct PartitionRecords {
    pub bytes: Bytes,
    pub request_bytes: usize,
}

impl PartitionRecords {
    /// Whether cached batches may share the request's buffer (see the type's doc).
    fn may_share_request_buffer(&self) -> bool {
        self.bytes.len().saturating_mul(2) >= self.request_bytes
    }
}

impl From<Bytes> for PartitionRecords {
    /// Records that are a whole buffer of their own.
    fn from(bytes: Bytes) -> PartitionRecords {
        let request_bytes = bytes.len();
        PartitionRecords {
            bytes,
            request_bytes,
        }
    }
}

/// Work one core asks of the core that owns a partition.
pub enum ShardMessage {
    Produce {
        topic: Arc<Topic>,
        partition: i32,
        records: PartitionRecords,
        acks: i16,
        timeout: std::time::Duration,
        reply: oneshot::Sender<ProduceOutcome>,
    },
    Fetch {
        topic: Arc<Topic>,
        partition: i32,
        offset: i64,
        max_bytes: u64,
        reader: Reader,
        reply: oneshot::Sender<FetchOutcome>,
    },
    EpochEnd {
        topic: Arc<Topic>,
        partition: i32,
        current_leader_epoch: i32,
        epoch: i32,
        reply: oneshot::Sender<EpochEndOutcome>,
    },
    ListOffsets {
        topic: Arc<Topic>,
        partition: i32,
        timestamp: i64,
        reply: oneshot::Sender<OffsetOutcome>,
    },
    DeleteTopic {
        topic: Arc<Topic>,
        reply: oneshot::Sender<()>,
    },
    /// A consumer-group call for this core's group coordinator (see `group`).
    Group {
        call: GroupCall,
        reply: oneshot::Sender<GroupAnswer>,
    },
    /// A share-group call for this core (see `share`).
    Share {
        call: ShareCall,
        reply: oneshot::Sender<ShareAnswer>,
    },
}

/// The answer to OffsetForLeaderEpoch for one partition.
#[derive(Debug, Clone, Copy)]
pub struct EpochEndOutcome {
    pub error_code: i16,
    pub leader_epoch: i32,
    pub end_offset: i64,
}

impl EpochEndOutcome {
    pub fn failed(error_code: i16) -> EpochEndOutcome {
        EpochEndOutcome {
            error_code,
            leader_epoch: -1,
            end_offset: -1,
        }
    }
}

/// One partition, open on its owner core.
pub struct Partition {
    pub log: PartitionLog,
    pub(super) producers: RefCell<ProducerStates>,
    /// Recent batches in memory, for strategies that bypass the page cache.
    pub(super) tail: Option<RefCell<TailCache>>,
    /// Notified when the log end, the high watermark or the role changes: long polls,
    /// acks=all producers and followers' fetches wait on it.
    pub(super) appended: Arc<Event>,
    pub(super) end_offset: Arc<AtomicI64>,
    /// Leader or follower, the ISR and the high watermark (see `cluster::replica`).
    pub(super) replica: RefCell<ReplicaState>,
    /// The high watermark, kept current by the owner, for waiters on other cores.
    pub(super) high_watermark: Arc<AtomicI64>,
    /// Where each leader epoch began in this log.
    pub(super) epochs: RefCell<LeaderEpochCache>,
    /// Raised on every role change; a follower's fetch task stops when it no longer matches.
    pub(super) role_generation: Cell<u64>,
    /// An ISR change of this partition is being proposed (one at a time).
    pub(super) isr_proposal_in_flight: Cell<bool>,
}

impl Partition {
    /// Whether this broker leads the partition now.
    pub(crate) fn is_leader(&self) -> bool {
        self.replica.borrow().role() == Role::Leader
    }

    /// Publishes the log end and the watermark to waiters, and wakes them.
    pub(super) fn publish_progress(&self) {
        self.end_offset
            .store(self.log.log_end_offset(), Ordering::Release);
        self.high_watermark
            .store(self.replica.borrow().high_watermark(), Ordering::Release);
        self.appended.notify(usize::MAX);
    }
}

/// One core's state. Lives in an `Rc` on its executor.
pub struct Shard {
    pub core: usize,
    pub shared: Arc<Shared>,
    storage: Storage,
    pub(super) partitions: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
    /// Turns to open a partition not open yet, one first-come lock per partition.
    opening: RefCell<HashMap<PartitionKey, Rc<FifoLock>>>,
    peers: Senders<ShardMessage>,
    /// Large request frames are read into these buffers, which are used again.
    pub(super) request_buffers: Arc<BufferPool>,
    /// Bytes of requests this core may hold unanswered (`request_memory_bytes`).
    pub(super) request_budget: RequestBudget,
    /// Catch-up reads of O_DIRECT-written data, a window ahead of each reader.
    pub(super) read_ahead: ReadAhead,
    /// Turns to send to each core. glommio's channel wakes senders waiting for room in no
    /// set order; taking turns keeps this core's messages to another in the order sent.
    send_turns: Vec<FifoLock>,
    /// The consumer groups of the `__consumer_offsets` partitions this core owns.
    pub groups: Coordinator,
    /// The share groups, share partitions and share state this core owns.
    pub shares: ShareCore,
}

impl Shard {
    pub fn new(core: usize, shared: Arc<Shared>, peers: Senders<ShardMessage>) -> Shard {
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

    pub(super) fn owner(&self, topic: &str, partition: i32) -> usize {
        partition_owner(topic, partition, self.shared.cores)
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
    ) -> Result<Rc<Partition>, i16> {
        if partition < 0 || partition >= topic.partitions {
            return Err(error_code::UNKNOWN_TOPIC_OR_PARTITION);
        }
        let key = (topic.name.clone(), partition);
        // While anyone waits for a turn, the partition is reached only through the turns,
        // even once it is open: a newcomer taking the open partition directly would pass
        // those still queued.
        let queued = self.opening.borrow().get(&key).cloned();
        if queued.is_none() {
            if let Some(open) = self.partitions.borrow().get(&key) {
                return Ok(Rc::clone(open));
            }
        }
        let turns = queued.unwrap_or_else(|| {
            let turns = Rc::new(FifoLock::new());
            self.opening
                .borrow_mut()
                .insert(key.clone(), Rc::clone(&turns));
            turns
        });
        let turn = turns
            .lock()
            .await
            .map_err(|_| error_code::UNKNOWN_SERVER_ERROR)?;
        let found = self.partitions.borrow().get(&key).cloned();
        let outcome = match found {
            Some(open) => Ok(open),
            None => match self.open_partition(topic, partition).await {
                Ok(open) => {
                    self.partitions
                        .borrow_mut()
                        .insert(key.clone(), Rc::clone(&open));
                    self.adopt_current_state(&open, topic, partition);
                    Ok(open)
                }
                Err(code) => Err(code),
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

    async fn open_partition(&self, topic: &Topic, partition: i32) -> Result<Rc<Partition>, i16> {
        let dir = self.partition_dir(&topic.name, partition);
        let log = PartitionLog::open(self.storage.clone(), &dir, self.log_config(topic))
            .await
            .map_err(|error| {
                tracing::error!(topic = %topic.name, partition, %error, "cannot open partition");
                error.code()
            })?;
        let report = log.recovery_report();
        if !report.truncated.is_empty() || report.segments_dropped > 0 {
            tracing::warn!(topic = %topic.name, partition, ?report, "recovery cut the log");
        }
        let producers = rebuild_producers(&log).await.map_err(|error| {
            tracing::error!(topic = %topic.name, partition, %error, "cannot rebuild producer state");
            error.code()
        })?;
        let mut epochs = LeaderEpochCache::open(self.storage.clone(), &dir).map_err(|error| {
            tracing::error!(topic = %topic.name, partition, %error, "cannot read leader epochs");
            error.code()
        })?;
        // Recovery may have cut the log below epochs the checkpoint still lists.
        if let Err(error) = epochs.truncate_from_end(log.log_end_offset()) {
            tracing::error!(topic = %topic.name, partition, %error, "cannot trim leader epochs");
            return Err(error_code::KAFKA_STORAGE_ERROR);
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
            log,
        }))
    }

    /// Asks `owner` to do `message`, or does it here when this core owns the partition.
    pub(crate) async fn forward<T>(
        self: &Rc<Self>,
        owner: usize,
        message: ShardMessage,
        reply: oneshot::Receiver<T>,
    ) -> Option<T> {
        if owner == self.core {
            Rc::clone(self).handle(message).await;
        } else {
            let _turn = self.send_turns[owner].lock().await.ok()?;
            if self.peers.send_to(owner, message).await.is_err() {
                return None;
            }
        }
        reply.await.ok()
    }

    /// Produces `records` (one or more batches) to a partition, wherever it lives.
    pub async fn produce(
        self: &Rc<Self>,
        topic: Arc<Topic>,
        partition: i32,
        records: PartitionRecords,
        acks: i16,
        timeout: std::time::Duration,
    ) -> ProduceOutcome {
        let owner = self.owner(&topic.name, partition);
        let (reply, answer) = oneshot::channel();
        let message = ShardMessage::Produce {
            topic,
            partition,
            records,
            acks,
            timeout,
            reply,
        };
        self.forward(owner, message, answer)
            .await
            .unwrap_or(ProduceOutcome::failed(error_code::UNKNOWN_SERVER_ERROR))
    }

    /// Fetches from a partition, wherever it lives.
    pub async fn fetch(
        self: &Rc<Self>,
        topic: Arc<Topic>,
        partition: i32,
        offset: i64,
        max_bytes: u64,
        reader: Reader,
    ) -> FetchOutcome {
        let owner = self.owner(&topic.name, partition);
        let (reply, answer) = oneshot::channel();
        let message = ShardMessage::Fetch {
            topic,
            partition,
            offset,
            max_bytes,
            reader,
            reply,
        };
        self.forward(owner, message, answer)
            .await
            .unwrap_or_else(|| FetchOutcome::failed(error_code::UNKNOWN_SERVER_ERROR))
    }

    /// ListOffsets for a partition, wherever it lives.
    pub async fn list_offsets(
        self: &Rc<Self>,
        topic: Arc<Topic>,
        partition: i32,
        timestamp: i64,
    ) -> OffsetOutcome {
        let owner = self.owner(&topic.name, partition);
        let (reply, answer) = oneshot::channel();
        let message = ShardMessage::ListOffsets {
            topic,
            partition,
            timestamp,
            reply,
        };
        self.forward(owner, message, answer)
            .await
            .unwrap_or(OffsetOutcome::failed(error_code::UNKNOWN_SERVER_ERROR))
    }

    /// OffsetForLeaderEpoch for a partition, wherever it lives.
    pub async fn epoch_end(
        self: &Rc<Self>,
        topic: Arc<Topic>,
        partition: i32,
        current_leader_epoch: i32,
        epoch: i32,
    ) -> EpochEndOutcome {
        let owner = self.owner(&topic.name, partition);
        let (reply, answer) = oneshot::channel();
        let message = ShardMessage::EpochEnd {
            topic,
            partition,
            current_leader_epoch,
            epoch,
            reply,
        };
        self.forward(owner, message, answer)
            .await
            .unwrap_or(EpochEndOutcome::failed(error_code::UNKNOWN_SERVER_ERROR))
    }

    /// Closes and deletes a deleted topic's partitions on every core.
    pub async fn delete_topic_everywhere(self: &Rc<Self>, topic: Arc<Topic>) {
        for core in 0..self.shared.cores {
            let (reply, answer) = oneshot::channel();
            let message = ShardMessage::DeleteTopic {
                topic: Arc::clone(&topic),
                reply,
            };
            self.forward(core, message, answer).await;
        }
    }

    /// Does one message for a partition this core owns.
    pub async fn handle(self: Rc<Self>, message: ShardMessage) {
        match message {
            ShardMessage::Produce {
                topic,
                partition,
                records,
                acks,
                timeout,
                reply,
            } => {
                let outcome = self
                    .produce_here(&topic, partition, records, acks, timeout)
                    .await;
                let _ = reply.send(outcome);
            }
            ShardMessage::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
                reader,
                reply,
            } => {
                let outcome = self
                    .fetch_here(&topic, partition, offset, max_bytes, reader)
                    .await;
                let _ = reply.send(outcome);
            }
            ShardMessage::EpochEnd {
                topic,
                partition,
                current_leader_epoch,
                epoch,
                reply,
            } => {
                let outcome = self
                    .epoch_end_here(&topic, partition, current_leader_epoch, epoch)
                    .await;
                let _ = reply.send(outcome);
            }
            ShardMessage::ListOffsets {
                topic,
                partition,
                timestamp,
                reply,
            } => {
                let outcome = self.list_offsets_here(&topic, partition, timestamp).await;
                let _ = reply.send(outcome);
            }
            ShardMessage::DeleteTopic { topic, reply } => {
                self.delete_topic_here(&topic).await;
                let _ = reply.send(());
            }
            ShardMessage::Group { call, reply } => {
                let _ = reply.send(group::coordinator::handle(&self, call).await);
            }
            ShardMessage::Share { call, reply } => {
                let _ = reply.send(share::handle(&self, call).await);
            }
        }
    }

    pub(crate) async fn produce_here(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
        records: PartitionRecords,
        acks: i16,
        timeout: std::time::Duration,
    ) -> ProduceOutcome {
        let open = match self.partition(topic, partition).await {
            Ok(open) => open,
            Err(code) => return ProduceOutcome::failed(code),
        };
        let (leader_epoch, isr_size) = {
            let replica = open.replica.borrow();
            if replica.role() != Role::Leader {
                return ProduceOutcome::failed(error_code::NOT_LEADER_OR_FOLLOWER);
            }
            (replica.leader_epoch(), replica.isr().len())
        };
        let min_insync = self.shared.config.min_insync_replicas;
        if acks == ACKS_ALL && isr_size < min_insync {
            tracing::info!(topic = %topic.name, partition, isr_size, min_insync, "too few in-sync replicas");
            return ProduceOutcome::failed(error_code::NOT_ENOUGH_REPLICAS);
        }
        // Validate every batch before appending any, so a rejected request leaves nothing
        // behind (a client retrying it would otherwise duplicate its valid batches).
        // Each batch's CRC is checked here, once: the log takes the checked batches as they are.
        let found: Result<Vec<_>, _> = batch::valid_batches(
            &records.bytes,
            self.shared.config.max_batch_bytes,
            |range| records.bytes.slice(range),
        )
        .collect();
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                tracing::info!(topic = %topic.name, partition, %error, "rejected produce");
                return ProduceOutcome::failed(LogError::InvalidBatch(error).code());
            }
        };
        let mut first_base_offset = None;
        // The last offset the producer must see replicated before acks=all is answered.
        let mut last_offset = -1;
        for valid in found {
            let header = *valid.header();
            let batch = valid.bytes().clone();
            let verdict = std::cell::Cell::new(Verdict::Append);
            let admit = |stored: &batch::BatchHeader| {
                // Checked again under the append lock: leadership may have moved (and come
                // back at a new epoch) while this request waited.
                let still_leading = {
                    let replica = open.replica.borrow();
                    replica.role() == Role::Leader && replica.leader_epoch() == leader_epoch
                };
                if !still_leading {
                    verdict.set(Verdict::Reject {
                        error_code: error_code::NOT_LEADER_OR_FOLLOWER,
                    });
                    return false;
                }
                if stored.producer_id < 0 {
                    return true;
                }
                let mut producers = open.producers.borrow_mut();
                let decided = producers.check(
                    stored.producer_id,
                    stored.producer_epoch,
                    stored.base_sequence,
                    stored.records_count,
                );
                verdict.set(decided);
                if decided == Verdict::Append {
                    producers.record(
                        stored.producer_id,
                        stored.producer_epoch,
                        stored.base_sequence,
                        stored.records_count,
                        stored.base_offset,
                    );
                }
                decided == Verdict::Append
            };
            match open
                .log
                .append_valid_with(&valid, leader_epoch, admit)
                .await
            {
                Ok(Some(info)) => {
                    first_base_offset.get_or_insert(info.base_offset);
                    last_offset = info.last_offset;
                    if let Some(tail) = &open.tail {
                        let head = batch::patched_head(&batch, info.base_offset, leader_epoch);
                        let rest = batch.slice(batch::PATCHED_HEAD_BYTES..);
                        let rest = if records.may_share_request_buffer() {
                            rest
                        } else {
                            Bytes::copy_from_slice(&rest)
                        };
                        tail.borrow_mut().push(
                            info.base_offset,
                            info.last_offset,
                            Bytes::copy_from_slice(&head),
                            rest,
                        );
                    }
                    open.replica
                        .borrow_mut()
                        .appended(open.log.log_end_offset());
                    open.publish_progress();
                }
                Ok(None) => match verdict.get() {
                    Verdict::Duplicate { base_offset } => {
                        first_base_offset.get_or_insert(base_offset);
                        last_offset = last_offset.max(base_offset);
                    }
                    Verdict::Reject { error_code } => {
                        tracing::info!(
                            topic = %topic.name,
                            partition,
                            error_code,
                            producer_id = header.producer_id,
                            base_sequence = header.base_sequence,
                            "rejected a batch of an idempotent producer"
                        );
                        return ProduceOutcome::failed(error_code);
                    }
                    Verdict::Append => {
                        return ProduceOutcome::failed(error_code::UNKNOWN_SERVER_ERROR)
                    }
                },
                Err(error) => {
                    tracing::warn!(topic = %topic.name, partition, %error, "append failed");
                    return ProduceOutcome::failed(error.code());
                }
            }
        }
        let Some(base_offset) = first_base_offset else {
            return ProduceOutcome::failed(error_code::INVALID_RECORD);
        };
        if acks == ACKS_ALL {
            let replicated = self
                .await_replication(&open, last_offset, leader_epoch, timeout)
                .await;
            if let Err(code) = replicated {
                return ProduceOutcome::failed(code);
            }
        }
        ProduceOutcome {
            error_code: error_code::NONE,
            base_offset,
            log_start_offset: open.log.log_start_offset(),
        }
    }

    /// Waits until the high watermark passes `last_offset` while this broker still leads at
    /// `leader_epoch`: every in-sync replica holds the records. Kafka's answers otherwise:
    /// NOT_LEADER_OR_FOLLOWER after a leader change, REQUEST_TIMED_OUT after `timeout`,
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank below the minimum meanwhile.
    async fn await_replication(
        &self,
        open: &Partition,
        last_offset: i64,
        leader_epoch: i32,
        timeout: std::time::Duration,
    ) -> Result<(), i16> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let listener = open.appended.listen();
            {
                let replica = open.replica.borrow();
                if replica.role() != Role::Leader || replica.leader_epoch() != leader_epoch {
                    return Err(error_code::NOT_LEADER_OR_FOLLOWER);
                }
                if replica.high_watermark() > last_offset {
                    if replica.isr().len() < self.shared.config.min_insync_replicas {
                        return Err(error_code::NOT_ENOUGH_REPLICAS_AFTER_APPEND);
                    }
                    return Ok(());
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline || self.shared.is_shutting_down() {
                return Err(error_code::REQUEST_TIMED_OUT);
            }
            futures_lite::FutureExt::or(
                async {
                    listener.await;
                },
                glommio::timer::sleep(deadline - now),
            )
            .await;
        }
    }

    async fn fetch_here(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
        offset: i64,
        max_bytes: u64,
        reader: Reader,
    ) -> FetchOutcome {
        let open = match self.partition(topic, partition).await {
            Ok(open) => open,
            Err(error_code) => return FetchOutcome::failed(error_code),
        };
        let log_end_offset = open.log.log_end_offset();
        let watermark_moved = {
            let mut replica = open.replica.borrow_mut();
            if let Err(refusal) = replica.check_leader(reader.current_leader_epoch) {
                return FetchOutcome::failed(refusal.code());
            }
            // A follower fetching from `offset` holds everything below it.
            reader.replica.is_some_and(|follower| {
                replica.follower_fetched(follower, offset, log_end_offset, now_ms())
            })
        };
        if watermark_moved {
            open.publish_progress();
        }
        let high_watermark = open.replica.borrow().high_watermark();
        let log_start_offset = open.log.log_start_offset();
        // Followers copy up to the log end; consumers see only what every ISR member has.
        let (upper_offset, waits_on) = match reader.replica {
            Some(_) => (log_end_offset, &open.end_offset),
            None => (high_watermark, &open.high_watermark),
        };
        let mut outcome = FetchOutcome {
            error_code: error_code::NONE,
            high_watermark,
            log_start_offset,
            records: Records::default(),
            appended: Some(Arc::clone(&open.appended)),
            end_offset: Some(Arc::clone(waits_on)),
        };
        if offset < log_start_offset || offset > log_end_offset {
            tracing::info!(
                topic = %topic.name,
                partition,
                offset,
                log_start_offset,
                log_end_offset,
                "fetch offset out of range"
            );
            outcome.error_code = error_code::OFFSET_OUT_OF_RANGE;
            return outcome;
        }
        if offset >= upper_offset {
            return outcome;
        }
        if let Some(tail) = &open.tail {
            if let Some(cached) = tail.borrow().read(offset, max_bytes.max(1), upper_offset) {
                if !cached.is_empty() {
                    outcome.records.parts = cached.into_iter().map(Chunk::Bytes).collect();
                    return outcome;
                }
            }
        }
        match open
            .log
            .read_below(offset, max_bytes.max(1), upper_offset)
            .await
        {
            Ok(regions) => {
                let key = (topic.name.to_string(), partition);
                for region in regions {
                    if open.tail.is_some() {
                        match self.read_ahead.read(&key, &region).await {
                            Ok(Some(parts)) => {
                                self.read_ahead
                                    .read_on_past_file_end(&key, &region, &open.log);
                                outcome
                                    .records
                                    .parts
                                    .extend(parts.into_iter().map(Chunk::Bytes));
                                continue;
                            }
                            Ok(None) => {} // Over the core's budget: from the file.
                            Err(error) => {
                                outcome.error_code = LogError::from(error).code();
                                return outcome;
                            }
                        }
                    }
                    if let Some(fd) = region.raw_fd() {
                        advise_read_ahead(fd, region.position, region.len);
                    }
                    // The segment's own shared descriptor, not a fresh dup: while this
                    // chunk lives, retention deletes the file rather than recycling it.
                    match region.shared_fd() {
                        Some(Ok(fd)) => outcome.records.parts.push(Chunk::File(FileChunk {
                            fd,
                            position: region.position,
                            len: region.len,
                        })),
                        _ => match region.read_bytes().await {
                            Ok(bytes) => {
                                outcome.records.parts.push(Chunk::Bytes(Bytes::from(bytes)))
                            }
                            Err(error) => {
                                outcome.error_code = error.code();
                                return outcome;
                            }
                        },
                    }
                }
            }
            Err(error) => outcome.error_code = error.code(),
        }
        outcome
    }

    async fn list_offsets_here(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
        timestamp: i64,
    ) -> OffsetOutcome {
        let open = match self.partition(topic, partition).await {
            Ok(open) => open,
            Err(error_code) => return OffsetOutcome::failed(error_code),
        };
        let high_watermark = {
            let replica = open.replica.borrow();
            if let Err(refusal) = replica.check_leader(-1) {
                return OffsetOutcome::failed(refusal.code());
            }
            replica.high_watermark()
        };
        let found = |offset| OffsetOutcome {
            error_code: error_code::NONE,
            offset,
            timestamp_ms: -1,
        };
        match timestamp {
            EARLIEST_TIMESTAMP => found(open.log.log_start_offset()),
            LATEST_TIMESTAMP | MAX_TIMESTAMP => found(high_watermark),
            target => match open.log.offset_for_timestamp(target).await {
                Ok(Some(matched)) => OffsetOutcome {
                    error_code: error_code::NONE,
                    offset: matched.offset,
                    timestamp_ms: matched.timestamp_ms,
                },
                Ok(None) => found(-1),
                Err(error) => OffsetOutcome::failed(error.code()),
            },
        }
    }

    async fn delete_topic_here(&self, topic: &Topic) {
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
        let dir = self.partition_dir(topic, partition);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %error, "cannot delete a partition directory");
            }
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

/// Produce's acks value that waits for every in-sync replica.
const ACKS_ALL: i16 = -1;

/// ListOffsets' special timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Asks the kernel to start reading a region that is about to be sent, and the same length
/// after it (where a consumer reading on will ask next), into the page cache. Data written
/// with O_DIRECT is not cached, and `sendfile` alone reads it through the default readahead
/// window, a small request at a time; one advice for the whole region lets the device work
/// on all of it at once, while the previous region is still being sent. Advice only: a
/// failure changes nothing but speed.
fn advise_read_ahead(fd: std::os::fd::RawFd, position: u64, len: u64) {
    let (Ok(start), Ok(span)) = (
        libc::off_t::try_from(position),
        libc::off_t::try_from(len * 2),
    ) else {
        return;
    };
    // SAFETY: posix_fadvise only reads its integer arguments; a bad descriptor is an error.
    unsafe {
        libc::posix_fadvise(fd, start, span, libc::POSIX_FADV_WILLNEED);
    }
}

/// Idempotent producers' recent sequences, from the batches of the active segment.
pub(super) async fn rebuild_producers(log: &PartitionLog) -> Result<ProducerStates, LogError> {
    /// Read step while walking the segment; bounds the memory the rebuild takes.
    const STEP_BYTES: u64 = 4 << 20;
    let mut states = ProducerStates::default();
    let start = log.segment_base_offsets().last().copied().unwrap_or(0);
    let end = log.log_end_offset();
    let mut offset = start;
    while offset < end {
        let regions = log.read(offset, STEP_BYTES).await?;
        if regions.is_empty() {
            break;
        }
        for region in regions {
            let bytes = region.read_bytes().await?;
            for item in batch::batches(&bytes, usize::MAX) {
                let (_, header) = item?;
                if header.producer_id >= 0 {
                    states.record(
                        header.producer_id,
                        header.producer_epoch,
                        header.base_sequence,
                        header.records_count,
                        header.base_offset,
                    );
                }
                offset = header.last_offset() + 1;
            }
        }
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_and_stay_put() {
        let mut per_core = [0usize; 4];
        for partition in 0..400 {
            let owner = partition_owner("events", partition, 4);
            assert_eq!(owner, partition_owner("events", partition, 4));
            per_core[owner] += 1;
        }
        assert!(per_core.iter().all(|&count| count > 60), "{per_core:?}");
    }
}
