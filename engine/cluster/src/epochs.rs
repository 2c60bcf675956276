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
//!
//! **Durability.** A change is made in memory and written as an [`EpochCheckpoint`]: on an
//! executor, [`stage_assign`](LeaderEpochCache::stage_assign) and
//! [`stage_truncate_from_end`](LeaderEpochCache::stage_truncate_from_end) return the write,
//! which goes through the storage's async small-file API once the caller has let go of the
//! cache (it is kept in a `RefCell`); [`assign`](LeaderEpochCache::assign) and
//! [`truncate_from_end`](LeaderEpochCache::truncate_from_end) write before they return,
//! blocking on a real disk: for tests, the replication simulation, and the broker's
//! synchronous role change to leader, which must record the epoch before the partition takes
//! produce requests in it. Callers write an epoch's entry before they append a batch of that
//! epoch: recovery does not rebuild entries from the log, so a batch must never be durable in
//! an epoch the checkpoint lacks.
//!
//! **Concurrency.** Writes of one cache's file run one at a time, in the order they were
//! staged; a checkpoint older than one already written is skipped. A cache uses either the
//! staged writes or the blocking ones, not both at once.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::storage::Storage;
use crate::{LogError, StorageError};
use shardlog_storage::fifo_lock::FifoLock;

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

/// The file's longest form: an entry is two numbers, a space and a newline.
const FILE_BYTES_MAX: u64 = (EPOCHS_MAX as u64) * 32;

/// Every epoch of one partition, oldest first.
pub struct LeaderEpochCache {
    writer: Rc<CheckpointWriter>,
    entries: Vec<EpochEntry>,
    /// Checkpoints made so far; each one's number orders it among the writes.
    staged: u64,
}

/// The checkpoint file of one cache, shared with the checkpoints waiting to be written.
struct CheckpointWriter {
    storage: Storage,
    path: PathBuf,
    /// One write at a time: they share the file's temporary copy.
    turn: FifoLock,
    /// The newest checkpoint known durable.
    written: Cell<u64>,
}

/// The cache's entries at one change, to be written (see the module documentation). Until
/// [`write`](Self::write) resolves `Ok`, the change is in memory only.
#[must_use = "the change is in memory only until the checkpoint is written"]
pub struct EpochCheckpoint {
    writer: Rc<CheckpointWriter>,
    number: u64,
    bytes: Vec<u8>,
}

impl EpochCheckpoint {
    /// Writes the checkpoint atomically and durably, off the executor's thread (on a real
    /// disk), after any write of the same file staged before it. Resolves `Ok` once a crash
    /// would find these entries or a later checkpoint's; one already overtaken by a later
    /// checkpoint's write is skipped. After an error the file holds the previous checkpoint
    /// or this one.
    pub async fn write(self) -> Result<(), StorageError> {
        let _turn = self
            .writer
            .turn
            .lock()
            .await
            .expect("a checkpoint writer's lock is never closed");
        if self.writer.written.get() >= self.number {
            return Ok(());
        }
        self.writer
            .storage
            .write_file_atomic_off_thread(&self.writer.path, self.bytes)
            .await?;
        self.writer.written.set(self.number);
        Ok(())
    }
}

impl LeaderEpochCache {
    /// Loads the checkpoint in `dir` (empty if there is none). A malformed file is an error:
    /// truncation decisions must not be made on guesses. Blocking on a real disk; on an
    /// executor use [`load`](Self::load).
    pub fn open(storage: Storage, dir: &Path) -> Result<LeaderEpochCache, LogError> {
        let path = dir.join(FILE_NAME);
        let bytes = storage.read_file(&path, FILE_BYTES_MAX)?;
        LeaderEpochCache::from_file(storage, path, bytes)
    }

    /// [`open`](Self::open), with the file read off the executor's thread.
    pub async fn load(storage: Storage, dir: &Path) -> Result<LeaderEpochCache, LogError> {
        let path = dir.join(FILE_NAME);
        let bytes = storage.read_file_off_thread(&path, FILE_BYTES_MAX).await?;
        LeaderEpochCache::from_file(storage, path, bytes)
    }

    fn from_file(
        storage: Storage,
        path: PathBuf,
        bytes: Option<Vec<u8>>,
    ) -> Result<LeaderEpochCache, LogError> {
        let entries = match bytes {
            None => Vec::new(),
            Some(bytes) => parse(&bytes).map_err(|what| LogError::Corrupt {
                path: path.clone(),
                position: 0,
                what,
            })?,
        };
        Ok(LeaderEpochCache {
            writer: Rc::new(CheckpointWriter {
                storage,
                path,
                turn: FifoLock::new(),
                written: Cell::new(0),
            }),
            entries,
            staged: 0,
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
    ///
    /// Writes the checkpoint before it returns, blocking on a real disk; on an executor use
    /// [`stage_assign`](Self::stage_assign).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), StorageError> {
        match self.stage_assign(epoch, start_offset) {
            Some(checkpoint) => self.write_now(checkpoint),
            None => Ok(()),
        }
    }

    /// [`assign`](Self::assign) in memory; returns the checkpoint to write if anything
    /// changed. Write it before appending a batch of `epoch`.
    pub fn stage_assign(&mut self, epoch: i32, start_offset: i64) -> Option<EpochCheckpoint> {
        if epoch < 0 {
            return None;
        }
        let mut changed = false;
        while self.entries.last().is_some_and(|last| last.epoch > epoch) {
            self.entries.pop();
            changed = true;
        }
        if self.latest_epoch() == Some(epoch) {
            return changed.then(|| self.checkpoint());
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
        Some(self.checkpoint())
    }

    /// Forgets the epochs that began at or after `log_end` (the log was cut there). Writes
    /// the checkpoint before it returns, blocking on a real disk; on an executor use
    /// [`stage_truncate_from_end`](Self::stage_truncate_from_end).
    pub fn truncate_from_end(&mut self, log_end: i64) -> Result<(), StorageError> {
        match self.stage_truncate_from_end(log_end) {
            Some(checkpoint) => self.write_now(checkpoint),
            None => Ok(()),
        }
    }

    /// [`truncate_from_end`](Self::truncate_from_end) in memory; returns the checkpoint to
    /// write if anything changed.
    pub fn stage_truncate_from_end(&mut self, log_end: i64) -> Option<EpochCheckpoint> {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.start_offset < log_end);
        (self.entries.len() != before).then(|| self.checkpoint())
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

    /// The entries as they are now, numbered after every checkpoint made before.
    fn checkpoint(&mut self) -> EpochCheckpoint {
        let mut text = String::new();
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        self.staged += 1;
        EpochCheckpoint {
            writer: Rc::clone(&self.writer),
            number: self.staged,
            bytes: text.into_bytes(),
        }
    }

    /// Writes `checkpoint` blocking the calling thread on a real disk.
    fn write_now(&self, checkpoint: EpochCheckpoint) -> Result<(), StorageError> {
        self.writer
            .storage
            .write_file_atomic(&self.writer.path, &checkpoint.bytes)?;
        self.writer.written.set(checkpoint.number);
        Ok(())
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

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        shardlog_storage::runtime::run_local(
            shardlog_storage::runtime::IO_MEMORY_BYTES_DEFAULT,
            future,
        )
    }

    fn on_disk(disk: &crate::storage::SimDisk) -> Option<Vec<u8>> {
        disk.read_whole(&Path::new("/p").join(FILE_NAME), FILE_BYTES_MAX)
    }

    /// A staged change is in memory only until its checkpoint is written; once written it
    /// survives a crash. A checkpoint overtaken by a later one's write is skipped, so the
    /// file never goes back to older entries.
    #[test]
    fn staged_checkpoints_are_written_in_order_and_survive_a_crash() {
        run(async {
            let disk = crate::storage::SimDisk::new(1);
            let storage = Storage::Sim(disk.clone());
            let mut cache = LeaderEpochCache::load(storage.clone(), Path::new("/p"))
                .await
                .expect("load");
            let first = cache.stage_assign(1, 0).expect("a change");
            assert!(cache.stage_assign(1, 5).is_none(), "the same epoch again");
            let second = cache.stage_assign(2, 10).expect("a change");
            assert_eq!(on_disk(&disk), None, "nothing written yet");
            second.write().await.expect("write");
            first.write().await.expect("an older checkpoint is skipped");
            disk.crash();
            let reopened = LeaderEpochCache::load(storage, Path::new("/p"))
                .await
                .expect("reload");
            assert_eq!(reopened.entries(), cache.entries());
            assert_eq!(reopened.entries().len(), 2);
        });
    }

    /// A failed fdatasync of the checkpoint is reported, and the file keeps the entries it
    /// had.
    #[test]
    fn a_failed_checkpoint_write_is_reported_and_the_old_file_stays() {
        run(async {
            let disk = crate::storage::SimDisk::new(2);
            let storage = Storage::Sim(disk.clone());
            let mut cache = LeaderEpochCache::load(storage.clone(), Path::new("/p"))
                .await
                .expect("load");
            let checkpoint = cache.stage_assign(1, 0).expect("a change");
            checkpoint.write().await.expect("write");
            let before = on_disk(&disk);
            disk.fail_with(
                crate::storage::SimOp::Sync,
                Some(crate::storage::SimFault::Io),
            );
            let checkpoint = cache.stage_truncate_from_end(0).expect("a change");
            assert!(checkpoint.write().await.is_err());
            disk.crash();
            assert_eq!(on_disk(&disk), before);
        });
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
