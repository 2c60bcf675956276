//! Error types of the storage layers.
//!
//! The rule (see `docs/storage.md`): bugs assert, the environment returns errors, and corrupt
//! input is an `Err` that names the file, the position and what was expected.

use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::BatchError;

/// What went wrong below the partition log: the device, the file system, or injected faults.
///
/// `Clone` because one failed write is reported to every task waiting on it (group commit).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    /// The simulated disk failed an operation on purpose.
    #[error("injected {fault} on {path}")]
    Injected { fault: &'static str, path: PathBuf },
    /// An earlier write to this file failed; nothing more is accepted, because what is on the
    /// device after a failed write is unknown (the fsync-gate lesson: never retry and hope).
    #[error("{path} refuses writes after an earlier failure: {first}")]
    Poisoned {
        path: PathBuf,
        first: Box<StorageError>,
    },
    /// The file was sealed (rolled) and takes no more appends.
    #[error("{path} is sealed")]
    Sealed { path: PathBuf },
    /// A name that no strategy answers to.
    #[error("unknown storage strategy {name:?}: expected one of direct, buffered, uring, sim")]
    UnknownStrategy { name: String },
}

impl StorageError {
    /// Whether the device ran out of room (ENOSPC, or EDQUOT for a quota), here or in the
    /// first failure of a poisoned file. Space can come back, so such a failure is worth
    /// retrying later; other I/O errors usually are not.
    pub fn is_no_space(&self) -> bool {
        match self {
            // glommio's errors keep the kind but not always the raw number.
            StorageError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
                    || matches!(
                        source.kind(),
                        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                    )
            }
            StorageError::Poisoned { first, .. } => first.is_no_space(),
            _ => false,
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// What went wrong in a partition log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A producer's batch failed validation; nothing was appended.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The device has no room for an append: ENOSPC (or EDQUOT) from reserving its space,
    /// writing it, syncing it, or starting a new segment for it. Nothing of the append is
    /// acknowledged. When the reservation or a new segment failed, nothing was written and
    /// the log is unchanged: the next append tries again, and succeeds once space is freed.
    /// When a write or sync failed, the log is failed (`PartitionLog::is_failed`) until it is
    /// reopened.
    #[error("no space for log {dir}: {source}")]
    NoSpace { dir: PathBuf, source: StorageError },
    /// A batch larger than the segment size can never be stored.
    #[error("batch of {batch_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    BatchTooLarge {
        batch_bytes: usize,
        max_bytes: usize,
    },
    /// A read or truncation named an offset outside `[log start, log end]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// Bytes on disk that do not parse, found outside the recoverable tail.
    #[error("corrupt {path} at byte {position}: {what}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        what: &'static str,
    },
    /// The buffer holds more than the one batch its header describes.
    #[error("batch of {batch_bytes} bytes arrived in a buffer of {buffer_bytes} bytes")]
    TrailingBytes {
        batch_bytes: usize,
        buffer_bytes: usize,
    },
    /// A replicated batch does not start at the log end (a follower fetched the wrong place).
    #[error("replicated batch starts at offset {found}, the log ends at {expected}")]
    NotAtLogEnd { expected: i64, found: i64 },
    /// Settings that cannot work.
    #[error("invalid log configuration: {problem}")]
    InvalidConfig { problem: &'static str },
    /// The log was closed; no operation is accepted.
    #[error("log {dir} is closed")]
    Closed { dir: PathBuf },
}
