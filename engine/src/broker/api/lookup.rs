//! Looking up the topic a request names, shared by the APIs that take topic names (produce,
//! fetch, offsets, metadata): found in the cluster state, or created through the metadata
//! quorum when the broker auto-creates topics.

use std::sync::Arc;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::super::metadata::{Topic, TopicConfig, TopicError};
use super::super::shard::Shard;
use super::codes::KafkaCode;
use shardlog_protocol::error_code;

pub(super) fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

pub(super) fn topic_name(value: &str) -> TopicName {
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

pub(super) fn default_topic_config(shard: &Shard) -> TopicConfig {
    let config = &shard.shared.config;
    TopicConfig {
        segment_bytes: config.segment_bytes,
        retention_bytes: config.retention_bytes,
        retention_ms: config.retention_ms,
    }
}
