//! Kafka RecordBatch v2 (magic 2): the unit the log stores, replicates and serves.
//!
//! The byte layout is drawn in [`layout`]. The broker's hot path touches only the header:
//! [`validate`] checks a produced batch (header sanity, size bound, CRC-32C) without
//! allocating, and [`patch_base_offset`] / [`patch_partition_leader_epoch`] stamp it in
//! place; those two fields sit outside the CRC so the producer's CRC stays valid.
//! [`BatchBuilder`] and [`decode_records`] encode and decode the records themselves.
//!
//! Every function here takes untrusted bytes: malformed input is an `Err` naming the
//! byte position and what was expected, never a panic, and no allocation is sized from
//! a length field before that length is bounded by the bytes actually present or by a
//! caller-supplied cap.

mod compression;
pub mod layout;
mod record;
pub mod varint;

pub use compression::{Compression, ZSTD_LEVEL_DEFAULT};
pub use record::{decode_records, BatchBuilder, Header, Record};

use layout::*;

/// What was wrong with a batch, and where.
///
/// `at` fields of header errors are byte positions in the input given to the function
/// (for [`batches`], in the whole buffer). `at` fields of record errors are positions in
/// the batch's records area, after decompression when the batch is compressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The input ends before the header or the batch it declares.
    #[error("truncated batch at byte {at}: needs {needed} bytes, {available} available")]
    Truncated {
        needed: usize,
        available: usize,
        at: usize,
    },
    /// The magic byte is not 2.
    #[error("bad magic at byte {at}: found {found}, expected 2")]
    BadMagic { found: i8, at: usize },
    /// batchLength is smaller than a header without records.
    #[error("bad batchLength at byte {at}: {length}, expected at least 49")]
    BadLength { length: i32, at: usize },
    /// The batch is larger than the caller allows.
    #[error("batch at byte {at} is {length} bytes, more than the maximum {max}")]
    TooLarge {
        length: usize,
        max: usize,
        at: usize,
    },
    /// The stored CRC-32C does not match the bytes it covers.
    #[error("crc mismatch at byte {at}: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        stored: u32,
        computed: u32,
        at: usize,
    },
    /// The attributes name an undefined compression codec (5-7).
    #[error("bad attributes at byte {at}: {attributes:#06x} names an undefined codec")]
    BadAttributes { attributes: i16, at: usize },
    /// lastOffsetDelta is negative, or baseOffset + lastOffsetDelta overflows.
    #[error("bad lastOffsetDelta at byte {at}: {last_offset_delta}")]
    BadLastOffsetDelta { last_offset_delta: i32, at: usize },
    /// recordsCount is negative or more than the batch could hold.
    #[error("bad recordsCount at byte {at}: {records_count}, at most {max} possible")]
    BadRecordsCount {
        records_count: i32,
        max: i64,
        at: usize,
    },
    /// The codec is recognised but not implemented here.
    #[error("compression codec {codec} is not supported")]
    UnsupportedCompression { codec: u8 },
    /// The encoder failed (it only does so when it cannot allocate its context).
    #[error("compression with codec {codec} failed")]
    Compress { codec: u8 },
    /// The compressed records starting at byte `at` are not a valid stream.
    #[error("compressed records at byte {at} do not decompress")]
    Decompress { at: usize },
    /// The compressed records starting at byte `at` expand beyond the caller's cap.
    #[error("compressed records at byte {at} decompress to more than {max} bytes")]
    DecompressedTooLarge { max: usize, at: usize },
    /// A record, or a varint in it, is malformed; `at` is within the records area.
    #[error("bad record at byte {at} of the records: {what}")]
    BadRecord { at: usize, what: &'static str },
    /// The records area ends after fewer records than recordsCount.
    #[error(
        "records end at byte {at} of the records after {decoded} records, header says {declared}"
    )]
    RecordCountMismatch {
        declared: i32,
        decoded: usize,
        at: usize,
    },
    /// [`BatchBuilder`] was given a length its i32 field cannot hold.
    #[error("cannot encode {what} of {length}: does not fit an i32")]
    Unencodable { what: &'static str, length: usize },
}

impl BatchError {
    /// Moves the position of a header error by `base`, for errors found in a batch that
    /// starts at `base` within a larger buffer. Record errors keep their records-area
    /// position.
    fn shifted(self, base: usize) -> BatchError {
        use BatchError::*;
        match self {
            Truncated {
                needed,
                available,
                at,
            } => Truncated {
                needed,
                available,
                at: at + base,
            },
            BadMagic { found, at } => BadMagic {
                found,
                at: at + base,
            },
            BadLength { length, at } => BadLength {
                length,
                at: at + base,
            },
            TooLarge { length, max, at } => TooLarge {
                length,
                max,
                at: at + base,
            },
            CrcMismatch {
                stored,
                computed,
                at,
            } => CrcMismatch {
                stored,
                computed,
                at: at + base,
            },
            BadAttributes { attributes, at } => BadAttributes {
                attributes,
                at: at + base,
            },
            BadLastOffsetDelta {
                last_offset_delta,
                at,
            } => BadLastOffsetDelta {
                last_offset_delta,
                at: at + base,
            },
            BadRecordsCount {
                records_count,
                max,
                at,
            } => BadRecordsCount {
                records_count,
                max,
                at: at + base,
            },
            Decompress { at } => Decompress { at: at + base },
            DecompressedTooLarge { max, at } => DecompressedTooLarge { max, at: at + base },
            other => other,
        }
    }
}

/// Which clock the batch's timestamps come from (attribute bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker on append.
    LogAppendTime,
}

/// The 61-byte header of a batch, as read from the wire.
///
/// A header returned by [`BatchHeader::parse`] or [`validate`] satisfies the checks listed
/// there; the helpers stay panic-free on a header built by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `bytes` and checks it describes a plausible batch
    /// lying entirely within `bytes`. Reads only the 61 header bytes; the CRC is not
    /// checked (see [`validate`]).
    ///
    /// Checks: magic is 2; batchLength is at least a bare header and the batch fits in
    /// `bytes`; the codec id is defined; lastOffsetDelta is not negative and the last
    /// offset does not overflow; recordsCount is between 0 and lastOffsetDelta + 1 (each
    /// record has its own offset delta in [0, lastOffsetDelta]; compaction may remove
    /// records, never add them) and, when uncompressed, at most one record per
    /// [`RECORD_MIN_BYTES`] of the records area.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let header = BatchHeader::parse_fields(bytes)?;
        check_fits(&header, bytes.len())?;
        Ok(header)
    }

    /// Like [`BatchHeader::parse`] but without requiring the batch to fit in `bytes`: reads
    /// and checks the 61 header bytes only, for a reader that fetches a header before
    /// deciding how much more to read. The caller must bound `total_bytes()` itself.
    pub fn parse_fields(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        // Report the magic first when it is there: a v0/v1 message set is shorter than our
        // header, and "wrong version" says more than "too short".
        if let Some(&magic_byte) = bytes.get(MAGIC_OFFSET) {
            let magic = magic_byte as i8;
            if magic != MAGIC_V2 {
                return Err(BatchError::BadMagic {
                    found: magic,
                    at: MAGIC_OFFSET,
                });
            }
        }
        let Some(header) = bytes.first_chunk::<HEADER_BYTES>() else {
            return Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                available: bytes.len(),
                at: 0,
            });
        };
        let parsed = BatchHeader {
            base_offset: i64::from_be_bytes(field(header, BASE_OFFSET_OFFSET)),
            batch_length: i32::from_be_bytes(field(header, BATCH_LENGTH_OFFSET)),
            partition_leader_epoch: i32::from_be_bytes(field(
                header,
                PARTITION_LEADER_EPOCH_OFFSET,
            )),
            magic: i8::from_be_bytes(field(header, MAGIC_OFFSET)),
            crc: u32::from_be_bytes(field(header, CRC_OFFSET)),
            attributes: i16::from_be_bytes(field(header, ATTRIBUTES_OFFSET)),
            last_offset_delta: i32::from_be_bytes(field(header, LAST_OFFSET_DELTA_OFFSET)),
            base_timestamp: i64::from_be_bytes(field(header, BASE_TIMESTAMP_OFFSET)),
            max_timestamp: i64::from_be_bytes(field(header, MAX_TIMESTAMP_OFFSET)),
            producer_id: i64::from_be_bytes(field(header, PRODUCER_ID_OFFSET)),
            producer_epoch: i16::from_be_bytes(field(header, PRODUCER_EPOCH_OFFSET)),
            base_sequence: i32::from_be_bytes(field(header, BASE_SEQUENCE_OFFSET)),
            records_count: i32::from_be_bytes(field(header, RECORDS_COUNT_OFFSET)),
        };
        if parsed.batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::BadLength {
                length: parsed.batch_length,
                at: BATCH_LENGTH_OFFSET,
            });
        }
        let Some(compression) = Compression::from_attributes(parsed.attributes) else {
            return Err(BatchError::BadAttributes {
                attributes: parsed.attributes,
                at: ATTRIBUTES_OFFSET,
            });
        };
        let last_offset_delta = parsed.last_offset_delta;
        if last_offset_delta < 0
            || parsed
                .base_offset
                .checked_add(i64::from(last_offset_delta))
                .is_none()
        {
            return Err(BatchError::BadLastOffsetDelta {
                last_offset_delta,
                at: LAST_OFFSET_DELTA_OFFSET,
            });
        }
        let mut records_count_max = i64::from(last_offset_delta) + 1;
        if compression == Compression::None {
            let records_area_bytes = parsed.total_bytes() - HEADER_BYTES;
            records_count_max =
                records_count_max.min((records_area_bytes / RECORD_MIN_BYTES) as i64);
        }
        let records_count = parsed.records_count;
        if records_count < 0 || i64::from(records_count) > records_count_max {
            return Err(BatchError::BadRecordsCount {
                records_count,
                max: records_count_max,
                at: RECORDS_COUNT_OFFSET,
            });
        }
        Ok(parsed)
    }

    /// Size of the whole batch: log overhead + batchLength.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length.max(0) as usize
    }

    /// Offset of the batch's last record (or of the last removed one, after compaction).
    pub fn last_offset(&self) -> i64 {
        // Never wraps for a parsed header; wrapping keeps hand-made ones panic-free.
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// Codec of the records area. Errors only for an undefined id, which a parsed header
    /// never has.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes).ok_or(BatchError::UnsupportedCompression {
            codec: (self.attributes & COMPRESSION_MASK) as u8,
        })
    }

    /// Whether the batch belongs to a transaction (attribute bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records (attribute bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Which clock the timestamps come from (attribute bit 3).
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
}

/// Checks the batch at the start of `bytes` as the broker does on every produced batch:
/// the header checks of [`BatchHeader::parse`], the batch is at most `max_batch_bytes`
/// long, and its CRC-32C over bytes [21, total) matches. Bytes after the batch are
/// ignored. Reads nothing past the header except to compute the CRC; does not allocate.
pub fn validate(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse_fields(bytes)?;
    let total_bytes = header.total_bytes();
    // Size before presence: a reader filling a buffer treats Truncated as "read more",
    // which must not happen for a batch it would refuse anyway.
    if total_bytes > max_batch_bytes {
        return Err(BatchError::TooLarge {
            length: total_bytes,
            max: max_batch_bytes,
            at: 0,
        });
    }
    check_fits(&header, bytes.len())?;
    let computed = crc32c::crc32c(&bytes[CRC_COVERED_FROM..total_bytes]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
            at: CRC_OFFSET,
        });
    }
    Ok(header)
}

/// The bytes that assigning offsets changes: `baseOffset`, `batchLength` (unchanged, but
/// between the two) and `partitionLeaderEpoch`. All lie outside the CRC.
pub const PATCHED_HEAD_BYTES: usize = PARTITION_LEADER_EPOCH_OFFSET + 4;

/// The first [`PATCHED_HEAD_BYTES`] of `batch` as stored once it has `base_offset` and
/// `epoch`. The log writes these, then the rest of the producer's bytes as they came, so a
/// batch is never copied just to be patched. `batch` must be at least a header long.
pub fn patched_head(batch: &[u8], base_offset: i64, epoch: i32) -> [u8; PATCHED_HEAD_BYTES] {
    let mut head = [0u8; PATCHED_HEAD_BYTES];
    head.copy_from_slice(&batch[..PATCHED_HEAD_BYTES]);
    head[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    head[PARTITION_LEADER_EPOCH_OFFSET..].copy_from_slice(&epoch.to_be_bytes());
    head
}

/// Overwrites baseOffset in place. The field is outside the CRC, so the batch stays valid.
///
/// `batch` must hold at least a header (any batch that passed [`validate`] does); a
/// shorter slice is a caller bug and panics on the bounds check.
pub fn patch_base_offset(batch: &mut [u8], base_offset: i64) {
    debug_assert!(
        batch.len() >= HEADER_BYTES,
        "patching a {}-byte batch",
        batch.len()
    );
    batch[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites partitionLeaderEpoch in place. The field is outside the CRC, so the batch
/// stays valid. Same precondition as [`patch_base_offset`].
pub fn patch_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    debug_assert!(
        batch.len() >= HEADER_BYTES,
        "patching a {}-byte batch",
        batch.len()
    );
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Walks consecutive batches in a buffer (a produce request's records, a segment read),
/// running [`validate`] on each. See [`batches`].
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
    max_batch_bytes: usize,
    failed: bool,
}

/// Iterates over the batches packed back to back in `bytes`, yielding each one's start
/// position and validated header, each at most `max_batch_bytes` long.
///
/// Stops after the first error, whose positions are within `bytes`. A buffer cut inside
/// its last batch (as a size-limited fetch returns) ends with a `Truncated` error; the
/// caller decides whether that is acceptable. Does not allocate.
pub fn batches(bytes: &[u8], max_batch_bytes: usize) -> BatchIter<'_> {
    BatchIter {
        bytes,
        position: 0,
        max_batch_bytes,
        failed: false,
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(usize, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.bytes.len() {
            return None;
        }
        let position = self.position;
        match validate(&self.bytes[position..], self.max_batch_bytes) {
            Ok(header) => {
                // validate guarantees the batch lies within the remaining bytes.
                self.position = position + header.total_bytes();
                Some(Ok((position, header)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error.shifted(position)))
            }
        }
    }
}

impl std::iter::FusedIterator for BatchIter<'_> {}

/// A batch that [`validate`] accepted, with the bytes it was checked on (the batch starts at
/// their first byte; bytes after it are the holder's business, as with [`validate`]).
///
/// This is the proof the log's append asks for, so that a batch the broker has checked is not
/// checksummed a second time under the append lock. It can only be made by checking:
/// [`ValidBatch::check`] or [`valid_batches`].
#[derive(Debug, Clone)]
pub struct ValidBatch<B> {
    bytes: B,
    header: BatchHeader,
}

impl<B: AsRef<[u8]>> ValidBatch<B> {
    /// Runs [`validate`] on the batch at the start of `bytes` and keeps the bytes with it.
    pub fn check(bytes: B, max_batch_bytes: usize) -> Result<ValidBatch<B>, BatchError> {
        let header = validate(bytes.as_ref(), max_batch_bytes)?;
        Ok(ValidBatch { bytes, header })
    }

    /// The header as the producer (or leader) wrote it.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The bytes the batch was checked on.
    pub fn bytes(&self) -> &B {
        &self.bytes
    }
}

/// The batches packed back to back in `whole`, each checked once by [`validate`] (as
/// [`batches`] does) and cut out of `whole` by `cut`, which is given the batch's byte range
/// (for `bytes::Bytes`, `|range| whole.slice(range)`, so no batch is copied).
///
/// Panics if `cut` returns other bytes than the range it was given: a caller bug that would
/// let unchecked bytes pass as checked.
pub fn valid_batches<'a, B: AsRef<[u8]>>(
    whole: &'a B,
    max_batch_bytes: usize,
    cut: impl Fn(std::ops::Range<usize>) -> B + 'a,
) -> impl Iterator<Item = Result<ValidBatch<B>, BatchError>> + 'a {
    let all = whole.as_ref();
    batches(all, max_batch_bytes).map(move |item| {
        item.map(|(position, header)| {
            let range = position..position + header.total_bytes();
            let bytes = cut(range.clone());
            assert!(
                std::ptr::eq(bytes.as_ref(), &all[range]),
                "valid_batches: cut returned bytes other than the checked range"
            );
            ValidBatch { bytes, header }
        })
    })
}

fn check_fits(header: &BatchHeader, available: usize) -> Result<(), BatchError> {
    let needed = header.total_bytes();
    if needed > available {
        return Err(BatchError::Truncated {
            needed,
            available,
            at: 0,
        });
    }
    Ok(())
}

/// The `WIDTH` bytes of the header at `at`. Offsets are constants, so this compiles to a
/// plain load.
fn field<const WIDTH: usize>(header: &[u8; HEADER_BYTES], at: usize) -> [u8; WIDTH] {
    let mut value = [0u8; WIDTH];
    value.copy_from_slice(&header[at..at + WIDTH]);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_batch(compression: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::new(1_700_000_000_000, compression);
        builder.push_kv(Some(b"k1"), Some(b"v1"), &[], 1_700_000_000_005);
        builder.push_kv(None, Some(b"v2"), &[(b"h", Some(b"x"))], 1_700_000_000_002);
        builder.build(100).unwrap()
    }

    #[test]
    fn valid_batches_yields_what_batches_checks_with_the_bytes_cut_out() {
        let mut packed = sample_batch(Compression::None);
        packed.extend(sample_batch(Compression::Zstd));
        let expected: Vec<_> = batches(&packed, usize::MAX).collect();
        let found: Vec<_> = valid_batches(&packed.as_slice(), usize::MAX, |range| &packed[range])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(found.len(), 2);
        for (valid, checked) in found.iter().zip(expected) {
            let (position, header) = checked.unwrap();
            assert_eq!(*valid.header(), header);
            assert_eq!(
                valid.bytes()[..],
                packed[position..position + header.total_bytes()]
            );
        }
    }

    #[test]
    fn valid_batches_stops_at_a_crc_mismatch() {
        let mut packed = sample_batch(Compression::None);
        let second = packed.len();
        packed.extend(sample_batch(Compression::None));
        let last = packed.len() - 1;
        packed[last] ^= 0xff;
        let found: Vec<_> =
            valid_batches(&packed.as_slice(), usize::MAX, |range| &packed[range]).collect();
        assert_eq!(found.len(), 2);
        assert!(found[0].is_ok());
        assert!(matches!(
            found[1],
            Err(BatchError::CrcMismatch { at, .. }) if at == second + CRC_OFFSET
        ));
    }

    #[test]
    #[should_panic(expected = "other than the checked range")]
    fn valid_batches_refuses_a_cut_that_returns_other_bytes() {
        let packed = sample_batch(Compression::None);
        let other = packed.clone();
        let _ = valid_batches(&packed.as_slice(), usize::MAX, |range| &other[range]).count();
    }

    #[test]
    fn crc32c_known_answer() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn layout_constants_are_consistent() {
        assert_eq!(HEADER_BYTES, RECORDS_OFFSET);
        assert_eq!(RECORDS_COUNT_OFFSET + 4, HEADER_BYTES);
        assert_eq!(BATCH_LENGTH_MIN, 49);
        assert_eq!(CRC_OFFSET + 4, CRC_COVERED_FROM);
    }

    #[test]
    fn header_fields_and_helpers() {
        let batch = sample_batch(Compression::None);
        let header = validate(&batch, 1 << 20).unwrap();
        assert_eq!(header.base_offset, 100);
        assert_eq!(header.total_bytes(), batch.len());
        assert_eq!(header.magic, MAGIC_V2);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.last_offset(), 101);
        assert_eq!(header.records_count, 2);
        assert_eq!(header.base_timestamp, 1_700_000_000_000);
        assert_eq!(header.max_timestamp, 1_700_000_000_005);
        assert_eq!(header.producer_id, NO_PRODUCER_ID);
        assert_eq!(header.producer_epoch, NO_PRODUCER_EPOCH);
        assert_eq!(header.base_sequence, NO_SEQUENCE);
        assert_eq!(header.compression(), Ok(Compression::None));
        assert!(!header.is_transactional());
        assert!(!header.is_control());
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(BatchHeader::parse(&batch), Ok(header));

        let flagged = BatchHeader {
            attributes: 0x38 | 7,
            ..header
        };
        assert!(flagged.is_transactional());
        assert!(flagged.is_control());
        assert_eq!(flagged.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(
            flagged.compression(),
            Err(BatchError::UnsupportedCompression { codec: 7 })
        );
    }

    #[test]
    fn patching_keeps_crc_valid() {
        for compression in [Compression::None, Compression::Zstd] {
            let mut batch = sample_batch(compression);
            patch_base_offset(&mut batch, 9_876_543_210);
            patch_partition_leader_epoch(&mut batch, 42);
            let header = validate(&batch, batch.len()).unwrap();
            assert_eq!(header.base_offset, 9_876_543_210);
            assert_eq!(header.partition_leader_epoch, 42);
        }
    }

    #[test]
    fn validate_rejects_oversize_before_truncation() {
        let batch = sample_batch(Compression::None);
        let total = batch.len();
        assert_eq!(
            validate(&batch[..total - 1], total - 1),
            Err(BatchError::TooLarge {
                length: total,
                max: total - 1,
                at: 0
            })
        );
        assert_eq!(
            validate(&batch[..total - 1], total),
            Err(BatchError::Truncated {
                needed: total,
                available: total - 1,
                at: 0
            })
        );
    }

    #[test]
    fn batches_walks_and_reports_positions() {
        let first = sample_batch(Compression::None);
        let second = sample_batch(Compression::Zstd);
        let mut buffer = first.clone();
        buffer.extend_from_slice(&second);
        let positions: Vec<usize> = batches(&buffer, 1 << 20)
            .map(|item| item.unwrap().0)
            .collect();
        assert_eq!(positions, [0, first.len()]);

        buffer.extend_from_slice(&second[..30]);
        let results: Vec<_> = batches(&buffer, 1 << 20).collect();
        assert_eq!(results.len(), 3);
        assert_eq!(
            results[2],
            Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                available: 30,
                at: first.len() + second.len()
            })
        );
        assert_eq!(batches(&[], 100).count(), 0);
    }

    #[test]
    fn header_checks_report_field_positions() {
        let batch = sample_batch(Compression::None);
        let mut wrong_magic = batch.clone();
        wrong_magic[MAGIC_OFFSET] = 1;
        assert_eq!(
            BatchHeader::parse(&wrong_magic),
            Err(BatchError::BadMagic { found: 1, at: 16 })
        );
        assert_eq!(
            BatchHeader::parse(&wrong_magic[..20]),
            Err(BatchError::BadMagic { found: 1, at: 16 })
        );

        let mut short_length = batch.clone();
        short_length[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4]
            .copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(
            BatchHeader::parse(&short_length),
            Err(BatchError::BadLength { length: 48, at: 8 })
        );

        let mut undefined_codec = batch.clone();
        undefined_codec[ATTRIBUTES_OFFSET + 1] = 5;
        assert_eq!(
            BatchHeader::parse(&undefined_codec),
            Err(BatchError::BadAttributes {
                attributes: 5,
                at: 21
            })
        );

        let mut negative_delta = batch.clone();
        negative_delta[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(
            BatchHeader::parse(&negative_delta),
            Err(BatchError::BadLastOffsetDelta {
                last_offset_delta: -1,
                at: 23
            })
        ));

        let mut too_many = batch;
        too_many[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
            .copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(
            BatchHeader::parse(&too_many),
            Err(BatchError::BadRecordsCount {
                records_count: 3,
                max: 2,
                at: 57
            })
        );
    }
}
