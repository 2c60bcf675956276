//! The offset index (`<base offset>.index`): where in the log file a batch starts.
//!
//! ```text
//! entry (8 bytes, big-endian), one every `index_interval_bytes` of log:
//! +-----------------------------+-----------------------------+
//! | relative offset u32 @0      | file position u32 @4        |
//! +-----------------------------+-----------------------------+
//! relative offset = a batch's base offset - the segment's base offset
//! ```
//! Entries strictly increase in both fields; positions lie inside the log file. Kafka uses the
//! same 8-byte entry. Positions are 32-bit, which caps a segment at 4 GiB.

use super::IndexError;

pub const OFFSET_ENTRY_BYTES: usize = 8;
const RELATIVE_OFFSET_AT: usize = 0;
const POSITION_AT: usize = 4;

/// One segment's offset index, in memory. Owned by its segment; not shared across cores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Records that the batch with `relative_offset` starts at `position`.
    ///
    /// # Panics
    /// If the entry does not increase on the last one: the caller appends in log order.
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(
                relative_offset > last_offset && position > last_position,
                "index entry ({relative_offset}, {position}) after ({last_offset}, {last_position})"
            );
        }
        self.entries.push((relative_offset, position));
    }

    /// The position of the last indexed batch whose relative offset is at most `target`
    /// (0 when none is): a batch boundary at or before the target's batch.
    pub fn lookup(&self, relative_target: u32) -> u32 {
        let after = self
            .entries
            .partition_point(|&(relative_offset, _)| relative_offset <= relative_target);
        match after {
            0 => 0,
            found => self.entries[found - 1].1,
        }
    }

    /// The last entry whose position is at most `position`, if any: a batch boundary that
    /// lets a read find its end without walking every batch before it.
    pub fn last_at_or_before_position(&self, position: u64) -> Option<(u32, u32)> {
        let after = self
            .entries
            .partition_point(|&(_, entry_position)| u64::from(entry_position) <= position);
        after.checked_sub(1).map(|found| self.entries[found])
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    /// Drops every entry at or after `position` (the log was cut there).
    pub fn truncate_to_position(&mut self, position: u64) {
        let keep = self
            .entries
            .partition_point(|&(_, entry_position)| u64::from(entry_position) < position);
        self.entries.truncate(keep);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(relative_offset, position) in &self.entries {
            bytes.extend_from_slice(&relative_offset.to_be_bytes());
            bytes.extend_from_slice(&position.to_be_bytes());
        }
        bytes
    }

    /// Parses and checks an index file against the log file's length.
    pub fn decode(bytes: &[u8], segment_len: u64) -> Result<OffsetIndex, IndexError> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return Err(IndexError::PartialEntry {
                len: bytes.len(),
                entry_bytes: OFFSET_ENTRY_BYTES,
            });
        }
        let mut index = OffsetIndex::default();
        for (entry, raw) in bytes.chunks_exact(OFFSET_ENTRY_BYTES).enumerate() {
            let relative_offset = read_u32(raw, RELATIVE_OFFSET_AT);
            let position = read_u32(raw, POSITION_AT);
            if u64::from(position) >= segment_len {
                return Err(IndexError::PastEnd {
                    entry,
                    position: u64::from(position),
                    segment_len,
                });
            }
            if let Some(&(last_offset, last_position)) = index.entries.last() {
                if relative_offset <= last_offset || position <= last_position {
                    return Err(IndexError::NotIncreasing { entry });
                }
            }
            index.entries.push((relative_offset, position));
        }
        Ok(index)
    }
}

pub(super) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_last_entry_at_or_before_the_target() {
        let mut index = OffsetIndex::default();
        index.push(10, 4096);
        index.push(20, 8192);
        assert_eq!(index.lookup(5), 0);
        assert_eq!(index.lookup(10), 4096);
        assert_eq!(index.lookup(19), 4096);
        assert_eq!(index.lookup(25), 8192);
    }

    #[test]
    fn encode_decode_round_trip_and_checks() {
        let mut index = OffsetIndex::default();
        index.push(3, 100);
        index.push(9, 300);
        let bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 1000), Ok(index.clone()));
        assert!(matches!(
            OffsetIndex::decode(&bytes, 300),
            Err(IndexError::PastEnd { entry: 1, .. })
        ));
        assert!(matches!(
            OffsetIndex::decode(&bytes[..7], 1000),
            Err(IndexError::PartialEntry { .. })
        ));
        let mut backwards = bytes.clone();
        backwards[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            OffsetIndex::decode(&backwards, 1000),
            Err(IndexError::NotIncreasing { entry: 1 })
        ));
    }

    #[test]
    fn truncation_drops_entries_at_or_after_the_cut() {
        let mut index = OffsetIndex::default();
        index.push(1, 10);
        index.push(2, 20);
        assert_eq!(index.last_at_or_before_position(19), Some((1, 10)));
        assert_eq!(index.last_at_or_before_position(20), Some((2, 20)));
        assert_eq!(index.last_at_or_before_position(9), None);
        index.truncate_to_position(20);
        assert_eq!(index.last(), Some((1, 10)));
    }
}
