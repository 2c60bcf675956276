//! One core's group coordinator: the groups and committed offsets of the
//! `__consumer_offsets` partitions this core owns.
//!
//! **Loading.** A partition's state is built on first use by replaying its log (concurrent
//! first uses share one replay); until then no request for its groups is answered, so a
//! commit can never race the replay.
//!
//! **Concurrency.** Owned by one core, not `Send`; state is in `RefCell`s that are never
//! borrowed across an `await`. Requests that wait (JoinGroup, SyncGroup) leave a one-shot
//! sender in the group ([`membership`](super::membership)) and await its receiver.
//!
//! **Durability.** An OffsetCommit is answered after its records are appended to the log
//! (which returns under the log's durability policy), and only then is the in-memory map
//! updated; a failed append leaves the map as it was and answers the error.
//!
//! **Timers.** One task per core, started with the first group request, ticks every group
//! every [`TICK_INTERVAL`]: it expires silent members and ends rebalances whose time is up.
//! At shutdown it refuses every waiting request (the clients look for the coordinator again).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use super::error::{CoordinatorError, GroupError};
use super::membership::{Group, GroupSettings, JoinRefusal};
use super::offsets::CommittedOffsets;
use super::record::{self, OffsetKey, OffsetValue};
use super::{
    CommitRequest, FetchedOffset, GroupAnswer, GroupCall, GroupDescription, GroupRequest,
    ListedGroup, OFFSETS_TOPIC,
};
use crate::batch::{self, BatchBuilder, Compression};
use crate::broker::config::BrokerConfig;
use crate::broker::internal_topic::{LoadError, Replayed};
use crate::broker::metadata::Topic;
use crate::broker::replay::replay_records;
use crate::broker::shard::{partition_owner, Shard};
use crate::log::PartitionLog;
// Only to read a produce outcome's code, until the partition layer has its own error.

/// Commits wait for every in-sync replica (acks=all), at most this long (Kafka
/// `offsets.commit.timeout.ms`).
const OFFSETS_COMMIT_ACKS: i16 = -1;
const OFFSETS_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often each core's coordinator expires sessions and checks rebalance deadlines.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// Most bytes of offset records put in one batch; a larger commit is split.
const COMMIT_BATCH_BYTES_MAX: usize = 1 << 20;

/// The groups and offsets of one `__consumer_offsets` partition.
pub struct OffsetsPartition {
    index: i32,
    groups: RefCell<HashMap<String, Group>>,
    offsets: RefCell<CommittedOffsets>,
}

/// The group coordinator's limits and timings, as the broker's config names them.
fn settings_of(config: &BrokerConfig) -> GroupSettings {
    GroupSettings {
        initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
        session_timeout_min: Duration::from_millis(config.group_min_session_timeout_ms),
        session_timeout_max: Duration::from_millis(config.group_max_session_timeout_ms),
        max_size: config.group_max_size,
        member_metadata_bytes_max: config.group_member_metadata_bytes_max,
        ..GroupSettings::default()
    }
}

/// One core's coordinator; lives in its [`Shard`].
pub struct Coordinator {
    settings: GroupSettings,
    offset_metadata_bytes_max: usize,
    /// The `__consumer_offsets` partitions this core leads, replayed.
    partitions: Replayed<OffsetsPartition>,
    ticking: Cell<bool>,
}

impl Coordinator {
    pub fn new(config: &BrokerConfig) -> Coordinator {
        Coordinator {
            settings: settings_of(config),
            offset_metadata_bytes_max: config.offset_metadata_bytes_max,
            partitions: Replayed::default(),
            ticking: Cell::new(false),
        }
    }

    /// This broker stopped leading `partition` of `__consumer_offsets`: forget its groups and
    /// offsets (the new leader replays them), and refuse its waiting requests so the clients
    /// look for the new coordinator.
    pub fn unload(&self, partition: i32) {
        let Some(state) = self.partitions.unload(partition) else {
            return;
        };
        for group in state.groups.borrow_mut().values_mut() {
            group.abandon_waiters();
        }
        tracing::info!(partition, "unloaded the groups of an offsets partition");
    }

    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }
}

/// Serves one call on the core that owns the partition(s) it is about.
pub async fn handle(shard: &Rc<Shard>, call: GroupCall) -> GroupAnswer {
    start_ticking(shard);
    match call {
        GroupCall::ForGroup { partition, request } => match load(shard, partition).await {
            Ok(state) => serve(shard, &state, request).await,
            Err(error) => GroupAnswer::Failed(error.into()),
        },
        GroupCall::List => list_groups(shard).await,
    }
}

/// The offsets topic, which the API layer creates before it forwards any group request.
fn offsets_topic(shard: &Shard) -> Result<Arc<Topic>, LoadError> {
    shard
        .shared
        .metadata
        .topic(OFFSETS_TOPIC)
        .ok_or(LoadError::NoTopic {
            topic: OFFSETS_TOPIC,
            source: None,
        })
}

/// The partition's state, replaying its log on first use (`internal_topic`'s rules).
async fn load(shard: &Rc<Shard>, partition: i32) -> Result<Rc<OffsetsPartition>, LoadError> {
    let topic = offsets_topic(shard)?;
    shard
        .groups
        .partitions
        .load(shard, &topic, partition, move |open| async move {
            replay_partition(partition, &open.log).await
        })
        .await
}

async fn replay_partition(
    partition: i32,
    log: &PartitionLog,
) -> Result<OffsetsPartition, crate::LogError> {
    let started = Instant::now();
    let (offsets, skipped) = replay(log).await?;
    tracing::info!(
        partition,
        committed = offsets.len(),
        skipped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded committed offsets"
    );
    Ok(OffsetsPartition {
        index: partition,
        groups: RefCell::new(HashMap::new()),
        offsets: RefCell::new(offsets),
    })
}

/// Rebuilds the committed offsets from the whole log. Records that do not decode are
/// skipped (and counted), so one bad record cannot make every group of the partition
/// unavailable.
pub async fn replay(log: &PartitionLog) -> Result<(CommittedOffsets, u64), crate::LogError> {
    let mut offsets = CommittedOffsets::default();
    let skipped = replay_records(log, "offsets", |record, log_offset| {
        apply_record(&mut offsets, record, log_offset)
    })
    .await?;
    Ok((offsets, skipped))
}

/// Applies one stored record; false if it could not be read.
fn apply_record(offsets: &mut CommittedOffsets, stored: &batch::Record, log_offset: i64) -> bool {
    let Some(key) = stored.key.as_deref() else {
        return false;
    };
    let key = match record::decode_key(key) {
        Ok(Some(key)) => key,
        Ok(None) => return true, // a kind this version does not know
        Err(error) => {
            tracing::warn!(log_offset, %error, "undecodable offsets key skipped");
            return false;
        }
    };
    let value = match stored.value.as_deref().map(record::decode_offset_value) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(error)) => {
            tracing::warn!(log_offset, %error, "undecodable offsets value skipped");
            return false;
        }
    };
    offsets.apply(key, value, log_offset);
    true
}

async fn serve(
    shard: &Rc<Shard>,
    state: &Rc<OffsetsPartition>,
    request: GroupRequest,
) -> GroupAnswer {
    let settings = &shard.groups.settings;
    let now = Instant::now();
    match request {
        GroupRequest::Join(join) => {
            let (reply, answer) = oneshot::channel();
            {
                let mut groups = state.groups.borrow_mut();
                let group = groups
                    .entry(join.group_id.clone())
                    .or_insert_with(|| Group::new(&join.group_id));
                group.join(join, settings, now, new_member_id, reply);
            }
            let outcome = answer
                .await
                .unwrap_or_else(|_| Err(JoinRefusal::new(CoordinatorError::Dropped, "")));
            GroupAnswer::Join(outcome)
        }
        GroupRequest::Sync {
            group_id,
            member_id,
            instance_id,
            generation_id,
            assignments,
        } => {
            let (reply, answer) = oneshot::channel();
            match state.groups.borrow_mut().get_mut(&group_id) {
                Some(group) => group.sync(
                    &member_id,
                    instance_id.as_deref(),
                    generation_id,
                    assignments,
                    now,
                    reply,
                ),
                None => {
                    let _ = reply.send(Err(GroupError::UnknownMember { member_id }));
                }
            }
            let outcome = answer
                .await
                .unwrap_or_else(|_| Err(CoordinatorError::Dropped.into()));
            GroupAnswer::Sync(outcome)
        }
        GroupRequest::Heartbeat {
            group_id,
            member_id,
            instance_id,
            generation_id,
        } => {
            let result = match state.groups.borrow_mut().get_mut(&group_id) {
                Some(group) => {
                    group.heartbeat(&member_id, instance_id.as_deref(), generation_id, now)
                }
                None => Err(GroupError::UnknownMember { member_id }),
            };
            GroupAnswer::Heartbeat(result)
        }
        GroupRequest::Leave { group_id, members } => {
            let mut groups = state.groups.borrow_mut();
            let results = members
                .into_iter()
                .map(|(member_id, instance_id)| match groups.get_mut(&group_id) {
                    Some(group) => group.leave(&member_id, instance_id.as_deref(), settings, now),
                    None => Err(GroupError::UnknownMember { member_id }),
                })
                .collect();
            GroupAnswer::Leave(results)
        }
        GroupRequest::Commit(commit) => {
            GroupAnswer::Commit(commit_offsets(shard, state, commit).await)
        }
        GroupRequest::FetchOffsets {
            group_id,
            partitions,
        } => GroupAnswer::Offsets(fetch_offsets(state, &group_id, partitions)),
        GroupRequest::Describe { group_id } => GroupAnswer::Described(describe(state, &group_id)),
    }
}

/// Kafka's form: the instance id of a static member (else the client id), a dash, and a
/// fresh UUID.
fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// Checks a commit against the group, appends its records, then updates the map.
async fn commit_offsets(
    shard: &Rc<Shard>,
    state: &Rc<OffsetsPartition>,
    commit: CommitRequest,
) -> Vec<Result<(), GroupError>> {
    let coordinator = &shard.groups;
    let checked = {
        let mut groups = state.groups.borrow_mut();
        match groups.get_mut(&commit.group_id) {
            Some(group) => group.check_commit(
                &commit.member_id,
                commit.instance_id.as_deref(),
                commit.generation_id,
                Instant::now(),
            ),
            // Kafka: a group it does not manage takes only commits outside group management.
            None if commit.generation_id < 0 => Ok(()),
            // A group it does not know is at the generation a new group starts at.
            None => Err(GroupError::IllegalGeneration {
                generation: commit.generation_id,
                current: Group::new(&commit.group_id).generation_id(),
            }),
        }
    };
    if let Err(error) = checked {
        return vec![Err(error); commit.entries.len()];
    }
    let metadata = &shard.shared.metadata;
    let commit_time_ms = now_ms();
    let mut results = vec![Ok(()); commit.entries.len()];
    let mut accepted: Vec<(usize, OffsetKey, OffsetValue)> = Vec::new();
    for (index, entry) in commit.entries.into_iter().enumerate() {
        let known = metadata
            .topic(&entry.topic)
            .is_some_and(|topic| (0..topic.partitions).contains(&entry.partition));
        if !known {
            results[index] = Err(GroupError::UnknownPartition {
                topic: entry.topic,
                partition: entry.partition,
            });
            continue;
        }
        let metadata_bytes = entry.metadata.as_ref().map_or(0, String::len);
        if metadata_bytes > coordinator.offset_metadata_bytes_max {
            results[index] = Err(GroupError::OffsetMetadataTooLarge {
                metadata_bytes,
                metadata_bytes_max: coordinator.offset_metadata_bytes_max,
            });
            continue;
        }
        let key = OffsetKey {
            group: commit.group_id.clone(),
            topic: entry.topic,
            partition: entry.partition,
        };
        let value = OffsetValue {
            offset: entry.offset,
            leader_epoch: entry.leader_epoch,
            commit_time_ms,
            metadata: entry.metadata,
        };
        accepted.push((index, key, value));
    }
    let batch_bytes_max = COMMIT_BATCH_BYTES_MAX.min(shard.shared.config.max_batch_bytes / 2);
    for chunk in chunk_by_bytes(accepted, batch_bytes_max) {
        let outcome = append_chunk(shard, state, &chunk, commit_time_ms).await;
        for (index, _, _) in &chunk {
            results[*index] = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
        }
        if let Ok(base_offset) = outcome {
            let mut offsets = state.offsets.borrow_mut();
            for (position, (_, key, value)) in chunk.into_iter().enumerate() {
                offsets.apply(key, Some(value), base_offset + position as i64);
            }
        }
    }
    results
}

/// Splits accepted entries into runs whose records fit one batch.
fn chunk_by_bytes(
    accepted: Vec<(usize, OffsetKey, OffsetValue)>,
    bytes_max: usize,
) -> Vec<Vec<(usize, OffsetKey, OffsetValue)>> {
    /// Record framing, header and value fields beyond the strings, generously.
    const RECORD_OVERHEAD_BYTES: usize = 64;
    let mut chunks: Vec<Vec<_>> = Vec::new();
    let mut chunk_bytes = 0usize;
    for entry in accepted {
        let (_, key, value) = &entry;
        let bytes = RECORD_OVERHEAD_BYTES
            + key.group.len()
            + key.topic.len()
            + value.metadata.as_ref().map_or(0, String::len);
        if chunks.is_empty() || chunk_bytes + bytes > bytes_max {
            chunks.push(Vec::new());
            chunk_bytes = 0;
        }
        chunk_bytes += bytes;
        if let Some(last) = chunks.last_mut() {
            last.push(entry);
        }
    }
    chunks
}

/// Appends one batch of offset records; the base offset it got.
async fn append_chunk(
    shard: &Rc<Shard>,
    state: &OffsetsPartition,
    chunk: &[(usize, OffsetKey, OffsetValue)],
    commit_time_ms: i64,
) -> Result<i64, GroupError> {
    let mut builder = BatchBuilder::new(commit_time_ms, Compression::None);
    for (_, key, value) in chunk {
        let (key, value) = record::offset_record(key, Some(value)).inspect_err(|error| {
            tracing::info!(%error, "offset commit refused");
        })?;
        builder.push_kv(Some(&key), value.as_deref(), &[], commit_time_ms);
    }
    let bytes = builder.build(0).inspect_err(|error| {
        tracing::error!(%error, "cannot build an offsets batch");
    })?;
    let topic = offsets_topic(shard)?;
    // As Kafka (`offsets.commit.required.acks` = -1): a commit is answered once every
    // in-sync replica of the offsets partition holds it.
    let produced = shard
        .produce_here(
            &topic,
            state.index,
            bytes::Bytes::from(bytes).into(),
            OFFSETS_COMMIT_ACKS,
            OFFSETS_COMMIT_TIMEOUT,
        )
        .await
        .map_err(|error| {
            tracing::warn!(partition = state.index, %error, "offset commit append failed");
            CoordinatorError::Append {
                partition: state.index,
                source: Box::new(error),
            }
        })?;
    Ok(produced.base_offset)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

fn fetch_offsets(
    state: &OffsetsPartition,
    group_id: &str,
    partitions: Option<Vec<(String, i32)>>,
) -> Vec<FetchedOffset> {
    let offsets = state.offsets.borrow();
    let found = |topic: &str, partition: i32| {
        let committed = offsets.get(group_id, topic, partition);
        FetchedOffset {
            topic: topic.to_string(),
            partition,
            offset: committed.map_or(-1, |committed| committed.value.offset),
            leader_epoch: committed.map_or(-1, |committed| committed.value.leader_epoch),
            metadata: committed.map_or(Some(String::new()), |committed| {
                committed.value.metadata.clone()
            }),
        }
    };
    match partitions {
        Some(partitions) => partitions
            .iter()
            .map(|(topic, partition)| found(topic, *partition))
            .collect(),
        None => offsets
            .of_group(group_id)
            .map(|((topic, partition), _)| found(topic, *partition))
            .collect(),
    }
}

fn describe(state: &OffsetsPartition, group_id: &str) -> GroupDescription {
    let groups = state.groups.borrow();
    match groups.get(group_id) {
        Some(group) if !group.is_vacant() => GroupDescription {
            state: group.state().name(),
            protocol_type: group.protocol_type().unwrap_or("").to_string(),
            protocol_name: group.protocol_name().unwrap_or("").to_string(),
            members: group.describe_members(),
        },
        _ => GroupDescription {
            state: if state.offsets.borrow().has_group(group_id) {
                "Empty"
            } else {
                "Dead"
            },
            protocol_type: String::new(),
            protocol_name: String::new(),
            members: Vec::new(),
        },
    }
}

/// Every group of every `__consumer_offsets` partition this core owns (loading them).
async fn list_groups(shard: &Rc<Shard>) -> GroupAnswer {
    let Ok(topic) = offsets_topic(shard) else {
        return GroupAnswer::Listed(Vec::new());
    };
    let mut listed = Vec::new();
    for partition in 0..topic.partitions {
        if partition_owner(OFFSETS_TOPIC, partition, shard.shared.cores) != shard.core {
            continue;
        }
        let state = match load(shard, partition).await {
            Ok(state) => state,
            Err(error) => return GroupAnswer::Failed(error.into()),
        };
        let groups = state.groups.borrow();
        for (group_id, group) in groups.iter().filter(|(_, group)| !group.is_vacant()) {
            listed.push(ListedGroup {
                group_id: group_id.clone(),
                protocol_type: group.protocol_type().unwrap_or("").to_string(),
                state: group.state().name(),
            });
        }
        for group_id in state.offsets.borrow().groups() {
            if groups.get(group_id).is_none_or(Group::is_vacant) {
                listed.push(ListedGroup {
                    group_id: group_id.clone(),
                    protocol_type: String::new(),
                    state: "Empty",
                });
            }
        }
    }
    GroupAnswer::Listed(listed)
}

/// Starts this core's timer task once.
fn start_ticking(shard: &Rc<Shard>) {
    if shard.groups.ticking.replace(true) {
        return;
    }
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(TICK_INTERVAL).await;
            let Some(shard) = weak.upgrade() else { break };
            if shard.shared.is_shutting_down() {
                abandon_all(&shard);
                break;
            }
            tick_all(&shard, Instant::now());
        }
    })
    .detach();
}

fn tick_all(shard: &Shard, now: Instant) {
    let settings = &shard.groups.settings;
    for state in shard.groups.partitions.loaded() {
        let mut groups = state.groups.borrow_mut();
        for group in groups.values_mut() {
            group.tick(settings, now);
        }
        groups.retain(|_, group| !group.is_vacant());
    }
}

fn abandon_all(shard: &Shard) {
    for state in shard.groups.partitions.loaded() {
        for group in state.groups.borrow_mut().values_mut() {
            group.abandon_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;
    use crate::runtime::{run_local, IO_MEMORY_BYTES_DEFAULT};
    use crate::storage::{Storage, StrategyKind};

    fn key(group: &str, partition: i32) -> OffsetKey {
        OffsetKey {
            group: group.into(),
            topic: "orders".into(),
            partition,
        }
    }

    fn value(offset: i64) -> OffsetValue {
        OffsetValue {
            offset,
            leader_epoch: -1,
            commit_time_ms: 1_700_000_000_000,
            metadata: Some(format!("at {offset}")),
        }
    }

    /// One batch of records; `None` values are tombstones, raw keys go in as they are.
    fn batch_of(records: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(0, Compression::None);
        for (key, value) in records {
            builder.push_kv(Some(key), value.as_deref(), &[], 0);
        }
        builder.build(0).expect("batch")
    }

    fn offset_entry(key: &OffsetKey, value: Option<&OffsetValue>) -> (Vec<u8>, Option<Vec<u8>>) {
        let (key, value) = record::offset_record(key, value).expect("record");
        (key.to_vec(), value.map(|value| value.to_vec()))
    }

    /// Replay of a real log: later records win, a tombstone deletes, records that do not
    /// decode are skipped and counted, and a reopened log replays to the same map.
    #[test]
    fn replay_keeps_the_latest_value_per_key_and_honours_tombstones() {
        let dir = tempfile::tempdir().expect("dir");
        run_local(IO_MEMORY_BYTES_DEFAULT, async {
            let storage = Storage::new(StrategyKind::Buffered);
            let log = PartitionLog::open(storage.clone(), dir.path(), LogConfig::default())
                .await
                .expect("open");
            let batches = [
                batch_of(&[
                    offset_entry(&key("a", 0), Some(&value(10))),
                    offset_entry(&key("a", 1), Some(&value(20))),
                    offset_entry(&key("b", 0), Some(&value(5))),
                ]),
                batch_of(&[
                    offset_entry(&key("a", 0), Some(&value(11))),
                    offset_entry(&key("b", 0), None),
                    (vec![KIND_GARBAGE, 0xff], Some(vec![1, 2, 3])),
                    (
                        record::encode_offset_key(&key("c", 0)).expect("key"),
                        Some(vec![0, 1]),
                    ),
                ]),
            ];
            for batch in batches {
                log.append(&batch, 0).await.expect("append");
            }
            let (offsets, skipped) = replay(&log).await.expect("replay");
            assert_eq!(skipped, 1, "the truncated value of c");
            assert_eq!(
                offsets.get("a", "orders", 0).map(|c| &c.value),
                Some(&value(11))
            );
            assert_eq!(
                offsets.get("a", "orders", 1).map(|c| &c.value),
                Some(&value(20))
            );
            assert!(
                !offsets.has_group("b"),
                "the tombstone deleted b's only offset"
            );
            assert!(!offsets.has_group("c"));
            log.close().await.expect("close");

            let reopened = PartitionLog::open(storage, dir.path(), LogConfig::default())
                .await
                .expect("reopen");
            let (again, _) = replay(&reopened).await.expect("replay again");
            assert_eq!(again.len(), offsets.len());
            assert_eq!(again.get("a", "orders", 0), offsets.get("a", "orders", 0));
            reopened.close().await.expect("close");
        });
    }

    /// A key kind this version does not know (a future record type): skipped, not an error.
    const KIND_GARBAGE: u8 = 200;
}
