//! Idempotent producers: deduplication on (producer id, epoch, sequence), per partition.
//!
//! Kafka's rules, which librdkafka and the Java client rely on:
//! - a batch whose sequences match one of the last `BATCHES_REMEMBERED` batches of its producer
//!   and epoch is a retry: it is not appended again, and the original offset is returned;
//! - otherwise its first sequence must follow the last one (wrapping at i32::MAX);
//! - a higher epoch starts over at sequence 0; a lower epoch is fenced.
//!
//! State is rebuilt when a partition is opened, by walking the batches of its active segment.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer for deduplication (Kafka: 5, the most in flight).
pub const BATCHES_REMEMBERED: usize = 5;

/// Producers remembered per partition; the least recently seen is forgotten beyond this.
pub const PRODUCERS_MAX: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchSequences {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchSequences>,
    last_seen: u64,
}

/// What to do with a batch from an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// A retry of a batch already appended at this base offset: answer with it, append nothing.
    Duplicate { base_offset: i64 },
    /// Refuse it, for this reason.
    Reject(SequenceRefusal),
}

/// Why an idempotent producer's batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceRefusal {
    /// Its epoch is older than the producer's latest: a fenced (zombie) producer.
    #[error("the producer's epoch is older than its latest")]
    StaleEpoch,
    /// Its first sequence does not follow the producer's last one.
    #[error("the batch's first sequence does not follow the producer's last")]
    OutOfOrder,
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

/// One partition's producers. Owned by the partition's core.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    clock: u64,
}

impl ProducerStates {
    /// Decides what to do with a batch of `record_count` records from `producer_id`.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        record_count: i32,
    ) -> Verdict {
        let last_sequence = last_sequence_of(first_sequence, record_count);
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or forgotten after a restart or retention): accept.
            return Verdict::Append;
        };
        if epoch < entry.epoch {
            return Verdict::Reject(SequenceRefusal::StaleEpoch);
        }
        if epoch > entry.epoch {
            return if first_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Reject(SequenceRefusal::OutOfOrder)
            };
        }
        if let Some(seen) = entry.batches.iter().find(|seen| {
            seen.first_sequence == first_sequence && seen.last_sequence == last_sequence
        }) {
            return Verdict::Duplicate {
                base_offset: seen.base_offset,
            };
        }
        match entry.batches.back() {
            Some(latest) if first_sequence != next_sequence(latest.last_sequence) => {
                Verdict::Reject(SequenceRefusal::OutOfOrder)
            }
            _ => Verdict::Append,
        }
    }

    /// Records an appended batch.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        record_count: i32,
        base_offset: i64,
    ) {
        self.clock += 1;
        let clock = self.clock;
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= PRODUCERS_MAX {
            if let Some((&oldest, _)) = self
                .producers
                .iter()
                .min_by_key(|(_, entry)| entry.last_seen)
            {
                self.producers.remove(&oldest);
            }
        }
        let entry = self.producers.entry(producer_id).or_insert(ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            last_seen: clock,
        });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_seen = clock;
        entry.batches.push_back(BatchSequences {
            first_sequence,
            last_sequence: last_sequence_of(first_sequence, record_count),
            base_offset,
        });
        while entry.batches.len() > BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
    }

    /// Forgets everything (after the log was truncated under the producers).
    pub fn clear(&mut self) {
        self.producers.clear();
    }
}

fn last_sequence_of(first_sequence: i32, record_count: i32) -> i32 {
    let span = i64::from(record_count.max(1)) - 1;
    ((i64::from(first_sequence) + span) % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_duplicates_and_gaps_are_out_of_order() {
        let mut states = ProducerStates::default();
        assert_eq!(states.check(7, 0, 0, 10), Verdict::Append);
        states.record(7, 0, 0, 10, 100);
        assert_eq!(
            states.check(7, 0, 0, 10),
            Verdict::Duplicate { base_offset: 100 }
        );
        assert_eq!(states.check(7, 0, 10, 5), Verdict::Append);
        states.record(7, 0, 10, 5, 110);
        assert_eq!(
            states.check(7, 0, 20, 5),
            Verdict::Reject(SequenceRefusal::OutOfOrder)
        );
        assert_eq!(
            states.check(7, 0, 10, 5),
            Verdict::Duplicate { base_offset: 110 }
        );
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut states = ProducerStates::default();
        states.record(1, 3, 0, 1, 0);
        assert_eq!(
            states.check(1, 2, 1, 1),
            Verdict::Reject(SequenceRefusal::StaleEpoch)
        );
        assert_eq!(
            states.check(1, 4, 5, 1),
            Verdict::Reject(SequenceRefusal::OutOfOrder)
        );
        assert_eq!(states.check(1, 4, 0, 1), Verdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for batch in 0..7 {
            states.record(9, 0, batch, 1, i64::from(batch));
        }
        assert_eq!(
            states.check(9, 0, 6, 1),
            Verdict::Duplicate { base_offset: 6 }
        );
        assert_eq!(
            states.check(9, 0, 2, 1),
            Verdict::Duplicate { base_offset: 2 }
        );
        assert_eq!(
            states.check(9, 0, 1, 1),
            Verdict::Reject(SequenceRefusal::OutOfOrder)
        );
    }

    #[test]
    fn sequences_wrap() {
        let mut states = ProducerStates::default();
        states.record(2, 0, i32::MAX - 1, 2, 0);
        assert_eq!(states.check(2, 0, 0, 1), Verdict::Append);
    }
}
