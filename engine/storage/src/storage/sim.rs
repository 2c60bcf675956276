//! `sim`: an in-memory disk for tests, which keeps durable and volatile bytes apart.
//!
//! Assumptions about the media it models (see `docs/storage.md`):
//! - A write that completed is visible to reads at once but survives a crash only after a
//!   `sync` of its file.
//! - At a crash each unsynced write is independently lost, kept, or torn (a prefix of whole
//!   512-byte sectors kept), chosen by a seeded generator, so a seed replays the same crash.
//! - A file created by opening a new name is visible at once, but its name survives a crash
//!   only after a sync of its directory ([`SimDisk::sync_dir`]): at a crash, a file created
//!   since its directory was last synced is gone, whatever of its bytes were synced. This is
//!   what a real file system does to a new file's name without a directory fsync.
//! - A small file written with [`SimDisk::write_file_atomic`] goes through the steps the real
//!   strategies take: a temporary file is written (a new, volatile name, unsynced bytes),
//!   synced, renamed over the target, and the directory is synced. Until that directory sync
//!   the rename is volatile: a crash keeps a prefix, in order, of the volatile renames and
//!   undoes the rest (a file system that logs its metadata in order), so the target comes
//!   back with its old bytes, or not at all if it was new. A failed or stalled sync of either
//!   the file or the directory reaches the writer. [`SimDisk::rename_durably`] (a spare's
//!   rename) is such a rename followed by the directory sync.
//! - The other directory operations (remove, rename, whole-file replace) and `set_len` are
//!   durable when they return (the real strategies fsync for those). A durable rename or
//!   replace syncs its directory, so it also makes the earlier names and renames there durable.
//!
//! - With a capacity set, the disk holds at most that many bytes of file length in all: a
//!   preallocation that would pass it fails with ENOSPC and changes nothing; a write that
//!   would extend a file past it keeps the whole sectors that fit and then fails with ENOSPC,
//!   as a short write on a real disk does. Writes inside a file's length need no space
//!   (that is what preallocation buys).
//!
//! Faults on demand: failed writes, failed syncs, a crash, and corruption of stored bytes;
//! and, by operation (`fail_with`), preallocations, writes and syncs failing with ENOSPC or
//! EIO as a real device reports them. A failing write keeps the first half of its sectors
//! (bytes partly on disk), so what follows a failed write is tested too. Syncs of a file or of
//! a directory can also be *stalled* ([`SimDisk::stall_syncs`]): they wait until released, so
//! a test can hold a background sync and show what does not wait for it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::FileIo;
use crate::error::StorageError;

/// Sector size for torn writes: a crash keeps whole sectors of an interrupted write.
const SECTOR_BYTES: usize = 512;

/// A tiny deterministic generator (SplitMix64), so a seed replays a crash exactly.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// An operation of a simulated file that [`SimDisk::fail_with`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimOp {
    Preallocate,
    Write,
    Sync,
    /// The fsync of a directory ([`SimDisk::sync_dir`]).
    SyncDir,
}

/// How a failing operation fails, as a real device would report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimFault {
    /// ENOSPC: the device is full.
    NoSpace,
    /// EIO: the device failed the operation.
    Io,
}

impl SimFault {
    fn errno(self) -> i32 {
        match self {
            SimFault::NoSpace => libc::ENOSPC,
            SimFault::Io => libc::EIO,
        }
    }
}

/// A rename made by [`SimDisk::write_file_atomic`] whose directory has not been synced since:
/// a crash may undo it.
struct VolatileRename {
    from: PathBuf,
    to: PathBuf,
    /// The file `to` named before, put back if the rename is undone.
    replaced: Option<SimFile>,
}

#[derive(Default)]
struct SimFile {
    /// Identity, as an inode: a handle keeps writing to the file it opened even after that
    /// file is removed and another is created under the same name.
    inode: u64,
    /// What reads see: durable bytes plus every completed write.
    current: Vec<u8>,
    /// What a crash leaves, before torn writes are added.
    durable: Vec<u8>,
    /// Completed writes since the last sync, in order.
    unsynced: Vec<(u64, Vec<u8>)>,
}

fn write_into(target: &mut Vec<u8>, position: u64, bytes: &[u8]) {
    let start = position as usize;
    if target.len() < start + bytes.len() {
        target.resize(start + bytes.len(), 0);
    }
    target[start..start + bytes.len()].copy_from_slice(bytes);
}

struct DiskState {
    files: BTreeMap<PathBuf, SimFile>,
    random: SplitMix64,
    alignment: u64,
    fail_writes: bool,
    fail_syncs: bool,
    /// Faults set with `fail_with`, by operation.
    fail_preallocate_with: Option<SimFault>,
    fail_write_with: Option<SimFault>,
    fail_sync_with: Option<SimFault>,
    fail_sync_dir_with: Option<SimFault>,
    /// Files created since their directory was last synced: a crash removes them.
    volatile_names: BTreeSet<PathBuf>,
    /// Renames of small files since their directory was last synced, oldest first: a crash
    /// keeps a prefix of them and undoes the rest.
    volatile_renames: Vec<VolatileRename>,
    /// Paths (files or directories) whose syncs wait until released, and the syncs waiting.
    stalled: BTreeMap<PathBuf, Vec<Waker>>,
    /// Directory syncs done so far, for tests that count them.
    dir_syncs: u64,
    /// Most bytes of file length the disk holds in all; `None` for no limit.
    capacity_bytes: Option<u64>,
    crashes: u64,
    next_inode: u64,
}

impl DiskState {
    /// Bytes of file length on the disk (every file's current length).
    fn used_bytes(&self) -> u64 {
        self.files
            .values()
            .map(|file| file.current.len() as u64)
            .sum()
    }

    /// Bytes a file may still grow by.
    fn free_bytes(&self) -> u64 {
        self.capacity_bytes.map_or(u64::MAX, |capacity| {
            capacity.saturating_sub(self.used_bytes())
        })
    }

    /// Creates (or replaces) a file holding `contents`, durably, with a new inode.
    fn create(&mut self, path: &Path, contents: Vec<u8>) -> u64 {
        let inode = self.next_inode;
        self.next_inode += 1;
        let file = SimFile {
            inode,
            durable: contents.clone(),
            current: contents,
            unsynced: Vec::new(),
        };
        self.files.insert(path.to_path_buf(), file);
        inode
    }

    /// Renames `from` over `to`, volatile until `to`'s directory is synced.
    fn rename_volatile(&mut self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let Some(file) = self.files.remove(from) else {
            return Err(StorageError::io(
                "rename",
                from,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        };
        let replaced = self.files.insert(to.to_path_buf(), file);
        self.volatile_renames.push(VolatileRename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            replaced,
        });
        Ok(())
    }

    /// What an fsync of `dir` makes durable: the names created and the renames made in it.
    fn sync_names_in(&mut self, dir: &Path) {
        self.volatile_names
            .retain(|path| path.parent() != Some(dir));
        self.volatile_renames
            .retain(|rename| rename.to.parent() != Some(dir));
    }
}

/// A simulated disk shared by every [`SimIo`] it opened. Cheap to clone; single core only.
#[derive(Clone)]
pub struct SimDisk {
    state: Rc<RefCell<DiskState>>,
}

impl SimDisk {
    /// A disk with O_DIRECT-like 4 KiB alignment, so the appender's partial-page path runs.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk::with_alignment(seed, 4096)
    }

    /// A disk whose writes must be multiples of `alignment` bytes (1 = none).
    pub fn with_alignment(seed: u64, alignment: u64) -> SimDisk {
        SimDisk {
            state: Rc::new(RefCell::new(DiskState {
                files: BTreeMap::new(),
                random: SplitMix64(seed),
                alignment,
                fail_writes: false,
                fail_syncs: false,
                fail_preallocate_with: None,
                fail_write_with: None,
                fail_sync_with: None,
                fail_sync_dir_with: None,
                volatile_names: BTreeSet::new(),
                volatile_renames: Vec::new(),
                stalled: BTreeMap::new(),
                dir_syncs: 0,
                capacity_bytes: None,
                crashes: 0,
                next_inode: 1,
            })),
        }
    }

    /// Opens (creating if absent) a file on this disk. A created file's name is volatile
    /// until its directory is synced.
    pub fn open(&self, path: &Path) -> Rc<SimIo> {
        let mut state = self.state.borrow_mut();
        let inode = match state.files.get(path) {
            Some(file) => file.inode,
            None => {
                state.volatile_names.insert(path.to_path_buf());
                state.create(path, Vec::new())
            }
        };
        Rc::new(SimIo {
            disk: self.clone(),
            path: path.to_path_buf(),
            inode,
            opened_at_crash: state.crashes,
        })
    }

    /// Every write from now on fails (or, with `false`, succeeds again).
    pub fn fail_writes(&self, fail: bool) {
        self.state.borrow_mut().fail_writes = fail;
    }

    /// Every sync from now on fails (or, with `false`, succeeds again).
    pub fn fail_syncs(&self, fail: bool) {
        self.state.borrow_mut().fail_syncs = fail;
    }

    /// Every `op` from now on fails with `fault` (or, with `None`, succeeds again).
    pub fn fail_with(&self, op: SimOp, fault: Option<SimFault>) {
        let mut state = self.state.borrow_mut();
        match op {
            SimOp::Preallocate => state.fail_preallocate_with = fault,
            SimOp::Write => state.fail_write_with = fault,
            SimOp::Sync => state.fail_sync_with = fault,
            SimOp::SyncDir => state.fail_sync_dir_with = fault,
        }
    }

    /// While `stall` holds, every sync of `path` (a file's fdatasync, or a directory's fsync
    /// when `path` is a directory) waits; with `false`, the waiting syncs go on. Stalled
    /// syncs do nothing until released, so a test can hold one and watch what waits for it.
    pub fn stall_syncs(&self, path: &Path, stall: bool) {
        let waiting = {
            let mut state = self.state.borrow_mut();
            if stall {
                state.stalled.entry(path.to_path_buf()).or_default();
                return;
            }
            state.stalled.remove(path).unwrap_or_default()
        };
        for waker in waiting {
            waker.wake();
        }
    }

    /// Waits while syncs of `path` are stalled.
    async fn wait_unless_stalled(&self, path: &Path) {
        std::future::poll_fn(|context| {
            let mut state = self.state.borrow_mut();
            match state.stalled.get_mut(path) {
                Some(waiting) => {
                    if !waiting.iter().any(|waker| waker.will_wake(context.waker())) {
                        waiting.push(context.waker().clone());
                    }
                    Poll::Pending
                }
                None => Poll::Ready(()),
            }
        })
        .await
    }

    /// fsync of a directory: the names of the files created in it so far become durable.
    /// Fails as `fail_with(SimOp::SyncDir, ..)` says; waits while stalled.
    pub async fn sync_dir(&self, dir: &Path) -> Result<(), StorageError> {
        // Let other tasks run first, as a real fsync would.
        let crashes_before = self.state.borrow().crashes;
        futures_lite::future::yield_now().await;
        self.wait_unless_stalled(dir).await;
        let mut state = self.state.borrow_mut();
        if state.crashes != crashes_before {
            // Power was lost while it ran: it never returns success.
            return Err(StorageError::Injected {
                fault: "directory sync during a crash",
                path: dir.to_path_buf(),
            });
        }
        if let Some(fault) = state.fail_sync_dir_with {
            return Err(fault_error("fsync", dir, fault));
        }
        state.sync_names_in(dir);
        state.dir_syncs += 1;
        Ok(())
    }

    /// How many directory syncs have succeeded on this disk.
    pub fn dir_syncs(&self) -> u64 {
        self.state.borrow().dir_syncs
    }

    /// Whether a crash now could lose the name of the file at `path` (created, or renamed
    /// there by [`write_file_atomic`](Self::write_file_atomic) or
    /// [`rename_durably`](Self::rename_durably), and its directory not synced since).
    pub fn name_is_volatile(&self, path: &Path) -> bool {
        let state = self.state.borrow();
        state.volatile_names.contains(path)
            || state
                .volatile_renames
                .iter()
                .any(|rename| rename.to == path)
    }

    /// Limits the bytes of file length the disk holds in all (`None`: no limit). Files
    /// already bigger are left as they are; they only keep others from growing.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.state.borrow_mut().capacity_bytes = capacity_bytes;
    }

    /// Bytes of file length on the disk, over every file.
    pub fn used_bytes(&self) -> u64 {
        self.state.borrow().used_bytes()
    }

    /// Power loss: every file keeps its durable bytes plus, for each unsynced write, nothing,
    /// all of it, or a torn prefix of whole sectors, as the seeded generator decides. Files
    /// whose names were never made durable are gone. Handles opened before the crash fail
    /// from now on; stalled syncs stay stalled until released.
    pub fn crash(&self) {
        let mut state = self.state.borrow_mut();
        let renames = std::mem::take(&mut state.volatile_renames);
        if !renames.is_empty() {
            // The generator is drawn only here, so seeds without small-file renames replay
            // the crashes they did before.
            let kept = state.random.below(renames.len() as u64 + 1) as usize;
            for rename in renames.into_iter().skip(kept).rev() {
                if let Some(file) = state.files.remove(&rename.to) {
                    state.files.insert(rename.from, file);
                }
                if let Some(old) = rename.replaced {
                    state.files.insert(rename.to, old);
                }
            }
        }
        for path in std::mem::take(&mut state.volatile_names) {
            state.files.remove(&path);
        }
        let DiskState { files, random, .. } = &mut *state;
        for file in files.values_mut() {
            let mut survivor = std::mem::take(&mut file.durable);
            for (position, bytes) in file.unsynced.drain(..) {
                match random.below(3) {
                    0 => {}
                    1 => write_into(&mut survivor, position, &bytes),
                    _ => {
                        let sectors = bytes.len().div_ceil(SECTOR_BYTES) as u64;
                        let kept = (random.below(sectors) as usize * SECTOR_BYTES).min(bytes.len());
                        write_into(&mut survivor, position, &bytes[..kept]);
                    }
                }
            }
            file.current = survivor.clone();
            file.durable = survivor;
        }
        state.fail_writes = false;
        state.fail_syncs = false;
        state.crashes += 1;
    }

    /// Flips the bits of `mask` in the byte at `position`, durably (media corruption).
    pub fn corrupt(&self, path: &Path, position: u64, mask: u8) {
        let mut state = self.state.borrow_mut();
        if let Some(file) = state.files.get_mut(path) {
            for bytes in [&mut file.current, &mut file.durable] {
                if let Some(byte) = bytes.get_mut(position as usize) {
                    *byte ^= mask;
                }
            }
        }
    }

    /// Cuts a file to `len` bytes, durably (a file cut short behind the engine's back).
    pub fn cut(&self, path: &Path, len: u64) {
        let mut state = self.state.borrow_mut();
        if let Some(file) = state.files.get_mut(path) {
            file.current.truncate(len as usize);
            file.durable.truncate(len as usize);
            file.unsynced.clear();
        }
    }

    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let state = self.state.borrow();
        state.files.get(path).map(|file| file.current.len() as u64)
    }

    /// Names of the files directly inside `dir`.
    pub fn list(&self, dir: &Path) -> Vec<String> {
        let state = self.state.borrow();
        state
            .files
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_string))
            .collect()
    }

    pub fn remove(&self, path: &Path) {
        let mut state = self.state.borrow_mut();
        state.files.remove(path);
        state.volatile_names.remove(path);
        // The file is durably gone: a crash must not bring it back by undoing its rename.
        state.volatile_renames.retain(|rename| rename.to != path);
    }

    /// Renames a file durably, replacing any file at `to`, as `Storage::rename` does on a
    /// real disk. The file keeps its inode, so its bytes (durable and not) move with it.
    /// Handles opened under the old name stop reaching it, which is stricter than a real
    /// descriptor (that keeps following the inode): the engine renames only files nothing
    /// has open.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let mut state = self.state.borrow_mut();
        let Some(file) = state.files.remove(from) else {
            return Err(StorageError::io(
                "rename",
                from,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        };
        state.volatile_renames.retain(|rename| rename.to != to);
        state.files.insert(to.to_path_buf(), file);
        // The real rename fsyncs the directory, which makes every name in it durable.
        if let Some(dir) = to.parent() {
            state.sync_names_in(dir);
        }
        Ok(())
    }

    /// Replaces a whole file durably, as `Storage::write_file_atomic` does on a real disk.
    pub fn write_whole(&self, path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
        let mut state = self.state.borrow_mut();
        if state.fail_writes {
            return Err(StorageError::Injected {
                fault: "write failure",
                path: path.to_path_buf(),
            });
        }
        if let Some(fault) = state.fail_write_with {
            return Err(fault_error("write", path, fault));
        }
        let old_len = state
            .files
            .get(path)
            .map_or(0, |file| file.current.len() as u64);
        if bytes.len() as u64 > state.free_bytes().saturating_add(old_len) {
            return Err(fault_error("write", path, SimFault::NoSpace));
        }
        state.volatile_renames.retain(|rename| rename.to != path);
        state.create(path, bytes.to_vec());
        // The real replacement fsyncs the directory, which makes every name in it durable.
        if let Some(dir) = path.parent() {
            state.sync_names_in(dir);
        }
        Ok(())
    }

    /// Replaces a small file the way the real strategies do (see
    /// `Storage::write_file_atomic_off_thread`), one step at a time, letting other tasks run
    /// between the steps:
    /// 1. write `bytes` to a new temporary file beside `path` (its name and bytes volatile);
    ///    fails as `fail_writes` or `fail_with(SimOp::Write, ..)` say, or with ENOSPC when
    ///    the disk has no room for the copy beside the old file;
    /// 2. sync it: waits while syncs of `path` are stalled, fails as `fail_syncs` or
    ///    `fail_with(SimOp::Sync, ..)` say (the temporary file is removed, `path` untouched);
    /// 3. rename it over `path`: visible at once, volatile until the directory is synced;
    /// 4. sync the directory ([`sync_dir`](Self::sync_dir)): stalls and faults as there.
    ///
    /// `Ok` means `path` holds `bytes` durably. After an `Err`, `path` holds its old bytes or
    /// the new ones, and a crash may bring the old ones back. An operation a crash interrupted
    /// never returns `Ok`.
    pub async fn write_file_atomic(&self, path: &Path, bytes: Vec<u8>) -> Result<(), StorageError> {
        let temporary = super::small_file::temporary_path(path);
        let crashes_before = self.state.borrow().crashes;
        let interrupted = |state: &DiskState| {
            (state.crashes != crashes_before).then(|| StorageError::Injected {
                fault: "small-file write during a crash",
                path: path.to_path_buf(),
            })
        };
        futures_lite::future::yield_now().await;
        {
            let mut state = self.state.borrow_mut();
            if state.fail_writes {
                return Err(StorageError::Injected {
                    fault: "write failure",
                    path: temporary,
                });
            }
            if let Some(fault) = state.fail_write_with {
                return Err(fault_error("write", &temporary, fault));
            }
            let leftover_len = state
                .files
                .get(&temporary)
                .map_or(0, |file| file.current.len() as u64);
            if bytes.len() as u64 > state.free_bytes().saturating_add(leftover_len) {
                return Err(fault_error("write", &temporary, SimFault::NoSpace));
            }
            state.create(&temporary, Vec::new());
            state.volatile_names.insert(temporary.clone());
            let file = state.files.get_mut(&temporary).expect("just created");
            file.current = bytes.clone();
            file.unsynced.push((0, bytes));
        }
        futures_lite::future::yield_now().await;
        self.wait_unless_stalled(path).await;
        {
            let mut state = self.state.borrow_mut();
            if let Some(error) = interrupted(&state) {
                return Err(error);
            }
            let failure = if state.fail_syncs {
                Some(StorageError::Injected {
                    fault: "sync failure",
                    path: temporary.clone(),
                })
            } else {
                state
                    .fail_sync_with
                    .map(|fault| fault_error("fdatasync", &temporary, fault))
            };
            if let Some(error) = failure {
                // As the real strategies do: `path` is untouched, the copy is given back.
                state.files.remove(&temporary);
                state.volatile_names.remove(&temporary);
                return Err(error);
            }
            if let Some(file) = state.files.get_mut(&temporary) {
                file.durable = file.current.clone();
                file.unsynced.clear();
            }
            state.rename_volatile(&temporary, path)?;
        }
        if let Some(dir) = path.parent() {
            self.sync_dir(dir).await?;
        }
        match interrupted(&self.state.borrow()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Renames a file the way `Storage::rename_off_thread` does on a real disk: the rename
    /// is visible at once and volatile until the directory sync that follows
    /// ([`sync_dir`](Self::sync_dir): stalls and faults as there). `Ok` means a crash finds
    /// the file under its new name; after an `Err` a crash may find it under either name.
    /// The file keeps its inode and its bytes, durable and not.
    pub async fn rename_durably(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let crashes_before = self.state.borrow().crashes;
        futures_lite::future::yield_now().await;
        self.state.borrow_mut().rename_volatile(from, to)?;
        if let Some(dir) = to.parent() {
            self.sync_dir(dir).await?;
        }
        if self.state.borrow().crashes != crashes_before {
            return Err(StorageError::Injected {
                fault: "rename during a crash",
                path: to.to_path_buf(),
            });
        }
        Ok(())
    }

    /// A whole file's current bytes, at most `max_bytes` of them.
    pub fn read_whole(&self, path: &Path, max_bytes: u64) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        let file = state.files.get(path)?;
        let len = file.current.len().min(max_bytes as usize);
        Some(file.current[..len].to_vec())
    }
}

/// The error a real strategy would return for `fault` during `op`.
fn fault_error(op: &'static str, path: &Path, fault: SimFault) -> StorageError {
    StorageError::io(op, path, std::io::Error::from_raw_os_error(fault.errno()))
}

/// One file on a [`SimDisk`].
pub struct SimIo {
    disk: SimDisk,
    path: PathBuf,
    inode: u64,
    /// A handle from before a crash is dead: its process died with the power.
    opened_at_crash: u64,
}

impl SimIo {
    fn check(&self, fault: &'static str, injected: bool) -> Result<(), StorageError> {
        let stale = self.disk.state.borrow().crashes != self.opened_at_crash;
        if injected || stale {
            return Err(StorageError::Injected {
                fault,
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Runs `action` on this handle's file; once that file is removed (unlinked), on a
    /// detached copy that nothing else can see, as the kernel keeps an unlinked inode.
    fn with_file<T>(&self, action: impl FnOnce(&mut SimFile) -> T) -> T {
        let mut state = self.disk.state.borrow_mut();
        match state.files.get_mut(&self.path) {
            Some(file) if file.inode == self.inode => action(file),
            _ => action(&mut SimFile::default()),
        }
    }
}

impl FileIo for SimIo {
    type Buffer = Vec<u8>;

    fn alignment(&self) -> u64 {
        self.disk.state.borrow().alignment
    }

    fn alloc_buffer(&self, bytes: usize) -> Vec<u8> {
        vec![0; bytes]
    }

    fn write_at(
        self: &Rc<Self>,
        buffer: Vec<u8>,
        position: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + 'static {
        let io = Rc::clone(self);
        async move {
            // Let other tasks run first, as a real device would, so interleavings get tested.
            futures_lite::future::yield_now().await;
            let alignment = io.alignment();
            assert!(
                position.is_multiple_of(alignment)
                    && (buffer.len() as u64).is_multiple_of(alignment),
                "unaligned write of {} bytes at {position} on {}",
                buffer.len(),
                io.path.display()
            );
            let fail = io.disk.state.borrow().fail_writes;
            io.check("write failure", fail)?;
            let (fault, free_bytes) = {
                let state = io.disk.state.borrow();
                (state.fail_write_with, state.free_bytes())
            };
            let file_len = io.with_file(|file| file.current.len() as u64);
            let room_end = file_len.saturating_add(free_bytes);
            let end = position + buffer.len() as u64;
            // How much of the write lands, in whole sectors, and why the rest does not.
            let (kept_bytes, failure) = match fault {
                Some(fault) => (buffer.len() / 2, Some(fault)),
                None if end > room_end => (
                    room_end.saturating_sub(position) as usize,
                    Some(SimFault::NoSpace),
                ),
                None => (buffer.len(), None),
            };
            let kept_bytes = match failure {
                Some(_) => kept_bytes.min(buffer.len()) / SECTOR_BYTES * SECTOR_BYTES,
                None => kept_bytes,
            };
            if kept_bytes > 0 {
                let mut kept = buffer;
                kept.truncate(kept_bytes);
                io.with_file(|file| {
                    write_into(&mut file.current, position, &kept);
                    file.unsynced.push((position, kept));
                });
            }
            match failure {
                Some(fault) => Err(fault_error("write", &io.path, fault)),
                None => Ok(()),
            }
        }
    }

    fn sync(self: &Rc<Self>) -> impl Future<Output = Result<(), StorageError>> + 'static {
        let io = Rc::clone(self);
        async move {
            futures_lite::future::yield_now().await;
            io.disk.wait_unless_stalled(&io.path).await;
            let fail = io.disk.state.borrow().fail_syncs;
            io.check("sync failure", fail)?;
            if let Some(fault) = io.disk.state.borrow().fail_sync_with {
                // The unsynced writes stay visible and not durable: a crash may lose them.
                return Err(fault_error("fdatasync", &io.path, fault));
            }
            io.with_file(|file| {
                file.durable = file.current.clone();
                file.unsynced.clear();
            });
            Ok(())
        }
    }

    async fn read_into(&self, position: u64, out: &mut [u8]) -> Result<usize, StorageError> {
        self.check("read after crash", false)?;
        Ok(self.with_file(|file| {
            let start = (position as usize).min(file.current.len());
            let end = (start + out.len()).min(file.current.len());
            out[..end - start].copy_from_slice(&file.current[start..end]);
            end - start
        }))
    }

    async fn set_len(&self, len: u64) -> Result<(), StorageError> {
        self.check("set_len after crash", false)?;
        self.with_file(|file| {
            let len = len as usize;
            file.current.resize(len, 0);
            file.durable.resize(len, 0);
            for (position, bytes) in &mut file.unsynced {
                let keep = len.saturating_sub(*position as usize).min(bytes.len());
                bytes.truncate(keep);
            }
        });
        Ok(())
    }

    async fn preallocate(&self, len: u64) -> Result<(), StorageError> {
        self.check("preallocate after crash", false)?;
        let (fault, free_bytes) = {
            let state = self.disk.state.borrow();
            (state.fail_preallocate_with, state.free_bytes())
        };
        if let Some(fault) = fault {
            return Err(fault_error("fallocate", &self.path, fault));
        }
        let file_len = self.with_file(|file| file.current.len() as u64);
        if len.saturating_sub(file_len) > free_bytes {
            return Err(fault_error("fallocate", &self.path, SimFault::NoSpace));
        }
        // Like fallocate mode 0: the file grows to `len` with zeros, durably (metadata).
        self.with_file(|file| {
            let len = len as usize;
            if file.current.len() < len {
                file.current.resize(len, 0);
            }
            if file.durable.len() < len {
                file.durable.resize(len, 0);
            }
        });
        Ok(())
    }

    async fn file_len(&self) -> Result<u64, StorageError> {
        self.check("stat after crash", false)?;
        Ok(self.with_file(|file| file.current.len() as u64))
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}
