//! Topic metadata (Metadata), topic creation (CreateTopics) and deletion (DeleteTopics).

use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsResponse, DeleteTopicsResponse, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{response_error, ClientError, WorkloadError};
use shardlog_protocol::client::Connection;

/// Versions this client speaks. Metadata v0 differs in what a null topic list means;
/// CreateTopics from v2 reports errors with messages.
const METADATA_VERSIONS: (i16, i16) = (1, 12);
const CREATE_TOPICS_VERSIONS: (i16, i16) = (2, 7);
/// DeleteTopics v6 names topics by id or name in another field; v1 to v5 take names.
const DELETE_TOPICS_VERSIONS: (i16, i16) = (1, 5);

/// How long a created topic may take to show up in metadata.
const TOPIC_VISIBLE_WAIT: Duration = Duration::from_secs(10);

/// One partition and the address of the broker that leads it.
#[derive(Clone, Debug)]
pub struct PartitionLeader {
    pub partition: i32,
    pub leader_address: String,
}

/// A topic's partitions, in partition order.
#[derive(Clone, Debug)]
pub struct TopicLayout {
    pub name: String,
    pub partitions: Vec<PartitionLeader>,
    /// Every broker the metadata named (`host:port`), to ask again when a leader is lost.
    pub brokers: Vec<String>,
}

/// The topic's partitions and leaders, or `None` if the broker does not know the topic (or
/// a partition has no leader yet).
pub fn describe_topic(
    connection: &mut Connection,
    topic: &str,
) -> Result<Option<TopicLayout>, ClientError> {
    let version =
        connection.pick_version::<MetadataRequest>(METADATA_VERSIONS.0, METADATA_VERSIONS.1)?;
    let mut request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
    ]));
    if version >= 4 {
        request.allow_auto_topic_creation = false;
    }
    let response: MetadataResponse = connection.call(&request, version)?;
    let address = connection.address().to_string();
    let missing = |what: &str| ClientError::MissingInResponse {
        address: address.clone(),
        api: ApiKey::Metadata,
        what: what.to_string(),
    };
    let entry = response
        .topics
        .iter()
        .find(|entry| {
            entry
                .name
                .as_ref()
                .is_some_and(|name| name.0.as_str() == topic)
        })
        .ok_or_else(|| missing(&format!("topic {topic}")))?;
    match response_error(entry.error_code) {
        None => {}
        Some(ResponseError::UnknownTopicOrPartition) => return Ok(None),
        Some(error) => {
            return Err(ClientError::Broker {
                api: ApiKey::Metadata,
                topic: topic.to_string(),
                partition: -1,
                error,
                message: None,
            })
        }
    }
    let mut partitions = Vec::with_capacity(entry.partitions.len());
    for partition in &entry.partitions {
        let error = response_error(partition.error_code);
        if error == Some(ResponseError::LeaderNotAvailable) {
            // A new topic in a cluster: leaders are being chosen; ask again.
            return Ok(None);
        }
        if let Some(error) = error {
            return Err(ClientError::Broker {
                api: ApiKey::Metadata,
                topic: topic.to_string(),
                partition: partition.partition_index,
                error,
                message: None,
            });
        }
        let leader = response
            .brokers
            .iter()
            .find(|broker| broker.node_id == partition.leader_id)
            .ok_or_else(|| {
                missing(&format!(
                    "the leader {} of partition {}",
                    partition.leader_id.0, partition.partition_index
                ))
            })?;
        partitions.push(PartitionLeader {
            partition: partition.partition_index,
            leader_address: format!("{}:{}", leader.host.as_str(), leader.port),
        });
    }
    partitions.sort_by_key(|partition| partition.partition);
    Ok(Some(TopicLayout {
        name: topic.to_string(),
        partitions,
        brokers: response
            .brokers
            .iter()
            .map(|broker| format!("{}:{}", broker.host.as_str(), broker.port))
            .collect(),
    }))
}

/// Creates the topic; an existing topic is not an error here.
pub fn create_topic(
    connection: &mut Connection,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
) -> Result<(), ClientError> {
    let version = connection
        .pick_version::<CreateTopicsRequest>(CREATE_TOPICS_VERSIONS.0, CREATE_TOPICS_VERSIONS.1)?;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)])
        .with_timeout_ms(30_000);
    let response: CreateTopicsResponse = connection.call(&request, version)?;
    for result in response.topics {
        match response_error(result.error_code) {
            None | Some(ResponseError::TopicAlreadyExists) => {}
            Some(error) => {
                return Err(ClientError::Broker {
                    api: ApiKey::CreateTopics,
                    topic: topic.to_string(),
                    partition: -1,
                    error,
                    message: result.error_message.map(|text| text.to_string()),
                })
            }
        }
    }
    Ok(())
}

/// Deletes the topic (its data goes with it); a topic already gone is not an error.
pub fn delete_topic(connection: &mut Connection, topic: &str) -> Result<(), ClientError> {
    let version = connection
        .pick_version::<DeleteTopicsRequest>(DELETE_TOPICS_VERSIONS.0, DELETE_TOPICS_VERSIONS.1)?;
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![topic_name(topic)])
        .with_timeout_ms(30_000);
    let response: DeleteTopicsResponse = connection.call(&request, version)?;
    for result in response.responses {
        match response_error(result.error_code) {
            None | Some(ResponseError::UnknownTopicOrPartition) => {}
            Some(error) => {
                return Err(ClientError::Broker {
                    api: ApiKey::DeleteTopics,
                    topic: topic.to_string(),
                    partition: -1,
                    error,
                    message: result.error_message.map(|text| text.to_string()),
                })
            }
        }
    }
    Ok(())
}

/// The topic's layout, creating it with `partitions` partitions of `replication` replicas
/// (-1: the brokers' default) if the cluster lacks it. An
/// existing topic with another partition count is an error: the workload would not be the
/// one asked for.
pub fn ensure_topic(
    connection: &mut Connection,
    topic: &str,
    partitions: i32,
    replication: i16,
) -> Result<TopicLayout, WorkloadError> {
    let layout = match describe_topic(connection, topic)? {
        Some(layout) => layout,
        None => {
            create_topic(connection, topic, partitions, replication)?;
            let started = Instant::now();
            loop {
                if let Some(layout) = describe_topic(connection, topic)? {
                    break layout;
                }
                if started.elapsed() > TOPIC_VISIBLE_WAIT {
                    return Err(WorkloadError::Topic {
                        topic: topic.to_string(),
                        reason: format!(
                            "created, but not in metadata after {} s",
                            TOPIC_VISIBLE_WAIT.as_secs()
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    if layout.partitions.len() != partitions as usize {
        return Err(WorkloadError::Topic {
            topic: topic.to_string(),
            reason: format!(
                "exists with {} partitions, the workload asks for {partitions}; delete it or pick another --topic",
                layout.partitions.len()
            ),
        });
    }
    Ok(layout)
}

pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}
