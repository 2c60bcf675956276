//! From each layer's error to Kafka's error code: the one place that mapping is made.
//!
//! The layers below the API handlers (the partition log, the cluster state, the quorum, the
//! replica rules, the topic table, the coordinators and the internal topics they replay)
//! return their own error enums and know nothing of the wire.
//! A handler that must answer with a code calls [`KafkaCode::code`] on the error; the codes
//! themselves are `shardlog_protocol::error_code`'s.

use shardlog_protocol::error_code::{self, ErrorCode};

use crate::batch::BatchError;
use crate::broker::group::{CoordinatorError, GroupError, JoinRefusal};
use crate::broker::internal_topic::LoadError;
use crate::broker::metadata::TopicError;
use crate::broker::partition::{
    AwaitError, EpochEndError, FetchError, ListOffsetsError, PartitionError, ProduceError,
};
use crate::broker::share::{AckBatchError, HeartbeatRefusal, ShareError, StateRefusal};
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

impl KafkaCode for BatchError {
    fn code(&self) -> ErrorCode {
        match self {
            BatchError::CrcMismatch { .. } => error_code::CORRUPT_MESSAGE,
            BatchError::TooLarge { .. } => error_code::MESSAGE_TOO_LARGE,
            BatchError::Truncated { .. }
            | BatchError::BadMagic { .. }
            | BatchError::BadLength { .. }
            | BatchError::BadAttributes { .. }
            | BatchError::BadLastOffsetDelta { .. }
            | BatchError::BadRecordsCount { .. }
            | BatchError::UnsupportedCompression { .. }
            | BatchError::Compress { .. }
            | BatchError::Decompress { .. }
            | BatchError::DecompressedTooLarge { .. }
            | BatchError::BadRecord { .. }
            | BatchError::RecordCountMismatch { .. }
            | BatchError::Unencodable { .. } => error_code::INVALID_RECORD,
        }
    }
}

impl KafkaCode for LogError {
    fn code(&self) -> ErrorCode {
        match self {
            LogError::InvalidBatch(error) => error.code(),
            LogError::BatchTooLarge { .. } => error_code::MESSAGE_TOO_LARGE,
            LogError::TrailingBytes { .. } => error_code::INVALID_RECORD,
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

impl KafkaCode for ProduceError {
    fn code(&self) -> ErrorCode {
        match self {
            ProduceError::Partition(error) => error.code(),
            ProduceError::Refused(refusal) => refusal.code(),
            ProduceError::InvalidBatch(error) => error.code(),
            ProduceError::NoBatches => error_code::INVALID_RECORD,
            ProduceError::Admission { refusal, .. } => refusal.code(),
            ProduceError::Append(error) => error.code(),
            ProduceError::Replication(error) => error.code(),
            ProduceError::AppendDeclined | ProduceError::CallDropped => {
                error_code::UNKNOWN_SERVER_ERROR
            }
        }
    }
}

impl KafkaCode for FetchError {
    fn code(&self) -> ErrorCode {
        match self {
            FetchError::Partition(error) => error.code(),
            FetchError::Refused(refusal) => refusal.code(),
            FetchError::OffsetOutOfRange { .. } => error_code::OFFSET_OUT_OF_RANGE,
            FetchError::Read(failure) => failure.source.code(),
            FetchError::CallDropped => error_code::UNKNOWN_SERVER_ERROR,
        }
    }
}

impl KafkaCode for ListOffsetsError {
    fn code(&self) -> ErrorCode {
        match self {
            ListOffsetsError::Partition(error) => error.code(),
            ListOffsetsError::Refused(refusal) => refusal.code(),
            ListOffsetsError::Log(error) => error.code(),
            ListOffsetsError::CallDropped => error_code::UNKNOWN_SERVER_ERROR,
        }
    }
}

impl KafkaCode for EpochEndError {
    fn code(&self) -> ErrorCode {
        match self {
            EpochEndError::Partition(error) => error.code(),
            EpochEndError::Refused(refusal) => refusal.code(),
            EpochEndError::CallDropped => error_code::UNKNOWN_SERVER_ERROR,
        }
    }
}

impl KafkaCode for PartitionError {
    fn code(&self) -> ErrorCode {
        match self {
            PartitionError::Unknown { .. } => error_code::UNKNOWN_TOPIC_OR_PARTITION,
            PartitionError::Closed { .. } => error_code::UNKNOWN_SERVER_ERROR,
            PartitionError::Log { source, .. } => source.code(),
            PartitionError::Epochs { .. } => error_code::KAFKA_STORAGE_ERROR,
        }
    }
}

impl KafkaCode for LoadError {
    fn code(&self) -> ErrorCode {
        match self {
            // Kafka answers a coordinator whose state is not (yet) there with these two: the
            // client finds the coordinator again and retries.
            LoadError::NotLeader { .. } => error_code::NOT_COORDINATOR,
            LoadError::NoTopic { .. } | LoadError::Open { .. } | LoadError::Replay { .. } => {
                error_code::COORDINATOR_NOT_AVAILABLE
            }
        }
    }
}

impl KafkaCode for CoordinatorError {
    fn code(&self) -> ErrorCode {
        match self {
            CoordinatorError::Load(error) => error.code(),
            CoordinatorError::NotCoordinator { .. } | CoordinatorError::Unloaded => {
                error_code::NOT_COORDINATOR
            }
            // A failed offsets append is a coordinator error to Kafka clients, so they retry
            // (after finding the coordinator again).
            CoordinatorError::OffsetsTopic(_)
            | CoordinatorError::Dropped
            | CoordinatorError::Append { .. } => error_code::COORDINATOR_NOT_AVAILABLE,
            CoordinatorError::Batch(_) => error_code::UNKNOWN_SERVER_ERROR,
        }
    }
}

impl KafkaCode for GroupError {
    fn code(&self) -> ErrorCode {
        match self {
            GroupError::InvalidGroupId => error_code::INVALID_GROUP_ID,
            GroupError::UnknownMember { .. } | GroupError::UnknownInstance { .. } => {
                error_code::UNKNOWN_MEMBER_ID
            }
            GroupError::FencedInstance { .. } => error_code::FENCED_INSTANCE_ID,
            GroupError::IllegalGeneration { .. } => error_code::ILLEGAL_GENERATION,
            GroupError::RebalanceInProgress => error_code::REBALANCE_IN_PROGRESS,
            GroupError::MemberIdRequired => error_code::MEMBER_ID_REQUIRED,
            GroupError::GroupFull { .. } => error_code::GROUP_MAX_SIZE_REACHED,
            GroupError::InvalidSessionTimeout { .. } => error_code::INVALID_SESSION_TIMEOUT,
            GroupError::MetadataTooLarge { .. } | GroupError::InvalidRecord(_) => {
                error_code::INVALID_REQUEST
            }
            GroupError::InconsistentProtocol { .. } => error_code::INCONSISTENT_GROUP_PROTOCOL,
            GroupError::UnknownPartition { .. } => error_code::UNKNOWN_TOPIC_OR_PARTITION,
            GroupError::OffsetMetadataTooLarge { .. } => error_code::OFFSET_METADATA_TOO_LARGE,
            GroupError::Coordinator(error) => error.code(),
        }
    }
}

impl KafkaCode for JoinRefusal {
    fn code(&self) -> ErrorCode {
        self.error.code()
    }
}

impl KafkaCode for AckBatchError {
    fn code(&self) -> ErrorCode {
        match self {
            AckBatchError::OutOfOrder { .. }
            | AckBatchError::TooManyOffsets { .. }
            | AckBatchError::TypeCount { .. }
            | AckBatchError::UnknownType { .. } => error_code::INVALID_REQUEST,
        }
    }
}

impl KafkaCode for ShareError {
    fn code(&self) -> ErrorCode {
        match self {
            ShareError::MissingMemberId
            | ShareError::InvalidMemberEpoch { .. }
            | ShareError::MissingSubscription { .. }
            | ShareError::TooManyTopics { .. }
            | ShareError::SessionTooLarge { .. }
            | ShareError::InvalidRecord(_) => error_code::INVALID_REQUEST,
            ShareError::UnknownMember { .. } => error_code::UNKNOWN_MEMBER_ID,
            ShareError::FencedMemberEpoch { .. } => error_code::FENCED_MEMBER_EPOCH,
            ShareError::GroupFull { .. } => error_code::GROUP_MAX_SIZE_REACHED,
            ShareError::GroupNotFound { .. } => error_code::GROUP_ID_NOT_FOUND,
            ShareError::SessionNotFound { .. } => error_code::SHARE_SESSION_NOT_FOUND,
            ShareError::InvalidSessionEpoch { .. } => error_code::INVALID_SHARE_SESSION_EPOCH,
            ShareError::SessionLimitReached { .. } => error_code::SHARE_SESSION_LIMIT_REACHED,
            ShareError::InvalidAckBatches(error) => error.code(),
            ShareError::RecordsNotHeld { .. } => error_code::INVALID_RECORD_STATE,
            ShareError::UnknownTopicId { .. } => error_code::UNKNOWN_TOPIC_ID,
            ShareError::Partition(error) => error.code(),
            ShareError::NotLeader(refusal) => refusal.code(),
            // The share partition is dropped when leadership of its data partition moves:
            // the client looks for the new leader.
            ShareError::Unloaded { .. } => error_code::NOT_LEADER_OR_FOLLOWER,
            ShareError::Read { source, .. } => source.code(),
            ShareError::FencedLeaderEpoch { .. } => error_code::FENCED_LEADER_EPOCH,
            // The state store cannot be reached or did not take the write: a coordinator
            // error to Kafka clients, so they retry.
            ShareError::NoStateLeader { .. }
            | ShareError::StateAppend { .. }
            | ShareError::StateCall { .. } => error_code::COORDINATOR_NOT_AVAILABLE,
            // What the other broker answered (`share::remote::state_answer` read its code back), as it
            // answered it.
            ShareError::StateRefused { refusal, .. } => refusal.code(),
            ShareError::PartitionCallDropped { .. }
            | ShareError::StateBatch(_)
            | ShareError::InvalidRemoteState { .. } => error_code::UNKNOWN_SERVER_ERROR,
            ShareError::Coordinator(error) => error.code(),
        }
    }
}

impl KafkaCode for StateRefusal {
    fn code(&self) -> ErrorCode {
        match self {
            StateRefusal::FencedLeaderEpoch => error_code::FENCED_LEADER_EPOCH,
            StateRefusal::NotCoordinator => error_code::NOT_COORDINATOR,
            StateRefusal::NotLeader => error_code::NOT_LEADER_OR_FOLLOWER,
            StateRefusal::CoordinatorNotAvailable => error_code::COORDINATOR_NOT_AVAILABLE,
            StateRefusal::UnknownPartition => error_code::UNKNOWN_TOPIC_OR_PARTITION,
            StateRefusal::InvalidRequest => error_code::INVALID_REQUEST,
            // A code that means nothing here is not handed to this broker's client: to it,
            // the state store failed without saying why.
            StateRefusal::ServerError | StateRefusal::Unexpected { .. } => {
                error_code::UNKNOWN_SERVER_ERROR
            }
        }
    }
}

impl KafkaCode for HeartbeatRefusal {
    fn code(&self) -> ErrorCode {
        self.error.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::share::remote::state_answer;

    /// The group layer's refusals reach the wire as the codes Kafka's coordinator answers.
    #[test]
    fn group_errors_have_kafkas_codes() {
        let member = || "m".to_string();
        let cases = [
            (GroupError::InvalidGroupId, error_code::INVALID_GROUP_ID),
            (
                GroupError::UnknownMember {
                    member_id: member(),
                },
                error_code::UNKNOWN_MEMBER_ID,
            ),
            (
                GroupError::UnknownInstance {
                    instance_id: member(),
                },
                error_code::UNKNOWN_MEMBER_ID,
            ),
            (
                GroupError::FencedInstance {
                    instance_id: member(),
                    member_id: member(),
                },
                error_code::FENCED_INSTANCE_ID,
            ),
            (
                GroupError::IllegalGeneration {
                    generation: 1,
                    current: 2,
                },
                error_code::ILLEGAL_GENERATION,
            ),
            (
                GroupError::RebalanceInProgress,
                error_code::REBALANCE_IN_PROGRESS,
            ),
            (GroupError::MemberIdRequired, error_code::MEMBER_ID_REQUIRED),
            (
                GroupError::GroupFull { members_max: 1 },
                error_code::GROUP_MAX_SIZE_REACHED,
            ),
            (
                GroupError::InvalidSessionTimeout {
                    session_timeout_ms: 1,
                },
                error_code::INVALID_SESSION_TIMEOUT,
            ),
            (
                GroupError::MetadataTooLarge {
                    protocols: 1,
                    metadata_bytes: 1,
                },
                error_code::INVALID_REQUEST,
            ),
            (
                GroupError::InconsistentProtocol {
                    protocol_type: String::new(),
                },
                error_code::INCONSISTENT_GROUP_PROTOCOL,
            ),
            (
                GroupError::UnknownPartition {
                    topic: "t".into(),
                    partition: 0,
                },
                error_code::UNKNOWN_TOPIC_OR_PARTITION,
            ),
            (
                GroupError::OffsetMetadataTooLarge {
                    metadata_bytes: 2,
                    metadata_bytes_max: 1,
                },
                error_code::OFFSET_METADATA_TOO_LARGE,
            ),
            (
                CoordinatorError::NotCoordinator { partition: 0 }.into(),
                error_code::NOT_COORDINATOR,
            ),
            (
                CoordinatorError::Unloaded.into(),
                error_code::NOT_COORDINATOR,
            ),
            (
                CoordinatorError::Dropped.into(),
                error_code::COORDINATOR_NOT_AVAILABLE,
            ),
            (
                CoordinatorError::Append {
                    partition: 0,
                    source: Box::new(ProduceRefusal::NotLeader.into()),
                }
                .into(),
                error_code::COORDINATOR_NOT_AVAILABLE,
            ),
            (
                LoadError::NotLeader {
                    topic: "t".into(),
                    partition: 0,
                }
                .into(),
                error_code::NOT_COORDINATOR,
            ),
            (
                LoadError::Open(PartitionError::Unknown {
                    topic: "t".into(),
                    partition: 0,
                })
                .into(),
                error_code::COORDINATOR_NOT_AVAILABLE,
            ),
            (
                LoadError::NoTopic {
                    topic: "t",
                    source: None,
                }
                .into(),
                error_code::COORDINATOR_NOT_AVAILABLE,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    /// The share layer's refusals reach the wire as the codes the share layer answered with
    /// when it still returned codes.
    #[test]
    fn share_errors_have_kafkas_codes() {
        let member = || "m".to_string();
        let topic_id = uuid::Uuid::from_u128(1);
        let cases = [
            (ShareError::MissingMemberId, error_code::INVALID_REQUEST),
            (
                ShareError::UnknownMember {
                    member_id: member(),
                },
                error_code::UNKNOWN_MEMBER_ID,
            ),
            (
                ShareError::FencedMemberEpoch {
                    member_id: member(),
                    epoch: 1,
                    current: 2,
                },
                error_code::FENCED_MEMBER_EPOCH,
            ),
            (
                ShareError::InvalidMemberEpoch { epoch: -2 },
                error_code::INVALID_REQUEST,
            ),
            (
                ShareError::MissingSubscription {
                    member_id: member(),
                },
                error_code::INVALID_REQUEST,
            ),
            (
                ShareError::TooManyTopics {
                    topics: 2,
                    topics_max: 1,
                },
                error_code::INVALID_REQUEST,
            ),
            (
                ShareError::GroupFull { members_max: 1 },
                error_code::GROUP_MAX_SIZE_REACHED,
            ),
            (
                ShareError::GroupNotFound {
                    group_id: "g".into(),
                },
                error_code::GROUP_ID_NOT_FOUND,
            ),
            (
                ShareError::SessionNotFound {
                    member_id: member(),
                },
                error_code::SHARE_SESSION_NOT_FOUND,
            ),
            (
                ShareError::InvalidSessionEpoch {
                    epoch: 3,
                    expected: Some(2),
                },
                error_code::INVALID_SHARE_SESSION_EPOCH,
            ),
            (
                ShareError::SessionTooLarge {
                    partitions: 2,
                    partitions_max: 1,
                },
                error_code::INVALID_REQUEST,
            ),
            (
                ShareError::SessionLimitReached { sessions_max: 1 },
                error_code::SHARE_SESSION_LIMIT_REACHED,
            ),
            (
                AckBatchError::OutOfOrder { first: 3, last: 2 }.into(),
                error_code::INVALID_REQUEST,
            ),
            (
                AckBatchError::TooManyOffsets { offsets_max: 1 }.into(),
                error_code::INVALID_REQUEST,
            ),
            (
                AckBatchError::TypeCount {
                    first: 0,
                    last: 2,
                    types: 2,
                }
                .into(),
                error_code::INVALID_REQUEST,
            ),
            (
                AckBatchError::UnknownType { kind: 4 }.into(),
                error_code::INVALID_REQUEST,
            ),
            (
                ShareError::RecordsNotHeld {
                    member_id: member(),
                    first: 0,
                    last: 0,
                },
                error_code::INVALID_RECORD_STATE,
            ),
            (
                ShareError::UnknownTopicId { topic_id },
                error_code::UNKNOWN_TOPIC_ID,
            ),
            (
                PartitionError::Unknown {
                    topic: "t".into(),
                    partition: 0,
                }
                .into(),
                error_code::UNKNOWN_TOPIC_OR_PARTITION,
            ),
            (
                LeaderRefusal::NotLeader.into(),
                error_code::NOT_LEADER_OR_FOLLOWER,
            ),
            (
                ShareError::Unloaded {
                    topic_id,
                    partition: 0,
                },
                error_code::NOT_LEADER_OR_FOLLOWER,
            ),
            (
                ShareError::Read {
                    topic_id,
                    partition: 0,
                    source: Box::new(LogError::OffsetOutOfRange {
                        offset: 5,
                        log_start_offset: 0,
                        log_end_offset: 1,
                    }),
                },
                error_code::OFFSET_OUT_OF_RANGE,
            ),
            (
                ShareError::PartitionCallDropped {
                    topic: "t".into(),
                    partition: 0,
                },
                error_code::UNKNOWN_SERVER_ERROR,
            ),
            (
                ShareError::FencedLeaderEpoch {
                    leader_epoch: 1,
                    seen: 2,
                },
                error_code::FENCED_LEADER_EPOCH,
            ),
            (
                ShareError::NoStateLeader { partition: 0 },
                error_code::COORDINATOR_NOT_AVAILABLE,
            ),
            (
                crate::broker::share::record::RecordError::TooLong { length: 70_000 }.into(),
                error_code::INVALID_REQUEST,
            ),
            (
                BatchError::TooLarge {
                    length: 2,
                    max: 1,
                    at: 0,
                }
                .into(),
                error_code::UNKNOWN_SERVER_ERROR,
            ),
            (
                ShareError::StateAppend {
                    partition: 0,
                    source: Box::new(ProduceRefusal::NotLeader.into()),
                },
                error_code::COORDINATOR_NOT_AVAILABLE,
            ),
            (
                ShareError::StateCall { broker: 1 },
                error_code::COORDINATOR_NOT_AVAILABLE,
            ),
            (
                ShareError::StateRefused {
                    broker: 1,
                    refusal: StateRefusal::FencedLeaderEpoch,
                },
                error_code::FENCED_LEADER_EPOCH,
            ),
            (
                ShareError::InvalidRemoteState {
                    broker: 1,
                    delivery_state: 1,
                },
                error_code::UNKNOWN_SERVER_ERROR,
            ),
            (
                CoordinatorError::Dropped.into(),
                error_code::COORDINATOR_NOT_AVAILABLE,
            ),
            (
                CoordinatorError::NotCoordinator { partition: 0 }.into(),
                error_code::NOT_COORDINATOR,
            ),
            (
                LoadError::NotLeader {
                    topic: "__share_group_state".into(),
                    partition: 0,
                }
                .into(),
                error_code::NOT_COORDINATOR,
            ),
            (
                LoadError::NoTopic {
                    topic: "__share_group_state",
                    source: None,
                }
                .into(),
                error_code::COORDINATOR_NOT_AVAILABLE,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
        }
        let refusal = HeartbeatRefusal::new(ShareError::GroupFull { members_max: 1 }, "m");
        assert_eq!(refusal.code(), error_code::GROUP_MAX_SIZE_REACHED);
    }

    /// The partition's answers reach the wire as the codes they carried when they were
    /// `error_code` fields: every variant of produce's, fetch's, ListOffsets' and
    /// OffsetForLeaderEpoch's errors.
    #[test]
    fn partition_errors_have_kafkas_codes() {
        let unknown = || PartitionError::Unknown {
            topic: "t".into(),
            partition: 9,
        };
        let storage = || LogError::Closed {
            dir: std::path::PathBuf::from("/log"),
        };
        let crc = BatchError::CrcMismatch {
            stored: 1,
            computed: 2,
            at: 0,
        };
        let too_large = BatchError::TooLarge {
            length: 2,
            max: 1,
            at: 0,
        };
        let truncated = BatchError::Truncated {
            needed: 61,
            available: 3,
            at: 0,
        };
        let produce = [
            (unknown().into(), error_code::UNKNOWN_TOPIC_OR_PARTITION),
            (
                ProduceRefusal::NotLeader.into(),
                error_code::NOT_LEADER_OR_FOLLOWER,
            ),
            (
                ProduceRefusal::NotEnoughReplicas.into(),
                error_code::NOT_ENOUGH_REPLICAS,
            ),
            (crc.clone().into(), error_code::CORRUPT_MESSAGE),
            (too_large.into(), error_code::MESSAGE_TOO_LARGE),
            (truncated.into(), error_code::INVALID_RECORD),
            (ProduceError::NoBatches, error_code::INVALID_RECORD),
            (
                ProduceError::Admission {
                    refusal: AdmissionRefusal::Sequence(SequenceRefusal::OutOfOrder),
                    producer_id: 7,
                    base_sequence: 3,
                },
                error_code::OUT_OF_ORDER_SEQUENCE_NUMBER,
            ),
            (
                ProduceError::Admission {
                    refusal: AdmissionRefusal::NotLeader,
                    producer_id: -1,
                    base_sequence: -1,
                },
                error_code::NOT_LEADER_OR_FOLLOWER,
            ),
            (
                ProduceError::AppendDeclined,
                error_code::UNKNOWN_SERVER_ERROR,
            ),
            (
                LogError::BatchTooLarge {
                    batch_bytes: 2,
                    max_bytes: 1,
                }
                .into(),
                error_code::MESSAGE_TOO_LARGE,
            ),
            (storage().into(), error_code::UNKNOWN_SERVER_ERROR),
            (AwaitError::TimedOut.into(), error_code::REQUEST_TIMED_OUT),
            (
                AwaitError::Refused(ProduceRefusal::NotEnoughReplicasAfterAppend).into(),
                error_code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            ),
            (ProduceError::CallDropped, error_code::UNKNOWN_SERVER_ERROR),
        ];
        for (error, code) in produce {
            assert_eq!(error.code(), code, "{error}");
        }

        let read_failure = |source| {
            FetchError::Read(Box::new(crate::broker::partition::ReadFailure {
                source,
                high_watermark: 5,
                log_start_offset: 1,
                records: Default::default(),
            }))
        };
        let fetch = [
            (unknown().into(), error_code::UNKNOWN_TOPIC_OR_PARTITION),
            (
                LeaderRefusal::FencedEpoch.into(),
                error_code::FENCED_LEADER_EPOCH,
            ),
            (
                LeaderRefusal::UnknownEpoch.into(),
                error_code::UNKNOWN_LEADER_EPOCH,
            ),
            (
                FetchError::OffsetOutOfRange {
                    offset: 9,
                    log_start_offset: 1,
                    log_end_offset: 6,
                    high_watermark: 5,
                },
                error_code::OFFSET_OUT_OF_RANGE,
            ),
            (
                read_failure(LogError::InvalidBatch(crc)),
                error_code::CORRUPT_MESSAGE,
            ),
            (read_failure(storage()), error_code::UNKNOWN_SERVER_ERROR),
            (FetchError::CallDropped, error_code::UNKNOWN_SERVER_ERROR),
        ];
        for (error, code) in fetch {
            assert_eq!(error.code(), code, "{error}");
        }

        let list_offsets = [
            (unknown().into(), error_code::UNKNOWN_TOPIC_OR_PARTITION),
            (
                LeaderRefusal::NotLeader.into(),
                error_code::NOT_LEADER_OR_FOLLOWER,
            ),
            (storage().into(), error_code::UNKNOWN_SERVER_ERROR),
            (
                ListOffsetsError::CallDropped,
                error_code::UNKNOWN_SERVER_ERROR,
            ),
        ];
        for (error, code) in list_offsets {
            assert_eq!(error.code(), code, "{error}");
        }

        let epoch_end = [
            (unknown().into(), error_code::UNKNOWN_TOPIC_OR_PARTITION),
            (
                LeaderRefusal::FencedEpoch.into(),
                error_code::FENCED_LEADER_EPOCH,
            ),
            (EpochEndError::CallDropped, error_code::UNKNOWN_SERVER_ERROR),
        ];
        for (error, code) in epoch_end {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    /// A fetch that fails part way answers its code with the offsets and the records it
    /// had; a refusal has neither.
    #[test]
    fn a_failed_read_keeps_what_it_read() {
        use crate::broker::chunks::{Chunk, Records};
        let records = Records {
            parts: vec![Chunk::Bytes(bytes::Bytes::from_static(b"batch"))],
        };
        let failed = FetchError::Read(Box::new(crate::broker::partition::ReadFailure {
            source: LogError::Closed {
                dir: std::path::PathBuf::from("/log"),
            },
            high_watermark: 5,
            log_start_offset: 1,
            records,
        }));
        assert_eq!(failed.offsets(), Some((5, 1)));
        assert_eq!(failed.into_records().len(), 5);
        let refused = FetchError::from(LeaderRefusal::NotLeader);
        assert_eq!(refused.offsets(), None);
        assert!(refused.into_records().is_empty());
    }

    /// The partition's answers cross cores on every produce and fetch: their errors box
    /// their large sources, so an answer fits in a cache line (today 32, 56, 24 and 24
    /// bytes; the structs with an `error_code` they replaced were 24, 64, 24 and 16).
    #[test]
    fn partition_answers_stay_small() {
        use crate::broker::partition::{
            EpochEndOutcome, FetchOutcome, ListOffsetsOutcome, ProduceOutcome,
        };
        use std::mem::size_of;
        assert!(
            size_of::<ProduceOutcome>() <= 64,
            "{}",
            size_of::<ProduceOutcome>()
        );
        assert!(
            size_of::<FetchOutcome>() <= 64,
            "{}",
            size_of::<FetchOutcome>()
        );
        assert!(
            size_of::<ListOffsetsOutcome>() <= 64,
            "{}",
            size_of::<ListOffsetsOutcome>()
        );
        assert!(
            size_of::<EpochEndOutcome>() <= 64,
            "{}",
            size_of::<EpochEndOutcome>()
        );
    }

    /// A share coordinator's code reads back into the refusal it stands for, and that
    /// refusal reaches this broker's client as the same code: what another broker answered
    /// is passed on as it was answered. Codes that mean nothing for a state call are kept as
    /// `Unexpected` and answered as a server error.
    #[test]
    fn state_refusals_round_trip_through_their_codes() {
        assert_eq!(state_answer(error_code::NONE), Ok(()));
        let refusals = [
            StateRefusal::FencedLeaderEpoch,
            StateRefusal::NotCoordinator,
            StateRefusal::NotLeader,
            StateRefusal::CoordinatorNotAvailable,
            StateRefusal::UnknownPartition,
            StateRefusal::InvalidRequest,
            StateRefusal::ServerError,
        ];
        for refusal in refusals {
            assert_eq!(state_answer(refusal.code()), Err(refusal), "{refusal}");
        }
        for &(code, name) in error_code::ALL {
            if code == error_code::NONE {
                continue;
            }
            let refusal = state_answer(code).expect_err(name);
            let through_share = ShareError::StateRefused { broker: 2, refusal };
            if refusals.contains(&refusal) {
                assert_eq!(refusal.code(), code, "{name}");
                assert_eq!(through_share.code(), code, "{name}");
            } else {
                assert_eq!(refusal, StateRefusal::Unexpected { code }, "{name}");
                assert_eq!(
                    through_share.code(),
                    error_code::UNKNOWN_SERVER_ERROR,
                    "{name}"
                );
            }
        }
        assert_eq!(
            state_answer(9999),
            Err(StateRefusal::Unexpected { code: 9999 })
        );
    }

    /// A follower reads the codes its leader's fetch and epoch errors become as the
    /// follower's rules expect: out of range may mean a divergent log, anything else is a
    /// refusal to retry.
    #[test]
    fn followers_read_their_leaders_codes() {
        use crate::cluster::fetcher::{epoch_end_answer, fetch_answer};
        use crate::cluster::follower::{EpochEndAnswer, FetchAnswer};

        assert_eq!(fetch_answer(error_code::NONE), FetchAnswer::Records);
        let out_of_range = FetchError::OffsetOutOfRange {
            offset: 9,
            log_start_offset: 0,
            log_end_offset: 5,
            high_watermark: 5,
        };
        assert_eq!(
            fetch_answer(out_of_range.code()),
            FetchAnswer::OffsetOutOfRange
        );
        let refusals = [
            FetchError::from(LeaderRefusal::NotLeader),
            FetchError::from(LeaderRefusal::FencedEpoch),
            FetchError::from(LeaderRefusal::UnknownEpoch),
            FetchError::CallDropped,
        ];
        for error in refusals {
            assert_eq!(fetch_answer(error.code()), FetchAnswer::Refused, "{error}");
        }
        assert_eq!(
            epoch_end_answer(error_code::NONE, 3, 40),
            EpochEndAnswer::Ended {
                leader_epoch: 3,
                end_offset: 40
            }
        );
        let refused = EpochEndError::from(LeaderRefusal::UnknownEpoch).code();
        assert_eq!(epoch_end_answer(refused, -1, -1), EpochEndAnswer::Refused);
    }
}
