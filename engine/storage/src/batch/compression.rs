//! Compression codecs of a batch's records area.
//!
//! Only zstd is implemented. gzip, snappy and lz4 are recognised (so [`super::validate`]
//! accepts such batches, as their bytes are opaque to it) but encoding or decoding them
//! returns [`BatchError::UnsupportedCompression`].

use std::io::Read;

use super::layout::COMPRESSION_MASK;
use super::BatchError;

/// zstd level used when building batches: zstd's own default, and Kafka's.
pub const ZSTD_LEVEL_DEFAULT: i32 = 3;

/// Smallest zstd window (log2 bytes) the decoder accepts whatever the output cap: 8 MiB
/// covers every standard level up to 19 even when the producer streamed without a
/// declared size. Only the ultra levels (20-22) declare larger windows.
const ZSTD_WINDOW_LOG_FLOOR: u32 = 23;
/// zstd's own default limit (128 MiB).
const ZSTD_WINDOW_LOG_CEILING: u32 = 27;

/// Codec of a batch, from attribute bits 0-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Records stored as is.
    None,
    /// gzip: recognised, not implemented.
    Gzip,
    /// snappy (xerial framing): recognised, not implemented.
    Snappy,
    /// lz4 frame: recognised, not implemented.
    Lz4,
    /// zstd frame(s).
    Zstd,
}

impl Compression {
    /// Reads the codec from attribute bits 0-2; `None` for the undefined ids 5-7.
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The codec id as stored in attribute bits 0-2.
    pub fn codec_id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Compresses a records area with `codec`. `Compression::None` is not a codec to call
/// this with: it returns `UnsupportedCompression` like the unimplemented ones.
pub(crate) fn compress(codec: Compression, records: &[u8]) -> Result<Vec<u8>, BatchError> {
    match codec {
        Compression::Zstd => {
            zstd::bulk::compress(records, ZSTD_LEVEL_DEFAULT).map_err(|_| BatchError::Compress {
                codec: codec.codec_id(),
            })
        }
        _ => Err(BatchError::UnsupportedCompression {
            codec: codec.codec_id(),
        }),
    }
}

/// Decompresses a records area, producing at most `max_decompressed_bytes` bytes.
///
/// The decoder streams and stops reading one byte past the cap, so a small input that
/// expands enormously fails with `DecompressedTooLarge` after bounded work and memory.
/// The zstd window the frame may declare is capped too (see `zstd_window_log_max`), as
/// the decoder allocates the declared window up front. `at` is where the compressed
/// bytes start in the caller's input, for the error.
pub(crate) fn decompress(
    codec: Compression,
    compressed: &[u8],
    max_decompressed_bytes: usize,
    at: usize,
) -> Result<Vec<u8>, BatchError> {
    if codec != Compression::Zstd {
        return Err(BatchError::UnsupportedCompression {
            codec: codec.codec_id(),
        });
    }
    let decompress_error = BatchError::Decompress { at };
    let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed)
        .map_err(|_| decompress_error.clone())?;
    decoder
        .window_log_max(zstd_window_log_max(max_decompressed_bytes))
        .map_err(|_| decompress_error.clone())?;
    let read_limit_bytes = u64::try_from(max_decompressed_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut decompressed = Vec::new();
    decoder
        .take(read_limit_bytes)
        .read_to_end(&mut decompressed)
        .map_err(|_| decompress_error)?;
    if decompressed.len() > max_decompressed_bytes {
        return Err(BatchError::DecompressedTooLarge {
            max: max_decompressed_bytes,
            at,
        });
    }
    Ok(decompressed)
}

/// A window never needs to exceed the whole output, so a small cap allows a small window;
/// the floor keeps ordinary producers working whatever the cap.
fn zstd_window_log_max(max_decompressed_bytes: usize) -> u32 {
    // ceil(log2(max_decompressed_bytes))
    let output_log = usize::BITS - max_decompressed_bytes.saturating_sub(1).leading_zeros();
    output_log.clamp(ZSTD_WINDOW_LOG_FLOOR, ZSTD_WINDOW_LOG_CEILING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_ids_round_trip() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let attributes = i16::from(codec.codec_id()) | 0x30;
            assert_eq!(Compression::from_attributes(attributes), Some(codec));
        }
        for undefined in 5..=7 {
            assert_eq!(Compression::from_attributes(undefined), None);
        }
    }

    #[test]
    fn zstd_round_trips_and_caps_output() {
        let records = vec![7u8; 100_000];
        let compressed = compress(Compression::Zstd, &records).unwrap();
        assert!(compressed.len() < 1_000);
        assert_eq!(
            decompress(Compression::Zstd, &compressed, 100_000, 61).unwrap(),
            records
        );
        assert_eq!(
            decompress(Compression::Zstd, &compressed, 99_999, 61),
            Err(BatchError::DecompressedTooLarge {
                max: 99_999,
                at: 61
            })
        );
        assert_eq!(
            decompress(Compression::Zstd, b"not zstd", 1_000, 61),
            Err(BatchError::Decompress { at: 61 })
        );
    }

    #[test]
    fn unimplemented_codecs_are_refused() {
        assert_eq!(
            compress(Compression::Gzip, b"x"),
            Err(BatchError::UnsupportedCompression { codec: 1 })
        );
        assert_eq!(
            decompress(Compression::Lz4, b"x", 10, 61),
            Err(BatchError::UnsupportedCompression { codec: 3 })
        );
    }

    #[test]
    fn window_cap_scales_with_output_cap() {
        assert_eq!(zstd_window_log_max(0), 23);
        assert_eq!(zstd_window_log_max(1 << 20), 23);
        assert_eq!(zstd_window_log_max(1 << 25), 25);
        assert_eq!(zstd_window_log_max((1 << 25) + 1), 26);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);
    }
}
