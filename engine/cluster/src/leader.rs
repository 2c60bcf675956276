//! A leader's side of replication, as decisions without I/O: whether a produce may start,
//! when an `acks=all` produce may be answered, how a replica fetch or an
//! OffsetForLeaderEpoch is answered, and which ISR change to propose.
//!
//! The broker (`broker/partition/`, `broker/replication.rs`) and the replication simulation
//! call the same functions, so the simulation checks the rules that ship. The state they
//! read and move is [`ReplicaState`] (watermark, ISR) and [`LeaderEpochCache`].

use super::epochs::LeaderEpochCache;
use super::replica::{LeaderRefusal, ReplicaState, Role};
use super::state::{BrokerId, Refusal};

/// Why a produce is refused, or answered with an error after its append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProduceRefusal {
    /// This broker does not lead the partition (any more, or at the request's epoch).
    #[error("not the leader")]
    NotLeader,
    /// `acks=all` with fewer in-sync replicas than the minimum: nothing was appended.
    #[error("fewer in-sync replicas than the minimum")]
    NotEnoughReplicas,
    /// The records are replicated, but the ISR shrank below the minimum meanwhile.
    #[error("the in-sync replicas fell below the minimum after the append")]
    NotEnoughReplicasAfterAppend,
}

/// Whether a produce may start here: returns the leader epoch its batches are appended at.
/// `acks_all` produces also need at least `min_insync` in-sync replicas.
pub fn accept_produce(
    replica: &ReplicaState,
    acks_all: bool,
    min_insync: usize,
) -> Result<i32, ProduceRefusal> {
    if replica.role() != Role::Leader {
        return Err(ProduceRefusal::NotLeader);
    }
    if acks_all && replica.isr().len() < min_insync {
        return Err(ProduceRefusal::NotEnoughReplicas);
    }
    Ok(replica.leader_epoch())
}

/// The answer to an `acks=all` produce whose last record is `last_offset`, appended while
/// leading at `leader_epoch`: `None` while the high watermark has not passed it yet (keep
/// waiting, until the request's timeout), `Some(Ok)` once every in-sync replica holds it.
pub fn replication_verdict(
    replica: &ReplicaState,
    leader_epoch: i32,
    last_offset: i64,
    min_insync: usize,
) -> Option<Result<(), ProduceRefusal>> {
    if !replica.leads_at(leader_epoch) {
        return Some(Err(ProduceRefusal::NotLeader));
    }
    if replica.high_watermark() <= last_offset {
        return None;
    }
    if replica.isr().len() < min_insync {
        return Some(Err(ProduceRefusal::NotEnoughReplicasAfterAppend));
    }
    Some(Ok(()))
}

/// How a fetch is served, once the leader accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPlan {
    /// The watermark to put in the answer.
    pub high_watermark: i64,
    /// Whether this fetch moved the watermark (waiting produces and consumers may go on).
    pub watermark_moved: bool,
    /// Records below this offset may be returned: the log end for a follower, the high
    /// watermark for a consumer.
    pub upper_offset: i64,
    /// The offset is outside the log: answer OFFSET_OUT_OF_RANGE.
    pub out_of_range: bool,
}

/// Accepts a fetch from `offset` by `follower` (`None` for a consumer) that believes the
/// leader epoch is `current_leader_epoch` (-1: no belief). A follower fetching from an
/// offset holds everything below it, which may move the high watermark.
pub fn serve_fetch(
    replica: &mut ReplicaState,
    follower: Option<BrokerId>,
    current_leader_epoch: i32,
    offset: i64,
    (log_start, log_end): (i64, i64),
    now_ms: u64,
) -> Result<FetchPlan, LeaderRefusal> {
    replica.check_leader(current_leader_epoch)?;
    let watermark_moved = follower
        .is_some_and(|follower| replica.follower_fetched(follower, offset, log_end, now_ms));
    let high_watermark = replica.high_watermark();
    Ok(FetchPlan {
        high_watermark,
        watermark_moved,
        upper_offset: if follower.is_some() {
            log_end
        } else {
            high_watermark
        },
        out_of_range: offset < log_start || offset > log_end,
    })
}

/// OffsetForLeaderEpoch on the leader: the largest epoch not above `epoch` and where it
/// ended in this log (see [`LeaderEpochCache::end_offset_for`]).
pub fn epoch_end(
    replica: &ReplicaState,
    epochs: &LeaderEpochCache,
    current_leader_epoch: i32,
    epoch: i32,
    log_end: i64,
) -> Result<(i32, i64), LeaderRefusal> {
    replica.check_leader(current_leader_epoch)?;
    Ok(epochs.end_offset_for(epoch, log_end))
}

/// The ISR change to propose now, with the partition epoch it is proposed at: the pending
/// one again if its outcome is unknown, else a new one if the ISR should change.
/// `epoch_start` is where the current leader epoch began in this log (a joining replica
/// must have reached it).
pub fn isr_proposal(
    replica: &mut ReplicaState,
    epochs: &LeaderEpochCache,
    now_ms: u64,
    lag_max_ms: u64,
) -> Option<(Vec<BrokerId>, i32)> {
    if let Some((isr, partition_epoch)) = replica.pending_isr() {
        return Some((isr.to_vec(), partition_epoch));
    }
    let epoch_start = epochs
        .entries()
        .last()
        .map_or(0, |entry| entry.start_offset);
    let isr = replica.wanted_isr(epoch_start, now_ms, lag_max_ms)?;
    let partition_epoch = replica.proposing_isr(isr.clone());
    Some((isr, partition_epoch))
}

/// The quorum refused an ISR proposal. A stale partition epoch may be the answer to a
/// resend of a change the quorum already applied: the proposal stays pending (the
/// watermark keeps waiting for its members) until the metadata settles it, as Kafka waits
/// for metadata on INVALID_UPDATE_VERSION. Any other refusal changed nothing: drop it, and
/// a later check may propose again.
pub fn isr_proposal_refused(replica: &mut ReplicaState, refusal: &Refusal) {
    if *refusal != Refusal::StaleIsrChange {
        replica.isr_proposal_failed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PartitionState;

    fn leader(isr: Vec<BrokerId>) -> ReplicaState {
        let mut replica = ReplicaState::new(1, 0);
        replica.update(
            &PartitionState {
                replicas: vec![1, 2, 3],
                isr,
                leader: 1,
                leader_epoch: 4,
                partition_epoch: 7,
                target_replicas: None,
            },
            10,
            0,
        );
        replica
    }

    #[test]
    fn a_produce_starts_only_on_the_leader_and_with_enough_replicas_for_acks_all() {
        let replica = leader(vec![1]);
        assert_eq!(accept_produce(&replica, false, 2), Ok(4));
        assert_eq!(
            accept_produce(&replica, true, 2),
            Err(ProduceRefusal::NotEnoughReplicas)
        );
        let follower = ReplicaState::new(1, 0);
        assert_eq!(
            accept_produce(&follower, false, 1),
            Err(ProduceRefusal::NotLeader)
        );
    }

    #[test]
    fn acks_all_is_answered_once_the_watermark_passes_the_last_record() {
        let mut replica = leader(vec![1, 2]);
        assert_eq!(replication_verdict(&replica, 4, 9, 2), None);
        // Follower 2 fetches from the log end: it holds everything.
        let plan = serve_fetch(&mut replica, Some(2), 4, 10, (0, 10), 5).expect("leader");
        assert!(plan.watermark_moved);
        assert_eq!(plan.upper_offset, 10);
        assert_eq!(replication_verdict(&replica, 4, 9, 2), Some(Ok(())));
        assert_eq!(
            replication_verdict(&replica, 3, 9, 2),
            Some(Err(ProduceRefusal::NotLeader)),
            "appended at an older epoch"
        );
    }

    #[test]
    fn a_consumer_reads_below_the_watermark_and_a_stale_epoch_is_refused() {
        let mut replica = leader(vec![1, 2]);
        let plan = serve_fetch(&mut replica, None, -1, 11, (0, 10), 5).expect("leader");
        assert_eq!(plan.upper_offset, 0);
        assert!(plan.out_of_range);
        assert_eq!(
            serve_fetch(&mut replica, Some(2), 3, 0, (0, 10), 5),
            Err(LeaderRefusal::FencedEpoch)
        );
    }

    #[test]
    fn a_stale_refusal_keeps_the_proposal_pending_and_others_drop_it() {
        let disk = crate::storage::SimDisk::with_alignment(1, 1);
        let epochs = LeaderEpochCache::open(
            crate::storage::Storage::Sim(disk),
            std::path::Path::new("/p"),
        )
        .expect("open");
        let mut replica = leader(vec![1, 2, 3]);
        // Nobody fetched for longer than the lag limit: 2 and 3 leave.
        let (isr, epoch) = isr_proposal(&mut replica, &epochs, 10_000, 100).expect("shrink");
        assert_eq!((isr.as_slice(), epoch), (&[1][..], 7));
        isr_proposal_refused(&mut replica, &Refusal::StaleIsrChange);
        assert_eq!(
            isr_proposal(&mut replica, &epochs, 10_000, 100),
            Some((vec![1], 7)),
            "sent again unchanged"
        );
        isr_proposal_refused(&mut replica, &Refusal::IneligibleReplica(2));
        assert!(replica.pending_isr().is_none());
    }
}
