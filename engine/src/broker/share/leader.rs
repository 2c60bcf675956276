//! Share partitions on the core that owns their data partition: acquiring records for a
//! member (reading the log locally), applying acknowledgements, expiring locks, and writing
//! every durable change to `__share_group_state` through [`store`](super::store).
//!
//! **Loading.** A share partition is built on first use from its newest snapshot (asked of
//! the core that owns its `__share_group_state` partition). A share partition with no
//! snapshot starts at the log start (`earliest`) or the high watermark (`latest`), and that
//! start is written at once, so a restart cannot move it.
//!
//! **Where the state is.** The snapshots live with the leader of the `__share_group_state`
//! partition the key hashes to (the share coordinator): on this broker, a call to that
//! partition's core; on another, ReadShareGroupState and WriteShareGroupState
//! ([`remote`](super::remote)). Writes of one share partition go one at a time, each with
//! the newest state, so they reach the store in order. When this broker's role for a data
//! partition changes, its share partitions are dropped ([`SharePartitions::unload`]): a new
//! leader builds them from the newest snapshot, and a deposed one keeps nothing stale.
//!
//! **Durability.** Acknowledgements are answered after their snapshot is written; when the
//! write fails, the acknowledgement is refused with the write's error (most are coordinator
//! errors to the client, COORDINATOR_NOT_AVAILABLE), the in-memory state keeps it, and the
//! tick writes a fresh snapshot until one succeeds. Lock expiry and members leaving write
//! snapshots too. Acquisitions are not written (Kafka does not keep locks
//! across a restart either).
//!
//! **Waiting.** When a fetch acquires nothing, the answer carries listeners that fire when
//! records may have become acquirable: the data partition's append event (when the window
//! has room) and the share partition's own event (releases, expiries). They are registered
//! before anything else runs on this core, so nothing in between is missed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use event_listener::{Event, EventListener};
use futures_util::future::{FutureExt, LocalBoxFuture, Shared as SharedFuture};

use super::record::{Snapshot, StateKey};
use super::window::Window;
use super::{
    call_core, remote, store, AcquireLimits, AcquiredRange, Acquisition, OffsetReset,
    PartitionAnswer, PartitionCall, ShareAnswer, ShareCall, ShareError, GROUP_CONFIG_OFFSET_RESET,
    STATE_TOPIC,
};
use crate::batch;
use crate::broker::group::CoordinatorError;
use crate::broker::metadata::Topic;
use crate::broker::shard::{partition_owner, Partition, Shard};
use crate::cluster::state::NO_LEADER;
use crate::fifo_lock::FifoLock;

/// One share partition: a group's view of one data partition.
pub struct SharePartition {
    key: StateKey,
    window: RefCell<Window>,
    /// Notified when records may have become acquirable (released, expired, archived).
    changed: Event,
    /// The sequence of the newest snapshot the store holds.
    written: Cell<u64>,
    /// The data partition's leader epoch when this broker built the share partition: sent
    /// with every read and write, so the store can fence a deposed leader.
    leader_epoch: i32,
    /// One snapshot write at a time, so writes reach the store in the order taken.
    writing: FifoLock,
}

impl SharePartitions {
    /// This broker's role for the data partition changed: drop its share partitions. Fetches
    /// waiting on them wake and find the new role.
    pub fn unload(&self, topic_id: uuid::Uuid, partition: i32) {
        let mut entries = self.entries.borrow_mut();
        let dropped: Vec<StateKey> = entries
            .keys()
            .filter(|key| key.topic_id == topic_id && key.partition == partition)
            .cloned()
            .collect();
        for key in dropped {
            if let Some(entry) = entries.remove(&key) {
                entry.writing.close();
                entry.changed.notify(usize::MAX);
                tracing::info!(group = %key.group, %topic_id, partition, "share partition unloaded");
            }
        }
    }
}

type Loading = SharedFuture<LocalBoxFuture<'static, Result<Rc<SharePartition>, ShareError>>>;

/// The share partitions of the data partitions this core owns.
#[derive(Default)]
pub struct SharePartitions {
    entries: RefCell<HashMap<StateKey, Rc<SharePartition>>>,
    loading: RefCell<HashMap<StateKey, Loading>>,
}

/// Serves one partition call: acknowledge, then acquire.
pub async fn serve(shard: &Rc<Shard>, call: PartitionCall) -> PartitionAnswer {
    let open = match shard.partition(&call.topic, call.partition).await {
        Ok(open) => open,
        Err(error) => return PartitionAnswer::failed(error),
    };
    if let Err(refusal) = open.replica.borrow().check_leader(-1) {
        return PartitionAnswer::failed(refusal);
    }
    let key = StateKey {
        group: call.group_id,
        topic_id: call.topic.id,
        partition: call.partition,
    };
    let entry = match load(shard, key, &open).await {
        Ok(entry) => entry,
        Err(error) => return PartitionAnswer::failed(error),
    };
    let settings = &shard.shares.settings;
    let now = Instant::now();
    let mut answer = PartitionAnswer::empty();
    if entry
        .window
        .borrow_mut()
        .expire(now, settings.delivery_count_limit)
    {
        entry.changed.notify(usize::MAX);
    }
    if !call.acknowledgements.is_empty() {
        let applied = entry.window.borrow_mut().acknowledge(
            &call.member_id,
            &call.acknowledgements,
            settings.delivery_count_limit,
            now,
        );
        answer.acknowledged = match applied {
            Ok(()) => {
                entry.changed.notify(usize::MAX);
                persist(shard, &entry).await
            }
            Err(error) => Err(error),
        };
    }
    if let Some(limits) = call.acquire {
        let member: Rc<str> = Rc::from(call.member_id.as_str());
        answer.acquisition = acquire(shard, &entry, &open, &member, limits).await;
    }
    answer
}

/// Acquires up to the limits for `member`, whole batches from the log; when nothing is
/// acquired, leaves listeners in the answer.
async fn acquire(
    shard: &Rc<Shard>,
    entry: &SharePartition,
    open: &Partition,
    member: &Rc<str>,
    limits: AcquireLimits,
) -> Result<Acquisition, ShareError> {
    let mut answer = Acquisition::default();
    let read_error = |error| ShareError::Read {
        topic_id: entry.key.topic_id,
        partition: entry.key.partition,
        source: Box::new(error),
    };
    let settings = &shard.shares.settings;
    let max_locks = settings.max_record_locks;
    let until = Instant::now() + settings.lock_duration;
    let mut records: Vec<u8> = Vec::new();
    let mut count = 0u32;
    let mut cursor = 0i64;
    while count < limits.max_records && (records.len() as u64) < limits.max_bytes {
        let high_watermark = open.replica.borrow().high_watermark();
        let next = {
            let mut window = entry.window.borrow_mut();
            window.skip_below(open.log.log_start_offset());
            window.next_acquirable(cursor, high_watermark, max_locks)
        };
        let Some(next) = next else { break };
        let budget = (limits.max_bytes - records.len() as u64).max(1);
        let regions = open
            .log
            .read_below(next, budget, high_watermark)
            .await
            .map_err(read_error)?;
        let mut fetched = Vec::new();
        for region in regions {
            fetched.push(region.read_bytes().await.map_err(read_error)?);
        }
        let before = cursor;
        for bytes in &fetched {
            for item in batch::batches(bytes, usize::MAX) {
                let Ok((position, header)) = item else { break };
                cursor = cursor.max(header.last_offset() + 1);
                let stored = &bytes[position..position + header.total_bytes()];
                let took = take_batch(
                    entry,
                    &header,
                    member,
                    until,
                    max_locks,
                    limits,
                    &mut count,
                    &mut answer,
                );
                if took {
                    records.extend_from_slice(stored);
                }
                if count >= limits.max_records || records.len() as u64 >= limits.max_bytes {
                    break;
                }
            }
        }
        if cursor <= before {
            break;
        }
    }
    if count == 0 {
        answer.wake = listeners(entry, open, max_locks);
    } else {
        answer.records = Some(bytes::Bytes::from(records));
    }
    Ok(answer)
}

/// Acquires what it can of one batch; whether it took any record.
#[allow(clippy::too_many_arguments)]
fn take_batch(
    entry: &SharePartition,
    header: &batch::BatchHeader,
    member: &Rc<str>,
    until: Instant,
    max_locks: u32,
    limits: AcquireLimits,
    count: &mut u32,
    answer: &mut Acquisition,
) -> bool {
    let mut window = entry.window.borrow_mut();
    if header.is_control() {
        for offset in header.base_offset..=header.last_offset() {
            window.skip_new(offset, max_locks);
        }
        return false;
    }
    let mut took = false;
    for offset in header.base_offset..=header.last_offset() {
        if *count >= limits.max_records {
            break;
        }
        let Some(delivery_count) = window.try_acquire(offset, member, until, max_locks) else {
            continue;
        };
        *count += 1;
        took = true;
        match answer.acquired.last_mut() {
            Some(range) if range.last + 1 == offset && range.delivery_count == delivery_count => {
                range.last = offset;
            }
            _ => answer.acquired.push(AcquiredRange {
                first: offset,
                last: offset,
                delivery_count,
            }),
        }
    }
    took
}

/// What a fetch that acquired nothing waits on.
fn listeners(entry: &SharePartition, open: &Partition, max_locks: u32) -> Vec<EventListener> {
    let mut wake = vec![entry.changed.listen()];
    if entry.window.borrow().has_room(max_locks) {
        wake.push(open.appended.listen());
    }
    wake
}

/// The share partition, built from its snapshot on first use.
async fn load(
    shard: &Rc<Shard>,
    key: StateKey,
    open: &Rc<Partition>,
) -> Result<Rc<SharePartition>, ShareError> {
    let partitions = &shard.shares.partitions;
    if let Some(entry) = partitions.entries.borrow().get(&key) {
        return Ok(Rc::clone(entry));
    }
    let existing = partitions.loading.borrow().get(&key).cloned();
    let loading = match existing {
        Some(loading) => loading,
        None => {
            let shard = Rc::clone(shard);
            let open = Rc::clone(open);
            let loading_key = key.clone();
            let future = async move { build(&shard, loading_key, &open).await }
                .boxed_local()
                .shared();
            partitions
                .loading
                .borrow_mut()
                .insert(key.clone(), future.clone());
            future
        }
    };
    let result = loading.await;
    partitions.loading.borrow_mut().remove(&key);
    if let Ok(entry) = &result {
        partitions
            .entries
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| Rc::clone(entry));
    }
    result
}

async fn build(
    shard: &Rc<Shard>,
    key: StateKey,
    open: &Partition,
) -> Result<Rc<SharePartition>, ShareError> {
    let leader_epoch = open.replica.borrow().leader_epoch();
    let snapshot = read_snapshot(shard, &key, leader_epoch).await?;
    let fresh = snapshot.is_none();
    let window = match &snapshot {
        Some(snapshot) => Window::from_snapshot(snapshot),
        None => Window::new(match offset_reset(shard, &key.group) {
            OffsetReset::Earliest => open.log.log_start_offset(),
            OffsetReset::Latest => open.replica.borrow().high_watermark(),
        }),
    };
    let written = snapshot.as_ref().map_or(0, |snapshot| snapshot.sequence);
    tracing::info!(
        group = %key.group,
        topic_id = %key.topic_id,
        partition = key.partition,
        start = window.start(),
        end = window.end(),
        restored = !fresh,
        "share partition loaded"
    );
    let entry = Rc::new(SharePartition {
        key,
        window: RefCell::new(window),
        changed: Event::new(),
        written: Cell::new(written),
        leader_epoch,
        writing: FifoLock::new(),
    });
    if fresh {
        // Fix where a new share partition starts, so a restart cannot move it.
        persist(shard, &entry).await?;
    }
    Ok(entry)
}

/// Where `group` starts in a partition it never read: its group config, else the broker's.
fn offset_reset(shard: &Shard, group: &str) -> OffsetReset {
    shard
        .shared
        .metadata
        .snapshot()
        .group_config(group, GROUP_CONFIG_OFFSET_RESET)
        .and_then(OffsetReset::from_name)
        .unwrap_or(shard.shares.settings.offset_reset)
}

/// Where the state of `key` is kept: the `__share_group_state` partition it hashes to, and
/// that partition's leader.
enum StatePlace {
    /// This broker leads it: the partition and the core that owns it.
    Here { core: usize, partition: i32 },
    /// Another broker leads it.
    Remote { broker: i32 },
}

async fn state_place(shard: &Rc<Shard>, key: &StateKey) -> Result<StatePlace, ShareError> {
    let topic: Arc<Topic> = store::state_topic(shard).await?;
    let partition = key.state_partition(topic.partitions);
    // The newest cluster state: the topic handed back may predate a leader change.
    let leader = shard
        .shared
        .metadata
        .topic(STATE_TOPIC)
        .and_then(|topic| topic.partition(partition).map(|state| state.leader))
        .unwrap_or(NO_LEADER);
    if leader == NO_LEADER {
        return Err(ShareError::NoStateLeader { partition });
    }
    if leader == shard.shared.config.node_id {
        let core = partition_owner(STATE_TOPIC, partition, shard.shared.cores);
        return Ok(StatePlace::Here { core, partition });
    }
    Ok(StatePlace::Remote { broker: leader })
}

async fn read_snapshot(
    shard: &Rc<Shard>,
    key: &StateKey,
    leader_epoch: i32,
) -> Result<Option<Snapshot>, ShareError> {
    let (core, partition) = match state_place(shard, key).await? {
        StatePlace::Here { core, partition } => (core, partition),
        StatePlace::Remote { broker } => {
            return remote::read(shard, broker, key, leader_epoch).await;
        }
    };
    let call = ShareCall::ReadState {
        partition,
        key: key.clone(),
        leader_epoch,
    };
    match call_core(shard, core, call).await {
        Some(ShareAnswer::State(result)) => result,
        _ => Err(CoordinatorError::Dropped.into()),
    }
}

/// Writes a snapshot of the share partition's durable state, after the writes before it.
async fn persist(shard: &Rc<Shard>, entry: &SharePartition) -> Result<(), ShareError> {
    let Ok(_turn) = entry.writing.lock().await else {
        // Unloaded: this broker no longer leads the data partition.
        return Err(ShareError::Unloaded {
            topic_id: entry.key.topic_id,
            partition: entry.key.partition,
        });
    };
    let snapshot = entry.window.borrow_mut().snapshot();
    let sequence = snapshot.sequence;
    let written = match state_place(shard, &entry.key).await? {
        StatePlace::Remote { broker } => {
            remote::write(shard, broker, &entry.key, entry.leader_epoch, &snapshot).await
        }
        StatePlace::Here { core, partition } => {
            let call = ShareCall::WriteState {
                partition,
                key: entry.key.clone(),
                leader_epoch: entry.leader_epoch,
                snapshot,
            };
            match call_core(shard, core, call).await {
                Some(ShareAnswer::Written(result)) => result,
                _ => Err(CoordinatorError::Dropped.into()),
            }
        }
    };
    written?;
    entry.written.set(entry.written.get().max(sequence));
    Ok(())
}

/// Releases what `member_id` holds in this core's share partitions of `group_id`.
pub async fn release_member(shard: &Rc<Shard>, group_id: &str, member_id: &str) {
    let limit = shard.shares.settings.delivery_count_limit;
    let held: Vec<Rc<SharePartition>> = shard
        .shares
        .partitions
        .entries
        .borrow()
        .values()
        .filter(|entry| entry.key.group == group_id)
        .cloned()
        .collect();
    for entry in held {
        let released = entry.window.borrow_mut().release_member(member_id, limit);
        if released {
            entry.changed.notify(usize::MAX);
            if let Err(error) = persist(shard, &entry).await {
                tracing::warn!(
                    group = group_id,
                    %error,
                    "share state not written after a release"
                );
            }
        }
    }
}

/// Expires locks, and writes snapshots that failed before.
pub async fn tick(shard: &Rc<Shard>, now: Instant) {
    let limit = shard.shares.settings.delivery_count_limit;
    let entries: Vec<Rc<SharePartition>> = shard
        .shares
        .partitions
        .entries
        .borrow()
        .values()
        .cloned()
        .collect();
    for entry in entries {
        let expired = {
            let mut window = entry.window.borrow_mut();
            window.has_acquired() && window.expire(now, limit)
        };
        if expired {
            entry.changed.notify(usize::MAX);
        }
        let behind = entry.written.get() < entry.window.borrow().sequence();
        if expired || behind {
            if let Err(error) = persist(shard, &entry).await {
                tracing::warn!(
                    group = %entry.key.group,
                    %error,
                    "share state not written; will retry"
                );
            }
        }
    }
}
