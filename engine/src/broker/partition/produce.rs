//! Produce on the partition's owner core: check every batch once, append them in order under
//! the idempotent-producer check, and for acks=all wait until the ISR holds them.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::{AwaitError, PartitionRecords, ProduceError, ProduceOutcome, Produced};
use crate::batch;
use crate::broker::metadata::Topic;
use crate::broker::shard::{Partition, Shard};
use crate::cluster::admission::{self, Admission};
use crate::cluster::leader::{self, ProduceRefusal};

impl Shard {
    pub(crate) async fn produce_here(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
        records: PartitionRecords,
        acks: i16,
        timeout: std::time::Duration,
    ) -> ProduceOutcome {
        let open = self.partition(topic, partition).await?;
        let min_insync = self.shared.config.min_insync_replicas;
        let accepted = leader::accept_produce(&open.replica.borrow(), acks == ACKS_ALL, min_insync);
        let leader_epoch = match accepted {
            Ok(leader_epoch) => leader_epoch,
            Err(refusal) => {
                if refusal == ProduceRefusal::NotEnoughReplicas {
                    let isr_size = open.replica.borrow().isr().len();
                    tracing::info!(topic = %topic.name, partition, isr_size, min_insync, "too few in-sync replicas");
                }
                return Err(refusal.into());
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
                return Err(error.into());
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
                        return Err(ProduceError::Admission {
                            refusal,
                            producer_id: header.producer_id,
                            base_sequence: header.base_sequence,
                        });
                    }
                    Admission::Append => return Err(ProduceError::AppendDeclined),
                },
                Err(error) => {
                    tracing::warn!(topic = %topic.name, partition, %error, "append failed");
                    return Err(error.into());
                }
            }
        }
        let Some(base_offset) = first_base_offset else {
            return Err(ProduceError::NoBatches);
        };
        if acks == ACKS_ALL {
            self.await_replication(&open, last_offset, leader_epoch, timeout)
                .await?;
        }
        Ok(Produced {
            base_offset,
            log_start_offset: open.log.log_start_offset(),
        })
    }

    /// Waits until the high watermark passes `last_offset` while this broker still leads at
    /// `leader_epoch`: every in-sync replica holds the records. Otherwise refused after a
    /// leader change or when the ISR shrank below the minimum meanwhile, or timed out after
    /// `timeout`.
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
