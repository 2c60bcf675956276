//! Catch-up reads for the strategies that write with O_DIRECT (`direct`, `uring`): O_DIRECT
//! reads into memory, a window ahead of the reader, instead of `sendfile`.
//!
//! # Why
//! Data written with O_DIRECT is not in the page cache. Sent with `sendfile` from an ordinary
//! descriptor, it comes off the device through the kernel's buffered read path, while the
//! executor's thread waits. Measured on this machine: a catch-up consumer of `direct` data
//! got 418 to 490 MB/s that way, about what fio's cold buffered read gets (564 to 683 MB/s),
//! while fio's O_DIRECT reads of 1 to 4 MiB on the same file got 1.2 to 2.7 GB/s. The same
//! consumer got 1,279 MB/s from a first version of this module (docs/broker.md).
//!
//! # How
//! A fetch region the tail cache does not hold is read with the strategy's own O_DIRECT read
//! (glommio's or our io_uring, so the thread never waits for the device) into a buffer from
//! a pool, and sent from memory: one copy out of the DMA buffer, one into the socket.
//! Reads go in *windows* of `read_ahead_bytes` (or the region, if larger), and a *stream* of
//! fetches that reads on, each starting where the last ended, finds the next window already
//! read or in flight: after serving a region, the stream starts reading the window after it
//! so that `read_ahead_bytes` past the region's end are on their way. The next fetch then
//! waits only for what the device has not finished while the previous response was sent.
//!
//! A stream is one reader's position in one segment file of one partition. Several readers
//! of a partition at different places have a stream each. A reader about to finish a segment
//! gets a stream on the next one, with its first window already being read
//! ([`ReadAhead::read_on_past_file_end`]), so crossing a segment boundary costs no wait.
//!
//! # Bounds
//! Each core's windows, and the responses made of them until they are sent, share a budget of
//! `read_memory_bytes`; a window's share returns when the last response holding part of it is
//! dropped, on whatever core. A window that a fetch needs now and that does not fit drops
//! other streams, least recently used first; if it still does not fit, the caller sends the
//! region with `sendfile` as before. A window read only ahead never drops another stream.
//! Buffers come back to a pool that keeps at most `read_memory_bytes` of them idle.
//!
//! # Correctness
//! A window holds bytes below the file's written end when its read was issued: bytes the
//! file already holds and that only truncation changes, and truncation forgets the
//! partition's streams. A stream holds its file open, so retention deletes rather than
//! recycles it (`SegmentFile::is_shared`) and a window's bytes are never another segment's.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};

use crate::error::StorageError;
use crate::segment::FileRegion;
use crate::storage::SegmentFile;
use crate::PartitionLog;
use shardlog_protocol::buffers::{BufferPool, PooledBuffer};

/// A window read only ahead of the reader is not started for less than this: near the end
/// of the written data it would be a small read that the next fetch soon outgrows.
const AHEAD_MIN_BYTES: u64 = 64 << 10;

/// Streams one core keeps: each fetch looks through them all.
const STREAMS_MAX: usize = 64;

/// The partition a stream reads: topic name and partition index.
pub type PartitionKey = (String, i32);

/// A window's bytes once read; the error is the read's, kept for every fetch that waits on it.
type WindowRead = Shared<LocalBoxFuture<'static, Result<Bytes, StorageError>>>;

/// The read-ahead of one core. Not `Send`: owned by the core's shard.
pub struct ReadAhead {
    window_bytes: u64,
    budget: Arc<Budget>,
    pool: Arc<BufferPool>,
    streams: RefCell<Vec<Stream>>,
    /// Counts reads, to know which stream was used least recently.
    clock: Cell<u64>,
    stats: Cell<ReadAheadStats>,
}

/// What a core's read-ahead has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadAheadStats {
    /// Window reads started, and their bytes.
    pub windows: u64,
    pub window_bytes: u64,
    /// Of those, the ones started ahead of any fetch that needed them.
    pub windows_ahead: u64,
    /// Regions that did not fit the budget and were left to the caller.
    pub over_budget: u64,
}

/// Bytes of windows (and of responses made of them) a core may hold.
struct Budget {
    available: AtomicU64,
}

/// One reader's place in one segment file.
struct Stream {
    partition: PartitionKey,
    file: SegmentFile,
    /// Where the last region served from this stream ended: the next fetch of this reader
    /// starts there.
    next_position: u64,
    /// Contiguous and ascending: each starts where the one before ends.
    windows: VecDeque<Window>,
    last_used: u64,
}

#[derive(Clone)]
struct Window {
    start: u64,
    end: u64,
    read: WindowRead,
}

impl Stream {
    fn serves(&self, partition: &PartitionKey, region: &FileRegion) -> bool {
        self.partition == *partition
            && self.file.same_file(&region.file)
            && (self.next_position == region.position
                || self
                    .windows
                    .iter()
                    .any(|window| (window.start..window.end).contains(&region.position)))
    }

    /// Drops the windows that end at or before `position`.
    fn drop_windows_before(&mut self, position: u64) {
        while self
            .windows
            .front()
            .is_some_and(|window| window.end <= position)
        {
            self.windows.pop_front();
        }
    }

    fn end(&self) -> Option<u64> {
        self.windows.back().map(|window| window.end)
    }
}

impl ReadAhead {
    /// Windows of `window_bytes`, within `memory_bytes` for the core. `window_bytes` 0 turns
    /// read-ahead off: [`read`](Self::read) then always answers `None`.
    pub fn new(window_bytes: u64, memory_bytes: u64) -> ReadAhead {
        ReadAhead {
            window_bytes,
            budget: Arc::new(Budget {
                available: AtomicU64::new(memory_bytes),
            }),
            pool: BufferPool::new(usize::try_from(memory_bytes).unwrap_or(usize::MAX)),
            streams: RefCell::new(Vec::new()),
            clock: Cell::new(0),
            stats: Cell::new(ReadAheadStats::default()),
        }
    }

    /// The bytes of `region` (a region of `partition` that its log just returned), as byte
    /// runs to send one after the other; `None` when they do not fit in the core's budget
    /// (or read-ahead is off), and the caller should send the region from the file.
    pub async fn read(
        &self,
        partition: &PartitionKey,
        region: &FileRegion,
    ) -> Result<Option<Vec<Bytes>>, StorageError> {
        if self.window_bytes == 0 || region.len == 0 {
            return Ok(None);
        }
        let (start, end) = (region.position, region.position + region.len);
        let now = self.tick();
        let found = self
            .streams
            .borrow()
            .iter()
            .position(|stream| stream.serves(partition, region));
        let mut stream = match found {
            Some(index) => self.streams.borrow_mut().swap_remove(index),
            None => Stream {
                partition: partition.clone(),
                file: region.file.clone(),
                next_position: start,
                windows: VecDeque::new(),
                last_used: now,
            },
        };
        stream.last_used = now;
        stream.drop_windows_before(start);
        // A stream serves a region only from a window holding its start or from where the
        // last one ended, which its first window holds or starts at.
        debug_assert!(stream
            .windows
            .front()
            .is_none_or(|window| window.start <= start));
        // Windows for the whole region, read now if not yet. The log flushed the region
        // before returning it; if not, it is the file's to send.
        let written_end = region.file.written_len();
        if written_end < end {
            self.keep(stream);
            return Ok(None);
        }
        loop {
            let window_start = stream.end().unwrap_or(start);
            if window_start >= end {
                break;
            }
            let window_end = self.window_end(window_start, end, written_end);
            if !self.reserve(window_end - window_start, true) {
                self.keep(stream);
                self.count(|stats| stats.over_budget += 1);
                return Ok(None);
            }
            stream
                .windows
                .push_back(self.start_read(&region.file, window_start, window_end));
        }
        // The window after, read while this region is sent.
        let stream_end = stream.end().unwrap_or(end);
        let ahead_end = (end + self.window_bytes).min(written_end);
        if stream_end < ahead_end {
            let window_end = self.window_end(stream_end, stream_end, written_end);
            if window_end - stream_end >= AHEAD_MIN_BYTES
                && self.reserve(window_end - stream_end, false)
            {
                stream
                    .windows
                    .push_back(self.start_read(&region.file, stream_end, window_end));
                self.count(|stats| stats.windows_ahead += 1);
            }
        }
        let needed: Vec<Window> = stream
            .windows
            .iter()
            .filter(|window| window.start < end && start < window.end)
            .cloned()
            .collect();
        stream.next_position = end;
        // Windows this reader has read all of are the responses' now; at the end of a
        // segment that leaves none, and the stream goes (its file with it).
        stream.drop_windows_before(end);
        self.keep(stream);

        let mut parts = Vec::with_capacity(needed.len());
        for window in needed {
            let bytes = match window.read.await {
                Ok(bytes) => bytes,
                Err(error) => {
                    self.forget_file(&region.file);
                    return Err(error);
                }
            };
            let from = start.max(window.start) - window.start;
            let to = end.min(window.end) - window.start;
            parts.push(bytes.slice(from as usize..to as usize));
        }
        Ok(Some(parts))
    }

    /// Once `region` of `log` has been served: if its reader's read-ahead reaches past the
    /// end of the region's file, starts on the next segment too ([`Self::read_next_file`]).
    pub fn read_on_past_file_end(
        &self,
        partition: &PartitionKey,
        region: &FileRegion,
        log: &PartitionLog,
    ) {
        let reaches_end = self.window_bytes > 0
            && region.position + region.len + self.window_bytes > region.file.written_len();
        if reaches_end {
            if let Some(next) = log.segment_file_after(&region.file) {
                self.read_next_file(partition, &next);
            }
        }
    }

    /// Starts reading the first window of `next`, the segment after the one a reader of
    /// `partition` is about to finish, so its first fetch there does not wait for the disk.
    /// Only if the budget has room without dropping other streams, and not twice.
    fn read_next_file(&self, partition: &PartitionKey, next: &SegmentFile) {
        let already = self
            .streams
            .borrow()
            .iter()
            .any(|stream| stream.partition == *partition && stream.file.same_file(next));
        let end = self.window_bytes.min(next.written_len());
        if already || end < AHEAD_MIN_BYTES || !self.reserve(end, false) {
            return;
        }
        let now = self.tick();
        let window = self.start_read(next, 0, end);
        self.count(|stats| stats.windows_ahead += 1);
        self.keep(Stream {
            partition: partition.clone(),
            file: next.clone(),
            next_position: 0,
            windows: VecDeque::from([window]),
            last_used: now,
        });
    }

    /// Where a window from `start` ends: a window's length on, or `at_least`, within the
    /// written bytes; and all of them if less than [`AHEAD_MIN_BYTES`] would be left after
    /// it, which would otherwise make a small read of their own.
    fn window_end(&self, start: u64, at_least: u64, written_end: u64) -> u64 {
        let end = (start + self.window_bytes).max(at_least).min(written_end);
        if written_end - end < AHEAD_MIN_BYTES {
            written_end
        } else {
            end
        }
    }

    /// Drops the streams of `partition`: its log was cut, or deleted.
    pub fn forget(&self, partition: &PartitionKey) {
        self.streams
            .borrow_mut()
            .retain(|stream| stream.partition != *partition);
    }

    /// The next value of the clock that orders streams by use.
    fn tick(&self) -> u64 {
        self.clock.set(self.clock.get() + 1);
        self.clock.get()
    }

    pub fn stats(&self) -> ReadAheadStats {
        self.stats.get()
    }

    fn count(&self, change: impl FnOnce(&mut ReadAheadStats)) {
        let mut stats = self.stats.get();
        change(&mut stats);
        self.stats.set(stats);
    }

    /// Bytes of the budget not taken now.
    pub fn available_bytes(&self) -> u64 {
        self.budget.available.load(Ordering::Relaxed)
    }

    /// Puts a stream back in the list, unless it has no window left; past
    /// [`STREAMS_MAX`], the least recently used one goes.
    fn keep(&self, stream: Stream) {
        if stream.windows.is_empty() {
            return;
        }
        let mut streams = self.streams.borrow_mut();
        streams.push(stream);
        if streams.len() > STREAMS_MAX {
            if let Some((oldest, _)) = streams
                .iter()
                .enumerate()
                .min_by_key(|(_, stream)| stream.last_used)
            {
                streams.swap_remove(oldest);
            }
        }
    }

    fn forget_file(&self, file: &SegmentFile) {
        self.streams
            .borrow_mut()
            .retain(|stream| !stream.file.same_file(file));
    }

    /// Takes `bytes` from the budget. With `evict`, drops the least recently used streams
    /// (the caller's is out of the list) until they fit or none is left.
    fn reserve(&self, bytes: u64, evict: bool) -> bool {
        loop {
            let taken = self.budget.available.fetch_update(
                Ordering::AcqRel,
                Ordering::Acquire,
                |available| available.checked_sub(bytes),
            );
            if taken.is_ok() {
                return true;
            }
            if !evict {
                return false;
            }
            let mut streams = self.streams.borrow_mut();
            let oldest = streams
                .iter()
                .enumerate()
                .min_by_key(|(_, stream)| stream.last_used)
                .map(|(index, _)| index);
            match oldest {
                // Its windows' shares return once no response holds them (perhaps now).
                Some(index) => drop(streams.swap_remove(index)),
                None => return false,
            }
        }
    }

    /// Starts reading `[start, end)` of `file` into a pooled buffer; the budget for it has
    /// been taken and returns with the buffer.
    fn start_read(&self, file: &SegmentFile, start: u64, end: u64) -> Window {
        let len = (end - start) as usize;
        self.count(|stats| {
            stats.windows += 1;
            stats.window_bytes += end - start;
        });
        let mut buffer = WindowBuffer {
            buffer: self.pool.take(len),
            budget: Arc::clone(&self.budget),
        };
        let file = file.clone();
        // Spawned, so the read runs while nobody waits on it (the point of reading ahead).
        let task = glommio::spawn_local(async move {
            file.read_into(start, buffer.buffer.as_mut()).await?;
            Ok(Bytes::from_owner(buffer))
        })
        .detach();
        let read = async move {
            task.await.unwrap_or_else(|| {
                Err(StorageError::io(
                    "read ahead",
                    "",
                    std::io::Error::other("the read was cancelled"),
                ))
            })
        };
        Window {
            start,
            end,
            read: read.boxed_local().shared(),
        }
    }
}

/// A window's memory: a pooled buffer and its share of the budget, both returned on drop.
struct WindowBuffer {
    buffer: PooledBuffer,
    budget: Arc<Budget>,
}

impl AsRef<[u8]> for WindowBuffer {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl Drop for WindowBuffer {
    fn drop(&mut self) {
        let len = self.buffer.as_ref().len() as u64;
        self.budget.available.fetch_add(len, Ordering::AcqRel);
    }
}
