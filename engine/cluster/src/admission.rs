//! Produce admission on a partition leader: whether a batch may be appended now, decided
//! without I/O from the replica state and the idempotent producers' recent sequences.
//!
//! The broker asks under the partition's append lock, with the header as it would be stored
//! (base offset and epoch assigned), so the answer cannot race another append; a request
//! accepted at one leader epoch is refused if the broker no longer leads at that epoch when
//! its batch's turn comes (it may have lost leadership and won it back at a newer epoch
//! meanwhile). The replication simulation asks the same question of the same code.

use super::producers::{ProducerStates, SequenceRefusal, Verdict};
use super::replica::ReplicaState;
use crate::batch::BatchHeader;

/// The decision on one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Append it (an idempotent producer's sequences are recorded as appended).
    Append,
    /// A retry of a batch already appended at this base offset: answer with it.
    Duplicate { base_offset: i64 },
    /// Refuse it.
    Refused(AdmissionRefusal),
}

/// Why a batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionRefusal {
    /// This broker no longer leads the partition at the epoch the request was accepted in.
    #[error("no longer the leader at the epoch the request was accepted in")]
    NotLeader,
    #[error(transparent)]
    Sequence(#[from] SequenceRefusal),
}

/// Decides on `stored`, a batch of a request accepted while this broker led at
/// `accepted_epoch`; records an idempotent producer's batch when it is to be appended.
pub fn admit(
    replica: &ReplicaState,
    accepted_epoch: i32,
    producers: &mut ProducerStates,
    stored: &BatchHeader,
) -> Admission {
    if !replica.leads_at(accepted_epoch) {
        return Admission::Refused(AdmissionRefusal::NotLeader);
    }
    if stored.producer_id < 0 {
        return Admission::Append;
    }
    match producers.check(
        stored.producer_id,
        stored.producer_epoch,
        stored.base_sequence,
        stored.records_count,
    ) {
        Verdict::Append => {
            producers.record(
                stored.producer_id,
                stored.producer_epoch,
                stored.base_sequence,
                stored.records_count,
                stored.base_offset,
            );
            Admission::Append
        }
        Verdict::Duplicate { base_offset } => Admission::Duplicate { base_offset },
        Verdict::Reject(refusal) => Admission::Refused(refusal.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PartitionState;

    fn leader_at(epoch: i32) -> ReplicaState {
        let mut replica = ReplicaState::new(1, 0);
        replica.update(
            &PartitionState {
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: epoch,
                partition_epoch: epoch,
                target_replicas: None,
            },
            0,
            0,
        );
        replica
    }

    fn batch(producer_id: i64, producer_epoch: i16, base_sequence: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 61,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch,
            base_sequence,
            records_count: 1,
        }
    }

    #[test]
    fn a_request_accepted_at_an_older_epoch_is_refused() {
        let mut producers = ProducerStates::default();
        let replica = leader_at(3);
        let plain = batch(-1, -1, -1);
        assert_eq!(
            admit(&replica, 3, &mut producers, &plain),
            Admission::Append
        );
        assert_eq!(
            admit(&replica, 2, &mut producers, &plain),
            Admission::Refused(AdmissionRefusal::NotLeader)
        );
        assert_eq!(
            admit(&ReplicaState::new(1, 0), 0, &mut producers, &plain),
            Admission::Refused(AdmissionRefusal::NotLeader)
        );
    }

    #[test]
    fn idempotent_batches_are_recorded_deduplicated_and_fenced() {
        let mut producers = ProducerStates::default();
        let replica = leader_at(0);
        let first = BatchHeader {
            base_offset: 7,
            ..batch(5, 1, 0)
        };
        assert_eq!(
            admit(&replica, 0, &mut producers, &first),
            Admission::Append
        );
        assert_eq!(
            admit(&replica, 0, &mut producers, &first),
            Admission::Duplicate { base_offset: 7 }
        );
        assert_eq!(
            admit(&replica, 0, &mut producers, &batch(5, 1, 5)),
            Admission::Refused(SequenceRefusal::OutOfOrder.into())
        );
        assert_eq!(
            admit(&replica, 0, &mut producers, &batch(5, 0, 1)),
            Admission::Refused(SequenceRefusal::StaleEpoch.into())
        );
    }
}
