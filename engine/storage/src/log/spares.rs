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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use futures_util::future::{FutureExt, Shared};

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
pub(super) struct Spare {
    path: PathBuf,
    /// Every batch in the file has a base offset below this.
    stale_end: i64,
}

/// A log's spare files, oldest first, at most [`SPARE_SEGMENTS_MAX`] counting those still
/// being renamed into the pool.
#[derive(Debug, Default)]
pub(super) struct SparePool {
    spares: VecDeque<Spare>,
    /// The stale ends of retired files being renamed into spares: their places are taken.
    arriving: Vec<i64>,
    kept: u64,
    reused: u64,
}

/// What becomes of one segment retention dropped, decided under the append lock and carried
/// out after it is released.
pub(super) struct Retirement {
    segment: Rc<Segment>,
    /// The spare its log file becomes; `None` to delete it.
    keep_as: Option<Spare>,
}

impl Retirement {
    /// The stale end of the spare this retirement keeps, if it keeps one.
    pub(super) fn keeps(&self) -> Option<i64> {
        self.keep_as.as_ref().map(|spare| spare.stale_end)
    }

    /// Renames the segment's log file into a spare (durably: the directory is fsynced), or
    /// deletes it, and deletes its index files; all off the executor's thread. Returns the
    /// spare to add to the pool, or `None` when the file was deleted.
    ///
    /// A crash at any point leaves a state recovery handles: the file under its segment name
    /// (an old segment that ends where the log's first one starts, opened again as the
    /// log's first segment, its index files rebuilt if they are gone) or under its spare
    /// name. A rename that fails falls back to deleting the file under either name.
    pub(super) async fn carry_out(self, storage: &Storage) -> Result<Option<Spare>, LogError> {
        let Retirement { segment, keep_as } = self;
        let Some(spare) = keep_as else {
            segment.delete_files(storage).await?;
            return Ok(None);
        };
        let paths = segment.paths().clone();
        // Closes the file; nothing else had it open (checked when planned).
        drop(segment);
        let kept = match storage.rename_off_thread(&paths.log, &spare.path).await {
            Ok(()) => Some(spare),
            Err(error) => {
                tracing::warn!(file = %paths.log.display(), %error, "cannot keep a dropped segment's file as a spare; deleting it");
                storage.remove_off_thread(&paths.log).await?;
                storage.remove_off_thread(&spare.path).await?;
                None
            }
        };
        storage.remove_off_thread(&paths.index).await?;
        storage.remove_off_thread(&paths.time_index).await?;
        Ok(kept)
    }
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

/// Retirements being carried out in the background; resolves with the first error.
pub(super) type Retiring = Shared<Pin<Box<dyn std::future::Future<Output = Result<(), LogError>>>>>;

/// Carries out `retirements` in order, oldest segment first (so a crash part-way leaves the
/// log's files a contiguous chain), in a task of the core: a caller that stops waiting
/// neither stops the file work half-way nor leaves a place in the pool taken. Each kept
/// spare joins `pool` as soon as its rename is durable.
pub(super) fn retire_in_background(
    storage: &Storage,
    pool: &Rc<RefCell<SparePool>>,
    retirements: Vec<Retirement>,
) -> Retiring {
    let (storage, pool) = (storage.clone(), Rc::clone(pool));
    let work = glommio::spawn_local(async move {
        let mut first_error = None;
        for retirement in retirements {
            let stale_end = retirement.keeps();
            let spare = match retirement.carry_out(&storage).await {
                Ok(spare) => spare,
                Err(error) => {
                    first_error.get_or_insert(error);
                    None
                }
            };
            if let Some(stale_end) = stale_end {
                pool.borrow_mut().arrived(stale_end, spare);
            }
        }
        first_error.map_or(Ok(()), Err)
    })
    .detach();
    // `None`: the executor is shutting down and cancelled the task; nothing to report.
    async move { work.await.unwrap_or(Ok(())) }
        .boxed_local()
        .shared()
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
                    storage.remove_off_thread(&path).await?;
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

    /// Decides what becomes of a segment retention dropped: its log file is kept as a spare
    /// if it can be recycled (see the module documentation), deleted otherwise. A kept file
    /// takes a place in the pool now, so the bound holds while it is being renamed; it is
    /// offered to rolls only once [`Retirement::carry_out`] has renamed it and
    /// [`arrived`](Self::arrived) is told. The segment must no longer be in the log's list;
    /// `segment` should be the last reference to it.
    pub(super) fn plan_retirement(
        &mut self,
        segment: Rc<Segment>,
        segment_bytes: u64,
        enabled: bool,
    ) -> Retirement {
        let stale_end = segment.next_offset();
        let keep = enabled
            && self.spares.len() + self.arriving.len() < SPARE_SEGMENTS_MAX
            && Rc::strong_count(&segment) == 1
            && !segment.file_is_shared()
            && fits(segment.len(), segment_bytes)
            && !self.spares.iter().any(|spare| spare.stale_end == stale_end)
            && !self.arriving.contains(&stale_end);
        let keep_as = keep.then(|| {
            self.arriving.push(stale_end);
            let dir = segment
                .paths()
                .log
                .parent()
                .unwrap_or_else(|| Path::new("."));
            Spare {
                path: spare_path(dir, stale_end),
                stale_end,
            }
        });
        Retirement { segment, keep_as }
    }

    /// Takes back the place [`plan_retirement`](Self::plan_retirement) gave a spare, and adds
    /// the spare to the pool if its file was renamed (`Some`).
    pub(super) fn arrived(&mut self, stale_end: i64, spare: Option<Spare>) {
        self.arriving.retain(|&arriving| arriving != stale_end);
        if let Some(spare) = spare {
            self.spares.push_back(spare);
            self.kept += 1;
        }
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
