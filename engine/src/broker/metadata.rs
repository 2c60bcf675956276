//! The broker's view of the cluster's metadata: the metadata quorum's applied
//! [`ClusterState`] (brokers, topics, partition leaders and ISRs).
//!
//! Reads are lock-free from any core (the quorum publishes each state through an `ArcSwap`).
//! Topic changes are proposals to the quorum: `create` and `delete` resolve once the command
//! is committed and applied on this broker, so the caller sees its change in `snapshot()`.
//! Nothing here writes a file; the quorum's log in `<data_dir>/metadata/` is the only copy.

use std::sync::Arc;

use uuid::Uuid;

use crate::cluster::quorum::{ProposeError, Quorum};
use crate::cluster::state::{place_replicas, ClusterState, Command, Refusal};
pub use crate::cluster::state::{PartitionState, Topic, TopicConfig};

/// Why a topic change was refused; each maps to a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} already exists")]
    AlreadyExists(String),
    #[error("invalid topic name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("invalid partition count {0}")]
    InvalidPartitions(i32),
    #[error("replication factor {factor} with {live} live brokers")]
    InvalidReplicationFactor { factor: i16, live: usize },
    #[error("unknown topic {0:?}")]
    Unknown(String),
    #[error("metadata quorum: {0}")]
    Quorum(ProposeError),
}

impl From<ProposeError> for TopicError {
    fn from(error: ProposeError) -> TopicError {
        match error {
            ProposeError::Refused(Refusal::TopicExists(name)) => TopicError::AlreadyExists(name),
            ProposeError::Refused(Refusal::UnknownTopic(name)) => TopicError::Unknown(name),
            other => TopicError::Quorum(other),
        }
    }
}

/// The most partitions a topic may have: bounds per-topic state on every core.
pub const PARTITIONS_MAX: i32 = 10_000;

/// Kafka's rules: 1 to 249 characters of ASCII letters, digits, '.', '_' and '-'; not "." or "..".
pub fn check_topic_name(name: &str) -> Result<(), TopicError> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name.len() > 249 {
        Some("longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(TopicError::InvalidName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// The cluster's metadata as this broker sees it. Shared by every core (`Send + Sync`).
pub struct Metadata {
    quorum: Arc<Quorum>,
    /// Replicas per partition when a request says -1.
    default_replication_factor: i16,
}

impl Metadata {
    pub fn new(quorum: Arc<Quorum>, default_replication_factor: i16) -> Metadata {
        Metadata {
            quorum,
            default_replication_factor,
        }
    }

    /// The metadata quorum behind this view.
    pub fn quorum(&self) -> &Arc<Quorum> {
        &self.quorum
    }

    /// The applied cluster state, without locking.
    pub fn snapshot(&self) -> Arc<ClusterState> {
        self.quorum.state()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.quorum.state().topic(name).cloned()
    }

    /// The topic with this id (KIP-516), if the cluster has it. A scan over the topics: ids
    /// are looked up per request, not per record.
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        self.quorum
            .state()
            .topics
            .values()
            .find(|topic| topic.id == id)
            .cloned()
    }

    /// Counts the states applied so far (see [`changed_since`](Self::changed_since)).
    pub fn version(&self) -> u64 {
        self.quorum.version()
    }

    /// Resolves once a state newer than version `seen` is applied.
    pub async fn changed_since(&self, seen: u64) {
        self.quorum.changed_since(seen).await;
    }

    /// Where a registered broker's Kafka listener is, as `host:port`.
    pub fn broker_address(&self, broker: i32) -> Option<String> {
        self.quorum
            .state()
            .brokers
            .get(&broker)
            .map(|info| format!("{}:{}", info.host, info.port))
    }

    /// Proposes a change to the cluster state; resolves once it is applied here.
    pub async fn propose(&self, command: Command) -> Result<(), ProposeError> {
        self.quorum.propose(command).await
    }

    /// Creates a topic through the quorum, its replicas placed round-robin over the live
    /// brokers (`replication_factor` -1: the default), and returns it once applied here.
    pub async fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        config: TopicConfig,
    ) -> Result<Arc<Topic>, TopicError> {
        let command = self.create_command(name, partitions, replication_factor, config)?;
        self.quorum.propose(command).await?;
        self.topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))
    }

    /// Checks a creation and chooses its id and replicas, without proposing it.
    pub fn create_command(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        config: TopicConfig,
    ) -> Result<Command, TopicError> {
        check_topic_name(name)?;
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        let state = self.quorum.state();
        if state.topics.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        let factor = if replication_factor == -1 {
            self.default_replication_factor
        } else {
            replication_factor
        };
        let live = state.live_brokers();
        let invalid = TopicError::InvalidReplicationFactor {
            factor,
            live: live.len(),
        };
        if factor < 1 || factor as usize > live.len() {
            return Err(invalid);
        }
        let id = Uuid::new_v4();
        // A random first broker spreads leaders across topics.
        let start = (id.as_u128() % live.len() as u128) as usize;
        let replicas =
            place_replicas(&live, partitions, factor as usize, start).map_err(|_| invalid)?;
        Ok(Command::CreateTopic {
            name: name.to_string(),
            id,
            config,
            replicas,
        })
    }

    /// Removes a topic through the quorum and returns it once applied here (its data is
    /// deleted by the cores that own its partitions).
    pub async fn delete(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        self.quorum
            .propose(Command::DeleteTopic {
                name: name.to_string(),
            })
            .await?;
        Ok(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::QuorumConfig;

    fn config() -> TopicConfig {
        TopicConfig {
            segment_bytes: 1 << 20,
            retention_bytes: None,
            retention_ms: None,
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic_name("orders.v1_test-2").is_ok());
        for bad in ["", ".", "..", "a b", "é", &"x".repeat(250)] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    /// A single-node quorum, driven on a glommio executor, for the duration of `test`.
    fn with_metadata(dir: &std::path::Path, test: impl AsyncFnOnce(&Metadata)) {
        let quorum = Quorum::open(QuorumConfig::new(0, dir.to_path_buf())).expect("open");
        crate::runtime::run_local(crate::runtime::IO_MEMORY_BYTES_DEFAULT, async {
            let driver = glommio::spawn_local(Arc::clone(&quorum).run());
            let metadata = Metadata::new(Arc::clone(&quorum), 1);
            quorum
                .propose(Command::RegisterBroker {
                    id: 0,
                    host: "localhost".into(),
                    port: 9092,
                })
                .await
                .expect("register");
            test(&metadata).await;
            quorum.stop();
            driver.await.expect("the driver stops cleanly");
        });
    }

    #[test]
    fn topics_survive_a_restart_and_changes_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let mut created_id = None;
        with_metadata(dir.path(), async |metadata| {
            let created = metadata
                .create("events", 3, -1, config())
                .await
                .expect("create");
            created_id = Some(created.id);
            assert_eq!(
                metadata.create("events", 1, -1, config()).await.map(|_| ()),
                Err(TopicError::AlreadyExists("events".into()))
            );
            assert_eq!(
                metadata.create("other", 0, -1, config()).await.map(|_| ()),
                Err(TopicError::InvalidPartitions(0))
            );
            assert_eq!(
                metadata.create("other", 1, 2, config()).await.map(|_| ()),
                Err(TopicError::InvalidReplicationFactor { factor: 2, live: 1 })
            );
        });
        with_metadata(dir.path(), async |metadata| {
            let topic = metadata.topic("events").expect("persisted");
            assert_eq!((Some(topic.id), topic.partitions), (created_id, 3));
            assert_eq!(topic.assignment[0].replicas, vec![0]);
            metadata.delete("events").await.expect("delete");
            assert_eq!(
                metadata.delete("events").await.map(|_| ()),
                Err(TopicError::Unknown("events".into()))
            );
        });
        with_metadata(dir.path(), async |metadata| {
            assert!(metadata.topic("events").is_none());
        });
    }
}
