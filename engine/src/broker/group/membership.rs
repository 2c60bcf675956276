//! One consumer group's membership: Kafka's classic rebalance protocol as a state machine.
//!
//! ```text
//!            join                 every member rejoined,          leader's SyncGroup
//!   Empty ---------> Preparing ------------------------> Completing -------------> Stable
//!                    Rebalance   or the rebalance timeout  Rebalance                 |
//!                       ^                                     |                      |
//!                       +---- a member joins, leaves, expires or changes its protocols
//! ```
//!
//! Synchronous and clock-free: every method takes `now`, and a request that must wait (a
//! JoinGroup until the rebalance completes, a SyncGroup until the leader's assignment
//! arrives) leaves its one-shot reply sender in the member, to be answered by a later call.
//! The coordinator calls [`Group::tick`] periodically to expire sessions and end rebalances
//! whose time is up. That keeps every rule here testable without a runtime.
//!
//! **Static members** (KIP-345, `group.instance.id`). A member that names an instance id
//! keeps its place across restarts: it joins without the MEMBER_ID_REQUIRED round trip, and
//! when it comes back under the same instance id (with a new member id) it takes over its old
//! membership and assignment. In a Stable group, and when the chosen protocol does not change,
//! that costs no rebalance. The previous holder of the instance id is fenced: its requests get
//! FENCED_INSTANCE_ID. A static member that does not rejoin a rebalance is kept (only its
//! session timeout removes it), so a restart during someone else's rebalance does not lose it.
//!
//! **Who may act** (Kafka's `validateMember`): a request naming an instance id must come from
//! the member id that instance is bound to now (else FENCED_INSTANCE_ID, or UNKNOWN_MEMBER_ID
//! if the instance is unknown); any request's member id must be a member; SyncGroup,
//! Heartbeat and OffsetCommit must name the current generation (else ILLEGAL_GENERATION).
//! An OffsetCommit is accepted without a member only as a "simple" commit (generation -1) to
//! an Empty group, and never while the group completes a rebalance (REBALANCE_IN_PROGRESS):
//! a consumer that lost its partitions cannot overwrite the progress of their new owner.
//!
//! Bounds: at most `max_size` members plus pending members; each member's protocol
//! metadata and assignment at most `member_metadata_bytes_max` (checked by the caller on
//! the wire types, and again here).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::error::{CoordinatorError, GroupError};

/// The group states Kafka reports (DescribeGroups, ListGroups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// The coordinator's limits and timings for groups (from the broker's settings).
#[derive(Clone, Debug)]
pub struct GroupSettings {
    /// How long a rebalance of an empty group waits for more members (Kafka
    /// `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay: Duration,
    pub session_timeout_min: Duration,
    pub session_timeout_max: Duration,
    /// Members (including those told MEMBER_ID_REQUIRED) a group may have.
    pub max_size: usize,
    /// Protocol metadata of one member (all its protocols), and one member's assignment.
    pub member_metadata_bytes_max: usize,
    /// Protocols one member may offer.
    pub protocols_max: usize,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            initial_rebalance_delay: Duration::from_millis(3_000),
            session_timeout_min: Duration::from_millis(6_000),
            session_timeout_max: Duration::from_millis(1_800_000),
            max_size: 1_000,
            member_metadata_bytes_max: 1 << 20,
            protocols_max: 32,
        }
    }
}

/// A JoinGroup, as the coordinator sees it.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a new member.
    pub member_id: String,
    pub client_id: String,
    pub session_timeout_ms: i32,
    /// -1 before v1: the session timeout is used.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// v4 and later: a new member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
    /// v5 and later: `group.instance.id`, which makes the member static.
    pub instance_id: Option<String>,
}

/// The answer to a JoinGroup that joined the member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinAnswer {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member and its metadata for the chosen protocol.
    pub members: Vec<(String, Bytes)>,
}

/// A JoinGroup the group refused: why, and the member id its answer names (after
/// MEMBER_ID_REQUIRED, the id a new member must join again with).
#[derive(Clone, Debug, thiserror::Error)]
#[error("join of member {member_id:?} refused: {error}")]
pub struct JoinRefusal {
    pub member_id: String,
    #[source]
    pub error: GroupError,
}

impl JoinRefusal {
    pub fn new(error: impl Into<GroupError>, member_id: &str) -> JoinRefusal {
        JoinRefusal {
            member_id: member_id.to_string(),
            error: error.into(),
        }
    }
}

/// The answer to a JoinGroup.
pub type JoinOutcome = Result<JoinAnswer, JoinRefusal>;

/// The answer to a SyncGroup that got the member's assignment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncAnswer {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// The answer to a SyncGroup.
pub type SyncOutcome = Result<SyncAnswer, GroupError>;

/// Refuses a JoinGroup waiting on `reply` (a dropped receiver needs no answer).
fn refuse_join(reply: oneshot::Sender<JoinOutcome>, error: GroupError, member_id: &str) {
    let _ = reply.send(Err(JoinRefusal::new(error, member_id)));
}

/// Refuses a SyncGroup waiting on `reply` (a dropped receiver needs no answer).
fn refuse_sync(reply: oneshot::Sender<SyncOutcome>, error: GroupError) {
    let _ = reply.send(Err(error));
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

struct Member {
    client_id: String,
    /// Set for a static member.
    instance_id: Option<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Set while the member's JoinGroup waits for the rebalance to complete.
    awaiting_join: Option<oneshot::Sender<JoinOutcome>>,
    /// Set while the member's SyncGroup waits for the leader's assignment.
    awaiting_sync: Option<oneshot::Sender<SyncOutcome>>,
    /// When the member expires unless heard from (not while it waits in a join or sync).
    session_deadline: Instant,
    /// Order of joining: the first member becomes leader when there is none.
    joined_sequence: u64,
}

impl Member {
    fn touch(&mut self, now: Instant) {
        self.session_deadline = now + self.session_timeout;
    }

    fn expired(&self, now: Instant) -> bool {
        self.awaiting_join.is_none() && self.awaiting_sync.is_none() && now >= self.session_deadline
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

/// One group's membership and rebalance state.
pub struct Group {
    id: String,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Instance id -> member id of each static member (every value is a key of `members`).
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, each with its deadline to rejoin.
    pending: BTreeMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// While set, a rebalance of a group that was empty waits for more members.
    initial_delay_until: Option<Instant>,
    next_join_sequence: u64,
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            next_join_sequence: 0,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// Nothing left to remember: no members and none pending.
    pub fn is_vacant(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    pub fn describe_members(&self) -> Vec<MemberDescription> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members
            .iter()
            .map(|(member_id, member)| MemberDescription {
                member_id: member_id.clone(),
                instance_id: member.instance_id.clone(),
                client_id: member.client_id.clone(),
                metadata: member.metadata_for(protocol),
                assignment: member.assignment.clone(),
            })
            .collect()
    }

    /// Handles a JoinGroup; the answer goes to `reply`, now or when the rebalance completes.
    /// `new_member_id` makes a fresh member id from a prefix (the instance id of a static
    /// member, else the client id), as Kafka forms them.
    pub fn join(
        &mut self,
        request: JoinRequest,
        settings: &GroupSettings,
        now: Instant,
        new_member_id: impl FnOnce(&str) -> String,
        reply: oneshot::Sender<JoinOutcome>,
    ) {
        if let Err(error) = self.check_join(&request, settings) {
            refuse_join(reply, error, &request.member_id);
            return;
        }
        if request.member_id.is_empty() {
            let returning = request
                .instance_id
                .as_ref()
                .and_then(|instance| self.static_members.get(instance).cloned());
            if let Some(old_member_id) = returning {
                let member_id = new_member_id(request.instance_id.as_deref().unwrap_or(""));
                self.rejoin_static(old_member_id, member_id, request, settings, now, reply);
                return;
            }
            if self.members.len() + self.pending.len() >= settings.max_size {
                let error = GroupError::GroupFull {
                    members_max: settings.max_size,
                };
                refuse_join(reply, error, "");
                return;
            }
            let prefix = request.instance_id.as_deref().unwrap_or(&request.client_id);
            let member_id = new_member_id(prefix);
            // A static member skips the round trip: its instance id already names it.
            if request.require_known_member_id && request.instance_id.is_none() {
                let deadline = now + session_timeout(&request);
                self.pending.insert(member_id.clone(), deadline);
                refuse_join(reply, GroupError::MemberIdRequired, &member_id);
                return;
            }
            self.add_member(member_id, request, settings, now, reply);
            return;
        }
        if let Some(instance_id) =
            self.fenced_instance(request.instance_id.as_deref(), &request.member_id)
        {
            let error = GroupError::FencedInstance {
                instance_id: instance_id.to_string(),
                member_id: request.member_id.clone(),
            };
            refuse_join(reply, error, &request.member_id);
            return;
        }
        if self.pending.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            self.add_member(member_id, request, settings, now, reply);
            return;
        }
        let member_id = request.member_id.clone();
        let Some(member) = self.members.get_mut(&member_id) else {
            let error = GroupError::UnknownMember {
                member_id: member_id.clone(),
            };
            refuse_join(reply, error, &member_id);
            return;
        };
        let unchanged = member.protocols == request.protocols;
        member.session_timeout = session_timeout(&request);
        member.rebalance_timeout = rebalance_timeout(&request);
        member.protocols = request.protocols;
        member.touch(now);
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.await_join(&member_id, reply);
                self.try_complete_join(now);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && !(self.state == GroupState::Stable && is_leader) =>
            {
                // A retry of a join the member already got an answer to: answer the same.
                let _ = reply.send(Ok(self.join_answer(&member_id)));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.prepare_rebalance(settings, now);
                self.await_join(&member_id, reply);
                self.try_complete_join(now);
            }
            GroupState::Empty => {
                let error = GroupError::UnknownMember {
                    member_id: member_id.clone(),
                };
                refuse_join(reply, error, &member_id);
            }
        }
    }

    /// A static member is back under a new member id: it takes over the old membership and
    /// assignment, and the old member id is fenced. A Stable group whose chosen protocol
    /// stays the same answers at once with the current generation (no rebalance); a group
    /// completing a rebalance starts another, because the leader may be assigning to the
    /// old member id.
    fn rejoin_static(
        &mut self,
        old_member_id: String,
        member_id: String,
        request: JoinRequest,
        settings: &GroupSettings,
        now: Instant,
        reply: oneshot::Sender<JoinOutcome>,
    ) {
        let Some(mut member) = self.members.remove(&old_member_id) else {
            // `static_members` only names members; keep the map honest if it ever did not.
            tracing::error!(group = %self.id, member = %old_member_id, "static member missing");
            if let Some(instance) = &request.instance_id {
                self.static_members.remove(instance);
            }
            let error = GroupError::UnknownMember {
                member_id: old_member_id,
            };
            refuse_join(reply, error, "");
            return;
        };
        let fenced = GroupError::FencedInstance {
            instance_id: request.instance_id.clone().unwrap_or_default(),
            member_id: old_member_id.clone(),
        };
        if let Some(waiting) = member.awaiting_join.take() {
            refuse_join(waiting, fenced.clone(), &old_member_id);
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            refuse_sync(waiting, fenced);
        }
        member.client_id = request.client_id.clone();
        member.session_timeout = session_timeout(&request);
        member.rebalance_timeout = rebalance_timeout(&request);
        member.protocols = request.protocols;
        member.touch(now);
        self.members.insert(member_id.clone(), member);
        if self.leader.as_deref() == Some(old_member_id.as_str()) {
            self.leader = Some(member_id.clone());
        }
        if let Some(instance) = request.instance_id {
            tracing::info!(
                group = %self.id,
                instance = %instance,
                old = %old_member_id,
                new = %member_id,
                "static member rejoined; the old member id is fenced"
            );
            self.static_members.insert(instance, member_id.clone());
        }
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol_name => {
                let _ = reply.send(Ok(self.join_answer(&member_id)));
            }
            GroupState::PreparingRebalance => {
                self.await_join(&member_id, reply);
                self.try_complete_join(now);
            }
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty => {
                self.prepare_rebalance(settings, now);
                self.await_join(&member_id, reply);
                self.try_complete_join(now);
            }
        }
    }

    /// `instance_id`, if it is bound to another member id than `member_id` (the caller is
    /// an older incarnation of a static member that has since rejoined).
    fn fenced_instance<'a>(
        &self,
        instance_id: Option<&'a str>,
        member_id: &str,
    ) -> Option<&'a str> {
        instance_id.filter(|instance| {
            self.static_members
                .get(*instance)
                .is_some_and(|bound| bound != member_id)
        })
    }

    /// Why a JoinGroup is refused before it touches the group, if it is.
    fn check_join(
        &self,
        request: &JoinRequest,
        settings: &GroupSettings,
    ) -> Result<(), GroupError> {
        let session = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
        if request.session_timeout_ms < 0
            || session < settings.session_timeout_min
            || session > settings.session_timeout_max
        {
            return Err(GroupError::InvalidSessionTimeout {
                session_timeout_ms: request.session_timeout_ms,
            });
        }
        let metadata_bytes: usize = request
            .protocols
            .iter()
            .map(|(name, metadata)| name.len() + metadata.len())
            .sum();
        if request.protocols.len() > settings.protocols_max
            || metadata_bytes > settings.member_metadata_bytes_max
        {
            return Err(GroupError::MetadataTooLarge {
                protocols: request.protocols.len(),
                metadata_bytes,
            });
        }
        let inconsistent = || GroupError::InconsistentProtocol {
            protocol_type: request.protocol_type.clone(),
        };
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(inconsistent());
        }
        if !self.members.is_empty() {
            let same_type = self.protocol_type.as_deref() == Some(request.protocol_type.as_str());
            let candidates = self.candidate_protocols(None);
            let shares_one = request
                .protocols
                .iter()
                .any(|(name, _)| candidates.contains(name));
            if !same_type || !shares_one {
                return Err(inconsistent());
            }
        }
        Ok(())
    }

    /// Protocols every member (but `except`) supports, in the first member's order.
    fn candidate_protocols(&self, except: Option<&str>) -> Vec<String> {
        let mut others = self
            .members
            .iter()
            .filter(|(member_id, _)| Some(member_id.as_str()) != except)
            .map(|(_, member)| member);
        let Some(first) = others.next() else {
            return Vec::new();
        };
        let mut candidates: Vec<String> = first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        for member in others {
            candidates.retain(|name| member.protocols.iter().any(|(other, _)| other == name));
        }
        candidates
    }

    fn add_member(
        &mut self,
        member_id: String,
        request: JoinRequest,
        settings: &GroupSettings,
        now: Instant,
        reply: oneshot::Sender<JoinOutcome>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        let mut member = Member {
            client_id: request.client_id.clone(),
            instance_id: request.instance_id.clone(),
            session_timeout: session_timeout(&request),
            rebalance_timeout: rebalance_timeout(&request),
            protocols: request.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(reply),
            awaiting_sync: None,
            session_deadline: now,
            joined_sequence: self.next_join_sequence,
        };
        member.touch(now);
        self.next_join_sequence += 1;
        self.members.insert(member_id, member);
        match self.state {
            GroupState::PreparingRebalance => {
                // More members are arriving at an empty group: keep waiting a while.
                if let (Some(until), Some(deadline)) =
                    (self.initial_delay_until, self.rebalance_deadline)
                {
                    let extended = (now + settings.initial_rebalance_delay).min(deadline);
                    self.initial_delay_until = Some(until.max(extended));
                }
            }
            _ => self.prepare_rebalance(settings, now),
        }
        self.try_complete_join(now);
    }

    fn await_join(&mut self, member_id: &str, reply: oneshot::Sender<JoinOutcome>) {
        if let Some(member) = self.members.get_mut(member_id) {
            if let Some(previous) = member.awaiting_join.replace(reply) {
                // The member sent a second JoinGroup before the first was answered.
                refuse_join(previous, GroupError::RebalanceInProgress, member_id);
            }
        }
    }

    /// Starts a rebalance: members must rejoin within the largest rebalance timeout.
    fn prepare_rebalance(&mut self, settings: &GroupSettings, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiting) = member.awaiting_sync.take() {
                    refuse_sync(waiting, GroupError::RebalanceInProgress);
                }
            }
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|member| member.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let deadline = now + rebalance_timeout;
        self.initial_delay_until = (self.state == GroupState::Empty)
            .then(|| (now + settings.initial_rebalance_delay).min(deadline));
        self.rebalance_deadline = Some(deadline);
        self.state = GroupState::PreparingRebalance;
        tracing::debug!(group = %self.id, generation = self.generation_id, "rebalance started");
    }

    /// Completes the join phase once every member rejoined (and no new member is still
    /// expected), or when the rebalance timeout has passed.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self
            .members
            .values()
            .all(|member| member.awaiting_join.is_some())
            && self.pending.is_empty();
        let delay_over = self.initial_delay_until.is_none_or(|until| now >= until);
        let timed_out = self
            .rebalance_deadline
            .is_some_and(|deadline| now >= deadline);
        if (all_joined && delay_over) || timed_out {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        // Dynamic members that did not rejoin are gone; static ones stay until their
        // session expires (Kafka's rule), so a restarting static member keeps its place.
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.awaiting_join.is_none() && member.instance_id.is_none())
            .map(|(member_id, _)| member_id.clone())
            .collect();
        for member_id in gone {
            tracing::info!(group = %self.id, member = %member_id, "member did not rejoin in time; removed");
            self.members.remove(&member_id);
        }
        let joined = self
            .members
            .values()
            .any(|member| member.awaiting_join.is_some());
        if !joined && !self.members.is_empty() {
            // Only static members that are away: wait another round for them (their
            // sessions expire meanwhile if they do not come back).
            let rebalance_timeout = self
                .members
                .values()
                .map(|member| member.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.rebalance_deadline = Some(now + rebalance_timeout);
            return;
        }
        self.generation_id = self.generation_id.wrapping_add(1);
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        // The leader must be a member that rejoined: it is the one that assigns.
        let leader_joined = self
            .leader
            .as_ref()
            .and_then(|leader| self.members.get(leader))
            .is_some_and(|member| member.awaiting_join.is_some());
        if !leader_joined {
            self.leader = self
                .members
                .iter()
                .filter(|(_, member)| member.awaiting_join.is_some())
                .min_by_key(|(_, member)| member.joined_sequence)
                .map(|(member_id, _)| member_id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        tracing::info!(
            group = %self.id,
            generation = self.generation_id,
            members = self.members.len(),
            protocol = self.protocol_name.as_deref().unwrap_or(""),
            "rebalance joined"
        );
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let answer = self.join_answer(&member_id);
            if let Some(member) = self.members.get_mut(&member_id) {
                member.touch(now);
                if let Some(reply) = member.awaiting_join.take() {
                    let _ = reply.send(Ok(answer));
                }
            }
        }
    }

    /// The protocol most members prefer among those every member supports.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols(None);
        let mut votes: Vec<(String, usize)> =
            candidates.iter().map(|name| (name.clone(), 0)).collect();
        for member in self.members.values() {
            let preferred = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(name));
            if let Some((name, _)) = preferred {
                if let Some(entry) = votes.iter_mut().find(|(candidate, _)| candidate == name) {
                    entry.1 += 1;
                }
            }
        }
        // The first candidate wins a tie (max_by_key keeps the last of equals: reverse).
        votes
            .into_iter()
            .rev()
            .max_by_key(|(_, count)| *count)
            .map(|(name, _)| name)
    }

    /// The current generation's JoinGroup answer for a member.
    fn join_answer(&self, member_id: &str) -> JoinAnswer {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, member)| (id.clone(), member.metadata_for(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinAnswer {
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Handles a SyncGroup; the answer goes to `reply`, now or when the leader's arrives.
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        reply: oneshot::Sender<SyncOutcome>,
    ) {
        if let Err(error) = self.check_member(member_id, instance_id, generation_id) {
            refuse_sync(reply, error);
            return;
        }
        let is_leader = self.leader.as_deref() == Some(member_id);
        match self.state {
            GroupState::Empty => {
                let error = GroupError::UnknownMember {
                    member_id: member_id.to_string(),
                };
                refuse_sync(reply, error);
            }
            GroupState::PreparingRebalance => {
                refuse_sync(reply, GroupError::RebalanceInProgress);
            }
            GroupState::Stable => {
                let answer = self.sync_answer(member_id);
                if let Some(member) = self.members.get_mut(member_id) {
                    member.touch(now);
                }
                let _ = reply.send(Ok(answer));
            }
            GroupState::CompletingRebalance => {
                if let Some(member) = self.members.get_mut(member_id) {
                    member.touch(now);
                    if let Some(previous) = member.awaiting_sync.replace(reply) {
                        refuse_sync(previous, GroupError::RebalanceInProgress);
                    }
                }
                if is_leader {
                    self.install_assignments(assignments, now);
                }
            }
        }
    }

    fn install_assignments(&mut self, assignments: Vec<(String, Bytes)>, now: Instant) {
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
        }
        for (member_id, assignment) in assignments {
            if let Some(member) = self.members.get_mut(&member_id) {
                member.assignment = assignment;
            }
        }
        self.state = GroupState::Stable;
        tracing::info!(group = %self.id, generation = self.generation_id, "group stable");
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let answer = self.sync_answer(&member_id);
            if let Some(member) = self.members.get_mut(&member_id) {
                if let Some(reply) = member.awaiting_sync.take() {
                    member.touch(now);
                    let _ = reply.send(Ok(answer));
                }
            }
        }
    }

    fn sync_answer(&self, member_id: &str) -> SyncAnswer {
        SyncAnswer {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|member| member.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Refuses a caller that is not (or no longer) the member it claims to be (Kafka's
    /// `validateMember`): a fenced or unknown static member, or an unknown member id.
    fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                None => {
                    return Err(GroupError::UnknownInstance {
                        instance_id: instance.to_string(),
                    })
                }
                Some(bound) if bound != member_id => {
                    tracing::info!(
                        group = %self.id,
                        instance,
                        member = member_id,
                        bound = %bound,
                        "request from a fenced static member"
                    );
                    return Err(GroupError::FencedInstance {
                        instance_id: instance.to_string(),
                        member_id: member_id.to_string(),
                    });
                }
                Some(_) => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMember {
                member_id: member_id.to_string(),
            });
        }
        Ok(())
    }

    /// [`validate_member`](Self::validate_member), then a refusal if the generation is not
    /// the current one.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        self.validate_member(member_id, instance_id)?;
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration {
                generation: generation_id,
                current: self.generation_id,
            });
        }
        Ok(())
    }

    /// Handles a Heartbeat: keeps the member's session alive and tells it of a rebalance.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        self.check_member(member_id, instance_id, generation_id)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.touch(now);
        }
        match self.state {
            GroupState::Empty => Err(GroupError::UnknownMember {
                member_id: member_id.to_string(),
            }),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// Handles a LeaveGroup for one member; the group rebalances without it. A static member
    /// is named by its instance id (with its member id, or with none: an operator removing
    /// it); an older incarnation's leave is refused as fenced.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        settings: &GroupSettings,
        now: Instant,
    ) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            let Some(bound) = self.static_members.get(instance).cloned() else {
                return Err(GroupError::UnknownInstance {
                    instance_id: instance.to_string(),
                });
            };
            if !member_id.is_empty() && bound != member_id {
                return Err(GroupError::FencedInstance {
                    instance_id: instance.to_string(),
                    member_id: member_id.to_string(),
                });
            }
            tracing::info!(group = %self.id, member = %bound, instance, "static member left");
            self.remove_member(&bound, settings, now);
            return Ok(());
        }
        if self.pending.remove(member_id).is_some() {
            self.try_complete_join(now);
            return Ok(());
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMember {
                member_id: member_id.to_string(),
            });
        }
        tracing::info!(group = %self.id, member = %member_id, "member left");
        self.remove_member(member_id, settings, now);
        Ok(())
    }

    fn remove_member(&mut self, member_id: &str, settings: &GroupSettings, now: Instant) {
        if let Some(mut member) = self.members.remove(member_id) {
            if let Some(instance) = &member.instance_id {
                self.static_members.remove(instance);
            }
            let removed = GroupError::UnknownMember {
                member_id: member_id.to_string(),
            };
            if let Some(reply) = member.awaiting_join.take() {
                refuse_join(reply, removed.clone(), member_id);
            }
            if let Some(reply) = member.awaiting_sync.take() {
                refuse_sync(reply, removed);
            }
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(settings, now)
            }
            GroupState::PreparingRebalance | GroupState::Empty => {}
        }
        self.try_complete_join(now);
    }

    /// Whether an OffsetCommit from this member and generation may commit, in Kafka's order:
    /// a simple commit (generation -1) only to an Empty group; otherwise the member must be
    /// the current holder of its id (and instance id) at the current generation; and no
    /// commit while the group completes a rebalance.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.check_member(member_id, instance_id, generation_id)?;
        } else if self.state != GroupState::Empty {
            return Err(GroupError::UnknownMember {
                member_id: member_id.to_string(),
            });
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.touch(now);
        }
        Ok(())
    }

    /// Expires silent members and pending ids, and ends a rebalance whose time is up.
    pub fn tick(&mut self, settings: &GroupSettings, now: Instant) {
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.expired(now))
            .map(|(member_id, _)| member_id.clone())
            .collect();
        for member_id in expired {
            tracing::info!(group = %self.id, member = %member_id, "session expired; member removed");
            self.remove_member(&member_id, settings, now);
        }
        if self.pending.len() != before {
            tracing::debug!(group = %self.id, "pending member ids expired");
        }
        self.try_complete_join(now);
    }

    /// Refuses every waiting request: this core stops serving the group (its partition's
    /// leadership moved, or the broker shuts down), so the clients look for the coordinator
    /// again.
    pub fn abandon_waiters(&mut self) {
        let unloaded = GroupError::Coordinator(CoordinatorError::Unloaded);
        for (member_id, member) in &mut self.members {
            if let Some(reply) = member.awaiting_join.take() {
                refuse_join(reply, unloaded.clone(), member_id);
            }
            if let Some(reply) = member.awaiting_sync.take() {
                refuse_sync(reply, unloaded.clone());
            }
        }
    }
}

fn session_timeout(request: &JoinRequest) -> Duration {
    Duration::from_millis(request.session_timeout_ms.max(0) as u64)
}

/// JoinGroup v0 has no rebalance timeout: Kafka uses the session timeout.
fn rebalance_timeout(request: &JoinRequest) -> Duration {
    if request.rebalance_timeout_ms < 0 {
        session_timeout(request)
    } else {
        Duration::from_millis(request.rebalance_timeout_ms as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GroupSettings {
        GroupSettings {
            initial_rebalance_delay: Duration::ZERO,
            ..GroupSettings::default()
        }
    }

    fn request(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            client_id: "client".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|name| (name.to_string(), Bytes::from(format!("{member_id}:{name}"))))
                .collect(),
            require_known_member_id: false,
            instance_id: None,
        }
    }

    struct Ids(u32);
    impl Ids {
        fn next(&mut self) -> impl FnOnce(&str) -> String {
            self.0 += 1;
            let id = format!("m{}", self.0);
            move |_prefix: &str| id
        }
    }

    fn join(
        group: &mut Group,
        ids: &mut Ids,
        request: JoinRequest,
        now: Instant,
    ) -> oneshot::Receiver<JoinOutcome> {
        let (reply, answer) = oneshot::channel();
        group.join(request, &settings(), now, ids.next(), reply);
        answer
    }

    /// The answer, if one came; a refusal fails the test.
    fn answered<T, E: std::fmt::Debug>(answer: &mut oneshot::Receiver<Result<T, E>>) -> Option<T> {
        let outcome = answer.try_recv().expect("reply not dropped")?;
        Some(outcome.expect("answered, not refused"))
    }

    /// The refusal, if an answer came; an answer that is not one fails the test.
    fn refused<T: std::fmt::Debug, E>(answer: &mut oneshot::Receiver<Result<T, E>>) -> Option<E> {
        let outcome = answer.try_recv().expect("reply not dropped")?;
        Some(outcome.expect_err("refused"))
    }

    #[test]
    fn member_id_required_then_join_sync_and_stable() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let now = Instant::now();
        let mut first = request("", &["range"]);
        first.require_known_member_id = true;
        let mut answer = join(&mut group, &mut ids, first, now);
        let refusal = refused(&mut answer).expect("answered at once");
        assert!(matches!(refusal.error, GroupError::MemberIdRequired));
        assert_eq!(refusal.member_id, "m1", "the id to join again with");

        let mut answer = join(&mut group, &mut ids, request("m1", &["range"]), now);
        let outcome = answered(&mut answer).expect("alone: completes at once");
        assert_eq!(outcome.generation_id, 1);
        assert_eq!(outcome.leader, "m1");
        assert_eq!(outcome.members.len(), 1);
        assert_eq!(group.state(), GroupState::CompletingRebalance);

        let (reply, mut synced) = oneshot::channel();
        group.sync(
            "m1",
            None,
            1,
            vec![("m1".into(), Bytes::from("p0"))],
            now,
            reply,
        );
        let outcome = answered(&mut synced).expect("leader's sync completes");
        assert_eq!(outcome.assignment, Bytes::from("p0"));
        assert_eq!(group.state(), GroupState::Stable);
        assert!(group.heartbeat("m1", None, 1, now).is_ok());
        assert!(matches!(
            group.heartbeat("m1", None, 0, now),
            Err(GroupError::IllegalGeneration { .. })
        ));
        assert!(matches!(
            group.heartbeat("nobody", None, 1, now),
            Err(GroupError::UnknownMember { .. })
        ));
    }

    /// Two members stable; a third joins: the first two learn of it through heartbeats,
    /// rejoin, and get the new generation; the follower's sync waits for the leader.
    #[test]
    fn a_new_member_rebalances_the_group() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let now = Instant::now();
        let mut a = join(&mut group, &mut ids, request("", &["range"]), now);
        let a_id = answered(&mut a).expect("alone").member_id;
        let (reply, _synced) = oneshot::channel();
        group.sync(&a_id, None, 1, vec![], now, reply);
        assert_eq!(group.state(), GroupState::Stable);

        let mut b = join(&mut group, &mut ids, request("", &["range"]), now);
        assert!(answered(&mut b).is_none(), "waits for the others to rejoin");
        assert!(matches!(
            group.heartbeat(&a_id, None, 1, now),
            Err(GroupError::RebalanceInProgress)
        ));
        let mut a = join(&mut group, &mut ids, request(&a_id, &["range"]), now);
        let a_outcome = answered(&mut a).expect("everyone rejoined");
        let b_outcome = answered(&mut b).expect("everyone rejoined");
        assert_eq!(a_outcome.generation_id, 2);
        assert_eq!(b_outcome.generation_id, 2);
        assert_eq!(a_outcome.leader, a_id, "the leader stays leader");
        assert_eq!(a_outcome.members.len(), 2);
        assert!(b_outcome.members.is_empty(), "only the leader sees members");

        let (reply, mut b_synced) = oneshot::channel();
        group.sync(&b_outcome.member_id, None, 2, vec![], now, reply);
        assert!(answered(&mut b_synced).is_none(), "waits for the leader");
        let (reply, mut a_synced) = oneshot::channel();
        let plan = vec![
            (a_id.clone(), Bytes::from("a")),
            (b_outcome.member_id.clone(), Bytes::from("b")),
        ];
        group.sync(&a_id, None, 2, plan, now, reply);
        assert_eq!(answered(&mut a_synced).expect("a").assignment, "a");
        assert_eq!(answered(&mut b_synced).expect("b").assignment, "b");
    }

    #[test]
    fn a_silent_member_expires_and_a_late_one_is_dropped_at_the_rebalance_timeout() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let start = Instant::now();
        let mut a = join(&mut group, &mut ids, request("", &["range"]), start);
        let a_id = answered(&mut a).expect("alone").member_id;
        let (reply, _) = oneshot::channel();
        group.sync(&a_id, None, 1, vec![], start, reply);
        let mut b = join(&mut group, &mut ids, request("", &["range"]), start);
        // a never rejoins, but keeps heartbeating: the rebalance waits its 30 s.
        let later = start + Duration::from_secs(9);
        assert!(matches!(
            group.heartbeat(&a_id, None, 1, later),
            Err(GroupError::RebalanceInProgress)
        ));
        group.tick(&settings(), later);
        assert!(answered(&mut b).is_none());
        group.tick(&settings(), start + Duration::from_secs(31));
        let outcome = answered(&mut b).expect("rebalance timed out");
        assert_eq!(outcome.generation_id, 2);
        assert!(!group.has_member(&a_id), "a did not rejoin in time");
        assert_eq!(outcome.leader, outcome.member_id);

        // b stops heartbeating after its sync: its session (10 s) expires.
        let (reply, _) = oneshot::channel();
        group.sync(
            &outcome.member_id,
            None,
            2,
            vec![],
            start + Duration::from_secs(31),
            reply,
        );
        group.tick(&settings(), start + Duration::from_secs(42));
        assert!(!group.has_member(&outcome.member_id));
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(group.generation_id(), 3);
        assert!(group.is_vacant());
    }

    #[test]
    fn leaving_rebalances_and_the_majority_protocol_wins() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let now = Instant::now();
        // With a delay, three members arrive before the first generation forms.
        let delayed = GroupSettings {
            initial_rebalance_delay: Duration::from_secs(3),
            ..settings()
        };
        let mut answers = Vec::new();
        for protocols in [
            &["roundrobin", "range"][..],
            &["range"],
            &["range", "roundrobin"],
        ] {
            let (reply, answer) = oneshot::channel();
            group.join(request("", protocols), &delayed, now, ids.next(), reply);
            answers.push(answer);
        }
        assert!(answers.iter_mut().all(|answer| answered(answer).is_none()));
        group.tick(&delayed, now + Duration::from_secs(4));
        let outcomes: Vec<JoinAnswer> = answers
            .iter_mut()
            .map(|answer| answered(answer).expect("delay over"))
            .collect();
        assert!(outcomes.iter().all(|outcome| outcome.generation_id == 1));
        // roundrobin is not supported by the second member.
        assert_eq!(outcomes[0].protocol_name.as_deref(), Some("range"));
        assert!(group.leave("m2", None, &delayed, now).is_ok());
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert!(matches!(
            group.leave("m2", None, &delayed, now),
            Err(GroupError::UnknownMember { .. })
        ));
    }

    #[test]
    fn inconsistent_protocols_and_bad_timeouts_are_refused() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let now = Instant::now();
        let mut a = join(&mut group, &mut ids, request("", &["range"]), now);
        answered(&mut a).expect("alone");
        let mut other = join(&mut group, &mut ids, request("", &["sticky"]), now);
        assert!(matches!(
            refused(&mut other).expect("refused").error,
            GroupError::InconsistentProtocol { .. }
        ));
        let mut bad = request("", &["range"]);
        bad.session_timeout_ms = 10;
        let mut short = join(&mut group, &mut ids, bad, now);
        assert!(matches!(
            refused(&mut short).expect("refused").error,
            GroupError::InvalidSessionTimeout { .. }
        ));
        let mut huge = request("", &["range"]);
        huge.protocols[0].1 = Bytes::from(vec![0u8; (1 << 20) + 1]);
        let mut oversized = join(&mut group, &mut ids, huge, now);
        assert!(matches!(
            refused(&mut oversized).expect("refused").error,
            GroupError::MetadataTooLarge { .. }
        ));
        let mut unknown = join(&mut group, &mut ids, request("ghost", &["range"]), now);
        assert!(matches!(
            refused(&mut unknown).expect("refused").error,
            GroupError::UnknownMember { .. }
        ));
    }

    #[test]
    fn commits_follow_kafkas_generation_rules() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let now = Instant::now();
        assert!(group.check_commit("", None, -1, now).is_ok());
        let mut a = join(&mut group, &mut ids, request("", &["range"]), now);
        let a_id = answered(&mut a).expect("alone").member_id;
        assert!(matches!(
            group.check_commit(&a_id, None, 1, now),
            Err(GroupError::RebalanceInProgress)
        ));
        let (reply, _) = oneshot::channel();
        group.sync(&a_id, None, 1, vec![], now, reply);
        assert!(group.check_commit(&a_id, None, 1, now).is_ok());
        assert!(matches!(
            group.check_commit(&a_id, None, 0, now),
            Err(GroupError::IllegalGeneration { .. })
        ));
        assert!(matches!(
            group.check_commit("", None, -1, now),
            Err(GroupError::UnknownMember { .. })
        ));
    }

    /// A member that was replaced in a rebalance (it left, or its session expired) cannot
    /// commit over the new owner of its partitions, whatever the group's state.
    #[test]
    fn a_member_that_lost_its_partitions_cannot_commit() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let start = Instant::now();
        let mut a = join(&mut group, &mut ids, request("", &["range"]), start);
        let a_id = answered(&mut a).expect("alone").member_id;
        let (reply, _) = oneshot::channel();
        group.sync(&a_id, None, 1, vec![], start, reply);
        let mut b = join(&mut group, &mut ids, request("", &["range"]), start);
        // During the join phase a still owns its partitions at generation 1: Kafka accepts.
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert!(group.check_commit(&a_id, None, 1, start).is_ok());
        // a never rejoins: the rebalance completes without it.
        let later = start + Duration::from_secs(31);
        group.tick(&settings(), later);
        let b_id = answered(&mut b).expect("timed out").member_id;
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        for generation in [1, 2] {
            assert!(
                matches!(
                    group.check_commit(&a_id, None, generation, later),
                    Err(GroupError::UnknownMember { .. })
                ),
                "a's commit at generation {generation}"
            );
        }
        assert!(
            matches!(
                group.check_commit(&b_id, None, 2, later),
                Err(GroupError::RebalanceInProgress)
            ),
            "not before the assignment is out"
        );
        let (reply, _) = oneshot::channel();
        group.sync(&b_id, None, 2, vec![], later, reply);
        assert!(group.check_commit(&b_id, None, 2, later).is_ok());
        assert!(matches!(
            group.check_commit(&b_id, None, 1, later),
            Err(GroupError::IllegalGeneration { .. })
        ));
        assert!(
            matches!(
                group.check_commit("", None, -1, later),
                Err(GroupError::UnknownMember { .. })
            ),
            "no simple commits to a group with members"
        );
        // b leaves: the group is Empty and takes simple commits again.
        assert!(group.leave(&b_id, None, &settings(), later).is_ok());
        assert_eq!(group.state(), GroupState::Empty);
        assert!(matches!(
            group.check_commit(&b_id, None, 3, later),
            Err(GroupError::UnknownMember { .. })
        ));
        assert!(group.check_commit("", None, -1, later).is_ok());
    }

    fn static_request(member_id: &str, instance: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            instance_id: Some(instance.to_string()),
            require_known_member_id: true,
            ..request(member_id, protocols)
        }
    }

    /// Two static members are Stable; one restarts (a new member id, the same instance id):
    /// it gets its old assignment at the same generation, nobody rebalances, and the old
    /// member id is fenced from every request.
    #[test]
    fn a_static_member_restarts_without_a_rebalance_and_fences_its_predecessor() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let now = Instant::now();
        let mut a = join(
            &mut group,
            &mut ids,
            static_request("", "a", &["range"]),
            now,
        );
        let a_outcome = answered(&mut a).expect("static: no MEMBER_ID_REQUIRED round trip");
        let a_id = a_outcome.member_id;
        let (reply, _) = oneshot::channel();
        group.sync(&a_id, Some("a"), 1, vec![], now, reply);
        let mut b = join(
            &mut group,
            &mut ids,
            static_request("", "b", &["range"]),
            now,
        );
        let mut a = join(
            &mut group,
            &mut ids,
            static_request(&a_id, "a", &["range"]),
            now,
        );
        let b_id = answered(&mut b).expect("joined").member_id;
        answered(&mut a).expect("joined");
        assert_eq!(group.generation_id(), 2);
        let plan = vec![
            (a_id.clone(), Bytes::from("a-parts")),
            (b_id.clone(), Bytes::from("b-parts")),
        ];
        let (reply, _) = oneshot::channel();
        group.sync(&b_id, Some("b"), 2, vec![], now, reply);
        let (reply, _) = oneshot::channel();
        group.sync(&a_id, Some("a"), 2, plan, now, reply);
        assert_eq!(group.state(), GroupState::Stable);

        // a restarts: it comes back with no member id under its instance id.
        let mut again = join(
            &mut group,
            &mut ids,
            static_request("", "a", &["range"]),
            now,
        );
        let outcome = answered(&mut again).expect("answered at once");
        assert_eq!(outcome.generation_id, 2, "no rebalance");
        assert_eq!(outcome.leader, outcome.member_id, "it keeps the leadership");
        let new_a = outcome.member_id;
        assert_ne!(new_a, a_id);
        assert_eq!(group.state(), GroupState::Stable);
        assert!(
            group.heartbeat(&b_id, Some("b"), 2, now).is_ok(),
            "b is not asked to rejoin"
        );
        let (reply, mut synced) = oneshot::channel();
        group.sync(&new_a, Some("a"), 2, vec![], now, reply);
        assert_eq!(answered(&mut synced).expect("stable").assignment, "a-parts");

        // The old incarnation is fenced everywhere.
        assert!(matches!(
            group.heartbeat(&a_id, Some("a"), 2, now),
            Err(GroupError::FencedInstance { .. })
        ));
        assert!(matches!(
            group.check_commit(&a_id, Some("a"), 2, now),
            Err(GroupError::FencedInstance { .. })
        ));
        let mut zombie = join(
            &mut group,
            &mut ids,
            static_request(&a_id, "a", &["range"]),
            now,
        );
        assert!(matches!(
            refused(&mut zombie).expect("refused").error,
            GroupError::FencedInstance { .. }
        ));
        assert!(matches!(
            group.leave(&a_id, Some("a"), &settings(), now),
            Err(GroupError::FencedInstance { .. })
        ));
        assert!(matches!(
            group.heartbeat(&new_a, Some("nobody"), 2, now),
            Err(GroupError::UnknownInstance { .. })
        ));
        assert!(group.check_commit(&new_a, Some("a"), 2, now).is_ok());
        assert_eq!(group.describe_members().len(), 2);
    }

    /// A static member that misses a rebalance keeps its place until its session expires;
    /// an operator can remove it by instance id alone.
    #[test]
    fn an_absent_static_member_stays_until_its_session_expires() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let start = Instant::now();
        let mut a = join(
            &mut group,
            &mut ids,
            static_request("", "a", &["range"]),
            start,
        );
        let a_id = answered(&mut a).expect("alone").member_id;
        let (reply, _) = oneshot::channel();
        group.sync(&a_id, Some("a"), 1, vec![], start, reply);
        // a goes quiet; a dynamic member joins and the rebalance times out (30 s) before
        // a's session (10 s from its last request)... so a's session ends first.
        let mut c = join(&mut group, &mut ids, request("", &["range"]), start);
        group.tick(&settings(), start + Duration::from_secs(5));
        assert!(answered(&mut c).is_none());
        assert!(group.has_member(&a_id), "within its session");
        group.tick(&settings(), start + Duration::from_secs(11));
        assert!(!group.has_member(&a_id), "session expired");
        let c_outcome = answered(&mut c).expect("the rest rejoined");
        assert_eq!(c_outcome.leader, c_outcome.member_id);

        // Removal by instance id alone (LeaveGroup v3 with an empty member id).
        let now = start + Duration::from_secs(12);
        let mut b = join(
            &mut group,
            &mut ids,
            static_request("", "b", &["range"]),
            now,
        );
        assert!(answered(&mut b).is_none(), "c must rejoin first");
        assert!(group.leave("", Some("b"), &settings(), now).is_ok());
        assert!(matches!(
            refused(&mut b).expect("removed").error,
            GroupError::UnknownMember { .. }
        ));
        assert!(matches!(
            group.leave("", Some("b"), &settings(), now),
            Err(GroupError::UnknownInstance { .. })
        ));
    }

    /// While a rebalance completes, the leader may be assigning to the old member id: a
    /// static member's return starts another rebalance there.
    #[test]
    fn a_static_member_returning_mid_sync_rebalances() {
        let mut group = Group::new("g");
        let mut ids = Ids(0);
        let now = Instant::now();
        let mut b = join(&mut group, &mut ids, request("", &["range"]), now);
        let b_id = answered(&mut b).expect("alone").member_id;
        let (reply, _) = oneshot::channel();
        group.sync(&b_id, None, 1, vec![], now, reply);
        let mut a = join(
            &mut group,
            &mut ids,
            static_request("", "a", &["range"]),
            now,
        );
        let mut b = join(&mut group, &mut ids, request(&b_id, &["range"]), now);
        let a_id = answered(&mut a).expect("joined").member_id;
        answered(&mut b).expect("joined");
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        // a (a follower) waits for the leader's assignment, then restarts before it comes.
        let (reply, mut old_sync) = oneshot::channel();
        group.sync(&a_id, Some("a"), 2, vec![], now, reply);
        let mut again = join(
            &mut group,
            &mut ids,
            static_request("", "a", &["range"]),
            now,
        );
        assert!(matches!(
            refused(&mut old_sync).expect("fenced"),
            GroupError::FencedInstance { .. }
        ));
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert!(answered(&mut again).is_none(), "waits for b to rejoin");
        let mut b = join(&mut group, &mut ids, request(&b_id, &["range"]), now);
        assert_eq!(answered(&mut again).expect("joined").generation_id, 3);
        assert_eq!(answered(&mut b).expect("joined").generation_id, 3);
    }
}
