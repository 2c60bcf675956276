//! ListOffsets on the partition's owner core: the log start, the high watermark, the largest
//! timestamp, or the first offset at or after a timestamp.

use std::rc::Rc;
use std::sync::Arc;

use super::{ListOffsetsOutcome, ListedOffset};
use crate::broker::metadata::Topic;
use crate::broker::shard::Shard;

impl Shard {
    pub(in crate::broker) async fn list_offsets_here(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
        timestamp: i64,
    ) -> ListOffsetsOutcome {
        let open = self.partition(topic, partition).await?;
        let high_watermark = {
            let replica = open.replica.borrow();
            replica.check_leader(-1)?;
            replica.high_watermark()
        };
        let found = |offset| ListedOffset {
            offset,
            timestamp_ms: -1,
        };
        let listed = match timestamp {
            EARLIEST_TIMESTAMP => found(open.log.log_start_offset()),
            LATEST_TIMESTAMP | MAX_TIMESTAMP => found(high_watermark),
            target => match open.log.offset_for_timestamp(target).await? {
                Some(matched) => ListedOffset {
                    offset: matched.offset,
                    timestamp_ms: matched.timestamp_ms,
                },
                None => found(-1),
            },
        };
        Ok(listed)
    }
}

/// ListOffsets' special timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
