//! One appender for every strategy: copy, write-behind, group commit, the partial last page.

use std::cell::{OnceCell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::future::{FutureExt, Shared};

use super::{FileIo, IoBuffer};
use crate::error::StorageError;

/// How an [`Appender`] buffers and bounds its writes.
#[derive(Clone, Debug)]
pub struct AppendConfig {
    /// Size of each write buffer; full buffers are written while the next one fills.
    pub chunk_bytes: usize,
    /// Writes allowed in flight at once before `wait_for_room` makes appenders wait.
    pub write_behind_max: usize,
    /// Space is reserved ahead of the write position in steps that grow with the file up to
    /// this many bytes (fallocate; the file's length becomes the reserved end). 0 reserves
    /// nothing: writes extend the file. See [`Appender::reserve`].
    pub preallocate_step_bytes: u64,
    /// Reservations stop here (the segment size): a segment never reserves past it.
    pub preallocate_limit_bytes: u64,
    pub commit_mode: CommitMode,
}

impl Default for AppendConfig {
    fn default() -> Self {
        AppendConfig {
            chunk_bytes: 1 << 20,
            write_behind_max: 16,
            preallocate_step_bytes: 0,
            preallocate_limit_bytes: 0,
            commit_mode: CommitMode::Auto,
        }
    }
}

/// The first reservation of a file, and the least any later one adds: a partition that
/// receives a trickle reserves one chunk's worth, not a whole step.
pub const PREALLOCATE_STEP_MIN_BYTES: u64 = 1 << 20;

type SharedResult = Shared<Pin<Box<dyn Future<Output = Result<(), StorageError>>>>>;

/// A write handed to the engine and not yet known complete.
struct InFlight {
    /// Where the write ends in the file (aligned up: may include padding).
    end: u64,
    /// Where the appended bytes it carries end (padding excluded).
    data_end: u64,
    done: SharedResult,
}

/// A group commit: writes everything appended before it started, then fdatasyncs.
struct Commit {
    id: u64,
    /// Every byte below this is durable when the commit succeeds.
    target: u64,
    done: SharedResult,
}

/// How a group commit is shaped. Strategies differ in which pays off, so it is a setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitMode {
    /// The engine's preference: `Linked` for `uring`, `Pipelined` for the others.
    #[default]
    Auto,
    /// One commit in flight; its last write and the fdatasync are issued together (one
    /// submission with linked entries on `uring`).
    Linked,
    /// Two commits in flight: the next group's writes overlap the current fdatasync. The
    /// second commit issues its fdatasync only after its writes have completed, and the
    /// first's writes were awaited before that, so it covers both; it reports success only
    /// after the first did, so a failed fdatasync is never papered over by a later one.
    Pipelined,
}

impl CommitMode {
    fn commits_in_flight_max(self) -> usize {
        match self {
            CommitMode::Pipelined => 2,
            CommitMode::Linked | CommitMode::Auto => 1,
        }
    }
}

struct AppendState<B> {
    /// The buffer being filled. It covers file bytes from `chunk_start`.
    chunk: Option<B>,
    /// File position of the chunk's first byte (a multiple of the alignment).
    chunk_start: u64,
    /// Logical end: every byte appended so far.
    end: u64,
    /// Bytes below this have been handed to the engine.
    dispatched_end: u64,
    /// Bytes below this are written (maybe not durable).
    written_end: u64,
    /// Bytes below this are durable.
    durable_end: u64,
    /// The file's length as reserved by `preallocate` (or as found): writes below it neither
    /// extend the file nor need space from the file system.
    reserved_end: u64,
    in_flight: VecDeque<InFlight>,
    /// Group commits under way, oldest first, at most `COMMITS_IN_FLIGHT_MAX`.
    commits: VecDeque<Commit>,
    next_commit_id: u64,
    failed: Option<StorageError>,
    sealed: bool,
}

/// Appends bytes to one file through a [`FileIo`] engine.
///
/// **Durability.** [`append`](Self::append) returns when the bytes are copied into memory;
/// nothing is written yet. Full chunks are written in the background (write-behind, at most
/// `write_behind_max` in flight; [`wait_for_room`](Self::wait_for_room) applies that bound).
/// [`flush`](Self::flush) returns when everything appended before it is written to the file
/// (in the page cache or on the device, not necessarily durable). [`sync`](Self::sync) returns
/// when everything appended before it is durable.
///
/// **Group commit.** Concurrent `sync` callers share fdatasyncs: a caller joins a commit under
/// way that covers its bytes, or starts one that covers every append made so far (see
/// [`CommitMode`] for one commit in flight or two). Sixteen appenders waiting for durability
/// cost a couple of fdatasyncs, not sixteen.
///
/// **Partial last page.** With an aligned engine (O_DIRECT), flushing a chunk that ends
/// mid-page writes the page padded with zeros and keeps its live bytes in the next chunk, so
/// the next write rewrites the page whole. A write that overlaps one still in flight waits for
/// it, so an older padded page can never land over newer bytes.
///
/// **Concurrency.** Single core: any number of tasks of the owning executor may call any method
/// at once; no borrow of the state is held across an await. Not `Send`.
///
/// **Failure.** After any failed write or sync the appender is poisoned: every later call
/// returns [`StorageError::Poisoned`], because the device's contents past the last completed
/// write are then unknown. Reads are served up to [`written_len`](Self::written_len) (the
/// bytes every write below completed), never past it, and no new write is started. To take
/// appends again, wait for the writes still in flight ([`settle`](Self::settle)) and open
/// the file afresh through recovery, which finds where the valid batches end (the partition
/// log's `reopen`). A failed [`reserve`](Self::reserve) does not poison: it writes nothing.
///
/// **Space.** The file's space is reserved in growing steps ahead of the appends
/// ([`reserve`](Self::reserve)), not all at once when the file is created.
///
/// **Bounds.** Memory: one chunk being filled plus `write_behind_max` chunks in flight.
pub struct Appender<E: FileIo> {
    io: Rc<E>,
    path: PathBuf,
    config: AppendConfig,
    alignment: u64,
    /// `config.commit_mode` with `Auto` resolved for this engine.
    commit_mode: CommitMode,
    state: RefCell<AppendState<E::Buffer>>,
    /// A `dup` of the engine's read descriptor, made on first use and handed out (cloned)
    /// to whoever sends regions of this file from another core. Its count tells whether any
    /// of them is still alive, which recycling the file must wait out: see
    /// [`descriptor_handed_out`](Self::descriptor_handed_out).
    shared_fd: OnceCell<Arc<OwnedFd>>,
}

fn resolve_commit_mode<E: FileIo>(mode: CommitMode) -> CommitMode {
    match mode {
        CommitMode::Auto if E::LINKS_WRITE_AND_SYNC => CommitMode::Linked,
        CommitMode::Auto => CommitMode::Pipelined,
        chosen => chosen,
    }
}

fn align_down(value: u64, alignment: u64) -> u64 {
    value - value % alignment
}

fn align_up(value: u64, alignment: u64) -> u64 {
    align_down(value + alignment - 1, alignment)
}

impl<E: FileIo> Appender<E> {
    /// Takes over an open file whose first `logical_len` bytes are valid; appends go after them.
    pub async fn open(
        io: Rc<E>,
        path: &Path,
        logical_len: u64,
        config: &AppendConfig,
    ) -> Result<Rc<Self>, StorageError> {
        let alignment = io.alignment().max(1);
        assert!(
            (config.chunk_bytes as u64).is_multiple_of(alignment) && config.chunk_bytes > 0,
            "chunk_bytes {} must be a positive multiple of the alignment {alignment}",
            config.chunk_bytes
        );
        assert!(config.write_behind_max > 0);
        // Nothing is reserved here: space is taken as appends reach it (`reserve`), so a
        // partition that is created and never written holds no more than its file's bytes.
        let file_len = io.file_len().await?;
        let appender = Rc::new(Appender::new(io, path, logical_len, config, false));
        appender.state.borrow_mut().reserved_end = file_len;
        appender.restart_at(logical_len).await?;
        Ok(appender)
    }

    /// Takes over a sealed file of `len` bytes for reading only: no buffer, no I/O.
    pub fn open_sealed(io: Rc<E>, path: &Path, len: u64, config: &AppendConfig) -> Rc<Self> {
        Rc::new(Appender::new(io, path, len, config, true))
    }

    /// An appender whose file holds `len` valid bytes and nothing in flight.
    fn new(io: Rc<E>, path: &Path, len: u64, config: &AppendConfig, sealed: bool) -> Self {
        Appender {
            commit_mode: resolve_commit_mode::<E>(config.commit_mode),
            alignment: io.alignment().max(1),
            io,
            path: path.to_path_buf(),
            config: config.clone(),
            state: RefCell::new(AppendState {
                chunk: None,
                chunk_start: len,
                end: len,
                dispatched_end: len,
                written_end: len,
                durable_end: len,
                reserved_end: len,
                in_flight: VecDeque::new(),
                commits: VecDeque::new(),
                next_commit_id: 0,
                failed: None,
                sealed,
            }),
            shared_fd: OnceCell::new(),
        }
    }

    /// Points the next chunk at `logical_len`, re-reading the partial page below it.
    async fn restart_at(&self, logical_len: u64) -> Result<(), StorageError> {
        let chunk_start = align_down(logical_len, self.alignment);
        let partial_bytes = (logical_len - chunk_start) as usize;
        // The chunk is allocated lazily; only a partial page needs one now.
        let mut chunk = None;
        if partial_bytes > 0 {
            let mut buffer = self.io.alloc_buffer(self.config.chunk_bytes);
            let page = self.io.read_at(chunk_start, partial_bytes).await?;
            if page.len() != partial_bytes {
                return Err(StorageError::io(
                    "re-read partial page",
                    &self.path,
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                ));
            }
            buffer.as_bytes_mut()[..partial_bytes].copy_from_slice(&page);
            chunk = Some(buffer);
        }
        let mut state = self.state.borrow_mut();
        state.chunk = chunk;
        state.chunk_start = chunk_start;
        state.end = logical_len;
        state.dispatched_end = logical_len;
        state.written_end = logical_len;
        state.durable_end = state.durable_end.min(logical_len);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.state.borrow().end
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes a read may ask for: all appended bytes, or after a failure only those that
    /// reached the file (the rest can never be written).
    pub fn readable_len(&self) -> u64 {
        let state = self.state.borrow();
        if state.failed.is_some() {
            state.written_end
        } else {
            state.end
        }
    }

    /// Bytes known written to the file (readable through its descriptor).
    pub fn written_len(&self) -> u64 {
        self.state.borrow().written_end
    }

    /// Bytes known durable.
    pub fn durable_len(&self) -> u64 {
        self.state.borrow().durable_end
    }

    pub fn raw_fd(&self) -> Option<RawFd> {
        self.io.raw_fd()
    }

    /// A descriptor of the file that outlives this appender and may cross cores (a `dup` of
    /// [`raw_fd`](Self::raw_fd), one per file, shared by every caller), or `None` where the
    /// engine has no kernel file. While any clone of it lives, the file is not recycled.
    pub fn shared_fd(&self) -> Option<std::io::Result<Arc<OwnedFd>>> {
        if let Some(fd) = self.shared_fd.get() {
            return Some(Ok(Arc::clone(fd)));
        }
        let raw = self.io.raw_fd()?;
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that nothing else owns, or -1.
        let duplicate = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
        if duplicate < 0 {
            return Some(Err(std::io::Error::last_os_error()));
        }
        // SAFETY: `duplicate` is a fresh descriptor owned by nobody else.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(duplicate) });
        Some(Ok(Arc::clone(self.shared_fd.get_or_init(|| fd))))
    }

    /// Whether a descriptor from [`shared_fd`](Self::shared_fd) is still held somewhere.
    /// Exact once the caller holds the only reference to this appender: no new clone can
    /// then be made, so a `false` stays `false`.
    pub fn descriptor_handed_out(&self) -> bool {
        self.shared_fd
            .get()
            .is_some_and(|fd| Arc::strong_count(fd) > 1)
    }

    fn check_writable(&self, state: &AppendState<E::Buffer>) -> Result<(), StorageError> {
        if let Some(first) = &state.failed {
            return Err(StorageError::Poisoned {
                path: self.path.clone(),
                first: Box::new(first.clone()),
            });
        }
        if state.sealed {
            return Err(StorageError::Sealed {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Whether a write or sync of this file failed: it takes no more appends (see
    /// **Failure** above).
    pub fn is_failed(&self) -> bool {
        self.state.borrow().failed.is_some()
    }

    /// Whether the file was sealed and takes no more appends.
    pub fn is_sealed(&self) -> bool {
        self.state.borrow().sealed
    }

    /// Makes sure the file has space reserved up to `end` (the logical end an append is about
    /// to reach), so writes below it need no space from the file system and do not extend the
    /// file. Call it before [`append`](Self::append): if it fails, nothing was appended and
    /// the appender is as it was, so the caller can refuse the append cleanly and try again
    /// later (a full disk fails here, with ENOSPC, before anything is acknowledged).
    ///
    /// Reservations grow with the file: each one adds as much as the file already reserved,
    /// at least [`PREALLOCATE_STEP_MIN_BYTES`] and at most `preallocate_step_bytes`, and none
    /// goes past `preallocate_limit_bytes` (the segment size). When the full step does not
    /// fit on the device, the exact need is tried before giving up, so the disk can fill to
    /// the last byte. Without a step (`preallocate_step_bytes == 0`), does nothing.
    ///
    /// Concurrent callers may both reserve; `fallocate` only ever grows a file, so that is
    /// harmless (the log calls it under its append lock anyway).
    pub async fn reserve(&self, end: u64) -> Result<(), StorageError> {
        let step_bytes = self.config.preallocate_step_bytes;
        // An O_DIRECT write covers the whole last page.
        let needed = align_up(end, self.alignment);
        let target = {
            let state = self.state.borrow();
            self.check_writable(&state)?;
            if step_bytes == 0 || needed <= state.reserved_end {
                return Ok(());
            }
            let ahead = state
                .reserved_end
                .clamp(PREALLOCATE_STEP_MIN_BYTES.min(step_bytes), step_bytes);
            let limit = align_up(self.config.preallocate_limit_bytes, self.alignment);
            align_up(state.reserved_end + ahead, self.alignment)
                .min(limit)
                .max(needed)
        };
        let reserved = match self.io.preallocate(target).await {
            Ok(()) => target,
            Err(error) if error.is_no_space() && target > needed => {
                self.io.preallocate(needed).await?;
                needed
            }
            Err(error) => return Err(error),
        };
        let mut state = self.state.borrow_mut();
        state.reserved_end = state.reserved_end.max(reserved);
        // A write may have failed meanwhile; the caller appends next without awaiting.
        self.check_writable(&state)
    }

    /// The file's length as reserved so far (or as found when it was opened).
    pub fn reserved_len(&self) -> u64 {
        self.state.borrow().reserved_end
    }

    /// Returns once no write or group commit of this appender is in flight, whatever their
    /// outcome. After a failure, nothing else may write to the file before this returns: a
    /// write still in flight could otherwise land over newer bytes. Bounded: a failed
    /// appender starts no new writes, so this waits for at most `write_behind_max` writes and
    /// the commits under way.
    pub async fn settle(&self) {
        loop {
            let pending: Vec<SharedResult> = {
                let state = self.state.borrow();
                state
                    .in_flight
                    .iter()
                    .map(|write| write.done.clone())
                    .chain(state.commits.iter().map(|commit| commit.done.clone()))
                    .collect()
            };
            if pending.is_empty() {
                return;
            }
            for done in pending {
                let _ = done.await;
            }
            self.retire_completed();
            let mut state = self.state.borrow_mut();
            // Failed writes stay failed; they are no longer in flight.
            state.in_flight.retain(|write| write.done.peek().is_none());
        }
    }

    /// Copies `bytes` to the end of the file, in memory, and returns the new logical end.
    ///
    /// Full chunks start writing in the background; call [`wait_for_room`](Self::wait_for_room)
    /// afterwards to respect the write-behind bound.
    pub fn append(self: &Rc<Self>, bytes: &[u8]) -> Result<u64, StorageError> {
        let mut state = self.state.borrow_mut();
        self.check_writable(&state)?;
        let chunk_bytes = self.config.chunk_bytes;
        let mut remaining = bytes;
        while !remaining.is_empty() {
            let fill = (state.end - state.chunk_start) as usize;
            let copy_bytes = remaining.len().min(chunk_bytes - fill);
            let chunk = state
                .chunk
                .get_or_insert_with(|| self.io.alloc_buffer(chunk_bytes));
            chunk.as_bytes_mut()[fill..fill + copy_bytes].copy_from_slice(&remaining[..copy_bytes]);
            state.end += copy_bytes as u64;
            remaining = &remaining[copy_bytes..];
            if fill + copy_bytes == chunk_bytes {
                let full = state.chunk.take().expect("chunk was just filled");
                let position = state.chunk_start;
                state.chunk_start += chunk_bytes as u64;
                self.dispatch(&mut state, full, position, false);
            }
        }
        Ok(state.end)
    }

    /// Hands `buffer` to the engine at `position`, after any in-flight write it overlaps.
    fn dispatch(
        self: &Rc<Self>,
        state: &mut AppendState<E::Buffer>,
        buffer: E::Buffer,
        position: u64,
        with_sync: bool,
    ) {
        let end = position + buffer.as_bytes().len() as u64;
        // Only a padded partial page overlaps a later write; wait for it so it cannot land last.
        let overlapped: Vec<SharedResult> = state
            .in_flight
            .iter()
            .filter(|write| write.end > position)
            .map(|write| write.done.clone())
            .collect();
        let io = Rc::clone(&self.io);
        let appender = Rc::downgrade(self);
        let write = async move {
            // glommio runs a spawned task at once, up to its first await, and we are called
            // with the state borrowed: suspend first so nothing below can touch it re-entrantly.
            futures_lite::future::yield_now().await;
            for earlier in overlapped {
                earlier.await?;
            }
            let result = if with_sync {
                io.write_and_sync(buffer, position).await
            } else {
                io.write_at(buffer, position).await
            };
            if let Err(error) = &result {
                if let Some(appender) = appender.upgrade() {
                    appender
                        .state
                        .borrow_mut()
                        .failed
                        .get_or_insert(error.clone());
                }
            }
            result
        };
        let done = glommio::spawn_local(write).boxed_local().shared();
        let data_end = end.min(state.end);
        state.dispatched_end = state.dispatched_end.max(data_end);
        state.in_flight.push_back(InFlight {
            end,
            data_end,
            done,
        });
    }

    /// Waits until at most `write_behind_max` writes are in flight.
    pub async fn wait_for_room(&self) -> Result<(), StorageError> {
        loop {
            let oldest = {
                let state = self.state.borrow();
                if state.in_flight.len() <= self.config.write_behind_max {
                    return Ok(());
                }
                state.in_flight.front().map(|write| write.done.clone())
            };
            if let Some(done) = oldest {
                done.await?;
                self.retire_completed();
            }
        }
    }

    /// Drops finished writes from the front of the queue and advances `written_end`.
    fn retire_completed(&self) {
        let mut state = self.state.borrow_mut();
        while let Some(front) = state.in_flight.front() {
            match front.done.peek() {
                Some(Ok(())) => {
                    let data_end = front.data_end;
                    state.written_end = state.written_end.max(data_end);
                    state.in_flight.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Dispatches the partly filled chunk, keeping its unfinished last page for the next one.
    /// Returns every write in flight afterwards, all of which must finish for a flush.
    fn dispatch_tail(self: &Rc<Self>, with_sync: bool) -> Vec<SharedResult> {
        let mut state = self.state.borrow_mut();
        // After a failure nothing new is written: what lies past the failed write is unknown,
        // and `settle` must be able to wait out every write that was started.
        if state.end > state.dispatched_end && state.failed.is_none() {
            let fill = (state.end - state.chunk_start) as usize;
            let write_bytes = align_up(fill as u64, self.alignment) as usize;
            let next_start = align_down(state.end, self.alignment);
            let carried_bytes = (state.end - next_start) as usize;
            let mut next = self.io.alloc_buffer(self.config.chunk_bytes);
            let mut tail = state
                .chunk
                .take()
                .expect("unwritten bytes live in the chunk");
            if carried_bytes > 0 {
                let from = fill - carried_bytes;
                next.as_bytes_mut()[..carried_bytes].copy_from_slice(&tail.as_bytes()[from..fill]);
            }
            // Buffers may come back dirty from a pool: the padding must be zeros.
            tail.as_bytes_mut()[fill..write_bytes].fill(0);
            tail.truncate_to(write_bytes);
            let position = state.chunk_start;
            state.chunk = Some(next);
            state.chunk_start = next_start;
            self.dispatch(&mut state, tail, position, with_sync);
        }
        state
            .in_flight
            .iter()
            .map(|write| write.done.clone())
            .collect()
    }

    /// Returns when every byte appended before the call is written (not necessarily durable).
    pub async fn flush(self: &Rc<Self>) -> Result<(), StorageError> {
        let target = self.state.borrow().end;
        let writes = self.dispatch_tail(false);
        for write in writes {
            write.await?;
        }
        self.retire_completed();
        let mut state = self.state.borrow_mut();
        state.written_end = state.written_end.max(target);
        Ok(())
    }

    /// Returns when every byte appended before the call is durable (group commit; see above).
    pub async fn sync(self: &Rc<Self>) -> Result<(), StorageError> {
        let target = self.state.borrow().end;
        loop {
            let wait_for = {
                let mut state = self.state.borrow_mut();
                if let Some(first) = &state.failed {
                    return Err(StorageError::Poisoned {
                        path: self.path.clone(),
                        first: Box::new(first.clone()),
                    });
                }
                if state.durable_end >= target {
                    return Ok(());
                }
                let covering = state.commits.iter().find(|commit| commit.target >= target);
                match covering {
                    Some(commit) => commit.done.clone(),
                    None if state.commits.len() < self.commit_mode.commits_in_flight_max() => {
                        self.start_commit(&mut state)
                    }
                    // Wait for the oldest to finish, then start or join one that covers us.
                    None => state.commits[0].done.clone(),
                }
            };
            wait_for.await?;
        }
    }

    /// Starts a group commit covering everything appended so far.
    fn start_commit(self: &Rc<Self>, state: &mut AppendState<E::Buffer>) -> SharedResult {
        let id = state.next_commit_id;
        state.next_commit_id += 1;
        let target = state.end;
        let appender = Rc::clone(self);
        let done = glommio::spawn_local(async move {
            // Called with the state borrowed; see `dispatch`.
            futures_lite::future::yield_now().await;
            appender.commit(id, target).await
        })
        .boxed_local()
        .shared();
        state.commits.push_back(Commit {
            id,
            target,
            done: done.clone(),
        });
        done
    }

    /// One group commit: write everything up to `target`, then fdatasync.
    async fn commit(self: Rc<Self>, id: u64, target: u64) -> Result<(), StorageError> {
        let result = self.commit_inner(target).await;
        let mut state = self.state.borrow_mut();
        state.commits.retain(|commit| commit.id != id);
        match &result {
            Ok(()) => state.durable_end = state.durable_end.max(target),
            Err(error) => {
                state.failed.get_or_insert(error.clone());
            }
        }
        result
    }

    async fn commit_inner(self: &Rc<Self>, target: u64) -> Result<(), StorageError> {
        // Earlier chunks must be on the device before the fdatasync that covers them starts.
        let earlier: Vec<SharedResult> = {
            let state = self.state.borrow();
            state
                .in_flight
                .iter()
                .map(|write| write.done.clone())
                .collect()
        };
        for write in earlier {
            write.await?;
        }
        let has_tail = {
            let state = self.state.borrow();
            state.end > state.dispatched_end
        };
        match (has_tail, self.commit_mode) {
            (true, CommitMode::Linked) => {
                // The tail write and the fdatasync go out together, linked where the engine can.
                for write in self.dispatch_tail(true) {
                    write.await?;
                }
            }
            (true, _) => {
                for write in self.dispatch_tail(false) {
                    write.await?;
                }
                self.io.sync().await?;
            }
            (false, _) => self.io.sync().await?,
        }
        // Declare in order: an earlier commit's failure must poison, not be papered over.
        let earlier_commits: Vec<SharedResult> = {
            let state = self.state.borrow();
            state
                .commits
                .iter()
                .filter(|commit| commit.target < target)
                .map(|commit| commit.done.clone())
                .collect()
        };
        for commit in earlier_commits {
            commit.await?;
        }
        self.retire_completed();
        let mut state = self.state.borrow_mut();
        state.written_end = state.written_end.max(target);
        Ok(())
    }

    /// Reads `bytes` bytes at `position`, all below the logical end; writes them out first if
    /// they are still in memory.
    pub async fn read_at(
        self: &Rc<Self>,
        position: u64,
        bytes: usize,
    ) -> Result<Vec<u8>, StorageError> {
        let end = self.readable_len();
        let written_end = self.state.borrow().written_end;
        let wanted_end = (position + bytes as u64).min(end);
        if wanted_end <= position {
            return Ok(Vec::new());
        }
        if wanted_end > written_end {
            self.flush().await?;
        }
        self.io
            .read_at(position, (wanted_end - position) as usize)
            .await
    }

    /// Fills `out` with the bytes at `position`, which must all be below
    /// [`written_len`](Self::written_len): bytes the file already holds, so nothing is
    /// flushed. Fails if the file is shorter.
    pub async fn read_into(&self, position: u64, out: &mut [u8]) -> Result<(), StorageError> {
        let end = position + out.len() as u64;
        assert!(
            end <= self.written_len(),
            "read_into [{position}, {end}) beyond the written end {}",
            self.written_len()
        );
        let read = self.io.read_into(position, out).await?;
        if read < out.len() {
            return Err(StorageError::io(
                "read",
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the file ends at {}, before {end}", position + read as u64),
                ),
            ));
        }
        Ok(())
    }

    /// Cuts the file to `len` bytes: everything after is gone, appends continue from there.
    pub async fn truncate(self: &Rc<Self>, len: u64) -> Result<(), StorageError> {
        self.check_writable(&self.state.borrow())?;
        assert!(
            len <= self.len(),
            "truncate to {len} beyond the end {}",
            self.len()
        );
        self.flush().await?;
        self.io.set_len(len).await?;
        // Space after the cut is reserved again by the appends that reach it.
        self.state.borrow_mut().reserved_end = len;
        // The cut must be durable before anything is appended after it, or a crash could
        // resurrect the old bytes behind new ones.
        self.io.sync().await?;
        self.restart_at(len).await
    }

    /// Makes everything durable, trims the file to its logical length and refuses further
    /// appends. Reads keep working.
    pub async fn seal(self: &Rc<Self>) -> Result<(), StorageError> {
        self.sync().await?;
        let end = self.len();
        if self.io.file_len().await? != end {
            self.io.set_len(end).await?;
            self.io.sync().await?;
        }
        let mut state = self.state.borrow_mut();
        state.sealed = true;
        state.chunk = None;
        Ok(())
    }
}
