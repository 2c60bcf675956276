//! Records inside a batch: [`BatchBuilder`] encodes a whole batch, [`decode_records`]
//! decodes one back. Neither is on the broker's produce path (that only runs
//! [`super::validate`]); they serve clients, tests, tools and compaction.

use std::borrow::Cow;

use super::compression::{self, Compression};
use super::layout::*;
use super::varint::{decode_varint, decode_varlong, encode_varint, encode_varlong};
use super::{validate, BatchError};

/// One record, as stored: its offset and timestamp are deltas from the batch header's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Offset of this record minus the batch's baseOffset.
    pub offset_delta: i32,
    /// Timestamp of this record minus the batch's baseTimestamp, in ms.
    pub timestamp_delta: i64,
    /// `None` is a null key, distinct from an empty one.
    pub key: Option<Vec<u8>>,
    /// `None` is a null value (a tombstone under compaction), distinct from an empty one.
    pub value: Option<Vec<u8>>,
    /// Headers in wire order; keys may repeat.
    pub headers: Vec<Header>,
}

/// A record header. The key is UTF-8 on the wire (checked on decode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Encodes records into one complete batch.
///
/// Records get offset deltas 0, 1, 2... in push order. A length that does not fit its
/// i32 field is remembered and reported by [`BatchBuilder::build`], so pushing never
/// fails. Memory is the encoded records plus one record of scratch space.
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    base_timestamp_ms: i64,
    max_timestamp_ms: Option<i64>,
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// The uncompressed records area.
    records: Vec<u8>,
    records_count: usize,
    /// Body of the record being encoded; its length must be known before it is written.
    scratch: Vec<u8>,
    unencodable: Option<BatchError>,
}

impl BatchBuilder {
    /// An empty batch whose records' timestamps are relative to `base_timestamp_ms`, with
    /// no producer id (-1, -1, -1).
    pub fn new(base_timestamp_ms: i64, compression: Compression) -> BatchBuilder {
        BatchBuilder {
            base_timestamp_ms,
            max_timestamp_ms: None,
            compression,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            records: Vec::new(),
            records_count: 0,
            scratch: Vec::new(),
            unencodable: None,
        }
    }

    /// Sets the idempotent producer's id, epoch and first sequence number.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> BatchBuilder {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Appends `record`, keeping its timestamp delta; its `offset_delta` is replaced by
    /// its position in the batch.
    pub fn push(&mut self, record: &Record) -> &mut BatchBuilder {
        let headers = record
            .headers
            .iter()
            .map(|header| (header.key.as_slice(), header.value.as_deref()));
        self.append(
            record.timestamp_delta,
            record.key.as_deref(),
            record.value.as_deref(),
            headers,
        );
        self
    }

    /// Appends a record stamped `timestamp_ms` (absolute; stored relative to the base).
    pub fn push_kv(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
        timestamp_ms: i64,
    ) -> &mut BatchBuilder {
        // Wrapping keeps extreme timestamps panic-free; base + delta (wrapping) gives
        // timestamp_ms back.
        let timestamp_delta = timestamp_ms.wrapping_sub(self.base_timestamp_ms);
        self.append(timestamp_delta, key, value, headers.iter().copied());
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.records_count
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.records_count == 0
    }

    /// Encodes the batch with `base_offset`: header, CRC-32C, records area compressed with
    /// the builder's codec. An empty builder gives a batch with no records and
    /// lastOffsetDelta 0. Errors if a pushed length did not fit its field, if the batch
    /// exceeds i32 sizes, or if the codec is not implemented.
    pub fn build(&self, base_offset: i64) -> Result<Vec<u8>, BatchError> {
        if let Some(error) = &self.unencodable {
            return Err(error.clone());
        }
        let records_area: Cow<'_, [u8]> = match self.compression {
            Compression::None => Cow::Borrowed(&self.records),
            codec => Cow::Owned(compression::compress(codec, &self.records)?),
        };
        let total_bytes = HEADER_BYTES + records_area.len();
        let batch_length = i32::try_from(total_bytes - LOG_OVERHEAD_BYTES).map_err(|_| {
            BatchError::Unencodable {
                what: "batch length",
                length: total_bytes,
            }
        })?;
        // append() refuses a record whose offset delta would not fit an i32.
        let records_count = self.records_count as i32;
        let last_offset_delta = records_count.saturating_sub(1).max(0);
        if base_offset
            .checked_add(i64::from(last_offset_delta))
            .is_none()
        {
            return Err(BatchError::BadLastOffsetDelta {
                last_offset_delta,
                at: LAST_OFFSET_DELTA_OFFSET,
            });
        }
        let attributes = i16::from(self.compression.codec_id());

        let mut batch = Vec::with_capacity(total_bytes);
        batch.extend_from_slice(&base_offset.to_be_bytes());
        batch.extend_from_slice(&batch_length.to_be_bytes());
        batch.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch: the broker's
        batch.push(MAGIC_V2 as u8);
        batch.extend_from_slice(&0u32.to_be_bytes()); // crc, filled in below
        batch.extend_from_slice(&attributes.to_be_bytes());
        batch.extend_from_slice(&last_offset_delta.to_be_bytes());
        batch.extend_from_slice(&self.base_timestamp_ms.to_be_bytes());
        let max_timestamp_ms = self.max_timestamp_ms.unwrap_or(self.base_timestamp_ms);
        batch.extend_from_slice(&max_timestamp_ms.to_be_bytes());
        batch.extend_from_slice(&self.producer_id.to_be_bytes());
        batch.extend_from_slice(&self.producer_epoch.to_be_bytes());
        batch.extend_from_slice(&self.base_sequence.to_be_bytes());
        batch.extend_from_slice(&records_count.to_be_bytes());
        debug_assert_eq!(batch.len(), HEADER_BYTES);
        batch.extend_from_slice(&records_area);

        let crc = crc32c::crc32c(&batch[CRC_COVERED_FROM..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(batch)
    }

    fn append<'h>(
        &mut self,
        timestamp_delta: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl ExactSizeIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        if self.unencodable.is_some() {
            return;
        }
        // Offset deltas must fit an i32, and so must recordsCount = last delta + 1.
        let Some(offset_delta) = i32::try_from(self.records_count)
            .ok()
            .filter(|&delta| delta < i32::MAX)
        else {
            self.unencodable = Some(BatchError::Unencodable {
                what: "records count",
                length: self.records_count,
            });
            return;
        };
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        let encoded = encode_record_body(
            &mut body,
            offset_delta,
            timestamp_delta,
            key,
            value,
            headers,
        )
        .and_then(|()| encode_length(&mut self.records, body.len(), "record"));
        match encoded {
            Ok(()) => {
                self.records.extend_from_slice(&body);
                self.records_count += 1;
                let timestamp_ms = self.base_timestamp_ms.wrapping_add(timestamp_delta);
                let max_timestamp_ms = self
                    .max_timestamp_ms
                    .map_or(timestamp_ms, |max| max.max(timestamp_ms));
                self.max_timestamp_ms = Some(max_timestamp_ms);
            }
            Err(error) => self.unencodable = Some(error),
        }
        self.scratch = body;
    }
}

/// Everything of a record after its length prefix.
fn encode_record_body<'h>(
    body: &mut Vec<u8>,
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl ExactSizeIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
) -> Result<(), BatchError> {
    body.push(0); // record attributes: unused by the format
    encode_varlong(body, timestamp_delta);
    encode_varint(body, offset_delta);
    encode_bytes(body, key, "key")?;
    encode_bytes(body, value, "value")?;
    encode_length(body, headers.len(), "headers count")?;
    for (header_key, header_value) in headers {
        encode_bytes(body, Some(header_key), "header key")?;
        encode_bytes(body, header_value, "header value")?;
    }
    Ok(())
}

fn encode_length(out: &mut Vec<u8>, length: usize, what: &'static str) -> Result<(), BatchError> {
    let length_i32 = i32::try_from(length).map_err(|_| BatchError::Unencodable { what, length })?;
    encode_varint(out, length_i32);
    Ok(())
}

fn encode_bytes(
    out: &mut Vec<u8>,
    bytes: Option<&[u8]>,
    what: &'static str,
) -> Result<(), BatchError> {
    match bytes {
        None => encode_varint(out, -1),
        Some(bytes) => {
            encode_length(out, bytes.len(), what)?;
            out.extend_from_slice(bytes);
        }
    }
    Ok(())
}

/// Validates `batch` (header, CRC) and decodes its records. Bytes after the batch are
/// ignored.
///
/// Bounds: a compressed records area decompresses to at most `max_decompressed_bytes`
/// (an uncompressed one is already in memory and is not capped); recordsCount is checked
/// against the bytes present before the record list is allocated; every key, value and
/// header is bounded by its record's length, itself bounded by the bytes left.
///
/// Checks beyond [`validate`]: exactly recordsCount records fill the records area; each
/// record's length matches the fields it holds; offset deltas strictly increase and stay
/// within lastOffsetDelta; header counts and key lengths are not negative; header keys
/// are UTF-8. Record errors carry positions within the (decompressed) records area.
pub fn decode_records(
    batch: &[u8],
    max_decompressed_bytes: usize,
) -> Result<Vec<Record>, BatchError> {
    let header = validate(batch, batch.len())?;
    let records_area = &batch[RECORDS_OFFSET..header.total_bytes()];
    let records_bytes: Cow<'_, [u8]> = match header.compression()? {
        Compression::None => Cow::Borrowed(records_area),
        codec => Cow::Owned(compression::decompress(
            codec,
            records_area,
            max_decompressed_bytes,
            RECORDS_OFFSET,
        )?),
    };
    let declared = header.records_count;
    // Non-negative by validate; bounded by the bytes present before allocating.
    let records_count = declared.max(0) as usize;
    let records_count_max = records_bytes.len() / RECORD_MIN_BYTES;
    if records_count > records_count_max {
        return Err(BatchError::BadRecordsCount {
            records_count: declared,
            max: records_count_max as i64,
            at: RECORDS_COUNT_OFFSET,
        });
    }
    let mut records = Vec::with_capacity(records_count);
    let mut cursor = 0;
    let mut previous_offset_delta = -1i64;
    while records.len() < records_count {
        if cursor == records_bytes.len() {
            return Err(BatchError::RecordCountMismatch {
                declared,
                decoded: records.len(),
                at: cursor,
            });
        }
        let record_start = cursor;
        let record = decode_record(&records_bytes, &mut cursor)?;
        let offset_delta = i64::from(record.offset_delta);
        if offset_delta <= previous_offset_delta || record.offset_delta > header.last_offset_delta {
            return Err(BatchError::BadRecord {
                at: record_start,
                what: "offset delta does not increase or exceeds lastOffsetDelta",
            });
        }
        previous_offset_delta = offset_delta;
        records.push(record);
    }
    if cursor != records_bytes.len() {
        return Err(BatchError::BadRecord {
            at: cursor,
            what: "bytes left after the last record",
        });
    }
    Ok(records)
}

/// Decodes the record at `*cursor`, leaving the cursor after it.
fn decode_record(records_bytes: &[u8], cursor: &mut usize) -> Result<Record, BatchError> {
    let record_start = *cursor;
    let length = decode_varint(records_bytes, cursor)?;
    let record_end = usize::try_from(length)
        .ok()
        .filter(|&length| length <= records_bytes.len() - *cursor)
        .map(|length| *cursor + length)
        .ok_or(BatchError::BadRecord {
            at: record_start,
            what: "record length is negative or too long",
        })?;
    // Every field read below is confined to this record.
    let record_bytes = &records_bytes[..record_end];

    // Record attributes are unused by the format; Kafka ignores them too.
    if *cursor >= record_end {
        return Err(BatchError::BadRecord {
            at: *cursor,
            what: "record ends before its attributes",
        });
    }
    *cursor += 1;
    let timestamp_delta = decode_varlong(record_bytes, cursor)?;
    let offset_delta = decode_varint(record_bytes, cursor)?;
    let key = decode_bytes(record_bytes, cursor)?;
    let value = decode_bytes(record_bytes, cursor)?;

    let count_at = *cursor;
    let headers_count = decode_varint(record_bytes, cursor)?;
    let headers_count = usize::try_from(headers_count)
        .ok()
        .filter(|&count| count <= (record_end - *cursor) / RECORD_HEADER_MIN_BYTES)
        .ok_or(BatchError::BadRecord {
            at: count_at,
            what: "headers count is negative or too large",
        })?;
    let mut headers = Vec::with_capacity(headers_count);
    for _ in 0..headers_count {
        let key_at = *cursor;
        let key = decode_bytes(record_bytes, cursor)?.ok_or(BatchError::BadRecord {
            at: key_at,
            what: "header key is null",
        })?;
        if std::str::from_utf8(&key).is_err() {
            return Err(BatchError::BadRecord {
                at: key_at,
                what: "header key is not UTF-8",
            });
        }
        let value = decode_bytes(record_bytes, cursor)?;
        headers.push(Header { key, value });
    }
    if *cursor != record_end {
        return Err(BatchError::BadRecord {
            at: *cursor,
            what: "record length does not match its fields",
        });
    }
    Ok(Record {
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers,
    })
}

/// Decodes a varint length (-1 = null) and that many bytes, all within `bytes`.
fn decode_bytes(bytes: &[u8], cursor: &mut usize) -> Result<Option<Vec<u8>>, BatchError> {
    let length_at = *cursor;
    let length = decode_varint(bytes, cursor)?;
    if length == -1 {
        return Ok(None);
    }
    let start = *cursor;
    let end = usize::try_from(length)
        .ok()
        .filter(|&length| length <= bytes.len() - start)
        .map(|length| start + length)
        .ok_or(BatchError::BadRecord {
            at: length_at,
            what: "field length is negative or too long",
        })?;
    *cursor = end;
    Ok(Some(bytes[start..end].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::super::{patch_base_offset, BatchHeader};
    use super::*;

    fn sample_records() -> Vec<Record> {
        vec![
            Record {
                offset_delta: 0,
                timestamp_delta: 0,
                key: Some(b"key".to_vec()),
                value: Some(b"value".to_vec()),
                headers: vec![],
            },
            Record {
                offset_delta: 1,
                timestamp_delta: -3,
                key: None,
                value: None,
                headers: vec![],
            },
            Record {
                offset_delta: 2,
                timestamp_delta: 1_000_000,
                key: Some(Vec::new()),
                value: Some(Vec::new()),
                headers: vec![
                    Header {
                        key: b"trace".to_vec(),
                        value: Some(b"abc".to_vec()),
                    },
                    Header {
                        key: Vec::new(),
                        value: None,
                    },
                    Header {
                        key: "ключ".as_bytes().to_vec(),
                        value: Some(vec![0; 300]),
                    },
                ],
            },
            Record {
                offset_delta: 3,
                timestamp_delta: 7,
                key: None,
                value: Some(vec![0xab; 10_000]),
                headers: vec![],
            },
        ]
    }

    fn build(records: &[Record], compression: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::new(1_000, compression).producer(77, 3, 500);
        for record in records {
            builder.push(record);
        }
        assert_eq!(builder.len(), records.len());
        builder.build(5_000).unwrap()
    }

    #[test]
    fn round_trips_uncompressed_and_zstd() {
        let records = sample_records();
        for compression in [Compression::None, Compression::Zstd] {
            let batch = build(&records, compression);
            let header = validate(&batch, batch.len()).unwrap();
            assert_eq!(header.compression(), Ok(compression));
            assert_eq!(header.records_count, 4);
            assert_eq!(header.last_offset_delta, 3);
            assert_eq!(header.last_offset(), 5_003);
            assert_eq!(header.max_timestamp, 1_001_000);
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence
                ),
                (77, 3, 500)
            );
            assert_eq!(decode_records(&batch, 1 << 20).unwrap(), records);
        }
    }

    #[test]
    fn zstd_batch_is_smaller_for_repetitive_records() {
        let records = sample_records();
        assert!(
            build(&records, Compression::Zstd).len() < build(&records, Compression::None).len() / 4
        );
    }

    #[test]
    fn push_kv_matches_push() {
        let mut builder = BatchBuilder::new(10, Compression::None);
        builder
            .push_kv(Some(b"a"), None, &[(b"h", None), (b"i", Some(b"j"))], 15)
            .push_kv(None, Some(b""), &[], 9);
        let batch = builder.build(0).unwrap();
        let records = decode_records(&batch, 0).unwrap();
        assert_eq!(
            records,
            [
                Record {
                    offset_delta: 0,
                    timestamp_delta: 5,
                    key: Some(b"a".to_vec()),
                    value: None,
                    headers: vec![
                        Header {
                            key: b"h".to_vec(),
                            value: None
                        },
                        Header {
                            key: b"i".to_vec(),
                            value: Some(b"j".to_vec())
                        },
                    ],
                },
                Record {
                    offset_delta: 1,
                    timestamp_delta: -1,
                    key: None,
                    value: Some(vec![]),
                    headers: vec![]
                },
            ]
        );
        assert_eq!(BatchHeader::parse(&batch).unwrap().max_timestamp, 15);
    }

    #[test]
    fn empty_builder_gives_empty_batch() {
        for compression in [Compression::None, Compression::Zstd] {
            let batch = BatchBuilder::new(1, compression).build(0).unwrap();
            let header = validate(&batch, batch.len()).unwrap();
            assert_eq!(
                (
                    header.records_count,
                    header.last_offset_delta,
                    header.max_timestamp
                ),
                (0, 0, 1)
            );
            assert_eq!(decode_records(&batch, 1 << 10).unwrap(), []);
        }
    }

    #[test]
    fn unimplemented_codec_fails_to_build() {
        let mut builder = BatchBuilder::new(0, Compression::Snappy);
        builder.push_kv(None, Some(b"v"), &[], 0);
        assert_eq!(
            builder.build(0),
            Err(BatchError::UnsupportedCompression { codec: 2 })
        );
    }

    #[test]
    fn decode_respects_decompression_cap() {
        let batch = build(&sample_records(), Compression::Zstd);
        assert_eq!(
            decode_records(&batch, 1_000),
            Err(BatchError::DecompressedTooLarge {
                max: 1_000,
                at: RECORDS_OFFSET
            })
        );
    }

    #[test]
    fn decode_survives_patching() {
        let mut batch = build(&sample_records(), Compression::None);
        patch_base_offset(&mut batch, 1 << 40);
        assert_eq!(decode_records(&batch, 0).unwrap(), sample_records());
    }

    /// Builds an uncompressed batch around a hand-written records area.
    fn raw_batch(records_area: &[u8], records_count: i32, last_offset_delta: i32) -> Vec<u8> {
        let mut batch = BatchBuilder::new(0, Compression::None).build(0).unwrap();
        batch.extend_from_slice(records_area);
        let batch_length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
        batch[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4]
            .copy_from_slice(&batch_length.to_be_bytes());
        batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&last_offset_delta.to_be_bytes());
        batch[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
            .copy_from_slice(&records_count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_COVERED_FROM..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[test]
    fn decode_rejects_malformed_records() {
        // length 6: attributes, ts 0, offset 0, key null (0x01), value null, 0 headers
        let minimal = [0x0c, 0, 0, 0, 0x01, 0x01, 0];
        assert_eq!(
            decode_records(&raw_batch(&minimal, 1, 0), 0).unwrap().len(),
            1
        );

        let cases: [(&[u8], i32, BatchError); 7] = [
            // declared length one more than the fields
            (
                &[0x0e, 0, 0, 0, 0x01, 0x01, 0, 0],
                1,
                BatchError::BadRecord {
                    at: 7,
                    what: "record length does not match its fields",
                },
            ),
            // two records declared, the second claiming more bytes than remain
            (
                &[0x0c, 0, 0, 0, 0x01, 0x01, 0, 0x20, 0, 0, 0, 0x01, 0x01, 0],
                2,
                BatchError::BadRecord {
                    at: 7,
                    what: "record length is negative or too long",
                },
            ),
            // key length -2
            (
                &[0x0c, 0, 0, 0, 0x03, 0x01, 0],
                1,
                BatchError::BadRecord {
                    at: 4,
                    what: "field length is negative or too long",
                },
            ),
            // negative headers count
            (
                &[0x0c, 0, 0, 0, 0x01, 0x01, 0x01],
                1,
                BatchError::BadRecord {
                    at: 6,
                    what: "headers count is negative or too large",
                },
            ),
            // null header key
            (
                &[0x10, 0, 0, 0, 0x01, 0x01, 0x02, 0x01, 0x01],
                1,
                BatchError::BadRecord {
                    at: 7,
                    what: "header key is null",
                },
            ),
            // header key not UTF-8
            (
                &[0x12, 0, 0, 0, 0x01, 0x01, 0x02, 0x02, 0xff, 0x01],
                1,
                BatchError::BadRecord {
                    at: 7,
                    what: "header key is not UTF-8",
                },
            ),
            // offset delta 1 with lastOffsetDelta 0
            (
                &[0x0c, 0, 0, 0x02, 0x01, 0x01, 0],
                1,
                BatchError::BadRecord {
                    at: 0,
                    what: "offset delta does not increase or exceeds lastOffsetDelta",
                },
            ),
        ];
        for (records_area, records_count, expected) in cases {
            let batch = raw_batch(records_area, records_count, records_count - 1);
            assert_eq!(
                decode_records(&batch, 0),
                Err(expected),
                "records {records_area:x?}"
            );
        }

        let trailing = raw_batch(&[0x0c, 0, 0, 0, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0, 0], 1, 5);
        assert_eq!(
            decode_records(&trailing, 0),
            Err(BatchError::BadRecord {
                at: 7,
                what: "bytes left after the last record"
            })
        );
        let implausible_count = raw_batch(
            &[0x0c, 0, 0, 0, 0x01, 0x01, 0, 0x0c, 0, 0, 0, 0x01, 0x01, 0],
            3,
            5,
        );
        assert!(matches!(
            decode_records(&implausible_count, 0),
            Err(BatchError::BadRecordsCount { .. })
        ));
    }

    #[test]
    fn decode_reports_count_mismatch_at_end_of_records() {
        // one 14-byte record (a 7-byte key) where two are declared: plausible by size,
        // so the shortfall is found only when the records run out
        let records_area = [0x1a, 0, 0, 0, 0x0e, 1, 2, 3, 4, 5, 6, 7, 0x01, 0];
        let batch = raw_batch(&records_area, 2, 1);
        assert_eq!(
            decode_records(&batch, 0),
            Err(BatchError::RecordCountMismatch {
                declared: 2,
                decoded: 1,
                at: 14
            })
        );
    }
}
