//! Why a share-group request is refused: the errors of the share-group layer.
//!
//! [`ShareError`] names what went wrong and for whom: a member the group does not have, a
//! stale member epoch, a share session that is not there or is at another epoch,
//! acknowledgements of records the member does not hold, a deposed leader writing state, a
//! state store that cannot be reached. Where the group family already has the words (a
//! coordinator that dropped a call, an internal topic not loaded, a partition that cannot be
//! opened) they are reused. The Kafka code each becomes is `broker::api::codes`'s.
//!
//! `Clone` because one failed load answers every request that waited on it, and `Send`
//! because answers cross cores.

use uuid::Uuid;

use crate::batch::BatchError;
use crate::broker::group::CoordinatorError;
use crate::broker::internal_topic::LoadError;
use crate::broker::partition::{PartitionError, ProduceError};
use crate::cluster::replica::LeaderRefusal;
use crate::error::LogError;
use shardlog_protocol::error_code::ErrorCode;

use super::record::RecordError;

/// A share-group request refused by the membership, session or acknowledgement rules, or
/// by the share partition's or the state store's coordinator.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ShareError {
    /// A heartbeat, session step or acknowledgement named no member.
    #[error("the member id is empty")]
    MissingMemberId,
    /// The member is not (or no longer) a member of the group.
    #[error("{member_id:?} is not a member of the group")]
    UnknownMember { member_id: String },
    /// The heartbeat carries another epoch than the member's current one.
    #[error("member {member_id:?} sent epoch {epoch}, its epoch is {current}")]
    FencedMemberEpoch {
        member_id: String,
        epoch: i32,
        current: i32,
    },
    /// A heartbeat epoch below -1 (0 joins, -1 leaves, a positive one keeps alive).
    #[error("member epoch {epoch} is neither a join, a leave nor a member's epoch")]
    InvalidMemberEpoch { epoch: i32 },
    /// A member joined without naming its subscription.
    #[error("member {member_id:?} joined without a subscription")]
    MissingSubscription { member_id: String },
    /// A member subscribed to more topics than the broker keeps.
    #[error("{topics} subscribed topics exceed {topics_max}")]
    TooManyTopics { topics: usize, topics_max: usize },
    /// The group has as many members as it may.
    #[error("the share group already has {members_max} members")]
    GroupFull { members_max: usize },
    /// ShareGroupDescribe named a group this coordinator does not have.
    #[error("no share group {group_id:?}")]
    GroupNotFound { group_id: String },
    /// A session step for a member that has no open share session.
    #[error("member {member_id:?} has no share session")]
    SessionNotFound { member_id: String },
    /// A session step at another epoch than the session's next one (or an epoch 0 that
    /// does not open a session by fetching).
    #[error("share session epoch {epoch} is not the expected {expected:?}")]
    InvalidSessionEpoch { epoch: i32, expected: Option<i32> },
    /// A share session would hold more partitions than the broker keeps.
    #[error("{partitions} session partitions exceed {partitions_max}")]
    SessionTooLarge {
        partitions: usize,
        partitions_max: usize,
    },
    /// This broker keeps as many sessions of members coordinated elsewhere as it may.
    #[error("{sessions_max} visiting share sessions are open already")]
    SessionLimitReached { sessions_max: usize },
    /// A partition's acknowledgement batches are malformed.
    #[error("acknowledgements refused: {0}")]
    InvalidAckBatches(#[from] AckBatchError),
    /// Acknowledgements of records the member does not hold (or whose lock expired); none
    /// of the partition's acknowledgements was applied.
    #[error("member {member_id:?} does not hold offsets {first}..={last}")]
    RecordsNotHeld {
        member_id: String,
        first: i64,
        last: i64,
    },
    /// A ShareFetch or ShareAcknowledge named a topic id the cluster does not have.
    #[error("unknown topic id {topic_id}")]
    UnknownTopicId { topic_id: Uuid },
    /// The data partition cannot be served here (unknown, or its log cannot be opened).
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// This broker does not lead the data partition.
    #[error(transparent)]
    NotLeader(#[from] LeaderRefusal),
    /// This broker stopped leading the data partition while the share partition's state
    /// was being written.
    #[error("share partition {topic_id}-{partition} was unloaded")]
    Unloaded { topic_id: Uuid, partition: i32 },
    /// Reading the data partition's log to acquire records failed. (Boxed: the log's error
    /// is large, and this one travels in every share answer.)
    #[error("cannot read {topic_id}-{partition}: {source}")]
    Read {
        topic_id: Uuid,
        partition: i32,
        source: Box<LogError>,
    },
    /// The core that owns the data partition did not answer a partition call.
    #[error("the core of {topic}-{partition} dropped the share call")]
    PartitionCallDropped { topic: String, partition: i32 },
    /// A state read or write from an older leader of the data partition than one the store
    /// has seen.
    #[error("leader epoch {leader_epoch} is older than {seen}, already seen for the key")]
    FencedLeaderEpoch { leader_epoch: i32, seen: i32 },
    /// No broker leads the `__share_group_state` partition the key hashes to.
    #[error("__share_group_state partition {partition} has no leader")]
    NoStateLeader { partition: i32 },
    /// The share state key cannot be written as a record (a field too long for its
    /// encoding).
    #[error("cannot encode the share state record: {0}")]
    InvalidRecord(#[from] RecordError),
    /// The snapshot's record could not be put into a batch.
    #[error("cannot build a share state batch: {0}")]
    StateBatch(#[from] BatchError),
    /// The snapshot's append to its `__share_group_state` partition failed. (Boxed: a
    /// produce error is large, and this one travels in every share answer.)
    #[error("the append to __share_group_state partition {partition} failed: {source}")]
    StateAppend {
        partition: i32,
        source: Box<ProduceError>,
    },
    /// The broker that leads the state partition could not be asked, or its answer could
    /// not be read or did not name the partition (the reason was logged where it happened).
    #[error("the share state call to broker {broker} failed")]
    StateCall { broker: i32 },
    /// The broker that leads the state partition refused the call; its code was read back
    /// into what it means where it came in (`broker::api::codes::state_answer`).
    #[error("broker {broker} refused the share state call: {refusal}")]
    StateRefused { broker: i32, refusal: StateRefusal },
    /// The broker that leads the state partition answered a delivery state that is not one.
    #[error("broker {broker} answered the unknown delivery state {delivery_state}")]
    InvalidRemoteState { broker: i32, delivery_state: i8 },
    /// The coordinator (of the group, or of its state partition) could not serve the call.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
}

/// Why the broker that leads a `__share_group_state` partition refused a
/// ReadShareGroupState or WriteShareGroupState call: the codes its partition answers can
/// carry, each read back into what it means. These are what a share coordinator answers
/// (this broker's are made by `ShareError`'s codes in `api/share_state.rs`); a code with no
/// meaning for a state call is kept as `Unexpected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateRefusal {
    /// The store has seen a newer leader epoch of the data partition for the key: this
    /// broker no longer leads the data partition (FENCED_LEADER_EPOCH).
    #[error("a newer leader of the data partition has written its state")]
    FencedLeaderEpoch,
    /// It does not coordinate the state partition: leadership moved since this broker read
    /// the metadata (NOT_COORDINATOR).
    #[error("it does not coordinate the state partition")]
    NotCoordinator,
    /// It does not lead the state partition's log (NOT_LEADER_OR_FOLLOWER).
    #[error("it does not lead the state partition")]
    NotLeader,
    /// It coordinates the state partition but cannot serve it now: the partition is not
    /// replayed yet, the call was dropped, or its append failed (COORDINATOR_NOT_AVAILABLE).
    #[error("its share state is not available")]
    CoordinatorNotAvailable,
    /// It does not know the state topic or partition (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("it does not know the state partition")]
    UnknownPartition,
    /// It refused the call as sent: a snapshot it cannot store, or a key it cannot encode
    /// (INVALID_REQUEST).
    #[error("it refused the call as invalid")]
    InvalidRequest,
    /// It failed without saying why (UNKNOWN_SERVER_ERROR).
    #[error("it failed with a server error")]
    ServerError,
    /// A code that means nothing as the answer to a state call.
    #[error("it answered the unexpected code {code}")]
    Unexpected { code: ErrorCode },
}

/// Why a partition's acknowledgement batches are refused before anything applies them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckBatchError {
    /// A batch that is empty, starts below 0, or does not follow the one before it.
    #[error("batch {first}..={last} is out of order or empty")]
    OutOfOrder { first: i64, last: i64 },
    /// The batches span more offsets than a window holds.
    #[error("more than {offsets_max} offsets acknowledged")]
    TooManyOffsets { offsets_max: u32 },
    /// Neither one type for the batch nor one per offset.
    #[error("batch {first}..={last} has {types} acknowledge types")]
    TypeCount { first: i64, last: i64, types: usize },
    /// An acknowledge type Kafka does not define.
    #[error("unknown acknowledge type {kind}")]
    UnknownType { kind: i8 },
}

impl From<LoadError> for ShareError {
    fn from(error: LoadError) -> ShareError {
        ShareError::Coordinator(CoordinatorError::Load(error))
    }
}
