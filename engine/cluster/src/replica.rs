//! One partition's replication state on a broker that holds a replica of it: Kafka's model.
//!
//! The leader learns how far each follower has got from the offset the follower asks for
//! next (a follower fetching from offset N holds everything below N). The high watermark is
//! the smallest such end offset over the in-sync replicas (ISR), the leader's own included;
//! consumers see only records below it, and an `acks=all` produce is answered once the
//! watermark has passed its records. A follower that stops keeping up leaves the ISR after
//! `replica_lag_time_max`; one that catches up comes back. The leader proposes those ISR
//! changes to the quorum; the quorum's state is the truth, this is the leader's working copy.
//!
//! While a change is proposed and its outcome unknown, the watermark counts the proposed
//! members too (Kafka's "maximal ISR", KIP-497): the quorum may already list a joining
//! follower as in sync, and could elect it, so nothing it lacks may be acknowledged.
//!
//! Pure: no I/O and no clock (times come in as milliseconds), so the rules are unit-tested
//! here and the shard does the waiting and the talking.

use std::collections::BTreeMap;

use super::state::{BrokerId, PartitionState, NO_LEADER};

/// Why [`ReplicaState::check_leader`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaderRefusal {
    /// This broker does not lead the partition.
    #[error("not the leader")]
    NotLeader,
    /// The sender's leader epoch is older than ours: the sender is behind.
    #[error("the sender's leader epoch is older than this leader's")]
    FencedEpoch,
    /// The sender's leader epoch is newer than ours: this broker is behind.
    #[error("the sender's leader epoch is newer than this leader's")]
    UnknownEpoch,
}

/// What this broker is for the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower {
        leader: BrokerId,
    },
    /// Not a replica, or no leader to follow.
    Offline,
}

/// What a metadata change asks of the shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing to do (perhaps the ISR changed).
    Unchanged,
    /// Lead from now at this epoch: record the epoch's start in the epoch cache.
    BecameLeader,
    /// Follow this leader: cut any divergent tail, then fetch.
    BecameFollower { leader: BrokerId },
    /// Stop leading or fetching.
    WentOffline,
}

/// A follower's progress, as its leader sees it.
#[derive(Clone, Copy, Debug)]
struct FollowerProgress {
    /// The offset it fetched from last: it holds every record below. -1 until it fetches.
    end_offset: i64,
    /// The last time it was caught up with the leader's log end.
    caught_up_ms: u64,
}

/// The replication state of one partition on one broker.
#[derive(Debug)]
pub struct ReplicaState {
    me: BrokerId,
    role: Role,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    high_watermark: i64,
    /// An ISR change proposed and not yet seen in the metadata; no other is proposed meanwhile.
    pending_isr: Option<PendingIsr>,
}

/// An ISR change sent to the quorum, at the partition epoch it was made against.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PendingIsr {
    isr: Vec<BrokerId>,
    partition_epoch: i32,
}

impl ReplicaState {
    /// A replica that has not seen the metadata yet. `high_watermark` is the last one known
    /// (from a checkpoint, or the log start).
    pub fn new(me: BrokerId, high_watermark: i64) -> ReplicaState {
        ReplicaState {
            me,
            role: Role::Offline,
            leader_epoch: -1,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            followers: BTreeMap::new(),
            high_watermark,
            pending_isr: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Whether a request for the partition's data may be served here: only by the leader,
    /// and only when the sender's leader epoch (`current_leader_epoch`, -1 for none) is ours.
    /// Older means the sender is behind, newer that we are.
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<(), LeaderRefusal> {
        if self.role != Role::Leader {
            return Err(LeaderRefusal::NotLeader);
        }
        if current_leader_epoch >= 0 && current_leader_epoch < self.leader_epoch {
            return Err(LeaderRefusal::FencedEpoch);
        }
        if current_leader_epoch > self.leader_epoch {
            return Err(LeaderRefusal::UnknownEpoch);
        }
        Ok(())
    }

    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    /// Adopts the quorum's view of the partition.
    pub fn update(&mut self, state: &PartitionState, log_end: i64, now_ms: u64) -> Transition {
        let epoch_changed = state.leader_epoch != self.leader_epoch;
        if state.partition_epoch != self.partition_epoch {
            self.forget_progress_outside(&state.isr);
        }
        self.replicas = state.replicas.clone();
        self.isr = state.isr.clone();
        self.partition_epoch = state.partition_epoch;
        // The outcome is known once the quorum's state shows it, or has moved past the epoch
        // the change was made against (it can no longer apply).
        let settled = self.pending_isr.as_ref().is_some_and(|pending| {
            pending.isr == state.isr || state.partition_epoch > pending.partition_epoch
        });
        if settled || epoch_changed {
            self.pending_isr = None;
        }
        self.leader_epoch = state.leader_epoch;
        let role = if state.leader == self.me {
            Role::Leader
        } else if state.leader != NO_LEADER && state.replicas.contains(&self.me) {
            Role::Follower {
                leader: state.leader,
            }
        } else {
            Role::Offline
        };
        let transition = if role == self.role && !epoch_changed {
            Transition::Unchanged
        } else {
            match role {
                Role::Leader => {
                    // Followers get a full lag period from now before they can be dropped.
                    self.followers = self
                        .replicas
                        .iter()
                        .filter(|&&replica| replica != self.me)
                        .map(|&replica| {
                            let progress = FollowerProgress {
                                end_offset: -1,
                                caught_up_ms: now_ms,
                            };
                            (replica, progress)
                        })
                        .collect();
                    Transition::BecameLeader
                }
                Role::Follower { leader } => Transition::BecameFollower { leader },
                Role::Offline => Transition::WentOffline,
            }
        };
        self.role = role;
        if role == Role::Leader {
            self.track_replicas(now_ms);
        }
        self.high_watermark = self.high_watermark.min(log_end);
        if role == Role::Leader {
            self.advance_high_watermark(log_end);
        }
        transition
    }

    /// A leader tracks exactly the current replicas: a replica a reassignment added gets a
    /// full lag period from now, one it removed is forgotten.
    fn track_replicas(&mut self, now_ms: u64) {
        let replicas = &self.replicas;
        self.followers
            .retain(|follower, _| replicas.contains(follower));
        for replica in replicas.iter().filter(|&&replica| replica != self.me) {
            self.followers.entry(*replica).or_insert(FollowerProgress {
                end_offset: -1,
                caught_up_ms: now_ms,
            });
        }
    }

    /// On every change of the partition's state, followers outside the ISR must fetch again
    /// before they can join it: the change may be one that took a follower out (fenced, or
    /// restarted and maybe missing what it had not synced), and the offset it fetched from
    /// before says nothing about the log it has now.
    fn forget_progress_outside(&mut self, next_isr: &[BrokerId]) {
        for (follower, progress) in &mut self.followers {
            if !next_isr.contains(follower) {
                progress.end_offset = -1;
            }
        }
    }

    /// Whether this broker leads the partition now, at `leader_epoch`.
    pub fn leads_at(&self, leader_epoch: i32) -> bool {
        self.role == Role::Leader && self.leader_epoch == leader_epoch
    }

    /// The leader saw `follower` fetch from `fetch_offset`. Returns whether the high
    /// watermark moved. Fetches from brokers that are not replicas are ignored.
    pub fn follower_fetched(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        log_end: i64,
        now_ms: u64,
    ) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let Some(progress) = self.followers.get_mut(&follower) else {
            return false;
        };
        progress.end_offset = fetch_offset.min(log_end);
        if fetch_offset >= log_end {
            progress.caught_up_ms = now_ms;
        }
        self.advance_high_watermark(log_end)
    }

    /// The leader appended; with an ISR of one the watermark follows the log end at once.
    pub fn appended(&mut self, log_end: i64) -> bool {
        self.role == Role::Leader && self.advance_high_watermark(log_end)
    }

    /// A follower learned the leader's watermark: its own is that, capped at its log end.
    pub fn follow_high_watermark(&mut self, leader_high_watermark: i64, log_end: i64) -> bool {
        let next = leader_high_watermark.min(log_end);
        let moved = next != self.high_watermark;
        self.high_watermark = next;
        moved
    }

    /// The watermark after a log cut.
    pub fn truncated(&mut self, log_end: i64) {
        self.high_watermark = self.high_watermark.min(log_end);
    }

    fn advance_high_watermark(&mut self, log_end: i64) -> bool {
        let mut candidate = log_end;
        let proposed = self.pending_isr.iter().flat_map(|pending| &pending.isr);
        for member in self.isr.iter().chain(proposed) {
            if *member == self.me {
                continue;
            }
            match self.followers.get(member) {
                Some(progress) => candidate = candidate.min(progress.end_offset),
                // An ISR member the leader has no progress for holds it back.
                None => return false,
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            true
        } else {
            false
        }
    }

    /// The ISR the leader wants now, if it differs from the quorum's and no change is in
    /// flight: members that have not caught up for `lag_max_ms` leave; replicas that reached
    /// the watermark and the start of this epoch (`epoch_start`) join.
    pub fn wanted_isr(
        &self,
        epoch_start: i64,
        now_ms: u64,
        lag_max_ms: u64,
    ) -> Option<Vec<BrokerId>> {
        if self.role != Role::Leader || self.pending_isr.is_some() {
            return None;
        }
        let in_sync = |replica: &BrokerId| {
            if *replica == self.me {
                return true;
            }
            let Some(progress) = self.followers.get(replica) else {
                return false;
            };
            if self.isr.contains(replica) {
                now_ms.saturating_sub(progress.caught_up_ms) <= lag_max_ms
            } else {
                progress.end_offset >= self.high_watermark && progress.end_offset >= epoch_start
            }
        };
        let wanted: Vec<BrokerId> = self.replicas.iter().copied().filter(in_sync).collect();
        let mut current = self.isr.clone();
        current.sort_unstable();
        let mut sorted = wanted.clone();
        sorted.sort_unstable();
        (sorted != current).then_some(wanted)
    }

    /// Notes that `isr` was proposed at the current partition epoch; returns that epoch.
    /// Until the outcome is known the watermark also waits for the proposed members.
    pub fn proposing_isr(&mut self, isr: Vec<BrokerId>) -> i32 {
        let partition_epoch = self.partition_epoch;
        self.pending_isr = Some(PendingIsr {
            isr,
            partition_epoch,
        });
        partition_epoch
    }

    /// The proposed change and the partition epoch it was made at, while its outcome is
    /// unknown: a proposal whose answer was lost is sent again as it was, not dropped (the
    /// quorum may have applied it).
    pub fn pending_isr(&self) -> Option<(&[BrokerId], i32)> {
        self.pending_isr
            .as_ref()
            .map(|pending| (pending.isr.as_slice(), pending.partition_epoch))
    }

    /// The quorum refused the proposal (it changed nothing); a later check may try again.
    /// Not for a proposal whose outcome is unknown: see `pending_isr`.
    pub fn isr_proposal_failed(&mut self) {
        self.pending_isr = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: BrokerId, epoch: i32, isr: Vec<BrokerId>) -> PartitionState {
        PartitionState {
            replicas: vec![1, 2, 3],
            isr,
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
            target_replicas: None,
        }
    }

    #[test]
    fn a_leader_tracks_replicas_a_reassignment_adds_and_removes() {
        let mut replica = ReplicaState::new(1, 0);
        replica.update(&state(1, 0, vec![1, 2, 3]), 10, 0);
        replica.follower_fetched(2, 10, 10, 1);
        replica.follower_fetched(3, 10, 10, 1);
        assert_eq!(replica.high_watermark(), 10);
        let moving = PartitionState {
            replicas: vec![2, 3, 4, 1],
            partition_epoch: 1,
            target_replicas: Some(vec![2, 3, 4]),
            ..state(1, 0, vec![1, 2, 3])
        };
        assert_eq!(replica.update(&moving, 10, 2), Transition::Unchanged);
        assert_eq!(replica.wanted_isr(0, 3, 30_000), None, "4 has not fetched");
        replica.follower_fetched(4, 10, 10, 4);
        assert_eq!(replica.wanted_isr(0, 5, 30_000), Some(vec![2, 3, 4, 1]));
        // Once moved away, the old leader follows nobody and forgets the others.
        let moved = PartitionState {
            replicas: vec![2, 3, 4],
            isr: vec![2, 3, 4],
            leader: 2,
            leader_epoch: 1,
            partition_epoch: 2,
            target_replicas: None,
        };
        assert_eq!(replica.update(&moved, 10, 6), Transition::WentOffline);
    }

    #[test]
    fn the_watermark_is_the_slowest_isr_member() {
        let mut replica = ReplicaState::new(1, 0);
        assert_eq!(
            replica.update(&state(1, 0, vec![1, 2, 3]), 10, 0),
            Transition::BecameLeader
        );
        assert_eq!(replica.high_watermark(), 0);
        assert!(!replica.follower_fetched(2, 10, 10, 1));
        assert!(replica.follower_fetched(3, 7, 10, 1));
        assert_eq!(replica.high_watermark(), 7);
        // A stale fetch offset never lowers it.
        assert!(!replica.follower_fetched(3, 5, 10, 2));
        assert_eq!(replica.high_watermark(), 7);
    }

    #[test]
    fn a_lone_leader_acknowledges_at_its_log_end() {
        let mut replica = ReplicaState::new(1, 0);
        replica.update(&state(1, 0, vec![1]), 0, 0);
        assert!(replica.appended(5));
        assert_eq!(replica.high_watermark(), 5);
    }

    #[test]
    fn laggards_leave_the_isr_and_return_when_caught_up() {
        let mut replica = ReplicaState::new(1, 0);
        replica.update(&state(1, 0, vec![1, 2, 3]), 10, 0);
        replica.follower_fetched(2, 10, 10, 100);
        replica.follower_fetched(3, 4, 10, 100);
        assert_eq!(replica.wanted_isr(0, 200, 500), None);
        replica.follower_fetched(2, 10, 10, 650);
        assert_eq!(replica.wanted_isr(0, 700, 500), Some(vec![1, 2]));
        let epoch = replica.proposing_isr(vec![1, 2]);
        assert_eq!(
            replica.wanted_isr(0, 700, 500),
            None,
            "one change at a time"
        );
        replica.update(
            &PartitionState {
                partition_epoch: epoch + 1,
                ..state(1, 0, vec![1, 2])
            },
            10,
            700,
        );
        // Without the laggard the watermark reaches the log end.
        assert_eq!(replica.high_watermark(), 10);
        replica.follower_fetched(3, 10, 10, 900);
        assert_eq!(replica.wanted_isr(0, 900, 500), Some(vec![1, 2, 3]));
    }

    #[test]
    fn the_watermark_waits_for_a_follower_proposed_into_the_isr() {
        let mut replica = ReplicaState::new(1, 0);
        replica.update(&state(1, 0, vec![1, 2]), 10, 0);
        replica.follower_fetched(2, 10, 10, 10);
        replica.follower_fetched(3, 10, 10, 10);
        assert_eq!(replica.high_watermark(), 10);
        let wanted = replica.wanted_isr(0, 20, 500).expect("3 caught up");
        assert_eq!(wanted, vec![1, 2, 3]);
        let epoch = replica.proposing_isr(wanted);
        // The quorum may already list 3 as in sync: 2 alone does not commit offset 10.
        replica.follower_fetched(2, 12, 12, 30);
        assert_eq!(replica.high_watermark(), 10);
        replica.follower_fetched(3, 12, 12, 30);
        assert_eq!(replica.high_watermark(), 12);
        assert_eq!(replica.pending_isr(), Some((&[1, 2, 3][..], epoch)));
        // The quorum moved on without it (a broker was fenced): the proposal is settled.
        replica.update(
            &PartitionState {
                partition_epoch: epoch + 1,
                ..state(1, 0, vec![1, 2])
            },
            12,
            40,
        );
        assert_eq!(replica.pending_isr(), None);
    }

    #[test]
    fn a_follower_taken_out_of_the_isr_rejoins_only_after_fetching_again() {
        let mut replica = ReplicaState::new(1, 0);
        replica.update(&state(1, 0, vec![1, 2, 3]), 10, 0);
        replica.follower_fetched(2, 10, 10, 10);
        replica.follower_fetched(3, 10, 10, 10);
        // The controller fences 3 (it crashed); its last fetch offset is stale now.
        replica.update(
            &PartitionState {
                partition_epoch: 1,
                ..state(1, 0, vec![1, 2])
            },
            10,
            20,
        );
        assert_eq!(replica.wanted_isr(0, 30, 500), None);
        // Back, with a shorter log: not yet in sync.
        replica.follower_fetched(3, 6, 10, 40);
        assert_eq!(replica.wanted_isr(0, 40, 500), None);
        replica.follower_fetched(3, 10, 10, 50);
        assert_eq!(replica.wanted_isr(0, 50, 500), Some(vec![1, 2, 3]));
    }

    #[test]
    fn leadership_moves_with_the_epoch() {
        let mut replica = ReplicaState::new(2, 0);
        assert_eq!(
            replica.update(&state(1, 0, vec![1, 2, 3]), 0, 0),
            Transition::BecameFollower { leader: 1 }
        );
        assert_eq!(
            replica.update(&state(1, 0, vec![1, 2]), 0, 0),
            Transition::Unchanged
        );
        assert_eq!(
            replica.update(&state(2, 1, vec![2, 3]), 0, 0),
            Transition::BecameLeader
        );
        assert_eq!(
            replica.update(&state(NO_LEADER, 2, vec![2]), 0, 0),
            Transition::WentOffline
        );
    }
}
