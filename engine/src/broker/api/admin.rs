//! ApiVersions, Metadata, CreateTopics, DeleteTopics, DescribeConfigs, InitProducerId and
//! ListOffsets.
//!
//! `kafka-protocol` refuses to encode a field that the chosen version lacks unless the field
//! holds its default value. So a version-specific field is set only when the version has it.

use super::codes::KafkaCode;
use shardlog_protocol::error_code;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::super::chunks::Chunk;
use super::super::metadata::{Topic, TopicConfig, TopicError};
use super::super::shard::Shard;
use super::{Reply, SUPPORTED, UNSUPPORTED_VERSION};
use crate::cluster::state::{ClusterState, NO_LEADER};

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn topic_name(value: &str) -> TopicName {
    TopicName(text(value))
}

/// The topic a request names, created on the way (through the metadata quorum) if the broker
/// auto-creates topics.
pub async fn resolve_topic(shard: &Shard, name: &str, may_create: bool) -> Result<Arc<Topic>, i16> {
    let metadata = &shard.shared.metadata;
    if let Some(topic) = metadata.topic(name) {
        return Ok(topic);
    }
    let config = &shard.shared.config;
    if !(may_create && config.auto_create_topics) {
        return Err(error_code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let created = metadata
        .create(
            name,
            config.default_partitions,
            -1,
            default_topic_config(shard),
        )
        .await;
    match created {
        Ok(topic) => {
            tracing::info!(
                topic = name,
                partitions = topic.partitions,
                "auto-created topic"
            );
            Ok(topic)
        }
        Err(TopicError::AlreadyExists(_)) => metadata
            .topic(name)
            .ok_or(error_code::UNKNOWN_TOPIC_OR_PARTITION),
        Err(error) => Err(error.code()),
    }
}

fn default_topic_config(shard: &Shard) -> TopicConfig {
    let config = &shard.shared.config;
    TopicConfig {
        segment_bytes: config.segment_bytes,
        retention_bytes: config.retention_bytes,
        retention_ms: config.retention_ms,
    }
}

pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = key as i16;
            version.min_version = min;
            version.max_version = max;
            version
        })
        .collect();
    response
}

/// The answer to an ApiVersions request of a version above ours: a v0 body with
/// UNSUPPORTED_VERSION and our ranges (the header is v0 for ApiVersions in any case).
pub fn api_versions_unsupported(correlation_id: i32) -> Reply {
    use kafka_protocol::protocol::Encodable;
    let mut bytes = BytesMut::new();
    bytes.put_i32(0);
    bytes.put_i32(correlation_id);
    if api_versions(UNSUPPORTED_VERSION)
        .encode(&mut bytes, 0)
        .is_err()
    {
        return Reply::Close("cannot encode ApiVersions");
    }
    let size = (bytes.len() - 4) as i32;
    bytes[..4].copy_from_slice(&size.to_be_bytes());
    Reply::Send(vec![Chunk::Bytes(bytes.freeze())])
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

pub async fn create_topics(
    shard: &Rc<Shard>,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    for creatable in request.topics {
        let name = creatable.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic_name(&name);
        let partitions = if creatable.num_partitions == -1 {
            shard.shared.config.default_partitions
        } else {
            creatable.num_partitions
        };
        let mut config = default_topic_config(shard);
        let mut invalid_config = None;
        for setting in &creatable.configs {
            let value = setting.value.as_ref().map(|value| value.to_string());
            let parsed = value.as_deref().map(str::parse::<i64>);
            match (setting.name.as_str(), parsed) {
                ("segment.bytes", Some(Ok(bytes)))
                    if bytes >= 4096 && bytes < i64::from(u32::MAX) =>
                {
                    config.segment_bytes = bytes as u64
                }
                ("retention.bytes", Some(Ok(bytes))) => {
                    config.retention_bytes = (bytes >= 0).then_some(bytes as u64)
                }
                ("retention.ms", Some(Ok(ms))) => {
                    config.retention_ms = (ms >= 0).then_some(ms as u64)
                }
                ("cleanup.policy", _) if value.as_deref() == Some("delete") => {}
                (other, _) => invalid_config = Some(other.to_string()),
            }
        }
        if let Some(setting) = invalid_config {
            result.error_code = error_code::INVALID_CONFIG;
            result.error_message = Some(text(&format!("unsupported or invalid config {setting}")));
        } else if request.validate_only {
            let checked = shard.shared.metadata.create_command(
                &name,
                partitions,
                creatable.replication_factor,
                config,
            );
            if let Err(error) = checked {
                result.error_code = error.code();
                result.error_message = Some(text(&error.to_string()));
            }
        } else if !creatable.assignments.is_empty() {
            result.error_code = error_code::INVALID_REPLICA_ASSIGNMENT;
            result.error_message = Some(text("manual replica assignment is not supported"));
        } else {
            let created = shard
                .shared
                .metadata
                .create(&name, partitions, creatable.replication_factor, config)
                .await;
            match created {
                Ok(topic) => {
                    tracing::info!(topic = name, partitions = topic.partitions, "created topic")
                }
                Err(error) => {
                    result.error_code = error.code();
                    result.error_message = Some(text(&error.to_string()));
                }
            }
        }
        response.topics.push(result);
    }
    response
}

pub async fn delete_topics(
    shard: &Rc<Shard>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let names: Vec<String> = if version >= 6 {
        request
            .topics
            .into_iter()
            .filter_map(|state| state.name.map(|name| name.0.to_string()))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|name| name.0.to_string())
            .collect()
    };
    let mut response = DeleteTopicsResponse::default();
    for name in names {
        let mut result = DeletableTopicResult::default();
        result.name = Some(topic_name(&name));
        match shard.shared.metadata.delete(&name).await {
            Ok(topic) => {
                shard.delete_topic_everywhere(topic).await;
                tracing::info!(topic = name, "deleted topic");
            }
            Err(error) => result.error_code = error.code(),
        }
        response.responses.push(result);
    }
    response
}

/// Resource types of DescribeConfigs.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources of DescribeConfigs.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;

pub fn describe_configs(
    shard: &Rc<Shard>,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let config = &shard.shared.config;
    let optional =
        |value: Option<u64>| value.map_or_else(|| "-1".to_string(), |value| value.to_string());
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let entries: Vec<(&str, String, i8)> = match resource.resource_type {
            RESOURCE_TOPIC => match shard.shared.metadata.topic(resource.resource_name.as_str()) {
                Some(topic) => vec![
                    (
                        "segment.bytes",
                        topic.config.segment_bytes.to_string(),
                        SOURCE_DYNAMIC_TOPIC,
                    ),
                    (
                        "retention.bytes",
                        optional(topic.config.retention_bytes),
                        SOURCE_DYNAMIC_TOPIC,
                    ),
                    (
                        "retention.ms",
                        optional(topic.config.retention_ms),
                        SOURCE_DYNAMIC_TOPIC,
                    ),
                    ("cleanup.policy", "delete".to_string(), SOURCE_STATIC_BROKER),
                    (
                        "max.message.bytes",
                        config.max_batch_bytes.to_string(),
                        SOURCE_STATIC_BROKER,
                    ),
                    (
                        "min.insync.replicas",
                        config.min_insync_replicas.to_string(),
                        SOURCE_STATIC_BROKER,
                    ),
                ],
                None => {
                    result.error_code = error_code::UNKNOWN_TOPIC_OR_PARTITION;
                    Vec::new()
                }
            },
            RESOURCE_BROKER => vec![
                (
                    "broker.id",
                    config.node_id.to_string(),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "log.dirs",
                    config.data_dir.display().to_string(),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "log.segment.bytes",
                    config.segment_bytes.to_string(),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "log.retention.bytes",
                    optional(config.retention_bytes),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "log.retention.ms",
                    optional(config.retention_ms),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "num.partitions",
                    config.default_partitions.to_string(),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "auto.create.topics.enable",
                    config.auto_create_topics.to_string(),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "message.max.bytes",
                    config.max_batch_bytes.to_string(),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "socket.request.max.bytes",
                    config.max_request_bytes.to_string(),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "shardlog.storage.strategy",
                    config.strategy.clone(),
                    SOURCE_STATIC_BROKER,
                ),
                (
                    "shardlog.durability",
                    config.durability.clone(),
                    SOURCE_STATIC_BROKER,
                ),
            ],
            _ => {
                result.error_code = error_code::INVALID_REQUEST;
                Vec::new()
            }
        };
        let wanted = resource.configuration_keys.as_ref();
        result.configs = entries
            .into_iter()
            .filter(|(name, _, _)| {
                wanted.is_none_or(|keys| keys.iter().any(|key| key.as_str() == *name))
            })
            .map(|(name, value, source)| {
                let mut entry = DescribeConfigsResourceResult::default();
                entry.name = text(name);
                entry.value = Some(text(&value));
                entry.read_only = true;
                entry.config_source = source;
                entry
            })
            .collect();
        response.results.push(result);
    }
    response
}

pub fn init_producer_id(
    shard: &Rc<Shard>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    if request.transactional_id.is_some() {
        // Transactions are not implemented; idempotence alone needs no transactional id.
        response.error_code = error_code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return response;
    }
    if request.producer_id.0 >= 0 {
        // KIP-360: a producer re-initialising keeps its id with a bumped epoch.
        response.producer_id = request.producer_id;
        response.producer_epoch = request.producer_epoch.saturating_add(1);
        return response;
    }
    match shard.shared.allocate_producer_id() {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(error) => {
            tracing::error!(%error, "cannot allocate a producer id");
            response.error_code = error_code::KAFKA_STORAGE_ERROR;
        }
    }
    response
}

pub async fn list_offsets(shard: &Rc<Shard>, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let resolved = resolve_topic(shard, &name, false).await;
        let mut topic_response = ListOffsetsTopicResponse::default();
        topic_response.name = topic_name(&name);
        for partition in topic.partitions {
            let mut entry = ListOffsetsPartitionResponse::default();
            entry.partition_index = partition.partition_index;
            match &resolved {
                Ok(found) => {
                    let outcome = shard
                        .list_offsets(
                            Arc::clone(found),
                            partition.partition_index,
                            partition.timestamp,
                        )
                        .await;
                    entry.error_code = outcome.error_code;
                    entry.offset = outcome.offset;
                    entry.timestamp = outcome.timestamp_ms;
                }
                Err(code) => {
                    entry.error_code = *code;
                    entry.offset = -1;
                }
            }
            topic_response.partitions.push(entry);
        }
        response.topics.push(topic_response);
    }
    response
}
