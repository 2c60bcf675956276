//! Metadata: the brokers, and each topic's partitions as the metadata quorum assigned them.
//!
//! `kafka-protocol` refuses to encode a field that the chosen version lacks unless the field
//! holds its default value. So a version-specific field is set only when the version has it.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::BrokerId;

use super::super::metadata::Topic;
use super::super::shard::Shard;
use super::lookup::{resolve_topic, text, topic_name};
use crate::cluster::state::{ClusterState, NO_LEADER};
use shardlog_protocol::error_code;

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
    let topics: Vec<Result<Arc<Topic>, (String, i16)>> = match request.topics {
        None => shard
            .shared
            .metadata
            .snapshot()
            .topics
            .values()
            .cloned()
            .map(Ok)
            .collect(),
        Some(requested) => {
            let mut resolved = Vec::with_capacity(requested.len());
            for name in requested
                .into_iter()
                .filter_map(|topic| topic.name.map(|name| name.0.to_string()))
            {
                let topic = resolve_topic(shard, &name, may_create).await;
                resolved.push(topic.map_err(|code| (name, code)));
            }
            resolved
        }
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
            Err((name, code)) => {
                let mut entry = MetadataResponseTopic::default();
                entry.name = Some(topic_name(&name));
                entry.error_code = code;
                entry
            }
        })
        .collect();
    response
}

/// One topic's partitions as the quorum assigned them: leader (LEADER_NOT_AVAILABLE when
/// none), leader epoch, replicas, ISR, and the replicas on fenced brokers as offline.
fn topic_metadata(state: &ClusterState, topic: &Topic, version: i16) -> MetadataResponseTopic {
    let ids = |brokers: &[i32]| brokers.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    let offline = |id: &i32| state.brokers.get(id).is_none_or(|broker| broker.fenced);
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(topic_name(&topic.name));
    if version >= 10 {
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
