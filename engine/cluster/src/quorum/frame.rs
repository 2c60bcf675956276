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
//! kind 3: subscribe (observer to voter), payload = broker id (i32 big-endian)
//! kind 4: propose (observer to voter), payload = request id (16 bytes) | proposal JSON
//! kind 5: state (voter to observer), payload = version u64 BE | controller i32 BE | state JSON
//! kind 6: controller (voter to observer), payload = controller id i32 BE (-1: none)
//! kind 7: answer (voter to observer), payload = request id (16 bytes) | outcome JSON
//! ```
//!
//! Between voters a connection carries frames one way: each voter dials every other voter
//! and only writes to the connection it dialled; it reads from the connections it accepted.
//! An observer (a broker that is not a voter) opens one two-way *session* with one voter:
//! it starts with `subscribe`, then sends heartbeats and proposals; the voter pushes the
//! applied state whenever its version moves, the controller, and each proposal's outcome.

use futures_lite::AsyncReadExt;
use protobuf::Message as _;
use raft::eraftpb::Message;
use uuid::Uuid;

use crate::state::BrokerId;

/// Bytes of the length field.
pub const LENGTH_BYTES: usize = 4;
/// The largest frame accepted, after the length field: a raft snapshot (the whole cluster
/// state) is the largest message.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

const KIND_RAFT: u8 = 1;
const KIND_HEARTBEAT: u8 = 2;
const KIND_SUBSCRIBE: u8 = 3;
const KIND_PROPOSE: u8 = 4;
const KIND_STATE: u8 = 5;
const KIND_CONTROLLER: u8 = 6;
const KIND_ANSWER: u8 = 7;
const HEARTBEAT_PAYLOAD_BYTES: usize = 4;
const ID_BYTES: usize = 16;
const STATE_HEADER_BYTES: usize = 12;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Raft(Message),
    /// "Broker `broker_id` is alive": sent by every broker to every voter each heartbeat
    /// interval.
    Heartbeat {
        broker_id: BrokerId,
    },
    /// An observer asks a voter for the applied state; the connection becomes a session.
    Subscribe {
        broker_id: BrokerId,
    },
    /// An observer's proposal (a `Proposal`'s JSON) for the voter to commit.
    Propose {
        request: Uuid,
        proposal: Vec<u8>,
    },
    /// The voter's applied state (JSON) at `version`, and the controller it knows.
    State {
        version: u64,
        controller: BrokerId,
        state: Vec<u8>,
    },
    /// The controller the voter knows (-1: none); also keeps an idle session alive.
    Controller {
        controller: BrokerId,
    },
    /// The outcome (JSON of `Result<(), ProposeError>`) of the observer's proposal `request`.
    Answer {
        request: Uuid,
        outcome: Vec<u8>,
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
    #[error("kind {kind} frame of {length} bytes is too short")]
    Short { kind: u8, length: usize },
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
        Frame::Subscribe { broker_id } => {
            bytes.push(KIND_SUBSCRIBE);
            bytes.extend_from_slice(&broker_id.to_be_bytes());
        }
        Frame::Propose { request, proposal } => {
            bytes.push(KIND_PROPOSE);
            bytes.extend_from_slice(request.as_bytes());
            bytes.extend_from_slice(proposal);
        }
        Frame::State {
            version,
            controller,
            state,
        } => {
            bytes.push(KIND_STATE);
            bytes.extend_from_slice(&version.to_be_bytes());
            bytes.extend_from_slice(&controller.to_be_bytes());
            bytes.extend_from_slice(state);
        }
        Frame::Controller { controller } => {
            bytes.push(KIND_CONTROLLER);
            bytes.extend_from_slice(&controller.to_be_bytes());
        }
        Frame::Answer { request, outcome } => {
            bytes.push(KIND_ANSWER);
            bytes.extend_from_slice(request.as_bytes());
            bytes.extend_from_slice(outcome);
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
        KIND_HEARTBEAT => Ok(Frame::Heartbeat {
            broker_id: broker_id_payload(payload)?,
        }),
        KIND_SUBSCRIBE => Ok(Frame::Subscribe {
            broker_id: broker_id_payload(payload)?,
        }),
        KIND_CONTROLLER => Ok(Frame::Controller {
            controller: broker_id_payload(payload)?,
        }),
        KIND_PROPOSE | KIND_ANSWER => {
            if payload.len() < ID_BYTES {
                return Err(FrameError::Short {
                    kind,
                    length: payload.len(),
                });
            }
            let (id, rest) = payload.split_at(ID_BYTES);
            let request = Uuid::from_slice(id).expect("16 bytes make a UUID");
            Ok(if kind == KIND_PROPOSE {
                Frame::Propose {
                    request,
                    proposal: rest.to_vec(),
                }
            } else {
                Frame::Answer {
                    request,
                    outcome: rest.to_vec(),
                }
            })
        }
        KIND_STATE => {
            if payload.len() < STATE_HEADER_BYTES {
                return Err(FrameError::Short {
                    kind,
                    length: payload.len(),
                });
            }
            let (version, rest) = payload.split_at(8);
            let (controller, state) = rest.split_at(4);
            Ok(Frame::State {
                version: u64::from_be_bytes(version.try_into().expect("8 bytes")),
                controller: BrokerId::from_be_bytes(controller.try_into().expect("4 bytes")),
                state: state.to_vec(),
            })
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

fn broker_id_payload(payload: &[u8]) -> Result<BrokerId, FrameError> {
    let id: [u8; HEARTBEAT_PAYLOAD_BYTES] = payload
        .try_into()
        .map_err(|_| FrameError::Heartbeat(payload.len()))?;
    Ok(BrokerId::from_be_bytes(id))
}

/// Reads one frame: its length (checked before allocating), then the body.
pub async fn read_frame(
    stream: &mut (impl futures_lite::AsyncRead + Unpin),
) -> Result<Frame, String> {
    let mut length = [0u8; LENGTH_BYTES];
    stream
        .read_exact(&mut length)
        .await
        .map_err(|error| error.to_string())?;
    let length = check_length(u32::from_be_bytes(length)).map_err(|e| e.to_string())?;
    let mut body = vec![0; length];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|error| error.to_string())?;
    decode(&body).map_err(|error| error.to_string())
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
        let request = Uuid::new_v4();
        for frame in [
            Frame::Raft(message),
            Frame::Heartbeat { broker_id: 0 },
            Frame::Subscribe { broker_id: 4 },
            Frame::Propose {
                request,
                proposal: b"{}".to_vec(),
            },
            Frame::State {
                version: 9,
                controller: -1,
                state: b"{\"brokers\":{}}".to_vec(),
            },
            Frame::Controller { controller: 2 },
            Frame::Answer {
                request,
                outcome: Vec::new(),
            },
        ] {
            assert_eq!(decode(&body(&frame)).expect("decode"), frame);
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(check_length(0).is_err());
        assert!(check_length(FRAME_BYTES_MAX as u32 + 1).is_err());
        assert_eq!(decode(&[9]), Err(FrameError::UnknownKind(9)));
        assert_eq!(decode(&[KIND_HEARTBEAT, 1]), Err(FrameError::Heartbeat(1)));
        assert_eq!(
            decode(&[KIND_PROPOSE, 1, 2]),
            Err(FrameError::Short {
                kind: KIND_PROPOSE,
                length: 2
            })
        );
        assert!(decode(&[KIND_STATE, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).is_err());
        assert!(matches!(
            decode(&[KIND_RAFT, 0xff, 0xff, 0xff]),
            Err(FrameError::Raft(_))
        ));
    }
}
