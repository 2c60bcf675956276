//! A segment: one log file (`<20-digit base offset>.log`) plus its two sparse indexes.
//!
//! The log file is batches back to back, exactly as producers sent them with `baseOffset` and
//! `partitionLeaderEpoch` patched in; no framing of our own. So a fetch can send file bytes as
//! they are, and recovery finds batch boundaries from the batches' own length fields.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;

use futures_util::future::Shared;

use crate::batch::layout::HEADER_BYTES;
use crate::batch::{self, BatchHeader};
use crate::error::{LogError, StorageError};
use crate::index::{OffsetIndex, TimeIndex, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
use crate::storage::{AppendConfig, SegmentFile, Storage};

/// How many bytes a header walk reads at once. Walks are short (reads jump through the
/// offset index and walk at most about one index interval), so a small window wastes little
/// when batches are large and still catches several headers when they are small.
const WALK_WINDOW_BYTES: usize = 8 * 1024;

/// How many bytes a recovery scan reads at once: it reads every byte, so read big.
const SCAN_WINDOW_BYTES: usize = 1 << 20;

/// The file names of a segment.
#[derive(Clone, Debug)]
pub struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base_offset: i64) -> SegmentPaths {
        let stem = format!("{base_offset:020}");
        SegmentPaths {
            log: dir.join(format!("{stem}.log")),
            index: dir.join(format!("{stem}.index")),
            time_index: dir.join(format!("{stem}.timeindex")),
        }
    }

    /// The base offset named by a log file name, if it is one of ours.
    pub fn parse_log_name(name: &str) -> Option<i64> {
        let stem = name.strip_suffix(".log")?;
        if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        stem.parse().ok()
    }
}

/// A contiguous run of whole batches in one segment file, ready to be sent as it is: its
/// bytes are in the file (written, maybe not durable), so it can go out with `sendfile` from
/// [`raw_fd`](Self::raw_fd) where the strategy has a descriptor, or be copied with
/// [`read_bytes`](Self::read_bytes).
#[derive(Clone)]
pub struct FileRegion {
    pub file: SegmentFile,
    pub position: u64,
    pub len: u64,
}

impl FileRegion {
    /// The region's bytes, copied out of the file.
    pub async fn read_bytes(&self) -> Result<Vec<u8>, LogError> {
        Ok(self.file.read_at(self.position, self.len as usize).await?)
    }

    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.file.raw_fd()
    }

    /// A descriptor of the region's file that may be kept and sent from another core; while
    /// it lives the file is never recycled (only deleted), so its bytes stay as they were.
    /// `None` where the strategy has no kernel file.
    pub fn shared_fd(&self) -> Option<std::io::Result<std::sync::Arc<std::os::fd::OwnedFd>>> {
        self.file.shared_fd()
    }
}

/// Work running in the background that others may wait on (a clone is cheap; each clone
/// sees the same result). The log uses it for what a roll leaves running after the append
/// lock is released: see `log::seal`.
pub type Background = Shared<Pin<Box<dyn Future<Output = Result<(), StorageError>>>>>;

/// A new segment from [`Segment::create_unsynced`], and whether its file's name is durable
/// yet.
pub struct Created {
    pub segment: Segment,
    /// `false` for a new file: its directory must be synced before the segment's bytes count
    /// as durable (a file's fdatasync does not make its name durable).
    pub name_durable: bool,
}

/// Where a batch sits in a segment, as far as reads and truncation need to know.
#[derive(Clone, Copy, Debug)]
pub struct BatchPlace {
    pub position: u64,
    pub header: BatchHeader,
}

struct Indexes {
    offset: OffsetIndex,
    time: TimeIndex,
    bytes_since_entry: u64,
}

/// One segment of a partition log. Owned by the log's core; not `Send`.
///
/// Appends go through the log, which serialises them; reads may run concurrently with appends
/// (they see whole batches only, up to the end the log passes them).
pub struct Segment {
    base_offset: i64,
    paths: SegmentPaths,
    file: RefCell<SegmentFile>,
    indexes: RefCell<Indexes>,
    next_offset: Cell<i64>,
    max_timestamp_ms: Cell<i64>,
    created: Instant,
    /// What must be durable before this segment's own durable bytes may be acknowledged as
    /// such, when a roll left it running: the previous segment's last bytes and this file's
    /// name (see [`set_durable_after`](Self::set_durable_after)). Cleared once it succeeded.
    durable_after: RefCell<Option<Background>>,
}

/// What a scan of a segment file found.
pub struct ScanOutcome {
    /// Bytes of valid batches from the start of the file.
    pub valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped_by: Option<String>,
    /// The scan stopped at a whole, valid batch from before this segment (its base offset is
    /// below the segment's): the old contents of a recycled file, not a torn write.
    pub stale_batch: bool,
}

impl Segment {
    /// A new, empty segment whose first batch will get `base_offset`.
    ///
    /// With `recycled`, the segment's log file is that spare file, renamed (durably) into
    /// place: appends then overwrite blocks written before, and the old batches after the
    /// write position are never read (reads stop at the logical end) nor recovered (their
    /// offsets are all below `base_offset`; the caller guarantees it, see `log::spares`).
    ///
    /// Returns once the new file's name is durable.
    pub async fn create(
        storage: &Storage,
        dir: &Path,
        base_offset: i64,
        config: &AppendConfig,
        recycled: Option<&Path>,
    ) -> Result<Segment, LogError> {
        let created = Segment::create_unsynced(storage, dir, base_offset, config, recycled).await?;
        if !created.name_durable {
            storage.sync_dir_off_thread(dir).await?;
        }
        Ok(created.segment)
    }

    /// Like [`create`](Self::create), but without waiting for a new file's name to be
    /// durable: when [`Created::name_durable`] is `false`, the caller must sync `dir` before
    /// anything in the segment is acknowledged as durable; without it, a crash could lose a
    /// whole segment of batches that were fdatasynced. A recycled spare's rename is made
    /// durable here, before the segment takes a write: a crash must never find new batches
    /// in a file still named as a spare (see `log::spares`).
    pub async fn create_unsynced(
        storage: &Storage,
        dir: &Path,
        base_offset: i64,
        config: &AppendConfig,
        recycled: Option<&Path>,
    ) -> Result<Created, LogError> {
        let paths = SegmentPaths::new(dir, base_offset);
        // Leftovers of an interrupted roll or truncation must not be read as this segment's.
        for path in [&paths.log, &paths.index, &paths.time_index] {
            storage.remove_off_thread(path).await?;
        }
        let mut renamed = false;
        if let Some(spare) = recycled {
            match storage.rename_off_thread(spare, &paths.log).await {
                Ok(()) => renamed = true,
                Err(error) => {
                    // A spare is only a speed-up: start a fresh file instead.
                    tracing::warn!(spare = %spare.display(), %error, "cannot recycle a spare segment file");
                    storage.remove_off_thread(spare).await?;
                    storage.remove_off_thread(&paths.log).await?;
                }
            }
        }
        let file = storage.open_segment_file(&paths.log, 0, config).await?;
        Ok(Created {
            segment: Segment::with_file(base_offset, paths, file),
            name_durable: renamed,
        })
    }

    fn with_file(base_offset: i64, paths: SegmentPaths, file: SegmentFile) -> Segment {
        Segment {
            base_offset,
            paths,
            file: RefCell::new(file),
            indexes: RefCell::new(Indexes {
                offset: OffsetIndex::default(),
                time: TimeIndex::default(),
                bytes_since_entry: 0,
            }),
            next_offset: Cell::new(base_offset),
            max_timestamp_ms: Cell::new(-1),
            created: Instant::now(),
            durable_after: RefCell::new(None),
        }
    }

    /// Makes [`sync`](Self::sync) wait for `barrier` too, until it has succeeded once. A roll
    /// sets it on the new segment before the segment takes an append: a crash must not find
    /// this segment's acknowledged batches after a torn end of the previous one (recovery
    /// would cut the log there) or lose this file's name.
    pub fn set_durable_after(&self, barrier: Background) {
        *self.durable_after.borrow_mut() = Some(barrier);
    }

    /// Waits for what [`set_durable_after`](Self::set_durable_after) set, if anything.
    pub async fn wait_durable_after(&self) -> Result<(), StorageError> {
        let Some(barrier) = self.durable_after.borrow().clone() else {
            return Ok(());
        };
        barrier.await?;
        *self.durable_after.borrow_mut() = None;
        Ok(())
    }

    /// Returns when every byte appended here before the call is durable, and so is what the
    /// segment depends on for that (see [`set_durable_after`](Self::set_durable_after)).
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.file().sync().await?;
        self.wait_durable_after().await
    }

    /// Opens an existing segment for recovery: the file is taken as `len` bytes long, for
    /// appending (`sealed == false`) or reading only.
    pub async fn open(
        storage: &Storage,
        dir: &Path,
        base_offset: i64,
        len: u64,
        sealed: bool,
        config: &AppendConfig,
    ) -> Result<Segment, LogError> {
        let paths = SegmentPaths::new(dir, base_offset);
        let file = if sealed {
            storage
                .open_sealed_segment_file(&paths.log, len, config)
                .await?
        } else {
            storage.open_segment_file(&paths.log, len, config).await?
        };
        Ok(Segment::with_file(base_offset, paths, file))
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The offset the next batch appended here would get.
    pub fn next_offset(&self) -> i64 {
        self.next_offset.get()
    }

    /// The largest batch timestamp in the segment, or -1 when empty.
    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms.get()
    }

    pub fn age(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    pub fn paths(&self) -> &SegmentPaths {
        &self.paths
    }

    pub fn file(&self) -> SegmentFile {
        self.file.borrow().clone()
    }

    /// Whether anything besides this segment can still read its log file (a region being
    /// read or sent, on this core or another); see [`SegmentFile::is_shared`].
    pub fn file_is_shared(&self) -> bool {
        self.file.borrow().is_shared()
    }

    /// Bytes of batches in the log file.
    pub fn len(&self) -> u64 {
        self.file.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offsets relative to the base fit in 32 bits: the log rolls before they would not.
    fn relative(&self, offset: i64) -> u32 {
        let relative = offset - self.base_offset;
        debug_assert!((0..=i64::from(u32::MAX)).contains(&relative));
        relative.clamp(0, i64::from(u32::MAX)) as u32
    }

    /// Whether a batch spanning `last_offset` can still get a 32-bit relative offset here.
    pub fn fits_offset(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= i64::from(u32::MAX)
    }

    /// Notes a batch at `position` in the indexes and offsets, without writing it.
    fn account(&self, position: u64, header: &BatchHeader, interval_bytes: u64) {
        let mut indexes = self.indexes.borrow_mut();
        let max_timestamp_ms = self.max_timestamp_ms.get().max(header.max_timestamp);
        if position > 0 && indexes.bytes_since_entry >= interval_bytes {
            let relative = self.relative(header.base_offset);
            indexes.offset.push(relative, position as u32);
            indexes.time.push(max_timestamp_ms, relative);
            indexes.bytes_since_entry = 0;
        }
        indexes.bytes_since_entry += header.total_bytes() as u64;
        self.max_timestamp_ms.set(max_timestamp_ms);
        self.next_offset.set(header.last_offset() + 1);
    }

    /// Copies a validated batch to the end of the file as `head` (its first bytes, with the
    /// offsets and epoch it is stored with) then `rest` (in memory; see `Appender` for when it
    /// is written and durable).
    pub fn append_batch(
        &self,
        head: &[u8],
        rest: &[u8],
        header: &BatchHeader,
        interval_bytes: u64,
    ) -> Result<(), LogError> {
        let file = self.file.borrow().clone();
        let position = file.len();
        file.append(head)?;
        file.append(rest)?;
        self.account(position, header, interval_bytes);
        Ok(())
    }

    /// Walks the batches from the start of the file (or from the last index entry when
    /// `from_last_index_entry`), checking each one's CRC and that offsets follow on; rebuilds
    /// what the indexes lack and stops at the first batch that fails.
    pub async fn scan(
        &self,
        max_batch_bytes: usize,
        interval_bytes: u64,
        from_last_index_entry: bool,
    ) -> Result<ScanOutcome, LogError> {
        let file = self.file();
        let end = file.len();
        let (mut position, mut expected_offset) = match self.indexes.borrow().offset.last() {
            Some((relative, entry_position)) if from_last_index_entry => (
                u64::from(entry_position),
                self.base_offset + i64::from(relative),
            ),
            _ => (0, self.base_offset),
        };
        if position == 0 {
            let mut indexes = self.indexes.borrow_mut();
            indexes.offset = OffsetIndex::default();
            indexes.time = TimeIndex::default();
            indexes.bytes_since_entry = 0;
            self.max_timestamp_ms.set(-1);
        } else {
            // Entries from here on are rebuilt by the walk.
            let mut indexes = self.indexes.borrow_mut();
            indexes.offset.truncate_to_position(position);
            indexes
                .time
                .truncate_to_offset(self.relative(expected_offset));
            indexes.bytes_since_entry = interval_bytes;
        }
        self.next_offset.set(expected_offset);
        let mut walker = Walker::new(file, end, SCAN_WINDOW_BYTES);
        let mut stale_batch = false;
        let stopped_by = loop {
            if position >= end {
                break None;
            }
            let header = match walker.header_at(position).await? {
                Ok(header) => header,
                Err(reason) => break Some(reason),
            };
            let total = header.total_bytes();
            if total > max_batch_bytes || position + total as u64 > end {
                break Some(format!(
                    "batch at byte {position} claims {total} bytes, past the end or the limit"
                ));
            }
            let bytes = walker.bytes(position, total).await?;
            if let Err(error) = batch::validate(bytes, max_batch_bytes) {
                break Some(format!("batch at byte {position}: {error}"));
            }
            if header.base_offset != expected_offset {
                // Offsets only grow, and a recycled file is reused only by a segment that
                // starts after all of its old batches: one below the base is stale.
                stale_batch = header.base_offset < self.base_offset;
                break Some(format!(
                    "batch at byte {position} has base offset {}, expected {expected_offset}",
                    header.base_offset
                ));
            }
            self.account(position, &header, interval_bytes);
            expected_offset = header.last_offset() + 1;
            position += total as u64;
        };
        Ok(ScanOutcome {
            valid_len: position,
            stopped_by,
            stale_batch,
        })
    }

    /// The place of the first batch whose last offset is at least `offset`, if any.
    pub async fn find(&self, offset: i64) -> Result<Option<BatchPlace>, LogError> {
        let file = self.file();
        let end = file.readable_len();
        let relative = self.relative(offset.max(self.base_offset));
        let mut position = u64::from(self.indexes.borrow().offset.lookup(relative));
        let mut walker = Walker::new(file, end, WALK_WINDOW_BYTES);
        while position < end {
            let header = self.header_or_corrupt(&mut walker, position).await?;
            if header.last_offset() >= offset {
                return Ok(Some(BatchPlace { position, header }));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    async fn header_or_corrupt(
        &self,
        walker: &mut Walker,
        position: u64,
    ) -> Result<BatchHeader, LogError> {
        walker
            .header_at(position)
            .await?
            .map_err(|_| LogError::Corrupt {
                path: self.paths.log.clone(),
                position,
                what: "no valid batch header where the index or the previous batch points",
            })
    }

    /// Whole batches from the one holding `offset`, at most `max_bytes` of them (but always the
    /// first, as Kafka does, so a consumer can make progress), stopping before `upper_offset`.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: u64,
        upper_offset: i64,
    ) -> Result<Option<FileRegion>, LogError> {
        let Some(first) = self.find(offset).await? else {
            return Ok(None);
        };
        if first.header.base_offset >= upper_offset {
            return Ok(None);
        }
        let file = self.file();
        let end = file.readable_len();
        let mut walker = Walker::new(file.clone(), end, WALK_WINDOW_BYTES);
        let mut region_end = first.position + first.header.total_bytes() as u64;
        // Jump to the last indexed batch boundary inside the budget; walk only from there.
        let budget_end = first.position + max_bytes;
        let jump = self
            .indexes
            .borrow()
            .offset
            .last_at_or_before_position(budget_end.min(end));
        if let Some((relative, position)) = jump {
            let position = u64::from(position);
            let base_offset = self.base_offset + i64::from(relative);
            if position > region_end && base_offset < upper_offset {
                region_end = position;
            }
        }
        while region_end < end {
            let header = self.header_or_corrupt(&mut walker, region_end).await?;
            let next_end = region_end + header.total_bytes() as u64;
            if header.base_offset >= upper_offset || next_end - first.position > max_bytes {
                break;
            }
            region_end = next_end;
        }
        // The region may be sent straight from the descriptor: its bytes must be in the file.
        if file.written_len() < region_end {
            file.flush().await?;
        }
        Ok(Some(FileRegion {
            file,
            position: first.position,
            len: region_end - first.position,
        }))
    }

    /// The first batch whose largest timestamp is at least `target_ms`, if any.
    pub async fn find_by_timestamp(&self, target_ms: i64) -> Result<Option<BatchPlace>, LogError> {
        if self.max_timestamp_ms.get() < target_ms {
            return Ok(None);
        }
        let file = self.file();
        let end = file.readable_len();
        let start_relative = self.indexes.borrow().time.lookup(target_ms);
        let mut position = u64::from(self.indexes.borrow().offset.lookup(start_relative));
        let mut walker = Walker::new(file, end, WALK_WINDOW_BYTES);
        while position < end {
            let header = self.header_or_corrupt(&mut walker, position).await?;
            if header.max_timestamp >= target_ms {
                return Ok(Some(BatchPlace { position, header }));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Removes every batch from `place` on, durably; appends continue there. A sealed
    /// segment's file is reopened for appending.
    pub async fn truncate_to(
        &self,
        storage: &Storage,
        position: u64,
        next_offset: i64,
        config: &AppendConfig,
        interval_bytes: u64,
        max_batch_bytes: usize,
    ) -> Result<(), LogError> {
        let file = self.file();
        match file.truncate(position).await {
            Ok(()) => {}
            Err(crate::error::StorageError::Sealed { .. }) => {
                // A sealed file was trimmed to its length; reopen it for appending.
                let reopened = storage
                    .open_segment_file(&self.paths.log, file.len(), config)
                    .await?;
                reopened.truncate(position).await?;
                *self.file.borrow_mut() = reopened;
            }
            Err(error) => return Err(error.into()),
        }
        // Index files on disk describe the old contents; they are rewritten at the next seal.
        storage.remove_off_thread(&self.paths.index).await?;
        storage.remove_off_thread(&self.paths.time_index).await?;
        // Rebuild offsets, timestamps and indexes from what remains.
        let outcome = self.scan(max_batch_bytes, interval_bytes, false).await?;
        debug_assert_eq!(outcome.valid_len, position);
        debug_assert_eq!(self.next_offset(), next_offset);
        Ok(())
    }

    /// Makes the segment durable, trims it, writes its indexes, and refuses further appends.
    /// The index files are written off the executor's thread (the file system's fsyncs would
    /// otherwise stall every partition of the core); this returns once they are durable.
    pub async fn seal(&self, storage: &Storage) -> Result<(), LogError> {
        self.file().seal().await?;
        Ok(self.write_indexes(storage).await?)
    }

    /// Writes the segment's index files (each atomically and durably) from the indexes in
    /// memory, off the executor's thread.
    pub async fn write_indexes(&self, storage: &Storage) -> Result<(), StorageError> {
        let (offset, time) = {
            let indexes = self.indexes.borrow();
            (indexes.offset.encode(), indexes.time.encode())
        };
        storage
            .write_file_atomic_off_thread(&self.paths.index, offset)
            .await?;
        storage
            .write_file_atomic_off_thread(&self.paths.time_index, time)
            .await?;
        Ok(())
    }

    /// Loads the index files of a sealed segment of `len` bytes; `false` if they are missing
    /// or fail their checks (the caller then rebuilds them with a full scan).
    pub async fn load_indexes(&self, storage: &Storage, len: u64) -> Result<bool, LogError> {
        // An entry per batch at most, and a batch is at least a header long.
        let entries_max = len / HEADER_BYTES as u64 + 1;
        let Some(offset_bytes) = storage
            .read_file_off_thread(
                &self.paths.index,
                entries_max * OFFSET_ENTRY_BYTES as u64 + 1,
            )
            .await?
        else {
            return Ok(false);
        };
        let Some(time_bytes) = storage
            .read_file_off_thread(
                &self.paths.time_index,
                entries_max * TIME_ENTRY_BYTES as u64 + 1,
            )
            .await?
        else {
            return Ok(false);
        };
        let Ok(offset) = OffsetIndex::decode(&offset_bytes, len) else {
            return Ok(false);
        };
        let relative_bound = offset.last().map_or(0, |(relative, _)| u64::from(relative)) + 1;
        // Time entries may not point past the offset index's reach... except after the last
        // entry, so only bound them by what the offset range allows.
        let Ok(time) = TimeIndex::decode(&time_bytes, relative_bound.max(u64::from(u32::MAX)))
        else {
            return Ok(false);
        };
        let mut indexes = self.indexes.borrow_mut();
        indexes.offset = offset;
        indexes.time = time;
        Ok(true)
    }

    /// Removes the segment's files, off the executor's thread (unlinking a segment frees
    /// its extents, which can take the file system a while). The segment must no longer be
    /// in the log's list.
    pub async fn delete_files(&self, storage: &Storage) -> Result<(), LogError> {
        for path in [&self.paths.log, &self.paths.index, &self.paths.time_index] {
            storage.remove_off_thread(path).await?;
        }
        Ok(())
    }
}

/// Reads batch headers and bodies through a window, so walking small batches costs one read
/// per window rather than one per batch. Holds at most one window or one batch.
struct Walker {
    file: SegmentFile,
    end: u64,
    window_bytes: usize,
    window: Vec<u8>,
    window_start: u64,
}

impl Walker {
    fn new(file: SegmentFile, end: u64, window_bytes: usize) -> Walker {
        Walker {
            file,
            end,
            window_bytes,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// `len` bytes at `position` (fewer at the end of the file).
    async fn bytes(&mut self, position: u64, len: usize) -> Result<&[u8], LogError> {
        let window_end = self.window_start + self.window.len() as u64;
        let wanted_end = (position + len as u64).min(self.end);
        if position < self.window_start || wanted_end > window_end {
            let read_len = (wanted_end - position).max(self.window_bytes as u64);
            let read_len = read_len.min(self.end - position) as usize;
            self.window = self.file.read_at(position, read_len).await?;
            self.window_start = position;
        }
        let from = (position - self.window_start) as usize;
        let to = (from + len).min(self.window.len());
        Ok(&self.window[from..to])
    }

    /// The header of the batch at `position`, or why there is none (a torn or zeroed tail).
    async fn header_at(&mut self, position: u64) -> Result<Result<BatchHeader, String>, LogError> {
        let bytes = self.bytes(position, HEADER_BYTES).await?;
        if bytes.len() < HEADER_BYTES {
            return Ok(Err(format!(
                "{} bytes at byte {position}, fewer than a batch header",
                bytes.len()
            )));
        }
        Ok(
            BatchHeader::parse_fields(bytes)
                .map_err(|error| format!("at byte {position}: {error}")),
        )
    }
}
