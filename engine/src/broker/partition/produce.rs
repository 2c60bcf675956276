//! Produce on the partition's owner core: check every batch once, append them in order under
//! the idempotent-producer check, and for acks=all wait until the ISR holds them.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::{PartitionRecords, ProduceOutcome};
use crate::batch;
use crate::broker::api::codes::KafkaCode;
use crate::broker::metadata::Topic;
use crate::broker::shard::{Partition, Shard};
use crate::cluster::admission::{self, Admission};
use crate::cluster::leader::{self, ProduceRefusal};
use crate::error::LogError;
use shardlog_protocol::error_code;

impl Shard {
    pub(crate) async fn produce_here(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
        records: PartitionRecords,
        acks: i16,
        timeout: std::time::Duration,
    ) -> ProduceOutcome {
        let open = match self.partition(topic, partition).await {
            Ok(open) => open,
            Err(error) => return ProduceOutcome::failed(error.code()),
        };
        let min_insync = self.shared.config.min_insync_replicas;
        let accepted = leader::accept_produce(&open.replica.borrow(), acks == ACKS_ALL, min_insync);
        let leader_epoch = match accepted {
            Ok(leader_epoch) => leader_epoch,
            Err(refusal) => {
                if refusal == ProduceRefusal::NotEnoughReplicas {
                    let isr_size = open.replica.borrow().isr().len();
                    tracing::info!(topic = %topic.name, partition, isr_size, min_insync, "too few in-sync replicas");
                }
                return ProduceOutcome::failed(refusal.code());
            }
        };
        // Validate every batch before appending any, so a rejected request leaves nothing
        // behind (a client retrying it would otherwise duplicate its valid batches).
        // Each batch's CRC is checked here, once: the log takes the checked batches as they are.
        let found: Result<Vec<_>, _> = batch::valid_batches(
            &records.bytes,
            self.shared.config.max_batch_bytes,
            |range| records.bytes.slice(range),
        )
        .collect();
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                tracing::info!(topic = %topic.name, partition, %error, "rejected produce");
                return ProduceOutcome::failed(LogError::InvalidBatch(error).code());
            }
        };
        let mut first_base_offset = None;
        // The last offset the producer must see replicated before acks=all is answered.
        let mut last_offset = -1;
        for valid in found {
            let header = *valid.header();
            let batch = valid.bytes().clone();
            let decided = std::cell::Cell::new(Admission::Append);
            // Decided under the append lock (`cluster::admission`): leadership may have moved,
            // and come back at a new epoch, while this request waited.
            let admit = |stored: &batch::BatchHeader| {
                let admission = admission::admit(
                    &open.replica.borrow(),
                    leader_epoch,
                    &mut open.producers.borrow_mut(),
                    stored,
                );
                decided.set(admission);
                admission == Admission::Append
            };
            match open
                .log
                .append_valid_with(&valid, leader_epoch, admit)
                .await
            {
                Ok(Some(info)) => {
                    first_base_offset.get_or_insert(info.base_offset);
                    last_offset = info.last_offset;
                    if let Some(tail) = &open.tail {
                        let head = batch::patched_head(&batch, info.base_offset, leader_epoch);
                        let rest = batch.slice(batch::PATCHED_HEAD_BYTES..);
                        let rest = if records.may_share_request_buffer() {
                            rest
                        } else {
                            Bytes::copy_from_slice(&rest)
                        };
                        tail.borrow_mut().push(
                            info.base_offset,
                            info.last_offset,
                            Bytes::copy_from_slice(&head),
                            rest,
                        );
                    }
                    open.replica
                        .borrow_mut()
                        .appended(open.log.log_end_offset());
                    open.publish_progress();
                }
                Ok(None) => match decided.get() {
                    Admission::Duplicate { base_offset } => {
                        first_base_offset.get_or_insert(base_offset);
                        last_offset = last_offset.max(base_offset);
                    }
                    Admission::Refused(refusal) => {
                        tracing::info!(
                            topic = %topic.name,
                            partition,
                            %refusal,
                            producer_id = header.producer_id,
                            base_sequence = header.base_sequence,
                            "refused a batch"
                        );
                        return ProduceOutcome::failed(refusal.code());
                    }
                    Admission::Append => {
                        return ProduceOutcome::failed(error_code::UNKNOWN_SERVER_ERROR)
                    }
                },
                Err(error) => {
                    tracing::warn!(topic = %topic.name, partition, %error, "append failed");
                    return ProduceOutcome::failed(error.code());
                }
            }
        }
        let Some(base_offset) = first_base_offset else {
            return ProduceOutcome::failed(error_code::INVALID_RECORD);
        };
        if acks == ACKS_ALL {
            let replicated = self
                .await_replication(&open, last_offset, leader_epoch, timeout)
                .await;
            if let Err(refusal) = replicated {
                return ProduceOutcome::failed(refusal.code());
            }
        }
        ProduceOutcome {
            error_code: error_code::NONE,
            base_offset,
            log_start_offset: open.log.log_start_offset(),
        }
    }

    /// Waits until the high watermark passes `last_offset` while this broker still leads at
    /// `leader_epoch`: every in-sync replica holds the records. Kafka's answers otherwise:
    /// NOT_LEADER_OR_FOLLOWER after a leader change, REQUEST_TIMED_OUT after `timeout`,
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank below the minimum meanwhile.
    async fn await_replication(
        &self,
        open: &Partition,
        last_offset: i64,
        leader_epoch: i32,
        timeout: std::time::Duration,
    ) -> Result<(), AwaitError> {
        let deadline = std::time::Instant::now() + timeout;
        let min_insync = self.shared.config.min_insync_replicas;
        loop {
            let listener = open.appended.listen();
            let verdict = leader::replication_verdict(
                &open.replica.borrow(),
                leader_epoch,
                last_offset,
                min_insync,
            );
            if let Some(verdict) = verdict {
                return verdict.map_err(AwaitError::Refused);
            }
            let now = std::time::Instant::now();
            if now >= deadline || self.shared.is_shutting_down() {
                return Err(AwaitError::TimedOut);
            }
            futures_lite::FutureExt::or(
                async {
                    listener.await;
                },
                glommio::timer::sleep(deadline - now),
            )
            .await;
        }
    }
}

/// Produce's acks value that waits for every in-sync replica.
const ACKS_ALL: i16 = -1;

/// Why an `acks=all` produce was not answered with success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AwaitError {
    Refused(ProduceRefusal),
    /// The request's timeout passed first (or the broker is shutting down).
    TimedOut,
}
