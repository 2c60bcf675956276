//! ListOffsets: the log start, the high watermark, the largest timestamp, or the first offset
//! at or after a timestamp, per partition.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use super::super::shard::Shard;
use super::codes::KafkaCode;
use super::lookup::{resolve_topic, topic_name};

pub async fn list_offsets(shard: &Rc<Shard>, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let resolved = resolve_topic(shard, &name, false).await;
        let mut topic_response = ListOffsetsTopicResponse::default();
        topic_response.name = topic_name(&name);
        for partition in topic.partitions {
            let mut entry = ListOffsetsPartitionResponse::default();
            entry.partition_index = partition.partition_index;
            match &resolved {
                Ok(found) => {
                    let outcome = shard
                        .list_offsets(
                            Arc::clone(found),
                            partition.partition_index,
                            partition.timestamp,
                        )
                        .await;
                    match outcome {
                        Ok(listed) => {
                            entry.offset = listed.offset;
                            entry.timestamp = listed.timestamp_ms;
                        }
                        Err(error) => {
                            entry.error_code = error.code();
                            entry.offset = -1;
                            entry.timestamp = -1;
                        }
                    }
                }
                Err(code) => {
                    entry.error_code = *code;
                    entry.offset = -1;
                }
            }
            topic_response.partitions.push(entry);
        }
        response.topics.push(topic_response);
    }
    response
}
