//! CreateTopics and DeleteTopics, through the metadata quorum.

use std::rc::Rc;

use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};

use super::super::shard::Shard;
use super::codes::KafkaCode;
use super::lookup::{default_topic_config, text, topic_name};
use shardlog_protocol::error_code;

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
