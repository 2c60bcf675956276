//! Why work on a partition was refused or failed: opening it ([`PartitionError`]), and the
//! four calls answered on its owner core, each with its own error: produce
//! ([`ProduceError`]), fetch ([`FetchError`]), ListOffsets ([`ListOffsetsError`]) and
//! OffsetForLeaderEpoch ([`EpochEndError`]).
//!
//! Each says what went wrong and wraps the error of the layer it came from (the log's
//! `LogError`, the replica rules' `LeaderRefusal`, `ProduceRefusal` and `AdmissionRefusal`)
//! rather than a Kafka code: the code each becomes is `broker::api::codes`'s.
//!
//! The partition a call names is the caller's: these errors do not repeat the topic's name,
//! so a refusal costs no allocation. Layer errors that are large (the log's, and opening the
//! partition's) are boxed, so an answer stays within a cache line on the produce and fetch
//! paths, where it crosses cores; those errors allocate anyway, and are rare.

use crate::batch::BatchError;
use crate::broker::chunks::Records;
use crate::cluster::admission::AdmissionRefusal;
use crate::cluster::leader::ProduceRefusal;
use crate::cluster::replica::LeaderRefusal;
use crate::error::{LogError, StorageError};

/// Why a partition cannot be opened on its owner core.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    /// The topic has no such partition.
    #[error("topic {topic} has no partition {partition}")]
    Unknown { topic: String, partition: i32 },
    /// The partition's queue of openers was closed under a waiting request (shutdown).
    #[error("{topic}-{partition} closed while the request waited to open it")]
    Closed { topic: String, partition: i32 },
    /// The log could not be opened or recovered, or its producers' state not rebuilt.
    /// (Boxed: the log's error is large, and this one is returned on every request path.)
    #[error("cannot open {topic}-{partition}: {source}")]
    Log {
        topic: String,
        partition: i32,
        source: Box<LogError>,
    },
    /// The leader-epoch checkpoint could not be cut back to the recovered log end.
    #[error("cannot trim the leader epochs of {topic}-{partition}: {source}")]
    Epochs {
        topic: String,
        partition: i32,
        source: StorageError,
    },
}

/// Why a produce to one partition was refused, or did not complete.
///
/// `Clone` because the internal-topic stores keep it as the source of their own errors,
/// which answer every request that waited on them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    /// The partition cannot be opened here. (Boxed: see the module's doc.)
    #[error(transparent)]
    Partition(Box<PartitionError>),
    /// Nothing was appended: this broker does not lead the partition, or an acks=all
    /// produce found fewer in-sync replicas than the minimum.
    #[error("produce refused: {0}")]
    Refused(#[from] ProduceRefusal),
    /// A batch of the request is malformed; nothing of the request was appended.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The request carried no batch at all.
    #[error("the records hold no batch")]
    NoBatches,
    /// A batch was refused under the append lock (leadership moved while the request
    /// waited, or the idempotent producer's sequence or epoch does not follow); the batches
    /// before it in the request were appended.
    #[error("batch of producer {producer_id} at sequence {base_sequence} refused: {refusal}")]
    Admission {
        refusal: AdmissionRefusal,
        producer_id: i64,
        base_sequence: i32,
    },
    /// The log declined a batch its admission check had let through. A bug, reported to the
    /// client as a server error rather than panicking the core.
    #[error("the log declined an admitted batch")]
    AppendDeclined,
    /// The log could not append a batch. (Boxed: the log's error is large.)
    #[error("append failed: {0}")]
    Append(Box<LogError>),
    /// acks=all: the batches were appended, but the in-sync replicas did not all take them
    /// while this broker led at the request's epoch, within the request's timeout.
    #[error(transparent)]
    Replication(#[from] AwaitError),
    /// The core that owns the partition did not answer (the broker is stopping).
    #[error("the partition's core dropped the produce")]
    CallDropped,
}

impl From<LogError> for ProduceError {
    fn from(error: LogError) -> ProduceError {
        ProduceError::Append(Box::new(error))
    }
}

/// Why an `acks=all` produce was not answered with success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AwaitError {
    /// Leadership moved, or the ISR shrank below the minimum, before the records were
    /// replicated.
    #[error("not replicated: {0}")]
    Refused(ProduceRefusal),
    /// The request's timeout passed first (or the broker is shutting down).
    #[error("not replicated within the request's timeout")]
    TimedOut,
}

/// Why a fetch from one partition answered no records, or fewer than it read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The partition cannot be opened here. (Boxed: see the module's doc.)
    #[error(transparent)]
    Partition(Box<PartitionError>),
    /// This broker does not lead the partition, or the reader's leader epoch is not its own.
    #[error("fetch refused: {0}")]
    Refused(#[from] LeaderRefusal),
    /// The offset is outside what the reader may read. The partition's offsets go back with
    /// the refusal, so a consumer can reset.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
        high_watermark: i64,
    },
    /// Reading the log failed part way. (Boxed: it holds the log's error and the records
    /// read before it, and a fetch seldom fails.)
    #[error(transparent)]
    Read(Box<ReadFailure>),
    /// The core that owns the partition did not answer (the broker is stopping).
    #[error("the partition's core dropped the fetch")]
    CallDropped,
}

/// A read of the log that failed after it had found the partition's offsets and, perhaps,
/// some records: these are answered together with the error, as they were read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read the log after {} bytes: {source}", records.len())]
pub struct ReadFailure {
    pub source: LogError,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Records,
}

impl FetchError {
    /// The partition's high watermark and log start offset, when the fetch got far enough
    /// to learn them.
    pub fn offsets(&self) -> Option<(i64, i64)> {
        match self {
            FetchError::OffsetOutOfRange {
                high_watermark,
                log_start_offset,
                ..
            } => Some((*high_watermark, *log_start_offset)),
            FetchError::Read(failure) => Some((failure.high_watermark, failure.log_start_offset)),
            FetchError::Partition(_) | FetchError::Refused(_) | FetchError::CallDropped => None,
        }
    }

    /// The records read before the error (none for a refusal).
    pub fn into_records(self) -> Records {
        match self {
            FetchError::Read(failure) => failure.records,
            _ => Records::default(),
        }
    }
}

/// Why ListOffsets found no offset for one partition.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListOffsetsError {
    /// The partition cannot be opened here. (Boxed: see the module's doc.)
    #[error(transparent)]
    Partition(Box<PartitionError>),
    /// This broker does not lead the partition.
    #[error("list offsets refused: {0}")]
    Refused(#[from] LeaderRefusal),
    /// The time index could not be read. (Boxed: the log's error is large.)
    #[error("cannot search the log by timestamp: {0}")]
    Log(Box<LogError>),
    /// The core that owns the partition did not answer (the broker is stopping).
    #[error("the partition's core dropped the offsets call")]
    CallDropped,
}

impl From<LogError> for ListOffsetsError {
    fn from(error: LogError) -> ListOffsetsError {
        ListOffsetsError::Log(Box::new(error))
    }
}

/// Why OffsetForLeaderEpoch found no end for an epoch of one partition.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EpochEndError {
    /// The partition cannot be opened here. (Boxed: see the module's doc.)
    #[error(transparent)]
    Partition(Box<PartitionError>),
    /// This broker does not lead the partition, or the asker's leader epoch is not its own.
    #[error("epoch end refused: {0}")]
    Refused(#[from] LeaderRefusal),
    /// The core that owns the partition did not answer (the broker is stopping).
    #[error("the partition's core dropped the epoch call")]
    CallDropped,
}

impl From<PartitionError> for ProduceError {
    fn from(error: PartitionError) -> ProduceError {
        ProduceError::Partition(Box::new(error))
    }
}

impl From<PartitionError> for FetchError {
    fn from(error: PartitionError) -> FetchError {
        FetchError::Partition(Box::new(error))
    }
}

impl From<PartitionError> for ListOffsetsError {
    fn from(error: PartitionError) -> ListOffsetsError {
        ListOffsetsError::Partition(Box::new(error))
    }
}

impl From<PartitionError> for EpochEndError {
    fn from(error: PartitionError) -> EpochEndError {
        EpochEndError::Partition(Box::new(error))
    }
}
