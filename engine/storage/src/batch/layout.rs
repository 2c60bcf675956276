//! Byte layout of a Kafka RecordBatch, format version 2 (magic 2).
//!
//! Every integer is big-endian. The header is a fixed 61 bytes; the records follow it,
//! compressed as one block when the compression bits of `attributes` are not 0.
//!
//! ```text
//! offset  size  field                 notes
//! ------  ----  --------------------  ------------------------------------------------
//!      0     8  baseOffset     i64    assigned by the broker; outside the CRC
//!      8     4  batchLength    i32    bytes after this field: total = 12 + batchLength
//!     12     4  partitionLeaderEpoch  i32, stamped by the broker; outside the CRC
//!     16     1  magic          i8     always 2 for this format
//!     17     4  crc            u32    CRC-32C (Castagnoli) of bytes [21, total)
//!     21     2  attributes     i16    bits 0-2 codec, 3 timestamp type, 4 transactional,
//!                                     5 control; the rest are left alone
//!     23     4  lastOffsetDelta i32   offset of the last record minus baseOffset
//!     27     8  baseTimestamp  i64    ms; record timestamps are deltas from it
//!     35     8  maxTimestamp   i64    ms; largest timestamp in the batch
//!     43     8  producerId     i64    -1 when not idempotent
//!     51     2  producerEpoch  i16    -1 when not idempotent
//!     53     4  baseSequence   i32    -1 when not idempotent
//!     57     4  recordsCount   i32    records actually present (compaction leaves gaps)
//!     61     -  records               recordsCount records, maybe compressed as a whole
//! ```
//!
//! A record (inside the possibly decompressed records area) is:
//!
//! ```text
//! length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value |
//! headersCount varint | headersCount x (keyLength varint | key utf8 |
//!                                        valueLength varint (-1 = null) | value)
//! ```
//!
//! `length` counts the bytes after itself. Varints are zigzag-encoded, as protobuf `sint`.

/// Position of baseOffset (i64).
pub const BASE_OFFSET_OFFSET: usize = 0;
/// Position of batchLength (i32).
pub const BATCH_LENGTH_OFFSET: usize = 8;
/// Position of partitionLeaderEpoch (i32).
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
/// Position of magic (i8).
pub const MAGIC_OFFSET: usize = 16;
/// Position of crc (u32).
pub const CRC_OFFSET: usize = 17;
/// Position of attributes (i16).
pub const ATTRIBUTES_OFFSET: usize = 21;
/// Position of lastOffsetDelta (i32).
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
/// Position of baseTimestamp (i64).
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
/// Position of maxTimestamp (i64).
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
/// Position of producerId (i64).
pub const PRODUCER_ID_OFFSET: usize = 43;
/// Position of producerEpoch (i16).
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
/// Position of baseSequence (i32).
pub const BASE_SEQUENCE_OFFSET: usize = 53;
/// Position of recordsCount (i32).
pub const RECORDS_COUNT_OFFSET: usize = 57;
/// Position of the first record byte (or of the compressed block).
pub const RECORDS_OFFSET: usize = 61;

/// Size of the fixed header.
pub const HEADER_BYTES: usize = 61;
/// baseOffset + batchLength: the bytes not counted by batchLength.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Smallest legal batchLength: a header with no records.
pub const BATCH_LENGTH_MIN: i32 = (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
/// The CRC covers bytes from here to the end of the batch, so the broker can assign
/// baseOffset and partitionLeaderEpoch without recomputing it.
pub const CRC_COVERED_FROM: usize = ATTRIBUTES_OFFSET;
/// The only magic this module reads or writes.
pub const MAGIC_V2: i8 = 2;

/// Attribute bits 0-2: the compression codec id.
pub const COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: set when timestamps are LogAppendTime rather than CreateTime.
pub const TIMESTAMP_TYPE_BIT: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
pub const TRANSACTIONAL_BIT: i16 = 0x10;
/// Attribute bit 5: the batch holds a control record (commit/abort marker).
pub const CONTROL_BIT: i16 = 0x20;

/// producerId, producerEpoch and baseSequence of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// See [`NO_PRODUCER_ID`].
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// See [`NO_PRODUCER_ID`].
pub const NO_SEQUENCE: i32 = -1;

/// Smallest possible uncompressed record: a 1-byte length, then attributes, timestampDelta,
/// offsetDelta, keyLength, valueLength and headersCount at 1 byte each. Bounds how many
/// records a records area of a given size can hold.
pub const RECORD_MIN_BYTES: usize = 7;
/// Smallest possible record header: a 1-byte keyLength and a 1-byte valueLength.
pub const RECORD_HEADER_MIN_BYTES: usize = 2;
