//! Producer ids for idempotent producers: unique across brokers and restarts, reserved in
//! blocks so that handing one out needs no disk write.
//!
//! An id is `node_id << COUNTER_BITS | counter`: each broker counts its own, so brokers need
//! no consensus to stay apart. The file `producer-ids` in the data directory holds the first
//! counter not yet reserved (text, one decimal number). While the reserved block lasts,
//! [`ProducerIds::allocate`] only takes the next counter. When the block runs out, one atomic
//! write (write, fsync, rename, fsync the directory) reserves the next [`PRODUCER_ID_BLOCK`]
//! counters, before any of them is handed out.
//!
//! **Durability.** An id is returned only once the file covers it, so a restart never hands it
//! out again. Counters reserved but not handed out before a restart are skipped, never reused
//! (Kafka's controller hands producer ids to brokers in blocks of 1000 the same way).
//!
//! **Concurrency.** Every core may call `allocate`; a `Mutex` guards the counter. The write
//! that reserves a block blocks the calling executor, once per `PRODUCER_ID_BLOCK` ids
//! (before, every InitProducerId waited for a write and two fsyncs).
//!
//! **Bounds.** The file is read with a limit of [`FILE_BYTES_MAX`]; a counter past
//! `2^COUNTER_BITS` refuses further ids.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::error::StorageError;
use crate::storage::Storage;

/// Bits of the per-broker counter; the broker id sits above them.
pub const COUNTER_BITS: u32 = 32;
/// Counters reserved by one write of the file.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// The file holds one decimal number; anything longer is not ours.
const FILE_BYTES_MAX: u64 = 64;

/// Why producer ids cannot be handed out.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path} does not hold a counter: {text:?}")]
    Corrupt { path: PathBuf, text: String },
    #[error("this broker has handed out every producer id it owns")]
    Exhausted,
}

/// The counters this broker may hand out without writing: `[next, reserved_end)`.
struct Reserved {
    next: i64,
    reserved_end: i64,
}

/// One broker's producer ids. `Send + Sync`; the file is written through the [`Storage`]
/// each call is given (the broker's is `Storage::Buffered`; tests give the simulated disk).
pub struct ProducerIds {
    path: PathBuf,
    node_id: i32,
    reserved: Mutex<Reserved>,
}

impl ProducerIds {
    /// Opens the counter file at `path` (a missing file starts at 0). Nothing is reserved
    /// until the first [`allocate`](Self::allocate).
    pub fn open(storage: &Storage, path: PathBuf, node_id: i32) -> Result<Self, ProducerIdError> {
        let first_unreserved = match storage.read_file(&path, FILE_BYTES_MAX)? {
            None => 0,
            Some(bytes) => {
                let text = String::from_utf8_lossy(&bytes).trim().to_string();
                match text.parse::<i64>() {
                    Ok(counter) if counter >= 0 => counter,
                    _ => return Err(ProducerIdError::Corrupt { path, text }),
                }
            }
        };
        Ok(ProducerIds {
            path,
            node_id,
            reserved: Mutex::new(Reserved {
                next: first_unreserved,
                reserved_end: first_unreserved,
            }),
        })
    }

    /// A producer id never handed out before by any broker, even across restarts.
    pub fn allocate(&self, storage: &Storage) -> Result<i64, ProducerIdError> {
        let mut reserved = self
            .reserved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counter = reserved.next;
        if counter >= 1 << COUNTER_BITS {
            return Err(ProducerIdError::Exhausted);
        }
        if counter >= reserved.reserved_end {
            let reserved_end = (counter + PRODUCER_ID_BLOCK).min(1 << COUNTER_BITS);
            storage.write_file_atomic(&self.path, reserved_end.to_string().as_bytes())?;
            reserved.reserved_end = reserved_end;
        }
        reserved.next = counter + 1;
        Ok((i64::from(self.node_id) << COUNTER_BITS) | counter)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;

    use super::*;
    use crate::storage::SimDisk;

    const FILE: &str = "/data/producer-ids";

    fn stored(disk: &SimDisk) -> String {
        let bytes = disk.read_whole(Path::new(FILE), FILE_BYTES_MAX).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn one_write_reserves_a_block_and_a_restart_starts_after_it() {
        let disk = SimDisk::new(1);
        let storage = Storage::Sim(disk.clone());
        let ids = ProducerIds::open(&storage, FILE.into(), 3).unwrap();
        let mut seen = HashSet::new();
        for _ in 0..PRODUCER_ID_BLOCK {
            assert!(seen.insert(ids.allocate(&storage).unwrap()));
        }
        assert_eq!(stored(&disk), PRODUCER_ID_BLOCK.to_string());
        assert!(seen.insert(ids.allocate(&storage).unwrap()));
        assert_eq!(stored(&disk), (2 * PRODUCER_ID_BLOCK).to_string());

        let reopened = ProducerIds::open(&storage, FILE.into(), 3).unwrap();
        let after = reopened.allocate(&storage).unwrap();
        assert_eq!(after, (3 << COUNTER_BITS) | (2 * PRODUCER_ID_BLOCK));
        assert!(seen.iter().all(|&id| id < after && id >> COUNTER_BITS == 3));
    }

    #[test]
    fn a_failed_reservation_hands_out_nothing_and_a_retry_works() {
        let disk = SimDisk::new(2);
        let storage = Storage::Sim(disk.clone());
        let ids = ProducerIds::open(&storage, FILE.into(), 1).unwrap();
        disk.fail_writes(true);
        assert!(matches!(
            ids.allocate(&storage),
            Err(ProducerIdError::Storage(_))
        ));
        disk.fail_writes(false);
        assert_eq!(ids.allocate(&storage).unwrap(), 1 << COUNTER_BITS);
    }

    #[test]
    fn a_file_that_is_not_a_counter_is_refused() {
        let disk = SimDisk::new(3);
        disk.write_whole(Path::new(FILE), b"twelve").unwrap();
        let opened = ProducerIds::open(&Storage::Sim(disk), FILE.into(), 1);
        assert!(matches!(opened, Err(ProducerIdError::Corrupt { .. })));
    }
}
