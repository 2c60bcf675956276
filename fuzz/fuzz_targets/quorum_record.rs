//! The metadata quorum's two formats: its log file (`metadata/raft.log`) and its TCP frames.
//!
//! A log file goes to `quorum::record::decode`, which is what a broker runs on start-up; each
//! record's payload then goes to the raft protobuf parser its kind names, as the replay does.
//! Checks that records and the torn-tail cut lie inside the file, and that the valid part of
//! the file encodes back to the same bytes.
//!
//! A frame body (what follows the length field) goes to `quorum::frame::decode`, which runs
//! on every frame a voter or observer receives. Checks that a decoded frame encodes back to
//! the same bytes, or for raft messages, to bytes that decode to the same message.
//!
//! Input: an options byte (see `shardlog_fuzz::quorum`), then the file or the frame body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use shardlog::cluster::quorum::frame::{self, Frame, FRAME_BYTES_MAX, LENGTH_BYTES};
use shardlog::cluster::quorum::record::{
    self, RecordError, RecordKind, MAGIC, RECORD_HEADER_BYTES,
};
use shardlog_fuzz::quorum;

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    if options & quorum::FRAME != 0 {
        check_frame(rest);
    } else {
        let mut file = rest.to_vec();
        if options & quorum::FIX_CRC != 0 {
            quorum::fix_crcs(&mut file);
        }
        check_file(&file);
    }
});

fn check_file(bytes: &[u8]) {
    let decoded = match record::decode(bytes) {
        Ok(decoded) => decoded,
        Err(RecordError::BadMagic) => {
            assert!(bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] != MAGIC);
            return;
        }
        Err(RecordError::UnknownKind { offset, kind }) => {
            assert_eq!(bytes[offset + 8], kind);
            assert!(!(1..=4).contains(&kind));
            return;
        }
    };

    // Records follow one another from the magic on; the valid part ends after the last one.
    let mut end = MAGIC.len().min(bytes.len());
    let mut rebuilt = MAGIC.to_vec();
    for item in &decoded.records {
        assert_eq!(item.offset, end, "records are not contiguous");
        let payload_at = item.offset + RECORD_HEADER_BYTES;
        assert!(payload_at + item.payload.len() <= bytes.len());
        assert_eq!(
            &bytes[payload_at..payload_at + item.payload.len()],
            item.payload
        );
        record::encode(item.kind, item.payload, &mut rebuilt);
        end = payload_at + item.payload.len();
        parse_payload(item.kind, item.payload);
    }
    if bytes.len() >= MAGIC.len() {
        assert_eq!(decoded.records_end, end);
    }
    match &decoded.torn_tail {
        // Only zeros (an aligned write's padding) may follow the records of an untorn file.
        None => assert!(bytes[end..].iter().all(|byte| *byte == 0)),
        Some(tail) => {
            assert_eq!(
                tail.valid_bytes,
                if bytes.len() < MAGIC.len() { 0 } else { end }
            );
            assert!(tail.valid_bytes < bytes.len() || bytes.is_empty());
        }
    }
    if bytes.len() >= MAGIC.len() {
        assert_eq!(rebuilt, bytes[..end]);
        // The valid part alone reads back whole, with no torn tail.
        let again = record::decode(&bytes[..end]).expect("the valid part decodes");
        assert!(again.torn_tail.is_none());
        assert_eq!(again.records.len(), decoded.records.len());
    }
}

/// Parses a payload as the replay does and checks it survives a protobuf round trip.
fn parse_payload(kind: RecordKind, payload: &[u8]) {
    match kind {
        RecordKind::Entry => round_trip::<Entry>(payload),
        RecordKind::HardState => round_trip::<HardState>(payload),
        RecordKind::ConfState => round_trip::<ConfState>(payload),
        RecordKind::Snapshot => round_trip::<Snapshot>(payload),
    }
}

///
/// The first parse is compared only after one encode and parse: rust-protobuf 2 replaces a
/// repeated singular message field by clearing it in place, which leaves an empty (not absent)
/// unknown-field table that its derived `PartialEq` tells apart from a fresh parse. Encodings
/// are compared by length only, as unknown fields are written in hash-map order.
fn round_trip<M: protobuf::Message + PartialEq + std::fmt::Debug>(payload: &[u8]) {
    let Ok(message) = M::parse_from_bytes(payload) else {
        return;
    };
    let once = message.write_to_bytes().expect("a parsed message encodes");
    let normal = M::parse_from_bytes(&once).expect("an encoded message parses");
    let twice = normal.write_to_bytes().expect("a parsed message encodes");
    assert_eq!(twice.len(), once.len());
    let again = M::parse_from_bytes(&twice).expect("an encoded message parses");
    assert_eq!(again, normal);
}

fn check_frame(body: &[u8]) {
    if let Ok(length) = frame::check_length(body.len() as u32) {
        assert!(length == body.len() && (1..=FRAME_BYTES_MAX).contains(&length));
    } else {
        assert!(body.is_empty() || body.len() > FRAME_BYTES_MAX);
    }
    let Ok(decoded) = frame::decode(body) else {
        return;
    };
    let encoded = frame::encode(&decoded).expect("a decoded frame encodes");
    let length = u32::from_be_bytes(encoded[..LENGTH_BYTES].try_into().unwrap()) as usize;
    assert_eq!(length, encoded.len() - LENGTH_BYTES);
    match decoded {
        // protobuf has more than one encoding of a message: compare messages, not bytes,
        // after one normalising round (see `round_trip`).
        Frame::Raft(_) => {
            let normal = frame::decode(&encoded[LENGTH_BYTES..]).expect("re-encoded raft frame");
            let twice = frame::encode(&normal).expect("a decoded frame encodes");
            assert_eq!(twice.len(), encoded.len());
            let again = frame::decode(&twice[LENGTH_BYTES..]).expect("re-encoded raft frame");
            assert_eq!(again, normal);
        }
        _ => assert_eq!(&encoded[LENGTH_BYTES..], body),
    }
}
