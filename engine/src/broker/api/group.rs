//! The consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups and DescribeGroups.
//!
//! Each handler turns the wire request into the coordinator's own terms (`group`), sends it
//! to the core that owns the group's `__consumer_offsets` partition, and writes the answer
//! in the request's version. As elsewhere, a field is set only when the version has it
//! (`kafka-protocol` refuses to encode others unless they hold their default).
//!
//! Static membership (`group.instance.id`, KIP-345) is served from JoinGroup v5, SyncGroup
//! v3, Heartbeat v3, LeaveGroup v3 and OffsetCommit v7 on; the rules are in
//! `group::membership`.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{BrokerId, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use shardlog_protocol::error_code;

use super::super::metadata::{Topic, TopicConfig, TopicError};
use super::super::shard::{partition_owner, Shard};
use super::codes::KafkaCode;
use crate::broker::group::{
    self, CommitEntry, CommitRequest, CoordinatorError, GroupAnswer, GroupCall, GroupError,
    GroupRequest, JoinRequest, SyncAnswer, OFFSETS_TOPIC,
};
use crate::broker::internal_topic::LoadError;

/// Segment size of `__consumer_offsets` (Kafka `offsets.topic.segment.bytes`).
const OFFSETS_SEGMENT_BYTES: u64 = 100 << 20;
/// FindCoordinator's key type for transactional ids (the broker has no transactions).
const KEY_TYPE_TRANSACTION: i8 = 1;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// Replicas of each `__consumer_offsets` partition, when that many brokers are live.
const OFFSETS_REPLICATION_FACTOR: usize = 3;

/// `__consumer_offsets`, created on first use with `offsets_topic_partitions` partitions.
/// Offsets are only ever superseded, never aged out: no time or size retention.
async fn offsets_topic(shard: &Shard) -> Result<Arc<Topic>, CoordinatorError> {
    let metadata = &shard.shared.metadata;
    if let Some(topic) = metadata.topic(OFFSETS_TOPIC) {
        return Ok(topic);
    }
    let config = &shard.shared.config;
    let topic_config = TopicConfig {
        segment_bytes: config.segment_bytes.min(OFFSETS_SEGMENT_BYTES),
        retention_bytes: None,
        retention_ms: None,
    };
    // Replicated like Kafka's (`offsets.topic.replication.factor` 3), on as many brokers as
    // are live when fewer, so committed offsets survive the loss of their coordinator.
    let live = metadata.snapshot().live_brokers().len();
    let replication = OFFSETS_REPLICATION_FACTOR.min(live.max(1)) as i16;
    let created = metadata
        .create(
            OFFSETS_TOPIC,
            config.offsets_topic_partitions,
            replication,
            topic_config,
        )
        .await;
    match created {
        Ok(topic) => {
            tracing::info!(partitions = topic.partitions, "created {OFFSETS_TOPIC}");
            Ok(topic)
        }
        Err(TopicError::AlreadyExists(_)) => {
            metadata
                .topic(OFFSETS_TOPIC)
                .ok_or(CoordinatorError::Load(LoadError::NoTopic {
                    topic: OFFSETS_TOPIC,
                    source: None,
                }))
        }
        Err(error) => {
            tracing::error!(%error, "cannot create {OFFSETS_TOPIC}");
            Err(CoordinatorError::OffsetsTopic(error))
        }
    }
}

/// Sends a request to its group's coordinator core and waits for the answer.
async fn call(shard: &Rc<Shard>, group_id: &str, request: GroupRequest) -> GroupAnswer {
    if group_id.is_empty() {
        return GroupAnswer::Failed(GroupError::InvalidGroupId);
    }
    let topic = match offsets_topic(shard).await {
        Ok(topic) => topic,
        Err(error) => return GroupAnswer::Failed(error.into()),
    };
    let partition = group::coordinator_for(group_id, topic.partitions);
    let node_id = shard.shared.config.node_id;
    let state = shard.shared.metadata.snapshot();
    if group::coordinator_node(&state, partition) != Some(node_id) {
        return GroupAnswer::Failed(CoordinatorError::NotCoordinator { partition }.into());
    }
    let core = partition_owner(OFFSETS_TOPIC, partition, shard.shared.cores);
    let call = GroupCall::ForGroup { partition, request };
    shard
        .call_core(core, move |shard| async move {
            group::coordinator::handle(&shard, call).await
        })
        .await
        .unwrap_or(GroupAnswer::Failed(CoordinatorError::Dropped.into()))
}

/// The error code of an answer that is not the expected kind.
fn failure_code(answer: &GroupAnswer) -> i16 {
    match answer {
        GroupAnswer::Failed(error) => error.code(),
        other => {
            tracing::error!(?other, "group coordinator answered the wrong kind");
            error_code::UNKNOWN_SERVER_ERROR
        }
    }
}

/// The error code of one result: NONE, or its error's.
fn result_code(result: &Result<(), GroupError>) -> i16 {
    result
        .as_ref()
        .err()
        .map_or(error_code::NONE, KafkaCode::code)
}

pub async fn find_coordinator(
    shard: &Rc<Shard>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    let refuse = |mut response: FindCoordinatorResponse, code: i16| {
        response.error_code = code;
        response.node_id = BrokerId(-1);
        response.host = text("");
        response.port = -1;
        response
    };
    if version >= 1 && request.key_type == KEY_TYPE_TRANSACTION {
        return refuse(response, error_code::COORDINATOR_NOT_AVAILABLE);
    }
    if request.key.is_empty() {
        return refuse(response, error_code::INVALID_GROUP_ID);
    }
    let topic = match offsets_topic(shard).await {
        Ok(topic) => topic,
        Err(error) => return refuse(response, error.code()),
    };
    let partition = group::coordinator_for(&request.key, topic.partitions);
    let state = shard.shared.metadata.snapshot();
    let coordinator =
        group::coordinator_node(&state, partition).and_then(|node_id| state.brokers.get(&node_id));
    let Some(coordinator) = coordinator else {
        // No leader for the group's partition right now (a failover is under way).
        return refuse(response, error_code::COORDINATOR_NOT_AVAILABLE);
    };
    response.node_id = BrokerId(coordinator.id);
    response.host = text(&coordinator.host);
    response.port = coordinator.port;
    response
}

fn instance(instance_id: &Option<StrBytes>) -> Option<String> {
    instance_id.as_ref().map(ToString::to_string)
}

pub async fn join_group(
    shard: &Rc<Shard>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> JoinGroupResponse {
    let member_id = request.member_id.to_string();
    let outcome = {
        let group_id = request.group_id.0.to_string();
        let join = JoinRequest {
            group_id: group_id.clone(),
            member_id: member_id.clone(),
            client_id: client_id.to_string(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: if version >= 1 {
                request.rebalance_timeout_ms
            } else {
                -1
            },
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .into_iter()
                .map(|protocol| (protocol.name.to_string(), protocol.metadata))
                .collect(),
            require_known_member_id: version >= 4,
            instance_id: instance(&request.group_instance_id),
        };
        match call(shard, &group_id, GroupRequest::Join(join)).await {
            GroupAnswer::Join(Ok(answer)) => answer,
            GroupAnswer::Join(Err(refusal)) => {
                return refused_join(refusal.code(), &refusal.member_id)
            }
            other => return refused_join(failure_code(&other), &member_id),
        }
    };
    let mut response = JoinGroupResponse::default();
    response.generation_id = outcome.generation_id;
    // Not nullable before v7.
    response.protocol_name = Some(text(outcome.protocol_name.as_deref().unwrap_or("")));
    response.leader = text(&outcome.leader);
    response.member_id = text(&outcome.member_id);
    response.members = outcome
        .members
        .into_iter()
        .map(|(member_id, metadata)| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = text(&member_id);
            member.metadata = metadata;
            member
        })
        .collect();
    response
}

/// A JoinGroup answer that refuses: `code`, and the member id the client is to use.
fn refused_join(code: i16, member_id: &str) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = code;
    response.generation_id = -1;
    // Not nullable before v7.
    response.protocol_name = Some(text(""));
    response.leader = text("");
    response.member_id = text(member_id);
    response
}

pub async fn sync_group(shard: &Rc<Shard>, request: SyncGroupRequest) -> SyncGroupResponse {
    let outcome: Result<SyncAnswer, i16> = {
        let group_id = request.group_id.0.to_string();
        let assignments = request
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect::<Vec<_>>();
        let bytes_max = shard.groups.settings().member_metadata_bytes_max;
        if assignments
            .iter()
            .any(|(_, assignment)| assignment.len() > bytes_max)
        {
            tracing::info!(group = %group_id, "oversized assignment refused");
            Err(error_code::INVALID_REQUEST)
        } else {
            let sync = GroupRequest::Sync {
                group_id: group_id.clone(),
                member_id: request.member_id.to_string(),
                instance_id: instance(&request.group_instance_id),
                generation_id: request.generation_id,
                assignments,
            };
            match call(shard, &group_id, sync).await {
                GroupAnswer::Sync(outcome) => outcome.map_err(|error| error.code()),
                other => Err(failure_code(&other)),
            }
        }
    };
    let mut response = SyncGroupResponse::default();
    match outcome {
        Ok(answer) => response.assignment = answer.assignment,
        Err(code) => response.error_code = code,
    }
    response
}

pub async fn heartbeat(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    let code = {
        let group_id = request.group_id.0.to_string();
        let beat = GroupRequest::Heartbeat {
            group_id: group_id.clone(),
            member_id: request.member_id.to_string(),
            instance_id: instance(&request.group_instance_id),
            generation_id: request.generation_id,
        };
        match call(shard, &group_id, beat).await {
            GroupAnswer::Heartbeat(result) => result_code(&result),
            other => failure_code(&other),
        }
    };
    let mut response = HeartbeatResponse::default();
    response.error_code = code;
    response
}

pub async fn leave_group(
    shard: &Rc<Shard>,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let mut response = LeaveGroupResponse::default();
    if version < 3 {
        let leave = GroupRequest::Leave {
            group_id: group_id.clone(),
            members: vec![(request.member_id.to_string(), None)],
        };
        response.error_code = match call(shard, &group_id, leave).await {
            GroupAnswer::Leave(results) => results.first().map_or(error_code::NONE, result_code),
            other => failure_code(&other),
        };
        return response;
    }
    // v3: a batch of members, static ones named by their instance id.
    let members: Vec<(String, Option<String>)> = request
        .members
        .iter()
        .map(|member| {
            (
                member.member_id.to_string(),
                instance(&member.group_instance_id),
            )
        })
        .collect();
    let leave = GroupRequest::Leave {
        group_id: group_id.clone(),
        members,
    };
    let mut codes = match call(shard, &group_id, leave).await {
        GroupAnswer::Leave(results) => results
            .iter()
            .map(result_code)
            .collect::<Vec<_>>()
            .into_iter(),
        other => {
            response.error_code = failure_code(&other);
            return response;
        }
    };
    response.members = request
        .members
        .into_iter()
        .map(|member| {
            let mut answer = MemberResponse::default();
            answer.error_code = codes.next().unwrap_or(error_code::UNKNOWN_SERVER_ERROR);
            answer.member_id = member.member_id;
            answer.group_instance_id = member.group_instance_id;
            answer
        })
        .collect();
    response
}

pub async fn offset_commit(
    shard: &Rc<Shard>,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let entries: Vec<CommitEntry> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| CommitEntry {
                topic: topic.name.0.to_string(),
                partition: partition.partition_index,
                offset: partition.committed_offset,
                leader_epoch: if version >= 6 {
                    partition.committed_leader_epoch
                } else {
                    -1
                },
                metadata: partition
                    .committed_metadata
                    .as_ref()
                    .map(ToString::to_string),
            })
        })
        .collect();
    let count = entries.len();
    let codes = {
        let commit = CommitRequest {
            group_id: group_id.clone(),
            member_id: request.member_id.to_string(),
            instance_id: instance(&request.group_instance_id),
            generation_id: request.generation_id_or_member_epoch,
            entries,
        };
        match call(shard, &group_id, GroupRequest::Commit(commit)).await {
            GroupAnswer::Commit(results) if results.len() == count => {
                results.iter().map(result_code).collect()
            }
            other => vec![failure_code(&other); count],
        }
    };
    let mut codes = codes.into_iter();
    let mut response = OffsetCommitResponse::default();
    response.topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let mut answer = OffsetCommitResponseTopic::default();
            answer.name = topic.name;
            answer.partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let mut result = OffsetCommitResponsePartition::default();
                    result.partition_index = partition.partition_index;
                    result.error_code = codes.next().unwrap_or(error_code::UNKNOWN_SERVER_ERROR);
                    result
                })
                .collect();
            answer
        })
        .collect();
    response
}

pub async fn offset_fetch(
    shard: &Rc<Shard>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let group_id = request.group_id.0.to_string();
    let requested: Option<Vec<(String, i32)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|topic| {
                let name = topic.name.0.to_string();
                topic
                    .partition_indexes
                    .iter()
                    .map(move |partition| (name.clone(), *partition))
            })
            .collect()
    });
    let fetch = GroupRequest::FetchOffsets {
        group_id: group_id.clone(),
        partitions: requested.clone(),
    };
    let (group_code, fetched) = match call(shard, &group_id, fetch).await {
        GroupAnswer::Offsets(fetched) => (error_code::NONE, fetched),
        other => {
            let code = failure_code(&other);
            let fetched = requested
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partition)| group::FetchedOffset {
                    topic,
                    partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: Some(String::new()),
                })
                .collect();
            (code, fetched)
        }
    };
    let mut response = OffsetFetchResponse::default();
    if version >= 2 {
        response.error_code = group_code;
    }
    let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
    for offset in fetched {
        let mut partition = OffsetFetchResponsePartition::default();
        partition.partition_index = offset.partition;
        partition.committed_offset = offset.offset;
        if version >= 5 {
            partition.committed_leader_epoch = offset.leader_epoch;
        }
        partition.metadata = offset.metadata.as_deref().map(text);
        // Before v2 there is no group-level error: every partition carries it.
        partition.error_code = group_code;
        match topics
            .iter_mut()
            .find(|topic| topic.name.0.as_str() == offset.topic)
        {
            Some(topic) => topic.partitions.push(partition),
            None => {
                let mut topic = OffsetFetchResponseTopic::default();
                topic.name = TopicName(text(&offset.topic));
                topic.partitions.push(partition);
                topics.push(topic);
            }
        }
    }
    response.topics = topics;
    response
}

pub async fn list_groups(shard: &Rc<Shard>, _request: ListGroupsRequest) -> ListGroupsResponse {
    let mut response = ListGroupsResponse::default();
    for core in 0..shard.shared.cores {
        let listed = shard
            .call_core(core, |shard| async move {
                group::coordinator::handle(&shard, GroupCall::List).await
            })
            .await;
        match listed {
            Some(GroupAnswer::Listed(groups)) => {
                response.groups.extend(groups.into_iter().map(|listed| {
                    let mut group = ListedGroup::default();
                    group.group_id = GroupId(text(&listed.group_id));
                    group.protocol_type = text(&listed.protocol_type);
                    group
                }));
            }
            Some(other) => {
                response.error_code = failure_code(&other);
                return response;
            }
            None => {
                response.error_code = CoordinatorError::Dropped.code();
                return response;
            }
        }
    }
    response
}

pub async fn describe_groups(
    shard: &Rc<Shard>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for group_id in request.groups {
        let name = group_id.0.to_string();
        let describe = GroupRequest::Describe {
            group_id: name.clone(),
        };
        let mut described = DescribedGroup::default();
        described.group_id = group_id;
        match call(shard, &name, describe).await {
            GroupAnswer::Described(description) => {
                described.group_state = text(description.state);
                described.protocol_type = text(&description.protocol_type);
                described.protocol_data = text(&description.protocol_name);
                described.members = description
                    .members
                    .into_iter()
                    .map(|member| {
                        let mut entry = DescribedGroupMember::default();
                        entry.member_id = text(&member.member_id);
                        if version >= 4 {
                            entry.group_instance_id = member.instance_id.as_deref().map(text);
                        }
                        entry.client_id = text(&member.client_id);
                        // The coordinator does not learn the member's address.
                        entry.client_host = text("");
                        entry.member_metadata = member.metadata;
                        entry.member_assignment = member.assignment;
                        entry
                    })
                    .collect();
            }
            other => {
                described.error_code = failure_code(&other);
                described.group_state = text("Dead");
            }
        }
        response.groups.push(described);
    }
    response
}
