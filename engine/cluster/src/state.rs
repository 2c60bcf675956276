//! The cluster's metadata: what the quorum replicates, and how each command changes it.
//!
//! `ClusterState` is a pure value. Every broker applies the same committed commands in the
//! same order, so every broker computes the same state; nothing here may read the clock, the
//! disk or a random number (ids and placements are chosen by the proposer and carried inside
//! the command).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A broker's id (Kafka's `node.id`).
pub type BrokerId = i32;

/// No leader: every replica that could lead without losing acknowledged data is down.
pub const NO_LEADER: BrokerId = -1;

/// A broker the cluster knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: BrokerId,
    /// Where clients reach its Kafka listener.
    pub host: String,
    pub port: i32,
    /// Fenced brokers missed their heartbeats: they lead nothing and are out of every ISR.
    pub fenced: bool,
}

/// Per-topic settings (a subset of Kafka's topic configs).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicConfig {
    pub segment_bytes: u64,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
}

/// Who holds one partition, and who leads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Every broker that stores the partition; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas: the leader and the followers that are caught up.
    pub isr: Vec<BrokerId>,
    /// The leader, or `NO_LEADER`.
    pub leader: BrokerId,
    /// Raised on every leader change; stamped into the batches the leader appends.
    pub leader_epoch: i32,
    /// Raised on every change of this partition's state (leader or ISR), so a leader's ISR
    /// change made against an older state can be refused.
    pub partition_epoch: i32,
    /// While a reassignment runs: the replicas the partition moves to. `replicas` then holds
    /// these and the old ones; once every target replica is in the ISR, the old ones go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<Vec<BrokerId>>,
}

impl PartitionState {
    /// Replicas being added by a running reassignment (Kafka's `adding_replicas`).
    pub fn adding_replicas(&self) -> Vec<BrokerId> {
        self.target_replicas
            .iter()
            .flatten()
            .copied()
            .filter(|replica| !self.isr.contains(replica))
            .collect()
    }

    /// Replicas a running reassignment removes at its end (Kafka's `removing_replicas`).
    pub fn removing_replicas(&self) -> Vec<BrokerId> {
        match &self.target_replicas {
            Some(target) => self
                .replicas
                .iter()
                .copied()
                .filter(|replica| !target.contains(replica))
                .collect(),
            None => Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub config: TopicConfig,
    /// One entry per partition, `partitions` long.
    pub assignment: Vec<PartitionState>,
}

impl Topic {
    pub fn partition(&self, partition: i32) -> Option<&PartitionState> {
        usize::try_from(partition)
            .ok()
            .and_then(|index| self.assignment.get(index))
    }
}

/// The cluster at one committed point. Immutable once published; replaced whole on change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterState {
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    pub topics: BTreeMap<String, Arc<Topic>>,
    /// Per-group settings set with IncrementalAlterConfigs on a GROUP resource (Kafka's
    /// group configs, such as `share.auto.offset.reset`), by group id, then by name. Only
    /// groups with a setting have an entry. Absent from states written before it existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// A change to the cluster state, as committed in the quorum's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker announces itself (at every start). Registering again means the broker
    /// restarted, and may have lost what it had not synced: it leaves every ISR and
    /// leadership as if fenced (a follower that caught up joins again through `AlterIsr`),
    /// and every partition it holds gets a new partition epoch, so an ISR change proposed
    /// from its progress before the restart is refused. Then it is live again, with its
    /// address updated. Send it once per process start.
    RegisterBroker {
        id: BrokerId,
        host: String,
        port: i32,
    },
    /// The controller saw no heartbeat from `id` within the session timeout.
    FenceBroker {
        id: BrokerId,
    },
    /// A fenced broker is heartbeating again.
    UnfenceBroker {
        id: BrokerId,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        config: TopicConfig,
        /// Replicas per partition, chosen by the proposer.
        replicas: Vec<Vec<BrokerId>>,
    },
    DeleteTopic {
        name: String,
    },
    /// A leader shrinks or grows its partition's ISR. Refused unless `leader` still leads at
    /// `partition_epoch`. An ISR that now holds every target replica of a running
    /// reassignment completes it.
    AlterIsr {
        topic: String,
        partition: i32,
        leader: BrokerId,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    },
    /// Moves a partition to `target` (Kafka's AlterPartitionReassignments), adding replicas
    /// first: `replicas` becomes the target followed by the current replicas not in it, so the
    /// new ones start following. When the ISR holds every target replica the reassignment
    /// completes: `replicas` becomes `target`, the ISR keeps only target members, and a
    /// leader outside the target hands over to the first live target ISR member at a higher
    /// leader epoch. A new target replaces a running one.
    ReassignPartition {
        topic: String,
        partition: i32,
        target: Vec<BrokerId>,
    },
    /// Sets and removes settings of one group (IncrementalAlterConfigs on a GROUP resource).
    /// The proposer checked names and values; removing what is not set changes nothing.
    AlterGroupConfig {
        group: String,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    },
}

/// Why a command changed nothing. Each maps to a Kafka error code. Serialisable: a voter
/// sends it to the observer that proposed the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("unknown broker {0}")]
    UnknownBroker(BrokerId),
    #[error("invalid replica assignment: {0}")]
    InvalidReplicas(String),
    #[error("stale partition epoch or not the leader")]
    StaleIsrChange,
    #[error("broker {0} is fenced and cannot join an ISR")]
    IneligibleReplica(BrokerId),
}

impl ClusterState {
    pub fn topic(&self, name: &str) -> Option<&Arc<Topic>> {
        self.topics.get(name)
    }

    /// Applies one committed command. Deterministic: the same state and command give the same
    /// result on every broker. A refused command leaves the state as it was.
    pub fn apply(&mut self, command: &Command) -> Result<(), Refusal> {
        match command {
            Command::RegisterBroker { id, host, port } => {
                if self.brokers.contains_key(id) {
                    self.remove_from_leadership(*id);
                    self.bump_partition_epochs_of(*id);
                }
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        id: *id,
                        host: host.clone(),
                        port: *port,
                        fenced: false,
                    },
                );
                self.elect_where_leaderless(*id);
                Ok(())
            }
            Command::FenceBroker { id } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(Refusal::UnknownBroker(*id))?;
                broker.fenced = true;
                self.remove_from_leadership(*id);
                Ok(())
            }
            Command::UnfenceBroker { id } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(Refusal::UnknownBroker(*id))?;
                broker.fenced = false;
                self.elect_where_leaderless(*id);
                Ok(())
            }
            Command::CreateTopic {
                name,
                id,
                config,
                replicas,
            } => {
                if self.topics.contains_key(name) {
                    return Err(Refusal::TopicExists(name.clone()));
                }
                if replicas.is_empty() {
                    return Err(Refusal::InvalidReplicas("no partitions".into()));
                }
                let mut assignment = Vec::with_capacity(replicas.len());
                for set in replicas {
                    check_replica_set(set)?;
                    if let Some(unknown) = set.iter().find(|b| !self.brokers.contains_key(b)) {
                        return Err(Refusal::UnknownBroker(*unknown));
                    }
                    let leader = set
                        .iter()
                        .copied()
                        .find(|b| !self.brokers[b].fenced)
                        .unwrap_or(NO_LEADER);
                    assignment.push(PartitionState {
                        replicas: set.clone(),
                        isr: set.clone(),
                        leader,
                        leader_epoch: 0,
                        partition_epoch: 0,
                        target_replicas: None,
                    });
                }
                let topic = Topic {
                    name: name.clone(),
                    id: *id,
                    partitions: assignment.len() as i32,
                    config: config.clone(),
                    assignment,
                };
                self.topics.insert(name.clone(), Arc::new(topic));
                Ok(())
            }
            Command::DeleteTopic { name } => self
                .topics
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| Refusal::UnknownTopic(name.clone())),
            Command::AlterIsr {
                topic,
                partition,
                leader,
                partition_epoch,
                isr,
            } => {
                let current = self
                    .topics
                    .get(topic)
                    .ok_or_else(|| Refusal::UnknownTopic(topic.clone()))?;
                let state =
                    current
                        .partition(*partition)
                        .ok_or_else(|| Refusal::UnknownPartition {
                            topic: topic.clone(),
                            partition: *partition,
                        })?;
                if state.leader != *leader
                    || state.partition_epoch != *partition_epoch
                    || !isr.contains(leader)
                {
                    return Err(Refusal::StaleIsrChange);
                }
                if isr.iter().any(|b| !state.replicas.contains(b)) {
                    return Err(Refusal::InvalidReplicas(
                        "ISR member is not a replica".into(),
                    ));
                }
                // A fenced broker may have died since the leader last saw it fetch (Kafka's
                // KIP-841): it joins only once it is heard from again.
                let fenced = |b: &&BrokerId| self.brokers.get(b).is_none_or(|info| info.fenced);
                if let Some(joining) = isr.iter().filter(|b| !state.isr.contains(b)).find(fenced) {
                    return Err(Refusal::IneligibleReplica(*joining));
                }
                let mut changed = Topic::clone(current);
                let state = &mut changed.assignment[*partition as usize];
                state.isr = isr.clone();
                state.partition_epoch += 1;
                self.complete_reassignment(state);
                self.topics.insert(topic.clone(), Arc::new(changed));
                Ok(())
            }
            Command::ReassignPartition {
                topic,
                partition,
                target,
            } => self.reassign(topic, *partition, target),
            Command::AlterGroupConfig { group, set, delete } => {
                let configs = self.group_configs.entry(group.clone()).or_default();
                for name in delete {
                    configs.remove(name);
                }
                for (name, value) in set {
                    configs.insert(name.clone(), value.clone());
                }
                if configs.is_empty() {
                    self.group_configs.remove(group);
                }
                Ok(())
            }
        }
    }

    /// One setting of a group, if it was set.
    pub fn group_config(&self, group: &str, name: &str) -> Option<&str> {
        self.group_configs
            .get(group)
            .and_then(|configs| configs.get(name))
            .map(String::as_str)
    }

    fn reassign(
        &mut self,
        topic: &str,
        partition: i32,
        target: &[BrokerId],
    ) -> Result<(), Refusal> {
        let current = self
            .topics
            .get(topic)
            .ok_or_else(|| Refusal::UnknownTopic(topic.to_string()))?;
        let unknown_partition = || Refusal::UnknownPartition {
            topic: topic.to_string(),
            partition,
        };
        let state = current.partition(partition).ok_or_else(unknown_partition)?;
        check_replica_set(target)?;
        if let Some(unknown) = target.iter().find(|b| !self.brokers.contains_key(b)) {
            return Err(Refusal::UnknownBroker(*unknown));
        }
        let mut replicas = target.to_vec();
        replicas.extend(state.replicas.iter().filter(|b| !target.contains(b)));
        let mut changed = Topic::clone(current);
        let state = &mut changed.assignment[partition as usize];
        state.replicas = replicas;
        state.target_replicas = Some(target.to_vec());
        state.partition_epoch += 1;
        self.complete_reassignment(state);
        self.topics.insert(topic.to_string(), Arc::new(changed));
        Ok(())
    }

    /// Ends a reassignment whose target replicas are all in the ISR (see
    /// [`Command::ReassignPartition`]). The caller raised the partition epoch already.
    fn complete_reassignment(&self, state: &mut PartitionState) {
        let Some(target) = &state.target_replicas else {
            return;
        };
        if !target.iter().all(|replica| state.isr.contains(replica)) {
            return;
        }
        let target = target.clone();
        state.isr.retain(|replica| target.contains(replica));
        state.replicas = target;
        state.target_replicas = None;
        if !state.replicas.contains(&state.leader) {
            let live = |b: &&BrokerId| self.brokers.get(b).is_some_and(|info| !info.fenced);
            state.leader = state
                .replicas
                .iter()
                .find(live)
                .copied()
                .unwrap_or(NO_LEADER);
            state.leader_epoch += 1;
        }
    }

    /// `id` is gone: every partition it led gets the first other live ISR member as leader;
    /// it leaves every ISR in which it is not the last member (the last member stays, so that
    /// only it may lead again: no unclean election).
    fn remove_from_leadership(&mut self, id: BrokerId) {
        let brokers = &self.brokers;
        let live = |b: &BrokerId| brokers.get(b).is_some_and(|info| !info.fenced);
        for topic in self.topics.values_mut() {
            let touched = topic.assignment.iter().any(|state| {
                state.leader == id || (state.isr.contains(&id) && state.isr.len() > 1)
            });
            if !touched {
                continue;
            }
            let topic = Arc::make_mut(topic);
            for state in &mut topic.assignment {
                let was_leader = state.leader == id;
                if state.isr.contains(&id) && state.isr.len() > 1 {
                    state.isr.retain(|b| *b != id);
                    state.partition_epoch += 1;
                }
                if was_leader {
                    state.leader = state
                        .isr
                        .iter()
                        .copied()
                        .find(|b| live(b))
                        .unwrap_or(NO_LEADER);
                    state.leader_epoch += 1;
                    state.partition_epoch += 1;
                }
            }
        }
    }

    /// Every partition `id` holds a replica of gets a new partition epoch.
    fn bump_partition_epochs_of(&mut self, id: BrokerId) {
        for topic in self.topics.values_mut() {
            if !topic
                .assignment
                .iter()
                .any(|state| state.replicas.contains(&id))
            {
                continue;
            }
            for state in &mut Arc::make_mut(topic).assignment {
                if state.replicas.contains(&id) {
                    state.partition_epoch += 1;
                }
            }
        }
    }

    /// `id` is live again: partitions with no leader whose ISR holds it get it as leader.
    fn elect_where_leaderless(&mut self, id: BrokerId) {
        for topic in self.topics.values_mut() {
            let touched = topic
                .assignment
                .iter()
                .any(|state| state.leader == NO_LEADER && state.isr.contains(&id));
            if !touched {
                continue;
            }
            let topic = Arc::make_mut(topic);
            for state in &mut topic.assignment {
                if state.leader == NO_LEADER && state.isr.contains(&id) {
                    state.leader = id;
                    state.leader_epoch += 1;
                    state.partition_epoch += 1;
                }
            }
        }
    }

    /// Live (unfenced) brokers, in id order.
    pub fn live_brokers(&self) -> Vec<BrokerId> {
        self.brokers
            .values()
            .filter(|info| !info.fenced)
            .map(|info| info.id)
            .collect()
    }
}

/// A partition's replicas: at least one, none twice.
fn check_replica_set(set: &[BrokerId]) -> Result<(), Refusal> {
    if set.is_empty() {
        return Err(Refusal::InvalidReplicas(
            "a partition has no replicas".into(),
        ));
    }
    let mut sorted = set.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != set.len() {
        return Err(Refusal::InvalidReplicas("a broker is listed twice".into()));
    }
    Ok(())
}

/// Replicas for `partitions` partitions over `brokers` (sorted, live), `replication` each:
/// Kafka's round-robin, starting at an offset the proposer picks so leaders spread across
/// topics.
pub fn place_replicas(
    brokers: &[BrokerId],
    partitions: i32,
    replication: usize,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, Refusal> {
    if replication == 0 || replication > brokers.len() {
        return Err(Refusal::InvalidReplicas(
            "replication factor exceeds the live brokers".into(),
        ));
    }
    Ok((0..partitions.max(0) as usize)
        .map(|partition| {
            (0..replication)
                .map(|replica| brokers[(start + partition + replica) % brokers.len()])
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group configs are set and deleted per name; a group without any leaves the map, and
    /// a state serialised before the field existed still loads.
    #[test]
    fn group_configs_are_set_deleted_and_absent_from_old_states() {
        let mut state = ClusterState::default();
        let alter = |set: &[(&str, &str)], delete: &[&str]| Command::AlterGroupConfig {
            group: "g".into(),
            set: set
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            delete: delete.iter().map(|name| name.to_string()).collect(),
        };
        state
            .apply(&alter(&[("share.auto.offset.reset", "earliest")], &[]))
            .expect("set");
        assert_eq!(
            state.group_config("g", "share.auto.offset.reset"),
            Some("earliest")
        );
        assert_eq!(state.group_config("other", "share.auto.offset.reset"), None);
        state
            .apply(&alter(&[], &["share.auto.offset.reset", "never.set"]))
            .expect("delete");
        assert!(state.group_configs.is_empty());
        let old: ClusterState =
            serde_json::from_str(r#"{"brokers":{},"topics":{}}"#).expect("an older state loads");
        assert!(old.group_configs.is_empty());
    }

    fn config() -> TopicConfig {
        TopicConfig {
            segment_bytes: 1 << 20,
            retention_bytes: None,
            retention_ms: None,
        }
    }

    fn three_brokers() -> ClusterState {
        let mut state = ClusterState::default();
        for id in 1..=3 {
            state
                .apply(&Command::RegisterBroker {
                    id,
                    host: "127.0.0.1".into(),
                    port: 9090 + id,
                })
                .expect("register");
        }
        state
    }

    fn create(state: &mut ClusterState, replicas: Vec<Vec<BrokerId>>) {
        state
            .apply(&Command::CreateTopic {
                name: "t".into(),
                id: Uuid::nil(),
                config: config(),
                replicas,
            })
            .expect("create");
    }

    #[test]
    fn fencing_the_leader_elects_the_next_isr_member_with_a_higher_epoch() {
        let mut state = three_brokers();
        create(&mut state, vec![vec![1, 2, 3]]);
        state.apply(&Command::FenceBroker { id: 1 }).expect("fence");
        let partition = state.topic("t").expect("t").assignment[0].clone();
        assert_eq!(partition.leader, 2);
        assert_eq!(partition.isr, vec![2, 3]);
        assert_eq!(partition.leader_epoch, 1);
    }

    #[test]
    fn the_last_isr_member_stays_and_leads_again_when_back() {
        let mut state = three_brokers();
        create(&mut state, vec![vec![1]]);
        state.apply(&Command::FenceBroker { id: 1 }).expect("fence");
        let partition = state.topic("t").expect("t").assignment[0].clone();
        assert_eq!(
            (partition.leader, partition.isr.clone()),
            (NO_LEADER, vec![1])
        );
        state
            .apply(&Command::UnfenceBroker { id: 1 })
            .expect("unfence");
        let partition = state.topic("t").expect("t").assignment[0].clone();
        assert_eq!((partition.leader, partition.leader_epoch), (1, 2));
    }

    #[test]
    fn a_restarted_broker_leaves_the_isr_and_its_leadership() {
        let mut state = three_brokers();
        create(&mut state, vec![vec![1, 2, 3]]);
        let register_again = Command::RegisterBroker {
            id: 1,
            host: "127.0.0.1".into(),
            port: 9091,
        };
        state.apply(&register_again).expect("register again");
        let partition = state.topic("t").expect("t").assignment[0].clone();
        assert_eq!(
            (
                partition.leader,
                partition.isr.clone(),
                partition.leader_epoch
            ),
            (2, vec![2, 3], 1)
        );
        // An ISR change made before the restart is stale now.
        let mut state = three_brokers();
        create(&mut state, vec![vec![1, 2, 3]]);
        let shrink = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            partition_epoch: 0,
            isr: vec![1, 2],
        };
        state.apply(&shrink).expect("shrink");
        let grow = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            partition_epoch: 1,
            isr: vec![1, 2, 3],
        };
        state
            .apply(&Command::RegisterBroker {
                id: 3,
                host: "127.0.0.1".into(),
                port: 9093,
            })
            .expect("register again");
        assert_eq!(state.apply(&grow), Err(Refusal::StaleIsrChange));
        // The last ISR member stays in it, and leads again at a new epoch.
        let mut state = three_brokers();
        create(&mut state, vec![vec![1]]);
        state.apply(&register_again).expect("register again");
        let partition = state.topic("t").expect("t").assignment[0].clone();
        assert_eq!(
            (
                partition.leader,
                partition.isr.clone(),
                partition.leader_epoch
            ),
            (1, vec![1], 1)
        );
    }

    #[test]
    fn a_fenced_broker_cannot_join_the_isr() {
        let mut state = three_brokers();
        create(&mut state, vec![vec![1, 2, 3]]);
        state.apply(&Command::FenceBroker { id: 3 }).expect("fence");
        let grow = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            partition_epoch: 1,
            isr: vec![1, 2, 3],
        };
        assert_eq!(state.apply(&grow), Err(Refusal::IneligibleReplica(3)));
        state
            .apply(&Command::UnfenceBroker { id: 3 })
            .expect("unfence");
        state.apply(&grow).expect("grow once heard from");
    }

    #[test]
    fn isr_changes_need_the_current_leader_and_epoch() {
        let mut state = three_brokers();
        create(&mut state, vec![vec![1, 2, 3]]);
        let alter = |leader, partition_epoch, isr: Vec<BrokerId>| Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader,
            partition_epoch,
            isr,
        };
        assert_eq!(
            state.apply(&alter(2, 0, vec![2])),
            Err(Refusal::StaleIsrChange)
        );
        state.apply(&alter(1, 0, vec![1, 3])).expect("shrink");
        assert_eq!(
            state.apply(&alter(1, 0, vec![1])),
            Err(Refusal::StaleIsrChange)
        );
        assert_eq!(state.topic("t").expect("t").assignment[0].isr, vec![1, 3]);
    }

    fn four_brokers() -> ClusterState {
        let mut state = three_brokers();
        state
            .apply(&Command::RegisterBroker {
                id: 4,
                host: "127.0.0.1".into(),
                port: 9094,
            })
            .expect("register");
        state
    }

    fn partition(state: &ClusterState) -> PartitionState {
        state.topic("t").expect("t").assignment[0].clone()
    }

    fn reassign(target: Vec<BrokerId>) -> Command {
        Command::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            target,
        }
    }

    fn alter_isr(state: &ClusterState, isr: Vec<BrokerId>) -> Command {
        let current = partition(state);
        Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: current.leader,
            partition_epoch: current.partition_epoch,
            isr,
        }
    }

    #[test]
    fn a_reassignment_adds_replicas_first_and_ends_when_they_are_in_sync() {
        let mut state = four_brokers();
        create(&mut state, vec![vec![1, 2, 3]]);
        state.apply(&reassign(vec![2, 3, 4])).expect("reassign");
        let moving = partition(&state);
        assert_eq!(moving.replicas, vec![2, 3, 4, 1]);
        assert_eq!(moving.isr, vec![1, 2, 3]);
        assert_eq!((moving.leader, moving.leader_epoch), (1, 0));
        assert_eq!(moving.target_replicas, Some(vec![2, 3, 4]));
        assert_eq!(moving.adding_replicas(), vec![4]);
        assert_eq!(moving.removing_replicas(), vec![1]);
        assert_eq!(moving.partition_epoch, 1);
        // The leader's ISR change made before the reassignment is stale.
        let stale = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            partition_epoch: 0,
            isr: vec![1, 2],
        };
        assert_eq!(state.apply(&stale), Err(Refusal::StaleIsrChange));
        // Broker 4 caught up: the leader (1, outside the target) hands over to 2.
        state
            .apply(&alter_isr(&state, vec![1, 2, 3, 4]))
            .expect("grow");
        let moved = partition(&state);
        assert_eq!(moved.replicas, vec![2, 3, 4]);
        assert_eq!(moved.isr, vec![2, 3, 4]);
        assert_eq!((moved.leader, moved.leader_epoch), (2, 1));
        assert_eq!(moved.target_replicas, None);
        assert!(moved.partition_epoch > moving.partition_epoch);
    }

    #[test]
    fn a_reassignment_keeps_a_leader_in_the_target_and_waits_for_every_target_replica() {
        let mut state = four_brokers();
        create(&mut state, vec![vec![1, 2, 3]]);
        state.apply(&reassign(vec![1, 4])).expect("reassign");
        // 4 joined, but the ISR lost 2 and 3 meanwhile: still complete (target is 1 and 4).
        state.apply(&alter_isr(&state, vec![1])).expect("shrink");
        assert_eq!(partition(&state).target_replicas, Some(vec![1, 4]));
        state.apply(&alter_isr(&state, vec![1, 4])).expect("grow");
        let moved = partition(&state);
        assert_eq!(
            (moved.replicas.clone(), moved.isr.clone()),
            (vec![1, 4], vec![1, 4])
        );
        assert_eq!((moved.leader, moved.leader_epoch), (1, 0));
        // A target already in sync completes at once.
        state
            .apply(&reassign(vec![4]))
            .expect("shrink the replicas");
        let moved = partition(&state);
        assert_eq!(
            (moved.replicas.clone(), moved.isr.clone()),
            (vec![4], vec![4])
        );
        assert_eq!((moved.leader, moved.leader_epoch), (4, 1));
    }

    #[test]
    fn bad_reassignments_are_refused() {
        let mut state = four_brokers();
        create(&mut state, vec![vec![1, 2, 3]]);
        assert_eq!(
            state.apply(&reassign(vec![])),
            Err(Refusal::InvalidReplicas(
                "a partition has no replicas".into()
            ))
        );
        assert!(matches!(
            state.apply(&reassign(vec![2, 2])),
            Err(Refusal::InvalidReplicas(_))
        ));
        assert_eq!(
            state.apply(&reassign(vec![2, 9])),
            Err(Refusal::UnknownBroker(9))
        );
        let unknown = Command::ReassignPartition {
            topic: "t".into(),
            partition: 1,
            target: vec![1],
        };
        assert!(matches!(
            state.apply(&unknown),
            Err(Refusal::UnknownPartition { .. })
        ));
        assert_eq!(partition(&state).replicas, vec![1, 2, 3]);
        assert_eq!(partition(&state).partition_epoch, 0);
    }

    #[test]
    fn placement_spreads_leaders_and_refuses_too_few_brokers() {
        let placed = place_replicas(&[1, 2, 3], 3, 3, 0).expect("place");
        let leaders: Vec<_> = placed.iter().map(|set| set[0]).collect();
        assert_eq!(leaders, vec![1, 2, 3]);
        assert!(place_replicas(&[1, 2], 1, 3, 0).is_err());
    }
}
