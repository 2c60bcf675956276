//! Recent batches of one partition, in memory, for strategies that write with O_DIRECT.
//!
//! O_DIRECT writes bypass the page cache, so a consumer reading at the tail would otherwise
//! hit the device (and make the appender flush a partial chunk first). Keeping the last
//! `capacity_bytes` of batches in memory serves tailing consumers and followers without a
//! disk read. Older data is read from the file (`sendfile`). The buffered strategy does not
//! need this: the page cache is its tail cache.

use std::collections::VecDeque;

use bytes::Bytes;

struct CachedBatch {
    base_offset: i64,
    last_offset: i64,
    bytes: Bytes,
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

    /// Adds the batch just appended (offsets must follow the previous one's).
    pub fn push(&mut self, base_offset: i64, last_offset: i64, bytes: Bytes) {
        if self.capacity_bytes == 0 {
            return;
        }
        if let Some(previous) = self.batches.back() {
            if previous.last_offset + 1 != base_offset {
                self.clear();
            }
        }
        self.bytes += bytes.len() as u64;
        self.batches.push_back(CachedBatch {
            base_offset,
            last_offset,
            bytes,
        });
        while self.bytes > self.capacity_bytes && self.batches.len() > 1 {
            if let Some(evicted) = self.batches.pop_front() {
                self.bytes -= evicted.bytes.len() as u64;
            }
        }
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (but at least one),
    /// stopping before `upper_offset`; `None` when `offset` is older than the cache.
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
            if !taken.is_empty() && total + batch.bytes.len() as u64 > max_bytes {
                break;
            }
            total += batch.bytes.len() as u64;
            taken.push(batch.bytes.clone());
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

    fn batch(size: usize) -> Bytes {
        Bytes::from(vec![7u8; size])
    }

    #[test]
    fn serves_recent_batches_and_stays_bounded() {
        let mut cache = TailCache::new(300);
        for index in 0..10 {
            cache.push(index * 10, index * 10 + 9, batch(100));
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
    fn a_gap_in_offsets_starts_over() {
        let mut cache = TailCache::new(1000);
        cache.push(0, 9, batch(10));
        cache.push(50, 59, batch(10));
        assert!(cache.read(0, 100, i64::MAX).is_none());
        assert_eq!(cache.read(50, 100, i64::MAX).expect("kept").len(), 1);
    }
}
