//! The storage seam: how a segment's bytes reach the device.
//!
//! Every strategy is a [`FileIo`] engine: it knows how to write an owned, possibly aligned
//! buffer at a position, make writes durable, read, and resize a file. Everything else (copying
//! appends into buffers, write-behind, group commit, the partial last page, poisoning after a
//! failed write) lives once, in [`Appender`], so every strategy runs the same logic and the
//! simulated engine tests the very code the real ones run.
//!
//! | strategy   | engine           | how bytes travel |
//! |------------|------------------|------------------|
//! | `direct`   | [`DirectIo`]     | glommio `DmaFile`: O_DIRECT through glommio's io_uring, 4 KiB-aligned buffers from the executor's registered pool |
//! | `buffered` | [`BufferedIo`]   | glommio `BufferedFile`: writes land in the page cache (Kafka's classic design) |
//! | `uring`    | [`UringIo`]      | the `io-uring` crate driven directly: registered buffers and file, write and fdatasync linked |
//! | `sim`      | [`SimIo`]        | memory, with durable and volatile bytes kept apart and faults injected on demand |
//!
//! Directory operations (create, list, remove, rename, small metadata files) are rare and go
//! through [`Storage`], which the simulated strategy also answers from memory.

mod appender;
mod buffered;
mod direct;
mod sim;
mod uring;

use std::future::Future;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use appender::{AppendConfig, Appender, CommitMode, PREALLOCATE_STEP_MIN_BYTES};
pub use buffered::BufferedIo;
pub use direct::DirectIo;
pub use sim::{SimDisk, SimFault, SimIo, SimOp};
pub use uring::{UringIo, KEPT_READ_BUFFERS_BYTES_MAX};

use crate::error::StorageError;

/// A buffer owned by one engine, moved into a write and dropped (or recycled) when it is done.
pub trait IoBuffer: 'static {
    fn as_bytes(&self) -> &[u8];
    fn as_bytes_mut(&mut self) -> &mut [u8];
    /// Shrinks the buffer so a write covers only its first `len` bytes.
    fn truncate_to(&mut self, len: usize);
}

/// One open file under one storage strategy.
///
/// Contract for implementors:
/// - `write_at` and `sync` start their I/O when first polled and may be polled concurrently
///   (the appender spawns them); writes to disjoint ranges may complete in any order.
/// - A write's `position` and buffer length are multiples of `alignment()`.
/// - `sync` makes every write that *completed* before it was called durable.
/// - The futures are `'static` so they can be spawned; they hold an `Rc` to the engine.
pub trait FileIo: Sized + 'static {
    type Buffer: IoBuffer;

    /// Whether `write_and_sync` really issues both in one submission (so `CommitMode::Auto`
    /// picks linked commits for this engine).
    const LINKS_WRITE_AND_SYNC: bool = false;

    /// The granularity every write position and length is a multiple of (1 = none).
    fn alignment(&self) -> u64;

    /// A buffer of `bytes` bytes (a multiple of `alignment()`) fit for `write_at`. Its
    /// contents are unspecified: the appender overwrites or zeroes every byte it writes.
    fn alloc_buffer(&self, bytes: usize) -> Self::Buffer;

    /// Writes the whole buffer at `position`; resolves when written, not when durable.
    fn write_at(
        self: &Rc<Self>,
        buffer: Self::Buffer,
        position: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + 'static;

    /// fdatasync: resolves when every completed write is durable.
    fn sync(self: &Rc<Self>) -> impl Future<Output = Result<(), StorageError>> + 'static;

    /// A write followed by a sync, issued together where the engine can link them.
    fn write_and_sync(
        self: &Rc<Self>,
        buffer: Self::Buffer,
        position: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + 'static {
        let write = self.write_at(buffer, position);
        let engine = Rc::clone(self);
        async move {
            write.await?;
            engine.sync().await
        }
    }

    /// Reads into `out` from `position`, as much as the file holds up to `out.len()` (short
    /// at end of file), and returns how many bytes it read.
    fn read_into(
        &self,
        position: u64,
        out: &mut [u8],
    ) -> impl Future<Output = Result<usize, StorageError>>;

    /// Reads up to `bytes` bytes at `position` from what has been written (short at end of file).
    fn read_at(
        &self,
        position: u64,
        bytes: usize,
    ) -> impl Future<Output = Result<Vec<u8>, StorageError>> {
        async move {
            let mut out = vec![0; bytes];
            let read = self.read_into(position, &mut out).await?;
            out.truncate(read);
            Ok(out)
        }
    }

    /// Sets the file's length (truncating or extending with zeros).
    fn set_len(&self, len: u64) -> impl Future<Output = Result<(), StorageError>>;

    /// Allocates space up to `len` bytes and sets the file's length to at least `len`
    /// (fallocate mode 0): unwritten space reads as zeros, and writes inside the length neither
    /// extend the file nor make each fdatasync journal a size change. On ext4 that doubles
    /// O_DIRECT write throughput with fdatasync (see docs/storage.md).
    fn preallocate(&self, len: u64) -> impl Future<Output = Result<(), StorageError>>;

    /// The file's current length as the file system reports it.
    fn file_len(&self) -> impl Future<Output = Result<u64, StorageError>>;

    /// A descriptor for zero-copy sends (`sendfile`), opened without O_DIRECT so any range
    /// can be sent; `None` where there is no kernel file.
    fn raw_fd(&self) -> Option<RawFd>;
}

/// The storage strategies, selectable by name at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    Direct,
    Buffered,
    Uring,
    Sim,
}

impl StrategyKind {
    pub const ALL_REAL: [StrategyKind; 3] = [
        StrategyKind::Direct,
        StrategyKind::Buffered,
        StrategyKind::Uring,
    ];

    /// Parses `direct`, `buffered`, `uring` or `sim`.
    pub fn from_name(name: &str) -> Result<Self, StorageError> {
        match name {
            "direct" => Ok(StrategyKind::Direct),
            "buffered" => Ok(StrategyKind::Buffered),
            "uring" => Ok(StrategyKind::Uring),
            "sim" => Ok(StrategyKind::Sim),
            other => Err(StorageError::UnknownStrategy {
                name: other.to_string(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Direct => "direct",
            StrategyKind::Buffered => "buffered",
            StrategyKind::Uring => "uring",
            StrategyKind::Sim => "sim",
        }
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A storage strategy bound to its context (the simulated disk, for `sim`).
///
/// Lives on one core: it is `!Send` because the simulated disk is shared through an `Rc`.
#[derive(Clone)]
pub enum Storage {
    Direct,
    Buffered,
    Uring,
    Sim(SimDisk),
}

/// Dispatches one expression over the four appender variants of [`SegmentFile`].
macro_rules! each_file {
    ($file:expr, $appender:ident => $body:expr) => {
        match $file {
            SegmentFile::Direct($appender) => $body,
            SegmentFile::Buffered($appender) => $body,
            SegmentFile::Uring($appender) => $body,
            SegmentFile::Sim($appender) => $body,
        }
    };
}

impl Storage {
    /// The strategy for a real directory; `Sim` gets a fresh simulated disk.
    pub fn new(kind: StrategyKind) -> Storage {
        match kind {
            StrategyKind::Direct => Storage::Direct,
            StrategyKind::Buffered => Storage::Buffered,
            StrategyKind::Uring => Storage::Uring,
            StrategyKind::Sim => Storage::Sim(SimDisk::new(0)),
        }
    }

    pub fn kind(&self) -> StrategyKind {
        match self {
            Storage::Direct => StrategyKind::Direct,
            Storage::Buffered => StrategyKind::Buffered,
            Storage::Uring => StrategyKind::Uring,
            Storage::Sim(_) => StrategyKind::Sim,
        }
    }

    /// Opens (creating if absent) a segment's log file for appending after `logical_len` bytes.
    ///
    /// The partial page at the end is re-read so the next aligned write rewrites it whole.
    pub async fn open_segment_file(
        &self,
        path: &Path,
        logical_len: u64,
        config: &AppendConfig,
    ) -> Result<SegmentFile, StorageError> {
        Ok(match self {
            Storage::Direct => SegmentFile::Direct(
                Appender::open(DirectIo::open(path).await?, path, logical_len, config).await?,
            ),
            Storage::Buffered => SegmentFile::Buffered(
                Appender::open(BufferedIo::open(path).await?, path, logical_len, config).await?,
            ),
            Storage::Uring => SegmentFile::Uring(
                Appender::open(UringIo::open(path, config)?, path, logical_len, config).await?,
            ),
            Storage::Sim(disk) => {
                SegmentFile::Sim(Appender::open(disk.open(path), path, logical_len, config).await?)
            }
        })
    }

    /// Opens a sealed segment's log file of `len` bytes for reading.
    pub async fn open_sealed_segment_file(
        &self,
        path: &Path,
        len: u64,
        config: &AppendConfig,
    ) -> Result<SegmentFile, StorageError> {
        Ok(match self {
            Storage::Direct => SegmentFile::Direct(Appender::open_sealed(
                DirectIo::open(path).await?,
                path,
                len,
                config,
            )),
            Storage::Buffered => SegmentFile::Buffered(Appender::open_sealed(
                BufferedIo::open(path).await?,
                path,
                len,
                config,
            )),
            Storage::Uring => SegmentFile::Uring(Appender::open_sealed(
                UringIo::open(path, config)?,
                path,
                len,
                config,
            )),
            Storage::Sim(disk) => {
                SegmentFile::Sim(Appender::open_sealed(disk.open(path), path, len, config))
            }
        })
    }

    /// The length of a file, or `None` if it does not exist.
    pub async fn file_len(&self, path: &Path) -> Result<Option<u64>, StorageError> {
        match self {
            Storage::Sim(disk) => Ok(disk.file_len(path)),
            _ => match std::fs::metadata(path) {
                Ok(metadata) => Ok(Some(metadata.len())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(StorageError::io("stat", path, error)),
            },
        }
    }

    /// Best effort: drops the page cache's clean pages of a file, so the next reads come
    /// from the device. After a failed writeback the kernel may mark pages clean that never
    /// reached the device; a reader would otherwise take them for stored bytes. Only the
    /// `buffered` strategy reads through the page cache; the others read with O_DIRECT (or
    /// from memory) and need nothing.
    pub fn drop_cached(&self, path: &Path) {
        if !matches!(self, Storage::Buffered) {
            return;
        }
        use std::os::fd::AsRawFd;
        let Ok(file) = std::fs::File::open(path) else {
            return;
        };
        // SAFETY: posix_fadvise on a descriptor we own; it only advises the page cache.
        let advised =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if advised != 0 {
            tracing::warn!(path = %path.display(), errno = advised, "cannot drop cached pages");
        }
    }

    /// Creates a directory and its parents.
    pub fn create_dir_all(&self, dir: &Path) -> Result<(), StorageError> {
        match self {
            Storage::Sim(_) => Ok(()),
            _ => {
                std::fs::create_dir_all(dir).map_err(|error| StorageError::io("mkdir", dir, error))
            }
        }
    }

    /// The names of the files directly inside `dir`, sorted.
    pub fn list(&self, dir: &Path) -> Result<Vec<String>, StorageError> {
        let mut names = match self {
            Storage::Sim(disk) => disk.list(dir),
            _ => {
                let entries = std::fs::read_dir(dir)
                    .map_err(|error| StorageError::io("readdir", dir, error))?;
                let mut names = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|error| StorageError::io("readdir", dir, error))?;
                    if let Some(name) = entry.file_name().to_str() {
                        names.push(name.to_string());
                    }
                }
                names
            }
        };
        names.sort();
        Ok(names)
    }

    /// Removes a file; a file that is already gone is not an error.
    pub fn remove(&self, path: &Path) -> Result<(), StorageError> {
        match self {
            Storage::Sim(disk) => {
                disk.remove(path);
                Ok(())
            }
            _ => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(StorageError::io("unlink", path, error)),
            },
        }
    }

    /// Renames a file, replacing any file at `to`, durably: the directory is fsynced, so a
    /// crash afterwards finds the file under its new name. (A file's fdatasync does not make
    /// its directory entry durable; see "Recycled segments" in docs/storage.md for why that
    /// matters when a recycled file becomes a segment.) Blocking on the real strategies;
    /// callers use it at roll and retention time only.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            return disk.rename(from, to);
        }
        std::fs::rename(from, to).map_err(|error| StorageError::io("rename", from, error))?;
        if let Some(dir) = to.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// [`rename`](Self::rename) without blocking the executor: the rename and the fsync of
    /// the directory run on the executor's blocking-thread pool. Returns once the new name
    /// is durable.
    pub async fn rename_off_thread(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            return disk.rename(from, to);
        }
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        glommio::executor()
            .spawn_blocking(move || {
                std::fs::rename(&from, &to)
                    .map_err(|error| StorageError::io("rename", &from, error))?;
                match to.parent() {
                    Some(dir) => sync_dir(dir),
                    None => Ok(()),
                }
            })
            .await
    }

    /// Makes the entries of `dir` durable (fsync of the directory): a new file's fdatasync
    /// does not make its name durable. Blocking on the real strategies; callers use it at
    /// roll time only. The simulated disk keeps names durable as they are made.
    pub fn sync_dir(&self, dir: &Path) -> Result<(), StorageError> {
        match self {
            Storage::Sim(_) => Ok(()),
            _ => sync_dir(dir),
        }
    }

    /// Replaces a small metadata file atomically and durably: write a temporary file, fsync it,
    /// rename it over the old one, fsync the directory.
    ///
    /// Blocking on the real strategies: for code that runs before the executors start, or at
    /// close. On an executor, use [`write_file_atomic_off_thread`](Self::write_file_atomic_off_thread).
    pub fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            return disk.write_whole(path, bytes);
        }
        write_file_atomic(path, bytes)
    }

    /// [`write_file_atomic`](Self::write_file_atomic) without blocking the executor: on the
    /// real strategies the system calls (two fsyncs among them) run on the executor's
    /// blocking-thread pool while its other tasks go on; the simulated disk does it in memory.
    /// Returns once the file is durable, as the blocking form does. Must run on a glommio
    /// executor.
    pub async fn write_file_atomic_off_thread(
        &self,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            return disk.write_whole(path, &bytes);
        }
        let path = path.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || write_file_atomic(&path, &bytes))
            .await
    }

    /// [`sync_dir`](Self::sync_dir) without blocking the executor (see
    /// [`write_file_atomic_off_thread`](Self::write_file_atomic_off_thread)). On the
    /// simulated disk it is what makes a new file's name survive a crash, and it can be
    /// failed or stalled there.
    pub async fn sync_dir_off_thread(&self, dir: &Path) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            return disk.sync_dir(dir).await;
        }
        let dir = dir.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || sync_dir(&dir))
            .await
    }

    /// Reads a whole small file, or `None` if it does not exist. `max_bytes` bounds the read.
    pub fn read_file(&self, path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, StorageError> {
        if let Storage::Sim(disk) = self {
            return Ok(disk.read_whole(path, max_bytes));
        }
        use std::io::Read;
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StorageError::io("open", path, error)),
        };
        let mut bytes = Vec::new();
        file.take(max_bytes)
            .read_to_end(&mut bytes)
            .map_err(|error| StorageError::io("read", path, error))?;
        Ok(Some(bytes))
    }
}

/// Write a temporary file beside `path`, fdatasync it, rename it over `path`, fsync the
/// directory: after a crash, `path` holds either its old bytes or all of `bytes`.
fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)
        .map_err(|error| StorageError::io("create", &temporary, error))?;
    let written = file
        .write_all(bytes)
        .map_err(|error| StorageError::io("write", &temporary, error))
        .and_then(|()| {
            file.sync_data()
                .map_err(|error| StorageError::io("fdatasync", &temporary, error))
        });
    if let Err(error) = written {
        // `path` is untouched; give back the space the partial copy took (a full disk).
        drop(file);
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    std::fs::rename(&temporary, path).map_err(|error| StorageError::io("rename", path, error))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsyncs a directory, making the creation, removal and renaming of its entries durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let dir_file =
        std::fs::File::open(dir).map_err(|error| StorageError::io("open", dir, error))?;
    dir_file
        .sync_all()
        .map_err(|error| StorageError::io("fsync", dir, error))
}

/// A segment's log file under whichever strategy opened it. Cheap to clone (an `Rc`).
///
/// Concurrency and durability are the [`Appender`]'s: see its doc comment.
#[derive(Clone)]
pub enum SegmentFile {
    Direct(Rc<Appender<DirectIo>>),
    Buffered(Rc<Appender<BufferedIo>>),
    Uring(Rc<Appender<UringIo>>),
    Sim(Rc<Appender<SimIo>>),
}

impl SegmentFile {
    /// See [`Appender::append`].
    pub fn append(&self, bytes: &[u8]) -> Result<u64, StorageError> {
        each_file!(self, appender => appender.append(bytes))
    }

    /// See [`Appender::reserve`].
    pub async fn reserve(&self, end: u64) -> Result<(), StorageError> {
        each_file!(self, appender => appender.reserve(end).await)
    }

    /// See [`Appender::reserved_len`].
    pub fn reserved_len(&self) -> u64 {
        each_file!(self, appender => appender.reserved_len())
    }

    /// See [`Appender::settle`].
    pub async fn settle(&self) {
        each_file!(self, appender => appender.settle().await)
    }

    /// See [`Appender::is_failed`].
    pub fn is_failed(&self) -> bool {
        each_file!(self, appender => appender.is_failed())
    }

    /// See [`Appender::is_sealed`].
    pub fn is_sealed(&self) -> bool {
        each_file!(self, appender => appender.is_sealed())
    }

    /// See [`Appender::wait_for_room`].
    pub async fn wait_for_room(&self) -> Result<(), StorageError> {
        each_file!(self, appender => appender.wait_for_room().await)
    }

    /// See [`Appender::flush`].
    pub async fn flush(&self) -> Result<(), StorageError> {
        each_file!(self, appender => appender.flush().await)
    }

    /// See [`Appender::sync`].
    pub async fn sync(&self) -> Result<(), StorageError> {
        each_file!(self, appender => appender.sync().await)
    }

    /// See [`Appender::read_at`].
    pub async fn read_at(&self, position: u64, bytes: usize) -> Result<Vec<u8>, StorageError> {
        each_file!(self, appender => appender.read_at(position, bytes).await)
    }

    /// See [`Appender::read_into`].
    pub async fn read_into(&self, position: u64, out: &mut [u8]) -> Result<(), StorageError> {
        each_file!(self, appender => appender.read_into(position, out).await)
    }

    /// Whether `other` is a handle to this very file (not merely one at the same path).
    pub fn same_file(&self, other: &SegmentFile) -> bool {
        match (self, other) {
            (SegmentFile::Direct(one), SegmentFile::Direct(two)) => Rc::ptr_eq(one, two),
            (SegmentFile::Buffered(one), SegmentFile::Buffered(two)) => Rc::ptr_eq(one, two),
            (SegmentFile::Uring(one), SegmentFile::Uring(two)) => Rc::ptr_eq(one, two),
            (SegmentFile::Sim(one), SegmentFile::Sim(two)) => Rc::ptr_eq(one, two),
            _ => false,
        }
    }

    /// See [`Appender::truncate`].
    pub async fn truncate(&self, len: u64) -> Result<(), StorageError> {
        each_file!(self, appender => appender.truncate(len).await)
    }

    /// See [`Appender::seal`].
    pub async fn seal(&self) -> Result<(), StorageError> {
        each_file!(self, appender => appender.seal().await)
    }

    /// Bytes appended so far (the logical end of the file).
    pub fn len(&self) -> u64 {
        each_file!(self, appender => appender.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// See [`Appender::readable_len`].
    pub fn readable_len(&self) -> u64 {
        each_file!(self, appender => appender.readable_len())
    }

    /// See [`Appender::written_len`].
    pub fn written_len(&self) -> u64 {
        each_file!(self, appender => appender.written_len())
    }

    /// Bytes known durable.
    pub fn durable_len(&self) -> u64 {
        each_file!(self, appender => appender.durable_len())
    }

    /// The descriptor for zero-copy sends, where the strategy has one.
    pub fn raw_fd(&self) -> Option<RawFd> {
        each_file!(self, appender => appender.raw_fd())
    }

    /// See [`Appender::shared_fd`].
    pub fn shared_fd(&self) -> Option<std::io::Result<std::sync::Arc<std::os::fd::OwnedFd>>> {
        each_file!(self, appender => appender.shared_fd())
    }

    /// Whether anything but the caller can still read this file: another handle to it on
    /// this core, or a descriptor from [`shared_fd`](Self::shared_fd) on any core. A file
    /// nobody else can read may be overwritten (recycled) without anyone seeing the change.
    pub fn is_shared(&self) -> bool {
        each_file!(self, appender => Rc::strong_count(appender) > 1 || appender.descriptor_handed_out())
    }

    pub fn path(&self) -> PathBuf {
        each_file!(self, appender => appender.path().to_path_buf())
    }
}
