//! A partition log's settings and durability policy.

use std::time::Duration;

use crate::storage::{AppendConfig, CommitMode};

/// When appended bytes are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Never fsync; the OS writes back when it likes (Kafka's default: replication is the
    /// durability). A crash may lose anything acknowledged since the last roll.
    None,
    /// fdatasync once `interval_bytes` have been appended since the last one, and at least
    /// every `interval_ms` while anything is unsynced. A crash may lose up to that much.
    Interval {
        interval_ms: u64,
        interval_bytes: u64,
    },
    /// fdatasync before an append is acknowledged (group commit shares it between
    /// concurrent appends). A crash loses nothing acknowledged.
    Always,
}

impl Durability {
    /// Parses `none`, `always` or `interval` (with the given interval).
    pub fn from_name(name: &str, interval_ms: u64, interval_bytes: u64) -> Option<Durability> {
        match name {
            "none" => Some(Durability::None),
            "always" => Some(Durability::Always),
            "interval" => Some(Durability::Interval {
                interval_ms,
                interval_bytes,
            }),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Interval { .. } => "interval",
            Durability::Always => "always",
        }
    }
}

/// The default largest reservation step, as Redpanda's: a step costs one fallocate (and one
/// journalled size change) per 32 MiB appended, and holds at most 32 MiB unused per partition.
pub const PREALLOCATE_STEP_BYTES_DEFAULT: u64 = 32 << 20;

/// Settings of one partition log. Defaults follow Kafka where Kafka has the setting.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A segment is rolled before it would grow past this (Kafka `segment.bytes`).
    pub segment_bytes: u64,
    /// A segment older than this is rolled at the next append (Kafka `segment.ms`).
    pub segment_age_max: Option<Duration>,
    /// An index entry every this many bytes of log (Kafka `index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// Whole old segments are deleted while the log stays at least this big without them
    /// (Kafka `retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// Whole segments whose newest timestamp is older than this are deleted (`retention.ms`).
    pub retention_age_max: Option<Duration>,
    pub durability: Durability,
    /// The largest batch accepted (Kafka `message.max.bytes`, with headroom for 1 MiB batches).
    pub max_batch_bytes: usize,
    /// Size of each write buffer.
    pub chunk_bytes: usize,
    /// Write buffers in flight before appends wait.
    pub write_behind_max: usize,
    /// Reserve each segment's space with fallocate ahead of its appends, in steps (see
    /// `preallocate_step_bytes`), so writes land inside the file's length: they neither
    /// extend it nor make each fdatasync journal a size change, and a full disk fails the
    /// reservation, before anything is appended, rather than a write.
    pub preallocate: bool,
    /// The largest reservation step: space is reserved ahead of the write position in steps
    /// that start at 1 MiB, double with the file, and stop growing at this size (Redpanda
    /// uses 32 MiB). A segment never reserves past `segment_bytes`. A multiple of 4096.
    pub preallocate_step_bytes: u64,
    /// How group commits are shaped (`Auto`: the strategy's preference).
    pub commit_mode: CommitMode,
    /// Keep the log files of segments retention drops (up to
    /// [`SPARE_SEGMENTS_MAX`](super::SPARE_SEGMENTS_MAX) per log) and overwrite them as new
    /// segments, instead of deleting them and preallocating fresh ones. On ext4 an fdatasync
    /// after writes into preallocated, never-written blocks journals their conversion; into
    /// blocks written before it is only a cache flush, which lifts `Always` group commit a
    /// lot (docs/storage.md, "Recycled segments"). Applies to the O_DIRECT strategies
    /// (`direct`, `uring`) and `sim`; `buffered` always deletes.
    pub recycle_segments: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_age_max: None,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_age_max: None,
            durability: Durability::None,
            max_batch_bytes: 8 << 20,
            chunk_bytes: 1 << 20,
            write_behind_max: 16,
            preallocate: true,
            preallocate_step_bytes: PREALLOCATE_STEP_BYTES_DEFAULT,
            commit_mode: CommitMode::Auto,
            recycle_segments: true,
        }
    }
}

impl LogConfig {
    /// Why the settings cannot work, if they cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.segment_bytes > u64::from(u32::MAX) {
            return Some("segment_bytes must fit the index's 32-bit positions (at most 4 GiB - 1)");
        }
        if self.segment_bytes < 4096 {
            return Some("segment_bytes must be at least 4096");
        }
        if self.chunk_bytes == 0 || !self.chunk_bytes.is_multiple_of(4096) {
            return Some("chunk_bytes must be a positive multiple of 4096");
        }
        if self.write_behind_max == 0 {
            return Some("write_behind_max must be at least 1");
        }
        if self.index_interval_bytes == 0 {
            return Some("index_interval_bytes must be at least 1");
        }
        if self.preallocate
            && (self.preallocate_step_bytes == 0
                || !self.preallocate_step_bytes.is_multiple_of(4096))
        {
            return Some("preallocate_step_bytes must be a positive multiple of 4096");
        }
        if self.max_batch_bytes < crate::batch::layout::HEADER_BYTES {
            return Some("max_batch_bytes must hold at least a batch header");
        }
        None
    }

    pub(crate) fn append_config(&self) -> AppendConfig {
        AppendConfig {
            chunk_bytes: self.chunk_bytes,
            write_behind_max: self.write_behind_max,
            preallocate_step_bytes: if self.preallocate {
                self.preallocate_step_bytes
            } else {
                0
            },
            preallocate_limit_bytes: self.segment_bytes,
            commit_mode: self.commit_mode,
        }
    }
}
