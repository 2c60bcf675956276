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
//! Directory operations and small files (index files, checkpoints, markers) go through
//! [`Storage`] too: the async small-file API in `small_file` runs them off the executor's
//! thread on the real strategies and through the simulated disk's faults on `sim`.

mod appender;
mod buffered;
mod direct;
mod sim;
mod small_file;
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
                Appender::open(
                    UringIo::open_off_thread(path, config).await?,
                    path,
                    logical_len,
                    config,
                )
                .await?,
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
                UringIo::open_off_thread(path, config).await?,
                path,
                len,
                config,
            )),
            Storage::Sim(disk) => {
                SegmentFile::Sim(Appender::open_sealed(disk.open(path), path, len, config))
            }
        })
    }

    /// The length of a file, or `None` if it does not exist. On the real strategies the
    /// `stat` runs on the executor's blocking-thread pool (see `small_file`).
    pub async fn file_len(&self, path: &Path) -> Result<Option<u64>, StorageError> {
        if let Storage::Sim(disk) = self {
            return Ok(disk.file_len(path));
        }
        let path = path.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || match std::fs::metadata(&path) {
                Ok(metadata) => Ok(Some(metadata.len())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(StorageError::io("stat", &path, error)),
            })
            .await
    }

    /// Best effort: drops the page cache's clean pages of a file, so the next reads come
    /// from the device. After a failed writeback the kernel may mark pages clean that never
    /// reached the device; a reader would otherwise take them for stored bytes. Only the
    /// `buffered` strategy reads through the page cache; the others read with O_DIRECT (or
    /// from memory) and need nothing. The calls run on the executor's blocking-thread pool.
    pub async fn drop_cached(&self, path: &Path) {
        if !matches!(self, Storage::Buffered) {
            return;
        }
        let path = path.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || {
                use std::os::fd::AsRawFd;
                let Ok(file) = std::fs::File::open(&path) else {
                    return;
                };
                // SAFETY: posix_fadvise on a descriptor we own; it only advises the page cache.
                let advised = unsafe {
                    libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
                };
                if advised != 0 {
                    tracing::warn!(path = %path.display(), errno = advised, "cannot drop cached pages");
                }
            })
            .await
    }
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
