//! Frames on a Kafka connection: a 4-byte big-endian size, then that many bytes.
//!
//! ```text
//! offset  0          4
//!         | size     | size bytes: header, body ...
//!         | i32 BE   |
//! ```
//!
//! The size is the first thing read from a peer and the first thing not to trust: it is
//! checked against the reader's limit before a buffer is taken for it. The broker reads
//! requests through [`read_frame_size`]; the client ([`crate::client`]) reads responses
//! through [`read_size_within`] on glommio and [`check_size`] on a blocking socket.

use futures_lite::AsyncReadExt;

/// Bytes of the size prefix.
pub const SIZE_PREFIX_BYTES: usize = 4;

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: i64, limit: usize },
    #[error("frame of {size} bytes is too short for a header of {min_bytes} bytes")]
    TooShort { size: i64, min_bytes: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The smallest request: api key (2), version (2), correlation id (4), client id length (2).
pub const REQUEST_HEADER_MIN_BYTES: usize = 10;

/// The smallest response: its correlation id (4).
pub const RESPONSE_HEADER_MIN_BYTES: usize = 4;

/// The size a prefix announces, if it lies within `min_bytes..=limit_bytes`.
pub fn check_size(
    prefix: [u8; SIZE_PREFIX_BYTES],
    min_bytes: usize,
    limit_bytes: usize,
) -> Result<usize, FrameError> {
    let size = i64::from(i32::from_be_bytes(prefix));
    if size > limit_bytes as i64 {
        return Err(FrameError::TooLarge {
            size,
            limit: limit_bytes,
        });
    }
    if size < min_bytes as i64 {
        return Err(FrameError::TooShort { size, min_bytes });
    }
    Ok(size as usize)
}

/// Reads the size prefix of the next request frame and checks it against `limit_bytes`;
/// `Ok(None)` at a clean end of stream.
pub async fn read_frame_size(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    limit_bytes: usize,
) -> Result<Option<usize>, FrameError> {
    read_size_within(reader, REQUEST_HEADER_MIN_BYTES, limit_bytes).await
}

/// Reads the size prefix of the next frame and checks it against
/// `min_bytes..=limit_bytes`; `Ok(None)` at a clean end of stream.
pub async fn read_size_within(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    min_bytes: usize,
    limit_bytes: usize,
) -> Result<Option<usize>, FrameError> {
    let mut prefix = [0u8; SIZE_PREFIX_BYTES];
    match reader.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    check_size(prefix, min_bytes, limit_bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_outside_the_bounds_are_refused_before_any_buffer() {
        assert_eq!(check_size(100i32.to_be_bytes(), 4, 100).ok(), Some(100));
        assert!(matches!(
            check_size(101i32.to_be_bytes(), 4, 100),
            Err(FrameError::TooLarge {
                size: 101,
                limit: 100
            })
        ));
        assert!(matches!(
            check_size(3i32.to_be_bytes(), 4, 100),
            Err(FrameError::TooShort { size: 3, .. })
        ));
        assert!(matches!(
            check_size((-1i32).to_be_bytes(), 4, 100),
            Err(FrameError::TooShort { size: -1, .. })
        ));
    }
}
