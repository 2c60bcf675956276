//! AlterPartitionReassignments (API 45) and ListPartitionReassignments (API 46): moving a
//! partition's replicas to other brokers while producers run, Kafka's way.
//!
//! A reassignment is a `ReassignPartition` command to the metadata quorum
//! (`cluster::state`): the target replicas are added first and follow the leader; once the
//! ISR holds all of them the quorum drops the old replicas (and moves the leadership if the
//! leader is one of them). The request is answered when the command is applied, that is
//! when the move has started; ListPartitionReassignments shows the moves still running.
//! Cancelling a reassignment (a null replica list) is not supported.

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_request::AlterPartitionReassignmentsRequest;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    AlterPartitionReassignmentsResponse, ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use kafka_protocol::messages::list_partition_reassignments_response::{
    ListPartitionReassignmentsResponse, OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::super::shard::Shard;
use super::codes::KafkaCode;
use crate::cluster::state::{Command, PartitionState};
use shardlog_protocol::error_code::{
    INVALID_REPLICATION_FACTOR, INVALID_REQUEST, NO_REASSIGNMENT_IN_PROGRESS,
    UNKNOWN_TOPIC_OR_PARTITION,
};

pub async fn alter_partition_reassignments(
    shard: &Rc<Shard>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut response = AlterPartitionReassignmentsResponse::default();
    // v0 has no such field, and decodes it as its default: true.
    let factor_may_change = request.allow_replication_factor_change;
    response.allow_replication_factor_change = factor_may_change;
    for topic in request.topics {
        let mut result = ReassignableTopicResponse::default();
        result.name = topic.name.clone();
        for partition in topic.partitions {
            let index = partition.partition_index;
            let target: Option<Vec<i32>> = partition
                .replicas
                .map(|replicas| replicas.iter().map(|id| id.0).collect());
            let (error_code, message) =
                reassign_one(shard, topic.name.as_str(), index, target, factor_may_change).await;
            let mut answer = ReassignablePartitionResponse::default();
            answer.partition_index = index;
            answer.error_code = error_code;
            answer.error_message = message.map(StrBytes::from_string);
            result.partitions.push(answer);
        }
        response.responses.push(result);
    }
    response
}

/// Starts one partition's move; returns the Kafka error code and message.
async fn reassign_one(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
    factor_may_change: bool,
) -> (i16, Option<String>) {
    let metadata = &shard.shared.metadata;
    let Some(current) = metadata
        .topic(topic)
        .and_then(|found| found.partition(partition).cloned())
    else {
        return (UNKNOWN_TOPIC_OR_PARTITION, None);
    };
    let Some(target) = target else {
        return if current.target_replicas.is_none() {
            (NO_REASSIGNMENT_IN_PROGRESS, None)
        } else {
            (
                INVALID_REQUEST,
                Some("cancelling a reassignment is not supported".to_string()),
            )
        };
    };
    let replication_factor = current
        .target_replicas
        .as_ref()
        .map_or(current.replicas.len(), Vec::len);
    if !factor_may_change && target.len() != replication_factor {
        return (
            INVALID_REPLICATION_FACTOR,
            Some("the reassignment changes the replication factor".to_string()),
        );
    }
    let command = Command::ReassignPartition {
        topic: topic.to_string(),
        partition,
        target: target.clone(),
    };
    match metadata.propose(command).await {
        Ok(()) => {
            tracing::info!(topic, partition, ?target, "partition reassignment started");
            (0, None)
        }
        Err(error) => (error.code(), Some(error.to_string())),
    }
}

pub fn list_partition_reassignments(
    shard: &Rc<Shard>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let snapshot = shard.shared.metadata.snapshot();
    let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| (topic.name.to_string(), topic.partition_indexes))
            .collect()
    });
    let mut response = ListPartitionReassignmentsResponse::default();
    for topic in snapshot.topics.values() {
        let asked: Option<&Vec<i32>> = match &wanted {
            None => None,
            Some(wanted) => match wanted.iter().find(|(name, _)| *name == topic.name) {
                Some((_, partitions)) => Some(partitions),
                None => continue,
            },
        };
        let mut ongoing = OngoingTopicReassignment::default();
        ongoing.name = TopicName(StrBytes::from_string(topic.name.clone()));
        for (index, state) in topic.assignment.iter().enumerate() {
            let index = index as i32;
            if state.target_replicas.is_none() || asked.is_some_and(|asked| !asked.contains(&index))
            {
                continue;
            }
            ongoing.partitions.push(ongoing_partition(index, state));
        }
        if !ongoing.partitions.is_empty() {
            response.topics.push(ongoing);
        }
    }
    response
}

fn ongoing_partition(index: i32, state: &PartitionState) -> OngoingPartitionReassignment {
    let ids = |brokers: Vec<i32>| brokers.into_iter().map(BrokerId).collect();
    let mut partition = OngoingPartitionReassignment::default();
    partition.partition_index = index;
    partition.replicas = ids(state.replicas.clone());
    partition.adding_replicas = ids(state.adding_replicas());
    partition.removing_replicas = ids(state.removing_replicas());
    partition
}
