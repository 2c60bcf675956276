//! The durable side of share partitions: one core's partitions of `__share_group_state`.
//!
//! A share partition writes a full snapshot of its durable state ([`record`](super::record))
//! whenever something that must survive a restart changes; the snapshot goes to the
//! `__share_group_state` partition its key hashes to, appended like a produce with acks=all.
//! The core that owns that partition keeps the newest snapshot per key in memory, built on
//! first use by replaying the partition's log (concurrent first uses share one replay, and
//! nothing is answered before it ends). "Newest" is the highest sequence, not the last in
//! the log, so two writes that reach the log out of order cannot roll a share partition back.
//!
//! This is Kafka's share coordinator: the leader of a data partition reads and writes its
//! share partitions' state here, on this core when this broker leads the state partition,
//! else through ReadShareGroupState and WriteShareGroupState ([`remote`](super::remote)).
//! The store numbers the writes of a key itself (one above the newest it holds), since the
//! data leader sends them one at a time. Each read and write carries the data partition's
//! leader epoch: a lower one than the key has seen is refused (`FencedLeaderEpoch`), so a deposed
//! leader cannot overwrite what its successor read. The epochs seen are kept in memory
//! only: a new leader of the state partition starts fencing from the first read or write.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::record::{self, Snapshot, StateKey};
use super::{ShareError, STATE_TOPIC};
use crate::batch::{self, BatchBuilder, Compression};
use crate::broker::internal_topic::{LoadError, Replayed};
use crate::broker::metadata::{Topic, TopicConfig, TopicError};
use crate::broker::replay::replay_records;
use crate::broker::shard::Shard;
use crate::log::PartitionLog;

/// Writes wait for every in-sync replica, at most this long.
const WRITE_ACKS: i16 = -1;
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Segment size of `__share_group_state`.
const STATE_SEGMENT_BYTES: u64 = 100 << 20;
/// Replicas of each `__share_group_state` partition, when that many brokers are live.
const STATE_REPLICATION_FACTOR: usize = 3;

/// The newest snapshot per key of one `__share_group_state` partition.
#[derive(Default)]
struct StatePartition {
    latest: RefCell<HashMap<StateKey, Snapshot>>,
    /// The highest data-partition leader epoch that read or wrote each key.
    leader_epochs: RefCell<HashMap<StateKey, i32>>,
}

impl StatePartition {
    /// Records `leader_epoch` for `key`; refused if a newer leader was seen.
    fn fence(&self, key: &StateKey, leader_epoch: i32) -> Result<(), ShareError> {
        let mut epochs = self.leader_epochs.borrow_mut();
        match epochs.get(key) {
            Some(&seen) if seen > leader_epoch => {
                Err(ShareError::FencedLeaderEpoch { leader_epoch, seen })
            }
            _ => {
                epochs.insert(key.clone(), leader_epoch);
                Ok(())
            }
        }
    }

    /// The sequence the next write of `key` gets: above everything it holds.
    fn next_sequence(&self, key: &StateKey, proposed: u64) -> u64 {
        let held = self
            .latest
            .borrow()
            .get(key)
            .map_or(0, |held| held.sequence);
        proposed.max(held + 1)
    }

    /// Keeps `snapshot` if it is newer than what the key has.
    fn apply(&self, key: StateKey, snapshot: Snapshot) {
        let mut latest = self.latest.borrow_mut();
        let newer = latest
            .get(&key)
            .is_none_or(|held| held.sequence < snapshot.sequence);
        if newer {
            latest.insert(key, snapshot);
        }
    }
}

/// One core's partitions of `__share_group_state`, the ones it leads, replayed; lives in its
/// `ShareCore`.
#[derive(Default)]
pub struct StateStore {
    partitions: Replayed<StatePartition>,
}

impl StateStore {
    /// This broker stopped leading `partition`: forget its snapshots (a new leader replays).
    pub fn unload(&self, partition: i32) {
        if self.partitions.unload(partition).is_some() {
            tracing::info!(partition, "unloaded a share state partition");
        }
    }
}

/// `__share_group_state`, created on first use. Snapshots are only ever superseded, never
/// aged out: no time or size retention.
pub async fn state_topic(shard: &Shard) -> Result<Arc<Topic>, ShareError> {
    let metadata = &shard.shared.metadata;
    if let Some(topic) = metadata.topic(STATE_TOPIC) {
        return Ok(topic);
    }
    let config = &shard.shared.config;
    let topic_config = TopicConfig {
        segment_bytes: config.segment_bytes.min(STATE_SEGMENT_BYTES),
        retention_bytes: None,
        retention_ms: None,
    };
    let live = metadata.snapshot().live_brokers().len();
    let replication = STATE_REPLICATION_FACTOR.min(live.max(1)) as i16;
    let partitions = shard.shares.settings.state_topic_partitions;
    match metadata
        .create(STATE_TOPIC, partitions, replication, topic_config)
        .await
    {
        Ok(topic) => {
            tracing::info!(partitions = topic.partitions, "created {STATE_TOPIC}");
            Ok(topic)
        }
        Err(TopicError::AlreadyExists(_)) => metadata.topic(STATE_TOPIC).ok_or_else(|| {
            ShareError::from(LoadError::NoTopic {
                topic: STATE_TOPIC,
                source: None,
            })
        }),
        Err(error) => {
            tracing::error!(%error, "cannot create {STATE_TOPIC}");
            Err(LoadError::NoTopic {
                topic: STATE_TOPIC,
                source: Some(error),
            }
            .into())
        }
    }
}

/// The newest snapshot of `key`, if it was ever written.
pub async fn read(
    shard: &Rc<Shard>,
    partition: i32,
    key: &StateKey,
    leader_epoch: i32,
) -> Result<Option<Snapshot>, ShareError> {
    let state = load(shard, partition).await?;
    state.fence(key, leader_epoch)?;
    let latest = state.latest.borrow();
    Ok(latest.get(key).cloned())
}

/// Appends `snapshot` and, once the log holds it, makes it the key's newest.
pub async fn write(
    shard: &Rc<Shard>,
    partition: i32,
    key: StateKey,
    leader_epoch: i32,
    mut snapshot: Snapshot,
) -> Result<(), ShareError> {
    let state = load(shard, partition).await?;
    state.fence(&key, leader_epoch)?;
    snapshot.sequence = state.next_sequence(&key, snapshot.sequence);
    let topic = state_topic(shard).await?;
    let now_ms = i64::try_from(crate::broker::replication::now_ms()).unwrap_or(i64::MAX);
    let record_key = record::encode_key(&key).inspect_err(|error| {
        tracing::info!(%error, "share state not written");
    })?;
    let value = record::encode_value(&snapshot);
    let mut builder = BatchBuilder::new(now_ms, Compression::None);
    builder.push_kv(Some(&record_key), Some(&value), &[], now_ms);
    let bytes = builder.build(0).inspect_err(|error| {
        tracing::error!(%error, "cannot build a share state batch");
    })?;
    shard
        .produce_here(
            &topic,
            partition,
            bytes::Bytes::from(bytes).into(),
            WRITE_ACKS,
            WRITE_TIMEOUT,
        )
        .await
        .map_err(|error| {
            tracing::warn!(partition, %error, "share state write failed");
            ShareError::StateAppend {
                partition,
                source: Box::new(error),
            }
        })?;
    state.apply(key, snapshot);
    Ok(())
}

/// The partition's snapshots, replaying its log on first use (`internal_topic`'s rules).
async fn load(shard: &Rc<Shard>, partition: i32) -> Result<Rc<StatePartition>, ShareError> {
    let topic = state_topic(shard).await?;
    let state = shard
        .shares
        .store
        .partitions
        .load(shard, &topic, partition, move |open| async move {
            replay_partition(partition, &open.log).await
        })
        .await?;
    Ok(state)
}

async fn replay_partition(
    partition: i32,
    log: &PartitionLog,
) -> Result<StatePartition, crate::LogError> {
    let started = Instant::now();
    let state = StatePartition::default();
    let skipped = replay(log, &state).await?;
    tracing::info!(
        partition,
        share_partitions = state.latest.borrow().len(),
        skipped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded share state"
    );
    Ok(state)
}

/// Rebuilds the newest snapshot per key from the whole log; the count of records skipped
/// because they did not decode.
async fn replay(log: &PartitionLog, state: &StatePartition) -> Result<u64, crate::LogError> {
    replay_records(log, "share state", |record, _| apply_record(state, record)).await
}

/// Applies one stored record; false if it could not be read.
fn apply_record(state: &StatePartition, stored: &batch::Record) -> bool {
    let (Some(key), Some(value)) = (stored.key.as_deref(), stored.value.as_deref()) else {
        return false;
    };
    let key = match record::decode_key(key) {
        Ok(Some(key)) => key,
        Ok(None) => return true, // a kind this version does not know
        Err(error) => {
            tracing::warn!(%error, "undecodable share state key skipped");
            return false;
        }
    };
    match record::decode_value(value) {
        Ok(snapshot) => {
            state.apply(key, snapshot);
            true
        }
        Err(error) => {
            tracing::warn!(%error, "undecodable share state value skipped");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::share::record::{DurableState, Run};
    use crate::log::LogConfig;
    use crate::runtime::{run_local, IO_MEMORY_BYTES_DEFAULT};
    use crate::storage::{Storage, StrategyKind};

    fn key(partition: i32) -> StateKey {
        StateKey {
            group: "g".into(),
            topic_id: uuid::Uuid::from_u128(1),
            partition,
        }
    }

    fn snapshot(sequence: u64, start: i64) -> Snapshot {
        Snapshot {
            sequence,
            start,
            runs: vec![Run {
                first: start + 1,
                last: start + 1,
                state: DurableState::Available,
                delivery_count: 2,
            }],
        }
    }

    fn batch_of(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(0, Compression::None);
        for (key, value) in records {
            builder.push_kv(Some(key), Some(value), &[], 0);
        }
        builder.build(0).expect("batch")
    }

    fn entry(key: &StateKey, snapshot: &Snapshot) -> (Vec<u8>, Vec<u8>) {
        (
            record::encode_key(key).expect("key"),
            record::encode_value(snapshot),
        )
    }

    /// The highest sequence wins whatever the log order; garbage is skipped and counted.
    #[test]
    fn replay_keeps_the_highest_sequence_per_key() {
        let dir = tempfile::tempdir().expect("dir");
        run_local(IO_MEMORY_BYTES_DEFAULT, async {
            let storage = Storage::new(StrategyKind::Buffered);
            let log = PartitionLog::open(storage, dir.path(), LogConfig::default())
                .await
                .expect("open");
            let batches = [
                batch_of(&[
                    entry(&key(0), &snapshot(1, 10)),
                    entry(&key(1), &snapshot(1, 5)),
                ]),
                batch_of(&[
                    entry(&key(0), &snapshot(3, 30)),
                    entry(&key(0), &snapshot(2, 20)),
                    (record::encode_key(&key(2)).expect("key"), vec![0, 1]),
                ]),
            ];
            for batch in batches {
                log.append(&batch, 0).await.expect("append");
            }
            let state = StatePartition::default();
            let skipped = replay(&log, &state).await.expect("replay");
            assert_eq!(skipped, 1);
            {
                let latest = state.latest.borrow();
                assert_eq!(latest.get(&key(0)), Some(&snapshot(3, 30)));
                assert_eq!(latest.get(&key(1)), Some(&snapshot(1, 5)));
                assert!(!latest.contains_key(&key(2)));
            }
            log.close().await.expect("close");
        });
    }
}
