//! ListOffsets on the partition's owner core: the log start, the high watermark, the largest
//! timestamp, or the first offset at or after a timestamp.

use std::rc::Rc;
use std::sync::Arc;

use super::OffsetOutcome;
use crate::broker::api::codes::KafkaCode;
use crate::broker::metadata::Topic;
use crate::broker::shard::Shard;
use shardlog_protocol::error_code;

impl Shard {
    pub(in crate::broker) async fn list_offsets_here(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
        timestamp: i64,
    ) -> OffsetOutcome {
        let open = match self.partition(topic, partition).await {
            Ok(open) => open,
            Err(error) => return OffsetOutcome::failed(error.code()),
        };
        let high_watermark = {
            let replica = open.replica.borrow();
            if let Err(refusal) = replica.check_leader(-1) {
                return OffsetOutcome::failed(refusal.code());
            }
            replica.high_watermark()
        };
        let found = |offset| OffsetOutcome {
            error_code: error_code::NONE,
            offset,
            timestamp_ms: -1,
        };
        match timestamp {
            EARLIEST_TIMESTAMP => found(open.log.log_start_offset()),
            LATEST_TIMESTAMP | MAX_TIMESTAMP => found(high_watermark),
            target => match open.log.offset_for_timestamp(target).await {
                Ok(Some(matched)) => OffsetOutcome {
                    error_code: error_code::NONE,
                    offset: matched.offset,
                    timestamp_ms: matched.timestamp_ms,
                },
                Ok(None) => found(-1),
                Err(error) => OffsetOutcome::failed(error.code()),
            },
        }
    }
}

/// ListOffsets' special timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
