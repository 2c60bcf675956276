//! Which core owns a partition, and how one core has another do work for it.
//!
//! Every partition is owned by exactly one core, chosen by hashing (topic, partition); only
//! that core opens its log. Work for a partition that lands on another core goes there as a
//! [`CoreTask`] over glommio's cross-core channel mesh, and its answer comes back through a
//! one-shot channel. One generic call, [`Shard::call_core`], carries every kind of work:
//! produce, fetch, offsets, group and share-group calls.
//!
//! **Order.** Tasks one core sends another arrive in the order sent: senders take turns per
//! destination (glommio wakes senders waiting for room in no set order).
//!
//! **Bounds.** Each core-to-core channel holds at most `MESH_CHANNEL_CAPACITY` tasks
//! (`server.rs`); a full channel makes the sender wait.
//!
//! **Concurrency.** What a task captures crosses cores, so it must be `Send` (`Bytes`, file
//! descriptors, `Arc<Topic>`, plain values); the future it makes runs on the owner core and
//! may hold that core's `Rc`s and `RefCell`s.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use futures_util::future::LocalBoxFuture;

use super::metadata::Topic;
use super::partition::{
    EpochEndError, EpochEndOutcome, FetchError, FetchOutcome, ListOffsetsError, ListOffsetsOutcome,
    PartitionRecords, ProduceError, ProduceOutcome,
};
use super::replication::Reader;
use super::shard::Shard;

/// Work sent to another core: called there with that core's shard.
pub type CoreTask = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, ()> + Send>;

/// The core that owns a partition: FNV-1a over the topic name and partition, modulo cores.
pub fn partition_owner(topic: &str, partition: i32, cores: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.bytes().chain(partition.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % cores.max(1) as u64) as usize
}

impl Shard {
    pub(super) fn owner(&self, topic: &str, partition: i32) -> usize {
        partition_owner(topic, partition, self.shared.cores)
    }

    /// Runs `work` on `core` and returns its answer: at once, here, when `core` is this one;
    /// otherwise sent there in turn. `None` when that core is gone (the broker is stopping).
    pub(crate) async fn call_core<R, F, Fut>(self: &Rc<Self>, core: usize, work: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if core == self.core {
            return Some(work(Rc::clone(self)).await);
        }
        let (reply, answer) = oneshot::channel();
        let task: CoreTask = Box::new(move |shard| {
            Box::pin(async move {
                let _ = reply.send(work(shard).await);
            })
        });
        {
            let _turn = self.send_turns[core].lock().await.ok()?;
            if self.peers.send_to(core, task).await.is_err() {
                return None;
            }
        }
        answer.await.ok()
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
        self.call_core(owner, move |shard| async move {
            shard
                .produce_here(&topic, partition, records, acks, timeout)
                .await
        })
        .await
        .unwrap_or(Err(ProduceError::CallDropped))
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
        self.call_core(owner, move |shard| async move {
            shard
                .fetch_here(&topic, partition, offset, max_bytes, reader)
                .await
        })
        .await
        .unwrap_or(Err(FetchError::CallDropped))
    }

    /// ListOffsets for a partition, wherever it lives.
    pub async fn list_offsets(
        self: &Rc<Self>,
        topic: Arc<Topic>,
        partition: i32,
        timestamp: i64,
    ) -> ListOffsetsOutcome {
        let owner = self.owner(&topic.name, partition);
        self.call_core(owner, move |shard| async move {
            shard.list_offsets_here(&topic, partition, timestamp).await
        })
        .await
        .unwrap_or(Err(ListOffsetsError::CallDropped))
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
        self.call_core(owner, move |shard| async move {
            shard
                .epoch_end_here(&topic, partition, current_leader_epoch, epoch)
                .await
        })
        .await
        .unwrap_or(Err(EpochEndError::CallDropped))
    }

    /// Closes and deletes a deleted topic's partitions on every core.
    pub async fn delete_topic_everywhere(self: &Rc<Self>, topic: Arc<Topic>) {
        for core in 0..self.shared.cores {
            let topic = Arc::clone(&topic);
            self.call_core(core, move |shard| async move {
                shard.delete_topic_here(&topic).await;
            })
            .await;
        }
    }
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
