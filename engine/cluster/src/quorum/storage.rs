//! The quorum's durable raft state: log entries, hard state, conf state and the latest
//! snapshot, in one append-only file `<data_dir>/metadata/raft.log` (layout in [`record`]).
//!
//! Two halves, so the file I/O can run off the executor thread:
//! - [`QuorumStorage`] is the in-memory copy that raft reads through [`raft::Storage`]. Its
//!   changing methods update memory and return the bytes that make the change durable.
//! - [`LogFile`] owns the file (`Send`). [`LogFile::append`] returns once the bytes are
//!   written and `fdatasync`ed; [`LogFile::rewrite`] atomically replaces the whole file (write
//!   a temporary file, `fdatasync`, rename, `fsync` the directory).
//!
//! Durability contract: raft's entries and hard state of a `Ready` are appended and synced
//! before the messages that depend on them are sent. A snapshot (installed from the leader, or
//! taken locally to compact the log) rewrites the file as snapshot + conf state + hard state +
//! the entries after the snapshot, in one rename, so no crash leaves a snapshot beside entries
//! it replaced.
//!
//! Recovery replays the records in order: a snapshot record resets the log to it, an entry
//! whose index is at or below the last one replaces the suffix from there (raft overwrote
//! an uncommitted tail), and the last hard state and conf state win. A torn tail is cut off
//! the file.
//!
//! [`record`]: super::record

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

use super::record::{self, RecordKind, MAGIC};

/// The log file's name inside the metadata directory.
pub const LOG_FILE_NAME: &str = "raft.log";
/// The largest log file read at start; compaction keeps the log far below it.
pub const LOG_FILE_BYTES_MAX: u64 = 1 << 30;

/// Why the quorum's storage cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QuorumStorageError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt at offset {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: usize,
        what: String,
    },
    #[error("{path} is {bytes} bytes, above the {LOG_FILE_BYTES_MAX} byte limit")]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error(
        "the persisted voters {persisted:?} differ from the configured {configured:?} \
         (changing the quorum's members is not supported)"
    )]
    VotersChanged {
        persisted: Vec<u64>,
        configured: Vec<u64>,
    },
}

impl QuorumStorageError {
    /// Whether the file system was full (ENOSPC, EDQUOT): the write can succeed once space
    /// is freed, unlike an I/O error after which the file's state is unknown.
    pub fn is_no_space(&self) -> bool {
        match self {
            QuorumStorageError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }
}

fn io_error(
    operation: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> QuorumStorageError {
    let path = path.to_path_buf();
    move |source| QuorumStorageError::Io {
        operation,
        path,
        source,
    }
}

/// Raft's view of the persisted state, kept in memory. Owned by the raft node (one core).
#[derive(Debug, Default)]
pub struct QuorumStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot; index 0 means none. Entries start right after it.
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
}

/// What opening found.
pub struct Opened {
    pub storage: QuorumStorage,
    pub log: LogFile,
    /// Bytes cut off the end of the file as a torn tail (0 after a clean stop).
    pub cut_bytes: u64,
}

fn encode_message(message: &impl protobuf::Message) -> Vec<u8> {
    // Encoding an in-memory message cannot fail: rust-protobuf errors only on missing
    // required fields, and proto3 messages have none.
    message
        .write_to_bytes()
        .expect("a raft message encodes to protobuf")
}

impl QuorumStorage {
    /// The latest snapshot's index (0: none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// The entries in `(after, through]` that the log holds, in order.
    pub fn entries_between(&self, after: u64, through: u64) -> &[Entry] {
        let first = self.first_index();
        let start = after.saturating_add(1).max(first);
        let end = through.min(self.last_index());
        if start > end {
            return &[];
        }
        &self.entries[(start - first) as usize..=(end - first) as usize]
    }

    /// Appends `entries` (replacing any suffix from their first index), and encodes the records
    /// that make it durable into `out`.
    ///
    /// # Panics
    /// If the entries leave a gap after the log or start inside the snapshot: raft never
    /// hands out such entries.
    pub fn append(&mut self, entries: &[Entry], out: &mut Vec<u8>) {
        for entry in entries {
            self.push_entry(entry.clone())
                .unwrap_or_else(|why| panic!("raft appended entry {}: {why}", entry.index));
            record::encode(RecordKind::Entry, &encode_message(entry), out);
        }
    }

    fn push_entry(&mut self, entry: Entry) -> Result<(), &'static str> {
        let first = self.first_index();
        if entry.index < first {
            return Err("inside the snapshot");
        }
        if entry.index > self.last_index() + 1 {
            return Err("leaves a gap after the log");
        }
        self.entries.truncate((entry.index - first) as usize);
        self.entries.push(entry);
        Ok(())
    }

    /// Records a new hard state, encoding its record into `out`.
    pub fn set_hard_state(&mut self, hard_state: HardState, out: &mut Vec<u8>) {
        record::encode(RecordKind::HardState, &encode_message(&hard_state), out);
        self.hard_state = hard_state;
    }

    /// Records a commit index (from a `LightReady`), encoding the new hard state into `out`.
    pub fn set_commit(&mut self, commit: u64, out: &mut Vec<u8>) {
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = commit;
        self.set_hard_state(hard_state, out);
    }

    /// Replaces the log with a snapshot received from the leader, and returns the image of the
    /// whole file to write with [`LogFile::rewrite`].
    pub fn install_snapshot(&mut self, snapshot: Snapshot) -> Vec<u8> {
        let metadata = snapshot.get_metadata();
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.hard_state.commit = self.hard_state.commit.max(metadata.index);
        self.conf_state = metadata.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snapshot;
        self.file_image()
    }

    /// Takes `snapshot` (the applied state at an index the log holds) as the new base and
    /// drops the entries it covers. Returns the image of the whole file to write.
    ///
    /// # Panics
    /// If the snapshot's index is outside the log, or its term is not the entry's.
    pub fn compact(&mut self, snapshot: Snapshot) -> Vec<u8> {
        let index = snapshot.get_metadata().index;
        assert!(
            index >= self.snapshot_index() && index <= self.last_index(),
            "compacting to {index} outside the log ({}..={})",
            self.snapshot_index(),
            self.last_index()
        );
        let covered = (index - self.snapshot_index()) as usize;
        if covered > 0 {
            assert_eq!(
                self.entries[covered - 1].term,
                snapshot.get_metadata().term,
                "snapshot term"
            );
        }
        self.entries.drain(..covered);
        self.snapshot = snapshot;
        self.file_image()
    }

    /// The whole file as it should be now: magic, snapshot, conf state, hard state, entries.
    pub fn file_image(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        if self.snapshot_index() > 0 {
            record::encode(
                RecordKind::Snapshot,
                &encode_message(&self.snapshot),
                &mut bytes,
            );
        }
        record::encode(
            RecordKind::ConfState,
            &encode_message(&self.conf_state),
            &mut bytes,
        );
        record::encode(
            RecordKind::HardState,
            &encode_message(&self.hard_state),
            &mut bytes,
        );
        for entry in &self.entries {
            record::encode(RecordKind::Entry, &encode_message(entry), &mut bytes);
        }
        bytes
    }

    /// Opens (or creates) the log in `dir` for a quorum of `voters` (raft ids).
    pub fn open(dir: &Path, voters: &[u64]) -> Result<Opened, QuorumStorageError> {
        std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        let path = dir.join(LOG_FILE_NAME);
        let mut configured: Vec<u64> = voters.to_vec();
        configured.sort_unstable();
        let bytes = match read_bounded(&path)? {
            Some(bytes) => bytes,
            None => {
                let mut fresh = QuorumStorage::default();
                fresh.conf_state.set_voters(configured);
                let image = fresh.file_image();
                let mut log = LogFile {
                    dir: dir.to_path_buf(),
                    path,
                    file: None,
                };
                log.rewrite(&image)?;
                return Ok(Opened {
                    storage: fresh,
                    log,
                    cut_bytes: 0,
                });
            }
        };
        let (storage, valid_bytes) = QuorumStorage::replay(&path, &bytes)?;
        let mut persisted = storage.conf_state.get_voters().to_vec();
        persisted.sort_unstable();
        if persisted != configured {
            return Err(QuorumStorageError::VotersChanged {
                persisted,
                configured,
            });
        }
        let cut_bytes = (bytes.len() - valid_bytes) as u64;
        let file = File::options()
            .append(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        if cut_bytes > 0 {
            file.set_len(valid_bytes as u64)
                .map_err(io_error("truncate", &path))?;
            file.sync_all().map_err(io_error("fsync", &path))?;
        }
        Ok(Opened {
            storage,
            log: LogFile {
                dir: dir.to_path_buf(),
                path,
                file: Some(file),
            },
            cut_bytes,
        })
    }

    /// Rebuilds the state from a file's bytes; returns it and how many bytes are valid.
    fn replay(path: &Path, bytes: &[u8]) -> Result<(QuorumStorage, usize), QuorumStorageError> {
        let corrupt = |offset: usize, what: String| QuorumStorageError::Corrupt {
            path: path.to_path_buf(),
            offset,
            what,
        };
        let decoded = record::decode(bytes).map_err(|error| corrupt(0, error.to_string()))?;
        let mut storage = QuorumStorage::default();
        for item in &decoded.records {
            let undecodable = |error: protobuf::ProtobufError| {
                corrupt(item.offset, format!("{:?}: {error}", item.kind))
            };
            match item.kind {
                RecordKind::Entry => {
                    let entry = Entry::parse_from_bytes(item.payload).map_err(undecodable)?;
                    if entry.index <= storage.snapshot_index() {
                        continue; // covered by a snapshot installed after it was written
                    }
                    let index = entry.index;
                    storage
                        .push_entry(entry)
                        .map_err(|why| corrupt(item.offset, format!("entry {index} {why}")))?;
                }
                RecordKind::HardState => {
                    storage.hard_state =
                        HardState::parse_from_bytes(item.payload).map_err(undecodable)?;
                }
                RecordKind::ConfState => {
                    storage.conf_state =
                        ConfState::parse_from_bytes(item.payload).map_err(undecodable)?;
                }
                RecordKind::Snapshot => {
                    let snapshot = Snapshot::parse_from_bytes(item.payload).map_err(undecodable)?;
                    storage.install_snapshot(snapshot);
                }
            }
        }
        // The commit index can only name entries the log holds (a hard state is written after
        // the entries it commits) and never falls behind the snapshot.
        let commit = storage
            .hard_state
            .commit
            .clamp(storage.snapshot_index(), storage.last_index());
        if commit != storage.hard_state.commit {
            tracing::warn!(
                persisted = storage.hard_state.commit,
                commit,
                "quorum log: commit index outside the log; clamped"
            );
            storage.hard_state.commit = commit;
        }
        let valid_bytes = decoded
            .torn_tail
            .as_ref()
            .map_or(bytes.len(), |tail| tail.valid_bytes);
        if let Some(tail) = decoded.torn_tail {
            tracing::warn!(
                path = %path.display(),
                offset = tail.valid_bytes,
                cut_bytes = bytes.len() - tail.valid_bytes,
                reason = tail.reason,
                "quorum log: cutting a torn tail"
            );
        }
        Ok((storage, valid_bytes))
    }
}

fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, QuorumStorageError> {
    let bytes = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("stat", path)(error)),
    };
    if bytes > LOG_FILE_BYTES_MAX {
        return Err(QuorumStorageError::TooLarge {
            path: path.to_path_buf(),
            bytes,
        });
    }
    std::fs::read(path)
        .map(Some)
        .map_err(io_error("read", path))
}

impl raft::Storage for QuorumStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        let first = self.first_index();
        let mut entries = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let snapshot = self.snapshot.get_metadata();
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        if index < self.first_index() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if index > self.last_index() {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        Ok(self.entries[(index - self.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(QuorumStorage::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(QuorumStorage::last_index(self))
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

/// The log file. `Send`, so its blocking writes can run on a helper thread. Not shared: one
/// writer at a time.
pub struct LogFile {
    dir: PathBuf,
    path: PathBuf,
    /// Open for appending; `None` only until the first rewrite of a new log.
    file: Option<File>,
}

impl LogFile {
    /// Appends `bytes` (whole records) and returns once they are written and `fdatasync`ed.
    ///
    /// A full file system (ENOSPC) leaves the file as it was: whatever part of `bytes` was
    /// written is cut off again, so the same append can be retried once space is freed
    /// without leaving a torn record in the middle of the log.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), QuorumStorageError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = File::options()
                    .append(true)
                    .open(&self.path)
                    .map_err(io_error("open", &self.path))?;
                self.file.insert(file)
            }
        };
        let len = file.metadata().map_err(io_error("stat", &self.path))?.len();
        let written = file
            .write_all(bytes)
            .map_err(io_error("write", &self.path))
            .and_then(|()| file.sync_data().map_err(io_error("fdatasync", &self.path)));
        if let Err(error) = &written {
            if error.is_no_space() {
                file.set_len(len)
                    .map_err(io_error("ftruncate", &self.path))?;
            }
        }
        written
    }

    /// Replaces the whole file with `image`, atomically: after a crash the file is either the
    /// old one or the new one.
    pub fn rewrite(&mut self, image: &[u8]) -> Result<(), QuorumStorageError> {
        let temporary = self.path.with_extension("log.tmp");
        let mut file = File::create(&temporary).map_err(io_error("create", &temporary))?;
        let written = file
            .write_all(image)
            .map_err(io_error("write", &temporary))
            .and_then(|()| file.sync_data().map_err(io_error("fdatasync", &temporary)));
        drop(file);
        if let Err(error) = written {
            // The old file is untouched; give back the space the partial copy took.
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
        std::fs::rename(&temporary, &self.path).map_err(io_error("rename", &self.path))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("fsync", &self.dir))?;
        self.file = Some(
            File::options()
                .append(true)
                .open(&self.path)
                .map_err(io_error("open", &self.path))?,
        );
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    fn write(opened: &mut Opened, entries: &[Entry], hard: HardState) {
        let mut out = Vec::new();
        opened.storage.append(entries, &mut out);
        opened.storage.set_hard_state(hard, &mut out);
        opened.log.append(&out).expect("append");
    }

    #[test]
    fn entries_and_hard_state_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let mut opened = QuorumStorage::open(dir.path(), &[1, 2, 3]).expect("open");
        write(
            &mut opened,
            &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            hard_state(1, 2, 2),
        );
        // A new leader overwrote the uncommitted entry 3.
        write(&mut opened, &[entry(3, 2, b"c2")], hard_state(2, 3, 3));
        drop(opened);

        let reopened = QuorumStorage::open(dir.path(), &[3, 2, 1]).expect("reopen");
        assert_eq!(reopened.cut_bytes, 0);
        let storage = &reopened.storage;
        assert_eq!(*storage.hard_state(), hard_state(2, 3, 3));
        assert_eq!(storage.conf_state().get_voters(), &[1, 2, 3]);
        let entries = storage
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .expect("entries");
        let data: Vec<&[u8]> = entries.iter().map(|entry| &entry.data[..]).collect();
        assert_eq!(data, vec![b"a".as_slice(), b"b", b"c2"]);
        assert_eq!(storage.term(3).expect("term"), 2);
    }

    #[test]
    fn a_torn_tail_is_cut_and_later_appends_follow_the_good_records() {
        let dir = tempfile::tempdir().expect("dir");
        let mut opened = QuorumStorage::open(dir.path(), &[1]).expect("open");
        write(&mut opened, &[entry(1, 1, b"kept")], hard_state(1, 1, 1));
        let good_bytes = std::fs::metadata(opened.log.path()).expect("stat").len();
        write(&mut opened, &[entry(2, 1, b"torn")], hard_state(1, 1, 2));
        let path = opened.log.path().to_path_buf();
        drop(opened);
        // A crash in the middle of the second write: only part of it reached the disk.
        let file = File::options().write(true).open(&path).expect("open");
        file.set_len(good_bytes + 11).expect("tear");
        drop(file);

        let mut reopened = QuorumStorage::open(dir.path(), &[1]).expect("reopen");
        assert_eq!(reopened.cut_bytes, 11);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), good_bytes);
        assert_eq!(reopened.storage.last_index(), 1);
        assert_eq!(reopened.storage.hard_state().commit, 1);
        write(&mut reopened, &[entry(2, 1, b"again")], hard_state(1, 1, 2));
        drop(reopened);
        let again = QuorumStorage::open(dir.path(), &[1]).expect("again");
        assert_eq!(again.cut_bytes, 0);
        assert_eq!(&again.storage.entries_between(1, 2)[0].data[..], b"again");
    }

    #[test]
    fn compaction_keeps_the_snapshot_and_the_entries_after_it() {
        let dir = tempfile::tempdir().expect("dir");
        let mut opened = QuorumStorage::open(dir.path(), &[1]).expect("open");
        let entries: Vec<Entry> = (1..=10).map(|index| entry(index, 1, b"x")).collect();
        write(&mut opened, &entries, hard_state(1, 1, 10));
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 7;
        snapshot.mut_metadata().term = 1;
        snapshot
            .mut_metadata()
            .set_conf_state(opened.storage.conf_state().clone());
        snapshot.data = b"state at 7".to_vec().into();
        let image = opened.storage.compact(snapshot);
        opened.log.rewrite(&image).expect("rewrite");
        drop(opened);

        let reopened = QuorumStorage::open(dir.path(), &[1]).expect("reopen");
        let storage = &reopened.storage;
        assert_eq!(storage.snapshot_index(), 7);
        assert_eq!(&storage.snapshot().data[..], b"state at 7");
        assert_eq!(storage.first_index(), 8);
        assert_eq!(storage.last_index(), 10);
        assert_eq!(storage.term(7).expect("term"), 1);
        assert!(storage.term(6).is_err());
        assert_eq!(storage.hard_state().commit, 10);
    }

    #[test]
    fn other_voters_than_persisted_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        drop(QuorumStorage::open(dir.path(), &[1, 2, 3]).expect("open"));
        assert!(matches!(
            QuorumStorage::open(dir.path(), &[1, 2]),
            Err(QuorumStorageError::VotersChanged { .. })
        ));
    }
}
