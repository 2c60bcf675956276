//! The records share partitions write to `__share_group_state`: our own layout (not
//! Kafka's). Each record is a full snapshot of one share partition's durable state, so the
//! latest one (highest sequence) is all a replay needs.
//!
//! ```text
//! key:
//!   0   kind            u8    1 = share-partition state
//!   1   group length    u16   big-endian, then the group id (UTF-8)
//!   ..  topic id        16 bytes (UUID)
//!   ..  partition       i32
//!
//! value:
//!   0   version         u8    0
//!   1   sequence        u64   raised by every write of this share partition
//!   9   start offset    i64   the share-partition start offset (SPSO)
//!  17   run count       u32   then that many runs of 19 bytes:
//!        first offset   i64
//!        last offset    i64   inclusive
//!        state          u8    0 = available, 2 = acknowledged, 4 = archived (Kafka's codes)
//!        delivery count u16
//! ```
//!
//! Offsets at or above the start offset that no run covers are available and were never
//! delivered. Runs are ascending, do not overlap, start at or after the start offset and
//! span at most [`WINDOW_OFFSETS_MAX`] offsets from it. Replay keeps the snapshot with the
//! highest sequence per key, so writes that reach the log out of order cannot roll a share
//! partition back. Every length is checked before it is used; a malformed record is an
//! `Err`, never a panic.

use bytes::BufMut;
use uuid::Uuid;

pub use crate::broker::group::record::RecordError;

/// Key kind of a share-partition state snapshot.
pub const KIND_SHARE_STATE: u8 = 1;
/// Version of the snapshot value layout.
pub const VALUE_VERSION: u8 = 0;
/// Most offsets a snapshot may span from its start offset (far above any lock limit).
pub const WINDOW_OFFSETS_MAX: i64 = 1 << 17;

const RUN_BYTES: usize = 19;
const VALUE_FIXED_BYTES: usize = 21;

/// Which share partition a snapshot is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StateKey {
    pub group: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

impl StateKey {
    /// The `__share_group_state` partition that holds this key: Kafka's formula, the
    /// group coordinator's hash over `group:topicId:partition`.
    pub fn state_partition(&self, partitions: i32) -> i32 {
        let text = format!("{}:{}:{}", self.group, self.topic_id, self.partition);
        crate::broker::group::coordinator_for(&text, partitions)
    }
}

/// The durable states of a record (acquired records are written as available).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurableState {
    Available,
    Acknowledged,
    Archived,
}

impl DurableState {
    fn code(self) -> u8 {
        match self {
            DurableState::Available => 0,
            DurableState::Acknowledged => 2,
            DurableState::Archived => 4,
        }
    }

    fn from_code(code: u8) -> Option<DurableState> {
        match code {
            0 => Some(DurableState::Available),
            2 => Some(DurableState::Acknowledged),
            4 => Some(DurableState::Archived),
            _ => None,
        }
    }
}

/// Offsets `first..=last`, all in one state with one delivery count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first: i64,
    pub last: i64,
    pub state: DurableState,
    pub delivery_count: u16,
}

/// A share partition's durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub sequence: u64,
    pub start: i64,
    pub runs: Vec<Run>,
}

pub fn encode_key(key: &StateKey) -> Result<Vec<u8>, RecordError> {
    let length = u16::try_from(key.group.len()).map_err(|_| RecordError::TooLong {
        length: key.group.len(),
    })?;
    let mut bytes = Vec::with_capacity(1 + 2 + key.group.len() + 16 + 4);
    bytes.put_u8(KIND_SHARE_STATE);
    bytes.put_u16(length);
    bytes.put_slice(key.group.as_bytes());
    bytes.put_slice(key.topic_id.as_bytes());
    bytes.put_i32(key.partition);
    Ok(bytes)
}

pub fn encode_value(snapshot: &Snapshot) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(VALUE_FIXED_BYTES + snapshot.runs.len() * RUN_BYTES);
    bytes.put_u8(VALUE_VERSION);
    bytes.put_u64(snapshot.sequence);
    bytes.put_i64(snapshot.start);
    // Runs are bounded by WINDOW_OFFSETS_MAX, far below u32::MAX.
    bytes.put_u32(snapshot.runs.len() as u32);
    for run in &snapshot.runs {
        bytes.put_i64(run.first);
        bytes.put_i64(run.last);
        bytes.put_u8(run.state.code());
        bytes.put_u16(run.delivery_count);
    }
    bytes
}

/// A cursor over untrusted bytes that checks every read against what is present.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let available = self.bytes.len() - self.at;
        if N > available {
            return Err(RecordError::Truncated {
                what,
                at: self.at,
                needed: N,
                available,
            });
        }
        let mut array = [0u8; N];
        array.copy_from_slice(&self.bytes[self.at..self.at + N]);
        self.at += N;
        Ok(array)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
}

/// Decodes a key; `Ok(None)` for a kind this version does not know (skipped on replay).
pub fn decode_key(bytes: &[u8]) -> Result<Option<StateKey>, RecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let [kind] = reader.take::<1>("key kind")?;
    if kind != KIND_SHARE_STATE {
        return Ok(None);
    }
    let length = usize::from(u16::from_be_bytes(reader.take("group length")?));
    if length > reader.remaining() {
        return Err(RecordError::Truncated {
            what: "group",
            at: reader.at,
            needed: length,
            available: reader.remaining(),
        });
    }
    let at = reader.at;
    let group = String::from_utf8(bytes[at..at + length].to_vec())
        .map_err(|_| RecordError::NotUtf8 { what: "group", at })?;
    reader.at += length;
    let topic_id = Uuid::from_bytes(reader.take("topic id")?);
    let partition = i32::from_be_bytes(reader.take("partition")?);
    if reader.remaining() != 0 {
        return Err(RecordError::TrailingBytes {
            what: "key",
            extra: reader.remaining(),
        });
    }
    Ok(Some(StateKey {
        group,
        topic_id,
        partition,
    }))
}

pub fn decode_value(bytes: &[u8]) -> Result<Snapshot, RecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let [version] = reader.take::<1>("value version")?;
    if version != VALUE_VERSION {
        return Err(RecordError::Unknown {
            what: "value version",
            at: 0,
            found: version,
        });
    }
    let sequence = u64::from_be_bytes(reader.take("sequence")?);
    let start = i64::from_be_bytes(reader.take("start offset")?);
    let count_at = reader.at;
    let count = u32::from_be_bytes(reader.take("run count")?) as usize;
    if count.checked_mul(RUN_BYTES) != Some(reader.remaining()) {
        return Err(RecordError::BadLength {
            what: "run count",
            at: count_at,
            length: count as i64,
        });
    }
    if start < 0 {
        return Err(bad("start offset", 9, start));
    }
    let mut runs = Vec::with_capacity(count);
    let mut next_free = start;
    for _ in 0..count {
        let at = reader.at;
        let first = i64::from_be_bytes(reader.take("run first offset")?);
        let last = i64::from_be_bytes(reader.take("run last offset")?);
        let [code] = reader.take::<1>("run state")?;
        let delivery_count = u16::from_be_bytes(reader.take("run delivery count")?);
        // A run may not end at i64::MAX: the next free offset, last + 1, would overflow.
        if first < next_free
            || last < first
            || last == i64::MAX
            || last - start >= WINDOW_OFFSETS_MAX
        {
            return Err(bad("run offsets", at, first));
        }
        let state = DurableState::from_code(code).ok_or(RecordError::Unknown {
            what: "run state",
            at: at + 16,
            found: code,
        })?;
        runs.push(Run {
            first,
            last,
            state,
            delivery_count,
        });
        next_free = last + 1;
    }
    Ok(Snapshot {
        sequence,
        start,
        runs,
    })
}

fn bad(what: &'static str, at: usize, length: i64) -> RecordError {
    RecordError::BadLength { what, at, length }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StateKey {
        StateKey {
            group: "workers".into(),
            topic_id: Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788),
            partition: 3,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            sequence: 9,
            start: 100,
            runs: vec![
                Run {
                    first: 101,
                    last: 104,
                    state: DurableState::Acknowledged,
                    delivery_count: 1,
                },
                Run {
                    first: 105,
                    last: 105,
                    state: DurableState::Available,
                    delivery_count: 3,
                },
                Run {
                    first: 110,
                    last: 111,
                    state: DurableState::Archived,
                    delivery_count: 5,
                },
            ],
        }
    }

    #[test]
    fn keys_and_snapshots_round_trip() {
        let encoded = encode_key(&key()).expect("key");
        assert_eq!(decode_key(&encoded), Ok(Some(key())));
        assert_eq!(decode_value(&encode_value(&snapshot())), Ok(snapshot()));
        let empty = Snapshot {
            sequence: 0,
            start: 0,
            runs: Vec::new(),
        };
        assert_eq!(decode_value(&encode_value(&empty)), Ok(empty));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let encoded = encode_key(&key()).expect("key");
        for end in 0..encoded.len() {
            assert!(decode_key(&encoded[..end]).is_err(), "key cut at {end}");
        }
        let value = encode_value(&snapshot());
        for end in 0..value.len() {
            assert!(decode_value(&value[..end]).is_err(), "value cut at {end}");
        }
    }

    #[test]
    fn hostile_counts_and_runs_are_refused() {
        let mut value = encode_value(&snapshot());
        value[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            decode_value(&value).is_err(),
            "a run count beyond the bytes"
        );
        // A run that spans far beyond the window, overlapping runs, an unknown state.
        let mut wide = snapshot();
        wide.runs[2].last = i64::MAX;
        assert!(decode_value(&encode_value(&wide)).is_err());
        let mut overlapping = snapshot();
        overlapping.runs[1].first = 104;
        assert!(decode_value(&encode_value(&overlapping)).is_err());
        let mut below_start = snapshot();
        below_start.runs[0].first = 99;
        assert!(decode_value(&encode_value(&below_start)).is_err());
        let mut unknown_state = encode_value(&snapshot());
        unknown_state[21 + 16] = 1;
        assert!(
            decode_value(&unknown_state).is_err(),
            "acquired is never written"
        );
        assert_eq!(decode_key(&[7, 0, 0]), Ok(None), "another kind is skipped");
    }

    #[test]
    fn a_run_ending_at_i64_max_is_refused_not_an_overflow() {
        // Found while writing the internal_records fuzz target: with the start offset at
        // i64::MAX, a run ending there made `next_free = last + 1` overflow (a panic with
        // overflow checks; without them it wrapped to i64::MIN and a following run below the
        // start offset was accepted).
        let run = |offset| Run {
            first: offset,
            last: offset,
            state: DurableState::Available,
            delivery_count: 0,
        };
        let at_the_end = Snapshot {
            sequence: 1,
            start: i64::MAX,
            runs: vec![run(i64::MAX)],
        };
        assert_eq!(
            decode_value(&encode_value(&at_the_end)),
            Err(bad("run offsets", VALUE_FIXED_BYTES, i64::MAX))
        );
        let mut wrapped = at_the_end;
        wrapped.runs.push(run(i64::MIN));
        assert!(decode_value(&encode_value(&wrapped)).is_err());
    }

    #[test]
    fn state_partitions_follow_kafkas_key() {
        let key = key();
        let expected = crate::broker::group::coordinator_for(
            "workers:12345678-9abc-def0-1122-334455667788:3",
            50,
        );
        assert_eq!(key.state_partition(50), expected);
    }
}
