//! Consumer groups (Kafka's classic protocol) and their committed offsets.
//!
//! Kafka's own design, on this broker's cores:
//! - **Where a group lives.** Committed offsets are records in the internal topic
//!   `__consumer_offsets`. A group belongs to partition `abs(java_hash(group_id)) % partitions`
//!   of it ([`coordinator_for`]); the group's coordinator is that partition's leader
//!   ([`coordinator_node`]: that partition's leader), and its state lives on the
//!   core that owns the partition. Requests for a group are forwarded to that core like
//!   produce and fetch are.
//! - **Durability.** An OffsetCommit appends one record per partition to the group's
//!   `__consumer_offsets` partition and is answered only once the append returns, that is,
//!   under the log's durability policy. When a core first needs a partition it replays the
//!   log into memory (latest value per key, a tombstone deletes). Nothing else is kept: a
//!   broker that leads a partition after another one can rebuild the same offsets from the
//!   replicated log.
//! - **Membership** ([`membership`]) is in memory only, as Kafka keeps it between
//!   rebalances: after a restart or a coordinator move, members get UNKNOWN_MEMBER_ID or
//!   ILLEGAL_GENERATION and rejoin; their committed offsets are where they were.
//!
//! The record layout is in [`record`]; `docs/groups.md` covers the protocol and limits.

pub mod coordinator;
pub mod error;
pub mod membership;
pub mod offsets;
pub mod record;

use bytes::Bytes;

pub use coordinator::Coordinator;
pub use error::{CoordinatorError, GroupError};
pub use membership::{
    GroupSettings, GroupState, JoinAnswer, JoinOutcome, JoinRefusal, JoinRequest,
    MemberDescription, SyncAnswer, SyncOutcome,
};

/// The internal topic that holds committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode` (UTF-16 code units, wrapping), as Kafka hashes group ids.
pub fn java_string_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The `__consumer_offsets` partition that holds `group_id`: Kafka's
/// `Utils.abs(groupId.hashCode) % partitions` (where `abs(i32::MIN)` is 0).
pub fn coordinator_for(group_id: &str, partitions: i32) -> i32 {
    let hash = java_string_hash(group_id);
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

/// The broker that coordinates the groups of `__consumer_offsets` partition `partition`:
/// that partition's leader in the cluster state, if it has one. When the leader dies, the
/// controller elects another ISR member, which replays the partition's log (it holds every
/// committed offset: commits wait for acks=all) and coordinates from then on.
pub fn coordinator_node(
    state: &crate::cluster::state::ClusterState,
    partition: i32,
) -> Option<i32> {
    state
        .topic(OFFSETS_TOPIC)?
        .partition(partition)
        .map(|assigned| assigned.leader)
        .filter(|leader| *leader != crate::cluster::state::NO_LEADER)
}

/// One committed offset in an OffsetCommit.
#[derive(Clone, Debug)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// An OffsetCommit, as the coordinator sees it.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub group_id: String,
    pub member_id: String,
    /// A static member's `group.instance.id` (v7 and later).
    pub instance_id: Option<String>,
    /// -1 for a commit outside group management (a "simple" consumer).
    pub generation_id: i32,
    pub entries: Vec<CommitEntry>,
}

/// One partition's answer to an OffsetFetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    /// -1 when the group committed nothing for the partition.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    /// Kafka's state name; "Dead" for a group the coordinator does not know.
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// A group as ListGroups shows it.
#[derive(Clone, Debug)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

/// A request for one group's coordinator.
#[derive(Clone, Debug)]
pub enum GroupRequest {
    Join(JoinRequest),
    Sync {
        group_id: String,
        member_id: String,
        instance_id: Option<String>,
        generation_id: i32,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        group_id: String,
        member_id: String,
        instance_id: Option<String>,
        generation_id: i32,
    },
    /// Each leaving member as (member id, instance id); a static member may be named by
    /// its instance id alone (an empty member id).
    Leave {
        group_id: String,
        members: Vec<(String, Option<String>)>,
    },
    Commit(CommitRequest),
    /// `None`: every partition the group committed.
    FetchOffsets {
        group_id: String,
        partitions: Option<Vec<(String, i32)>>,
    },
    Describe {
        group_id: String,
    },
}

/// What one core's coordinator is asked to do (it crosses cores, so it is `Send`).
#[derive(Clone, Debug)]
pub enum GroupCall {
    /// A request for the group(s) of one `__consumer_offsets` partition this core owns.
    ForGroup {
        partition: i32,
        request: GroupRequest,
    },
    /// Every group of every `__consumer_offsets` partition this core owns.
    List,
}

/// The coordinator's answer, one variant per [`GroupRequest`] kind.
#[derive(Clone, Debug)]
pub enum GroupAnswer {
    Join(JoinOutcome),
    Sync(SyncOutcome),
    Heartbeat(Result<(), GroupError>),
    /// One result per leaving member, in request order.
    Leave(Vec<Result<(), GroupError>>),
    /// One result per entry, in request order.
    Commit(Vec<Result<(), GroupError>>),
    /// The committed offsets of the partitions asked for.
    Offsets(Vec<FetchedOffset>),
    Described(GroupDescription),
    Listed(Vec<ListedGroup>),
    /// The call could not be served at all (the coordinator is not available, for instance).
    Failed(GroupError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_partitions_match_kafkas_hash() {
        // Java: "".hashCode() == 0, "a".hashCode() == 97, "hello".hashCode() == 99162322.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: Kafka's abs makes it 0.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(coordinator_for("polygenelubricants", 50), 0);
        assert_eq!(coordinator_for("hello", 50), 99_162_322 % 50);
        // Negative hashes fold to their absolute value: "orders".hashCode() == -1008770331.
        assert_eq!(java_string_hash("orders"), -1_008_770_331);
        assert_eq!(coordinator_for("orders", 50), 1_008_770_331 % 50);
    }
}
