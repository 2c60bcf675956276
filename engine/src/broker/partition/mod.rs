//! One partition on its owner core: its open state, and the answers of the work done on it.
//!
//! - [`Partition`]: the log, the replica state (role, ISR, high watermark), leader epochs,
//!   idempotent producers' recent sequences, the tail cache, and the event waiters listen on.
//! - [`produce`]: appending a produce request's batches, and waiting for acks=all.
//! - [`fetch`]: reading for consumers and followers, zero-copy where it can.
//! - [`offsets`]: answering ListOffsets.
//! - [`error`]: why a partition cannot be opened, and why each of those calls failed. Every
//!   call answers `Result<Answer, Error>` ([`ProduceOutcome`], [`FetchOutcome`],
//!   [`ListOffsetsOutcome`], [`EpochEndOutcome`]); no Kafka code is made here.
//!
//! **Concurrency.** Everything here lives on the owner core: plain `RefCell`s, no locks. Only
//! the log end and the high watermark are published (atomics) for waiters on other cores.

mod error;
mod fetch;
mod offsets;
mod produce;

pub use error::{
    AwaitError, EpochEndError, FetchError, ListOffsetsError, PartitionError, ProduceError,
    ReadFailure,
};

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use event_listener::Event;

use super::chunks::Records;
use super::tail_cache::TailCache;
use crate::batch;
use crate::cluster::epochs::LeaderEpochCache;
use crate::cluster::producers::ProducerStates;
use crate::cluster::replica::{ReplicaState, Role};
use crate::error::LogError;
use crate::log::PartitionLog;

/// What a produce to one partition got: where its first batch went.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// The answer to a produce to one partition.
pub type ProduceOutcome = Result<Produced, ProduceError>;

/// What a fetch from one partition read, and what to wait on for more.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Records,
    /// Notified when the partition receives new batches (for long polling).
    pub appended: Arc<Event>,
    /// The partition's log end offset (a follower's) or high watermark (a consumer's), kept
    /// current by its owner: a waiter registers on `appended`, then re-reads this, so a
    /// batch appended in between is not missed.
    pub end_offset: Arc<AtomicI64>,
}

/// The answer to a fetch from one partition.
pub type FetchOutcome = Result<Fetched, FetchError>;

/// The offset ListOffsets found in one partition (-1 when no record is at or after the
/// timestamp asked for).
#[derive(Debug, Clone, Copy)]
pub struct ListedOffset {
    pub offset: i64,
    /// The found record's timestamp; -1 for the special timestamps (earliest, latest).
    pub timestamp_ms: i64,
}

/// The answer to ListOffsets for one partition.
pub type ListOffsetsOutcome = Result<ListedOffset, ListOffsetsError>;

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

/// Where a leader epoch ended in one partition's log: the epoch (the asked one, or the
/// latest before it) and the offset after its last record.
#[derive(Debug, Clone, Copy)]
pub struct EpochEnd {
    pub leader_epoch: i32,
    pub end_offset: i64,
}

/// The answer to OffsetForLeaderEpoch for one partition.
pub type EpochEndOutcome = Result<EpochEnd, EpochEndError>;

/// One partition, open on its owner core.
pub struct Partition {
    pub log: PartitionLog,
    pub(in crate::broker) producers: RefCell<ProducerStates>,
    /// Recent batches in memory, for strategies that bypass the page cache.
    pub(in crate::broker) tail: Option<RefCell<TailCache>>,
    /// Notified when the log end, the high watermark or the role changes: long polls,
    /// acks=all producers and followers' fetches wait on it.
    pub(in crate::broker) appended: Arc<Event>,
    pub(in crate::broker) end_offset: Arc<AtomicI64>,
    /// Leader or follower, the ISR and the high watermark (see `cluster::replica`).
    pub(in crate::broker) replica: RefCell<ReplicaState>,
    /// The high watermark, kept current by the owner, for waiters on other cores.
    pub(in crate::broker) high_watermark: Arc<AtomicI64>,
    /// Where each leader epoch began in this log.
    pub(in crate::broker) epochs: RefCell<LeaderEpochCache>,
    /// Raised on every role change; a follower's fetch task stops when it no longer matches.
    pub(in crate::broker) role_generation: Cell<u64>,
    /// An ISR change of this partition is being proposed (one at a time).
    pub(in crate::broker) isr_proposal_in_flight: Cell<bool>,
    /// When this partition's failed log was last tried to be opened again (see
    /// `Shard::reopen_failed`), so a device that still refuses is not retried on every request.
    pub(in crate::broker) reopen_attempted: Cell<Option<std::time::Instant>>,
}

impl Partition {
    /// Whether this broker leads the partition now.
    pub(crate) fn is_leader(&self) -> bool {
        self.replica.borrow().role() == Role::Leader
    }

    /// Publishes the log end and the watermark to waiters, and wakes them.
    pub(in crate::broker) fn publish_progress(&self) {
        self.end_offset
            .store(self.log.log_end_offset(), Ordering::Release);
        self.high_watermark
            .store(self.replica.borrow().high_watermark(), Ordering::Release);
        self.appended.notify(usize::MAX);
    }
}

/// Idempotent producers' recent sequences, from the batches of the active segment.
pub(in crate::broker) async fn rebuild_producers(
    log: &PartitionLog,
) -> Result<ProducerStates, LogError> {
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
