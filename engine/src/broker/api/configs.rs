//! DescribeConfigs: topic and broker configs, with their sources.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};

use super::super::shard::Shard;
use super::lookup::text;
use shardlog_protocol::error_code;

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
