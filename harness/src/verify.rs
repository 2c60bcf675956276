//! After a run: was every acknowledged record consumed, once, in order?
//!
//! The producers are idempotent, so every record has an identity that survives retries and
//! failovers: (partition, producer id, sequence). Producers note the sequences the brokers
//! acknowledged ([`Acknowledged`]); consumers note the sequences they read, batch by batch,
//! in log order ([`Consumed`]). Then, for each partition and producer:
//!
//! - **lost**: acknowledged sequences no consumer read;
//! - **duplicated**: sequences a consumer read more than once (the broker wrote a retry
//!   twice);
//! - **out of order**: batches that brought new sequences below the highest one already
//!   read (a later record came before an earlier one).
//!
//! When several consumers read the same partition (more consumers than partitions), each is
//! checked on its own. Sequences are kept as sorted, merged ranges, so memory stays small
//! however long the run (one range per partition and producer when all is well).

use std::collections::BTreeMap;

use serde::Serialize;

/// A set of integers as sorted, disjoint, non-adjacent half-open ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(i64, i64)>,
}

impl RangeSet {
    /// Adds `[start, end)`; returns how many of its values were already in the set.
    pub fn insert(&mut self, start: i64, end: i64) -> u64 {
        if start >= end {
            return 0;
        }
        // Every range that overlaps or touches [start, end) merges with it.
        let first = self
            .ranges
            .partition_point(|&(_, range_end)| range_end < start);
        let last = self
            .ranges
            .partition_point(|&(range_start, _)| range_start <= end);
        let mut overlap = 0;
        let (mut merged_start, mut merged_end) = (start, end);
        for &(range_start, range_end) in &self.ranges[first..last] {
            overlap += (range_end.min(end) - range_start.max(start)).max(0) as u64;
            merged_start = merged_start.min(range_start);
            merged_end = merged_end.max(range_end);
        }
        self.ranges
            .splice(first..last, [(merged_start, merged_end)]);
        overlap
    }

    /// How many values the set holds.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(start, end)| (end - start) as u64)
            .sum()
    }

    /// How many values of `self` are not in `other`.
    pub fn missing_from(&self, other: &RangeSet) -> u64 {
        let mut copy = other.clone();
        let present: u64 = self
            .ranges
            .iter()
            .map(|&(start, end)| copy.insert(start, end))
            .sum();
        self.len() - present
    }

    /// The end of the highest range (0 when empty).
    pub fn end(&self) -> i64 {
        self.ranges.last().map_or(0, |&(_, end)| end)
    }

    /// Adds every range of `other`.
    pub fn extend(&mut self, other: &RangeSet) {
        for &(start, end) in &other.ranges {
            self.insert(start, end);
        }
    }
}

/// Key of the checks: (partition, producer id).
type Stream = (i32, i64);

/// Sequences the brokers acknowledged.
#[derive(Clone, Debug, Default)]
pub struct Acknowledged {
    streams: BTreeMap<Stream, RangeSet>,
}

impl Acknowledged {
    /// `records` records from `base_sequence` of `producer_id` on `partition` were acked.
    pub fn record(&mut self, partition: i32, producer_id: i64, base_sequence: i32, records: u64) {
        let start = i64::from(base_sequence);
        self.streams
            .entry((partition, producer_id))
            .or_default()
            .insert(start, start + records as i64);
    }

    pub fn merge(&mut self, other: &Acknowledged) {
        for (stream, ranges) in &other.streams {
            self.streams.entry(*stream).or_default().extend(ranges);
        }
    }

    pub fn records(&self) -> u64 {
        self.streams.values().map(RangeSet::len).sum()
    }
}

/// What one consumer read, per partition and producer.
#[derive(Clone, Debug, Default)]
pub struct Consumed {
    streams: BTreeMap<Stream, ConsumedStream>,
}

#[derive(Clone, Debug, Default)]
struct ConsumedStream {
    sequences: RangeSet,
    duplicated_records: u64,
    out_of_order_batches: u64,
}

impl Consumed {
    /// A batch read from `partition`, in log order. Batches without a producer id (not from
    /// an idempotent producer) are not checked.
    pub fn record(&mut self, partition: i32, producer_id: i64, base_sequence: i32, records: u64) {
        if producer_id < 0 || base_sequence < 0 {
            return;
        }
        let stream = self.streams.entry((partition, producer_id)).or_default();
        let start = i64::from(base_sequence);
        let end = start + records as i64;
        let highest_before = stream.sequences.end();
        let duplicated = stream.sequences.insert(start, end);
        stream.duplicated_records += duplicated;
        let new_records = records.saturating_sub(duplicated);
        if new_records > 0 && start < highest_before && duplicated < records {
            stream.out_of_order_batches += 1;
        }
    }

    /// Adds another part of the same consumer (a disjoint set of partitions).
    pub fn merge(&mut self, other: &Consumed) {
        for (stream, theirs) in &other.streams {
            let ours = self.streams.entry(*stream).or_default();
            ours.sequences.extend(&theirs.sequences);
            ours.duplicated_records += theirs.duplicated_records;
            ours.out_of_order_batches += theirs.out_of_order_batches;
        }
    }
}

/// The verdict, as the results report it.
#[derive(Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Records the brokers acknowledged to the producers.
    pub acknowledged_records: u64,
    /// Acknowledged records the consumers read (once per consumer reading the partition).
    pub consumed_acknowledged_records: u64,
    pub lost_records: u64,
    pub duplicated_records: u64,
    pub out_of_order_batches: u64,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.lost_records == 0 && self.duplicated_records == 0 && self.out_of_order_batches == 0
    }
}

/// Checks each consumer's reads against the acknowledgements of the partitions it read
/// (`readers[i]` lists the partitions consumer `i` read).
pub fn verify(acknowledged: &Acknowledged, readers: &[(Vec<i32>, Consumed)]) -> Verification {
    let mut verdict = Verification {
        acknowledged_records: acknowledged.records(),
        ..Verification::default()
    };
    let empty = ConsumedStream::default();
    for (partitions, consumed) in readers {
        for (stream, acked) in &acknowledged.streams {
            if !partitions.contains(&stream.0) {
                continue;
            }
            let read = consumed.streams.get(stream).unwrap_or(&empty);
            let lost = acked.missing_from(&read.sequences);
            verdict.lost_records += lost;
            verdict.consumed_acknowledged_records += acked.len() - lost;
            verdict.duplicated_records += read.duplicated_records;
            verdict.out_of_order_batches += read.out_of_order_batches;
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_set_merges_and_counts_overlaps() {
        let mut set = RangeSet::default();
        assert_eq!(set.insert(0, 10), 0);
        assert_eq!(set.insert(20, 30), 0);
        assert_eq!(set.ranges, vec![(0, 10), (20, 30)]);
        assert_eq!(set.insert(10, 20), 0, "adjacent ranges merge");
        assert_eq!(set.ranges, vec![(0, 30)]);
        assert_eq!(set.insert(25, 35), 5);
        assert_eq!(set.insert(40, 45), 0);
        assert_eq!(set.insert(-5, 50), 35 + 5);
        assert_eq!(set.ranges, vec![(-5, 50)]);
        assert_eq!(set.len(), 55);
        assert_eq!(set.insert(3, 3), 0);
    }

    #[test]
    fn missing_counts_what_the_other_set_lacks() {
        let mut acked = RangeSet::default();
        acked.insert(0, 100);
        let mut read = RangeSet::default();
        read.insert(0, 40);
        read.insert(50, 120);
        assert_eq!(acked.missing_from(&read), 10);
        assert_eq!(read.missing_from(&acked), 20);
    }

    fn acked(batches: &[(i32, i32)]) -> Acknowledged {
        let mut acknowledged = Acknowledged::default();
        for &(partition, sequence) in batches {
            acknowledged.record(partition, 7, sequence, 10);
        }
        acknowledged
    }

    #[test]
    fn everything_read_once_in_order_passes() {
        let acknowledged = acked(&[(0, 0), (0, 10), (1, 0)]);
        let mut consumed = Consumed::default();
        for &(partition, sequence) in &[(0, 0), (1, 0), (0, 10), (0, 20)] {
            // (0, 20) was written but its acknowledgement never came: not a problem.
            consumed.record(partition, 7, sequence, 10);
        }
        consumed.record(0, -1, -1, 10); // another, non-idempotent producer's batch
        let verdict = verify(&acknowledged, &[(vec![0, 1], consumed)]);
        assert_eq!(
            verdict,
            Verification {
                acknowledged_records: 30,
                consumed_acknowledged_records: 30,
                ..Verification::default()
            }
        );
        assert!(verdict.passed());
    }

    #[test]
    fn finds_lost_duplicated_and_reordered_records() {
        let acknowledged = acked(&[(0, 0), (0, 10), (0, 20), (0, 30)]);
        let mut consumed = Consumed::default();
        consumed.record(0, 7, 0, 10);
        consumed.record(0, 7, 20, 10); // 10..20 comes late: out of order
        consumed.record(0, 7, 10, 10);
        consumed.record(0, 7, 20, 10); // a retry written twice
                                       // 30..40 never read: lost
        let verdict = verify(&acknowledged, &[(vec![0], consumed)]);
        assert_eq!(verdict.lost_records, 10);
        assert_eq!(verdict.duplicated_records, 10);
        assert_eq!(verdict.out_of_order_batches, 1);
        assert_eq!(verdict.consumed_acknowledged_records, 30);
        assert!(!verdict.passed());
    }

    #[test]
    fn each_reader_of_a_shared_partition_must_read_it_all() {
        let acknowledged = acked(&[(0, 0)]);
        let mut whole = Consumed::default();
        whole.record(0, 7, 0, 10);
        let verdict = verify(
            &acknowledged,
            &[(vec![0], whole.clone()), (vec![0], Consumed::default())],
        );
        assert_eq!(verdict.lost_records, 10);
        assert_eq!(verdict.consumed_acknowledged_records, 10);
        let both = verify(&acknowledged, &[(vec![0], whole.clone()), (vec![0], whole)]);
        assert!(both.passed());
    }
}
