//! The per-batch stamp: what the producer writes into each batch just before sending it, and
//! how a consumer reads the send time back for end-to-end latency.
//!
//! Every request carries the same template batch (see `broker_workload::template_batch`); the
//! stamp is the part that changes per send. The first record of the template carries one
//! header, [`SEND_TIME_HEADER_KEY`], whose 8-byte value is the intended send time:
//!
//! ```text
//! batch header (61 bytes, see shardlog::batch::layout)
//!   27 baseTimestamp  i64   <- send time in ms
//!   35 maxTimestamp   i64   <- send time in ms
//!   43 producerId     i64   <- the idempotent producer's id (or -1)
//!   51 producerEpoch  i16   <- its epoch (or -1)
//!   53 baseSequence   i32   <- the batch's first sequence (or -1)
//! first record: length | attributes | timestampDelta | offsetDelta | key | value |
//!               headersCount = 1 | key "harness-send-us" | valueLength = 8 |
//!               send time, u64 BE microseconds since the UNIX epoch   <- stamped
//! ```
//!
//! All of these lie inside the CRC-32C (bytes 21 to the end), so [`stamp`] recomputes it:
//! one pass over the batch per send, a few tens of microseconds per MiB with the CPU's CRC
//! instruction. The record timestamps are deltas of 0 from baseTimestamp, so they follow.
//!
//! Times are microseconds since the UNIX epoch as this process sees them: [`unix_us`] maps
//! an `Instant` through one anchor taken at the first call, so producer and consumer threads
//! of the harness agree exactly and the clock never steps backwards.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shardlog::batch::layout::{
    ATTRIBUTES_OFFSET, BASE_SEQUENCE_OFFSET, BASE_TIMESTAMP_OFFSET, COMPRESSION_MASK,
    CRC_COVERED_FROM, CRC_OFFSET, HEADER_BYTES, MAX_TIMESTAMP_OFFSET, PRODUCER_EPOCH_OFFSET,
    PRODUCER_ID_OFFSET, RECORDS_OFFSET,
};
use shardlog::batch::varint::{decode_varint, decode_varlong};

/// Key of the record header that holds the send time.
pub const SEND_TIME_HEADER_KEY: &[u8] = b"harness-send-us";

/// Bytes of the send time value.
pub const SEND_TIME_BYTES: usize = 8;

/// An idempotent producer's identity and a batch's first sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// `at` as microseconds since the UNIX epoch, on this process's one anchor.
pub fn unix_us(at: Instant) -> u64 {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    let (anchor_instant, anchor_us) = *ANCHOR.get_or_init(|| {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), since_epoch.as_micros() as u64)
    });
    if at >= anchor_instant {
        anchor_us + (at - anchor_instant).as_micros() as u64
    } else {
        anchor_us.saturating_sub((anchor_instant - at).as_micros() as u64)
    }
}

/// Where the send time's 8 bytes are in `batch`, if its first record's first header is the
/// send-time header. Reads only the header and the first record, never past `batch`: a
/// batch from the wire that is short, compressed or differently shaped gives `None`.
pub fn send_time_position(batch: &[u8]) -> Option<usize> {
    if batch.len() < HEADER_BYTES {
        return None;
    }
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]]);
    if attributes & COMPRESSION_MASK != 0 {
        return None;
    }
    let mut cursor = RECORDS_OFFSET;
    let record_length = usize::try_from(decode_varint(batch, &mut cursor).ok()?).ok()?;
    let record_end = cursor.checked_add(record_length)?.min(batch.len());
    let record = &batch[..record_end];
    cursor += 1; // record attributes
    decode_varlong(record, &mut cursor).ok()?; // timestamp delta
    decode_varint(record, &mut cursor).ok()?; // offset delta
    skip_bytes(record, &mut cursor)?; // key
    skip_bytes(record, &mut cursor)?; // value
    let headers = decode_varint(record, &mut cursor).ok()?;
    if headers < 1 {
        return None;
    }
    let key_length = usize::try_from(decode_varint(record, &mut cursor).ok()?).ok()?;
    let key = record.get(cursor..cursor.checked_add(key_length)?)?;
    if key != SEND_TIME_HEADER_KEY {
        return None;
    }
    cursor += key_length;
    let value_length = decode_varint(record, &mut cursor).ok()?;
    if value_length != SEND_TIME_BYTES as i32 || cursor + SEND_TIME_BYTES > record.len() {
        return None;
    }
    Some(cursor)
}

/// Skips a varint-length-prefixed byte string (-1 = null) at `cursor`.
fn skip_bytes(record: &[u8], cursor: &mut usize) -> Option<()> {
    let length = decode_varint(record, cursor).ok()?;
    if length < -1 {
        return None;
    }
    let length = length.max(0) as usize;
    if *cursor + length > record.len() {
        return None;
    }
    *cursor += length;
    Some(())
}

/// The send time a batch carries (microseconds since the UNIX epoch), if it has one.
pub fn read_send_time_us(batch: &[u8]) -> Option<u64> {
    let at = send_time_position(batch)?;
    let bytes: [u8; SEND_TIME_BYTES] = batch[at..at + SEND_TIME_BYTES].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Stamps `batch` in place: the send time (at `send_time_at`, from [`send_time_position`]
/// on the template), the batch timestamps, the producer fields, and a fresh CRC.
///
/// `batch` must be a whole uncompressed batch whose send-time header sits at
/// `send_time_at`; a shorter slice is a caller bug and panics on the bounds check.
pub fn stamp(
    batch: &mut [u8],
    send_time_at: usize,
    send_time_us: u64,
    producer: Option<ProducerStamp>,
) {
    let send_time_ms = (send_time_us / 1000) as i64;
    put(batch, BASE_TIMESTAMP_OFFSET, &send_time_ms.to_be_bytes());
    put(batch, MAX_TIMESTAMP_OFFSET, &send_time_ms.to_be_bytes());
    put(batch, send_time_at, &send_time_us.to_be_bytes());
    if let Some(producer) = producer {
        put(
            batch,
            PRODUCER_ID_OFFSET,
            &producer.producer_id.to_be_bytes(),
        );
        put(
            batch,
            PRODUCER_EPOCH_OFFSET,
            &producer.producer_epoch.to_be_bytes(),
        );
        put(
            batch,
            BASE_SEQUENCE_OFFSET,
            &producer.base_sequence.to_be_bytes(),
        );
    }
    let crc = crc32c::crc32c(&batch[CRC_COVERED_FROM..]);
    put(batch, CRC_OFFSET, &crc.to_be_bytes());
}

fn put(batch: &mut [u8], at: usize, bytes: &[u8]) {
    batch[at..at + bytes.len()].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog::batch::{decode_records, validate, BatchBuilder, Compression};

    fn template(records: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new(0, Compression::None);
        let value = vec![7u8; 100];
        builder.push_kv(
            None,
            Some(&value),
            &[(SEND_TIME_HEADER_KEY, Some(&[0u8; SEND_TIME_BYTES][..]))],
            0,
        );
        for _ in 1..records {
            builder.push_kv(None, Some(&value), &[], 0);
        }
        builder.build(0).expect("encodes")
    }

    #[test]
    fn a_stamped_batch_is_valid_and_carries_the_stamp() {
        let mut batch = template(3);
        let at = send_time_position(&batch).expect("the template has the header");
        let producer = ProducerStamp {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 300,
        };
        stamp(&mut batch, at, 1_700_000_000_123_456, Some(producer));
        let header = validate(&batch, 1 << 20).expect("the CRC was recomputed");
        assert_eq!(header.base_timestamp, 1_700_000_000_123);
        assert_eq!(header.max_timestamp, 1_700_000_000_123);
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (42, 3, 300)
        );
        assert_eq!(read_send_time_us(&batch), Some(1_700_000_000_123_456));
        let records = decode_records(&batch, 1 << 20).expect("the records decode");
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].headers[0].key, SEND_TIME_HEADER_KEY);
    }

    #[test]
    fn batches_without_the_header_or_cut_short_have_no_send_time() {
        let mut builder = BatchBuilder::new(0, Compression::None);
        builder.push_kv(None, Some(b"value"), &[(b"other", Some(b"12345678"))], 0);
        let other = builder.build(0).expect("encodes");
        assert_eq!(send_time_position(&other), None);
        let batch = template(1);
        for cut in 0..batch.len() {
            assert_eq!(send_time_position(&batch[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn the_clock_is_monotonic_and_near_the_wall_clock() {
        let earlier = Instant::now();
        let first = unix_us(earlier);
        let later = unix_us(earlier + std::time::Duration::from_millis(5));
        assert_eq!(later - first, 5_000);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_micros() as u64;
        assert!(first.abs_diff(wall) < 5_000_000);
    }
}
