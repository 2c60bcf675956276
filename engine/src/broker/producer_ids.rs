//! Producer ids for idempotent producers: unique across brokers and restarts, reserved in
//! blocks so that handing one out needs no disk write.
//!
//! An id is `node_id << COUNTER_BITS | counter`: each broker counts its own, so brokers need
//! no consensus to stay apart. The file `producer-ids` in the data directory holds the first
//! counter not yet reserved (text, one decimal number). While the reserved block lasts,
//! [`ProducerIds::allocate`] only takes the next counter. When the block runs out, one atomic
//! write (write, fdatasync, rename, fsync the directory) reserves the next
//! [`PRODUCER_ID_BLOCK`] counters, before any of them is handed out.
//!
//! **Durability.** An id is returned only once the file covers it durably, so a restart never
//! hands it out again. Counters reserved but not handed out before a restart are skipped,
//! never reused (Kafka's controller hands producer ids to brokers in blocks of 1000 the same
//! way). The file only grows: a reservation writes a larger number than any written before.
//!
//! **Concurrency.** Every core may call `allocate` at once; a `Mutex` guards the counters and
//! is never held across an `.await`. The write that reserves a block runs through the
//! storage's async small-file API (off the executor's thread), in a task of the calling core,
//! one at a time for the whole broker; callers that run out meanwhile, on any core, wait for
//! it without blocking their executor. The task finishes even if its caller stops waiting, so
//! two writes of the file never overlap.
//!
//! **Bounds.** The file is read with a limit of [`FILE_BYTES_MAX`]; a counter past
//! `2^COUNTER_BITS` refuses further ids; at most one reservation is in flight.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::Event;

use crate::error::StorageError;
use crate::storage::Storage;

/// Bits of the per-broker counter; the broker id sits above them.
pub const COUNTER_BITS: u32 = 32;
/// Counters reserved by one write of the file.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// The file holds one decimal number; anything longer is not ours.
const FILE_BYTES_MAX: u64 = 64;
/// The first counter past the ones a broker owns.
const COUNTER_END: i64 = 1 << COUNTER_BITS;

/// Why producer ids cannot be handed out.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path} does not hold a counter: {text:?}")]
    Corrupt { path: PathBuf, text: String },
    #[error("this broker has handed out every producer id it owns")]
    Exhausted,
    /// The core stopped while the file was being written: nothing was reserved.
    #[error("the core stopped while reserving producer ids")]
    Cancelled,
}

/// The counters this broker may hand out without writing: `[next, reserved_end)`.
struct Reserved {
    next: i64,
    reserved_end: i64,
    /// A reservation's write is in flight.
    writing: bool,
}

/// What the counters and the file share with the task that writes the file.
struct Counters {
    path: PathBuf,
    reserved: Mutex<Reserved>,
    /// Notified whenever a reservation's write ends, well or not.
    write_ended: Event,
}

impl Counters {
    fn lock(&self) -> MutexGuard<'_, Reserved> {
        self.reserved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Ends a reservation's write when dropped, even if its task was cancelled: the counters
/// then cover `reserved_end` only if the write succeeded, and the waiters wake up.
struct WriteEnd {
    counters: Arc<Counters>,
    reserved_end: i64,
    succeeded: bool,
}

impl WriteEnd {
    /// Whether the write succeeded, for the end to apply when it is dropped.
    fn record(&mut self, succeeded: bool) {
        self.succeeded = succeeded;
    }
}

impl Drop for WriteEnd {
    fn drop(&mut self) {
        {
            let mut reserved = self.counters.lock();
            reserved.writing = false;
            if self.succeeded {
                reserved.reserved_end = reserved.reserved_end.max(self.reserved_end);
            }
        }
        self.counters.write_ended.notify(usize::MAX);
    }
}

/// What `allocate` does next, decided under the mutex.
enum Step {
    /// Wait for the reservation in flight to end (the listener was made under the mutex, so
    /// the end cannot be missed).
    Wait(event_listener::EventListener),
    /// Reserve counters up to this end; this caller writes the file.
    Reserve(i64),
}

/// One broker's producer ids. `Send + Sync`; the file is written through the [`Storage`]
/// each call is given (the broker's is `Storage::Buffered`; tests give the simulated disk).
pub struct ProducerIds {
    node_id: i32,
    counters: Arc<Counters>,
}

impl ProducerIds {
    /// Opens the counter file at `path` (a missing file starts at 0). Nothing is reserved
    /// until the first [`allocate`](Self::allocate). Blocking on the real strategies: the
    /// broker calls it before its executors start.
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
            node_id,
            counters: Arc::new(Counters {
                path,
                reserved: Mutex::new(Reserved {
                    next: first_unreserved,
                    reserved_end: first_unreserved,
                    writing: false,
                }),
                write_ended: Event::new(),
            }),
        })
    }

    /// A producer id never handed out before by any broker, even across restarts. Resolves
    /// at once while the reserved block lasts; otherwise after one durable write of the file
    /// (this call's, or the one already in flight). Must run on a glommio executor.
    pub async fn allocate(&self, storage: &Storage) -> Result<i64, ProducerIdError> {
        loop {
            let step = {
                let mut reserved = self.counters.lock();
                let counter = reserved.next;
                if counter >= COUNTER_END {
                    return Err(ProducerIdError::Exhausted);
                }
                if counter < reserved.reserved_end {
                    reserved.next = counter + 1;
                    return Ok((i64::from(self.node_id) << COUNTER_BITS) | counter);
                }
                if reserved.writing {
                    Step::Wait(self.counters.write_ended.listen())
                } else {
                    reserved.writing = true;
                    Step::Reserve((counter + PRODUCER_ID_BLOCK).min(COUNTER_END))
                }
            };
            match step {
                Step::Wait(listener) => listener.await,
                Step::Reserve(reserved_end) => self.reserve(storage, reserved_end).await?,
            }
        }
    }

    /// Writes `reserved_end` to the file in a task of this core that ends the write (see
    /// [`WriteEnd`]) however it finishes, and returns its error, if any.
    async fn reserve(&self, storage: &Storage, reserved_end: i64) -> Result<(), ProducerIdError> {
        let mut end = WriteEnd {
            counters: Arc::clone(&self.counters),
            reserved_end,
            succeeded: false,
        };
        let storage = storage.clone();
        let written = glommio::spawn_local(async move {
            let path = end.counters.path.clone();
            let written = storage
                .write_file_atomic_off_thread(&path, reserved_end.to_string().into_bytes())
                .await;
            end.record(written.is_ok());
            written
        })
        .detach()
        .await;
        match written {
            Some(written) => Ok(written?),
            None => Err(ProducerIdError::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;
    use std::rc::Rc;

    use super::*;
    use crate::storage::{SimDisk, SimOp};

    const FILE: &str = "/data/producer-ids";

    fn stored(disk: &SimDisk) -> String {
        let bytes = disk.read_whole(Path::new(FILE), FILE_BYTES_MAX).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        crate::runtime::run_local(crate::runtime::IO_MEMORY_BYTES_DEFAULT, future)
    }

    #[test]
    fn one_write_reserves_a_block_and_a_restart_starts_after_it() {
        run(async {
            let disk = SimDisk::new(1);
            let storage = Storage::Sim(disk.clone());
            let ids = ProducerIds::open(&storage, FILE.into(), 3).unwrap();
            let mut seen = HashSet::new();
            for _ in 0..PRODUCER_ID_BLOCK {
                assert!(seen.insert(ids.allocate(&storage).await.unwrap()));
            }
            assert_eq!(stored(&disk), PRODUCER_ID_BLOCK.to_string());
            assert!(seen.insert(ids.allocate(&storage).await.unwrap()));
            assert_eq!(stored(&disk), (2 * PRODUCER_ID_BLOCK).to_string());

            let reopened = ProducerIds::open(&storage, FILE.into(), 3).unwrap();
            let after = reopened.allocate(&storage).await.unwrap();
            assert_eq!(after, (3 << COUNTER_BITS) | (2 * PRODUCER_ID_BLOCK));
            assert!(seen.iter().all(|&id| id < after && id >> COUNTER_BITS == 3));
        });
    }

    #[test]
    fn a_failed_reservation_hands_out_nothing_and_a_retry_works() {
        run(async {
            let disk = SimDisk::new(2);
            let storage = Storage::Sim(disk.clone());
            let ids = ProducerIds::open(&storage, FILE.into(), 1).unwrap();
            disk.fail_writes(true);
            assert!(matches!(
                ids.allocate(&storage).await,
                Err(ProducerIdError::Storage(_))
            ));
            disk.fail_writes(false);
            assert_eq!(ids.allocate(&storage).await.unwrap(), 1 << COUNTER_BITS);
        });
    }

    /// The reservation's write is durable before an id it covers is handed out: while its
    /// fdatasync is held, every caller waits (none blocks the executor: the test itself
    /// goes on), and a crash then leaves a file that covers no id handed out.
    #[test]
    fn callers_wait_for_the_reservation_without_blocking_and_a_crash_loses_no_id() {
        run(async {
            let disk = SimDisk::new(4);
            let storage = Storage::Sim(disk.clone());
            let ids = Rc::new(ProducerIds::open(&storage, FILE.into(), 2).unwrap());
            for _ in 0..PRODUCER_ID_BLOCK {
                ids.allocate(&storage).await.unwrap();
            }
            disk.stall_syncs(Path::new(FILE), true);
            let answered = Rc::new(std::cell::Cell::new(0));
            let waiting: Vec<_> = (0..3)
                .map(|_| {
                    let (ids, storage) = (Rc::clone(&ids), storage.clone());
                    let answered = Rc::clone(&answered);
                    glommio::spawn_local(async move {
                        let id = ids.allocate(&storage).await;
                        answered.set(answered.get() + 1);
                        id
                    })
                })
                .collect();
            for _ in 0..20 {
                futures_lite::future::yield_now().await;
            }
            assert_eq!(
                stored(&disk),
                PRODUCER_ID_BLOCK.to_string(),
                "not yet durable"
            );
            assert_eq!(answered.get(), 0, "no id before the block is durable");
            disk.stall_syncs(Path::new(FILE), false);
            let mut handed_out = HashSet::new();
            for task in waiting {
                assert!(handed_out.insert(task.await.unwrap()));
            }
            assert_eq!(stored(&disk), (2 * PRODUCER_ID_BLOCK).to_string());

            disk.crash();
            let reopened = ProducerIds::open(&storage, FILE.into(), 2).unwrap();
            let after = reopened.allocate(&storage).await.unwrap();
            assert!(handed_out.iter().all(|&id| id < after));
        });
    }

    /// A failed fdatasync of the reservation is reported, and the file keeps the old block.
    #[test]
    fn a_failed_sync_reserves_nothing() {
        run(async {
            let disk = SimDisk::new(5);
            let storage = Storage::Sim(disk.clone());
            let ids = ProducerIds::open(&storage, FILE.into(), 1).unwrap();
            for _ in 0..PRODUCER_ID_BLOCK {
                ids.allocate(&storage).await.unwrap();
            }
            disk.fail_with(SimOp::Sync, Some(crate::storage::SimFault::Io));
            assert!(matches!(
                ids.allocate(&storage).await,
                Err(ProducerIdError::Storage(_))
            ));
            disk.fail_with(SimOp::Sync, None);
            disk.crash();
            assert_eq!(stored(&disk), PRODUCER_ID_BLOCK.to_string());
            assert_eq!(
                ids.allocate(&storage).await.unwrap(),
                (1 << COUNTER_BITS) | PRODUCER_ID_BLOCK
            );
        });
    }

    #[test]
    fn a_file_that_is_not_a_counter_is_refused() {
        let disk = SimDisk::new(3);
        disk.write_whole(Path::new(FILE), b"twelve").unwrap();
        let opened = ProducerIds::open(&Storage::Sim(disk), FILE.into(), 1);
        assert!(matches!(opened, Err(ProducerIdError::Corrupt { .. })));
    }
}
