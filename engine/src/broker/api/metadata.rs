//! Metadata: the brokers, and each topic's partitions as the metadata quorum assigned them.
//!
//! Topics are named by name, or from v12 by id (KIP-516; newer clients, and the share
//! consumer, which learns its assignment as topic ids). Kafka's rules: a request that names
//! any id is answered by id alone (its names are ignored, nothing is auto-created), an
//! unknown id gets UNKNOWN_TOPIC_ID with a null name, and an id or a null name below v12 is
//! an INVALID_REQUEST.
//!
//! `kafka-protocol` refuses to encode a field that the chosen version lacks unless the field
//! holds its default value. So a version-specific field is set only when the version has it.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::BrokerId;

use super::super::metadata::Topic;
use super::super::shard::Shard;
use super::lookup::{resolve_topic, text, topic_name};
use crate::cluster::state::{ClusterState, NO_LEADER};
use shardlog_protocol::error_code;
use uuid::Uuid;

/// The first Metadata version that may name topics by id.
const TOPIC_ID_VERSION_MIN: i16 = 12;
/// The first Metadata version whose topics carry an id.
const TOPIC_ID_FIELD_VERSION_MIN: i16 = 10;

/// A topic the request named that is not answered with its partitions.
struct Unanswered {
    name: Option<String>,
    topic_id: Uuid,
    code: i16,
}

pub async fn metadata(
    shard: &Rc<Shard>,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let quorum = shard.shared.quorum();
    let mut response = MetadataResponse::default();
    if version >= 1 {
        response.controller_id = BrokerId(quorum.controller_id().unwrap_or(NO_LEADER));
    }
    if version >= 2 {
        response.cluster_id = Some(text(&shard.shared.cluster_id));
    }
    // Before v4 a request may always create topics; from v4 the client says.
    let may_create = version < 4 || request.allow_auto_topic_creation;
    let topics: Vec<Result<Arc<Topic>, Unanswered>> = match request.topics {
        None => shard
            .shared
            .metadata
            .snapshot()
            .topics
            .values()
            .cloned()
            .map(Ok)
            .collect(),
        Some(requested) => requested_topics(shard, requested, version, may_create).await,
    };
    // Read after any auto-creation, so the answer includes what it created.
    let state = shard.shared.metadata.snapshot();
    response.brokers = state
        .brokers
        .values()
        .filter(|broker| !broker.fenced)
        .map(|info| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(info.id);
            broker.host = text(&info.host);
            broker.port = info.port;
            broker
        })
        .collect();
    response.topics = topics
        .into_iter()
        .map(|topic| match topic {
            Ok(topic) => topic_metadata(&state, &topic, version),
            Err(unanswered) => {
                let mut entry = MetadataResponseTopic::default();
                entry.error_code = unanswered.code;
                // The name is nullable from v12 only.
                entry.name = match unanswered.name {
                    Some(name) => Some(topic_name(&name)),
                    None if version >= TOPIC_ID_VERSION_MIN => None,
                    None => Some(topic_name("")),
                };
                if version >= TOPIC_ID_FIELD_VERSION_MIN {
                    entry.topic_id = unanswered.topic_id;
                }
                entry
            }
        })
        .collect();
    response
}

/// The topics a request names: by id when it names any id, else by name (auto-created when
/// the request and the broker allow it).
async fn requested_topics(
    shard: &Rc<Shard>,
    requested: Vec<MetadataRequestTopic>,
    version: i16,
    may_create: bool,
) -> Vec<Result<Arc<Topic>, Unanswered>> {
    let by_id = |topic: &MetadataRequestTopic| !topic.topic_id.is_nil();
    if version < TOPIC_ID_VERSION_MIN
        && requested
            .iter()
            .any(|topic| by_id(topic) || topic.name.is_none())
    {
        return requested
            .into_iter()
            .map(|topic| {
                Err(Unanswered {
                    name: Some(
                        topic
                            .name
                            .map(|name| name.0.to_string())
                            .unwrap_or_default(),
                    ),
                    topic_id: topic.topic_id,
                    code: error_code::INVALID_REQUEST,
                })
            })
            .collect();
    }
    if requested.iter().any(by_id) {
        let mut ids: Vec<Uuid> = Vec::with_capacity(requested.len());
        for topic in requested.iter().filter(|topic| by_id(topic)) {
            if !ids.contains(&topic.topic_id) {
                ids.push(topic.topic_id);
            }
        }
        return ids
            .into_iter()
            .map(|topic_id| {
                shard
                    .shared
                    .metadata
                    .topic_by_id(topic_id)
                    .ok_or(Unanswered {
                        name: None,
                        topic_id,
                        code: error_code::UNKNOWN_TOPIC_ID,
                    })
            })
            .collect();
    }
    let mut resolved = Vec::with_capacity(requested.len());
    for name in requested
        .into_iter()
        .filter_map(|topic| topic.name.map(|name| name.0.to_string()))
    {
        let topic = resolve_topic(shard, &name, may_create).await;
        resolved.push(topic.map_err(|code| Unanswered {
            name: Some(name),
            topic_id: Uuid::nil(),
            code,
        }));
    }
    resolved
}

/// One topic's partitions as the quorum assigned them: leader (LEADER_NOT_AVAILABLE when
/// none), leader epoch, replicas, ISR, and the replicas on fenced brokers as offline.
fn topic_metadata(state: &ClusterState, topic: &Topic, version: i16) -> MetadataResponseTopic {
    let ids = |brokers: &[i32]| brokers.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    let offline = |id: &i32| state.brokers.get(id).is_none_or(|broker| broker.fenced);
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(topic_name(&topic.name));
    if version >= TOPIC_ID_FIELD_VERSION_MIN {
        entry.topic_id = topic.id;
    }
    if version >= 1 {
        entry.is_internal = topic.name == crate::broker::group::OFFSETS_TOPIC
            || topic.name == crate::broker::share::STATE_TOPIC;
    }
    entry.partitions = topic
        .assignment
        .iter()
        .enumerate()
        .map(|(index, assigned)| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = index as i32;
            partition.leader_id = BrokerId(assigned.leader);
            if assigned.leader == NO_LEADER {
                partition.error_code = error_code::LEADER_NOT_AVAILABLE;
            }
            if version >= 7 {
                partition.leader_epoch = assigned.leader_epoch;
            }
            partition.replica_nodes = ids(&assigned.replicas);
            partition.isr_nodes = ids(&assigned.isr);
            if version >= 5 {
                let down: Vec<i32> = assigned.replicas.iter().copied().filter(offline).collect();
                partition.offline_replicas = ids(&down);
            }
            partition
        })
        .collect();
    entry
}
