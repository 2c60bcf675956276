//! OffsetForLeaderEpoch: a follower asks where a leader epoch ended in the leader's log, to
//! cut any divergent tail before it fetches again (see `broker::replication`).

use std::rc::Rc;
use std::sync::Arc;

use futures_util::future::join_all;
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};

use super::super::shard::Shard;
use super::codes::KafkaCode;
use super::lookup::resolve_topic;
use shardlog_protocol::error_code;

pub async fn offset_for_leader_epoch(
    shard: &Rc<Shard>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let resolved = resolve_topic(shard, &name, false).await;
        let answers = join_all(topic.partitions.iter().map(|wanted| {
            let resolved = resolved.clone();
            async move {
                let outcome = match resolved {
                    Ok(topic) => shard
                        .epoch_end(
                            Arc::clone(&topic),
                            wanted.partition,
                            wanted.current_leader_epoch,
                            wanted.leader_epoch,
                        )
                        .await
                        .map_err(|error| error.code()),
                    Err(code) => Err(code),
                };
                let (code, leader_epoch, end_offset) = match outcome {
                    Ok(end) => (error_code::NONE, end.leader_epoch, end.end_offset),
                    Err(code) => (code, -1, -1),
                };
                EpochEndOffset::default()
                    .with_partition(wanted.partition)
                    .with_error_code(code)
                    .with_leader_epoch(leader_epoch)
                    .with_end_offset(end_offset)
            }
        }))
        .await;
        response.topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(answers),
        );
    }
    response
}
