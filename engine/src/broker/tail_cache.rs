//! Recent batches of one partition, in memory, for strategies that write with O_DIRECT.
//!
//! O_DIRECT writes bypass the page cache, so a consumer reading at the tail would otherwise
//! hit the device (and make the appender flush a partial chunk first). Keeping the last
//! `capacity_bytes` of batches in memory serves tailing consumers and followers without a
//! disk read. Older data is read from the file (`sendfile`). The buffered strategy does not
//! need this: the page cache is its tail cache.

use std::collections::VecDeque;

use bytes::Bytes;

/// A batch as stored, in two parts: its first bytes as the log patched them (offsets and
/// epoch; empty when `rest` already holds them) and the rest as it came. Keeping the
/// producer's bytes as they came lets a produced batch be cached without a copy.
struct CachedBatch {
    base_offset: i64,
    last_offset: i64,
    head: Bytes,
    rest: Bytes,
}

impl CachedBatch {
    fn len(&self) -> u64 {
        (self.head.len() + self.rest.len()) as u64
    }
}

/// Bounded to `capacity_bytes` (plus at most one batch). Owned by the partition's core.
pub struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: u64,
    capacity_bytes: u64,
}

impl TailCache {
    pub fn new(capacity_bytes: u64) -> TailCache {
        TailCache {
            batches: VecDeque::new(),
            bytes: 0,
            capacity_bytes,
        }
    }

    /// Adds the batch just appended (offsets must follow the previous one's): `head` then
    /// `rest` are its bytes as stored.
    pub fn push(&mut self, base_offset: i64, last_offset: i64, head: Bytes, rest: Bytes) {
        if self.capacity_bytes == 0 {
            return;
        }
        if let Some(previous) = self.batches.back() {
            if previous.last_offset + 1 != base_offset {
                self.clear();
            }
        }
        let batch = CachedBatch {
            base_offset,
            last_offset,
            head,
            rest,
        };
        self.bytes += batch.len();
        self.batches.push_back(batch);
        while self.bytes > self.capacity_bytes && self.batches.len() > 1 {
            if let Some(evicted) = self.batches.pop_front() {
                self.bytes -= evicted.len();
            }
        }
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (but at least one),
    /// stopping before `upper_offset`, as byte runs to send one after the other; `None` when
    /// `offset` is older than the cache.
    pub fn read(&self, offset: i64, max_bytes: u64, upper_offset: i64) -> Option<Vec<Bytes>> {
        let first = self.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = self
            .batches
            .partition_point(|batch| batch.last_offset < offset);
        let mut taken = Vec::new();
        let mut total = 0u64;
        for batch in self.batches.iter().skip(start) {
            if batch.base_offset >= upper_offset {
                break;
            }
            if total > 0 && total + batch.len() > max_bytes {
                break;
            }
            total += batch.len();
            taken.extend(
                [&batch.head, &batch.rest]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .cloned(),
            );
        }
        Some(taken)
    }

    /// Drops everything (the log was truncated, or offsets jumped).
    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(cache: &mut TailCache, base_offset: i64, last_offset: i64, size: usize) {
        cache.push(
            base_offset,
            last_offset,
            Bytes::new(),
            Bytes::from(vec![7u8; size]),
        );
    }

    #[test]
    fn serves_recent_batches_and_stays_bounded() {
        let mut cache = TailCache::new(300);
        for index in 0..10 {
            push(&mut cache, index * 10, index * 10 + 9, 100);
        }
        assert!(cache.bytes() <= 300);
        assert!(cache.read(0, 1000, i64::MAX).is_none(), "evicted");
        let read = cache.read(85, 150, i64::MAX).expect("cached");
        assert_eq!(
            read.len(),
            1,
            "the batch holding 85, then the budget is spent"
        );
        assert_eq!(
            cache.read(80, 1000, 90).expect("cached").len(),
            1,
            "upper bound"
        );
        assert_eq!(
            cache.read(100, 1000, i64::MAX).expect("at the end").len(),
            0
        );
    }

    #[test]
    fn a_batch_in_two_parts_is_read_back_in_order() {
        let mut cache = TailCache::new(1000);
        cache.push(
            0,
            9,
            Bytes::from_static(b"head"),
            Bytes::from_static(b"rest"),
        );
        cache.push(10, 19, Bytes::new(), Bytes::from_static(b"whole"));
        let read = cache.read(0, 1000, i64::MAX).expect("cached");
        assert_eq!(read, [&b"head"[..], b"rest", b"whole"]);
        assert_eq!(cache.bytes(), 13);
    }

    #[test]
    fn a_gap_in_offsets_starts_over() {
        let mut cache = TailCache::new(1000);
        push(&mut cache, 0, 9, 10);
        push(&mut cache, 50, 59, 10);
        assert!(cache.read(0, 100, i64::MAX).is_none());
        assert_eq!(cache.read(50, 100, i64::MAX).expect("kept").len(), 1);
    }
}
