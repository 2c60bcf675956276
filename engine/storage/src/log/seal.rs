//! A roll's background work: sealing the segment it rolled away from, and making the new
//! segment's name durable, after the append lock is released.
//!
//! Under the append lock a roll only creates the next segment's file (or renames a spare into
//! place, durably) and puts its appender in place, so the appends queued behind the roll go
//! on into the new segment at once. The rest runs in tasks of the log's core:
//!
//! ```text
//! roll (under the lock)        background                              who waits for it
//! ---------------------        ----------                              ----------------
//! create next segment  ──┬──►  data:  fdatasync old segment to its end ─┐
//! push it, release lock  │                                              ├► durable_after of the
//!                        ├──►  name:  fsync the directory (new file) ───┘  next segment: its
//!                        │                                                 acknowledgements
//!                        └──►  seal:  after data, trim the old file,       truncate, retention,
//!                                     fdatasync, write both index files    close, reopen, a
//!                                                                          forced roll
//! ```
//!
//! **Durability contract.** An append into the new segment counts as durable (returns under
//! `Durability::Always`, or is covered by an interval or explicit sync) only once `data` and
//! `name` have both succeeded (the segment's `durable_after`): the old segment's bytes are
//! durable up to its end, and the new file's name is durable. Both orders matter to recovery:
//! it keeps a later segment only if the earlier one ends whole exactly where the later one
//! begins, and it never sees a file whose name was lost. The trim and the index files are not
//! needed for that: recovery treats a segment that ends whole at its successor's base offset
//! as complete whatever follows its last batch, and rebuilds missing index files.
//!
//! **Failures.** A failed `data`, trim or `name` makes the log *failed*
//! (`PartitionLog::is_failed`): appends waiting on it fail, later appends are refused with
//! `StorageError::Poisoned` naming the first error, and the way back is `reopen`, as for a
//! failed write of the active segment. A failed index file write only leaves the index
//! files missing, which loses nothing: the next append (or a forced roll, truncation or close)
//! writes them again first and is refused with the error while that fails, as a roll that
//! could not write them was before. The log is not failed by it.
//!
//! **Bounds.** At most [`SEALS_IN_FLIGHT_MAX`] seals run at once per log; a roll beyond that
//! waits, under the lock, for the oldest.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::{Rc, Weak};

use futures_util::future::{FutureExt, Shared};

use crate::error::StorageError;
use crate::segment::{Background, Segment};
use crate::storage::Storage;

/// Most seals of one log running in the background at once. A log that rolls faster than
/// its seals finish (tiny segments, a slow disk) then waits for the oldest at its next roll.
pub const SEALS_IN_FLIGHT_MAX: usize = 2;

/// How a background seal ended.
#[derive(Clone, Debug)]
pub(super) enum SealOutcome {
    /// Durable, trimmed, sealed, both index files written.
    Sealed,
    /// The segment's file could not be made durable or trimmed: the log is failed.
    FileFailed,
    /// The file is sealed but its index files could not be written (a full disk, say).
    IndexesFailed(StorageError),
}

type SharedOutcome = Shared<Pin<Box<dyn std::future::Future<Output = SealOutcome>>>>;

/// The background seal of one segment. Cheap to clone.
#[derive(Clone)]
pub(super) struct PendingSeal {
    /// Which segment (its base offset).
    pub base_offset: i64,
    /// The whole seal; resolves after `data`.
    pub done: SharedOutcome,
}

impl PendingSeal {
    /// The outcome, if the seal has finished. (`Shared::peek` alone would not do: it sees
    /// the result only once something has polled the shared future, and nobody may have.)
    pub fn outcome(&self) -> Option<SealOutcome> {
        self.done.clone().now_or_never()
    }
}

/// The first failure of a roll's background work that fails the log, shared by the log and
/// the tasks (which hold no reference to the log itself).
#[derive(Default)]
pub(super) struct Failure {
    first: RefCell<Option<StorageError>>,
}

impl Failure {
    /// Keeps the first failure, as [`StorageError::Poisoned`] naming `path`.
    fn record(&self, path: &Path, error: StorageError) {
        let mut first = self.first.borrow_mut();
        if first.is_some() {
            return;
        }
        *first = Some(match error {
            poisoned @ StorageError::Poisoned { .. } => poisoned,
            other => StorageError::Poisoned {
                path: path.to_path_buf(),
                first: Box::new(other),
            },
        });
    }

    pub fn error(&self) -> Option<StorageError> {
        self.first.borrow().clone()
    }
}

/// Starts sealing `segment` (the active segment a roll is leaving; it takes no more appends)
/// in the background. Returns the seal, and what the next segment's durability depends on:
/// the old segment's last bytes, durable.
pub(super) fn start_seal(
    storage: &Storage,
    segment: &Rc<Segment>,
    failure: &Rc<Failure>,
) -> (PendingSeal, Background) {
    let file = segment.file();
    let path = segment.paths().log.clone();
    let data: Background = {
        let (file, path, failure) = (file.clone(), path.clone(), Rc::clone(failure));
        spawn(async move {
            // A spawned task runs at once up to its first await, and the roll is still
            // borrowing the log's state: yield first.
            futures_lite::future::yield_now().await;
            let synced = file.sync().await;
            if let Err(error) = &synced {
                failure.record(&path, error.clone());
            }
            synced
        })
    };
    let done: SharedOutcome = {
        let data = data.clone();
        let storage = storage.clone();
        let weak: Weak<Segment> = Rc::downgrade(segment);
        let failure = Rc::clone(failure);
        glommio::spawn_local(async move {
            if data.await.is_err() {
                return SealOutcome::FileFailed;
            }
            // Everything is durable now, so this only trims the file and marks it sealed.
            if let Err(error) = file.seal().await {
                failure.record(&path, error);
                return SealOutcome::FileFailed;
            }
            drop(file);
            // A segment the log dropped meanwhile needs no index files.
            let Some(segment) = weak.upgrade() else {
                return SealOutcome::Sealed;
            };
            match segment.write_indexes(&storage).await {
                Ok(()) => SealOutcome::Sealed,
                Err(error) => SealOutcome::IndexesFailed(error),
            }
        })
        .boxed_local()
        .shared()
    };
    let pending = PendingSeal {
        base_offset: segment.base_offset(),
        done,
    };
    (pending, data)
}

/// Syncs `dir` in the background, so a new segment file's name becomes durable; a failure
/// fails the log.
pub(super) fn sync_name(storage: &Storage, dir: &Path, failure: &Rc<Failure>) -> Background {
    let (storage, dir): (Storage, PathBuf) = (storage.clone(), dir.to_path_buf());
    let failure = Rc::clone(failure);
    spawn(async move {
        let synced = storage.sync_dir_off_thread(&dir).await;
        if let Err(error) = &synced {
            failure.record(&dir, error.clone());
        }
        synced
    })
}

/// Both `first` and `second`, in that order (they run on their own already).
pub(super) fn both(first: Background, second: Background) -> Background {
    async move {
        first.await?;
        second.await
    }
    .boxed_local()
    .shared()
}

fn spawn(
    work: impl std::future::Future<Output = Result<(), StorageError>> + 'static,
) -> Background {
    glommio::spawn_local(work).boxed_local().shared()
}
