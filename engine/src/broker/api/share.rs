//! The share-group APIs (KIP-932, all at v1, flexible): ShareGroupHeartbeat,
//! ShareGroupDescribe, ShareFetch and ShareAcknowledge.
//!
//! Membership and share sessions are served by the group's coordinator core; each partition
//! is served by the core that owns it (`share::leader`). A ShareFetch therefore takes one
//! hop to the coordinator (member and session checks), then one per partition (its
//! acknowledgements and acquisitions), and waits up to `max_wait_ms` when nothing was
//! acquired. Every count and length from the wire is bounded here before it crosses cores.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use futures_util::future::select_all;
use kafka_protocol::messages::share_acknowledge_request::{self, ShareAcknowledgeRequest};
use kafka_protocol::messages::share_acknowledge_response::{
    self, ShareAcknowledgeResponse, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::share_fetch_request::{self, ShareFetchRequest};
use kafka_protocol::messages::share_fetch_response::{
    self, AcquiredRecords, ShareFetchResponse, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::share_group_describe_request::ShareGroupDescribeRequest;
use kafka_protocol::messages::share_group_describe_response::{
    self, DescribedGroup, ShareGroupDescribeResponse,
};
use kafka_protocol::messages::share_group_heartbeat_request::ShareGroupHeartbeatRequest;
use kafka_protocol::messages::share_group_heartbeat_response::{self, ShareGroupHeartbeatResponse};
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use shardlog_protocol::error_code::{self, ErrorCode};
use uuid::Uuid;

use super::super::metadata::Topic;
use super::super::shard::{partition_owner, Shard};
use super::codes::KafkaCode;
use crate::broker::group::{self, OFFSETS_TOPIC};
use crate::broker::partition::PartitionError;
use crate::broker::share::window::check_batches;
use crate::broker::share::{
    self, AckBatch, AcquireLimits, HeartbeatRequest, PartitionAnswer, PartitionCall, SessionOp,
    ShareAnswer, ShareCall, ShareError,
};

/// Most bytes one ShareFetch answers with, whatever the client asks.
const RESPONSE_BYTES_MAX: u64 = 64 << 20;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// The core that holds `group_id`'s membership and share sessions (the core of the group's
/// `__consumer_offsets` partition, where classic groups are coordinated), and whether this
/// broker coordinates the group (leads that partition).
fn group_core(shard: &Shard, group_id: &str) -> (usize, bool) {
    let partitions = shard
        .shared
        .metadata
        .topic(OFFSETS_TOPIC)
        .map_or(shard.shared.config.offsets_topic_partitions, |topic| {
            topic.partitions
        });
    let partition = group::coordinator_for(group_id, partitions);
    let node_id = shard.shared.config.node_id;
    // Before `__consumer_offsets` exists there is no leader to ask: the group is
    // coordinated here (FindCoordinator creates the topic, so clients do not get here).
    let state = shard.shared.metadata.snapshot();
    let coordinated = state.topic(OFFSETS_TOPIC).is_none()
        || group::coordinator_node(&state, partition) == Some(node_id);
    (
        partition_owner(OFFSETS_TOPIC, partition, shard.shared.cores),
        coordinated,
    )
}

/// The coordinator core of `group_id`, or NOT_COORDINATOR when another broker coordinates it.
fn coordinator_core(shard: &Shard, group_id: &str) -> Result<usize, i16> {
    match group_core(shard, group_id) {
        (core, true) => Ok(core),
        (_, false) => Err(error_code::NOT_COORDINATOR),
    }
}

/// Sends a call to the group's coordinator core.
async fn call_coordinator(
    shard: &Rc<Shard>,
    group_id: &str,
    call: ShareCall,
) -> Result<ShareAnswer, i16> {
    let core = coordinator_core(shard, group_id)?;
    share::call_core(shard, core, call)
        .await
        .ok_or(error_code::COORDINATOR_NOT_AVAILABLE)
}

fn topic_by_id(shard: &Shard, topic_id: Uuid) -> Option<Arc<Topic>> {
    shard.shared.metadata.topic_by_id(topic_id)
}

pub async fn heartbeat(
    shard: &Rc<Shard>,
    request: ShareGroupHeartbeatRequest,
    client_id: &str,
) -> ShareGroupHeartbeatResponse {
    let mut response = ShareGroupHeartbeatResponse::default();
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        response.error_code = error_code::INVALID_REQUEST;
        return response;
    }
    let member_id = request.member_id.to_string();
    let call = ShareCall::Heartbeat(HeartbeatRequest {
        group_id: group_id.clone(),
        member_id: member_id.clone(),
        member_epoch: request.member_epoch,
        client_id: client_id.to_string(),
        rack_id: request.rack_id.map(|rack| rack.to_string()),
        subscribed: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|name| name.0.to_string()).collect()),
    });
    let outcome = match call_coordinator(shard, &group_id, call).await {
        Ok(ShareAnswer::Heartbeat(outcome)) => outcome,
        Ok(_) => {
            response.error_code = error_code::UNKNOWN_SERVER_ERROR;
            return response;
        }
        Err(code) => {
            response.error_code = code;
            return response;
        }
    };
    let answer = match outcome {
        Ok(answer) => answer,
        Err(refusal) => {
            // A refusal still names the member, at epoch -1.
            response.error_code = refusal.error.code();
            response.member_id = Some(text(&refusal.member_id));
            response.member_epoch = -1;
            response.heartbeat_interval_ms = 0;
            return response;
        }
    };
    response.member_id = Some(text(&answer.member_id));
    response.member_epoch = answer.member_epoch;
    response.heartbeat_interval_ms = answer.heartbeat_interval_ms;
    response.assignment = answer.assignment.map(|assigned| {
        let mut assignment = share_group_heartbeat_response::Assignment::default();
        assignment.topic_partitions = assigned
            .into_iter()
            .map(|topic| {
                let mut entry = share_group_heartbeat_response::TopicPartitions::default();
                entry.topic_id = topic.topic_id;
                entry.partitions = topic.partitions;
                entry
            })
            .collect();
        assignment
    });
    if request.member_epoch == -1 {
        // A member that leaves gives back what it holds, as Kafka does.
        share::release_everywhere(Rc::clone(shard), group_id, member_id).await;
    }
    response
}

pub async fn describe(
    shard: &Rc<Shard>,
    request: ShareGroupDescribeRequest,
) -> ShareGroupDescribeResponse {
    let mut response = ShareGroupDescribeResponse::default();
    for group_id in request.group_ids {
        let name = group_id.0.to_string();
        let mut described = DescribedGroup::default();
        described.group_id = group_id;
        described.authorized_operations = i32::MIN;
        let call = ShareCall::Describe {
            group_id: name.clone(),
        };
        match call_coordinator(shard, &name, call).await {
            Ok(ShareAnswer::Described(Ok(description))) => {
                described.group_state = text(description.state);
                described.group_epoch = description.group_epoch;
                described.assignment_epoch = description.group_epoch;
                described.assignor_name = text("simple");
                described.members = description
                    .members
                    .into_iter()
                    .map(|member| {
                        let mut entry = share_group_describe_response::Member::default();
                        entry.member_id = text(&member.member_id);
                        entry.rack_id = member.rack_id.as_deref().map(text);
                        entry.member_epoch = member.member_epoch;
                        entry.client_id = text(&member.client_id);
                        // The coordinator does not learn the member's address.
                        entry.client_host = text("");
                        entry.subscribed_topic_names = member
                            .subscribed
                            .iter()
                            .map(|name| TopicName(text(name)))
                            .collect();
                        entry.assignment.topic_partitions = member
                            .assignment
                            .into_iter()
                            .map(|topic| {
                                let mut partitions =
                                    share_group_describe_response::TopicPartitions::default();
                                partitions.topic_id = topic.topic_id;
                                partitions.topic_name = TopicName(text(&topic.topic_name));
                                partitions.partitions = topic.partitions;
                                partitions
                            })
                            .collect();
                        entry
                    })
                    .collect();
            }
            Ok(ShareAnswer::Described(Err(error))) => {
                // A group the coordinator does not have.
                described.error_code = error.code();
                described.group_state = text("Dead");
                described.group_epoch = -1;
                described.assignment_epoch = -1;
                described.assignor_name = text("simple");
            }
            Ok(_) => described.error_code = error_code::UNKNOWN_SERVER_ERROR,
            Err(code) => {
                described.error_code = code;
                described.group_state = text("Dead");
            }
        }
        response.groups.push(described);
    }
    response
}

/// The group and member ids a ShareFetch or ShareAcknowledge must carry.
fn identity(
    group_id: &Option<GroupId>,
    member_id: &Option<StrBytes>,
) -> Result<(String, String), i16> {
    let group_id = group_id
        .as_ref()
        .map(|id| id.0.to_string())
        .unwrap_or_default();
    let member_id = member_id
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default();
    if group_id.is_empty() || member_id.is_empty() {
        return Err(error_code::INVALID_REQUEST);
    }
    Ok((group_id, member_id))
}

/// One partition named in a request, with its acknowledgements (shape-checked).
struct Named {
    topic_id: Uuid,
    partition: i32,
    acknowledgements: Result<Vec<AckBatch>, ShareError>,
}

fn named_batches(
    batches: impl Iterator<Item = (i64, i64, Vec<i8>)>,
    max_offsets: u32,
) -> Result<Vec<AckBatch>, ShareError> {
    let batches: Vec<AckBatch> = batches
        .map(|(first, last, types)| AckBatch { first, last, types })
        .collect();
    check_batches(&batches, max_offsets)?;
    Ok(batches)
}

/// Runs one session step on the group's core: with the member checked when this broker
/// coordinates the group, else as a session of a member coordinated elsewhere (a member
/// fetches from every broker that leads one of its partitions; Kafka keeps share sessions
/// per broker).
async fn session_step(shard: &Rc<Shard>, mut op: SessionOp) -> Result<Vec<(Uuid, i32)>, ErrorCode> {
    let (core, coordinated) = group_core(shard, &op.group_id);
    op.coordinated = coordinated;
    match share::call_core(shard, core, ShareCall::Session(op)).await {
        Some(ShareAnswer::Session(result)) => result.map_err(|error| error.code()),
        Some(_) => Err(error_code::UNKNOWN_SERVER_ERROR),
        None => Err(error_code::COORDINATOR_NOT_AVAILABLE),
    }
}

/// Sends one partition call to the core that owns the partition.
async fn call_partition(shard: &Rc<Shard>, call: PartitionCall) -> PartitionAnswer {
    let core = partition_owner(&call.topic.name, call.partition, shard.shared.cores);
    let (topic, partition) = (call.topic.name.clone(), call.partition);
    match share::call_core(shard, core, ShareCall::Partition(call)).await {
        Some(ShareAnswer::Partition(answer)) => answer,
        _ => PartitionAnswer::failed(ShareError::PartitionCallDropped { topic, partition }),
    }
}

/// One fetched partition's answer, kept until the response is written.
struct Fetched {
    topic_id: Uuid,
    partition: i32,
    answer: PartitionAnswer,
}

pub async fn fetch(shard: &Rc<Shard>, request: ShareFetchRequest) -> ShareFetchResponse {
    let settings = shard.shares.settings.clone();
    let mut response = ShareFetchResponse::default();
    response.acquisition_lock_timeout_ms =
        i32::try_from(settings.lock_duration.as_millis()).unwrap_or(i32::MAX);
    let (group_id, member_id) = match identity(&request.group_id, &request.member_id) {
        Ok(identity) => identity,
        Err(code) => {
            response.error_code = code;
            return response;
        }
    };
    let epoch = request.share_session_epoch;
    let named: Vec<Named> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(move |partition| Named {
                topic_id: topic.topic_id,
                partition: partition.partition_index,
                acknowledgements: named_batches(
                    partition.acknowledgement_batches.iter().map(fetch_batch),
                    settings.max_record_locks,
                ),
            })
        })
        .collect();
    let acknowledges = named
        .iter()
        .any(|named| !matches!(&named.acknowledgements, Ok(batches) if batches.is_empty()));
    if epoch == 0 && acknowledges {
        // Kafka: a new session has nothing to acknowledge yet.
        response.error_code = error_code::INVALID_REQUEST;
        return response;
    }
    let op = SessionOp {
        group_id: group_id.clone(),
        member_id: member_id.clone(),
        epoch,
        fetching: true,
        add: named
            .iter()
            .map(|named| (named.topic_id, named.partition))
            .collect(),
        forget: forgotten(&request.forgotten_topics_data),
        coordinated: false,
    };
    let session = match session_step(shard, op).await {
        Ok(session) => session,
        Err(code) => {
            response.error_code = code;
            return response;
        }
    };
    let max_records = u32::try_from(request.max_records.max(0))
        .unwrap_or(0)
        .min(settings.max_record_locks);
    let max_bytes = u64::try_from(request.max_bytes.max(0))
        .unwrap_or(0)
        .min(RESPONSE_BYTES_MAX);
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64)
        .min(Duration::from_millis(shard.shared.config.fetch_wait_max_ms));
    let deadline = Instant::now() + wait;

    // First pass: acknowledgements of the named partitions, and acquisitions in the session.
    let mut fetched: Vec<Fetched> = Vec::new();
    let mut budget = (max_records, max_bytes);
    for named in &named {
        let acquire = epoch != -1 && session.contains(&(named.topic_id, named.partition));
        let answer = partition_pass(
            shard,
            &group_id,
            &member_id,
            named.topic_id,
            named.partition,
            named.acknowledgements.clone(),
            acquire,
            &mut budget,
        )
        .await;
        fetched.push(Fetched {
            topic_id: named.topic_id,
            partition: named.partition,
            answer,
        });
    }
    if epoch != -1 {
        for &(topic_id, partition) in &session {
            if named
                .iter()
                .any(|named| (named.topic_id, named.partition) == (topic_id, partition))
            {
                continue;
            }
            let answer = partition_pass(
                shard,
                &group_id,
                &member_id,
                topic_id,
                partition,
                Ok(Vec::new()),
                true,
                &mut budget,
            )
            .await;
            fetched.push(Fetched {
                topic_id,
                partition,
                answer,
            });
        }
    }
    // Long polling: wait until something may be acquirable, then try again.
    while epoch != -1
        && budget.0 == max_records
        && max_records > 0
        && !shard.shared.is_shutting_down()
    {
        let now = Instant::now();
        let failed = fetched
            .iter()
            .any(|entry| entry.answer.acquisition.is_err());
        if now >= deadline || failed {
            break;
        }
        let listeners: Vec<_> = fetched
            .iter_mut()
            .filter_map(|fetched| fetched.answer.acquisition.as_mut().ok())
            .flat_map(|acquisition| std::mem::take(&mut acquisition.wake))
            .collect();
        if listeners.is_empty() {
            glommio::timer::sleep(deadline - now).await;
        } else {
            async {
                select_all(listeners).await;
            }
            .or(glommio::timer::sleep(deadline - now))
            .await;
        }
        for entry in fetched.iter_mut() {
            if entry.answer.acquisition.is_err() {
                continue;
            }
            let again = partition_pass(
                shard,
                &group_id,
                &member_id,
                entry.topic_id,
                entry.partition,
                Ok(Vec::new()),
                true,
                &mut budget,
            )
            .await;
            entry.answer.acquisition = again.acquisition;
        }
    }
    if epoch == -1 {
        // Closing the session gives back whatever the member still holds.
        share::release_everywhere(Rc::clone(shard), group_id, member_id).await;
    }
    response.responses = fetch_topics(shard, fetched);
    response
}

fn fetch_batch(batch: &share_fetch_request::AcknowledgementBatch) -> (i64, i64, Vec<i8>) {
    (
        batch.first_offset,
        batch.last_offset,
        batch.acknowledge_types.clone(),
    )
}

fn acknowledge_batch(
    batch: &share_acknowledge_request::AcknowledgementBatch,
) -> (i64, i64, Vec<i8>) {
    (
        batch.first_offset,
        batch.last_offset,
        batch.acknowledge_types.clone(),
    )
}

fn forgotten(topics: &[share_fetch_request::ForgottenTopic]) -> Vec<(Uuid, i32)> {
    topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|&partition| (topic.topic_id, partition))
        })
        .collect()
}

/// Acknowledges and (when `acquire`) acquires in one partition, spending `budget`
/// (records, bytes).
#[allow(clippy::too_many_arguments)]
async fn partition_pass(
    shard: &Rc<Shard>,
    group_id: &str,
    member_id: &str,
    topic_id: Uuid,
    partition: i32,
    acknowledgements: Result<Vec<AckBatch>, ShareError>,
    acquire: bool,
    budget: &mut (u32, u64),
) -> PartitionAnswer {
    let Some(topic) = topic_by_id(shard, topic_id) else {
        return PartitionAnswer::failed(ShareError::UnknownTopicId { topic_id });
    };
    if !(0..topic.partitions).contains(&partition) {
        return PartitionAnswer::failed(PartitionError::Unknown {
            topic: topic.name.clone(),
            partition,
        });
    }
    let (acknowledgements, shape_error) = match acknowledgements {
        Ok(batches) => (batches, None),
        Err(error) => (Vec::new(), Some(error)),
    };
    let wants_records = acquire && budget.0 > 0 && budget.1 > 0;
    if acknowledgements.is_empty() && !wants_records {
        let mut answer = PartitionAnswer::empty();
        if let Some(error) = shape_error {
            answer.acknowledged = Err(error);
        }
        return answer;
    }
    let call = PartitionCall {
        group_id: group_id.to_string(),
        member_id: member_id.to_string(),
        topic,
        partition,
        acknowledgements,
        acquire: wants_records.then_some(AcquireLimits {
            max_records: budget.0,
            max_bytes: budget.1,
        }),
    };
    let mut answer = call_partition(shard, call).await;
    if let Some(error) = shape_error {
        answer.acknowledged = Err(error);
    }
    if let Ok(acquisition) = &answer.acquisition {
        let taken: u64 = acquisition
            .acquired
            .iter()
            .map(|range| (range.last - range.first + 1) as u64)
            .sum();
        budget.0 = budget
            .0
            .saturating_sub(u32::try_from(taken).unwrap_or(u32::MAX));
        let bytes = acquisition
            .records
            .as_ref()
            .map_or(0, |records| records.len() as u64);
        budget.1 = budget.1.saturating_sub(bytes);
    }
    answer
}

/// The partition's leader and leader epoch in the cluster state, so that a client that asked
/// the wrong broker (NOT_LEADER_OR_FOLLOWER) goes to the right one; (-1, -1) when unknown.
fn current_leader(shard: &Shard, topic_id: Uuid, partition: i32) -> (i32, i32) {
    shard
        .shared
        .metadata
        .topic_by_id(topic_id)
        .and_then(|topic| {
            topic
                .partition(partition)
                .map(|state| (state.leader, state.leader_epoch))
        })
        .unwrap_or((-1, -1))
}

/// The wire code of a partition answer's part: NONE when it succeeded.
fn code_of<T>(result: &Result<T, ShareError>) -> ErrorCode {
    result
        .as_ref()
        .err()
        .map_or(error_code::NONE, KafkaCode::code)
}

/// The response's topics: every partition the request named or the session holds.
fn fetch_topics(shard: &Shard, fetched: Vec<Fetched>) -> Vec<ShareFetchableTopicResponse> {
    let mut topics: Vec<ShareFetchableTopicResponse> = Vec::new();
    for entry in fetched {
        let answer = entry.answer;
        let mut partition = share_fetch_response::PartitionData::default();
        partition.partition_index = entry.partition;
        partition.error_code = code_of(&answer.acquisition);
        partition.acknowledge_error_code = code_of(&answer.acknowledged);
        let acquisition = answer.acquisition.unwrap_or_default();
        let (leader_id, leader_epoch) = current_leader(shard, entry.topic_id, entry.partition);
        partition.current_leader.leader_id = leader_id;
        partition.current_leader.leader_epoch = leader_epoch;
        // Empty, not null, when nothing was acquired: librdkafka refuses a null record set.
        partition.records = Some(acquisition.records.unwrap_or_default());
        partition.acquired_records = acquisition
            .acquired
            .iter()
            .map(|range| {
                let mut acquired = AcquiredRecords::default();
                acquired.first_offset = range.first;
                acquired.last_offset = range.last;
                acquired.delivery_count = i16::try_from(range.delivery_count).unwrap_or(i16::MAX);
                acquired
            })
            .collect();
        match topics
            .iter_mut()
            .find(|topic| topic.topic_id == entry.topic_id)
        {
            Some(topic) => topic.partitions.push(partition),
            None => {
                let mut topic = ShareFetchableTopicResponse::default();
                topic.topic_id = entry.topic_id;
                topic.partitions.push(partition);
                topics.push(topic);
            }
        }
    }
    topics
}

pub async fn acknowledge(
    shard: &Rc<Shard>,
    request: ShareAcknowledgeRequest,
) -> ShareAcknowledgeResponse {
    let settings = shard.shares.settings.clone();
    let mut response = ShareAcknowledgeResponse::default();
    let (group_id, member_id) = match identity(&request.group_id, &request.member_id) {
        Ok(identity) => identity,
        Err(code) => {
            response.error_code = code;
            return response;
        }
    };
    let op = SessionOp {
        group_id: group_id.clone(),
        member_id: member_id.clone(),
        epoch: request.share_session_epoch,
        fetching: false,
        add: Vec::new(),
        forget: Vec::new(),
        coordinated: false,
    };
    if let Err(code) = session_step(shard, op).await {
        response.error_code = code;
        return response;
    }
    for topic in &request.topics {
        let mut topic_response = ShareAcknowledgeTopicResponse::default();
        topic_response.topic_id = topic.topic_id;
        for partition in &topic.partitions {
            let batches = named_batches(
                partition
                    .acknowledgement_batches
                    .iter()
                    .map(acknowledge_batch),
                settings.max_record_locks,
            );
            let mut budget = (0, 0);
            let answer = partition_pass(
                shard,
                &group_id,
                &member_id,
                topic.topic_id,
                partition.partition_index,
                batches,
                false,
                &mut budget,
            )
            .await;
            let mut data = share_acknowledge_response::PartitionData::default();
            data.partition_index = partition.partition_index;
            // The partition's own refusal, else its acknowledgements'.
            data.error_code = match (&answer.acquisition, &answer.acknowledged) {
                (Err(error), _) | (Ok(_), Err(error)) => error.code(),
                (Ok(_), Ok(())) => error_code::NONE,
            };
            let (leader_id, leader_epoch) =
                current_leader(shard, topic.topic_id, partition.partition_index);
            data.current_leader.leader_id = leader_id;
            data.current_leader.leader_epoch = leader_epoch;
            topic_response.partitions.push(data);
        }
        response.responses.push(topic_response);
    }
    if request.share_session_epoch == -1 {
        share::release_everywhere(Rc::clone(shard), group_id, member_id).await;
    }
    response
}
