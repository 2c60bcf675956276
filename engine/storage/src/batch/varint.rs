//! Zigzag varints (i32, at most 5 bytes) and varlongs (i64, at most 10 bytes), the
//! encoding Kafka records use for their lengths and deltas (the same as protobuf `sint`).
//!
//! Decoding reads from a slice at a cursor and never reads past the slice: a caller that
//! wants a field bounded by an enclosing length passes a slice cut at that length.

use super::BatchError;

/// Longest encoding of an i32.
pub const VARINT_MAX_BYTES: usize = 5;
/// Longest encoding of an i64.
pub const VARLONG_MAX_BYTES: usize = 10;

/// Appends `value` as a zigzag varint (1 to 5 bytes).
pub fn encode_varint(out: &mut Vec<u8>, value: i32) {
    let zigzag = ((value << 1) ^ (value >> 31)) as u32;
    encode_unsigned(out, u64::from(zigzag));
}

/// Appends `value` as a zigzag varlong (1 to 10 bytes).
pub fn encode_varlong(out: &mut Vec<u8>, value: i64) {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    encode_unsigned(out, zigzag);
}

/// Reads a zigzag varint at `*cursor` and advances the cursor past it.
///
/// Errors with [`BatchError::BadRecord`] at the varint's first byte when the slice ends
/// inside it, when it runs longer than [`VARINT_MAX_BYTES`], or when its last byte carries
/// bits beyond 32 (which a correct encoder never writes). The cursor is unchanged on error.
pub fn decode_varint(bytes: &[u8], cursor: &mut usize) -> Result<i32, BatchError> {
    let zigzag = decode_unsigned(bytes, cursor, VARINT_MAX_BYTES, 32)? as u32;
    Ok((zigzag >> 1) as i32 ^ -((zigzag & 1) as i32))
}

/// Reads a zigzag varlong at `*cursor` and advances the cursor past it.
///
/// Errors as [`decode_varint`] does, with [`VARLONG_MAX_BYTES`] and 64 bits.
pub fn decode_varlong(bytes: &[u8], cursor: &mut usize) -> Result<i64, BatchError> {
    let zigzag = decode_unsigned(bytes, cursor, VARLONG_MAX_BYTES, 64)?;
    Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
}

fn encode_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// LEB128 decode of at most `max_bytes` bytes into a value of `value_bits` bits.
fn decode_unsigned(
    bytes: &[u8],
    cursor: &mut usize,
    max_bytes: usize,
    value_bits: u32,
) -> Result<u64, BatchError> {
    let start = *cursor;
    let mut value = 0u64;
    for index in 0..max_bytes {
        let Some(&byte) = bytes.get(start.saturating_add(index)) else {
            return Err(BatchError::BadRecord {
                at: start,
                what: "varint runs past the end",
            });
        };
        let payload = u64::from(byte & 0x7f);
        let shift = 7 * index as u32;
        if index == max_bytes - 1 {
            if byte & 0x80 != 0 {
                return Err(BatchError::BadRecord {
                    at: start,
                    what: "varint is overlong",
                });
            }
            if payload >> (value_bits - shift) != 0 {
                return Err(BatchError::BadRecord {
                    at: start,
                    what: "varint overflows its type",
                });
            }
        }
        value |= payload << shift;
        if byte & 0x80 == 0 {
            *cursor = start + index + 1;
            return Ok(value);
        }
    }
    // Unreachable for max_bytes >= 1: the last iteration always returns.
    Err(BatchError::BadRecord {
        at: start,
        what: "varint is overlong",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(value: i32) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varint(&mut out, value);
        out
    }

    #[test]
    fn varint_round_trips_edges() {
        for value in [0, 1, -1, 63, -64, 64, -65, i32::MAX, i32::MIN, 300, -300] {
            let bytes = varint_bytes(value);
            assert!(bytes.len() <= VARINT_MAX_BYTES);
            let mut cursor = 0;
            assert_eq!(decode_varint(&bytes, &mut cursor), Ok(value));
            assert_eq!(cursor, bytes.len());
        }
    }

    #[test]
    fn varlong_round_trips_edges() {
        for value in [0, 1, -1, i64::MAX, i64::MIN, 1 << 40, -(1 << 40)] {
            let mut bytes = Vec::new();
            encode_varlong(&mut bytes, value);
            assert!(bytes.len() <= VARLONG_MAX_BYTES);
            let mut cursor = 0;
            assert_eq!(decode_varlong(&bytes, &mut cursor), Ok(value));
            assert_eq!(cursor, bytes.len());
        }
    }

    #[test]
    fn zigzag_matches_known_encodings() {
        assert_eq!(varint_bytes(0), [0x00]);
        assert_eq!(varint_bytes(-1), [0x01]);
        assert_eq!(varint_bytes(1), [0x02]);
        assert_eq!(varint_bytes(-64), [0x7f]);
        assert_eq!(varint_bytes(64), [0x80, 0x01]);
        assert_eq!(varint_bytes(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn rejects_truncated_overlong_and_overflowing() {
        let mut cursor = 1;
        let truncated = [0x00, 0x80, 0x80];
        assert_eq!(
            decode_varint(&truncated, &mut cursor),
            Err(BatchError::BadRecord {
                at: 1,
                what: "varint runs past the end"
            })
        );
        assert_eq!(cursor, 1);

        let overlong = [0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert!(matches!(
            decode_varint(&overlong, &mut 0),
            Err(BatchError::BadRecord {
                at: 0,
                what: "varint is overlong"
            })
        ));
        let overflowing = [0xff, 0xff, 0xff, 0xff, 0x1f];
        assert!(matches!(
            decode_varint(&overflowing, &mut 0),
            Err(BatchError::BadRecord {
                what: "varint overflows its type",
                ..
            })
        ));
        let overlong_long = [0x80; 11];
        assert!(decode_varlong(&overlong_long, &mut 0).is_err());
        let mut overflowing_long = [0xff; 10];
        overflowing_long[9] = 0x02;
        assert!(decode_varlong(&overflowing_long, &mut 0).is_err());
        assert!(decode_varint(&[], &mut 0).is_err());
        let mut past_end = usize::MAX;
        assert!(decode_varint(&[0x00], &mut past_end).is_err());
    }
}
