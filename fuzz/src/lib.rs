//! Input layouts shared by the fuzz targets (`fuzz_targets/`) and the seed maker
//! (`examples/make_seeds.rs`).
//!
//! Most targets read a leading options byte, then the bytes of the format. The layouts live
//! here so that the seed maker writes inputs the targets read in the same way. See
//! docs/fuzzing.md.

/// `record_batch`: an options byte, then a buffer of batches packed back to back.
pub mod record_batch {
    use shardlog_storage::batch::layout::{
        BATCH_LENGTH_MIN, BATCH_LENGTH_OFFSET, CRC_COVERED_FROM, CRC_OFFSET, HEADER_BYTES,
        LOG_OVERHEAD_BYTES,
    };

    /// Re-stamp each batch's CRC before the parsers run, so mutated records reach the record
    /// decoder instead of stopping at the CRC check.
    pub const FIX_CRC: u8 = 1;
    /// Use [`MAX_BATCH_BYTES_SMALL`] as the batch size limit.
    pub const SMALL_MAX_BATCH: u8 = 2;
    /// Use [`DECOMPRESSED_CAP_SMALL`] as the decompression cap.
    pub const SMALL_DECOMPRESSED_CAP: u8 = 4;

    /// The broker's default `max_batch_bytes`.
    pub const MAX_BATCH_BYTES: usize = 8 << 20;
    pub const MAX_BATCH_BYTES_SMALL: usize = 4096;
    /// Large enough for any input of 64 KiB that is not a bomb, small enough to stay fast.
    pub const DECOMPRESSED_CAP: usize = 1 << 20;
    pub const DECOMPRESSED_CAP_SMALL: usize = 1024;

    pub struct Input {
        pub fix_crc: bool,
        pub max_batch_bytes: usize,
        pub decompressed_cap: usize,
        pub bytes: Vec<u8>,
    }

    /// Reads an input; `None` when it is empty.
    pub fn read(data: &[u8]) -> Option<Input> {
        let (&options, rest) = data.split_first()?;
        Some(Input {
            fix_crc: options & FIX_CRC != 0,
            max_batch_bytes: if options & SMALL_MAX_BATCH != 0 {
                MAX_BATCH_BYTES_SMALL
            } else {
                MAX_BATCH_BYTES
            },
            decompressed_cap: if options & SMALL_DECOMPRESSED_CAP != 0 {
                DECOMPRESSED_CAP_SMALL
            } else {
                DECOMPRESSED_CAP
            },
            bytes: rest.to_vec(),
        })
    }

    /// The input that stands for `batches` read with `options`.
    pub fn write(options: u8, batches: &[u8]) -> Vec<u8> {
        let mut input = vec![options];
        input.extend_from_slice(batches);
        input
    }

    /// Walks the batches by their batchLength and writes a correct CRC-32C into each one
    /// that lies whole within `buffer`. Stops at the first header that does not give a
    /// plausible length. Touches nothing but the CRC fields.
    pub fn fix_crcs(buffer: &mut [u8]) {
        let mut position = 0;
        while buffer.len() - position >= HEADER_BYTES {
            let at = position + BATCH_LENGTH_OFFSET;
            let length =
                i32::from_be_bytes([buffer[at], buffer[at + 1], buffer[at + 2], buffer[at + 3]]);
            if length < BATCH_LENGTH_MIN {
                return;
            }
            let total = LOG_OVERHEAD_BYTES + length as usize;
            if total > buffer.len() - position {
                return;
            }
            let crc = crc32c::crc32c(&buffer[position + CRC_COVERED_FROM..position + total]);
            buffer[position + CRC_OFFSET..position + CRC_OFFSET + 4]
                .copy_from_slice(&crc.to_be_bytes());
            position += total;
        }
    }
}

/// `offset_index` and `time_index`: an 8-byte bound, an 8-byte query, then the index file.
pub mod index {
    pub const PREFIX_BYTES: usize = 16;

    pub struct Input<'a> {
        /// The segment's length (offset index) or the next relative offset (time index).
        pub bound: u64,
        /// A lookup target, read as u32 / u64 / i64 as each lookup needs.
        pub query: u64,
        pub bytes: &'a [u8],
    }

    pub fn read(data: &[u8]) -> Option<Input<'_>> {
        let (prefix, bytes) = data.split_first_chunk::<PREFIX_BYTES>()?;
        let (bound, query) = prefix.split_at(8);
        Some(Input {
            bound: u64::from_be_bytes(bound.try_into().ok()?),
            query: u64::from_be_bytes(query.try_into().ok()?),
            bytes,
        })
    }

    pub fn write(bound: u64, query: u64, index: &[u8]) -> Vec<u8> {
        let mut input = Vec::with_capacity(PREFIX_BYTES + index.len());
        input.extend_from_slice(&bound.to_be_bytes());
        input.extend_from_slice(&query.to_be_bytes());
        input.extend_from_slice(index);
        input
    }
}

/// `request_frame`: two selector bytes, then a request frame after its api key and version.
///
/// The first byte picks an entry of `shardlog::broker::api::SUPPORTED` (modulo its length) and
/// the second a version in that entry's range (modulo its width). The frame handed to `parse`
/// is that api key and version, big-endian, then the rest of the input: correlation id,
/// client id, tagged fields and body. So every served API and version is reached without the
/// fuzzer having to guess a valid pair. A first byte of [`RAW`] hands the rest of the input
/// to `parse` as the whole frame, to reach unknown APIs and unserved versions too.
pub mod request_frame {
    use bytes::Bytes;
    use kafka_protocol::messages::ApiKey;
    use shardlog::broker::api::SUPPORTED;
    use shardlog_protocol::frame::REQUEST_HEADER_MIN_BYTES;

    pub const RAW: u8 = 0xff;

    /// The frame an input stands for, and the api key and version it was built with (`None`
    /// for a raw frame). `None` when the frame would be shorter than the connection lets
    /// through.
    pub fn read(data: &[u8]) -> Option<(Option<(ApiKey, i16)>, Bytes)> {
        let (&selector, rest) = data.split_first()?;
        if selector == RAW {
            if rest.len() < REQUEST_HEADER_MIN_BYTES {
                return None;
            }
            return Some((None, Bytes::copy_from_slice(rest)));
        }
        let (&version_step, rest) = rest.split_first()?;
        if 4 + rest.len() < REQUEST_HEADER_MIN_BYTES {
            return None;
        }
        let (api_key, min, max) = SUPPORTED[usize::from(selector) % SUPPORTED.len()];
        let width = max - min + 1;
        let version = min + i16::from(version_step) % width;
        let mut frame = Vec::with_capacity(4 + rest.len());
        frame.extend_from_slice(&(api_key as i16).to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(rest);
        Some((Some((api_key, version)), Bytes::from(frame)))
    }

    /// The input that stands for `frame`, which must start with a served api key and version.
    /// `None` when that pair is not served.
    pub fn write(frame: &[u8]) -> Option<Vec<u8>> {
        let api_key = i16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
        let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
        let index = SUPPORTED
            .iter()
            .position(|&(key, min, max)| key as i16 == api_key && (min..=max).contains(&version))?;
        let (_, min, _) = SUPPORTED[index];
        let mut input = vec![u8::try_from(index).ok()?, u8::try_from(version - min).ok()?];
        input.extend_from_slice(&frame[4..]);
        Some(input)
    }

    /// The input that hands `frame` to `parse` as it is.
    pub fn write_raw(frame: &[u8]) -> Vec<u8> {
        let mut input = vec![RAW];
        input.extend_from_slice(frame);
        input
    }
}

/// `client_response`: a selector byte, a version byte, then a response frame after its size
/// prefix (correlation id, header tags where the version has them, body).
///
/// The selector picks an entry of `shardlog::broker::api::SUPPORTED` (modulo its length):
/// those are the APIs the tests, the harness and the follower call. The low seven bits of the
/// version byte pick a version in that entry's range. The client expects the frame's own
/// correlation id, or the next one when [`OTHER_CORRELATION`] is set, so both the answer and
/// the stray-answer paths are reached. A selector of [`NEGOTIATION`] hands the frame to the
/// ApiVersions reader instead (v3, then v0).
pub mod client_response {
    use bytes::Bytes;
    use kafka_protocol::messages::ApiKey;
    use shardlog::broker::api::SUPPORTED;

    pub const NEGOTIATION: u8 = 0xff;
    /// Version-byte bit: expect the correlation id after the frame's own.
    pub const OTHER_CORRELATION: u8 = 0x80;

    pub struct Input {
        /// The API and version to decode as; `None` for the ApiVersions negotiation.
        pub api: Option<(ApiKey, i16)>,
        pub expected_correlation_id: i32,
        pub frame: Bytes,
    }

    /// Reads an input; `None` when it has no selector or version byte.
    pub fn read(data: &[u8]) -> Option<Input> {
        let (&selector, rest) = data.split_first()?;
        let (&version_byte, frame) = rest.split_first()?;
        let own = frame
            .get(..4)
            .map(|bytes| i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .unwrap_or(0);
        let expected_correlation_id = if version_byte & OTHER_CORRELATION != 0 {
            own.wrapping_add(1)
        } else {
            own
        };
        let api = (selector != NEGOTIATION).then(|| {
            let (api_key, min, max) = SUPPORTED[usize::from(selector) % SUPPORTED.len()];
            let step = i16::from(version_byte & !OTHER_CORRELATION);
            (api_key, min + step % (max - min + 1))
        });
        Some(Input {
            api,
            expected_correlation_id,
            frame: Bytes::copy_from_slice(frame),
        })
    }

    /// The input that decodes `frame` as `api_key`'s response at `version`; `None` when that
    /// pair is not served.
    pub fn write(api_key: ApiKey, version: i16, frame: &[u8]) -> Option<Vec<u8>> {
        let index = SUPPORTED
            .iter()
            .position(|&(key, min, max)| key == api_key && (min..=max).contains(&version))?;
        let (_, min, _) = SUPPORTED[index];
        let mut input = vec![u8::try_from(index).ok()?, u8::try_from(version - min).ok()?];
        input.extend_from_slice(frame);
        Some(input)
    }

    /// The input that hands `frame` to the ApiVersions reader.
    pub fn write_negotiation(frame: &[u8]) -> Vec<u8> {
        let mut input = vec![NEGOTIATION, 0];
        input.extend_from_slice(frame);
        input
    }
}

/// `quorum_record`: an options byte, then a quorum log file or a quorum frame body.
pub mod quorum {
    use shardlog::cluster::quorum::record::{MAGIC, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX};

    /// The rest is a frame body (what follows the length field), not a log file.
    pub const FRAME: u8 = 1;
    /// Re-stamp each log record's CRC before decoding (log files only).
    pub const FIX_CRC: u8 = 2;

    pub fn write(options: u8, bytes: &[u8]) -> Vec<u8> {
        let mut input = vec![options];
        input.extend_from_slice(bytes);
        input
    }

    /// Walks the records of a log file by their length fields and writes a correct CRC-32C
    /// into each one that lies whole within `file`. Ignores the magic; touches nothing but the
    /// CRC fields.
    pub fn fix_crcs(file: &mut [u8]) {
        let mut position = MAGIC.len();
        while file.len().saturating_sub(position) >= RECORD_HEADER_BYTES {
            let length = u32::from_le_bytes([
                file[position],
                file[position + 1],
                file[position + 2],
                file[position + 3],
            ]) as usize;
            if length > RECORD_PAYLOAD_BYTES_MAX
                || length > file.len() - position - RECORD_HEADER_BYTES
            {
                return;
            }
            let end = position + RECORD_HEADER_BYTES + length;
            let crc = crc32c::crc32c(&file[position + 8..end]);
            file[position + 4..position + 8].copy_from_slice(&crc.to_le_bytes());
            position = end;
        }
    }
}

/// `internal_records`: a selector byte, then one key or value of the group or share
/// coordinator's internal topics.
pub mod internal {
    pub const GROUP_KEY: u8 = 0;
    pub const GROUP_OFFSET_VALUE: u8 = 1;
    pub const SHARE_KEY: u8 = 2;
    pub const SHARE_VALUE: u8 = 3;

    /// Which decoder, from the low two bits of the first byte, and the bytes for it.
    pub fn read(data: &[u8]) -> Option<(u8, &[u8])> {
        let (&selector, rest) = data.split_first()?;
        Some((selector & 3, rest))
    }

    pub fn write(which: u8, bytes: &[u8]) -> Vec<u8> {
        let mut input = vec![which];
        input.extend_from_slice(bytes);
        input
    }
}
