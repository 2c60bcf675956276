//! The sparse indexes kept beside each segment's log file.
//!
//! Both are held in memory while the segment is open and written to disk whole when the
//! segment is sealed (rolled) or the log is closed cleanly. After a crash, the active segment's
//! indexes are rebuilt by scanning its batches; a sealed segment's index that is missing or
//! fails validation is rebuilt the same way.

mod offset;
mod time;

pub use offset::{OffsetIndex, OFFSET_ENTRY_BYTES};
pub use time::{TimeIndex, TIME_ENTRY_BYTES};

/// Why an index file was rejected on load (it is then rebuilt from the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("index of {len} bytes is not a whole number of {entry_bytes}-byte entries")]
    PartialEntry { len: usize, entry_bytes: usize },
    #[error("entry {entry} goes backwards or repeats")]
    NotIncreasing { entry: usize },
    #[error("entry {entry} points at byte {position}, past the segment's {segment_len} bytes")]
    PastEnd {
        entry: usize,
        position: u64,
        segment_len: u64,
    },
}
