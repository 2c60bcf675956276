//! From each layer's error to Kafka's error code: the one place that mapping is made.
//!
//! The layers below the API handlers (the partition log, the cluster state, the quorum, the
//! replica rules, the topic table) return their own error enums and know nothing of the wire.
//! A handler that must answer with a code calls [`KafkaCode::code`] on the error; the codes
//! themselves are `shardlog_protocol::error_code`'s.

use shardlog_protocol::error_code::{self, ErrorCode};

use crate::batch::BatchError;
use crate::broker::metadata::TopicError;
use crate::broker::partition::AwaitError;
use crate::cluster::admission::AdmissionRefusal;
use crate::cluster::leader::ProduceRefusal;
use crate::cluster::producers::SequenceRefusal;
use crate::cluster::quorum::ProposeError;
use crate::cluster::replica::LeaderRefusal;
use crate::cluster::state::Refusal;
use crate::error::LogError;

/// An error that has a Kafka error code.
pub trait KafkaCode {
    /// The code a Kafka client expects for this error.
    fn code(&self) -> ErrorCode;
}

impl KafkaCode for LogError {
    fn code(&self) -> ErrorCode {
        match self {
            LogError::InvalidBatch(BatchError::CrcMismatch { .. }) => error_code::CORRUPT_MESSAGE,
            LogError::InvalidBatch(BatchError::TooLarge { .. })
            | LogError::BatchTooLarge { .. } => error_code::MESSAGE_TOO_LARGE,
            LogError::InvalidBatch(_) | LogError::TrailingBytes { .. } => {
                error_code::INVALID_RECORD
            }
            LogError::OffsetOutOfRange { .. } | LogError::NotAtLogEnd { .. } => {
                error_code::OFFSET_OUT_OF_RANGE
            }
            // A full disk is a storage error to Kafka clients too (they retry it): the produce
            // was not written, and a later one succeeds once space is freed.
            LogError::Storage(_) | LogError::NoSpace { .. } | LogError::Corrupt { .. } => {
                error_code::KAFKA_STORAGE_ERROR
            }
            LogError::Closed { .. } | LogError::InvalidConfig { .. } => {
                error_code::UNKNOWN_SERVER_ERROR
            }
        }
    }
}

impl KafkaCode for LeaderRefusal {
    fn code(&self) -> ErrorCode {
        match self {
            LeaderRefusal::NotLeader => error_code::NOT_LEADER_OR_FOLLOWER,
            LeaderRefusal::FencedEpoch => error_code::FENCED_LEADER_EPOCH,
            LeaderRefusal::UnknownEpoch => error_code::UNKNOWN_LEADER_EPOCH,
        }
    }
}

impl KafkaCode for Refusal {
    fn code(&self) -> ErrorCode {
        match self {
            Refusal::TopicExists(_) => error_code::TOPIC_ALREADY_EXISTS,
            Refusal::UnknownTopic(_) | Refusal::UnknownPartition { .. } => {
                error_code::UNKNOWN_TOPIC_OR_PARTITION
            }
            Refusal::UnknownBroker(_) | Refusal::InvalidReplicas(_) => {
                error_code::INVALID_REPLICA_ASSIGNMENT
            }
            Refusal::StaleIsrChange => error_code::NOT_LEADER_OR_FOLLOWER,
            Refusal::IneligibleReplica(_) => error_code::INELIGIBLE_REPLICA,
        }
    }
}

impl KafkaCode for ProposeError {
    fn code(&self) -> ErrorCode {
        match self {
            ProposeError::Refused(refusal) => refusal.code(),
            ProposeError::NoController | ProposeError::Stopped => error_code::NOT_CONTROLLER,
            ProposeError::Timeout | ProposeError::Busy => error_code::REQUEST_TIMED_OUT,
            ProposeError::TooLarge => error_code::INVALID_REQUEST,
        }
    }
}

impl KafkaCode for TopicError {
    fn code(&self) -> ErrorCode {
        match self {
            TopicError::AlreadyExists(_) => error_code::TOPIC_ALREADY_EXISTS,
            TopicError::InvalidName { .. } => error_code::INVALID_TOPIC_EXCEPTION,
            TopicError::InvalidPartitions(_) => error_code::INVALID_PARTITIONS,
            TopicError::InvalidReplicationFactor { .. } => error_code::INVALID_REPLICATION_FACTOR,
            TopicError::Unknown(_) => error_code::UNKNOWN_TOPIC_OR_PARTITION,
            TopicError::Quorum(error) => error.code(),
        }
    }
}

impl KafkaCode for SequenceRefusal {
    fn code(&self) -> ErrorCode {
        match self {
            SequenceRefusal::StaleEpoch => error_code::INVALID_PRODUCER_EPOCH,
            SequenceRefusal::OutOfOrder => error_code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        }
    }
}

impl KafkaCode for AdmissionRefusal {
    fn code(&self) -> ErrorCode {
        match self {
            AdmissionRefusal::NotLeader => error_code::NOT_LEADER_OR_FOLLOWER,
            AdmissionRefusal::Sequence(refusal) => refusal.code(),
        }
    }
}

impl KafkaCode for ProduceRefusal {
    fn code(&self) -> ErrorCode {
        match self {
            ProduceRefusal::NotLeader => error_code::NOT_LEADER_OR_FOLLOWER,
            ProduceRefusal::NotEnoughReplicas => error_code::NOT_ENOUGH_REPLICAS,
            ProduceRefusal::NotEnoughReplicasAfterAppend => {
                error_code::NOT_ENOUGH_REPLICAS_AFTER_APPEND
            }
        }
    }
}

impl KafkaCode for AwaitError {
    fn code(&self) -> ErrorCode {
        match self {
            AwaitError::Refused(refusal) => refusal.code(),
            AwaitError::TimedOut => error_code::REQUEST_TIMED_OUT,
        }
    }
}
