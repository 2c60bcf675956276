//! Request buffers that are kept and used again, and the byte budget for requests on a core.
//!
//! A fresh buffer for every large request is costly here: glibc hands big allocations back to
//! the kernel when they are freed, so each new 1 MiB request faulted in and zeroed 256 new
//! pages (measured: about 140,000 page faults a second at 1.5 GB/s of produce, and 2.06 GB/s
//! instead of 1.5 once the same buffers were kept; results/2026-11-26-broker-vs-loopback).
//! So frames of at least [`POOLED_MIN_BYTES`] are read into buffers from a pool, and go back
//! to it when the last `Bytes` that points into them is dropped, on whatever core that is.
//!
//! The pool keeps at most `idle_bytes_max` of buffers nobody uses; the budget
//! ([`RequestBudget`]) bounds the bytes of requests a core has read and not yet answered.
//! Together they bound a core's request memory (see `BrokerConfig::memory_bound_bytes`).

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use glommio::sync::{Semaphore, StaticPermit};

/// Smaller frames are allocated as usual: the heap serves them from memory it keeps.
pub const POOLED_MIN_BYTES: usize = 64 << 10;

/// Buffers kept for frames of at least [`POOLED_MIN_BYTES`]. Shared by the cores of a broker
/// through an `Arc`, because a request's bytes may be dropped on the core that owns the
/// partition rather than the one that read them. Lock-free.
pub struct BufferPool {
    idle: SegQueue<Vec<u8>>,
    idle_bytes: AtomicUsize,
    idle_bytes_max: usize,
}

impl BufferPool {
    pub fn new(idle_bytes_max: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            idle: SegQueue::new(),
            idle_bytes: AtomicUsize::new(0),
            idle_bytes_max,
        })
    }

    /// A buffer of exactly `len` bytes to read a frame into. Its contents are whatever the
    /// last request left (it is about to be overwritten), or zeros when new.
    pub fn take(self: &Arc<Self>, len: usize) -> PooledBuffer {
        let mut buffer = self.reusable(len).unwrap_or_default();
        if buffer.len() < len {
            buffer.resize(len, 0);
        }
        PooledBuffer {
            buffer,
            len,
            pool: Arc::clone(self),
        }
    }

    /// Reads the next `len` bytes from `reader`: into a buffer from the pool when `len` is at
    /// least [`POOLED_MIN_BYTES`], into an ordinary allocation otherwise. `len` must have been
    /// bounded by the caller.
    pub async fn read_exact(
        self: &Arc<Self>,
        reader: &mut (impl futures_lite::AsyncRead + Unpin),
        len: usize,
    ) -> std::io::Result<Bytes> {
        use futures_lite::AsyncReadExt;
        if len < POOLED_MIN_BYTES {
            let mut frame = vec![0u8; len];
            reader.read_exact(&mut frame).await?;
            return Ok(Bytes::from(frame));
        }
        let mut frame = self.take(len);
        reader.read_exact(frame.as_mut()).await?;
        Ok(frame.freeze())
    }

    /// The bytes kept idle now.
    pub fn idle_bytes(&self) -> usize {
        self.idle_bytes.load(Ordering::Relaxed)
    }

    /// An idle buffer that fits `len` without wasting more than `len` again; ones that do
    /// not fit are freed (a workload whose request sizes change settles on the new sizes).
    fn reusable(&self, len: usize) -> Option<Vec<u8>> {
        while let Some(buffer) = self.idle.pop() {
            self.idle_bytes
                .fetch_sub(buffer.capacity(), Ordering::Relaxed);
            if buffer.capacity() >= len && buffer.capacity() <= len.saturating_mul(2) {
                return Some(buffer);
            }
        }
        None
    }

    fn give_back(&self, buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        let kept = self
            .idle_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |idle| {
                (idle + capacity <= self.idle_bytes_max).then_some(idle + capacity)
            });
        if kept.is_ok() {
            self.idle.push(buffer);
        }
    }
}

/// A buffer from the pool, `len` bytes long; it goes back to the pool when dropped.
pub struct PooledBuffer {
    buffer: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    /// Makes it a `Bytes`; the buffer returns to the pool when the last clone is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl AsMut<[u8]> for PooledBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[..self.len]
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

/// The bytes of requests one core may hold read and unanswered at once (Kafka's
/// `queued.max.request.bytes`, which is off by default there). A connection waits for its
/// share before it reads a frame, so a burst of large requests slows the readers down
/// instead of growing memory.
pub struct RequestBudget {
    bytes: Rc<Semaphore>,
    bytes_max: u64,
}

impl RequestBudget {
    pub fn new(bytes_max: u64) -> RequestBudget {
        RequestBudget {
            bytes: Rc::new(Semaphore::new(bytes_max)),
            bytes_max,
        }
    }

    /// Waits until `frame_bytes` fit (a frame larger than the whole budget waits for all of
    /// it); the share is returned when the permit is dropped. `None` once closed.
    pub async fn reserve(&self, frame_bytes: usize) -> Option<StaticPermit> {
        let units = (frame_bytes as u64).clamp(1, self.bytes_max.max(1));
        self.bytes.acquire_static_permit(units).await.ok()
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> u64 {
        self.bytes.available()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_and_is_used_again() {
        let pool = BufferPool::new(8 << 20);
        let first = pool.take(1 << 20);
        let address = first.as_ref().as_ptr();
        let bytes = first.freeze();
        let clone = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.idle_bytes(), 0, "a slice still points into it");
        drop(clone);
        assert_eq!(pool.idle_bytes(), 1 << 20);
        let again = pool.take(1 << 20);
        assert_eq!(again.as_ref().as_ptr(), address, "the same memory");
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[test]
    fn idle_buffers_stay_within_their_bound() {
        let pool = BufferPool::new(3 << 20);
        let taken: Vec<_> = (0..5).map(|_| pool.take(1 << 20)).collect();
        drop(taken);
        assert_eq!(pool.idle_bytes(), 3 << 20, "two were freed, not kept");
    }

    #[test]
    fn a_buffer_much_larger_than_asked_is_freed_not_used() {
        let pool = BufferPool::new(64 << 20);
        drop(pool.take(16 << 20));
        let small = pool.take(1 << 20);
        assert_eq!(small.as_ref().len(), 1 << 20);
        assert_eq!(pool.idle_bytes(), 0, "the 16 MiB buffer was let go");
        drop(small);
        let larger = pool.take(2 << 20);
        assert_eq!(larger.as_ref().len(), 2 << 20, "grown to fit");
    }

    #[test]
    fn the_budget_holds_back_what_does_not_fit() {
        glommio::LocalExecutor::default().run(async {
            let budget = RequestBudget::new(10);
            let first = budget.reserve(8).await.expect("fits");
            let waiting = futures_lite::future::poll_once(budget.reserve(5)).await;
            assert!(waiting.is_none(), "8 + 5 > 10");
            drop(first);
            let large = budget
                .reserve(1000)
                .await
                .expect("clamped to the whole budget");
            assert_eq!(budget.available(), 0);
            drop(large);
            assert_eq!(budget.available(), 10);
        });
    }
}
