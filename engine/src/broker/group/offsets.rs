//! Committed offsets of the groups of one `__consumer_offsets` partition, in memory.
//!
//! The log is the truth; this map is its latest value per key, rebuilt by replaying the log
//! when the partition is loaded and kept current after each successful append. Every entry
//! remembers the log offset of the record it came from, so two commits whose appends finish
//! out of order still leave the later record's value in place.

use std::collections::{BTreeMap, HashMap};

use super::record::{OffsetKey, OffsetValue};

/// One committed offset and where its record sits in `__consumer_offsets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub value: OffsetValue,
    pub log_offset: i64,
}

/// Per group, per (topic, partition): the latest committed offset.
#[derive(Default, Debug)]
pub struct CommittedOffsets {
    groups: HashMap<String, BTreeMap<(String, i32), Committed>>,
}

impl CommittedOffsets {
    /// Applies one record found at `log_offset`: a value replaces the key's older value, a
    /// tombstone (`None`) deletes it. A record older than what is held is ignored.
    pub fn apply(&mut self, key: OffsetKey, value: Option<OffsetValue>, log_offset: i64) {
        let OffsetKey {
            group,
            topic,
            partition,
        } = key;
        let slot = (topic, partition);
        let held = self
            .groups
            .get(&group)
            .and_then(|offsets| offsets.get(&slot))
            .map(|committed| committed.log_offset);
        if held.is_some_and(|held| held > log_offset) {
            return;
        }
        match value {
            Some(value) => {
                self.groups
                    .entry(group)
                    .or_default()
                    .insert(slot, Committed { value, log_offset });
            }
            None => {
                if let Some(offsets) = self.groups.get_mut(&group) {
                    offsets.remove(&slot);
                    if offsets.is_empty() {
                        self.groups.remove(&group);
                    }
                }
            }
        }
    }

    /// The group's committed offset for one partition.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    /// Every committed offset of a group, by topic then partition.
    pub fn of_group(&self, group: &str) -> impl Iterator<Item = (&(String, i32), &Committed)> {
        self.groups.get(group).into_iter().flatten()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Every group with at least one committed offset.
    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    /// Number of committed offsets held, over every group.
    pub fn len(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(partition: i32) -> OffsetKey {
        OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition,
        }
    }

    fn value(offset: i64) -> OffsetValue {
        OffsetValue {
            offset,
            leader_epoch: -1,
            commit_time_ms: 0,
            metadata: None,
        }
    }

    #[test]
    fn latest_record_wins_and_tombstones_delete() {
        let mut offsets = CommittedOffsets::default();
        offsets.apply(key(0), Some(value(5)), 10);
        offsets.apply(key(0), Some(value(3)), 4); // an older record, applied late
        assert_eq!(offsets.get("g", "t", 0).map(|c| c.value.offset), Some(5));
        offsets.apply(key(0), Some(value(9)), 11);
        offsets.apply(key(1), Some(value(1)), 12);
        assert_eq!(offsets.len(), 2);
        offsets.apply(key(0), None, 13);
        assert!(offsets.get("g", "t", 0).is_none());
        offsets.apply(key(1), None, 14);
        assert!(!offsets.has_group("g"));
        assert!(offsets.is_empty());
    }
}
