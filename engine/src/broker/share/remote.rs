//! Reading and writing share-partition state on another broker: Kafka's ReadShareGroupState
//! (84) and WriteShareGroupState (85), v0, sent by the leader of a data partition to the
//! leader of the `__share_group_state` partition its key hashes to (Kafka's share
//! coordinator), when that is another broker.
//!
//! One connection per call, closed after the answer: state is read once per share partition
//! and written once per acknowledgement batch, on loopback or a LAN. Every call is bounded
//! in time ([`CALL_TIMEOUT`]) and its response in size ([`RESPONSE_BYTES_MAX`]).
//!
//! How a [`Snapshot`] travels: `start_offset` is the SPSO and each run is a state batch
//! (first and last offset, Kafka's delivery state 0 available, 2 acknowledged, 4 archived,
//! delivery count). A key never written reads as start offset -1 with no batches. The
//! sequence stays with the store (the share coordinator orders writes itself). `state_epoch`
//! is always 0 (this broker does not reset share partitions); `leader_epoch` is the data
//! partition's, which fences a deposed leader (FENCED_LEADER_EPOCH).
//!
//! Calls go through the one Kafka client (`shardlog_protocol::client::AsyncConnection`). A
//! failed call is [`ShareError::StateCall`] (the caller retries later); a partition the other
//! broker refused is [`ShareError::StateRefused`], its code read back into a [`StateRefusal`]
//! by [`state_answer`]: this module is the client of those APIs, so it reads their codes,
//! the inverse of the codes `broker::api::codes` gives a `StateRefusal` when answering.

use std::time::Duration;

use futures_lite::FutureExt;
use kafka_protocol::messages::read_share_group_state_request::{
    self, ReadShareGroupStateRequest, ReadStateData,
};
use kafka_protocol::messages::write_share_group_state_request::{
    self, WriteShareGroupStateRequest, WriteStateData,
};
use kafka_protocol::protocol::{Request, StrBytes};
use shardlog_protocol::buffers::BufferPool;
use shardlog_protocol::client::codec::api_of;
use shardlog_protocol::client::AsyncConnection;
use shardlog_protocol::error_code::{self, ErrorCode};

use super::record::{DurableState, Run, Snapshot, StateKey};
use super::{ShareError, StateRefusal};
use crate::broker::shard::Shard;

/// The versions sent (the only ones Kafka has, flexible).
pub const READ_VERSION: i16 = 0;
pub const WRITE_VERSION: i16 = 0;
/// Longest one call may take, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read: a snapshot spans at most 2^17 offsets, 19 bytes per run.
const RESPONSE_BYTES_MAX: usize = 8 << 20;
/// Kafka's delivery states on the wire.
pub const STATE_AVAILABLE: i8 = 0;
pub const STATE_ACKNOWLEDGED: i8 = 2;
pub const STATE_ARCHIVED: i8 = 4;

pub fn state_code(state: DurableState) -> i8 {
    match state {
        DurableState::Available => STATE_AVAILABLE,
        DurableState::Acknowledged => STATE_ACKNOWLEDGED,
        DurableState::Archived => STATE_ARCHIVED,
    }
}

pub fn state_from_code(code: i8) -> Option<DurableState> {
    match code {
        STATE_AVAILABLE => Some(DurableState::Available),
        STATE_ACKNOWLEDGED => Some(DurableState::Acknowledged),
        STATE_ARCHIVED => Some(DurableState::Archived),
        _ => None,
    }
}

/// The newest snapshot of `key`, asked of `broker`.
pub async fn read(
    shard: &Shard,
    broker: i32,
    key: &StateKey,
    leader_epoch: i32,
) -> Result<Option<Snapshot>, ShareError> {
    let mut partition = read_share_group_state_request::PartitionData::default();
    partition.partition = key.partition;
    partition.leader_epoch = leader_epoch;
    let mut topic = ReadStateData::default();
    topic.topic_id = key.topic_id;
    topic.partitions = vec![partition];
    let mut request = ReadShareGroupStateRequest::default();
    request.group_id = StrBytes::from_string(key.group.clone());
    request.topics = vec![topic];
    let response = call(shard, broker, READ_VERSION, &request).await?;
    let result = response
        .results
        .into_iter()
        .find(|result| result.topic_id == key.topic_id)
        .and_then(|result| {
            result
                .partitions
                .into_iter()
                .find(|answer| answer.partition == key.partition)
        })
        .ok_or_else(|| answer_without_partition(broker, key))?;
    state_answer(result.error_code).map_err(|refusal| refused(broker, refusal))?;
    if result.start_offset < 0 {
        return Ok(None);
    }
    let mut runs = Vec::with_capacity(result.state_batches.len());
    for batch in result.state_batches {
        let state =
            state_from_code(batch.delivery_state).ok_or(ShareError::InvalidRemoteState {
                broker,
                delivery_state: batch.delivery_state,
            })?;
        runs.push(Run {
            first: batch.first_offset,
            last: batch.last_offset,
            state,
            delivery_count: u16::try_from(batch.delivery_count).unwrap_or(0),
        });
    }
    Ok(Some(Snapshot {
        sequence: 0,
        start: result.start_offset,
        runs,
    }))
}

/// Writes `snapshot` of `key` on `broker`.
pub async fn write(
    shard: &Shard,
    broker: i32,
    key: &StateKey,
    leader_epoch: i32,
    snapshot: &Snapshot,
) -> Result<(), ShareError> {
    let mut partition = write_share_group_state_request::PartitionData::default();
    partition.partition = key.partition;
    partition.leader_epoch = leader_epoch;
    partition.start_offset = snapshot.start;
    partition.state_batches = snapshot
        .runs
        .iter()
        .map(|run| {
            let mut batch = write_share_group_state_request::StateBatch::default();
            batch.first_offset = run.first;
            batch.last_offset = run.last;
            batch.delivery_state = state_code(run.state);
            batch.delivery_count = i16::try_from(run.delivery_count).unwrap_or(i16::MAX);
            batch
        })
        .collect();
    let mut topic = WriteStateData::default();
    topic.topic_id = key.topic_id;
    topic.partitions = vec![partition];
    let mut request = WriteShareGroupStateRequest::default();
    request.group_id = StrBytes::from_string(key.group.clone());
    request.topics = vec![topic];
    let response = call(shard, broker, WRITE_VERSION, &request).await?;
    let code = response
        .results
        .iter()
        .flat_map(|result| result.partitions.iter())
        .find(|answer| answer.partition == key.partition)
        .ok_or_else(|| answer_without_partition(broker, key))?
        .error_code;
    state_answer(code).map_err(|refusal| refused(broker, refusal))
}

/// What another broker answered a ReadShareGroupState or WriteShareGroupState call with,
/// for one partition: read back from its code into what it means, so what a share
/// coordinator answered reaches this broker's client as it was answered.
pub fn state_answer(code: ErrorCode) -> Result<(), StateRefusal> {
    let refusal = match code {
        error_code::NONE => return Ok(()),
        error_code::FENCED_LEADER_EPOCH => StateRefusal::FencedLeaderEpoch,
        error_code::NOT_COORDINATOR => StateRefusal::NotCoordinator,
        error_code::NOT_LEADER_OR_FOLLOWER => StateRefusal::NotLeader,
        error_code::COORDINATOR_NOT_AVAILABLE => StateRefusal::CoordinatorNotAvailable,
        error_code::UNKNOWN_TOPIC_OR_PARTITION => StateRefusal::UnknownPartition,
        error_code::INVALID_REQUEST => StateRefusal::InvalidRequest,
        error_code::UNKNOWN_SERVER_ERROR => StateRefusal::ServerError,
        code => StateRefusal::Unexpected { code },
    };
    Err(refusal)
}

/// `broker` refused the call for the key's partition.
fn refused(broker: i32, refusal: StateRefusal) -> ShareError {
    if let StateRefusal::Unexpected { code } = refusal {
        tracing::warn!(
            broker,
            code,
            "share state call answered with an unexpected code"
        );
    }
    ShareError::StateRefused { broker, refusal }
}

/// An answer of `broker` that does not name the partition of `key`.
fn answer_without_partition(broker: i32, key: &StateKey) -> ShareError {
    tracing::warn!(
        broker,
        partition = key.partition,
        "share state answer without the partition"
    );
    ShareError::StateCall { broker }
}

/// Sends one request to `broker` over the one Kafka client and decodes its answer; any
/// failure to reach it or to read the answer (the client bounds the response frame by
/// [`RESPONSE_BYTES_MAX`] before reading it) is [`ShareError::StateCall`] (the caller retries
/// later). The whole call, connecting included, is bounded by [`CALL_TIMEOUT`].
async fn call<R: Request>(
    shard: &Shard,
    broker: i32,
    version: i16,
    request: &R,
) -> Result<R::Response, ShareError> {
    let api = api_of::<R>();
    let Some(address) = shard.shared.metadata.broker_address(broker) else {
        tracing::warn!(
            broker,
            ?api,
            "share state call to a broker of no known address"
        );
        return Err(ShareError::StateCall { broker });
    };
    let client_id = format!("shardlog-share-{}", shard.shared.config.node_id);
    let exchange = async {
        let connection =
            AsyncConnection::connect(&address, &client_id, CALL_TIMEOUT, BufferPool::new(0)).await;
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(error) => return Some(Err(error)),
        };
        let response = connection
            .call(request, version, RESPONSE_BYTES_MAX, CALL_TIMEOUT)
            .await;
        Some(response)
    };
    let timed = exchange.or(async {
        glommio::timer::sleep(CALL_TIMEOUT).await;
        None
    });
    match timed.await {
        Some(Ok(response)) => Ok(response),
        Some(Err(error)) => {
            tracing::warn!(broker, %error, "share state call failed");
            Err(ShareError::StateCall { broker })
        }
        None => {
            tracing::warn!(
                broker,
                ?api,
                "share state call: no answer within {CALL_TIMEOUT:?}"
            );
            Err(ShareError::StateCall { broker })
        }
    }
}
