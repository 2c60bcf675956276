//! A follower's connection to its partition leader: Kafka's Fetch with a replica id, and
//! OffsetForLeaderEpoch, spoken from inside the broker over a glommio socket.
//!
//! One connection per followed partition, owned by the task on the partition's core, one
//! request in flight at a time (a follower's fetch is a long poll; pipelining buys nothing).
//! Every response frame is bounded before it is read: a broken or hostile peer gets the
//! connection closed, never an allocation sized from its bytes. Large responses are read
//! into reused buffers, as the broker's requests are (`shardlog_protocol::buffers`).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchResponse, OffsetForLeaderEpochResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use shardlog_protocol::buffers::BufferPool;

/// Fetch v12: the newest that names topics by name and is flexible; carries the follower's
/// current leader epoch, so a deposed leader refuses it.
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch v3: the first with a replica id.
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;

/// Response bytes beyond the records themselves (headers, names, offsets).
const RESPONSE_OVERHEAD_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error("cannot reach leader {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connection to the leader failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("leader did not answer within {0:?}")]
    Timeout(Duration),
    #[error("leader's response is malformed: {0}")]
    Malformed(String),
}

/// One partition's answer to a replica fetch.
#[derive(Debug)]
pub struct FetchedPartition {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole batches (a partial last batch is possible, as in Kafka; the caller drops it).
    pub records: Bytes,
}

/// What the leader said about a leader epoch.
#[derive(Debug, Clone, Copy)]
pub struct EpochEnd {
    pub error_code: i16,
    pub leader_epoch: i32,
    pub end_offset: i64,
}

/// A connection to a leader.
pub struct LeaderConnection {
    stream: TcpStream,
    /// This broker's id, sent as the replica id.
    me: BrokerId,
    correlation_id: i32,
    client_id: StrBytes,
    /// Response buffers, used again once the batches in them have been appended.
    buffers: Arc<BufferPool>,
}

impl LeaderConnection {
    /// Connects to the leader at `address`; at most `idle_buffer_bytes` of response buffers
    /// are kept for reuse (one response's worth: a follower has one fetch in flight).
    pub async fn connect(
        address: &str,
        me: i32,
        timeout: Duration,
        idle_buffer_bytes: usize,
    ) -> Result<LeaderConnection, FetcherError> {
        let connecting = async {
            TcpStream::connect(address)
                .await
                .map_err(|error| FetcherError::Connect {
                    address: address.to_string(),
                    source: std::io::Error::other(error.to_string()),
                })
        };
        let stream = connecting
            .or(async {
                glommio::timer::sleep(timeout).await;
                Err(FetcherError::Timeout(timeout))
            })
            .await?;
        stream
            .set_nodelay(true)
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        Ok(LeaderConnection {
            stream,
            me: BrokerId(me),
            correlation_id: 0,
            client_id: StrBytes::from_string(format!("shardlog-replica-{me}")),
            buffers: BufferPool::new(idle_buffer_bytes),
        })
    }

    /// Fetches one partition from `offset`, as the follower at `leader_epoch`. The leader
    /// holds the request up to `max_wait` when it has nothing new.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        leader_epoch: i32,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<FetchedPartition, FetcherError> {
        let request = FetchRequest::default()
            .with_replica_id(self.me)
            .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(leader_epoch)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(max_bytes)])]);
        let frame_max = max_bytes.max(0) as usize + RESPONSE_OVERHEAD_BYTES;
        let answer_within = max_wait + Duration::from_secs(10);
        let response: FetchResponse = self
            .call(
                ApiKey::Fetch,
                FETCH_VERSION,
                &request,
                frame_max,
                answer_within,
            )
            .await?;
        if response.error_code != 0 {
            return Ok(FetchedPartition {
                error_code: response.error_code,
                high_watermark: -1,
                log_start_offset: -1,
                records: Bytes::new(),
            });
        }
        let data = response
            .responses
            .into_iter()
            .flat_map(|topic| topic.partitions)
            .find(|data| data.partition_index == partition)
            .ok_or_else(|| FetcherError::Malformed("the partition is missing".into()))?;
        Ok(FetchedPartition {
            error_code: data.error_code,
            high_watermark: data.high_watermark,
            log_start_offset: data.log_start_offset,
            records: data.records.unwrap_or_default(),
        })
    }

    /// Asks where `epoch` ended in the leader's log (the leader itself being at
    /// `current_epoch`).
    pub async fn end_offset_for_epoch(
        &mut self,
        topic: &str,
        partition: i32,
        current_epoch: i32,
        epoch: i32,
    ) -> Result<EpochEnd, FetcherError> {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(self.me)
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(current_epoch)
                    .with_leader_epoch(epoch)])]);
        let response: OffsetForLeaderEpochResponse = self
            .call(
                ApiKey::OffsetForLeaderEpoch,
                OFFSET_FOR_LEADER_EPOCH_VERSION,
                &request,
                RESPONSE_OVERHEAD_BYTES,
                Duration::from_secs(10),
            )
            .await?;
        let found = response
            .topics
            .into_iter()
            .flat_map(|topic| topic.partitions)
            .find(|result| result.partition == partition)
            .ok_or_else(|| FetcherError::Malformed("the partition is missing".into()))?;
        Ok(EpochEnd {
            error_code: found.error_code,
            leader_epoch: found.leader_epoch,
            end_offset: found.end_offset,
        })
    }

    /// Sends one request and reads its response, refusing a frame above `frame_max` bytes.
    async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Q,
        frame_max: usize,
        timeout: Duration,
    ) -> Result<R, FetcherError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        header
            .encode(&mut frame, api_key.request_header_version(version))
            .map_err(|error| FetcherError::Malformed(format!("encoding a request: {error}")))?;
        request
            .encode(&mut frame, version)
            .map_err(|error| FetcherError::Malformed(format!("encoding a request: {error}")))?;
        let length = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&length.to_be_bytes());

        let exchange = async {
            self.stream.write_all(&frame).await?;
            let mut prefix = [0u8; 4];
            self.stream.read_exact(&mut prefix).await?;
            let length = i32::from_be_bytes(prefix);
            if length < 4 || length as usize > frame_max {
                return Err(FetcherError::Malformed(format!(
                    "response frame of {length} bytes (at most {frame_max} expected)"
                )));
            }
            Ok(self
                .buffers
                .read_exact(&mut self.stream, length as usize)
                .await?)
        };
        let mut body = exchange
            .or(async {
                glommio::timer::sleep(timeout).await;
                Err(FetcherError::Timeout(timeout))
            })
            .await?;
        let header = ResponseHeader::decode(&mut body, api_key.response_header_version(version))
            .map_err(|error| FetcherError::Malformed(format!("response header: {error}")))?;
        if header.correlation_id != correlation_id {
            return Err(FetcherError::Malformed(format!(
                "correlation id {} answers request {correlation_id}",
                header.correlation_id
            )));
        }
        let response = R::decode(&mut body, version)
            .map_err(|error| FetcherError::Malformed(format!("{api_key:?} response: {error}")))?;
        if body.has_remaining() {
            return Err(FetcherError::Malformed(format!(
                "{} bytes after the {api_key:?} response",
                body.remaining()
            )));
        }
        Ok(response)
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}
