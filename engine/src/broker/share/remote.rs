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
//! A failed call is [`ShareError::StateCall`] (the caller retries later); a partition the
//! other broker refused is [`ShareError::StateRefused`], its code read back into a
//! [`StateRefusal`] by `broker::api::codes::state_answer`, where codes are made and read.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::read_share_group_state_request::{
    self, ReadShareGroupStateRequest, ReadStateData,
};
use kafka_protocol::messages::read_share_group_state_response::ReadShareGroupStateResponse;
use kafka_protocol::messages::write_share_group_state_request::{
    self, WriteShareGroupStateRequest, WriteStateData,
};
use kafka_protocol::messages::write_share_group_state_response::WriteShareGroupStateResponse;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::record::{DurableState, Run, Snapshot, StateKey};
use super::{ShareError, StateRefusal};
use crate::broker::api::codes::state_answer;
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
    let response: ReadShareGroupStateResponse = call(
        shard,
        broker,
        ApiKey::ReadShareGroupState,
        READ_VERSION,
        &request,
    )
    .await?;
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
    let response: WriteShareGroupStateResponse = call(
        shard,
        broker,
        ApiKey::WriteShareGroupState,
        WRITE_VERSION,
        &request,
    )
    .await?;
    let code = response
        .results
        .iter()
        .flat_map(|result| result.partitions.iter())
        .find(|answer| answer.partition == key.partition)
        .ok_or_else(|| answer_without_partition(broker, key))?
        .error_code;
    state_answer(code).map_err(|refusal| refused(broker, refusal))
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

/// Sends one request to `broker` and decodes its answer; any failure to reach it or to read
/// the answer is [`ShareError::StateCall`] (the caller retries later).
async fn call<Req: Encodable, Resp: Decodable>(
    shard: &Shard,
    broker: i32,
    api_key: ApiKey,
    version: i16,
    request: &Req,
) -> Result<Resp, ShareError> {
    let Some(address) = shard.shared.metadata.broker_address(broker) else {
        tracing::warn!(
            broker,
            ?api_key,
            "share state call to a broker of no known address"
        );
        return Err(ShareError::StateCall { broker });
    };
    let node_id = shard.shared.config.node_id;
    let exchange = async {
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_string(format!(
                "shardlog-share-{node_id}"
            ))));
        header
            .encode(&mut frame, api_key.request_header_version(version))
            .map_err(|error| format!("encode header: {error}"))?;
        request
            .encode(&mut frame, version)
            .map_err(|error| format!("encode request: {error}"))?;
        let size = i32::try_from(frame.len() - 4).map_err(|_| "request too large".to_string())?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let mut stream = TcpStream::connect(address.as_str())
            .await
            .map_err(|error| format!("connect {address}: {error}"))?;
        stream
            .write_all(&frame)
            .await
            .map_err(|error| format!("send: {error}"))?;
        let mut size = [0u8; 4];
        stream
            .read_exact(&mut size)
            .await
            .map_err(|error| format!("read size: {error}"))?;
        let size = usize::try_from(i32::from_be_bytes(size)).unwrap_or(usize::MAX);
        if size > RESPONSE_BYTES_MAX {
            return Err(format!("response of {size} bytes"));
        }
        let mut body = vec![0u8; size];
        stream
            .read_exact(&mut body)
            .await
            .map_err(|error| format!("read body: {error}"))?;
        let mut body = bytes::Bytes::from(body);
        ResponseHeader::decode(&mut body, api_key.response_header_version(version))
            .map_err(|error| format!("decode header: {error}"))?;
        let response = Resp::decode(&mut body, version)
            .map_err(|error| format!("decode response: {error}"))?;
        if body.has_remaining() {
            return Err(format!("{} bytes after the response", body.remaining()));
        }
        Ok(response)
    };
    let timed = exchange.or(async {
        glommio::timer::sleep(CALL_TIMEOUT).await;
        Err(format!("no answer within {CALL_TIMEOUT:?}"))
    });
    timed.await.map_err(|reason: String| {
        tracing::warn!(broker, ?api_key, %reason, "share state call failed");
        ShareError::StateCall { broker }
    })
}
