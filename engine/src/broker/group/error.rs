//! Why the group coordinator refuses a request: the errors of the group layer.
//!
//! [`GroupError`] is what the membership and commit rules refuse (a member that is not one, a
//! stale generation, a fenced static member, ...); [`CoordinatorError`] is why no rule could be
//! applied at all (this core does not hold the group's partition, or stopped holding it). Both
//! name what went wrong and for whom; the Kafka code each becomes is `broker::api::codes`'s.
//!
//! `Clone` because one refusal can answer several entries (every partition of a refused
//! OffsetCommit), and `Send` because answers cross cores.

use crate::batch::BatchError;
use crate::broker::internal_topic::LoadError;
use crate::broker::metadata::TopicError;
use crate::broker::partition::ProduceError;

use super::record::RecordError;

/// A group request refused by the membership or commit rules, or by the coordinator.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    /// The request named no group.
    #[error("the group id is empty")]
    InvalidGroupId,
    /// The member id is not (or no longer) a member of the group.
    #[error("{member_id:?} is not a member of the group")]
    UnknownMember { member_id: String },
    /// The instance id names no static member of the group.
    #[error("no static member has instance id {instance_id:?}")]
    UnknownInstance { instance_id: String },
    /// The request is from an older incarnation of a static member: its instance id is
    /// bound to another member id now.
    #[error("instance {instance_id:?} is no longer bound to member {member_id:?}")]
    FencedInstance {
        instance_id: String,
        member_id: String,
    },
    /// The request names another generation than the group's current one.
    #[error("generation {generation} is not the group's current generation {current}")]
    IllegalGeneration { generation: i32, current: i32 },
    /// The group is rebalancing (or the request was superseded by a newer one of the member).
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// A new member must join again with the member id it was given.
    #[error("a new member must join again with its assigned member id")]
    MemberIdRequired,
    /// The group has as many members as it may.
    #[error("the group already has {members_max} members")]
    GroupFull { members_max: usize },
    /// The session timeout is outside the broker's bounds.
    #[error("session timeout {session_timeout_ms} ms is outside the broker's bounds")]
    InvalidSessionTimeout { session_timeout_ms: i32 },
    /// A member's protocols (their count, or their metadata's bytes) exceed the limits.
    #[error("{protocols} protocols with {metadata_bytes} bytes of metadata exceed the limits")]
    MetadataTooLarge {
        protocols: usize,
        metadata_bytes: usize,
    },
    /// The member's protocol type or protocols do not fit the group's (or are missing).
    #[error("protocol type {protocol_type:?} or its protocols do not fit the group")]
    InconsistentProtocol { protocol_type: String },
    /// A committed offset names a topic or partition the cluster does not have.
    #[error("cannot commit to unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },
    /// A committed offset's metadata is longer than the broker keeps.
    #[error("offset metadata of {metadata_bytes} bytes exceeds {metadata_bytes_max} bytes")]
    OffsetMetadataTooLarge {
        metadata_bytes: usize,
        metadata_bytes_max: usize,
    },
    /// A committed offset cannot be written as a record (a field too long for its encoding).
    #[error("cannot encode the offset record: {0}")]
    InvalidRecord(#[from] RecordError),
    /// The coordinator could not serve the request at all.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
}

/// Why the coordinator of a group could not serve a request, whatever the group's rules say.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordinatorError {
    /// The group's `__consumer_offsets` partition is not loaded here (see `internal_topic`).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `__consumer_offsets` could not be created.
    #[error("cannot create the offsets topic: {0}")]
    OffsetsTopic(TopicError),
    /// The cluster names another broker (or none) as the leader of the group's partition.
    #[error("this broker does not coordinate offsets partition {partition}")]
    NotCoordinator { partition: i32 },
    /// This core stopped serving the group's partition (leadership moved, or shutdown)
    /// while the request waited.
    #[error("the coordinator stopped serving the group")]
    Unloaded,
    /// The core that owns the partition did not answer (it is shutting down), or dropped
    /// the request before answering it.
    #[error("the coordinator's core dropped the request")]
    Dropped,
    /// The commit's records could not be put into a batch.
    #[error("cannot build an offsets batch: {0}")]
    Batch(#[from] BatchError),
    /// The commit's append to the offsets partition failed. (Boxed: a produce error is
    /// large, and this one travels in every group answer.)
    #[error("the append to offsets partition {partition} failed: {source}")]
    Append {
        partition: i32,
        source: Box<ProduceError>,
    },
}

impl From<LoadError> for GroupError {
    fn from(error: LoadError) -> GroupError {
        GroupError::Coordinator(CoordinatorError::Load(error))
    }
}

impl From<BatchError> for GroupError {
    fn from(error: BatchError) -> GroupError {
        GroupError::Coordinator(CoordinatorError::Batch(error))
    }
}
