//! RecordBatch v2 bytes, as a producer sends them and as a segment file holds them.
//!
//! Feeds the buffer to `batch::validate`, walks it with `batch::batches`, and decodes every
//! batch that validates with `batch::decode_records`, through zstd decompression for
//! compressed batches. Checks that positions and lengths stay inside the input, that the
//! decompression cap holds, and that decoded records survive a rebuild with `BatchBuilder`.
//!
//! Input: an options byte (see `shardlog_fuzz::record_batch`), then the batches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardlog_fuzz::record_batch;
use shardlog_storage::batch::layout::{HEADER_BYTES, RECORD_MIN_BYTES};
use shardlog_storage::batch::{self, BatchBuilder, BatchError, BatchHeader, Compression, Record};

fuzz_target!(|data: &[u8]| {
    let Some(mut input) = record_batch::read(data) else {
        return;
    };
    if input.fix_crc {
        record_batch::fix_crcs(&mut input.bytes);
    }
    let buffer = &input.bytes[..];
    let max = input.max_batch_bytes;

    let first = batch::validate(buffer, max);
    if let Err(error) = &first {
        check_header_error(error, buffer.len());
    }

    let mut walk = batch::batches(buffer, max);
    let mut expected_position = 0;
    let mut count = 0;
    while let Some(item) = walk.next() {
        count += 1;
        match item {
            Ok((position, header)) => {
                assert_eq!(position, expected_position, "batches skipped bytes");
                let total = header.total_bytes();
                assert!(total >= HEADER_BYTES && total <= max);
                let end = position + total;
                assert!(end <= buffer.len(), "a batch runs past the buffer");
                if count == 1 {
                    assert_eq!(first.as_ref().ok(), Some(&header));
                }
                let stored = &buffer[position..end];
                assert_eq!(BatchHeader::parse(stored), Ok(header));
                assert_eq!(batch::validate(stored, total), Ok(header));
                check_records(stored, &header, input.decompressed_cap);
                expected_position = end;
            }
            Err(error) => {
                if count == 1 {
                    assert_eq!(first.as_ref().err(), Some(&error));
                }
                check_header_error(&error, buffer.len());
                assert!(walk.next().is_none(), "batches goes on after an error");
                break;
            }
        }
    }
    if count == 0 {
        assert!(buffer.is_empty());
    }
});

/// `validate` reports only header errors, and their positions lie in the buffer.
fn check_header_error(error: &BatchError, len: usize) {
    let at = match *error {
        BatchError::Truncated { at, .. }
        | BatchError::BadMagic { at, .. }
        | BatchError::BadLength { at, .. }
        | BatchError::TooLarge { at, .. }
        | BatchError::CrcMismatch { at, .. }
        | BatchError::BadAttributes { at, .. }
        | BatchError::BadLastOffsetDelta { at, .. }
        | BatchError::BadRecordsCount { at, .. } => at,
        ref other => panic!("validate returned a record-level error: {other:?}"),
    };
    // An empty buffer is reported as truncated at 0.
    assert!(at < len.max(1), "error at byte {at} of a {len}-byte buffer");
}

fn check_records(stored: &[u8], header: &BatchHeader, cap: usize) {
    let codec = header
        .compression()
        .expect("a validated header has a defined codec");
    let records = match batch::decode_records(stored, cap) {
        Ok(records) => records,
        Err(error) => {
            check_record_error(&error, codec, stored.len() - HEADER_BYTES);
            return;
        }
    };
    assert_eq!(records.len(), header.records_count as usize);
    let mut previous = -1i64;
    let mut payload_bytes = 0usize;
    for record in &records {
        assert!(i64::from(record.offset_delta) > previous);
        assert!(record.offset_delta <= header.last_offset_delta);
        previous = i64::from(record.offset_delta);
        payload_bytes += record.key.as_ref().map_or(0, Vec::len);
        payload_bytes += record.value.as_ref().map_or(0, Vec::len);
        for record_header in &record.headers {
            assert!(std::str::from_utf8(&record_header.key).is_ok());
            payload_bytes += record_header.key.len();
            payload_bytes += record_header.value.as_ref().map_or(0, Vec::len);
        }
    }
    // What was decoded came from at most this many bytes.
    let area_bound = match codec {
        Compression::None => stored.len() - HEADER_BYTES,
        _ => cap,
    };
    assert!(payload_bytes <= area_bound);
    assert!(records.len() * RECORD_MIN_BYTES <= area_bound);

    // Rebuild the records with the product's encoder and decode them again.
    let rebuild_codec = match codec {
        Compression::Zstd => Compression::Zstd,
        _ => Compression::None,
    };
    let mut builder = BatchBuilder::new(header.base_timestamp, rebuild_codec).producer(
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
    );
    for record in &records {
        builder.push(record);
    }
    let rebuilt = builder
        .build(header.base_offset)
        .expect("decoded records rebuild");
    let again = batch::decode_records(&rebuilt, usize::MAX).expect("a rebuilt batch decodes");
    let renumbered: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(index, record)| Record {
            offset_delta: index as i32,
            ..record.clone()
        })
        .collect();
    assert_eq!(again, renumbered);

    // A canonical encoding is the shortest, so the stored records area decompresses to at
    // least the rebuilt one's size: a cap one byte below it must refuse the batch.
    if codec == Compression::Zstd && !records.is_empty() {
        let mut canonical = BatchBuilder::new(header.base_timestamp, Compression::None);
        for record in &records {
            canonical.push(record);
        }
        let area = canonical.build(0).expect("rebuild").len() - HEADER_BYTES;
        match batch::decode_records(stored, area - 1) {
            Err(BatchError::DecompressedTooLarge { max, .. }) => assert_eq!(max, area - 1),
            other => panic!("cap {} below the records area passed: {other:?}", area - 1),
        }
    }
}

/// `decode_records` on a validated batch fails only in the records area; for an
/// uncompressed batch, its positions lie in that area.
fn check_record_error(error: &BatchError, codec: Compression, area_len: usize) {
    match *error {
        BatchError::BadRecord { at, .. } | BatchError::RecordCountMismatch { at, .. } => {
            if codec == Compression::None {
                assert!(
                    at <= area_len,
                    "record error at {at} of a {area_len}-byte area"
                );
            }
        }
        BatchError::BadRecordsCount { .. }
        | BatchError::UnsupportedCompression { .. }
        | BatchError::Decompress { .. }
        | BatchError::DecompressedTooLarge { .. } => {
            assert!(
                codec != Compression::None || matches!(error, BatchError::BadRecordsCount { .. })
            );
        }
        ref other => panic!("decode_records failed a validated batch in its header: {other:?}"),
    }
}
