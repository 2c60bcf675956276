//! The records the coordinator writes to `__consumer_offsets`: our own key and value layout
//! (not Kafka's), one record per committed partition offset.
//!
//! ```text
//! key (committed offset):
//!   0   kind            u8    1 = committed offset
//!   1   group length    u16   big-endian, then the group id (UTF-8)
//!   ..  topic length    u16   then the topic name (UTF-8)
//!   ..  partition       i32
//!
//! value (committed offset), absent (null) for a tombstone that deletes the key:
//!   0   version         u8    0
//!   1   offset          i64   the next offset the group will consume
//!   9   leader epoch    i32   -1 when the client gave none
//!  13   commit time     i64   ms since the epoch, the broker's clock
//!  21   metadata length i32   -1 for null, then that many bytes of UTF-8
//! ```
//!
//! Replay keeps the latest value per key, in log order. Every length is checked against
//! the bytes present before it is used; a malformed record is an `Err` naming the byte
//! position, never a panic.

use bytes::{BufMut, Bytes};

/// Key kind of a committed offset.
pub const KIND_COMMITTED_OFFSET: u8 = 1;
/// Version of the committed-offset value layout.
pub const OFFSET_VALUE_VERSION: u8 = 0;

const KIND_BYTES: usize = 1;
const STRING_LENGTH_BYTES: usize = 2;
const PARTITION_BYTES: usize = 4;
const VALUE_OFFSET_AT: usize = 1;
const VALUE_LEADER_EPOCH_AT: usize = 9;
const VALUE_COMMIT_TIME_AT: usize = 13;
const VALUE_METADATA_LENGTH_AT: usize = 21;
const VALUE_FIXED_BYTES: usize = 25;

/// Which committed offset a record is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// A group's committed position in one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub commit_time_ms: i64,
    pub metadata: Option<String>,
}

/// Why a stored record could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record {what} ends at byte {at}: needs {needed} bytes, {available} available")]
    Truncated {
        what: &'static str,
        at: usize,
        needed: usize,
        available: usize,
    },
    #[error("record {what} at byte {at} is not UTF-8")]
    NotUtf8 { what: &'static str, at: usize },
    #[error("record {what} at byte {at}: unknown version or kind {found}")]
    Unknown {
        what: &'static str,
        at: usize,
        found: u8,
    },
    #[error("record {what} at byte {at}: bad length {length}")]
    BadLength {
        what: &'static str,
        at: usize,
        length: i64,
    },
    #[error("record {what} has {extra} bytes after its end")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("a string of {length} bytes does not fit its u16 length")]
    TooLong { length: usize },
}

/// Encodes the key of a committed offset.
pub fn encode_offset_key(key: &OffsetKey) -> Result<Vec<u8>, RecordError> {
    let mut bytes = Vec::with_capacity(
        KIND_BYTES + 2 * STRING_LENGTH_BYTES + key.group.len() + key.topic.len() + PARTITION_BYTES,
    );
    bytes.put_u8(KIND_COMMITTED_OFFSET);
    put_string(&mut bytes, &key.group)?;
    put_string(&mut bytes, &key.topic)?;
    bytes.put_i32(key.partition);
    Ok(bytes)
}

fn put_string(bytes: &mut Vec<u8>, text: &str) -> Result<(), RecordError> {
    let length =
        u16::try_from(text.len()).map_err(|_| RecordError::TooLong { length: text.len() })?;
    bytes.put_u16(length);
    bytes.put_slice(text.as_bytes());
    Ok(())
}

/// Encodes the value of a committed offset.
pub fn encode_offset_value(value: &OffsetValue) -> Vec<u8> {
    let metadata = value.metadata.as_deref().map(str::as_bytes);
    let mut bytes = Vec::with_capacity(VALUE_FIXED_BYTES + metadata.map_or(0, <[u8]>::len));
    bytes.put_u8(OFFSET_VALUE_VERSION);
    bytes.put_i64(value.offset);
    bytes.put_i32(value.leader_epoch);
    bytes.put_i64(value.commit_time_ms);
    match metadata {
        // The broker bounds metadata far below i32::MAX before it gets here.
        Some(metadata) => {
            bytes.put_i32(metadata.len() as i32);
            bytes.put_slice(metadata);
        }
        None => bytes.put_i32(-1),
    }
    bytes
}

/// A cursor over untrusted bytes that checks every read against what is present.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, what: &'static str, count: usize) -> Result<&'a [u8], RecordError> {
        let available = self.bytes.len() - self.at;
        if count > available {
            return Err(RecordError::Truncated {
                what,
                at: self.at,
                needed: count,
                available,
            });
        }
        let taken = &self.bytes[self.at..self.at + count];
        self.at += count;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(what, N)?);
        Ok(array)
    }

    fn string(&mut self, what: &'static str, length: usize) -> Result<String, RecordError> {
        let at = self.at;
        let raw = self.take(what, length)?;
        String::from_utf8(raw.to_vec()).map_err(|_| RecordError::NotUtf8 { what, at })
    }
}

/// Decodes a record key. `Ok(None)` for a kind this version does not know (skipped on
/// replay, so a newer broker's records do not stop an older one from loading).
pub fn decode_key(bytes: &[u8]) -> Result<Option<OffsetKey>, RecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let [kind] = reader.array::<1>("key kind")?;
    if kind != KIND_COMMITTED_OFFSET {
        return Ok(None);
    }
    let group_length = u16::from_be_bytes(reader.array("group length")?);
    let group = reader.string("group", usize::from(group_length))?;
    let topic_length = u16::from_be_bytes(reader.array("topic length")?);
    let topic = reader.string("topic", usize::from(topic_length))?;
    let partition = i32::from_be_bytes(reader.array("partition")?);
    let extra = bytes.len() - reader.at;
    if extra != 0 {
        return Err(RecordError::TrailingBytes { what: "key", extra });
    }
    Ok(Some(OffsetKey {
        group,
        topic,
        partition,
    }))
}

/// Decodes a committed-offset value.
pub fn decode_offset_value(bytes: &[u8]) -> Result<OffsetValue, RecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let [version] = reader.array::<1>("value version")?;
    if version != OFFSET_VALUE_VERSION {
        return Err(RecordError::Unknown {
            what: "value version",
            at: 0,
            found: version,
        });
    }
    debug_assert_eq!(reader.at, VALUE_OFFSET_AT);
    let offset = i64::from_be_bytes(reader.array("offset")?);
    debug_assert_eq!(reader.at, VALUE_LEADER_EPOCH_AT);
    let leader_epoch = i32::from_be_bytes(reader.array("leader epoch")?);
    debug_assert_eq!(reader.at, VALUE_COMMIT_TIME_AT);
    let commit_time_ms = i64::from_be_bytes(reader.array("commit time")?);
    debug_assert_eq!(reader.at, VALUE_METADATA_LENGTH_AT);
    let metadata_length = i32::from_be_bytes(reader.array("metadata length")?);
    let metadata = match metadata_length {
        -1 => None,
        length if length >= 0 => Some(reader.string("metadata", length as usize)?),
        length => {
            return Err(RecordError::BadLength {
                what: "metadata length",
                at: VALUE_METADATA_LENGTH_AT,
                length: i64::from(length),
            })
        }
    };
    // Version 0 ends here; a longer value is damaged, not a newer format (that would carry
    // another version byte).
    let extra = bytes.len() - reader.at;
    if extra > 0 {
        return Err(RecordError::TrailingBytes {
            what: "value",
            extra,
        });
    }
    Ok(OffsetValue {
        offset,
        leader_epoch,
        commit_time_ms,
        metadata,
    })
}

/// A key and value ready for a `BatchBuilder` (`None` value: a tombstone).
pub fn offset_record(
    key: &OffsetKey,
    value: Option<&OffsetValue>,
) -> Result<(Bytes, Option<Bytes>), RecordError> {
    let key = Bytes::from(encode_offset_key(key)?);
    Ok((
        key,
        value.map(|value| Bytes::from(encode_offset_value(value))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> OffsetKey {
        OffsetKey {
            group: "billing".into(),
            topic: "orders".into(),
            partition: 7,
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        let encoded = encode_offset_key(&key()).expect("encode");
        assert_eq!(decode_key(&encoded), Ok(Some(key())));
        for metadata in [None, Some(String::new()), Some("checkpoint é".to_string())] {
            let value = OffsetValue {
                offset: 42,
                leader_epoch: -1,
                commit_time_ms: 1_700_000_000_000,
                metadata,
            };
            let encoded = encode_offset_value(&value);
            assert_eq!(decode_offset_value(&encoded), Ok(value));
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let encoded = encode_offset_key(&key()).expect("encode");
        for end in 0..encoded.len() {
            assert!(decode_key(&encoded[..end]).is_err(), "key cut at {end}");
        }
        let value = encode_offset_value(&OffsetValue {
            offset: 1,
            leader_epoch: 3,
            commit_time_ms: 5,
            metadata: Some("abc".into()),
        });
        for end in 0..value.len() {
            assert!(
                decode_offset_value(&value[..end]).is_err(),
                "value cut at {end}"
            );
        }
    }

    #[test]
    fn hostile_lengths_and_kinds_are_refused() {
        let mut value = encode_offset_value(&OffsetValue {
            offset: 1,
            leader_epoch: 0,
            commit_time_ms: 0,
            metadata: None,
        });
        value[VALUE_METADATA_LENGTH_AT..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_offset_value(&value),
            Err(RecordError::Truncated { .. })
        ));
        value[VALUE_METADATA_LENGTH_AT..].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(matches!(
            decode_offset_value(&value),
            Err(RecordError::BadLength { .. })
        ));
        assert_eq!(decode_key(&[9, 0, 0]), Ok(None));
        let mut trailing = encode_offset_key(&key()).expect("encode");
        trailing.push(0);
        assert!(matches!(
            decode_key(&trailing),
            Err(RecordError::TrailingBytes { extra: 1, .. })
        ));
        let mut long_value = encode_offset_value(&OffsetValue {
            offset: 7,
            leader_epoch: 1,
            commit_time_ms: 2,
            metadata: Some("m".into()),
        });
        long_value.extend_from_slice(b"xy");
        assert!(matches!(
            decode_offset_value(&long_value),
            Err(RecordError::TrailingBytes {
                what: "value",
                extra: 2
            })
        ));
    }
}
