//! Share-group membership, on the group's coordinator core: members, epochs,
//! subscriptions, the server-side assignment and each member's share session.
//!
//! - **Heartbeat** (ShareGroupHeartbeat v1, member ids chosen by the client): epoch 0
//!   joins (or rejoins), -1 leaves, any other epoch must be the member's current one
//!   (FENCED_MEMBER_EPOCH otherwise; UNKNOWN_MEMBER_ID for a member the group does not have).
//! - **Assignment**: every member gets every partition of every topic it subscribes to, as
//!   Kafka's simple assignor does for few members, so all members share every partition.
//!   When a member's assignment changes (it joined, changed its subscription, or a topic
//!   grew), the group epoch rises and the member gets it as its epoch, with the assignment.
//! - **Share sessions**: ShareFetch and ShareAcknowledge carry a session epoch: 0 opens a
//!   session (the partitions the fetch names), -1 closes it, anything else must be the next
//!   epoch (INVALID_SHARE_SESSION_EPOCH) of an open session (SHARE_SESSION_NOT_FOUND).
//!   Fetches add partitions to the session and `ForgottenTopicsData` removes them.
//! - **Sessions elsewhere**: a member fetches from every broker that leads one of its
//!   partitions, and Kafka keeps share sessions per broker. A broker that does not
//!   coordinate the group keeps the sessions of its members apart ([`VisitingSessions`]),
//!   without checking the member (the coordinator is another broker); one unused for the
//!   session timeout is dropped, and the caller releases what its member held.
//! - **Expiry**: a member not heard from (heartbeat, fetch or acknowledgement) within the
//!   session timeout is removed; the caller then releases what it held.
//!
//! Memory only, like classic membership: after a restart members get UNKNOWN_MEMBER_ID and
//! join again. Members per group are bounded by `share_group_max_size`, subscribed topics
//! by [`SUBSCRIBED_TOPICS_MAX`] and session partitions by [`SESSION_PARTITIONS_MAX`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Instant;

use uuid::Uuid;

use super::{ShareError, ShareSettings};
use crate::broker::shard::Shard;

/// Most topics one member may subscribe to.
pub const SUBSCRIBED_TOPICS_MAX: usize = 1_000;
/// Most partitions one share session may hold.
pub const SESSION_PARTITIONS_MAX: usize = 10_000;
/// Most sessions one core keeps for members of groups coordinated elsewhere.
pub const VISITING_SESSIONS_MAX: usize = 10_000;

/// A ShareGroupHeartbeat, as the coordinator sees it.
#[derive(Clone, Debug)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub client_id: String,
    pub rack_id: Option<String>,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed: Option<Vec<String>>,
}

/// Partitions of one topic assigned to a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub topic_id: Uuid,
    pub topic_name: String,
    pub partitions: Vec<i32>,
}

#[derive(Clone, Debug)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `None`: unchanged since the member last received it.
    pub assignment: Option<Vec<Assigned>>,
}

/// A heartbeat the group refused: why, and the member id its answer names (the answer
/// still carries it, with epoch -1).
#[derive(Clone, Debug, thiserror::Error)]
#[error("heartbeat of member {member_id:?} refused: {error}")]
pub struct HeartbeatRefusal {
    pub member_id: String,
    #[source]
    pub error: ShareError,
}

impl HeartbeatRefusal {
    pub fn new(error: ShareError, member_id: &str) -> HeartbeatRefusal {
        HeartbeatRefusal {
            member_id: member_id.to_string(),
            error,
        }
    }
}

/// The answer to a ShareGroupHeartbeat.
pub type HeartbeatOutcome = Result<HeartbeatAnswer, HeartbeatRefusal>;

/// Refuses the heartbeat of `member_id`.
fn refuse(error: ShareError, member_id: &str) -> HeartbeatOutcome {
    Err(HeartbeatRefusal::new(error, member_id))
}

/// A member as ShareGroupDescribe shows it.
#[derive(Clone, Debug)]
pub struct MemberDescription {
    pub member_id: String,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub subscribed: Vec<String>,
    pub assignment: Vec<Assigned>,
}

/// A group as ShareGroupDescribe shows it.
#[derive(Clone, Debug)]
pub struct ShareGroupDescription {
    /// "Empty" or "Stable".
    pub state: &'static str,
    pub group_epoch: i32,
    pub members: Vec<MemberDescription>,
}

/// A share-session step of a ShareFetch (`fetching`) or a ShareAcknowledge.
#[derive(Clone, Debug)]
pub struct SessionOp {
    pub group_id: String,
    pub member_id: String,
    pub epoch: i32,
    pub fetching: bool,
    pub add: Vec<(Uuid, i32)>,
    pub forget: Vec<(Uuid, i32)>,
    /// This broker coordinates the group: the member is checked and the session is kept
    /// with it. Otherwise the session is a [`VisitingSessions`] one.
    pub coordinated: bool,
}

#[derive(Debug)]
struct Session {
    next_epoch: i32,
    partitions: BTreeSet<(Uuid, i32)>,
}

#[derive(Debug)]
struct Member {
    epoch: i32,
    client_id: String,
    rack_id: Option<String>,
    subscribed: Vec<String>,
    assignment: Vec<Assigned>,
    last_seen: Instant,
    session: Option<Session>,
}

/// One share group.
#[derive(Debug, Default)]
pub struct ShareGroup {
    epoch: i32,
    members: BTreeMap<String, Member>,
}

/// A topic's id and partition count, by name (from the cluster metadata).
pub type Resolve<'a> = &'a dyn Fn(&str) -> Option<(Uuid, i32)>;

fn assignment_for(subscribed: &[String], resolve: Resolve) -> Vec<Assigned> {
    let mut names: Vec<&String> = subscribed.iter().collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            resolve(name).map(|(topic_id, partitions)| Assigned {
                topic_id,
                topic_name: name.clone(),
                partitions: (0..partitions).collect(),
            })
        })
        .collect()
}

impl ShareGroup {
    /// One heartbeat at `now`.
    pub fn heartbeat(
        &mut self,
        request: HeartbeatRequest,
        settings: &ShareSettings,
        resolve: Resolve,
        now: Instant,
    ) -> HeartbeatOutcome {
        let member_id = request.member_id.as_str();
        if member_id.is_empty() {
            return refuse(ShareError::MissingMemberId, member_id);
        }
        if let Some(topics) = request
            .subscribed
            .as_ref()
            .filter(|topics| topics.len() > SUBSCRIBED_TOPICS_MAX)
        {
            let error = ShareError::TooManyTopics {
                topics: topics.len(),
                topics_max: SUBSCRIBED_TOPICS_MAX,
            };
            return refuse(error, member_id);
        }
        match request.member_epoch {
            0 => self.join(request, settings, resolve, now),
            -1 => match self.members.remove(member_id) {
                Some(_) => {
                    self.epoch += 1;
                    Ok(HeartbeatAnswer {
                        member_id: request.member_id,
                        member_epoch: -1,
                        heartbeat_interval_ms: 0,
                        assignment: None,
                    })
                }
                None => refuse(unknown_member(member_id), member_id),
            },
            epoch if epoch > 0 => self.keep_alive(request, settings, resolve, now),
            epoch => refuse(ShareError::InvalidMemberEpoch { epoch }, member_id),
        }
    }

    fn join(
        &mut self,
        request: HeartbeatRequest,
        settings: &ShareSettings,
        resolve: Resolve,
        now: Instant,
    ) -> HeartbeatOutcome {
        let member_id = request.member_id.as_str();
        let Some(subscribed) = request.subscribed else {
            // Kafka: the first heartbeat must name the subscription.
            let error = ShareError::MissingSubscription {
                member_id: member_id.to_string(),
            };
            return refuse(error, member_id);
        };
        if !self.members.contains_key(member_id) && self.members.len() >= settings.max_size {
            let error = ShareError::GroupFull {
                members_max: settings.max_size,
            };
            return refuse(error, member_id);
        }
        self.epoch += 1;
        let assignment = assignment_for(&subscribed, resolve);
        let member = Member {
            epoch: self.epoch,
            client_id: request.client_id,
            rack_id: request.rack_id,
            subscribed,
            assignment: assignment.clone(),
            last_seen: now,
            session: None,
        };
        self.members.insert(request.member_id.clone(), member);
        Ok(HeartbeatAnswer {
            member_id: request.member_id,
            member_epoch: self.epoch,
            heartbeat_interval_ms: interval_ms(settings),
            assignment: Some(assignment),
        })
    }

    fn keep_alive(
        &mut self,
        request: HeartbeatRequest,
        settings: &ShareSettings,
        resolve: Resolve,
        now: Instant,
    ) -> HeartbeatOutcome {
        let member_id = request.member_id.as_str();
        let Some(member) = self.members.get_mut(member_id) else {
            return refuse(unknown_member(member_id), member_id);
        };
        if request.member_epoch != member.epoch {
            let error = ShareError::FencedMemberEpoch {
                member_id: member_id.to_string(),
                epoch: request.member_epoch,
                current: member.epoch,
            };
            return refuse(error, member_id);
        }
        member.last_seen = now;
        if let Some(subscribed) = request.subscribed {
            member.subscribed = subscribed;
        }
        if request.rack_id.is_some() {
            member.rack_id = request.rack_id;
        }
        let assignment = assignment_for(&member.subscribed, resolve);
        let changed = assignment != member.assignment;
        if changed {
            self.epoch += 1;
            member.epoch = self.epoch;
            member.assignment = assignment.clone();
        }
        Ok(HeartbeatAnswer {
            member_id: request.member_id,
            member_epoch: member.epoch,
            heartbeat_interval_ms: interval_ms(settings),
            assignment: changed.then_some(assignment),
        })
    }

    /// One share-session step; the session's partitions to fetch from.
    pub fn session(&mut self, op: SessionOp, now: Instant) -> Result<Vec<(Uuid, i32)>, ShareError> {
        let member = self
            .members
            .get_mut(&op.member_id)
            .ok_or_else(|| unknown_member(&op.member_id))?;
        member.last_seen = now;
        step_session(&mut member.session, op)
    }

    /// Removes members silent for longer than the session timeout; their ids.
    pub fn expire(&mut self, settings: &ShareSettings, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| now.duration_since(member.last_seen) > settings.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
        }
        if !expired.is_empty() {
            self.epoch += 1;
        }
        expired
    }

    pub fn describe(&self) -> ShareGroupDescription {
        ShareGroupDescription {
            state: if self.members.is_empty() {
                "Empty"
            } else {
                "Stable"
            },
            group_epoch: self.epoch,
            members: self
                .members
                .iter()
                .map(|(id, member)| MemberDescription {
                    member_id: id.clone(),
                    rack_id: member.rack_id.clone(),
                    member_epoch: member.epoch,
                    client_id: member.client_id.clone(),
                    subscribed: member.subscribed.clone(),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// One step of a share session (`session`: the member's, `None` when it has none).
fn step_session(
    session: &mut Option<Session>,
    op: SessionOp,
) -> Result<Vec<(Uuid, i32)>, ShareError> {
    let not_found = || ShareError::SessionNotFound {
        member_id: op.member_id.clone(),
    };
    match op.epoch {
        // Only a ShareFetch opens a session.
        0 if !op.fetching => Err(ShareError::InvalidSessionEpoch {
            epoch: 0,
            expected: session.as_ref().map(|session| session.next_epoch),
        }),
        0 => {
            let mut partitions: BTreeSet<(Uuid, i32)> = op.add.into_iter().collect();
            for forgotten in &op.forget {
                partitions.remove(forgotten);
            }
            check_session_size(partitions.len())?;
            let listed = partitions.iter().copied().collect();
            *session = Some(Session {
                next_epoch: 1,
                partitions,
            });
            Ok(listed)
        }
        -1 => match session.take() {
            Some(_) => Ok(Vec::new()),
            None => Err(not_found()),
        },
        epoch if epoch > 0 => {
            let session = session.as_mut().ok_or_else(not_found)?;
            if epoch != session.next_epoch {
                return Err(ShareError::InvalidSessionEpoch {
                    epoch,
                    expected: Some(session.next_epoch),
                });
            }
            if op.fetching {
                let mut partitions = session.partitions.clone();
                partitions.extend(op.add);
                for forgotten in &op.forget {
                    partitions.remove(forgotten);
                }
                check_session_size(partitions.len())?;
                session.partitions = partitions;
            }
            session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
            Ok(session.partitions.iter().copied().collect())
        }
        epoch => Err(ShareError::InvalidSessionEpoch {
            epoch,
            expected: session.as_ref().map(|session| session.next_epoch),
        }),
    }
}

/// Refuses a session of more than [`SESSION_PARTITIONS_MAX`] partitions.
fn check_session_size(partitions: usize) -> Result<(), ShareError> {
    if partitions > SESSION_PARTITIONS_MAX {
        return Err(ShareError::SessionTooLarge {
            partitions,
            partitions_max: SESSION_PARTITIONS_MAX,
        });
    }
    Ok(())
}

fn unknown_member(member_id: &str) -> ShareError {
    ShareError::UnknownMember {
        member_id: member_id.to_string(),
    }
}

/// Share sessions of members whose group another broker coordinates, by (group, member),
/// with when each was last used. Bounded by [`VISITING_SESSIONS_MAX`].
#[derive(Default)]
pub struct VisitingSessions {
    sessions: HashMap<(String, String), (Option<Session>, Instant)>,
}

impl VisitingSessions {
    pub fn step(&mut self, op: SessionOp, now: Instant) -> Result<Vec<(Uuid, i32)>, ShareError> {
        let key = (op.group_id.clone(), op.member_id.clone());
        if !self.sessions.contains_key(&key) && self.sessions.len() >= VISITING_SESSIONS_MAX {
            return Err(ShareError::SessionLimitReached {
                sessions_max: VISITING_SESSIONS_MAX,
            });
        }
        let entry = self.sessions.entry(key.clone()).or_insert((None, now));
        entry.1 = now;
        let result = step_session(&mut entry.0, op);
        if entry.0.is_none() {
            self.sessions.remove(&key);
        }
        result
    }

    /// Drops sessions unused for longer than the session timeout; their (group, member).
    pub fn expire(&mut self, settings: &ShareSettings, now: Instant) -> Vec<(String, String)> {
        let expired: Vec<(String, String)> = self
            .sessions
            .iter()
            .filter(|(_, (_, used))| now.duration_since(*used) > settings.session_timeout)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &expired {
            self.sessions.remove(key);
        }
        expired
    }
}

fn interval_ms(settings: &ShareSettings) -> i32 {
    i32::try_from(settings.heartbeat_interval.as_millis()).unwrap_or(i32::MAX)
}

/// The share groups this core coordinates.
#[derive(Default)]
pub struct ShareGroups {
    groups: RefCell<HashMap<String, ShareGroup>>,
    visiting: RefCell<VisitingSessions>,
}

/// Serves a heartbeat on the group's coordinator core.
pub fn heartbeat(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatOutcome {
    let metadata = &shard.shared.metadata;
    let resolve = |name: &str| {
        metadata
            .topic(name)
            .map(|topic| (topic.id, topic.partitions))
    };
    let settings = &shard.shares.settings;
    let mut groups = shard.shares.groups.groups.borrow_mut();
    let joining = request.member_epoch == 0;
    let group_id = request.group_id.clone();
    if !joining && !groups.contains_key(&group_id) {
        return refuse(unknown_member(&request.member_id), &request.member_id);
    }
    let group = groups.entry(group_id.clone()).or_default();
    let answer = group.heartbeat(request, settings, &resolve, Instant::now());
    if group.is_empty() {
        groups.remove(&group_id);
    }
    answer
}

/// The group as ShareGroupDescribe shows it, if this core coordinates it.
pub fn describe(shard: &Rc<Shard>, group_id: &str) -> Result<ShareGroupDescription, ShareError> {
    match shard.shares.groups.groups.borrow().get(group_id) {
        Some(group) => Ok(group.describe()),
        None => Err(ShareError::GroupNotFound {
            group_id: group_id.to_string(),
        }),
    }
}

pub fn session(shard: &Rc<Shard>, op: SessionOp) -> Result<Vec<(Uuid, i32)>, ShareError> {
    let now = Instant::now();
    if !op.coordinated {
        return shard.shares.groups.visiting.borrow_mut().step(op, now);
    }
    let mut groups = shard.shares.groups.groups.borrow_mut();
    let known = groups
        .get(&op.group_id)
        .is_some_and(|group| group.members.contains_key(&op.member_id));
    if op.epoch == -1 && !known {
        // The member left the group (librdkafka leaves, then closes its sessions): leaving
        // closed its session and released what it held already.
        return Ok(Vec::new());
    }
    let Some(group) = groups.get_mut(&op.group_id) else {
        return Err(unknown_member(&op.member_id));
    };
    group.session(op, now)
}

/// Expires silent members of every group this core coordinates; (group, member) removed.
pub fn expire(shard: &Rc<Shard>, now: Instant) -> Vec<(String, String)> {
    let settings = &shard.shares.settings;
    let mut groups = shard.shares.groups.groups.borrow_mut();
    let mut removed = Vec::new();
    for (group_id, group) in groups.iter_mut() {
        for member_id in group.expire(settings, now) {
            removed.push((group_id.clone(), member_id));
        }
    }
    groups.retain(|_, group| !group.is_empty());
    removed.extend(
        shard
            .shares
            .groups
            .visiting
            .borrow_mut()
            .expire(settings, now),
    );
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> ShareSettings {
        ShareSettings {
            lock_duration: Duration::from_secs(30),
            delivery_count_limit: 5,
            max_record_locks: 2_000,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(5),
            max_size: 2,
            offset_reset: super::super::OffsetReset::Earliest,
            state_topic_partitions: 50,
        }
    }

    const TOPIC_ID: Uuid = Uuid::from_u128(7);

    fn resolve(name: &str) -> Option<(Uuid, i32)> {
        (name == "jobs").then_some((TOPIC_ID, 2))
    }

    fn beat(member: &str, epoch: i32, subscribed: Option<&[&str]>) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            client_id: "test".into(),
            rack_id: None,
            subscribed: subscribed.map(|topics| topics.iter().map(|t| t.to_string()).collect()),
        }
    }

    #[test]
    fn members_join_share_every_partition_and_are_fenced_by_epoch() {
        let (settings, now) = (settings(), Instant::now());
        let mut group = ShareGroup::default();
        let a = group.heartbeat(
            beat("a", 0, Some(&["jobs", "missing"])),
            &settings,
            &resolve,
            now,
        );
        let a = a.expect("a joins");
        let assigned = a.assignment.expect("full assignment on join");
        assert_eq!(assigned.len(), 1, "unknown topics are not assigned");
        assert_eq!(assigned[0].partitions, vec![0, 1]);
        let b = group
            .heartbeat(beat("b", 0, Some(&["jobs"])), &settings, &resolve, now)
            .expect("b joins");
        assert_eq!(b.assignment.expect("b too")[0].partitions, vec![0, 1]);
        let again = group.heartbeat(beat("a", a.member_epoch, None), &settings, &resolve, now);
        assert_eq!(again.expect("a keeps its epoch").assignment, None);
        let stale = group.heartbeat(
            beat("b", b.member_epoch - 1, None),
            &settings,
            &resolve,
            now,
        );
        // A refusal still names the member it answers.
        let refused = |outcome: HeartbeatOutcome, member: &str| {
            let refusal = outcome.expect_err("refused");
            assert_eq!(refusal.member_id, member);
            refusal.error
        };
        assert!(matches!(
            refused(stale, "b"),
            ShareError::FencedMemberEpoch { epoch, current, .. }
                if epoch == b.member_epoch - 1 && current == b.member_epoch
        ));
        let unknown = group.heartbeat(beat("z", 3, None), &settings, &resolve, now);
        assert!(matches!(
            refused(unknown, "z"),
            ShareError::UnknownMember { .. }
        ));
        let full = group.heartbeat(beat("c", 0, Some(&["jobs"])), &settings, &resolve, now);
        assert!(matches!(
            refused(full, "c"),
            ShareError::GroupFull { members_max: 2 }
        ));
        let no_subscription = group.heartbeat(beat("d", 0, None), &settings, &resolve, now);
        assert!(matches!(
            refused(no_subscription, "d"),
            ShareError::MissingSubscription { .. }
        ));
        let left = group
            .heartbeat(beat("a", -1, None), &settings, &resolve, now)
            .expect("a leaves");
        assert_eq!(left.member_epoch, -1);
    }

    #[test]
    fn sessions_follow_their_epochs() {
        let (settings, now) = (settings(), Instant::now());
        let mut group = ShareGroup::default();
        group
            .heartbeat(beat("a", 0, Some(&["jobs"])), &settings, &resolve, now)
            .expect("a joins");
        let op = |epoch: i32, add: Vec<(Uuid, i32)>| SessionOp {
            group_id: "g".into(),
            member_id: "a".into(),
            epoch,
            fetching: true,
            add,
            forget: Vec::new(),
            coordinated: true,
        };
        assert!(matches!(
            group.session(op(1, Vec::new()), now),
            Err(ShareError::SessionNotFound { .. })
        ));
        assert_eq!(
            group
                .session(op(0, vec![(TOPIC_ID, 0)]), now)
                .expect("opened"),
            vec![(TOPIC_ID, 0)]
        );
        assert_eq!(
            group
                .session(op(1, vec![(TOPIC_ID, 1)]), now)
                .expect("epoch 1"),
            vec![(TOPIC_ID, 0), (TOPIC_ID, 1)]
        );
        assert!(
            matches!(
                group.session(op(1, Vec::new()), now),
                Err(ShareError::InvalidSessionEpoch {
                    epoch: 1,
                    expected: Some(2)
                })
            ),
            "epoch 1 was used"
        );
        assert_eq!(
            group.session(op(-1, Vec::new()), now).expect("closed"),
            Vec::new()
        );
        assert!(matches!(
            group.session(op(3, Vec::new()), now),
            Err(ShareError::SessionNotFound { .. })
        ));
    }

    #[test]
    fn silent_members_expire() {
        let (settings, now) = (settings(), Instant::now());
        let mut group = ShareGroup::default();
        group
            .heartbeat(beat("a", 0, Some(&["jobs"])), &settings, &resolve, now)
            .expect("a joins");
        assert!(group
            .expire(&settings, now + Duration::from_secs(10))
            .is_empty());
        assert_eq!(
            group.expire(&settings, now + Duration::from_secs(46)),
            vec!["a"]
        );
        assert!(group.is_empty());
    }
}
