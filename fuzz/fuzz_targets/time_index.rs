//! The time index file (`<base offset>.timeindex`), read back when a sealed segment is opened.
//!
//! Feeds the file's bytes to `TimeIndex::decode` with a relative-offset bound taken from the
//! input, then checks lookups and truncation against a plain scan of the entries. An accepted
//! file must encode back to the same bytes.
//!
//! Input: next relative offset u64 BE, query u64 BE, then the index file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardlog_fuzz::index;
use shardlog_storage::index::{IndexError, TimeIndex, TIME_ENTRY_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some(input) = index::read(data) else {
        return;
    };
    let bytes = input.bytes;
    let entries: Vec<(i64, u32)> = bytes
        .chunks_exact(TIME_ENTRY_BYTES)
        .map(|raw| {
            (
                i64::from_be_bytes(raw[..8].try_into().unwrap()),
                u32::from_be_bytes(raw[8..].try_into().unwrap()),
            )
        })
        .collect();
    let mut index = match TimeIndex::decode(bytes, input.bound) {
        Ok(index) => index,
        Err(IndexError::PartialEntry { len, entry_bytes }) => {
            assert_eq!((len, entry_bytes), (bytes.len(), TIME_ENTRY_BYTES));
            assert!(bytes.len() % TIME_ENTRY_BYTES != 0);
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

    // Accepted: whole entries, both fields strictly increasing, offsets below the bound.
    assert_eq!(bytes.len() % TIME_ENTRY_BYTES, 0);
    assert_eq!(index.len(), entries.len());
    assert_eq!(index.is_empty(), entries.is_empty());
    assert_eq!(index.encode(), bytes);
    let mut pushed = TimeIndex::default();
    for &(timestamp, relative_offset) in &entries {
        assert!(u64::from(relative_offset) < input.bound);
        pushed.push(timestamp, relative_offset);
    }
    assert_eq!(pushed, index);

    let target_ms = input.query as i64;
    let expected = entries
        .iter()
        .rev()
        .find(|&&(timestamp, _)| timestamp < target_ms)
        .map_or(0, |&(_, relative_offset)| relative_offset);
    assert_eq!(index.lookup(target_ms), expected);

    let cut = input.query as u32;
    index.truncate_to_offset(cut);
    let kept = entries
        .iter()
        .take_while(|&&(_, relative_offset)| relative_offset < cut)
        .count();
    assert_eq!(index.encode(), bytes[..kept * TIME_ENTRY_BYTES]);
});
