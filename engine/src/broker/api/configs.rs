//! DescribeConfigs: topic, broker and group configs, with their sources.
//! IncrementalAlterConfigs: group configs only (Kafka's GROUP resource, KIP-848 and KIP-932),
//! kept in the cluster state so that every broker applies them.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, IncrementalAlterConfigsRequest,
};
use kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse, IncrementalAlterConfigsResponse,
};

use super::super::shard::Shard;
use super::codes::KafkaCode;
use super::lookup::text;
use crate::broker::share::{OffsetReset, GROUP_CONFIG_OFFSET_RESET};
use crate::cluster::state::Command;
use shardlog_protocol::error_code;

/// Resource types of DescribeConfigs and IncrementalAlterConfigs.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;
/// Config sources of DescribeConfigs.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_GROUP: i8 = 8;
/// Operations of IncrementalAlterConfigs.
const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;
/// Longest group id a config may be set for (the metadata log holds it).
const GROUP_ID_BYTES_MAX: usize = 255;

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
            RESOURCE_GROUP => {
                let group = resource.resource_name.as_str();
                let state = shard.shared.metadata.snapshot();
                let (value, source) = match state.group_config(group, GROUP_CONFIG_OFFSET_RESET) {
                    Some(value) => (value.to_string(), SOURCE_GROUP),
                    None => (config.share_auto_offset_reset.clone(), SOURCE_STATIC_BROKER),
                };
                vec![(GROUP_CONFIG_OFFSET_RESET, value, source)]
            }
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

/// Sets or deletes group configs. Only `share.auto.offset.reset` is known; anything else, and
/// any other resource type, is refused per resource (INVALID_CONFIG, INVALID_REQUEST).
pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let mut result = AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let (code, message) = match group_command(&resource) {
            Err((code, message)) => (code, Some(message)),
            Ok(_) if request.validate_only => (error_code::NONE, None),
            Ok(command) => match shard.shared.metadata.propose(command).await {
                Ok(()) => {
                    tracing::info!(group = %resource.resource_name.as_str(), "group config altered");
                    (error_code::NONE, None)
                }
                Err(error) => (error.code(), Some(error.to_string())),
            },
        };
        result.error_code = code;
        result.error_message = message.map(|message| text(&message));
        response.responses.push(result);
    }
    response
}

/// The cluster-state change one resource asks for, checked.
fn group_command(resource: &AlterConfigsResource) -> Result<Command, (i16, String)> {
    if resource.resource_type != RESOURCE_GROUP {
        return Err((
            error_code::INVALID_REQUEST,
            format!(
                "resource type {}: only group configs (32) can be altered",
                resource.resource_type
            ),
        ));
    }
    let group = resource.resource_name.as_str();
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
        return Err((
            error_code::INVALID_GROUP_ID,
            format!("group id of {} bytes", group.len()),
        ));
    }
    let mut set = Vec::new();
    let mut delete = Vec::new();
    for config in &resource.configs {
        let name = config.name.as_str();
        if name != GROUP_CONFIG_OFFSET_RESET {
            return Err((
                error_code::INVALID_CONFIG,
                format!("unknown group config {name:?}"),
            ));
        }
        match config.config_operation {
            OPERATION_SET => {
                let value = config.value.as_deref().unwrap_or("");
                if OffsetReset::from_name(value).is_none() {
                    return Err((
                        error_code::INVALID_CONFIG,
                        format!("{name} {value:?}: expected earliest or latest"),
                    ));
                }
                set.push((name.to_string(), value.to_string()));
            }
            OPERATION_DELETE => delete.push(name.to_string()),
            other => {
                return Err((
                    error_code::INVALID_CONFIG,
                    format!("operation {other} on {name}, which is not a list"),
                ))
            }
        }
    }
    Ok(Command::AlterGroupConfig {
        group: group.to_string(),
        set,
        delete,
    })
}
