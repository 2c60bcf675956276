//! The partition log: an ordered, immutable sequence of record batches in segments.
//!
//! ```text
//! <dir>/00000000000000000000.log        batches, back to back, as producers sent them
//!      /00000000000000000000.index      sparse offset index (sealed segments)
//!      /00000000000000000000.timeindex  sparse time index (sealed segments)
//!      /00000000000000052311.log        the active segment: appends go here
//!      /00000000000000031200.spare      a dropped segment's file, kept to be recycled (`spares`)
//!      /clean-shutdown                  present only between a clean close and the next open
//! ```
//!
//! Invariants: segments are contiguous (each one's base offset is the previous one's next
//! offset); only the last segment takes appends; every other segment is sealed (durable,
//! trimmed, with index files) or being sealed in the background after a roll (`seal`), and
//! at most [`SEALS_IN_FLIGHT_MAX`] are being sealed. See `docs/storage.md` for recovery.

mod config;
mod recovery;
mod seal;
mod spares;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

pub use config::{Durability, LogConfig, PREALLOCATE_STEP_BYTES_DEFAULT};
pub use recovery::{RecoveryReport, TruncatedTail};
pub use seal::SEALS_IN_FLIGHT_MAX;
pub use spares::{RecycleStats, SPARE_SEGMENTS_MAX, SPARE_SUFFIX};

use crate::batch::{self, BatchError, BatchHeader, ValidBatch};
use crate::error::LogError;
use crate::fifo_lock::{FifoLock, Turn};
use crate::segment::{FileRegion, Segment};
use crate::storage::{AppendConfig, SegmentFile, Storage};
use seal::{Failure, PendingSeal, SealOutcome};
use spares::{Retiring, SparePool};

/// The marker a clean close leaves; its presence lets the next open trust the index files.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// Where an appended batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp_ms: i64,
}

/// A record found by timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampMatch {
    pub offset: i64,
    pub timestamp_ms: i64,
}

struct LogInner {
    dir: PathBuf,
    storage: Storage,
    config: LogConfig,
    append_config: AppendConfig,
    /// Oldest first; the last is the active segment. Never empty.
    segments: RefCell<Vec<Rc<Segment>>>,
    /// Files of dropped segments, kept for new segments to overwrite (see `spares`).
    spares: Rc<RefCell<SparePool>>,
    /// The file work of the last retention (renames into spares, deletions), which runs
    /// after the append lock is released; at most one at a time.
    retiring: RefCell<Option<Retiring>>,
    /// Whether this log recycles segment files (setting and strategy).
    recycles: bool,
    /// Serialises appends, rolls, truncation, retention and close, first come first served
    /// (so pipelined batches keep their arrival order). Reads do not take it.
    append_lock: FifoLock,
    /// Seals that rolls left running, oldest first, until a locked operation sees them
    /// finish; at most [`SEALS_IN_FLIGHT_MAX`] (see `seal`).
    pending_seals: RefCell<VecDeque<PendingSeal>>,
    /// The first background failure that failed the log (see `seal`).
    failure: Rc<Failure>,
    unsynced_bytes: Cell<u64>,
    closed: Cell<bool>,
    recovery: RecoveryReport,
}

/// One partition's log on one core.
///
/// **Concurrency.** Owned by one core and not `Send`; any number of that core's tasks may call
/// any method at once. Appends, rolls, truncation and retention run one at a time (an async
/// lock held only while bytes are copied, never across a durability wait), so concurrent
/// appends share group commits. Reads run alongside them and see whole batches only.
///
/// **Durability.** [`append`](Self::append) returns according to the log's [`Durability`]:
/// with `Always`, when the batch is durable; otherwise when it is in memory. A roll holds the
/// append lock only to put the next segment in place; the old segment is sealed in the
/// background (see `seal` for the contract). An append into the new segment is acknowledged
/// as durable only once the old segment is durable to its end and the new file's name is
/// durable, so under `Always` nothing acknowledged is lost; under `None` a crash may lose
/// everything since the last roll whose seal had finished. [`sync`](Self::sync),
/// [`roll_now`](Self::roll_now) and [`close`](Self::close) make everything before them
/// durable.
///
/// **Bounds.** A batch is at most `max_batch_bytes`; memory is one chunk plus
/// `write_behind_max` chunks in flight, plus the in-memory indexes (16 bytes per
/// `index_interval_bytes` of log).
#[derive(Clone)]
pub struct PartitionLog {
    inner: Rc<LogInner>,
}

impl PartitionLog {
    /// Opens the log in `dir`, creating it if empty, and recovers it (see `docs/storage.md`):
    /// after a clean close, the index files are trusted; otherwise the active segment is
    /// walked batch by batch with CRCs checked and a torn or corrupt tail is cut off.
    pub async fn open(
        storage: Storage,
        dir: &Path,
        config: LogConfig,
    ) -> Result<PartitionLog, LogError> {
        if let Some(problem) = config.problem() {
            return Err(LogError::InvalidConfig { problem });
        }
        let append_config = config.append_config();
        let (segments, spares, report) =
            recovery::recover(&storage, dir, &config, &append_config).await?;
        let recycles = spares::recycles(&storage, config.recycle_segments);
        let log = PartitionLog {
            inner: Rc::new(LogInner {
                dir: dir.to_path_buf(),
                storage,
                config,
                append_config,
                segments: RefCell::new(segments),
                spares: Rc::new(RefCell::new(spares)),
                retiring: RefCell::new(None),
                recycles,
                append_lock: FifoLock::new(),
                pending_seals: RefCell::new(VecDeque::new()),
                failure: Rc::new(Failure::default()),
                unsynced_bytes: Cell::new(0),
                closed: Cell::new(false),
                recovery: report,
            }),
        };
        if let Durability::Interval { interval_ms, .. } = log.inner.config.durability {
            start_interval_flusher(Rc::downgrade(&log.inner), interval_ms);
        }
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// What recovery found and did when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// How many segment files this log has recycled since it was opened.
    pub fn recycle_stats(&self) -> RecycleStats {
        self.inner.spares.borrow().stats()
    }

    /// How many segments a roll left sealing in the background are still being sealed (at
    /// most [`SEALS_IN_FLIGHT_MAX`]).
    pub fn seals_in_flight(&self) -> usize {
        let pending = self.inner.pending_seals.borrow();
        pending
            .iter()
            .filter(|seal| seal.outcome().is_none())
            .count()
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.inner.segments.borrow()[0].base_offset()
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Bytes of batches across all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .segments
            .borrow()
            .iter()
            .map(|segment| segment.len())
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        self.inner.segments.borrow().len()
    }

    /// The base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        let segments = self.inner.segments.borrow();
        segments
            .iter()
            .map(|segment| segment.base_offset())
            .collect()
    }

    /// The file of the segment after the one whose file is `file`, if there is one (a reader
    /// at the end of a segment goes on there).
    pub fn segment_file_after(&self, file: &SegmentFile) -> Option<SegmentFile> {
        let segments = self.inner.segments.borrow();
        let index = segments
            .iter()
            .position(|segment| segment.file().same_file(file))?;
        segments.get(index + 1).map(|next| next.file())
    }

    fn active(&self) -> Rc<Segment> {
        let segments = self.inner.segments.borrow();
        Rc::clone(segments.last().expect("a log always has a segment"))
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.inner.closed.get() {
            return Err(LogError::Closed {
                dir: self.inner.dir.clone(),
            });
        }
        Ok(())
    }

    /// The error of a background failure that failed the log, if there was one.
    fn check_not_failed(&self) -> Result<(), LogError> {
        match self.inner.failure.error() {
            Some(error) => Err(LogError::Storage(error)),
            None => Ok(()),
        }
    }

    async fn lock(&self) -> Result<Turn<'_>, LogError> {
        let permit = self
            .inner
            .append_lock
            .lock()
            .await
            .map_err(|_| LogError::Closed {
                dir: self.inner.dir.clone(),
            })?;
        self.check_open()?;
        Ok(permit)
    }

    /// Appends one producer batch: checks it (header and CRC, nothing else is parsed), gives it
    /// the next offsets, and stores it byte for byte except `baseOffset` and
    /// `partitionLeaderEpoch` (both outside the CRC), which are written as assigned. `batch`
    /// itself is not changed: the log writes a patched copy of its first 16 bytes, then the
    /// rest. Returns when the durability policy says.
    pub async fn append(&self, batch: &[u8], leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let appended = self.append_with(batch, leader_epoch, |_| true).await?;
        Ok(appended.expect("an admission that always admits appends"))
    }

    /// Like [`append`](Self::append), but first asks `admit` whether to append at all. `admit`
    /// runs under the append lock with the header as it would be stored (base offset and epoch
    /// assigned), so a check that depends on earlier appends (an idempotent producer's
    /// sequence) cannot race with concurrent appends. Returns `None` when `admit` declined.
    pub async fn append_with(
        &self,
        batch: &[u8],
        leader_epoch: i32,
        admit: impl FnOnce(&BatchHeader) -> bool,
    ) -> Result<Option<AppendInfo>, LogError> {
        let batch = ValidBatch::check(batch, self.inner.config.max_batch_bytes)?;
        self.append_batch(&batch, Some(leader_epoch), admit).await
    }

    /// Like [`append_with`](Self::append_with), for a batch its caller has already checked
    /// (the broker checks a produce request's batches before appending any), so it is not
    /// checksummed again.
    pub async fn append_valid_with<B: AsRef<[u8]>>(
        &self,
        batch: &ValidBatch<B>,
        leader_epoch: i32,
        admit: impl FnOnce(&BatchHeader) -> bool,
    ) -> Result<Option<AppendInfo>, LogError> {
        self.append_batch(batch, Some(leader_epoch), admit).await
    }

    /// Appends a batch a follower copied from its leader: offsets and leader epoch stay as the
    /// leader assigned them, and the batch must start exactly at this log's end.
    pub async fn append_replicated(
        &self,
        batch: &[u8],
        admit: impl FnOnce(&BatchHeader) -> bool,
    ) -> Result<Option<AppendInfo>, LogError> {
        let batch = ValidBatch::check(batch, self.inner.config.max_batch_bytes)?;
        self.append_batch(&batch, None, admit).await
    }

    /// [`append_replicated`](Self::append_replicated) for a batch already checked.
    pub async fn append_valid_replicated<B: AsRef<[u8]>>(
        &self,
        batch: &ValidBatch<B>,
        admit: impl FnOnce(&BatchHeader) -> bool,
    ) -> Result<Option<AppendInfo>, LogError> {
        self.append_batch(batch, None, admit).await
    }

    /// The one append path. `assign_epoch` is `Some` on a leader (offsets and epoch are given
    /// here) and `None` on a follower (they are kept, and checked against the log end). The
    /// batch's CRC was checked when the [`ValidBatch`] was made; only this log's own limits
    /// are checked here.
    async fn append_batch<B: AsRef<[u8]>>(
        &self,
        valid: &ValidBatch<B>,
        assign_epoch: Option<i32>,
        admit: impl FnOnce(&BatchHeader) -> bool,
    ) -> Result<Option<AppendInfo>, LogError> {
        let config = &self.inner.config;
        let batch = valid.bytes().as_ref();
        let header = *valid.header();
        let batch_bytes = header.total_bytes();
        if batch_bytes > config.max_batch_bytes {
            return Err(LogError::InvalidBatch(BatchError::TooLarge {
                length: batch_bytes,
                max: config.max_batch_bytes,
                at: 0,
            }));
        }
        if batch_bytes != batch.len() {
            return Err(LogError::TrailingBytes {
                batch_bytes,
                buffer_bytes: batch.len(),
            });
        }
        if batch_bytes as u64 > config.segment_bytes {
            return Err(LogError::BatchTooLarge {
                batch_bytes,
                max_bytes: config.segment_bytes as usize,
            });
        }
        let permit = self.lock().await?;
        self.finish_seals()
            .await
            .map_err(|error| self.append_error(error))?;
        let mut active = self.active();
        debug_assert!(
            !active.file().is_sealed(),
            "the active segment takes appends: rolls and recovery never leave it sealed"
        );
        let last_offset_delta = i64::from(header.last_offset_delta);
        let full = active.len() + batch_bytes as u64 > config.segment_bytes;
        let old = config
            .segment_age_max
            .is_some_and(|age_max| active.age() >= age_max);
        let fits = active.fits_offset(active.next_offset() + last_offset_delta);
        if !active.is_empty() && (full || old || !fits) {
            self.roll()
                .await
                .map_err(|error| self.append_error(error))?;
            active = self.active();
        }
        let base_offset = active.next_offset();
        let stored = BatchHeader {
            base_offset,
            partition_leader_epoch: assign_epoch.unwrap_or(header.partition_leader_epoch),
            ..header
        };
        if assign_epoch.is_none() && header.base_offset != base_offset {
            return Err(LogError::NotAtLogEnd {
                expected: base_offset,
                found: header.base_offset,
            });
        }
        let file = active.file();
        // Space first: if the device is full this fails before anything is appended, and the
        // next append simply tries again. It also comes before `admit`, which may record the
        // batch (an idempotent producer's sequence): a batch refused here must not be taken
        // for a duplicate when the producer sends it again. From here to the copy nothing
        // awaits, so the file that `reserve` found writable takes the copy.
        file.reserve(file.len() + batch_bytes as u64)
            .await
            .map_err(|error| self.append_error(error.into()))?;
        if !admit(&stored) {
            return Ok(None);
        }
        // The stored head carries the assigned offsets and epoch (a follower's are the
        // leader's, already in the batch); the rest goes to the file as it came.
        let head = batch::patched_head(batch, base_offset, stored.partition_leader_epoch);
        let rest = &batch[batch::PATCHED_HEAD_BYTES..];
        active
            .append_batch(&head, rest, &stored, config.index_interval_bytes)
            .map_err(|error| self.append_error(error))?;
        drop(permit);

        self.await_durability(&active, batch_bytes as u64)
            .await
            .map_err(|error| self.append_error(error))?;
        Ok(Some(AppendInfo {
            base_offset,
            last_offset: base_offset + last_offset_delta,
            max_timestamp_ms: header.max_timestamp,
        }))
    }

    /// Waits for what the durability policy promises for an append of `batch_bytes` that was
    /// just copied into `segment`: room in the write-behind, and a sync if the policy asks
    /// (which, after a roll, also waits for the previous segment's end and this file's name
    /// to be durable: [`Segment::sync`]).
    async fn await_durability(&self, segment: &Segment, batch_bytes: u64) -> Result<(), LogError> {
        segment.file().wait_for_room().await?;
        match self.inner.config.durability {
            Durability::None => {}
            Durability::Always => segment.sync().await?,
            Durability::Interval { interval_bytes, .. } => {
                let unsynced = self.inner.unsynced_bytes.get() + batch_bytes;
                if unsynced >= interval_bytes {
                    self.inner.unsynced_bytes.set(0);
                    segment.sync().await?;
                } else {
                    self.inner.unsynced_bytes.set(unsynced);
                }
            }
        }
        Ok(())
    }

    /// An append's error as the caller should see it: a full device becomes
    /// [`LogError::NoSpace`], whichever operation met it.
    fn append_error(&self, error: LogError) -> LogError {
        match error {
            LogError::Storage(source) if source.is_no_space() => LogError::NoSpace {
                dir: self.inner.dir.clone(),
                source,
            },
            other => other,
        }
    }

    /// Whether the active segment failed a write or an fdatasync, or a roll's background
    /// work failed to make the previous segment durable or the new file's name durable (see
    /// `seal`). Such a log takes no more appends (they fail with
    /// [`StorageError::Poisoned`](crate::StorageError::Poisoned)), and reads are served only
    /// up to the last byte known written; [`reopen`](Self::reopen) it to append again.
    pub fn is_failed(&self) -> bool {
        self.inner.failure.error().is_some() || self.active().file().is_failed()
    }

    /// Opens this log again, through recovery, after a failed write or sync, and returns the
    /// new handle; this one is closed. The way back to appending after
    /// [`is_failed`](Self::is_failed).
    ///
    /// Why recovery: after a failed write the bytes from the failed write on are unknown (a
    /// prefix may be on the device, and later writes may have completed after a hole), and
    /// after a failed fdatasync the kernel may have dropped the pages it could not write. The
    /// recovery walk keeps the batches that are whole, valid and contiguous from the segment's
    /// start and cuts the file durably at the first that is not, so the next append starts
    /// right after valid data: never after a hole or garbage that a later recovery would cut
    /// together with newer, acknowledged batches. Everything acknowledged as durable is below
    /// the cut (a sync succeeds only once every write below its target completed). Batches
    /// acknowledged under `Durability::None` or `Interval` that never reached the file are
    /// lost, as a crash would lose them, and their offsets are given again.
    ///
    /// Every write of the failed file is waited out first, so none lands after the new handle
    /// writes. If reopening fails (the device still refuses), this log stays as it was,
    /// failed but readable, and the call can be retried.
    pub async fn reopen(&self) -> Result<PartitionLog, LogError> {
        let permit = self.lock().await?;
        // Background seals finish (or fail) first, so none writes behind recovery's back.
        let sealing: Vec<i64> = self.settle_seals().await;
        self.settle_retiring().await;
        let segments: Vec<Rc<Segment>> = self.inner.segments.borrow().clone();
        for segment in &segments {
            let active = Rc::ptr_eq(segment, segments.last().expect("never empty"));
            if active || segment.file().is_failed() || sealing.contains(&segment.base_offset()) {
                segment.file().settle().await;
                // Pages the kernel failed to write back may be marked clean and still be
                // served from the page cache; recovery must read what the device holds.
                self.inner.storage.drop_cached(&segment.paths().log).await;
            }
        }
        let reopened = PartitionLog::open(
            self.inner.storage.clone(),
            &self.inner.dir,
            self.inner.config.clone(),
        )
        .await?;
        // What recovery kept is durable before the log takes appends: an idempotent
        // producer's retry of a batch found there is answered as a duplicate, unsynced. That
        // includes the names of its files: a failed roll may have left the newest one's name
        // not yet durable.
        self.inner
            .storage
            .sync_dir_off_thread(&self.inner.dir)
            .await?;
        reopened.sync().await?;
        self.inner.closed.set(true);
        self.inner.append_lock.close();
        drop(permit);
        Ok(reopened)
    }

    /// Starts a new segment at the log end, in a spare file if there is one it may
    /// overwrite, and leaves the old one to be sealed in the background (see `seal`). Lock
    /// held by the caller. Returns the seal it started.
    ///
    /// Under the lock this only creates the new file (renaming a spare durably) and opens
    /// it; it waits for an older seal only when [`SEALS_IN_FLIGHT_MAX`] are running. If
    /// starting the new segment fails, nothing changed: the old segment stays the active
    /// one, unsealed, and the next append tries again.
    async fn roll(&self) -> Result<PendingSeal, LogError> {
        loop {
            let oldest = {
                let pending = self.inner.pending_seals.borrow();
                if pending.len() < SEALS_IN_FLIGHT_MAX {
                    break;
                }
                pending
                    .front()
                    .cloned()
                    .expect("at the bound, so not empty")
            };
            oldest.done.await;
            self.finish_seals().await?;
        }
        self.check_not_failed()?;
        let active = self.active();
        let base_offset = active.next_offset();
        let spare = self.inner.spares.borrow_mut().take(base_offset);
        let created = Segment::create_unsynced(
            &self.inner.storage,
            &self.inner.dir,
            base_offset,
            &self.inner.append_config,
            spare.as_deref(),
        )
        .await?;
        // Nothing below awaits or fails: the roll happens whole from here.
        let failure = &self.inner.failure;
        let (pending, old_end_durable) = seal::start_seal(&self.inner.storage, &active, failure);
        let durable_after = if created.name_durable {
            old_end_durable
        } else {
            let name = seal::sync_name(&self.inner.storage, &self.inner.dir, failure);
            seal::both(old_end_durable, name)
        };
        created.segment.set_durable_after(durable_after);
        self.inner
            .pending_seals
            .borrow_mut()
            .push_back(pending.clone());
        self.inner
            .segments
            .borrow_mut()
            .push(Rc::new(created.segment));
        Ok(pending)
    }

    /// Looks at the background seals that have finished, oldest first, and forgets them; a
    /// seal that could not write its segment's index files has them written now (lock held
    /// by the caller), and its error is returned while that still fails. A seal whose file
    /// failed failed the log: [`check_not_failed`](Self::check_not_failed) reports it.
    /// Cheap when no seal is pending.
    async fn finish_seals(&self) -> Result<(), LogError> {
        loop {
            let (base_offset, outcome) = {
                let pending = self.inner.pending_seals.borrow();
                let Some(front) = pending.front() else {
                    break;
                };
                let Some(outcome) = front.outcome() else {
                    break;
                };
                (front.base_offset, outcome)
            };
            if let SealOutcome::IndexesFailed(_) = outcome {
                if let Some(segment) = self.segment_at(base_offset) {
                    segment.write_indexes(&self.inner.storage).await?;
                }
            }
            self.inner.pending_seals.borrow_mut().pop_front();
        }
        self.check_not_failed()
    }

    /// Waits until every background seal has finished, and returns the base offsets of the
    /// segments they sealed (or failed to). They stay pending, for [`finish_seals`] to see.
    async fn settle_seals(&self) -> Vec<i64> {
        let pending: Vec<PendingSeal> = self.inner.pending_seals.borrow().iter().cloned().collect();
        for seal in &pending {
            seal.done.clone().await;
        }
        pending.iter().map(|seal| seal.base_offset).collect()
    }

    /// Forgets the background seals of segments at or after `base_offset` (their segments
    /// were dropped or cut). They must have finished.
    fn forget_seals_from(&self, base_offset: i64) {
        self.inner.pending_seals.borrow_mut().retain(|seal| {
            debug_assert!(
                seal.outcome().is_some(),
                "a seal is forgotten only once finished"
            );
            seal.base_offset < base_offset
        });
    }

    /// The segment whose base offset is `base_offset`, if the log still has it.
    fn segment_at(&self, base_offset: i64) -> Option<Rc<Segment>> {
        let segments = self.inner.segments.borrow();
        segments
            .binary_search_by_key(&base_offset, |segment| segment.base_offset())
            .ok()
            .map(|index| Rc::clone(&segments[index]))
    }

    /// Rolls now if the active segment holds anything (Kafka's forced roll). Returns once the
    /// rolled segment is sealed (durable, trimmed, its index files written); only the new
    /// segment is created under the append lock, so appends go on meanwhile.
    pub async fn roll_now(&self) -> Result<(), LogError> {
        let pending = {
            let _permit = self.lock().await?;
            self.finish_seals().await?;
            if self.active().is_empty() {
                return Ok(());
            }
            self.roll().await?
        };
        match pending.done.await {
            SealOutcome::Sealed => Ok(()),
            SealOutcome::FileFailed => self.check_not_failed(),
            SealOutcome::IndexesFailed(error) => Err(error.into()),
        }
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (but at least one batch).
    /// Reading at the log end returns nothing; outside `[start, end]` is `OffsetOutOfRange`.
    pub async fn read(&self, offset: i64, max_bytes: u64) -> Result<Vec<FileRegion>, LogError> {
        self.read_below(offset, max_bytes, i64::MAX).await
    }

    /// Like [`read`](Self::read), but only batches that start below `upper_offset` (a high
    /// watermark, for consumers of a replicated log).
    pub async fn read_below(
        &self,
        offset: i64,
        max_bytes: u64,
        upper_offset: i64,
    ) -> Result<Vec<FileRegion>, LogError> {
        self.check_open()?;
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        let segments: Vec<Rc<Segment>> = self.inner.segments.borrow().clone();
        let first = segments.partition_point(|segment| segment.base_offset() <= offset) - 1;
        for segment in &segments[first..] {
            if let Some(region) = segment.read(offset, max_bytes, upper_offset).await? {
                return Ok(vec![region]);
            }
        }
        Ok(Vec::new())
    }

    /// The first record whose timestamp is at least `target_ms` (Kafka's ListOffsets by
    /// timestamp), or `None` if every record is older.
    pub async fn offset_for_timestamp(
        &self,
        target_ms: i64,
    ) -> Result<Option<TimestampMatch>, LogError> {
        self.check_open()?;
        let segments: Vec<Rc<Segment>> = self.inner.segments.borrow().clone();
        for segment in &segments {
            let Some(place) = segment.find_by_timestamp(target_ms).await? else {
                continue;
            };
            let bytes = segment
                .file()
                .read_at(place.position, place.header.total_bytes())
                .await?;
            let records = batch::decode_records(&bytes, self.inner.config.max_batch_bytes * 4)?;
            let header = place.header;
            let found = records.iter().find_map(|record| {
                let timestamp_ms = header.base_timestamp + record.timestamp_delta;
                (timestamp_ms >= target_ms).then_some(TimestampMatch {
                    offset: header.base_offset + i64::from(record.offset_delta),
                    timestamp_ms,
                })
            });
            // With LogAppendTime the batch's max timestamp stands for every record.
            return Ok(Some(found.unwrap_or(TimestampMatch {
                offset: header.base_offset,
                timestamp_ms: header.max_timestamp,
            })));
        }
        Ok(None)
    }

    /// Removes every record at or after `offset` (a follower cutting a divergent tail), and
    /// returns the new log end. A batch that holds `offset` goes whole, so the end may land
    /// below `offset`, at that batch's base. The cut is durable before this returns.
    ///
    /// Background seals finish first (a seal must not write index files for contents the
    /// truncation removes); a log that one of them failed refuses.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let _permit = self.lock().await?;
        self.settle_seals().await;
        self.check_not_failed()?;
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset >= end {
            return Ok(end);
        }
        if offset < start {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        let keep = {
            let segments = self.inner.segments.borrow();
            segments.partition_point(|segment| segment.base_offset() <= offset)
        };
        let dropped: Vec<Rc<Segment>> = self.inner.segments.borrow_mut().split_off(keep);
        // Newest first, so a crash part-way leaves a contiguous prefix.
        for segment in dropped.iter().rev() {
            segment.delete_files(&self.inner.storage).await?;
        }
        let target = self.active();
        // The target's index files are removed and rewritten at its next seal.
        self.forget_seals_from(target.base_offset());
        if let Some(place) = target.find(offset).await? {
            target
                .truncate_to(
                    &self.inner.storage,
                    place.position,
                    place.header.base_offset,
                    &self.inner.append_config,
                    self.inner.config.index_interval_bytes,
                    self.inner.config.max_batch_bytes,
                )
                .await?;
        } else {
            // The cut falls exactly at this segment's end: it must take appends again.
            let len = target.len();
            target
                .truncate_to(
                    &self.inner.storage,
                    len,
                    target.next_offset(),
                    &self.inner.append_config,
                    self.inner.config.index_interval_bytes,
                    self.inner.config.max_batch_bytes,
                )
                .await?;
        }
        Ok(self.log_end_offset())
    }

    /// Deletes whole old segments beyond the retention limits (never the active one) and
    /// returns how many went. `now_ms` is the wall clock in Unix milliseconds. A dropped
    /// segment's log file may be kept as a spare for a later roll to overwrite rather than
    /// deleted (`LogConfig::recycle_segments`); it is no longer part of the log either way.
    ///
    /// Waits for background seals to finish first, so no seal runs on a dropped segment. It
    /// does not retry index files a seal failed to write (that could fail on the full disk
    /// retention is freeing); a segment whose file failed is deleted, never recycled.
    ///
    /// Under the append lock it only takes the segments out of the log and decides what
    /// becomes of each file. The renames into spares and the deletions (an unlink, a rename
    /// and a directory fsync each) run after the lock is released, off the executor's
    /// thread, in a task of their own (`spares::retire_in_background`); this returns once
    /// they are done, with the first error. A later retention, `close` and `reopen` wait for
    /// them, under the lock.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let (retiring, deleted) = {
            let _permit = self.lock().await?;
            self.settle_seals().await;
            self.settle_retiring().await;
            let config = &self.inner.config;
            let mut retirements = Vec::new();
            loop {
                let candidate = {
                    let segments = self.inner.segments.borrow();
                    if segments.len() < 2 {
                        break;
                    }
                    let total: u64 = segments.iter().map(|segment| segment.len()).sum();
                    let oldest = &segments[0];
                    let over_size = config
                        .retention_bytes
                        .is_some_and(|limit| total - oldest.len() >= limit);
                    let too_old = config.retention_age_max.is_some_and(|age_max| {
                        oldest.max_timestamp_ms() >= 0
                            && now_ms - oldest.max_timestamp_ms() > age_max.as_millis() as i64
                    });
                    (over_size || too_old).then(|| Rc::clone(oldest))
                };
                let Some(segment) = candidate else { break };
                self.inner.segments.borrow_mut().remove(0);
                let base_offset = segment.base_offset();
                self.inner
                    .pending_seals
                    .borrow_mut()
                    .retain(|seal| seal.base_offset != base_offset);
                let recyclable = self.inner.recycles && !segment.file().is_failed();
                retirements.push(self.inner.spares.borrow_mut().plan_retirement(
                    segment,
                    config.segment_bytes,
                    recyclable,
                ));
            }
            if retirements.is_empty() {
                return Ok(0);
            }
            let deleted = retirements.len();
            let retiring =
                spares::retire_in_background(&self.inner.storage, &self.inner.spares, retirements);
            *self.inner.retiring.borrow_mut() = Some(retiring.clone());
            (retiring, deleted)
        };
        retiring.await?;
        Ok(deleted)
    }

    /// Waits until the file work of the last retention is done (its errors are its caller's).
    async fn settle_retiring(&self) {
        let retiring = self.inner.retiring.borrow_mut().take();
        if let Some(retiring) = retiring {
            let _ = retiring.await;
        }
    }

    /// Returns when everything appended so far is written (not necessarily durable).
    pub async fn flush(&self) -> Result<(), LogError> {
        Ok(self.active().file().flush().await?)
    }

    /// Returns when everything appended so far is durable (after a roll, that includes the
    /// previous segment's end and the new file's name).
    pub async fn sync(&self) -> Result<(), LogError> {
        self.inner.unsynced_bytes.set(0);
        Ok(self.active().sync().await?)
    }

    /// Makes everything durable, waits for background seals (writing index files they could
    /// not), writes the active segment's indexes and the clean-shutdown marker, and refuses
    /// further calls. The next open trusts the indexes. A log that a background failure
    /// failed is not closed cleanly: the error is returned and no marker is written.
    pub async fn close(&self) -> Result<(), LogError> {
        let _permit = self.lock().await?;
        self.settle_seals().await;
        self.settle_retiring().await;
        self.finish_seals().await?;
        let active = self.active();
        active.wait_durable_after().await?;
        active.seal(&self.inner.storage).await?;
        self.inner
            .storage
            .write_file_atomic_off_thread(&self.inner.dir.join(CLEAN_SHUTDOWN_FILE), Vec::new())
            .await?;
        self.inner.closed.set(true);
        self.inner.append_lock.close();
        Ok(())
    }
}

/// Syncs the log every `interval_ms` while it has unsynced bytes; stops when the log is gone.
fn start_interval_flusher(log: Weak<LogInner>, interval_ms: u64) {
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(std::time::Duration::from_millis(interval_ms.max(1))).await;
            let Some(inner) = log.upgrade() else { break };
            if inner.closed.get() {
                break;
            }
            if inner.unsynced_bytes.get() > 0 {
                inner.unsynced_bytes.set(0);
                let active = Rc::clone(inner.segments.borrow().last().expect("never empty"));
                // A failed sync poisons the appender; the next append reports it.
                let _ = active.sync().await;
            }
        }
    })
    .detach();
}
