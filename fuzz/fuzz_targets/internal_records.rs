//! The keys and values the group and share coordinators keep in their internal topics
//! (`__consumer_offsets`, `__share_group_state`), replayed when a broker takes a
//! coordinator over.
//!
//! Feeds the bytes to one of `broker::group::record::{decode_key, decode_offset_value}` and
//! `broker::share::record::{decode_key, decode_value}`. Checks that error positions lie in the
//! input, that an accepted share snapshot keeps its documented invariants, and that what
//! decodes encodes back to the same bytes.
//!
//! Input: a selector byte (see `shardlog_fuzz::internal`), then the key or value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardlog::broker::group::record as group;
use shardlog::broker::share::record as share;
use shardlog::broker::share::record::RecordError;
use shardlog_fuzz::internal;

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = internal::read(data) else {
        return;
    };
    match which {
        internal::GROUP_KEY => match group::decode_key(bytes) {
            Ok(Some(key)) => {
                let encoded = group::encode_offset_key(&key).expect("a decoded key encodes");
                assert_eq!(encoded, bytes);
            }
            Ok(None) => assert_ne!(bytes[0], group::KIND_COMMITTED_OFFSET),
            Err(error) => check_error(&error, bytes.len()),
        },
        internal::GROUP_OFFSET_VALUE => match group::decode_offset_value(bytes) {
            Ok(value) => {
                // Bytes after the metadata are refused, so the whole input encodes back.
                assert_eq!(group::encode_offset_value(&value), bytes);
            }
            Err(error) => check_error(&error, bytes.len()),
        },
        internal::SHARE_KEY => match share::decode_key(bytes) {
            Ok(Some(key)) => {
                let encoded = share::encode_key(&key).expect("a decoded key encodes");
                assert_eq!(encoded, bytes);
            }
            Ok(None) => assert_ne!(bytes[0], share::KIND_SHARE_STATE),
            Err(error) => check_error(&error, bytes.len()),
        },
        _ => match share::decode_value(bytes) {
            Ok(snapshot) => {
                // Runs are ascending, do not overlap, start at or after the start offset and
                // span at most WINDOW_OFFSETS_MAX offsets from it.
                assert!(snapshot.start >= 0);
                let mut next_free = i128::from(snapshot.start);
                for run in &snapshot.runs {
                    assert!(
                        i128::from(run.first) >= next_free,
                        "run overlaps or precedes"
                    );
                    assert!(run.last >= run.first);
                    assert!(
                        i128::from(run.last) - i128::from(snapshot.start)
                            < i128::from(share::WINDOW_OFFSETS_MAX)
                    );
                    next_free = i128::from(run.last) + 1;
                }
                assert_eq!(share::encode_value(&snapshot), bytes);
            }
            Err(error) => check_error(&error, bytes.len()),
        },
    }
});

/// Every position an error names lies in the input.
fn check_error(error: &RecordError, len: usize) {
    match *error {
        RecordError::Truncated {
            at,
            needed,
            available,
            ..
        } => {
            assert!(at <= len);
            assert_eq!(available, len - at);
            assert!(needed > available);
        }
        RecordError::NotUtf8 { at, .. }
        | RecordError::Unknown { at, .. }
        | RecordError::BadLength { at, .. } => assert!(at < len),
        RecordError::TrailingBytes { extra, .. } => assert!(extra > 0 && extra < len),
        RecordError::TooLong { .. } => panic!("a decoder reported an encoder error"),
    }
}
