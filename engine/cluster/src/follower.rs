//! A follower's side of replication: which request to send its leader next, what to make of
//! the answer, and how fetched batches reach the log.
//!
//! [`Follower`] is a sans-I/O machine for one fetch loop (one leader, one role generation):
//! the broker's fetch task (`broker/replication.rs`) and the replication simulation both ask
//! it what to do and tell it what happened, so the simulation checks the rules that ship.
//! The loop is Kafka's (KIP-101, KIP-279):
//!
//! ```text
//!   connect ──► OffsetForLeaderEpoch(latest epoch) ──► cut the divergent tail ──► Fetch ◄─┐
//!      ▲                 │ leader not ready: ask again later                      │      │
//!      │                 ▼                                                        ▼      │
//!      └─── connection lost / append failed / offset out of range: ask again   append ──┘
//! ```
//!
//! [`append_fetched`] is the one way fetched batches are appended, on the broker and in the
//! simulation: whole batches as the leader wrote them, each CRC checked once, each batch's
//! leader epoch recorded before the batch is.

use std::cell::RefCell;

use bytes::Bytes;

use super::epochs::LeaderEpochCache;
use super::producers::ProducerStates;
use super::state::BrokerId;
use crate::batch::{self, BatchError, BatchHeader};
use crate::error::LogError;
use crate::log::{AppendInfo, PartitionLog};

/// What the follower asks its leader next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerRequest {
    /// OffsetForLeaderEpoch for this log's latest epoch: where did it end on the leader?
    EpochEnd { epoch: i32 },
    /// Fetch from this offset (the follower's log end).
    Fetch { offset: i64 },
}

/// The leader's answer to OffsetForLeaderEpoch, as the follower sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEndAnswer {
    /// Where the epoch ended on the leader: (the largest epoch not above the one asked
    /// about, its end offset).
    Ended { leader_epoch: i32, end_offset: i64 },
    /// The leader refused (it does not lead yet, or not at our epoch).
    Refused,
}

/// What to do after an OffsetForLeaderEpoch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// This log agrees with the leader's: fetch from the log end next.
    None,
    /// Cut the log to end at this offset, then call [`Follower::cut`]. Records past it
    /// were never committed.
    CutTo(i64),
    /// The leader could not answer yet: pause, then ask again.
    AskAgainLater,
}

/// The leader's answer to a fetch, as the follower sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAnswer {
    /// Records (perhaps none) and the leader's high watermark.
    Records,
    /// The offset asked for is not in the leader's log: this log may have diverged.
    OffsetOutOfRange,
    /// Any other refusal (not the leader, a fenced or unknown epoch).
    Refused,
}

/// What to do after a fetch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFetch {
    /// Append the records with [`append_fetched`], then fetch again.
    Append,
    /// Pause before the next request; leader changes reach the follower through metadata.
    Pause,
}

/// One fetch loop's state: which leader, and whether this log must be checked for a
/// divergent tail before it fetches again.
#[derive(Debug, Clone)]
pub struct Follower {
    leader: BrokerId,
    needs_truncation: bool,
}

impl Follower {
    /// A loop following `leader`; the first request checks for divergence.
    pub fn new(leader: BrokerId) -> Follower {
        Follower {
            leader,
            needs_truncation: true,
        }
    }

    pub fn leader(&self) -> BrokerId {
        self.leader
    }

    /// Whether the next request is a divergence check.
    pub fn needs_truncation(&self) -> bool {
        self.needs_truncation
    }

    /// Something went wrong between the two logs (a new connection, a failed append, an
    /// unanswered request): check for divergence before fetching again.
    pub fn resync(&mut self) {
        self.needs_truncation = true;
    }

    /// The request to send next. An empty epoch cache has nothing to cut, so it fetches.
    pub fn next_request(&mut self, latest_epoch: Option<i32>, log_end: i64) -> FollowerRequest {
        match latest_epoch {
            Some(epoch) if self.needs_truncation => FollowerRequest::EpochEnd { epoch },
            _ => {
                self.needs_truncation = false;
                FollowerRequest::Fetch { offset: log_end }
            }
        }
    }

    /// Where this log must end after the leader's `answer` about its latest epoch.
    /// `high_watermark`, `log_start` and `log_end` are this replica's own.
    pub fn divergence(
        &mut self,
        answer: EpochEndAnswer,
        epochs: &LeaderEpochCache,
        high_watermark: i64,
        log_start: i64,
        log_end: i64,
    ) -> Divergence {
        let EpochEndAnswer::Ended {
            leader_epoch,
            end_offset,
        } = answer
        else {
            return Divergence::AskAgainLater;
        };
        let target = epochs.divergence_point((leader_epoch, end_offset), high_watermark, log_end);
        if target >= log_end {
            self.needs_truncation = false;
            return Divergence::None;
        }
        // Never below the log start: retention may have removed what the leader still has.
        Divergence::CutTo(target.max(log_start))
    }

    /// The cut asked for by [`divergence`](Self::divergence) is done: fetch next.
    pub fn cut(&mut self) {
        self.needs_truncation = false;
    }

    /// What to do with a fetch answer.
    pub fn fetch_answered(&mut self, answer: FetchAnswer) -> AfterFetch {
        match answer {
            FetchAnswer::Records => AfterFetch::Append,
            FetchAnswer::OffsetOutOfRange => {
                self.needs_truncation = true;
                AfterFetch::Pause
            }
            FetchAnswer::Refused => AfterFetch::Pause,
        }
    }
}

/// Appends the whole batches of a replica fetch (`records`, as the leader wrote them:
/// offsets and leader epochs assigned) to `log`, skipping those it already holds. For each
/// batch, its leader epoch is recorded in `epochs` first (the checkpoint written through the
/// storage's async small-file API when it changes), an idempotent producer's
/// sequences in `producers` under the append lock, and then `appended` is told what was
/// stored. A partial last batch (a size-limited fetch) is left for the next fetch.
///
/// Borrows `epochs` and `producers` only between awaits, so other tasks of the core may use
/// them while an append is in flight.
pub async fn append_fetched(
    log: &PartitionLog,
    epochs: &RefCell<LeaderEpochCache>,
    producers: &RefCell<ProducerStates>,
    records: &Bytes,
    max_batch_bytes: usize,
    mut appended: impl FnMut(&AppendInfo, &Bytes),
) -> Result<(), LogError> {
    let cut = |range| records.slice(range);
    for item in batch::valid_batches(records, max_batch_bytes, cut) {
        let valid = match item {
            Ok(found) => found,
            Err(BatchError::Truncated { .. }) => break,
            Err(error) => return Err(LogError::InvalidBatch(error)),
        };
        let header = *valid.header();
        if header.last_offset() < log.log_end_offset() {
            continue;
        }
        // The epoch's entry is durable before any batch of that epoch is appended.
        let checkpoint = epochs
            .borrow_mut()
            .stage_assign(header.partition_leader_epoch, header.base_offset);
        if let Some(checkpoint) = checkpoint {
            checkpoint.write().await?;
        }
        let record_producer = |stored: &BatchHeader| {
            if stored.producer_id >= 0 {
                producers.borrow_mut().record(
                    stored.producer_id,
                    stored.producer_epoch,
                    stored.base_sequence,
                    stored.records_count,
                    stored.base_offset,
                );
            }
            true
        };
        if let Some(info) = log.append_valid_replicated(&valid, record_producer).await? {
            appended(&info, valid.bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{SimDisk, Storage};
    use std::path::Path;

    fn epochs_with(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let disk = SimDisk::with_alignment(1, 1);
        let mut epochs = LeaderEpochCache::open(Storage::Sim(disk), Path::new("/p")).expect("open");
        for (epoch, start) in entries {
            epochs.assign(*epoch, *start).expect("assign");
        }
        epochs
    }

    #[test]
    fn a_new_loop_checks_for_divergence_first_unless_it_knows_no_epoch() {
        let mut follower = Follower::new(2);
        assert_eq!(
            follower.next_request(Some(3), 10),
            FollowerRequest::EpochEnd { epoch: 3 }
        );
        let mut empty = Follower::new(2);
        assert_eq!(
            empty.next_request(None, 0),
            FollowerRequest::Fetch { offset: 0 }
        );
        assert!(!empty.needs_truncation());
    }

    #[test]
    fn a_divergent_tail_is_cut_then_fetching_starts_at_the_new_end() {
        let epochs = epochs_with(&[(1, 0), (2, 5)]);
        let mut follower = Follower::new(2);
        follower.next_request(epochs.latest_epoch(), 9);
        // The leader never saw epoch 2: epoch 1 ended at 4 there.
        let answer = EpochEndAnswer::Ended {
            leader_epoch: 1,
            end_offset: 4,
        };
        assert_eq!(
            follower.divergence(answer, &epochs, 3, 0, 9),
            Divergence::CutTo(4)
        );
        assert!(follower.needs_truncation(), "until the cut is done");
        follower.cut();
        assert_eq!(
            follower.next_request(epochs.latest_epoch(), 4),
            FollowerRequest::Fetch { offset: 4 }
        );
    }

    #[test]
    fn a_refused_epoch_question_is_asked_again_and_a_cut_never_passes_the_log_start() {
        let epochs = epochs_with(&[(1, 0)]);
        let mut follower = Follower::new(2);
        assert_eq!(
            follower.divergence(EpochEndAnswer::Refused, &epochs, 0, 0, 9),
            Divergence::AskAgainLater
        );
        assert!(follower.needs_truncation());
        let unknown = EpochEndAnswer::Ended {
            leader_epoch: -1,
            end_offset: -1,
        };
        // Only the watermark is surely committed; but offsets below 6 were deleted here.
        assert_eq!(
            follower.divergence(unknown, &epochs, 2, 6, 9),
            Divergence::CutTo(6)
        );
    }

    #[test]
    fn an_out_of_range_fetch_sends_the_loop_back_to_a_divergence_check() {
        let mut follower = Follower::new(2);
        follower.next_request(None, 0);
        assert_eq!(
            follower.fetch_answered(FetchAnswer::Records),
            AfterFetch::Append
        );
        assert!(!follower.needs_truncation());
        assert_eq!(
            follower.fetch_answered(FetchAnswer::Refused),
            AfterFetch::Pause
        );
        assert!(!follower.needs_truncation());
        assert_eq!(
            follower.fetch_answered(FetchAnswer::OffsetOutOfRange),
            AfterFetch::Pause
        );
        assert!(follower.needs_truncation());
    }
}
