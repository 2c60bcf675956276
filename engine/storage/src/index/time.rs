//! The time index (`<base offset>.timeindex`): from a timestamp to a place to start scanning.
//!
//! ```text
//! entry (12 bytes, big-endian), added beside an offset-index entry when the segment's
//! largest timestamp has grown since the last time entry:
//! +---------------------------------------------+-----------------------------+
//! | largest timestamp so far, ms, i64 @0        | relative offset u32 @8      |
//! +---------------------------------------------+-----------------------------+
//! ```
//! Both fields strictly increase. Kafka uses the same 12-byte entry.

use super::offset::read_u32;
use super::IndexError;

pub const TIME_ENTRY_BYTES: usize = 12;
const TIMESTAMP_AT: usize = 0;
const RELATIVE_OFFSET_AT: usize = 8;

/// One segment's time index, in memory. Owned by its segment; not shared across cores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Records that every batch before `relative_offset` has timestamps at most `timestamp_ms`...
    /// precisely: the largest timestamp of the batches up to and including this relative offset
    /// is `timestamp_ms`. Ignored unless both grow.
    pub fn push(&mut self, timestamp_ms: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(&(last_timestamp, last_offset))
                if timestamp_ms <= last_timestamp || relative_offset <= last_offset => {}
            _ => self.entries.push((timestamp_ms, relative_offset)),
        }
    }

    /// A relative offset from which scanning forward finds the first batch with a timestamp
    /// of at least `target_ms`: the offset of the last entry whose timestamp is below it.
    pub fn lookup(&self, target_ms: i64) -> u32 {
        let after = self
            .entries
            .partition_point(|&(timestamp, _)| timestamp < target_ms);
        match after {
            0 => 0,
            found => self.entries[found - 1].1,
        }
    }

    /// Drops every entry at or after `relative_offset` (the log was cut there).
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|&(_, entry_offset)| entry_offset < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(timestamp, relative_offset) in &self.entries {
            bytes.extend_from_slice(&timestamp.to_be_bytes());
            bytes.extend_from_slice(&relative_offset.to_be_bytes());
        }
        bytes
    }

    /// Parses and checks a time index file; `next_relative_offset` bounds its offsets.
    pub fn decode(bytes: &[u8], next_relative_offset: u64) -> Result<TimeIndex, IndexError> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return Err(IndexError::PartialEntry {
                len: bytes.len(),
                entry_bytes: TIME_ENTRY_BYTES,
            });
        }
        let mut index = TimeIndex::default();
        for (entry, raw) in bytes.chunks_exact(TIME_ENTRY_BYTES).enumerate() {
            let mut timestamp = [0; 8];
            timestamp.copy_from_slice(&raw[TIMESTAMP_AT..TIMESTAMP_AT + 8]);
            let timestamp = i64::from_be_bytes(timestamp);
            let relative_offset = read_u32(raw, RELATIVE_OFFSET_AT);
            if u64::from(relative_offset) >= next_relative_offset {
                return Err(IndexError::PastEnd {
                    entry,
                    position: u64::from(relative_offset),
                    segment_len: next_relative_offset,
                });
            }
            if let Some(&(last_timestamp, last_offset)) = index.entries.last() {
                if timestamp <= last_timestamp || relative_offset <= last_offset {
                    return Err(IndexError::NotIncreasing { entry });
                }
            }
            index.entries.push((timestamp, relative_offset));
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_starts_before_the_first_reaching_entry() {
        let mut index = TimeIndex::default();
        index.push(1_000, 0);
        index.push(2_000, 10);
        index.push(1_500, 20); // not larger: ignored
        index.push(3_000, 30);
        assert_eq!(index.len(), 3);
        assert_eq!(index.lookup(500), 0);
        assert_eq!(index.lookup(2_000), 0);
        assert_eq!(index.lookup(2_001), 10);
        assert_eq!(index.lookup(9_000), 30);
        let decoded = TimeIndex::decode(&index.encode(), 31);
        assert_eq!(decoded, Ok(index.clone()));
        assert!(TimeIndex::decode(&index.encode(), 30).is_err());
    }
}
