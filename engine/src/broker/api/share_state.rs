//! ReadShareGroupState (84) and WriteShareGroupState (85), v0: the share coordinator's side.
//! The leader of a data partition reads and writes its share partitions' state through them
//! when another broker leads the `__share_group_state` partition the key hashes to
//! (`share::remote` is the sending side and describes how a snapshot travels).
//!
//! A partition whose state partition this broker does not lead gets NOT_COORDINATOR; one
//! whose batches do not make a valid snapshot (a state other than 0, 2 or 4, runs out of
//! order) gets INVALID_REQUEST, checked here before it crosses cores.

use std::rc::Rc;

use kafka_protocol::messages::read_share_group_state_request::ReadShareGroupStateRequest;
use kafka_protocol::messages::read_share_group_state_response::{
    self, ReadShareGroupStateResponse, ReadStateResult,
};
use kafka_protocol::messages::write_share_group_state_request::{
    self, WriteShareGroupStateRequest,
};
use kafka_protocol::messages::write_share_group_state_response::{
    self, WriteShareGroupStateResponse, WriteStateResult,
};
use shardlog_protocol::error_code::{self, ErrorCode};
use uuid::Uuid;

use super::super::shard::{partition_owner, Shard};
use super::codes::KafkaCode;
use crate::broker::group::CoordinatorError;
use crate::broker::internal_topic::LoadError;
use crate::broker::share::record::{self, Run, Snapshot, StateKey};
use crate::broker::share::remote::{state_code, state_from_code};
use crate::broker::share::{self, store, ShareAnswer, ShareCall, ShareError, STATE_TOPIC};

/// The core that owns the state partition of `key`, if this broker leads that partition.
async fn state_core(shard: &Rc<Shard>, key: &StateKey) -> Result<(usize, i32), ShareError> {
    let topic = store::state_topic(shard).await?;
    let partition = key.state_partition(topic.partitions);
    let leader = shard
        .shared
        .metadata
        .topic(STATE_TOPIC)
        .and_then(|topic| topic.partition(partition).map(|state| state.leader));
    if leader != Some(shard.shared.config.node_id) {
        let error = LoadError::NotLeader {
            topic: STATE_TOPIC.to_string(),
            partition,
        };
        return Err(error.into());
    }
    Ok((
        partition_owner(STATE_TOPIC, partition, shard.shared.cores),
        partition,
    ))
}

fn key(group: &str, topic_id: Uuid, partition: i32) -> StateKey {
    StateKey {
        group: group.to_string(),
        topic_id,
        partition,
    }
}

pub async fn read(
    shard: &Rc<Shard>,
    request: ReadShareGroupStateRequest,
) -> ReadShareGroupStateResponse {
    let group = request.group_id.to_string();
    let mut response = ReadShareGroupStateResponse::default();
    for topic in request.topics {
        let mut result = ReadStateResult::default();
        result.topic_id = topic.topic_id;
        for asked in topic.partitions {
            let mut answer = read_share_group_state_response::PartitionResult::default();
            answer.partition = asked.partition;
            let key = key(&group, topic.topic_id, asked.partition);
            match read_one(shard, key, asked.leader_epoch).await {
                Ok(Some(snapshot)) => {
                    answer.start_offset = snapshot.start;
                    answer.state_batches = snapshot
                        .runs
                        .iter()
                        .map(|run| {
                            let mut batch = read_share_group_state_response::StateBatch::default();
                            batch.first_offset = run.first;
                            batch.last_offset = run.last;
                            batch.delivery_state = state_code(run.state);
                            batch.delivery_count =
                                i16::try_from(run.delivery_count).unwrap_or(i16::MAX);
                            batch
                        })
                        .collect();
                }
                // Never written: Kafka's "uninitialized" start.
                Ok(None) => answer.start_offset = -1,
                Err(error) => {
                    answer.error_code = error.code();
                    answer.start_offset = -1;
                }
            }
            result.partitions.push(answer);
        }
        response.results.push(result);
    }
    response
}

async fn read_one(
    shard: &Rc<Shard>,
    key: StateKey,
    leader_epoch: i32,
) -> Result<Option<Snapshot>, ShareError> {
    let (core, partition) = state_core(shard, &key).await?;
    let call = ShareCall::ReadState {
        partition,
        key,
        leader_epoch,
    };
    match share::call_core(shard, core, call).await {
        Some(ShareAnswer::State(result)) => result,
        _ => Err(CoordinatorError::Dropped.into()),
    }
}

pub async fn write(
    shard: &Rc<Shard>,
    request: WriteShareGroupStateRequest,
) -> WriteShareGroupStateResponse {
    let group = request.group_id.to_string();
    let mut response = WriteShareGroupStateResponse::default();
    for topic in request.topics {
        let mut result = WriteStateResult::default();
        result.topic_id = topic.topic_id;
        for asked in topic.partitions {
            let mut answer = write_share_group_state_response::PartitionResult::default();
            answer.partition = asked.partition;
            let key = key(&group, topic.topic_id, asked.partition);
            answer.error_code = match write_one(shard, key, &asked).await {
                Ok(()) => error_code::NONE,
                Err(code) => code,
            };
            result.partitions.push(answer);
        }
        response.results.push(result);
    }
    response
}

/// Writes one partition's state; a snapshot the request's batches cannot make is refused
/// here with INVALID_REQUEST, before it reaches the share layer.
async fn write_one(
    shard: &Rc<Shard>,
    key: StateKey,
    asked: &write_share_group_state_request::PartitionData,
) -> Result<(), ErrorCode> {
    let mut runs = Vec::with_capacity(asked.state_batches.len());
    for batch in &asked.state_batches {
        runs.push(Run {
            first: batch.first_offset,
            last: batch.last_offset,
            state: state_from_code(batch.delivery_state).ok_or(error_code::INVALID_REQUEST)?,
            delivery_count: u16::try_from(batch.delivery_count)
                .map_err(|_| error_code::INVALID_REQUEST)?,
        });
    }
    let snapshot = Snapshot {
        sequence: 0,
        start: asked.start_offset,
        runs,
    };
    // What replay would refuse is refused now, not stored.
    if record::decode_value(&record::encode_value(&snapshot)).is_err() {
        return Err(error_code::INVALID_REQUEST);
    }
    let (core, partition) = state_core(shard, &key)
        .await
        .map_err(|error| error.code())?;
    let call = ShareCall::WriteState {
        partition,
        key,
        leader_epoch: asked.leader_epoch,
        snapshot,
    };
    let written = match share::call_core(shard, core, call).await {
        Some(ShareAnswer::Written(result)) => result,
        _ => Err(CoordinatorError::Dropped.into()),
    };
    written.map_err(|error| error.code())
}
