//! The byte layout of the quorum's log file, `<data_dir>/metadata/raft.log`.
//!
//! ```text
//! file:    | magic "SLQRAFT1" (8 bytes) | record | record | ...
//!
//! record:  0        4        8      9
//!          +--------+--------+------+---------------------+
//!          | length | crc32c | kind | payload (length B)  |
//!          +--------+--------+------+---------------------+
//!          length: u32 LE, bytes of payload, at most RECORD_PAYLOAD_BYTES_MAX
//!          crc32c: u32 LE, over kind and payload
//!          kind:   1 raft entry, 2 hard state, 3 conf state, 4 snapshot
//!          payload: the raft crate's protobuf encoding of that message
//! ```
//!
//! Records are only appended, and each append is followed by `fdatasync`, so after a crash
//! only the last record(s) can be incomplete. Reading stops at the first record that is short,
//! too long or fails its CRC: that is a torn tail, and the caller cuts the file there instead
//! of trusting it. Zeros after the last record are not a tear: an aligned write pads its last
//! page with them (no record starts with a zero length, a zero CRC and kind 0, because kind
//! 0 does not exist). A record with a good CRC but an unknown kind is corruption (`Err`).

/// The file's first bytes: a log of this format, version 1.
pub const MAGIC: &[u8; 8] = b"SLQRAFT1";
/// Bytes before a record's payload.
pub const RECORD_HEADER_BYTES: usize = 9;
const LENGTH_OFFSET: usize = 0;
const CRC_OFFSET: usize = 4;
const KIND_OFFSET: usize = 8;
/// The largest payload accepted: bounds what a corrupt length can make a reader trust. A
/// snapshot (the whole cluster state) is the largest record.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Entry = 1,
    HardState = 2,
    ConfState = 3,
    Snapshot = 4,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Entry),
            2 => Some(RecordKind::HardState),
            3 => Some(RecordKind::ConfState),
            4 => Some(RecordKind::Snapshot),
            _ => None,
        }
    }
}

/// One record read back, borrowing the file's bytes.
#[derive(Debug)]
pub struct Record<'a> {
    pub kind: RecordKind,
    pub payload: &'a [u8],
    /// Where the record starts in the file.
    pub offset: usize,
}

/// Appends one record to `out`.
///
/// # Panics
/// If `payload` is longer than `RECORD_PAYLOAD_BYTES_MAX`: callers bound what they write.
pub fn encode(kind: RecordKind, payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= RECORD_PAYLOAD_BYTES_MAX,
        "a {kind:?} record of {} bytes is above the limit",
        payload.len()
    );
    let mut crc = crc32c::crc32c(&[kind as u8]);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

/// Why reading stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Bytes of the file that hold whole, valid records (the place to cut).
    pub valid_bytes: usize,
    pub reason: &'static str,
}

/// What a whole file holds.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub records: Vec<Record<'a>>,
    /// Where the last whole record ends: appends continue here.
    pub records_end: usize,
    /// Set when the file ends in something other than a whole valid record.
    pub torn_tail: Option<TornTail>,
}

/// Corruption that is not a torn tail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the file does not start with {MAGIC:?}")]
    BadMagic,
    #[error("record at offset {offset} has a valid CRC but unknown kind {kind}")]
    UnknownKind { offset: usize, kind: u8 },
}

/// Reads every record of a file's bytes.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, RecordError> {
    if bytes.len() < MAGIC.len() {
        // A crash while the file was first written: nothing in it was ever acknowledged.
        return Ok(Decoded {
            records: Vec::new(),
            records_end: 0,
            torn_tail: Some(TornTail {
                valid_bytes: 0,
                reason: "shorter than the magic",
            }),
        });
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(RecordError::BadMagic);
    }
    let mut records = Vec::new();
    let mut offset = MAGIC.len();
    let torn = |offset, reason| {
        Some(TornTail {
            valid_bytes: offset,
            reason,
        })
    };
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.iter().all(|byte| *byte == 0) {
            break; // the padding of an aligned write
        }
        if rest.len() < RECORD_HEADER_BYTES {
            return Ok(Decoded {
                records,
                records_end: offset,
                torn_tail: torn(offset, "incomplete record header"),
            });
        }
        let field =
            |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let length = field(LENGTH_OFFSET) as usize;
        let stored_crc = field(CRC_OFFSET);
        if length > RECORD_PAYLOAD_BYTES_MAX {
            return Ok(Decoded {
                records,
                records_end: offset,
                torn_tail: torn(offset, "record length above the limit"),
            });
        }
        if rest.len() - RECORD_HEADER_BYTES < length {
            return Ok(Decoded {
                records,
                records_end: offset,
                torn_tail: torn(offset, "incomplete record payload"),
            });
        }
        let kind_and_payload = &rest[KIND_OFFSET..RECORD_HEADER_BYTES + length];
        if crc32c::crc32c(kind_and_payload) != stored_crc {
            return Ok(Decoded {
                records,
                records_end: offset,
                torn_tail: torn(offset, "record CRC mismatch"),
            });
        }
        let kind_byte = rest[KIND_OFFSET];
        let kind = RecordKind::from_byte(kind_byte).ok_or(RecordError::UnknownKind {
            offset,
            kind: kind_byte,
        })?;
        records.push(Record {
            kind,
            payload: &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length],
            offset,
        });
        offset += RECORD_HEADER_BYTES + length;
    }
    Ok(Decoded {
        records,
        records_end: offset,
        torn_tail: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[(RecordKind, &[u8])]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for (kind, payload) in records {
            encode(*kind, payload, &mut bytes);
        }
        bytes
    }

    #[test]
    fn records_read_back_in_order() {
        let bytes = file(&[(RecordKind::Entry, b"one"), (RecordKind::HardState, b"")]);
        let decoded = decode(&bytes).expect("decode");
        assert!(decoded.torn_tail.is_none());
        let kinds: Vec<_> = decoded
            .records
            .iter()
            .map(|r| (r.kind, r.payload))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (RecordKind::Entry, b"one".as_slice()),
                (RecordKind::HardState, b"".as_slice())
            ]
        );
    }

    #[test]
    fn every_cut_inside_the_last_record_is_a_torn_tail_at_its_start() {
        let whole = file(&[
            (RecordKind::Entry, b"first"),
            (RecordKind::Entry, b"second"),
        ]);
        let second_starts = MAGIC.len() + RECORD_HEADER_BYTES + 5;
        for cut in second_starts + 1..whole.len() {
            let decoded = decode(&whole[..cut]).expect("decode");
            assert_eq!(decoded.records.len(), 1, "cut at {cut}");
            assert_eq!(
                decoded.torn_tail.map(|tail| tail.valid_bytes),
                Some(second_starts)
            );
        }
    }

    #[test]
    fn zeros_after_the_last_record_are_padding_not_a_tear() {
        let mut bytes = file(&[(RecordKind::Entry, b"one")]);
        let end = bytes.len();
        bytes.resize(4096, 0);
        let decoded = decode(&bytes).expect("decode");
        assert_eq!(decoded.records.len(), 1);
        assert!(decoded.torn_tail.is_none());
        assert_eq!(decoded.records_end, end);
        bytes[4000] = 1;
        let decoded = decode(&bytes).expect("decode");
        assert_eq!(decoded.torn_tail.expect("torn").valid_bytes, end);
    }

    #[test]
    fn a_flipped_bit_or_a_huge_length_is_cut_not_trusted() {
        let mut flipped = file(&[(RecordKind::Entry, b"payload")]);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let decoded = decode(&flipped).expect("decode");
        assert!(decoded.records.is_empty());
        assert_eq!(
            decoded.torn_tail.expect("torn").reason,
            "record CRC mismatch"
        );

        let mut huge = file(&[(RecordKind::Entry, b"payload")]);
        huge[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let decoded = decode(&huge).expect("decode");
        assert_eq!(
            decoded.torn_tail.expect("torn").reason,
            "record length above the limit"
        );
    }

    #[test]
    fn a_foreign_file_or_unknown_kind_is_an_error() {
        assert_eq!(decode(b"NOTRAFT!xxxx").err(), Some(RecordError::BadMagic));
        let mut bytes = MAGIC.to_vec();
        let payload = b"x";
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[9]), payload);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.push(9);
        bytes.extend_from_slice(payload);
        assert_eq!(
            decode(&bytes).err(),
            Some(RecordError::UnknownKind {
                offset: MAGIC.len(),
                kind: 9
            })
        );
    }
}
