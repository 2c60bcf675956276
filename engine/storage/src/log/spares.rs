//! Recycled segments: log files that retention dropped, kept to be overwritten by new segments.
//!
//! **Why.** A new segment is preallocated with `fallocate`, which leaves its blocks *unwritten*
//! extents. On ext4 the first write into such a block must convert the extent, and the
//! fdatasync after it commits that conversion to the journal. With `Always` durability that
//! journal commit, not the device cache flush, is most of an fdatasync's cost: fio on this
//! machine (64 KiB O_DIRECT writes, iodepth 16, fdatasync every 16 writes) ran at about
//! 1.2 GB/s into a freshly fallocated file and 1.9 GB/s overwriting the same file, as fast as
//! without fdatasync. So, as PostgreSQL does with its WAL files, a log keeps the files of the
//! segments retention drops and overwrites them as its next segments.
//!
//! **Names.** A spare is `<20-digit offset>.spare`, the offset being the *end* (next offset) of
//! the segment whose bytes it still holds: every batch in it has offsets below that. Recovery
//! never takes a spare for a segment (it lists only `.log` files).
//!
//! **Safety.** A recycled file holds old batches after the new segment's write position, with
//! valid CRCs. Nothing may ever serve or recover them:
//! - reads stop at the segment's logical end, kept in memory, never at the file's length;
//! - recovery accepts a batch only if its base offset is exactly the previous batch's next
//!   offset (the first one: the segment's base offset). A spare is reused only for a segment
//!   whose base offset is at least the spare's end, so every stale batch has a base offset
//!   below the one recovery expects and stops the walk (counted as `recycled_tail_bytes`);
//! - a file is recycled only when nothing else can read it: no other handle to the segment or
//!   its file on this core, and no descriptor handed to another core (a fetch response being
//!   sent): those would see the new bytes. Otherwise it is deleted, as before;
//! - renaming a spare into place fsyncs the directory before the segment takes appends, since
//!   fdatasyncs of overwritten blocks need no journal commit and so would not carry the rename.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::error::LogError;
use crate::segment::Segment;
use crate::storage::{Storage, StrategyKind};

/// Most spare files a log keeps. Retention usually drops one segment per roll, so two cover
/// a burst without holding much disk: a spare is as big as a segment.
pub const SPARE_SEGMENTS_MAX: usize = 2;

/// The suffix of spare files.
pub const SPARE_SUFFIX: &str = ".spare";

/// How much recycling a log has done since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecycleStats {
    /// Segment files kept as spares by retention.
    pub kept: u64,
    /// Segments started in a spare file rather than a new one.
    pub reused: u64,
    /// Spares waiting now.
    pub spares: usize,
}

/// One spare file.
#[derive(Clone, Debug)]
struct Spare {
    path: PathBuf,
    /// Every batch in the file has a base offset below this.
    stale_end: i64,
}

/// A log's spare files, oldest first, at most [`SPARE_SEGMENTS_MAX`].
#[derive(Debug, Default)]
pub(super) struct SparePool {
    spares: VecDeque<Spare>,
    kept: u64,
    reused: u64,
}

/// The path of a spare holding batches below `stale_end`.
pub fn spare_path(dir: &Path, stale_end: i64) -> PathBuf {
    dir.join(format!("{stale_end:020}{SPARE_SUFFIX}"))
}

/// The stale end named by a spare's file name, if it is one of ours.
pub fn parse_spare_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(SPARE_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Whether this log recycles: the setting is on and the strategy writes with O_DIRECT (or
/// simulates it). Buffered writes gain nothing: the page cache hides the block state.
pub(super) fn recycles(storage: &Storage, recycle_segments: bool) -> bool {
    recycle_segments
        && matches!(
            storage.kind(),
            StrategyKind::Direct | StrategyKind::Uring | StrategyKind::Sim
        )
}

/// Whether a dropped segment's file is worth keeping for a log of `segment_bytes` segments:
/// neither bigger than a new segment (it would waste disk), nor less than half of one (most
/// of it would be fresh preallocation anyway).
fn fits(len: u64, segment_bytes: u64) -> bool {
    len <= segment_bytes && len >= segment_bytes / 2
}

impl SparePool {
    /// Takes over the spare files a previous run left in `dir` (`names` is the directory's
    /// listing): keeps those a new segment could use, at most [`SPARE_SEGMENTS_MAX`], and
    /// deletes the rest. Returns the pool and how many files were deleted.
    ///
    /// A spare is kept only if its stale end is at most `log_end_offset`: the next segment
    /// starts at or after the log end, so its batches' offsets are above every stale one.
    pub(super) async fn load(
        storage: &Storage,
        dir: &Path,
        names: &[String],
        log_end_offset: i64,
        segment_bytes: u64,
        enabled: bool,
    ) -> Result<(SparePool, usize), LogError> {
        let mut pool = SparePool::default();
        let mut deleted = 0;
        for name in names.iter().filter(|name| name.ends_with(SPARE_SUFFIX)) {
            let path = dir.join(name);
            let usable = match parse_spare_name(name) {
                Some(stale_end) if enabled && pool.spares.len() < SPARE_SEGMENTS_MAX => {
                    let len = storage.file_len(&path).await?.unwrap_or(0);
                    (stale_end <= log_end_offset && fits(len, segment_bytes)).then_some(stale_end)
                }
                _ => None,
            };
            match usable {
                Some(stale_end) => pool.spares.push_back(Spare { path, stale_end }),
                None => {
                    storage.remove(&path)?;
                    deleted += 1;
                }
            }
        }
        Ok((pool, deleted))
    }

    pub(super) fn stats(&self) -> RecycleStats {
        RecycleStats {
            kept: self.kept,
            reused: self.reused,
            spares: self.spares.len(),
        }
    }

    /// Disposes of a segment retention dropped: keeps its log file as a spare if it can be
    /// recycled (see the module documentation), deletes it otherwise. Index files are always
    /// deleted (they are small, and rewritten whole anyway). The segment must no longer be in
    /// the log's list; `segment` should be the last reference to it.
    pub(super) fn retire(
        &mut self,
        storage: &Storage,
        segment: Rc<Segment>,
        segment_bytes: u64,
        enabled: bool,
    ) -> Result<(), LogError> {
        let stale_end = segment.next_offset();
        let keep = enabled
            && self.spares.len() < SPARE_SEGMENTS_MAX
            && Rc::strong_count(&segment) == 1
            && !segment.file_is_shared()
            && fits(segment.len(), segment_bytes)
            && !self.spares.iter().any(|spare| spare.stale_end == stale_end);
        if !keep {
            return segment.delete_files(storage);
        }
        let paths = segment.paths().clone();
        let path = spare_path(
            paths.log.parent().unwrap_or_else(|| Path::new(".")),
            stale_end,
        );
        // Closes the file; nothing else had it open (checked above).
        drop(segment);
        storage.rename(&paths.log, &path)?;
        storage.remove(&paths.index)?;
        storage.remove(&paths.time_index)?;
        self.spares.push_back(Spare { path, stale_end });
        self.kept += 1;
        Ok(())
    }

    /// A spare a segment starting at `base_offset` may overwrite, removed from the pool: the
    /// oldest whose stale batches all lie below `base_offset`.
    pub(super) fn take(&mut self, base_offset: i64) -> Option<PathBuf> {
        let index = self
            .spares
            .iter()
            .position(|spare| spare.stale_end <= base_offset)?;
        let spare = self.spares.remove(index)?;
        self.reused += 1;
        Some(spare.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_names_round_trip_and_reject_strangers() {
        let path = spare_path(Path::new("/d"), 52_311);
        assert_eq!(
            path,
            Path::new("/d/00000000000000052311.spare").to_path_buf()
        );
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_spare_name(name), Some(52_311));
        for stranger in [
            "00000000000000052311.log",
            "52311.spare",
            "0000000000000005231x.spare",
            "00000000000000052311.spare.tmp",
        ] {
            assert_eq!(parse_spare_name(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn only_files_near_a_segment_size_fit() {
        assert!(fits(1000, 1000));
        assert!(fits(500, 1000));
        assert!(!fits(499, 1000));
        assert!(!fits(1001, 1000));
    }
}
