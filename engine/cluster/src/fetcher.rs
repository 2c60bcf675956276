//! A follower's connection to its partition leader: Kafka's Fetch with a replica id, and
//! OffsetForLeaderEpoch, spoken from inside the broker over a glommio socket.
//!
//! One connection per followed partition, owned by the task on the partition's core, one
//! request in flight at a time (a follower's fetch is a long poll; pipelining buys nothing).
//! The wire is the one Kafka client's glommio connection
//! (`shardlog_protocol::client::AsyncConnection`): every response frame is bounded before it
//! is read, so a broken or hostile peer gets the connection closed, never an allocation sized
//! from its bytes, and large responses are read into reused buffers, as the broker's requests
//! are (`shardlog_protocol::buffers`). This module says what to ask and reads the answers.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use shardlog_protocol::buffers::BufferPool;
use shardlog_protocol::client::{AsyncConnection, ClientError};
use shardlog_protocol::error_code::{self, ErrorCode};

use crate::follower::{EpochEndAnswer, FetchAnswer};

/// Fetch v12: the newest that names topics by name and is flexible; carries the follower's
/// current leader epoch, so a deposed leader refuses it.
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch v3: the first with a replica id.
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;

/// Response bytes beyond the records themselves (headers, names, offsets).
const RESPONSE_OVERHEAD_BYTES: usize = 64 << 10;

/// Longest an OffsetForLeaderEpoch request waits for its answer; a fetch waits its long
/// poll plus this.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    /// Reaching the leader, or its answer, failed (the client names the address and API).
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("broker {broker} is not registered")]
    UnknownBroker { broker: i32 },
}

/// One partition's answer to a replica fetch.
#[derive(Debug)]
pub struct FetchedPartition {
    /// What the leader's error code means to the follower ([`fetch_answer`]).
    pub answer: FetchAnswer,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole batches (a partial last batch is possible, as in Kafka; the caller drops it).
    pub records: Bytes,
}

/// How a follower reads the code its leader answered a replica fetch with: out of range
/// may mean a divergent log, anything else is a refusal to retry later.
pub fn fetch_answer(code: ErrorCode) -> FetchAnswer {
    match code {
        error_code::NONE => FetchAnswer::Records,
        error_code::OFFSET_OUT_OF_RANGE => FetchAnswer::OffsetOutOfRange,
        _ => FetchAnswer::Refused,
    }
}

/// How a follower reads its leader's OffsetForLeaderEpoch answer for one partition.
pub fn epoch_end_answer(code: ErrorCode, leader_epoch: i32, end_offset: i64) -> EpochEndAnswer {
    if code == error_code::NONE {
        EpochEndAnswer::Ended {
            leader_epoch,
            end_offset,
        }
    } else {
        EpochEndAnswer::Refused
    }
}

/// A connection to a leader.
pub struct LeaderConnection {
    connection: AsyncConnection,
    /// This broker's id, sent as the replica id.
    me: BrokerId,
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
        let connection = AsyncConnection::connect(
            address,
            &format!("shardlog-replica-{me}"),
            timeout,
            BufferPool::new(idle_buffer_bytes),
        )
        .await?;
        Ok(LeaderConnection {
            connection,
            me: BrokerId(me),
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
        let answer_within = max_wait + ANSWER_TIMEOUT;
        let response = self
            .connection
            .call(&request, FETCH_VERSION, frame_max, answer_within)
            .await?;
        if response.error_code != error_code::NONE {
            return Ok(FetchedPartition {
                answer: fetch_answer(response.error_code),
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
            .ok_or_else(|| self.partition_missing(ApiKey::Fetch, topic, partition))?;
        Ok(FetchedPartition {
            answer: fetch_answer(data.error_code),
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
    ) -> Result<EpochEndAnswer, FetcherError> {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(self.me)
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(current_epoch)
                    .with_leader_epoch(epoch)])]);
        let response = self
            .connection
            .call(
                &request,
                OFFSET_FOR_LEADER_EPOCH_VERSION,
                RESPONSE_OVERHEAD_BYTES,
                ANSWER_TIMEOUT,
            )
            .await?;
        let found = response
            .topics
            .into_iter()
            .flat_map(|topic| topic.partitions)
            .find(|result| result.partition == partition)
            .ok_or_else(|| {
                self.partition_missing(ApiKey::OffsetForLeaderEpoch, topic, partition)
            })?;
        Ok(epoch_end_answer(
            found.error_code,
            found.leader_epoch,
            found.end_offset,
        ))
    }

    fn partition_missing(&self, api: ApiKey, topic: &str, partition: i32) -> FetcherError {
        FetcherError::Client(ClientError::MissingInResponse {
            address: self.connection.address().to_string(),
            api,
            what: format!("partition {topic}/{partition}"),
        })
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}
