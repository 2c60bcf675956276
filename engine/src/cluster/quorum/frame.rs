//! The byte layout of the quorum's TCP frames between voters.
//!
//! ```text
//! 0            4      5
//! +------------+------+----------------------------+
//! | length     | kind | payload (length - 1 bytes) |
//! +------------+------+----------------------------+
//! length: u32 big-endian, bytes after the length field, 1..=FRAME_BYTES_MAX
//! kind 1: a raft message, the raft crate's protobuf encoding of `eraftpb::Message`
//! kind 2: a broker heartbeat, payload = broker id (i32 big-endian)
//! ```
//!
//! A connection carries frames one way: each voter dials every other voter and only writes
//! to the connection it dialled; it reads from the connections it accepted.

use protobuf::Message as _;
use raft::eraftpb::Message;

use crate::cluster::state::BrokerId;

/// Bytes of the length field.
pub const LENGTH_BYTES: usize = 4;
/// The largest frame accepted, after the length field: a raft snapshot (the whole cluster
/// state) is the largest message.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

const KIND_RAFT: u8 = 1;
const KIND_HEARTBEAT: u8 = 2;
const HEARTBEAT_PAYLOAD_BYTES: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Raft(Message),
    /// "Broker `broker_id` is alive": sent by every broker to every voter each heartbeat
    /// interval.
    Heartbeat {
        broker_id: BrokerId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} outside 1..={FRAME_BYTES_MAX}")]
    Length(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("heartbeat payload of {0} bytes, expected {HEARTBEAT_PAYLOAD_BYTES}")]
    Heartbeat(usize),
    #[error("undecodable raft message: {0}")]
    Raft(String),
}

/// Checks a frame's length field before anything is allocated for it.
pub fn check_length(length: u32) -> Result<usize, FrameError> {
    let length = length as usize;
    if length == 0 || length > FRAME_BYTES_MAX {
        return Err(FrameError::Length(length));
    }
    Ok(length)
}

/// The whole frame, length field included. `None` if the message is above the limit (raft
/// retries; a message that large means a snapshot too big for the transport).
pub fn encode(frame: &Frame) -> Option<Vec<u8>> {
    let mut bytes = vec![0; LENGTH_BYTES];
    match frame {
        Frame::Raft(message) => {
            bytes.push(KIND_RAFT);
            // Encoding an in-memory proto3 message cannot fail.
            let payload = message
                .write_to_bytes()
                .expect("a raft message encodes to protobuf");
            bytes.extend_from_slice(&payload);
        }
        Frame::Heartbeat { broker_id } => {
            bytes.push(KIND_HEARTBEAT);
            bytes.extend_from_slice(&broker_id.to_be_bytes());
        }
    }
    let length = bytes.len() - LENGTH_BYTES;
    if length > FRAME_BYTES_MAX {
        return None;
    }
    bytes[..LENGTH_BYTES].copy_from_slice(&(length as u32).to_be_bytes());
    Some(bytes)
}

/// Decodes what follows a (checked) length field.
pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    let (&kind, payload) = body.split_first().ok_or(FrameError::Length(0))?;
    match kind {
        KIND_RAFT => Message::parse_from_bytes(payload)
            .map(Frame::Raft)
            .map_err(|error| FrameError::Raft(error.to_string())),
        KIND_HEARTBEAT => {
            let id: [u8; HEARTBEAT_PAYLOAD_BYTES] = payload
                .try_into()
                .map_err(|_| FrameError::Heartbeat(payload.len()))?;
            Ok(Frame::Heartbeat {
                broker_id: BrokerId::from_be_bytes(id),
            })
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::MessageType;

    fn body(frame: &Frame) -> Vec<u8> {
        let bytes = encode(frame).expect("encode");
        let length = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
        assert_eq!(check_length(length).expect("length"), bytes.len() - 4);
        bytes[4..].to_vec()
    }

    #[test]
    fn frames_round_trip() {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgHeartbeat);
        message.from = 2;
        message.to = 1;
        message.term = 7;
        for frame in [Frame::Raft(message), Frame::Heartbeat { broker_id: 0 }] {
            assert_eq!(decode(&body(&frame)).expect("decode"), frame);
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(check_length(0).is_err());
        assert!(check_length(FRAME_BYTES_MAX as u32 + 1).is_err());
        assert_eq!(decode(&[9]), Err(FrameError::UnknownKind(9)));
        assert_eq!(decode(&[KIND_HEARTBEAT, 1]), Err(FrameError::Heartbeat(1)));
        assert!(matches!(
            decode(&[KIND_RAFT, 0xff, 0xff, 0xff]),
            Err(FrameError::Raft(_))
        ));
    }
}
