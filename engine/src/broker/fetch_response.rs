//! Kafka FetchResponse (API key 1), versions 4 to 12, encoded as [`Chunk`]s so record
//! batches can go from segment files to the socket without passing through user memory.
//!
//! The encoder writes every field it owns into one growing buffer and, at each partition's
//! `records`, writes the length prefix, then hands the partition's [`Records::parts`] through
//! untouched: a `Chunk::File` stays a file region (never read here), a `Chunk::Bytes` stays
//! the same shared buffer. Adjacent encoded fields merge into one `Chunk::Bytes`, so a
//! response is about `2 * record parts + 1` chunks.
//!
//! # Byte layout (all integers big-endian)
//!
//! Versions 4 to 11 use response header v0 and classic strings/arrays/bytes; version 12 is
//! the first flexible version: response header v1, compact strings/arrays/bytes (an unsigned
//! varint holding length + 1, with 0 meaning null) and an empty tagged-field section
//! (`UVARINT 0`) closing every struct.
//!
//! ```text
//! frame_size                INT32   bytes after this field (header + body)
//! -- response header --------------------------------------------------------------
//! correlation_id            INT32   echoed from the request
//! tagged_fields             UVARINT 0                                 v12 (header v1)
//! -- body -------------------------------------------------------------------------
//! throttle_time_ms          INT32
//! error_code                INT16                                     v7+
//! session_id                INT32                                     v7+
//! topics                    ARRAY   INT32 count | v12: UVARINT count + 1
//!   name                    STRING  INT16 len + UTF-8 | v12: UVARINT len + 1 + UTF-8
//!   partitions              ARRAY   INT32 count | v12: UVARINT count + 1
//!     partition_index       INT32
//!     error_code            INT16
//!     high_watermark        INT64
//!     last_stable_offset    INT64
//!     log_start_offset      INT64                                     v5+
//!     aborted_transactions  null:   INT32 -1 | v12: UVARINT 0
//!     preferred_read_replica INT32  always -1                         v11+
//!     records               NULLABLE_BYTES
//!                             length: INT32 len, or -1 for null
//!                                   | v12: UVARINT len + 1, or 0 for null
//!                             then the record parts, as given     <- Chunk::File / Bytes
//!     tagged_fields         UVARINT 0                                 v12
//!   tagged_fields           UVARINT 0                                 v12
//! tagged_fields             UVARINT 0                                 v12
//! ```
//!
//! Aborted transactions are always null: shardlog has no transactions, and null is what a
//! Kafka broker sends for them to a `read_uncommitted` fetch (every version here declares
//! the field nullable). Versions 4 to 6 have no `error_code`/`session_id`, version 4 no
//! `log_start_offset`: those fields of [`FetchResponseBody`]/[`FetchPartition`] are simply
//! not written there.

use bytes::{BufMut, BytesMut};

use super::chunks::{Chunk, Records};

/// Oldest FetchResponse version encoded here.
pub const FETCH_VERSION_MIN: i16 = 4;
/// Newest FetchResponse version encoded here.
pub const FETCH_VERSION_MAX: i16 = 12;
/// First flexible version: compact encodings, tagged fields, response header v1.
pub const FETCH_VERSION_FLEXIBLE_MIN: i16 = 12;
/// First version with `log_start_offset` in a partition.
const FETCH_VERSION_LOG_START_OFFSET_MIN: i16 = 5;
/// First version with the top-level `error_code` and `session_id`.
const FETCH_VERSION_SESSION_MIN: i16 = 7;
/// First version with `preferred_read_replica` in a partition.
const FETCH_VERSION_PREFERRED_READ_REPLICA_MIN: i16 = 11;

/// `preferred_read_replica` when the client should keep fetching from the leader.
pub const PREFERRED_READ_REPLICA_NONE: i32 = -1;
/// Length written for a null array or null bytes in the classic (non-flexible) encoding.
const NULL_LENGTH_CLASSIC: i32 = -1;
/// Length written for a null array or null bytes in the compact (flexible) encoding.
const NULL_LENGTH_COMPACT: u32 = 0;
/// Size of the frame-size prefix.
const FRAME_SIZE_BYTES: usize = 4;
/// Encoded bytes reserved before encoding starts: frame size, header and top-level fields,
/// per topic (lengths and tagged fields, besides the name) and per partition. A capacity
/// hint only: the buffer grows if it is short.
const RESPONSE_ENCODED_BYTES_ESTIMATE: usize = 32;
const TOPIC_ENCODED_BYTES_ESTIMATE: usize = 12;
const PARTITION_ENCODED_BYTES_ESTIMATE: usize = 48;

/// One partition of a fetch response.
#[derive(Clone, Debug)]
pub struct FetchPartition {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// Not on the wire before version 5.
    pub log_start_offset: i64,
    /// `None` encodes null records; `Some` with no parts encodes empty records.
    pub records: Option<Records>,
}

/// One topic of a fetch response.
#[derive(Clone, Debug)]
pub struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

/// Everything in a FetchResponse body that shardlog sets.
#[derive(Clone, Debug)]
pub struct FetchResponseBody {
    pub throttle_time_ms: i32,
    /// Not on the wire before version 7.
    pub error_code: i16,
    /// Not on the wire before version 7; 0 means no incremental fetch session.
    pub session_id: i32,
    pub topics: Vec<FetchTopic>,
}

/// Encodes a whole FetchResponse frame (size prefix, response header, body) as chunks whose
/// concatenation is the frame. File chunks of the records are passed through, never read.
///
/// # Panics
/// On a caller bug: `version` outside [`FETCH_VERSION_MIN`]..=[`FETCH_VERSION_MAX`], a topic
/// name longer than `i16::MAX` bytes, more than `i32::MAX` topics or partitions, or a frame
/// larger than `i32::MAX` bytes (a fetch is bounded far below that by `fetch.max.bytes`).
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    body: &FetchResponseBody,
) -> Vec<Chunk> {
    assert!(
        (FETCH_VERSION_MIN..=FETCH_VERSION_MAX).contains(&version),
        "FetchResponse version {version} is outside {FETCH_VERSION_MIN}..={FETCH_VERSION_MAX}"
    );
    let flexible = version >= FETCH_VERSION_FLEXIBLE_MIN;
    let partition_count: usize = body.topics.iter().map(|topic| topic.partitions.len()).sum();
    let names_bytes: usize = body.topics.iter().map(|topic| topic.name.len()).sum();
    let mut writer = ChunkWriter::with_capacity(
        RESPONSE_ENCODED_BYTES_ESTIMATE
            + names_bytes
            + body.topics.len() * TOPIC_ENCODED_BYTES_ESTIMATE
            + partition_count * PARTITION_ENCODED_BYTES_ESTIMATE,
    );

    // Patched in `finish` once the total is known.
    writer.encoded.put_i32(0);
    writer.encoded.put_i32(correlation_id);
    if flexible {
        writer.put_empty_tagged_fields();
    }

    writer.encoded.put_i32(body.throttle_time_ms);
    if version >= FETCH_VERSION_SESSION_MIN {
        writer.encoded.put_i16(body.error_code);
        writer.encoded.put_i32(body.session_id);
    }
    writer.put_array_length(flexible, body.topics.len());
    for topic in &body.topics {
        writer.put_string(flexible, &topic.name);
        writer.put_array_length(flexible, topic.partitions.len());
        for partition in &topic.partitions {
            writer.put_partition(version, partition);
        }
        if flexible {
            writer.put_empty_tagged_fields();
        }
    }
    if flexible {
        writer.put_empty_tagged_fields();
    }
    writer.finish()
}

/// What the encoder has produced so far, before the frame size is known.
enum Piece {
    /// Encoded fields; the first piece starts with the frame-size placeholder.
    Encoded(BytesMut),
    /// A record part, passed through.
    Part(Chunk),
}

/// Accumulates encoded fields in one buffer, cutting it wherever a record part goes between.
struct ChunkWriter {
    encoded: BytesMut,
    pieces: Vec<Piece>,
    parts_bytes: u64,
}

impl ChunkWriter {
    fn with_capacity(encoded_bytes: usize) -> ChunkWriter {
        ChunkWriter {
            encoded: BytesMut::with_capacity(encoded_bytes),
            pieces: Vec::new(),
            parts_bytes: 0,
        }
    }

    fn put_partition(&mut self, version: i16, partition: &FetchPartition) {
        let flexible = version >= FETCH_VERSION_FLEXIBLE_MIN;
        self.encoded.put_i32(partition.partition_index);
        self.encoded.put_i16(partition.error_code);
        self.encoded.put_i64(partition.high_watermark);
        self.encoded.put_i64(partition.last_stable_offset);
        if version >= FETCH_VERSION_LOG_START_OFFSET_MIN {
            self.encoded.put_i64(partition.log_start_offset);
        }
        // aborted_transactions: always null.
        self.put_null_length(flexible);
        if version >= FETCH_VERSION_PREFERRED_READ_REPLICA_MIN {
            self.encoded.put_i32(PREFERRED_READ_REPLICA_NONE);
        }
        match &partition.records {
            None => self.put_null_length(flexible),
            Some(records) => {
                let records_bytes = records.len();
                if flexible {
                    put_unsigned_varint(&mut self.encoded, records_bytes + 1);
                } else {
                    self.encoded.put_i32(length_i32(records_bytes, "records"));
                }
                for part in &records.parts {
                    self.put_part(part);
                }
            }
        }
        if flexible {
            self.put_empty_tagged_fields();
        }
    }

    fn put_part(&mut self, part: &Chunk) {
        if part.is_empty() {
            return;
        }
        self.cut_encoded();
        self.parts_bytes += part.len();
        self.pieces.push(Piece::Part(part.clone()));
    }

    fn cut_encoded(&mut self) {
        if !self.encoded.is_empty() {
            self.pieces.push(Piece::Encoded(self.encoded.split()));
        }
    }

    fn put_array_length(&mut self, flexible: bool, count: usize) {
        if flexible {
            put_unsigned_varint(&mut self.encoded, count as u64 + 1);
        } else {
            self.encoded.put_i32(length_i32(count as u64, "array"));
        }
    }

    fn put_null_length(&mut self, flexible: bool) {
        if flexible {
            put_unsigned_varint(&mut self.encoded, u64::from(NULL_LENGTH_COMPACT));
        } else {
            self.encoded.put_i32(NULL_LENGTH_CLASSIC);
        }
    }

    fn put_string(&mut self, flexible: bool, value: &str) {
        let length = i16::try_from(value.len());
        assert!(
            length.is_ok(),
            "a string of {} bytes does not fit Kafka's INT16 length",
            value.len()
        );
        if flexible {
            put_unsigned_varint(&mut self.encoded, value.len() as u64 + 1);
        } else {
            self.encoded.put_i16(length.unwrap_or(i16::MAX));
        }
        self.encoded.put_slice(value.as_bytes());
    }

    fn put_empty_tagged_fields(&mut self) {
        put_unsigned_varint(&mut self.encoded, 0);
    }

    /// Writes the frame size into the placeholder and returns the chunks in order.
    fn finish(mut self) -> Vec<Chunk> {
        self.cut_encoded();
        let encoded_bytes: u64 = self
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Encoded(bytes) => bytes.len() as u64,
                Piece::Part(_) => 0,
            })
            .sum();
        let frame_size = length_i32(
            encoded_bytes + self.parts_bytes - FRAME_SIZE_BYTES as u64,
            "frame",
        );
        let mut chunks = Vec::with_capacity(self.pieces.len());
        for (index, piece) in self.pieces.into_iter().enumerate() {
            match piece {
                Piece::Encoded(mut bytes) => {
                    if index == 0 {
                        bytes[..FRAME_SIZE_BYTES].copy_from_slice(&frame_size.to_be_bytes());
                    }
                    chunks.push(Chunk::Bytes(bytes.freeze()));
                }
                Piece::Part(part) => chunks.push(part),
            }
        }
        chunks
    }
}

/// `length` as a Kafka INT32 length; larger is a caller bug (see [`encode_fetch_response`]).
fn length_i32(length: u64, what: &str) -> i32 {
    let converted = i32::try_from(length);
    assert!(
        converted.is_ok(),
        "a {what} of {length} bytes or items does not fit Kafka's INT32 length"
    );
    converted.unwrap_or(i32::MAX)
}

/// Appends `value` as an unsigned LEB128 varint (Kafka's UNSIGNED_VARINT).
fn put_unsigned_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::sync::Arc;

    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{
        FetchResponse, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
    use shardlog_protocol::error_code;

    use super::*;
    use crate::broker::chunks::FileChunk;

    fn concatenate(chunks: &[Chunk]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks {
            match chunk {
                Chunk::Bytes(bytes) => out.extend_from_slice(bytes),
                Chunk::File(_) => panic!("these tests use only byte chunks"),
            }
        }
        out
    }

    fn records_of(parts: &[&'static [u8]]) -> Records {
        Records {
            parts: parts
                .iter()
                .map(|part| Chunk::Bytes(Bytes::from_static(part)))
                .collect(),
        }
    }

    /// 2 topics x 2 partitions: records in two chunks, null records, empty records, one chunk.
    fn sample_body() -> FetchResponseBody {
        FetchResponseBody {
            throttle_time_ms: 17,
            error_code: error_code::NONE,
            session_id: 0x0102_0304,
            topics: vec![
                FetchTopic {
                    name: "orders".to_string(),
                    partitions: vec![
                        FetchPartition {
                            partition_index: 0,
                            error_code: error_code::NONE,
                            high_watermark: 1_000,
                            last_stable_offset: 1_000,
                            log_start_offset: 10,
                            records: Some(records_of(&[b"first batch bytes", b"second"])),
                        },
                        FetchPartition {
                            partition_index: 3,
                            error_code: error_code::OFFSET_OUT_OF_RANGE,
                            high_watermark: -1,
                            last_stable_offset: -1,
                            log_start_offset: -1,
                            records: None,
                        },
                    ],
                },
                FetchTopic {
                    name: "payments.eu-west".to_string(),
                    partitions: vec![
                        FetchPartition {
                            partition_index: 1,
                            error_code: error_code::NOT_LEADER_OR_FOLLOWER,
                            high_watermark: 77,
                            last_stable_offset: 70,
                            log_start_offset: 0,
                            records: Some(Records::default()),
                        },
                        FetchPartition {
                            partition_index: 2,
                            error_code: error_code::NONE,
                            high_watermark: i64::MAX,
                            last_stable_offset: 1 << 40,
                            log_start_offset: 1 << 33,
                            records: Some(records_of(&[&[0xAB; 300]])),
                        },
                    ],
                },
            ],
        }
    }

    /// The same response through kafka-protocol, records inlined, with the 4-byte size prefix.
    fn reference_encoding(version: i16, correlation_id: i32, body: &FetchResponseBody) -> Vec<u8> {
        let topics = body
            .topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let records = partition
                            .records
                            .as_ref()
                            .map(|records| Bytes::from(concatenate(&records.parts)));
                        PartitionData::default()
                            .with_partition_index(partition.partition_index)
                            .with_error_code(partition.error_code)
                            .with_high_watermark(partition.high_watermark)
                            .with_last_stable_offset(partition.last_stable_offset)
                            .with_log_start_offset(partition.log_start_offset)
                            .with_aborted_transactions(None)
                            .with_records(records)
                    })
                    .collect();
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_partitions(partitions)
            })
            .collect();
        let mut response = FetchResponse::default()
            .with_throttle_time_ms(body.throttle_time_ms)
            .with_responses(topics);
        if version >= FETCH_VERSION_SESSION_MIN {
            response = response
                .with_error_code(body.error_code)
                .with_session_id(body.session_id);
        }
        let header = ResponseHeader::default().with_correlation_id(correlation_id);
        let mut frame = BytesMut::new();
        header
            .encode(&mut frame, FetchResponse::header_version(version))
            .unwrap();
        response.encode(&mut frame, version).unwrap();
        let mut out = (frame.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&frame);
        out
    }

    #[test]
    fn every_version_matches_kafka_protocol_byte_for_byte() {
        let body = sample_body();
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let chunks = encode_fetch_response(version, 0x7eed_beef, &body);
            let expected = reference_encoding(version, 0x7eed_beef, &body);
            assert_eq!(concatenate(&chunks), expected, "version {version}");
        }
    }

    #[test]
    fn error_code_and_session_id_are_absent_before_version_7() {
        let mut body = sample_body();
        let version_6 = concatenate(&encode_fetch_response(6, 1, &body));
        body.error_code = 58;
        body.session_id = 999;
        assert_eq!(concatenate(&encode_fetch_response(6, 1, &body)), version_6);
        assert_ne!(concatenate(&encode_fetch_response(7, 1, &body)), version_6);
    }

    #[test]
    fn empty_response_matches_kafka_protocol() {
        let body = FetchResponseBody {
            throttle_time_ms: 0,
            error_code: error_code::NONE,
            session_id: 0,
            topics: Vec::new(),
        };
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let chunks = encode_fetch_response(version, -5, &body);
            assert_eq!(chunks.len(), 1, "version {version}");
            assert_eq!(
                concatenate(&chunks),
                reference_encoding(version, -5, &body),
                "version {version}"
            );
        }
    }

    #[test]
    fn long_strings_and_records_use_multi_byte_varints() {
        let long_name = "t".repeat(200);
        let big_records: &'static [u8] = Box::leak(vec![7u8; 20_000].into_boxed_slice());
        let body = FetchResponseBody {
            throttle_time_ms: 0,
            error_code: error_code::NONE,
            session_id: 0,
            topics: vec![FetchTopic {
                name: long_name,
                partitions: (0..130)
                    .map(|index| FetchPartition {
                        partition_index: index,
                        error_code: error_code::NONE,
                        high_watermark: 5,
                        last_stable_offset: 5,
                        log_start_offset: 0,
                        records: (index == 0).then(|| records_of(&[big_records])),
                    })
                    .collect(),
            }],
        };
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            assert_eq!(
                concatenate(&encode_fetch_response(version, 9, &body)),
                reference_encoding(version, 9, &body),
                "version {version}"
            );
        }
    }

    #[test]
    fn file_parts_pass_through_and_encoded_bytes_merge() {
        let file = tempfile::tempfile().unwrap();
        let fd = Arc::new(OwnedFd::from(file));
        let region = FileChunk {
            fd: Arc::clone(&fd),
            position: 4_096,
            len: 1 << 20,
        };
        let mut body = sample_body();
        body.topics[0].partitions[0].records = Some(Records {
            parts: vec![
                Chunk::File(region.clone()),
                Chunk::Bytes(Bytes::from_static(b"tail")),
            ],
        });
        body.topics[1].partitions[1].records = Some(Records {
            parts: vec![Chunk::File(region)],
        });
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let chunks = encode_fetch_response(version, 1, &body);
            // encoded | file | "tail" | encoded | file | (v12: the closing tagged fields)
            let mut expected_shape = vec!["bytes", "file", "bytes", "bytes", "file"];
            if version >= FETCH_VERSION_FLEXIBLE_MIN {
                expected_shape.push("bytes");
            }
            let shape: Vec<&str> = chunks
                .iter()
                .map(|chunk| match chunk {
                    Chunk::Bytes(_) => "bytes",
                    Chunk::File(_) => "file",
                })
                .collect();
            assert_eq!(shape, expected_shape, "version {version}");
            for chunk in &chunks {
                if let Chunk::File(file) = chunk {
                    assert!(Arc::ptr_eq(&file.fd, &fd));
                    assert_eq!((file.position, file.len), (4_096, 1 << 20));
                }
            }
            let Chunk::Bytes(head) = &chunks[0] else {
                unreachable!()
            };
            let frame_size = i32::from_be_bytes(head[..4].try_into().unwrap());
            let total: u64 = chunks.iter().map(Chunk::len).sum();
            assert_eq!(frame_size as u64, total - 4, "version {version}");
        }
    }

    #[test]
    fn unsigned_varint_matches_leb128() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (u64::from(u32::MAX), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (value, expected) in cases {
            let mut out = BytesMut::new();
            put_unsigned_varint(&mut out, value);
            assert_eq!(&out[..], expected, "value {value}");
        }
    }

    #[test]
    #[should_panic(expected = "outside 4..=12")]
    fn version_3_is_a_caller_bug() {
        encode_fetch_response(3, 0, &sample_body());
    }

    #[test]
    #[should_panic(expected = "outside 4..=12")]
    fn version_13_is_a_caller_bug() {
        encode_fetch_response(13, 0, &sample_body());
    }
}
