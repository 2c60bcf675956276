//! Topics and their partitions, persisted in `<data_dir>/topics.json`.
//!
//! Reads are lock-free: every core loads the current snapshot (an `ArcSwap`). Changes
//! (create, delete) are rare; they serialise on a mutex, write the file atomically, and then
//! publish a new snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use event_listener::Event;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::cluster::state::{PartitionState, Topic, TopicConfig};

/// The topics at one moment. Immutable; replaced whole on every change.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub topics: BTreeMap<String, Arc<Topic>>,
}

#[derive(Serialize, Deserialize, Default)]
struct TopicsFile {
    topics: Vec<Topic>,
}

/// Why a topic change was refused; each maps to a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} already exists")]
    AlreadyExists(String),
    #[error("invalid topic name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("invalid partition count {0}")]
    InvalidPartitions(i32),
    #[error("unknown topic {0:?}")]
    Unknown(String),
    #[error("cannot persist topics: {0}")]
    Storage(String),
}

impl TopicError {
    /// The Kafka error code for this refusal.
    pub fn code(&self) -> i16 {
        match self {
            TopicError::AlreadyExists(_) => 36,     // TOPIC_ALREADY_EXISTS
            TopicError::InvalidName { .. } => 17,   // INVALID_TOPIC_EXCEPTION
            TopicError::InvalidPartitions(_) => 37, // INVALID_PARTITIONS
            TopicError::Unknown(_) => 3,            // UNKNOWN_TOPIC_OR_PARTITION
            TopicError::Storage(_) => 56,           // KAFKA_STORAGE_ERROR
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

/// The broker's topics. Shared by every core (`Send + Sync`).
pub struct Metadata {
    path: PathBuf,
    /// This broker's id: on a single broker it holds and leads every partition.
    node_id: i32,
    current: ArcSwap<Snapshot>,
    changes: Mutex<()>,
    /// Counts published changes; `changed` fires after each.
    version: AtomicU64,
    changed: Event,
}

impl Metadata {
    /// Loads `<data_dir>/topics.json`, or starts empty.
    pub fn load(data_dir: &Path, node_id: i32) -> Result<Metadata, String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|error| format!("cannot create {}: {error}", data_dir.display()))?;
        let path = data_dir.join("topics.json");
        let file: TopicsFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| format!("{} is not valid: {error}", path.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => TopicsFile::default(),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let topics = file
            .topics
            .into_iter()
            .map(|topic| (topic.name.clone(), Arc::new(topic)))
            .collect();
        Ok(Metadata {
            path,
            node_id,
            current: ArcSwap::from_pointee(Snapshot { topics }),
            changes: Mutex::new(()),
            version: AtomicU64::new(0),
            changed: Event::new(),
        })
    }

    /// The number of changes published so far.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Resolves once the version is above `seen`.
    pub async fn changed_since(&self, seen: u64) {
        loop {
            if self.version() > seen {
                return;
            }
            let listener = self.changed.listen();
            if self.version() > seen {
                return;
            }
            listener.await;
        }
    }

    /// Where a broker's Kafka listener is, as `host:port`. A lone broker knows no others.
    pub fn broker_address(&self, _broker: i32) -> Option<String> {
        None
    }

    /// Proposes a change to the cluster state. A lone broker has no quorum to change, and
    /// its partitions have one replica, so no ISR change is ever asked of it.
    pub async fn propose(&self, command: crate::cluster::state::Command) -> Result<(), String> {
        Err(format!("no metadata quorum to apply {command:?}"))
    }

    fn publish(&self, next: Snapshot) {
        self.current.store(Arc::new(next));
        self.version.fetch_add(1, Ordering::AcqRel);
        self.changed.notify(usize::MAX);
    }

    /// The current topics, without locking.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.current.load().topics.get(name).cloned()
    }

    /// Creates a topic, durably, and returns it.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
    ) -> Result<Arc<Topic>, TopicError> {
        check_topic_name(name)?;
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        let _change = self
            .changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = Snapshot::clone(&self.current.load());
        if next.topics.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        let alone = PartitionState {
            replicas: vec![self.node_id],
            isr: vec![self.node_id],
            leader: self.node_id,
            leader_epoch: 0,
            partition_epoch: 0,
        };
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            config,
            assignment: vec![alone; partitions as usize],
        });
        next.topics.insert(name.to_string(), Arc::clone(&topic));
        self.persist(&next)?;
        self.publish(next);
        Ok(topic)
    }

    /// Removes a topic from the metadata, durably, and returns it (its data is deleted by the
    /// cores that own its partitions).
    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let _change = self
            .changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = Snapshot::clone(&self.current.load());
        let Some(topic) = next.topics.remove(name) else {
            return Err(TopicError::Unknown(name.to_string()));
        };
        self.persist(&next)?;
        self.publish(next);
        Ok(topic)
    }

    fn persist(&self, snapshot: &Snapshot) -> Result<(), TopicError> {
        let file = TopicsFile {
            topics: snapshot
                .topics
                .values()
                .map(|topic| Topic::clone(topic))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|error| TopicError::Storage(error.to_string()))?;
        crate::Storage::Buffered
            .write_file_atomic(&self.path, &bytes)
            .map_err(|error| TopicError::Storage(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn topics_survive_a_reload_and_changes_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let metadata = Metadata::load(dir.path(), 0).expect("load");
        let created = metadata.create("events", 3, config()).expect("create");
        assert_eq!(
            metadata.create("events", 1, config()).map(|_| ()),
            Err(TopicError::AlreadyExists("events".into()))
        );
        assert_eq!(
            metadata.create("other", 0, config()).map(|_| ()),
            Err(TopicError::InvalidPartitions(0))
        );
        let reloaded = Metadata::load(dir.path(), 0).expect("reload");
        let topic = reloaded.topic("events").expect("persisted");
        assert_eq!((topic.id, topic.partitions), (created.id, 3));
        reloaded.delete("events").expect("delete");
        assert!(Metadata::load(dir.path(), 0)
            .expect("again")
            .topic("events")
            .is_none());
    }
}
