//! The offset index file (`<base offset>.index`), read back when a sealed segment is opened.
//!
//! Feeds the file's bytes to `OffsetIndex::decode` with a segment length taken from the input,
//! then runs every lookup on what it accepted and checks each answer against a plain scan of
//! the entries. An accepted file must encode back to the same bytes.
//!
//! Input: segment length u64 BE, query u64 BE, then the index file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardlog_fuzz::index;
use shardlog_storage::index::{IndexError, OffsetIndex, OFFSET_ENTRY_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some(input) = index::read(data) else {
        return;
    };
    let bytes = input.bytes;
    let entries: Vec<(u32, u32)> = bytes
        .chunks_exact(OFFSET_ENTRY_BYTES)
        .map(|raw| {
            (
                u32::from_be_bytes(raw[..4].try_into().unwrap()),
                u32::from_be_bytes(raw[4..].try_into().unwrap()),
            )
        })
        .collect();
    let decoded = OffsetIndex::decode(bytes, input.bound);
    let mut index = match decoded {
        Ok(index) => index,
        Err(IndexError::PartialEntry { len, entry_bytes }) => {
            assert_eq!((len, entry_bytes), (bytes.len(), OFFSET_ENTRY_BYTES));
            assert!(bytes.len() % OFFSET_ENTRY_BYTES != 0);
            return;
        }
        Err(IndexError::PastEnd {
            entry,
            position,
            segment_len,
        }) => {
            assert_eq!(segment_len, input.bound);
            assert_eq!(u64::from(entries[entry].1), position);
            assert!(position >= segment_len);
            return;
        }
        Err(IndexError::NotIncreasing { entry }) => {
            let (previous, this) = (entries[entry - 1], entries[entry]);
            assert!(this.0 <= previous.0 || this.1 <= previous.1);
            return;
        }
    };

    // Accepted: whole entries, strictly increasing, inside the segment.
    assert_eq!(bytes.len() % OFFSET_ENTRY_BYTES, 0);
    assert_eq!(index.len(), entries.len());
    assert_eq!(index.is_empty(), entries.is_empty());
    assert_eq!(index.encode(), bytes);
    let mut pushed = OffsetIndex::default();
    for &(relative_offset, position) in &entries {
        assert!(u64::from(position) < input.bound);
        pushed.push(relative_offset, position);
    }
    assert_eq!(pushed, index);
    assert_eq!(index.last(), entries.last().copied());

    let target = input.query as u32;
    let expected = entries
        .iter()
        .rev()
        .find(|&&(relative_offset, _)| relative_offset <= target)
        .map_or(0, |&(_, position)| position);
    assert_eq!(index.lookup(target), expected);

    let position = input.query;
    let expected = entries
        .iter()
        .rev()
        .find(|&&(_, entry_position)| u64::from(entry_position) <= position)
        .copied();
    assert_eq!(index.last_at_or_before_position(position), expected);

    index.truncate_to_position(position);
    let kept = entries
        .iter()
        .take_while(|&&(_, entry_position)| u64::from(entry_position) < position)
        .count();
    assert_eq!(index.encode(), bytes[..kept * OFFSET_ENTRY_BYTES]);
});
