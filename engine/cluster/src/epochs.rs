//! The leader-epoch cache: at which offset each leader epoch began in a partition's log.
//!
//! After a leader change a follower may hold records the new leader never had (the old
//! leader appended them, then died before they replicated). The follower asks the new leader
//! where its own latest epoch ended there (OffsetForLeaderEpoch) and cuts its log to that
//! point before fetching again. This file is what answers that question on both sides.
//!
//! Stored as `leader-epoch-checkpoint` in the partition directory: one `epoch start_offset`
//! line per epoch, ascending in both. Rewritten whole (atomically) on every change; changes
//! happen once per leader change, never per append.

use std::path::{Path, PathBuf};

use crate::storage::Storage;
use crate::{LogError, StorageError};

/// The checkpoint's file name inside a partition directory.
pub const FILE_NAME: &str = "leader-epoch-checkpoint";

/// At most this many epochs are kept; older ones are dropped (a bound on the file read).
const EPOCHS_MAX: usize = 10_000;

/// Kafka's "no such epoch" marker, as in OffsetForLeaderEpoch responses.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

/// One epoch and the first offset written in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Every epoch of one partition, oldest first.
pub struct LeaderEpochCache {
    storage: Storage,
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint in `dir` (empty if there is none). A malformed file is an error:
    /// truncation decisions must not be made on guesses.
    pub fn open(storage: Storage, dir: &Path) -> Result<LeaderEpochCache, LogError> {
        let path = dir.join(FILE_NAME);
        let max_bytes = (EPOCHS_MAX as u64) * 32;
        let entries = match storage.read_file(&path, max_bytes)? {
            None => Vec::new(),
            Some(bytes) => parse(&bytes).map_err(|what| LogError::Corrupt {
                path: path.clone(),
                position: 0,
                what,
            })?,
        };
        Ok(LeaderEpochCache {
            storage,
            path,
            entries,
        })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Records that `epoch` began at `start_offset`, where a batch of that epoch is appended
    /// (or a leader starts writing). The latest epoch again is ignored (a follower sees it on
    /// every batch it copies). An older epoch than the latest means the later entries hold no
    /// records (epochs never decrease along a log): a broker that led without writing, then
    /// copies the new leader's batches of an earlier epoch. Those entries are dropped, or
    /// they would claim the copied records for an epoch they were not written in, and a
    /// follower asking where that earlier epoch ended would be told too early and cut
    /// records it must keep.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), StorageError> {
        if epoch < 0 {
            return Ok(());
        }
        let mut changed = false;
        while self.entries.last().is_some_and(|last| last.epoch > epoch) {
            self.entries.pop();
            changed = true;
        }
        if self.latest_epoch() == Some(epoch) {
            return if changed { self.persist() } else { Ok(()) };
        }
        // A later epoch that starts no later than an earlier one replaces it: nothing was
        // written in the earlier one.
        while self
            .entries
            .last()
            .is_some_and(|last| last.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        if self.entries.len() > EPOCHS_MAX {
            self.entries.remove(0);
        }
        self.persist()
    }

    /// Forgets the epochs that began at or after `log_end` (the log was cut there).
    pub fn truncate_from_end(&mut self, log_end: i64) -> Result<(), StorageError> {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.start_offset < log_end);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// OffsetForLeaderEpoch, answered from this log: the largest epoch not above `epoch`, and
    /// the offset where it ended (the start of the next epoch, or `log_end` if it is the
    /// newest). `(UNDEFINED_EPOCH, UNDEFINED_OFFSET)` when every known epoch is above it.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        let position = self.entries.partition_point(|entry| entry.epoch <= epoch);
        if position == 0 {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        let found = self.entries[position - 1];
        let end = self
            .entries
            .get(position)
            .map_or(log_end, |next| next.start_offset);
        (found.epoch, end)
    }

    /// Where a follower must cut its log after asking its leader about its latest epoch
    /// (KIP-101 and KIP-279). `answer` is the leader's (epoch, end offset) for this cache's
    /// latest epoch; `high_watermark` and `log_end` are the follower's own. Returns the new
    /// log end, which is `log_end` when nothing diverged.
    pub fn divergence_point(&self, answer: (i32, i64), high_watermark: i64, log_end: i64) -> i64 {
        let Some(latest) = self.latest_epoch() else {
            return log_end;
        };
        let (leader_epoch, leader_end) = answer;
        let target = if leader_epoch == UNDEFINED_EPOCH {
            // The leader knows no epoch this old: keep only what was surely committed.
            high_watermark
        } else if leader_epoch < latest {
            // Our later epochs never reached the leader: cut where the leader's epoch ended,
            // or where ours did if that is earlier.
            let (_, ours) = self.end_offset_for(leader_epoch, log_end);
            leader_end.min(ours)
        } else {
            leader_end
        };
        target.min(log_end)
    }

    fn persist(&self) -> Result<(), StorageError> {
        let mut text = String::new();
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        self.storage.write_file_atomic(&self.path, text.as_bytes())
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<EpochEntry>, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "leader-epoch checkpoint is not UTF-8")?;
    let mut entries: Vec<EpochEntry> = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err("leader-epoch checkpoint line is not `epoch offset`");
        };
        let epoch: i32 = epoch.parse().map_err(|_| "leader epoch is not a number")?;
        let start_offset: i64 = start.parse().map_err(|_| "epoch start is not a number")?;
        if entries
            .last()
            .is_some_and(|last| last.epoch >= epoch || last.start_offset > start_offset)
        {
            return Err("leader epochs are not ascending");
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().expect("dir");
        let cache = LeaderEpochCache::open(Storage::Buffered, dir.path()).expect("open");
        (dir, cache)
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let (_dir, mut cache) = cache();
        cache.assign(0, 0).expect("assign");
        cache.assign(0, 5).expect("same epoch again");
        cache.assign(2, 10).expect("assign");
        cache.assign(5, 30).expect("assign");
        assert_eq!(cache.end_offset_for(0, 40), (0, 10));
        assert_eq!(cache.end_offset_for(1, 40), (0, 10));
        assert_eq!(cache.end_offset_for(3, 40), (2, 30));
        assert_eq!(cache.end_offset_for(7, 40), (5, 40));
        cache.truncate_from_end(30).expect("truncate");
        assert_eq!(cache.end_offset_for(7, 30), (2, 30));
    }

    #[test]
    fn unknown_older_epochs_are_undefined() {
        let (_dir, mut cache) = cache();
        cache.assign(3, 0).expect("assign");
        assert_eq!(
            cache.end_offset_for(2, 10),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
    }

    #[test]
    fn the_checkpoint_survives_a_reopen_and_garbage_is_refused() {
        let (dir, mut cache) = cache();
        cache.assign(1, 0).expect("assign");
        cache.assign(4, 100).expect("assign");
        let reopened = LeaderEpochCache::open(Storage::Buffered, dir.path()).expect("reopen");
        assert_eq!(reopened.entries(), cache.entries());
        std::fs::write(dir.path().join(FILE_NAME), "4 100\n1 0\n").expect("write");
        assert!(LeaderEpochCache::open(Storage::Buffered, dir.path()).is_err());
        std::fs::write(dir.path().join(FILE_NAME), "x y\n").expect("write");
        assert!(LeaderEpochCache::open(Storage::Buffered, dir.path()).is_err());
    }

    #[test]
    fn a_follower_cuts_where_the_leaders_epoch_ended() {
        let (_dir, mut cache) = cache();
        cache.assign(1, 0).expect("assign");
        cache.assign(3, 50).expect("assign");
        // The leader never saw epoch 3; its epoch 1 ended at 40.
        assert_eq!(cache.divergence_point((1, 40), 10, 70), 40);
        // It ended at 60 there, but ours ended at 50.
        assert_eq!(cache.divergence_point((1, 60), 10, 70), 50);
        // Same epoch, and the leader holds more than we do: nothing to cut.
        assert_eq!(cache.divergence_point((3, 90), 10, 70), 70);
        assert_eq!(cache.divergence_point((3, 65), 10, 70), 65);
        // The leader knows nothing that old: fall back to the watermark.
        assert_eq!(cache.divergence_point((UNDEFINED_EPOCH, -1), 10, 70), 10);
    }

    #[test]
    fn copying_an_older_epoch_drops_the_empty_later_ones() {
        let (_dir, mut cache) = cache();
        cache.assign(0, 0).expect("assign");
        // Led in epoch 1 from offset 3 without writing, then copied epoch-0 batches.
        cache.assign(1, 3).expect("assign");
        cache.assign(0, 3).expect("copied batch");
        assert_eq!(
            cache.entries(),
            &[EpochEntry {
                epoch: 0,
                start_offset: 0
            }]
        );
        assert_eq!(cache.end_offset_for(0, 7), (0, 7));
        cache.assign(2, 7).expect("assign");
        assert_eq!(cache.end_offset_for(1, 9), (0, 7));
    }

    #[test]
    fn an_empty_epoch_is_replaced_by_the_next() {
        let (_dir, mut cache) = cache();
        cache.assign(1, 7).expect("assign");
        cache.assign(2, 7).expect("assign");
        assert_eq!(
            cache.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 7
            }]
        );
    }
}
