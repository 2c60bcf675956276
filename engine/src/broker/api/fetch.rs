//! Fetch: read every requested partition on its owner core, wait for `min_bytes` up to
//! `max_wait_ms` (long polling), and answer with file regions sent by `sendfile`.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use futures_util::future::{join_all, select_all};
use kafka_protocol::messages::fetch_request::FetchRequest;

use super::super::chunks::Records;
use super::super::fetch_response::{
    encode_fetch_response, FetchPartition, FetchResponseBody, FetchTopic,
};
use super::super::metadata::Topic;
use super::super::partition::{FetchError, Fetched};
use super::super::replication::Reader;
use super::super::shard::{error_code, Shard};
use super::codes::KafkaCode;
use super::lookup::resolve_topic;
use super::Reply;
use shardlog_protocol::error_code::ErrorCode;

struct Wanted {
    topic_name: String,
    topic: Result<Arc<Topic>, i16>,
    partition: i32,
    offset: i64,
    max_bytes: u64,
    reader: Reader,
}

pub async fn fetch(
    shard: &Rc<Shard>,
    request: FetchRequest,
    version: i16,
    correlation_id: i32,
) -> Reply {
    let config = &shard.shared.config;
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64)
        .min(Duration::from_millis(config.fetch_wait_max_ms));
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as u64;
    let max_bytes = if request.max_bytes > 0 {
        request.max_bytes as u64
    } else {
        u64::MAX
    };
    // Brokers fetching as followers name themselves (-1 is a consumer).
    let replica = (request.replica_id.0 >= 0).then_some(request.replica_id.0);
    let mut wanted = Vec::new();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let resolved = resolve_topic(shard, &name, false).await;
        if let Err(code) = &resolved {
            tracing::info!(topic = %name, error_code = code, "fetch from an unknown topic");
        }
        for partition in topic.partitions {
            wanted.push(Wanted {
                topic_name: name.clone(),
                topic: resolved.clone(),
                partition: partition.partition,
                offset: partition.fetch_offset,
                // Kafka's two limits: no partition gives more than its own limit, nor more
                // than the whole response may hold (its first batch excepted, below).
                max_bytes: (partition.partition_max_bytes.max(0) as u64).min(max_bytes),
                reader: Reader {
                    replica,
                    current_leader_epoch: partition.current_leader_epoch,
                },
            });
        }
    }

    let outcomes = loop {
        let outcomes = fetch_once(shard, &wanted).await;
        let total: u64 = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok())
            .map(|fetched| fetched.records.len())
            .sum();
        let failed = outcomes.iter().any(Result::is_err);
        let now = Instant::now();
        if total >= min_bytes.max(1) || failed || now >= deadline || shard.shared.is_shutting_down()
        {
            break outcomes;
        }
        // Register first, then re-check the end offsets, so an append in between wakes us.
        let mut listeners = Vec::new();
        let mut moved = false;
        for (outcome, wanted) in outcomes.iter().zip(&wanted) {
            if let Ok(fetched) = outcome {
                listeners.push(fetched.appended.listen());
                moved |= fetched.end_offset.load(Ordering::Acquire) > wanted.offset;
            }
        }
        if moved {
            continue;
        }
        if listeners.is_empty() {
            glommio::timer::sleep(deadline - now).await;
            continue;
        }
        let woken = async {
            select_all(listeners).await;
        };
        woken.or(glommio::timer::sleep(deadline - now)).await;
    };

    // Respect the response's max_bytes: keep partitions in order until the budget is spent,
    // but always the first non-empty one, as Kafka does, so a consumer can progress.
    let mut budget = max_bytes;
    let mut any_records = false;
    let mut body = FetchResponseBody {
        throttle_time_ms: 0,
        error_code: error_code::NONE,
        session_id: 0,
        topics: Vec::new(),
    };
    for (outcome, wanted) in outcomes.into_iter().zip(wanted) {
        let (code, high_watermark, log_start_offset, records) = match outcome {
            Ok(fetched) => (
                error_code::NONE,
                fetched.high_watermark,
                fetched.log_start_offset,
                fetched.records,
            ),
            Err(Unfetched::Topic(code)) => (code, -1, -1, Records::default()),
            // A read that failed part way still sends what it read, with its code.
            Err(Unfetched::Partition(error)) => {
                let (high_watermark, log_start_offset) = error.offsets().unwrap_or((-1, -1));
                (
                    error.code(),
                    high_watermark,
                    log_start_offset,
                    error.into_records(),
                )
            }
        };
        let size = records.len();
        let records = if size == 0 || (any_records && size > budget) {
            Records::default()
        } else {
            any_records = true;
            budget = budget.saturating_sub(size);
            records
        };
        let partition = FetchPartition {
            partition_index: wanted.partition,
            error_code: code,
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset,
            records: Some(records),
        };
        match body.topics.last_mut() {
            Some(topic) if topic.name == wanted.topic_name => topic.partitions.push(partition),
            _ => body.topics.push(FetchTopic {
                name: wanted.topic_name,
                partitions: vec![partition],
            }),
        }
    }
    Reply::Send(encode_fetch_response(version, correlation_id, &body))
}

/// Why a wanted partition read nothing this pass.
enum Unfetched {
    /// Its topic was not found (the code the lookup answered).
    Topic(ErrorCode),
    /// The partition refused the fetch, or its read failed.
    Partition(FetchError),
}

/// One pass over every wanted partition, all owners at once.
async fn fetch_once(shard: &Rc<Shard>, wanted: &[Wanted]) -> Vec<Result<Fetched, Unfetched>> {
    join_all(wanted.iter().map(|wanted| async move {
        match &wanted.topic {
            Ok(topic) => shard
                .fetch(
                    Arc::clone(topic),
                    wanted.partition,
                    wanted.offset,
                    wanted.max_bytes,
                    wanted.reader,
                )
                .await
                .map_err(Unfetched::Partition),
            Err(code) => Err(Unfetched::Topic(*code)),
        }
    }))
    .await
}
