//! Consumer-group requests that a client gets wrong, sent by hand to the real broker: each
//! gets Kafka's error code, and the broker keeps serving the group's good members.
//!
//! The scenario walks one member through the MEMBER_ID_REQUIRED round trip to a stable
//! group, then sends, one at a time: an unknown member id, a stale generation (SyncGroup,
//! Heartbeat, OffsetCommit), an oversized protocol metadata blob, too short a session
//! timeout, an empty group id, a conflicting protocol, a static member id, oversized offset
//! metadata and an undecodable JoinGroup body. After each, the good member's heartbeat on
//! its own connection still succeeds.

mod common_broker;

use bytes::Bytes;
use common_broker::{encode_request, topic_name, BrokerProcess, KafkaClient};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::join_group_response::JoinGroupResponse;
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::GroupId;
use kafka_protocol::protocol::StrBytes;

const GROUP: &str = "bad-input-group";
const TOPIC: &str = "bad-input-topic";

const FIND_COORDINATOR_VERSION: i16 = 2;
const JOIN_GROUP_VERSION: i16 = 5;
const SYNC_GROUP_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const LEAVE_GROUP_VERSION: i16 = 3;
const OFFSET_COMMIT_VERSION: i16 = 7;
const OFFSET_FETCH_VERSION: i16 = 5;

/// Kafka's error codes, from the one table (checked there against kafka-protocol's list).
use shardlog_protocol::error_code as code;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn join_request(group: &str, member_id: &str, metadata: Bytes) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(text(member_id))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(metadata)])
}

fn join(client: &mut KafkaClient, request: &JoinGroupRequest) -> JoinGroupResponse {
    client.send(JOIN_GROUP_VERSION, request)
}

fn heartbeat(client: &mut KafkaClient, member_id: &str, generation_id: i32) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(text(GROUP)))
        .with_member_id(text(member_id))
        .with_generation_id(generation_id);
    client.send(HEARTBEAT_VERSION, &request).error_code
}

fn commit(
    client: &mut KafkaClient,
    member_id: &str,
    generation_id: i32,
    offset: i64,
    metadata: &str,
) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(GROUP)))
        .with_member_id(text(member_id))
        .with_generation_id_or_member_epoch(generation_id)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(TOPIC))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(text(metadata)))])]);
    let response = client.send(OFFSET_COMMIT_VERSION, &request);
    response.topics[0].partitions[0].error_code
}

fn committed_offset(client: &mut KafkaClient) -> i64 {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(text(GROUP)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(TOPIC))
            .with_partition_indexes(vec![0])]));
    let response = client.send(OFFSET_FETCH_VERSION, &request);
    assert_eq!(response.error_code, code::NONE);
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, code::NONE);
    partition.committed_offset
}

/// The good member is still in the group, and the broker still answers it.
fn assert_member_served(broker: &mut BrokerProcess, member: &mut KafkaClient, member_id: &str) {
    broker.assert_running();
    assert_eq!(heartbeat(member, member_id, 1), code::NONE);
}

#[test]
fn bad_group_requests_get_kafka_error_codes_and_the_broker_keeps_serving() {
    let mut broker = BrokerProcess::start(
        "groups-bad-input",
        &[
            "--offsets-topic-partitions",
            "4",
            "--group-initial-rebalance-delay-ms",
            "0",
        ],
    );
    let mut member = broker.client();
    member.create_topic(TOPIC, 1);

    // FindCoordinator names this broker.
    let found = member.send(
        FIND_COORDINATOR_VERSION,
        &FindCoordinatorRequest::default().with_key(text(GROUP)),
    );
    assert_eq!(found.error_code, code::NONE);
    assert_eq!(found.port, i32::from(broker.address().port()));

    // The MEMBER_ID_REQUIRED round trip, then a group of one: stable at generation 1.
    let first = join(
        &mut member,
        &join_request(GROUP, "", Bytes::from_static(b"m")),
    );
    assert_eq!(first.error_code, code::MEMBER_ID_REQUIRED);
    let member_id = first.member_id.to_string();
    assert!(member_id.starts_with("shardlog-test-"), "{member_id}");
    let joined = join(
        &mut member,
        &join_request(GROUP, &member_id, Bytes::from_static(b"m")),
    );
    assert_eq!(joined.error_code, code::NONE);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), member_id);
    assert_eq!(joined.members.len(), 1);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(text(GROUP)))
        .with_generation_id(1)
        .with_member_id(text(&member_id))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(text(&member_id))
            .with_assignment(Bytes::from_static(b"all of it"))]);
    let synced = member.send(SYNC_GROUP_VERSION, &sync);
    assert_eq!(synced.error_code, code::NONE);
    assert_eq!(synced.assignment, Bytes::from_static(b"all of it"));
    assert_member_served(&mut broker, &mut member, &member_id);

    let mut other = broker.client();

    // An unknown member id.
    let ghost = join(&mut other, &join_request(GROUP, "ghost", Bytes::new()));
    assert_eq!(ghost.error_code, code::UNKNOWN_MEMBER_ID);
    assert_eq!(heartbeat(&mut other, "ghost", 1), code::UNKNOWN_MEMBER_ID);
    assert_member_served(&mut broker, &mut member, &member_id);

    // A stale generation.
    let stale_sync = member.send(SYNC_GROUP_VERSION, &sync.clone().with_generation_id(0));
    assert_eq!(stale_sync.error_code, code::ILLEGAL_GENERATION);
    assert_eq!(
        heartbeat(&mut other, &member_id, 0),
        code::ILLEGAL_GENERATION
    );
    assert_eq!(
        commit(&mut other, &member_id, 0, 5, ""),
        code::ILLEGAL_GENERATION
    );
    assert_member_served(&mut broker, &mut member, &member_id);

    // An oversized protocol metadata blob (the limit is 1 MiB per member).
    let blob = Bytes::from(vec![7u8; (1 << 20) + 1]);
    let oversized = join(&mut other, &join_request(GROUP, "", blob));
    assert_eq!(oversized.error_code, code::INVALID_REQUEST);
    assert_member_served(&mut broker, &mut member, &member_id);

    // A session timeout below the broker's minimum (6 s).
    let short = join_request(GROUP, "", Bytes::new()).with_session_timeout_ms(10);
    assert_eq!(
        join(&mut other, &short).error_code,
        code::INVALID_SESSION_TIMEOUT
    );
    // No group id.
    assert_eq!(
        join(&mut other, &join_request("", "", Bytes::new())).error_code,
        code::INVALID_GROUP_ID
    );
    // A protocol type the group's members do not speak.
    let alien = join_request(GROUP, "", Bytes::new()).with_protocol_type(text("connect"));
    assert_eq!(
        join(&mut other, &alien).error_code,
        code::INCONSISTENT_GROUP_PROTOCOL
    );
    // A static member's member id that the group never gave out (a forged or stale one).
    let static_member = join_request(GROUP, "instance-1-forged", Bytes::new())
        .with_group_instance_id(Some(text("instance-1")));
    assert_eq!(
        join(&mut other, &static_member).error_code,
        code::UNKNOWN_MEMBER_ID
    );
    assert_member_served(&mut broker, &mut member, &member_id);

    // Offsets: a good commit reads back; oversized metadata (limit 4096 bytes) is refused
    // and leaves the committed offset alone.
    assert_eq!(
        commit(&mut member, &member_id, 1, 42, "checkpoint"),
        code::NONE
    );
    assert_eq!(committed_offset(&mut other), 42);
    assert_eq!(
        commit(&mut member, &member_id, 1, 43, &"x".repeat(5_000)),
        code::OFFSET_METADATA_TOO_LARGE
    );
    assert_eq!(committed_offset(&mut other), 42);
    assert_member_served(&mut broker, &mut member, &member_id);

    // A JoinGroup whose body does not decode: that connection is closed, nothing else.
    let good = encode_request(
        1,
        JOIN_GROUP_VERSION,
        &join_request(GROUP, "", Bytes::new()),
    );
    let mut garbled = good.clone();
    garbled.truncate(good.len() - 6);
    let cut = u32::try_from(garbled.len() - 4).expect("fits");
    garbled[..4].copy_from_slice(&cut.to_be_bytes());
    let mut rude = broker.client();
    rude.write_raw(&garbled).expect("send");
    rude.assert_closed_by_broker();
    broker.assert_logged(&["undecodable request"]);
    assert_member_served(&mut broker, &mut member, &member_id);

    // The member leaves; its id is no longer known.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(text(GROUP)))
        .with_members(vec![
            MemberIdentity::default().with_member_id(text(&member_id))
        ]);
    let left = member.send(LEAVE_GROUP_VERSION, &leave);
    assert_eq!(left.error_code, code::NONE);
    assert_eq!(left.members[0].error_code, code::NONE);
    assert_eq!(
        heartbeat(&mut member, &member_id, 1),
        code::UNKNOWN_MEMBER_ID
    );
    broker.assert_running();
}
