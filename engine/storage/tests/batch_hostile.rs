//! Hostile input for the batch format: truncations, bit flips, lying lengths and counts,
//! compression bombs, and arbitrary bytes. Every case must end in an `Err` (or a
//! consistent `Ok`), never a panic, and must not allocate from an unchecked length.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use shardlog_storage::batch::layout::*;
use shardlog_storage::batch::*;

/// Records the largest single allocation made by the current thread, so a test can check
/// that hostile lengths were bounded before anything was allocated from them.
struct LargestAllocationTracker;

thread_local! {
    static LARGEST_ALLOCATION_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size_bytes: usize) {
    // try_with: the slot may already be gone while a thread is being torn down.
    let _ = LARGEST_ALLOCATION_BYTES.try_with(|largest| largest.set(largest.get().max(size_bytes)));
}

unsafe impl GlobalAlloc for LargestAllocationTracker {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocationTracker = LargestAllocationTracker;

/// Runs `work` and returns its result with the largest allocation it made on this thread.
fn largest_allocation_during<T>(work: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_ALLOCATION_BYTES.with(|largest| largest.set(0));
    let result = work();
    (result, LARGEST_ALLOCATION_BYTES.with(Cell::get))
}

const MAX_BATCH_BYTES: usize = 1 << 20;
const MAX_DECOMPRESSED_BYTES: usize = 1 << 20;

fn sample_batch(compression: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(1_700_000_000_000, compression).producer(9, 1, 0);
    builder
        .push_kv(
            Some(b"user-1"),
            Some(b"logged in"),
            &[(b"trace", Some(b"a1"))],
            1_700_000_000_001,
        )
        .push_kv(None, None, &[], 1_700_000_000_002)
        .push_kv(
            Some(b""),
            Some(&[0x5a; 200]),
            &[(b"empty", None)],
            1_700_000_000_000,
        );
    builder.build(0).unwrap()
}

fn write_i32(batch: &mut [u8], at: usize, value: i32) {
    batch[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn write_i16(batch: &mut [u8], at: usize, value: i16) {
    batch[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Recomputes the CRC, so a mutation reaches the checks behind it.
fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_COVERED_FROM..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// An uncompressed batch around a hand-written records area, with a correct CRC.
fn raw_batch(records_area: &[u8], records_count: i32, last_offset_delta: i32) -> Vec<u8> {
    let mut batch = BatchBuilder::new(0, Compression::None).build(0).unwrap();
    batch.extend_from_slice(records_area);
    let batch_length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
    write_i32(&mut batch, BATCH_LENGTH_OFFSET, batch_length);
    write_i32(&mut batch, LAST_OFFSET_DELTA_OFFSET, last_offset_delta);
    write_i32(&mut batch, RECORDS_COUNT_OFFSET, records_count);
    fix_crc(&mut batch);
    batch
}

/// A zstd batch whose compressed area is `compressed`, with a correct CRC.
fn zstd_batch(compressed: &[u8], records_count: i32, last_offset_delta: i32) -> Vec<u8> {
    let mut batch = raw_batch(compressed, records_count.min(0), last_offset_delta);
    write_i16(
        &mut batch,
        ATTRIBUTES_OFFSET,
        i16::from(Compression::Zstd.codec_id()),
    );
    write_i32(&mut batch, RECORDS_COUNT_OFFSET, records_count);
    fix_crc(&mut batch);
    batch
}

#[test]
fn every_truncation_is_an_error() {
    for compression in [Compression::None, Compression::Zstd] {
        let batch = sample_batch(compression);
        assert!(validate(&batch, MAX_BATCH_BYTES).is_ok());
        for length in 0..batch.len() {
            let truncated = &batch[..length];
            assert!(
                BatchHeader::parse(truncated).is_err(),
                "parse accepted {length} bytes"
            );
            assert!(
                validate(truncated, MAX_BATCH_BYTES).is_err(),
                "validate accepted {length} bytes"
            );
            assert!(decode_records(truncated, MAX_DECOMPRESSED_BYTES).is_err());
            let results: Vec<_> = batches(truncated, MAX_BATCH_BYTES).collect();
            assert_eq!(results.len(), usize::from(length > 0));
            assert!(results.iter().all(Result::is_err));
        }
    }
}

#[test]
fn every_byte_flip_in_crc_range_is_an_error() {
    for compression in [Compression::None, Compression::Zstd] {
        let batch = sample_batch(compression);
        for position in CRC_COVERED_FROM..batch.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut corrupted = batch.clone();
                corrupted[position] ^= flip;
                let result = validate(&corrupted, MAX_BATCH_BYTES);
                if position >= HEADER_BYTES {
                    // Records bytes are checked by nothing but the CRC.
                    assert!(
                        matches!(result, Err(BatchError::CrcMismatch { at: CRC_OFFSET, .. })),
                        "flip {flip:#x} at {position}: {result:?}"
                    );
                } else {
                    assert!(result.is_err(), "flip {flip:#x} at {position} accepted");
                }
                assert!(decode_records(&corrupted, MAX_DECOMPRESSED_BYTES).is_err());
            }
        }
    }
}

#[test]
fn byte_flips_outside_crc_range() {
    let batch = sample_batch(Compression::None);
    for position in 0..CRC_COVERED_FROM {
        let mut corrupted = batch.clone();
        corrupted[position] ^= 0x40;
        let result = validate(&corrupted, MAX_BATCH_BYTES);
        let unprotected = (BASE_OFFSET_OFFSET..BATCH_LENGTH_OFFSET).contains(&position)
            || (PARTITION_LEADER_EPOCH_OFFSET..MAGIC_OFFSET).contains(&position);
        // baseOffset and the epoch are the broker's to overwrite; all else must be caught.
        assert_eq!(
            result.is_ok(),
            unprotected,
            "flip at {position}: {result:?}"
        );
    }
}

#[test]
fn huge_records_count_is_rejected_without_allocating() {
    let mut uncompressed = sample_batch(Compression::None);
    write_i32(&mut uncompressed, RECORDS_COUNT_OFFSET, i32::MAX);
    write_i32(&mut uncompressed, LAST_OFFSET_DELTA_OFFSET, i32::MAX);
    fix_crc(&mut uncompressed);
    assert!(matches!(
        validate(&uncompressed, MAX_BATCH_BYTES),
        Err(BatchError::BadRecordsCount {
            records_count: i32::MAX,
            at: RECORDS_COUNT_OFFSET,
            ..
        })
    ));

    // Compressed, the header alone cannot bound the count; decoding must, before it
    // sizes the record list.
    let mut compressed = sample_batch(Compression::Zstd);
    write_i32(&mut compressed, RECORDS_COUNT_OFFSET, i32::MAX);
    write_i32(&mut compressed, LAST_OFFSET_DELTA_OFFSET, i32::MAX);
    fix_crc(&mut compressed);
    assert!(validate(&compressed, MAX_BATCH_BYTES).is_ok());
    let (result, largest_bytes) =
        largest_allocation_during(|| decode_records(&compressed, MAX_DECOMPRESSED_BYTES));
    assert!(matches!(
        result,
        Err(BatchError::BadRecordsCount {
            records_count: i32::MAX,
            ..
        })
    ));
    assert!(largest_bytes < 16 << 20, "allocated {largest_bytes} bytes");

    // Count larger than lastOffsetDelta + 1: two records cannot share an offset.
    let mut crowded = sample_batch(Compression::Zstd);
    write_i32(&mut crowded, LAST_OFFSET_DELTA_OFFSET, 1);
    fix_crc(&mut crowded);
    assert!(matches!(
        validate(&crowded, MAX_BATCH_BYTES),
        Err(BatchError::BadRecordsCount {
            records_count: 3,
            max: 2,
            ..
        })
    ));
}

#[test]
fn negative_lengths_are_errors() {
    let batch = sample_batch(Compression::None);
    for batch_length in [-1, i32::MIN, 0, BATCH_LENGTH_MIN - 1] {
        let mut corrupted = batch.clone();
        write_i32(&mut corrupted, BATCH_LENGTH_OFFSET, batch_length);
        assert_eq!(
            validate(&corrupted, MAX_BATCH_BYTES),
            Err(BatchError::BadLength {
                length: batch_length,
                at: BATCH_LENGTH_OFFSET
            })
        );
    }
    let mut negative_count = batch.clone();
    write_i32(&mut negative_count, RECORDS_COUNT_OFFSET, -1);
    fix_crc(&mut negative_count);
    assert!(matches!(
        validate(&negative_count, MAX_BATCH_BYTES),
        Err(BatchError::BadRecordsCount {
            records_count: -1,
            ..
        })
    ));
    let mut negative_delta = batch;
    write_i32(&mut negative_delta, LAST_OFFSET_DELTA_OFFSET, i32::MIN);
    fix_crc(&mut negative_delta);
    assert!(matches!(
        validate(&negative_delta, MAX_BATCH_BYTES),
        Err(BatchError::BadLastOffsetDelta { .. })
    ));

    // Inside records: record length -1 (zigzag 0x01), key length -2 (0x03), value length
    // i32::MIN (zigzag 0xffffffff), headers count -1.
    let cases: [&[u8]; 4] = [
        &[0x01, 0, 0, 0, 0x01, 0x01, 0],
        &[0x0c, 0, 0, 0, 0x03, 0x01, 0],
        &[0x14, 0, 0, 0, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0],
        &[0x0c, 0, 0, 0, 0x01, 0x01, 0x01],
    ];
    for records_area in cases {
        let batch = raw_batch(records_area, 1, 0);
        let (result, largest_bytes) = largest_allocation_during(|| decode_records(&batch, 0));
        assert!(
            matches!(result, Err(BatchError::BadRecord { .. })),
            "{records_area:x?}: {result:?}"
        );
        assert!(largest_bytes < 4096, "allocated {largest_bytes} bytes");
    }
}

#[test]
fn lengths_claiming_more_than_the_input_are_errors() {
    let batch = sample_batch(Compression::None);
    let mut overlong = batch.clone();
    write_i32(&mut overlong, BATCH_LENGTH_OFFSET, i32::MAX);
    assert!(matches!(
        validate(&overlong, MAX_BATCH_BYTES),
        Err(BatchError::TooLarge {
            max: MAX_BATCH_BYTES,
            at: 0,
            ..
        })
    ));
    assert!(matches!(
        validate(&overlong, usize::MAX),
        Err(BatchError::Truncated { at: 0, .. })
    ));
    assert!(matches!(
        BatchHeader::parse(&overlong),
        Err(BatchError::Truncated { .. })
    ));

    // Key length i32::MAX inside a small record: bounded by the record, not allocated.
    let huge_key = [
        0x16, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0x01, 0, 0, 0, 0,
    ];
    let batch = raw_batch(&huge_key, 1, 0);
    let (result, largest_bytes) = largest_allocation_during(|| decode_records(&batch, 0));
    assert!(
        matches!(result, Err(BatchError::BadRecord { at: 4, .. })),
        "{result:?}"
    );
    assert!(largest_bytes < 4096, "allocated {largest_bytes} bytes");

    // Headers count i32::MAX: bounded by the bytes left in the record.
    let many_headers = [
        0x14, 0, 0, 0, 0x01, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0,
    ];
    let batch = raw_batch(&many_headers, 1, 0);
    let (result, largest_bytes) = largest_allocation_during(|| decode_records(&batch, 0));
    assert!(
        matches!(result, Err(BatchError::BadRecord { at: 6, .. })),
        "{result:?}"
    );
    assert!(largest_bytes < 4096, "allocated {largest_bytes} bytes");

    // The second of two batches lies about its length.
    let mut buffer = sample_batch(Compression::None);
    let second_at = buffer.len();
    buffer.extend_from_slice(&overlong);
    let results: Vec<_> = batches(&buffer, MAX_BATCH_BYTES).collect();
    assert_eq!(results.len(), 2);
    assert!(matches!(results[1], Err(BatchError::TooLarge { at, .. }) if at == second_at));
}

#[test]
fn overlong_varints_are_errors() {
    // Record length as a 6-byte varint.
    let overlong_length = [
        0x8c, 0x80, 0x80, 0x80, 0x80, 0x00, 0, 0, 0, 0x01, 0x01, 0, 0, 0,
    ];
    let batch = raw_batch(&overlong_length, 1, 0);
    assert_eq!(
        decode_records(&batch, 0),
        Err(BatchError::BadRecord {
            at: 0,
            what: "varint is overlong"
        })
    );
    // Timestamp delta as an 11-byte varlong.
    let mut overlong_timestamp = vec![0x1c, 0];
    overlong_timestamp.extend_from_slice(&[0x80; 10]);
    overlong_timestamp.extend_from_slice(&[0x00, 0, 0x01, 0x01, 0]);
    let batch = raw_batch(&overlong_timestamp, 1, 0);
    assert_eq!(
        decode_records(&batch, 0),
        Err(BatchError::BadRecord {
            at: 2,
            what: "varint is overlong"
        })
    );
    let mut cursor = 0;
    assert!(varint::decode_varint(&[0xff; 5], &mut cursor).is_err());
    assert!(varint::decode_varlong(&[0xff; 10], &mut cursor).is_err());
    assert_eq!(cursor, 0);
}

#[test]
fn zstd_bomb_is_an_error() {
    // 32 MiB of zeros compress to a few KiB.
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..32 {
        std::io::Write::write_all(&mut encoder, &zeros).unwrap();
    }
    let compressed = encoder.finish().unwrap();
    assert!(compressed.len() < 64 << 10);
    let batch = zstd_batch(&compressed, 1, 0);
    assert!(validate(&batch, MAX_BATCH_BYTES).is_ok());
    let (result, largest_bytes) =
        largest_allocation_during(|| decode_records(&batch, MAX_DECOMPRESSED_BYTES));
    assert_eq!(
        result,
        Err(BatchError::DecompressedTooLarge {
            max: MAX_DECOMPRESSED_BYTES,
            at: RECORDS_OFFSET
        })
    );
    assert!(largest_bytes < 16 << 20, "allocated {largest_bytes} bytes");
}

#[test]
fn zstd_frame_declaring_a_huge_window_is_an_error() {
    // Frame header: magic, descriptor 0 (no content size), window descriptor 0x80
    // (window log 26, 64 MiB: within zstd's own default limit), then a last raw block of
    // 1 byte. Uncapped, the decoder allocates the declared window before the block.
    let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x80, 0x09, 0x00, 0x00, 0x42];
    let batch = zstd_batch(&frame, 1, 0);
    let (result, largest_bytes) =
        largest_allocation_during(|| decode_records(&batch, MAX_DECOMPRESSED_BYTES));
    assert_eq!(result, Err(BatchError::Decompress { at: RECORDS_OFFSET }));
    assert!(largest_bytes < 16 << 20, "allocated {largest_bytes} bytes");
}

#[test]
fn unsupported_and_undefined_codecs() {
    let mut gzip = sample_batch(Compression::None);
    write_i16(
        &mut gzip,
        ATTRIBUTES_OFFSET,
        i16::from(Compression::Gzip.codec_id()),
    );
    fix_crc(&mut gzip);
    // The broker can carry a gzip batch it cannot read.
    assert_eq!(
        validate(&gzip, MAX_BATCH_BYTES).unwrap().compression(),
        Ok(Compression::Gzip)
    );
    assert_eq!(
        decode_records(&gzip, MAX_DECOMPRESSED_BYTES),
        Err(BatchError::UnsupportedCompression { codec: 1 })
    );
    let mut undefined = gzip;
    write_i16(&mut undefined, ATTRIBUTES_OFFSET, 6);
    fix_crc(&mut undefined);
    assert_eq!(
        validate(&undefined, MAX_BATCH_BYTES),
        Err(BatchError::BadAttributes {
            attributes: 6,
            at: ATTRIBUTES_OFFSET
        })
    );
}

/// Checks what every accepted batch must satisfy; returns its length.
fn assert_consistent_header(bytes: &[u8], header: &BatchHeader) -> usize {
    let total_bytes = header.total_bytes();
    assert!(total_bytes >= HEADER_BYTES && total_bytes <= bytes.len());
    assert_eq!(header.magic, MAGIC_V2);
    assert!(header.last_offset_delta >= 0);
    assert!(header.records_count >= 0);
    assert!(i64::from(header.records_count) <= i64::from(header.last_offset_delta) + 1);
    assert!(header.compression().is_ok());
    assert_eq!(
        header.crc,
        crc32c::crc32c(&bytes[CRC_COVERED_FROM..total_bytes])
    );
    total_bytes
}

/// Feeds `bytes` to every entry point; checks only that Ok results hang together.
fn exercise(bytes: &[u8]) {
    if let Ok(header) = validate(bytes, MAX_BATCH_BYTES) {
        assert_consistent_header(bytes, &header);
        assert_eq!(BatchHeader::parse(bytes), Ok(header));
    }
    let mut expected_position = 0;
    for item in batches(bytes, MAX_BATCH_BYTES) {
        match item {
            Ok((position, header)) => {
                assert_eq!(position, expected_position);
                expected_position += assert_consistent_header(&bytes[position..], &header);
            }
            Err(_) => break,
        }
    }
    assert!(expected_position <= bytes.len());
    if let Ok(records) = decode_records(bytes, MAX_DECOMPRESSED_BYTES) {
        let header = BatchHeader::parse(bytes).unwrap();
        assert_eq!(records.len(), header.records_count as usize);
        assert!(records
            .windows(2)
            .all(|pair| pair[0].offset_delta < pair[1].offset_delta));
        assert!(records.iter().all(|record| {
            record.offset_delta >= 0 && record.offset_delta <= header.last_offset_delta
        }));
    }
}

fn record_strategy() -> impl Strategy<Value = Record> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
    let header = ("[a-z]{0,8}", proptest::option::of(bytes())).prop_map(|(key, value)| Header {
        key: key.into_bytes(),
        value,
    });
    (
        any::<i64>(),
        proptest::option::of(bytes()),
        proptest::option::of(bytes()),
        proptest::collection::vec(header, 0..4),
    )
        .prop_map(|(timestamp_delta, key, value, headers)| Record {
            offset_delta: 0,
            timestamp_delta,
            key,
            value,
            headers,
        })
}

fn compression_strategy() -> impl Strategy<Value = Compression> {
    prop_oneof![Just(Compression::None), Just(Compression::Zstd)]
}

fn build(records: &[Record], compression: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(1_000, compression);
    for record in records {
        builder.push(record);
    }
    builder.build(0).unwrap()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_plausible_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..300),
        attributes in 0i16..8,
        records_count in -2i32..20,
        last_offset_delta in -2i32..20,
    ) {
        let mut batch = raw_batch(&tail, 0, 0);
        write_i16(&mut batch, ATTRIBUTES_OFFSET, attributes);
        write_i32(&mut batch, RECORDS_COUNT_OFFSET, records_count);
        write_i32(&mut batch, LAST_OFFSET_DELTA_OFFSET, last_offset_delta);
        fix_crc(&mut batch);
        exercise(&batch);
    }

    #[test]
    fn built_batches_round_trip(
        records in proptest::collection::vec(record_strategy(), 0..8),
        compression in compression_strategy(),
    ) {
        let batch = build(&records, compression);
        exercise(&batch);
        let decoded = decode_records(&batch, MAX_DECOMPRESSED_BYTES).unwrap();
        let expected: Vec<Record> = records
            .into_iter()
            .enumerate()
            .map(|(index, record)| Record { offset_delta: index as i32, ..record })
            .collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn mutated_batches_never_panic(
        records in proptest::collection::vec(record_strategy(), 0..6),
        compression in compression_strategy(),
        writes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        keep_fraction in 0.0f64..=1.0,
        crc_fixed in any::<bool>(),
        followed_by_copy in any::<bool>(),
    ) {
        let mut batch = build(&records, compression);
        // Mostly mutate the records area, where the CRC alone stands guard.
        for (index, byte) in writes {
            let position = index.index(batch.len());
            batch[position] = byte;
        }
        if crc_fixed {
            fix_crc(&mut batch);
        }
        let kept = (batch.len() as f64 * keep_fraction) as usize;
        batch.truncate(kept);
        if followed_by_copy {
            let copy = batch.clone();
            batch.extend_from_slice(&copy);
        }
        exercise(&batch);
    }
}
