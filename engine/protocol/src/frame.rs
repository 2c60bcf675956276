//! Frames on a Kafka connection: a 4-byte big-endian size, then that many bytes.
//!
//! The size is the first thing read from a peer and the first thing not to trust: it is
//! checked against the reader's limit before a buffer is taken for it.

use futures_lite::AsyncReadExt;

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: i64, limit: usize },
    #[error("frame of {size} bytes is too short for a request header")]
    TooShort { size: i64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The smallest request: api key (2), version (2), correlation id (4), client id length (2).
pub const REQUEST_HEADER_MIN_BYTES: usize = 10;

/// Reads the size prefix of the next frame and checks it against `limit_bytes`; `Ok(None)` at
/// a clean end of stream.
pub async fn read_frame_size(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    limit_bytes: usize,
) -> Result<Option<usize>, FrameError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let size = i64::from(i32::from_be_bytes(size));
    if size > limit_bytes as i64 {
        return Err(FrameError::TooLarge {
            size,
            limit: limit_bytes,
        });
    }
    if size < REQUEST_HEADER_MIN_BYTES as i64 {
        return Err(FrameError::TooShort { size });
    }
    Ok(Some(size as usize))
}
