//! Produce: append each partition's batches on the core that owns it, all partitions at once.
//!
//! acks=0 gets no response at all (the client does not read one). acks=1 answers when the
//! leader's append returned (when its log's durability policy says the batches are safe);
//! acks=-1 (all) waits further, until every in-sync replica holds them (the high watermark
//! passed them), within the request's timeout.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};

use super::super::partition::PartitionRecords;
use super::super::shard::{error_code, Shard};
use super::codes::KafkaCode;
use super::lookup::resolve_topic;
use shardlog_protocol::error_code::INVALID_REQUIRED_ACKS;

/// Appends the request's batches; `None` when the client asked for no response (acks=0).
/// `request_bytes` is the size of the request frame the records arrived in.
pub async fn produce(
    shard: &Rc<Shard>,
    request: ProduceRequest,
    version: i16,
    request_bytes: usize,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let timeout = std::time::Duration::from_millis(request.timeout_ms.max(0) as u64);
    let acks_valid = matches!(acks, -1..=1);
    let mut pending = Vec::new();
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let topic = resolve_topic(shard, &name, true).await;
        if let Err(code) = &topic {
            tracing::info!(topic = %name, error_code = code, "produce to an unknown topic");
        }
        for partition_data in topic_data.partition_data {
            let index = partition_data.index;
            let shard = Rc::clone(shard);
            let topic = topic.clone();
            let name = name.clone();
            pending.push(async move {
                let outcome = match (&topic, partition_data.records, acks_valid) {
                    (_, _, false) => Err(INVALID_REQUIRED_ACKS),
                    (Err(code), _, _) => Err(*code),
                    (Ok(_), None, _) => Err(error_code::INVALID_RECORD),
                    (Ok(topic), Some(records), true) => {
                        let records = PartitionRecords {
                            bytes: records,
                            request_bytes,
                        };
                        shard
                            .produce(topic.clone(), index, records, acks, timeout)
                            .await
                            .map_err(|error| error.code())
                    }
                };
                (name, index, outcome)
            });
        }
    }
    let results = join_all(pending).await;
    if acks == 0 {
        return None;
    }
    let mut response = ProduceResponse::default();
    for (name, index, outcome) in results {
        let mut partition = PartitionProduceResponse::default();
        partition.index = index;
        match outcome {
            Ok(produced) => {
                partition.base_offset = produced.base_offset;
                if version >= 5 {
                    partition.log_start_offset = produced.log_start_offset;
                }
            }
            // The log start stays at its default, -1, as for a refusal.
            Err(code) => {
                partition.error_code = code;
                partition.base_offset = -1;
            }
        }
        let topic_entry = match response
            .responses
            .iter_mut()
            .position(|entry| entry.name.0.as_str() == name)
        {
            Some(position) => &mut response.responses[position],
            None => {
                let mut entry = TopicProduceResponse::default();
                entry.name = kafka_protocol::messages::TopicName(
                    kafka_protocol::protocol::StrBytes::from_string(name.clone()),
                );
                response.responses.push(entry);
                response.responses.last_mut().expect("just pushed")
            }
        };
        topic_entry.partition_responses.push(partition);
    }
    Some(response)
}
