//! The quorum's durable raft state: log entries, hard state, conf state and the latest
//! snapshot, in one append-only file `<data_dir>/metadata/raft.log` (layout in [`record`]).
//!
//! Two halves:
//! - [`QuorumStorage`] is the in-memory copy that raft reads through [`raft::Storage`]. Its
//!   changing methods update memory and return the bytes that make the change durable.
//!   [`QuorumStorage::load`] reads the file back at start.
//! - [`LogFile`] owns the file, through the storage seam (`shardlog_storage::Storage`) like a
//!   partition's segments, so the `sim` strategy can tear, fail and crash it in tests.
//!   [`LogFile::append`] returns once the bytes are written and `fdatasync`ed;
//!   [`LogFile::rewrite`] atomically replaces the whole file (write a temporary file,
//!   `fdatasync`, rename, `fsync` the directory), off the executor's thread.
//!
//! The broker writes this log with the `buffered` strategy whatever its partitions use:
//! each append is a few hundred bytes followed by `fdatasync`, where O_DIRECT would rewrite
//! a whole 4 KiB page per append for nothing; the fdatasync runs through io_uring, so it does
//! not stop the core.
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

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};
use shardlog_storage::storage::{AppendConfig, SegmentFile};
use shardlog_storage::{Storage, StorageError};

use super::record::{self, RecordKind, MAGIC};

/// The log file's name inside the metadata directory.
pub const LOG_FILE_NAME: &str = "raft.log";
/// The largest log file read at start; compaction keeps the log far below it.
pub const LOG_FILE_BYTES_MAX: u64 = 1 << 30;

/// Why the quorum's storage cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QuorumStorageError {
    /// The device or the file system refused (a failed write or fsync, a full disk).
    #[error("quorum log: {0}")]
    Disk(#[from] StorageError),
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
            QuorumStorageError::Disk(error) => error.is_no_space(),
            _ => false,
        }
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

/// What loading the log found: raft's state, and where the file's records end.
pub struct Loaded {
    pub storage: QuorumStorage,
    /// Where appends continue; `None` for a new log (no file yet).
    records_end: Option<u64>,
    /// Bytes after the records that are a torn tail (0 after a clean stop), cut when the
    /// log is opened for writing.
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

    /// Reads the log in `dir` for a quorum of `voters` (raft ids) through `disk`, or starts a
    /// new one. The read is bounded by [`LOG_FILE_BYTES_MAX`] and is a blocking read on the
    /// real strategies: it runs once, at start. Nothing is written here; [`LogFile::open`]
    /// creates a new log's file or cuts a torn tail.
    pub fn load(disk: &Storage, dir: &Path, voters: &[u64]) -> Result<Loaded, QuorumStorageError> {
        disk.create_dir_all(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        let mut configured: Vec<u64> = voters.to_vec();
        configured.sort_unstable();
        let Some(bytes) = disk.read_file(&path, LOG_FILE_BYTES_MAX + 1)? else {
            let mut fresh = QuorumStorage::default();
            fresh.conf_state.set_voters(configured);
            return Ok(Loaded {
                storage: fresh,
                records_end: None,
                cut_bytes: 0,
            });
        };
        if bytes.len() as u64 > LOG_FILE_BYTES_MAX {
            return Err(QuorumStorageError::TooLarge {
                path,
                bytes: bytes.len() as u64,
            });
        }
        if bytes.len() < MAGIC.len() {
            // A crash while a new log's first write was under way: nothing in it was ever
            // acknowledged. Start again.
            tracing::warn!(path = %path.display(), "quorum log shorter than its header; started anew");
            let mut fresh = QuorumStorage::default();
            fresh.conf_state.set_voters(configured);
            return Ok(Loaded {
                storage: fresh,
                records_end: None,
                cut_bytes: bytes.len() as u64,
            });
        }
        let (storage, records_end, cut_bytes) = QuorumStorage::replay(&path, &bytes)?;
        let mut persisted = storage.conf_state.get_voters().to_vec();
        persisted.sort_unstable();
        if persisted != configured {
            return Err(QuorumStorageError::VotersChanged {
                persisted,
                configured,
            });
        }
        Ok(Loaded {
            storage,
            records_end: Some(records_end as u64),
            cut_bytes: cut_bytes as u64,
        })
    }

    /// Rebuilds the state from a file's bytes; returns it, where its records end, and how
    /// many bytes after them are a torn tail.
    fn replay(
        path: &Path,
        bytes: &[u8],
    ) -> Result<(QuorumStorage, usize, usize), QuorumStorageError> {
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
        let mut cut_bytes = 0;
        if let Some(tail) = decoded.torn_tail {
            cut_bytes = bytes.len() - tail.valid_bytes;
            tracing::warn!(
                path = %path.display(),
                offset = tail.valid_bytes,
                cut_bytes,
                reason = tail.reason,
                "quorum log: cutting a torn tail"
            );
        }
        Ok((storage, decoded.records_end, cut_bytes))
    }
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

/// How the log file is written: small buffers, nothing preallocated (it is rewritten whole
/// at each compaction).
fn append_config() -> AppendConfig {
    AppendConfig {
        chunk_bytes: 256 << 10,
        write_behind_max: 4,
        preallocate_step_bytes: 0,
        ..AppendConfig::default()
    }
}

/// The log file, open for appending. Lives on the core that drives raft (`!Send`, like every
/// file on the storage seam); one writer.
pub struct LogFile {
    disk: Storage,
    path: PathBuf,
    file: SegmentFile,
    /// Where the last append or rewrite that returned Ok ended.
    durable_end: u64,
}

impl LogFile {
    /// Opens what [`QuorumStorage::load`] found for appending: creates a new log's file
    /// (durably, before anything is acknowledged) or cuts a torn tail off an old one. Must
    /// run on a glommio executor.
    pub async fn open(
        disk: Storage,
        dir: &Path,
        loaded: &Loaded,
    ) -> Result<LogFile, QuorumStorageError> {
        let path = dir.join(LOG_FILE_NAME);
        let Some(records_end) = loaded.records_end else {
            let image = loaded.storage.file_image();
            disk.write_file_atomic_off_thread(&path, image.clone())
                .await?;
            let durable_end = image.len() as u64;
            let file = disk
                .open_segment_file(&path, durable_end, &append_config())
                .await?;
            return Ok(LogFile {
                disk,
                path,
                file,
                durable_end,
            });
        };
        let file = disk
            .open_segment_file(&path, records_end, &append_config())
            .await?;
        if loaded.cut_bytes > 0 {
            // Appends overwrite from `records_end` anyway; cutting makes sure no piece of
            // the torn record is left after a shorter new one.
            file.truncate(records_end).await?;
            file.sync().await?;
        }
        Ok(LogFile {
            disk,
            path,
            file,
            durable_end: records_end,
        })
    }

    /// Appends `bytes` (whole records) and returns once they are written and `fdatasync`ed.
    ///
    /// A full file system (ENOSPC) leaves the log as it was: the file is reopened at the end
    /// of the last append that returned Ok and whatever came after is cut off (now, or at
    /// the next call if the disk is still full), so the same append can be retried once
    /// space is freed without a torn record in the middle of the log. After any other error
    /// the log must not be written again (the driver stops): what reached the disk is found
    /// by the next start's replay, up to the first torn record.
    pub async fn append(&mut self, bytes: &[u8]) -> Result<(), QuorumStorageError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.file.is_failed() || self.file.len() != self.durable_end {
            self.cut_back().await?;
        }
        let written = self.append_and_sync(bytes).await;
        match written {
            Ok(()) => {
                self.durable_end = self.file.len();
                Ok(())
            }
            Err(error) => {
                if error.is_no_space() {
                    // Best effort now; the next append retries it first.
                    let _ = self.cut_back().await;
                }
                Err(error.into())
            }
        }
    }

    /// Reopens the file at the end of the last good append and cuts what follows.
    async fn cut_back(&mut self) -> Result<(), QuorumStorageError> {
        self.file.settle().await;
        let file = self
            .disk
            .open_segment_file(&self.path, self.durable_end, &append_config())
            .await?;
        file.truncate(self.durable_end).await?;
        file.sync().await?;
        self.file = file;
        Ok(())
    }

    async fn append_and_sync(&self, bytes: &[u8]) -> Result<(), StorageError> {
        self.file.append(bytes)?;
        self.file.wait_for_room().await?;
        self.file.sync().await
    }

    /// Replaces the whole file with `image`, atomically: after a crash the file is either the
    /// old one or the new one. The old file's handle is dropped; appends go to the new one.
    pub async fn rewrite(&mut self, image: Vec<u8>) -> Result<(), QuorumStorageError> {
        let len = image.len() as u64;
        self.disk
            .write_file_atomic_off_thread(&self.path, image)
            .await?;
        self.file = self
            .disk
            .open_segment_file(&self.path, len, &append_config())
            .await?;
        self.durable_end = len;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of records in the file (appended, whether or not yet durable).
    pub fn len(&self) -> u64 {
        self.file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.file.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;
    use shardlog_storage::runtime::{run_local, IO_MEMORY_BYTES_DEFAULT};
    use shardlog_storage::storage::SimDisk;
    use shardlog_storage::StrategyKind;

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

    /// Runs `case` once on each strategy the log can be written with: on a real directory
    /// with `buffered` and `direct`, and on a simulated disk.
    fn on_every_strategy<F, Fut>(case: F)
    where
        F: Fn(Storage, PathBuf) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        for kind in [
            StrategyKind::Buffered,
            StrategyKind::Direct,
            StrategyKind::Sim,
        ] {
            let temporary = tempfile::tempdir().expect("dir");
            let dir = temporary.path().join("metadata");
            run_local(IO_MEMORY_BYTES_DEFAULT, case(Storage::new(kind), dir));
        }
    }

    struct Opened {
        storage: QuorumStorage,
        log: LogFile,
        cut_bytes: u64,
    }

    async fn open(
        disk: &Storage,
        dir: &Path,
        voters: &[u64],
    ) -> Result<Opened, QuorumStorageError> {
        let loaded = QuorumStorage::load(disk, dir, voters)?;
        let log = LogFile::open(disk.clone(), dir, &loaded).await?;
        Ok(Opened {
            storage: loaded.storage,
            log,
            cut_bytes: loaded.cut_bytes,
        })
    }

    async fn write(
        opened: &mut Opened,
        entries: &[Entry],
        hard: HardState,
    ) -> Result<(), QuorumStorageError> {
        let mut out = Vec::new();
        opened.storage.append(entries, &mut out);
        opened.storage.set_hard_state(hard, &mut out);
        opened.log.append(&out).await
    }

    /// Cuts the file to `len` bytes behind the log's back (a crash in the middle of a write).
    fn tear(disk: &Storage, path: &Path, len: u64) {
        match disk {
            Storage::Sim(sim) => sim.cut(path, len),
            _ => std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|file| file.set_len(len))
                .expect("tear"),
        }
    }

    #[test]
    fn entries_and_hard_state_survive_a_reopen() {
        on_every_strategy(|disk, dir| async move {
            let mut opened = open(&disk, &dir, &[1, 2, 3]).await.expect("open");
            let first = [entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")];
            write(&mut opened, &first, hard_state(1, 2, 2))
                .await
                .expect("write");
            // A new leader overwrote the uncommitted entry 3.
            write(&mut opened, &[entry(3, 2, b"c2")], hard_state(2, 3, 3))
                .await
                .expect("write");
            drop(opened);

            let reopened = open(&disk, &dir, &[3, 2, 1]).await.expect("reopen");
            assert_eq!(reopened.cut_bytes, 0, "{}", disk.kind());
            let storage = &reopened.storage;
            assert_eq!(*storage.hard_state(), hard_state(2, 3, 3));
            assert_eq!(storage.conf_state().get_voters(), &[1, 2, 3]);
            let entries = storage
                .entries(1, 4, None, GetEntriesContext::empty(false))
                .expect("entries");
            let data: Vec<&[u8]> = entries.iter().map(|entry| &entry.data[..]).collect();
            assert_eq!(data, vec![b"a".as_slice(), b"b", b"c2"]);
            assert_eq!(storage.term(3).expect("term"), 2);
        });
    }

    #[test]
    fn a_torn_tail_is_cut_and_later_appends_follow_the_good_records() {
        on_every_strategy(|disk, dir| async move {
            let mut opened = open(&disk, &dir, &[1]).await.expect("open");
            write(&mut opened, &[entry(1, 1, b"kept")], hard_state(1, 1, 1))
                .await
                .expect("write");
            let good_bytes = opened.log.len();
            write(&mut opened, &[entry(2, 1, b"torn")], hard_state(1, 1, 2))
                .await
                .expect("write");
            let path = opened.log.path().to_path_buf();
            drop(opened);
            // A crash in the middle of the second write: only part of it reached the disk.
            tear(&disk, &path, good_bytes + 11);

            let mut reopened = open(&disk, &dir, &[1]).await.expect("reopen");
            assert_eq!(reopened.cut_bytes, 11, "{}", disk.kind());
            assert_eq!(disk.file_len(&path).await.expect("len"), Some(good_bytes));
            assert_eq!(reopened.storage.last_index(), 1);
            assert_eq!(reopened.storage.hard_state().commit, 1);
            write(&mut reopened, &[entry(2, 1, b"again")], hard_state(1, 1, 2))
                .await
                .expect("write");
            drop(reopened);
            let again = open(&disk, &dir, &[1]).await.expect("again");
            assert_eq!(again.cut_bytes, 0);
            assert_eq!(&again.storage.entries_between(1, 2)[0].data[..], b"again");
        });
    }

    #[test]
    fn compaction_keeps_the_snapshot_and_the_entries_after_it() {
        on_every_strategy(|disk, dir| async move {
            let mut opened = open(&disk, &dir, &[1]).await.expect("open");
            let entries: Vec<Entry> = (1..=10).map(|index| entry(index, 1, b"x")).collect();
            write(&mut opened, &entries, hard_state(1, 1, 10))
                .await
                .expect("write");
            let mut snapshot = Snapshot::default();
            snapshot.mut_metadata().index = 7;
            snapshot.mut_metadata().term = 1;
            snapshot
                .mut_metadata()
                .set_conf_state(opened.storage.conf_state().clone());
            snapshot.data = b"state at 7".to_vec().into();
            let image = opened.storage.compact(snapshot);
            opened.log.rewrite(image).await.expect("rewrite");
            // Appends after a rewrite go to the new file.
            write(&mut opened, &[entry(11, 1, b"y")], hard_state(1, 1, 11))
                .await
                .expect("write");
            drop(opened);

            let reopened = open(&disk, &dir, &[1]).await.expect("reopen");
            let storage = &reopened.storage;
            assert_eq!(storage.snapshot_index(), 7);
            assert_eq!(&storage.snapshot().data[..], b"state at 7");
            assert_eq!(storage.first_index(), 8);
            assert_eq!(storage.last_index(), 11);
            assert_eq!(storage.term(7).expect("term"), 1);
            assert!(storage.term(6).is_err());
            assert_eq!(storage.hard_state().commit, 11);
        });
    }

    #[test]
    fn other_voters_than_persisted_are_refused() {
        on_every_strategy(|disk, dir| async move {
            drop(open(&disk, &dir, &[1, 2, 3]).await.expect("open"));
            assert!(matches!(
                open(&disk, &dir, &[1, 2]).await,
                Err(QuorumStorageError::VotersChanged { .. })
            ));
        });
    }

    /// A full disk: the append fails with no space, leaves the log as it was, and the same
    /// append succeeds once space is freed; nothing torn is left in the middle.
    #[test]
    fn a_full_disk_refuses_an_append_that_succeeds_once_space_is_freed() {
        use shardlog_storage::storage::{SimFault, SimOp};
        for fault_at in [SimOp::Write, SimOp::Sync] {
            let disk = SimDisk::new(7);
            let storage = Storage::Sim(disk.clone());
            let dir = PathBuf::from("/sim/metadata");
            run_local(IO_MEMORY_BYTES_DEFAULT, async {
                let mut opened = open(&storage, &dir, &[1]).await.expect("open");
                write(&mut opened, &[entry(1, 1, b"one")], hard_state(1, 1, 1))
                    .await
                    .expect("write");
                let before = opened.log.len();
                disk.fail_with(fault_at, Some(SimFault::NoSpace));
                let mut out = Vec::new();
                opened.storage.append(&[entry(2, 1, b"two")], &mut out);
                for _ in 0..2 {
                    let error = opened.log.append(&out).await.expect_err("no space");
                    assert!(error.is_no_space(), "{fault_at:?}: {error}");
                }
                disk.fail_with(fault_at, None);
                opened.log.append(&out).await.expect("space is back");
                assert!(opened.log.len() > before);
                drop(opened);
                let reopened = open(&storage, &dir, &[1]).await.expect("reopen");
                assert_eq!(reopened.cut_bytes, 0, "{fault_at:?}");
                assert_eq!(reopened.storage.last_index(), 2, "{fault_at:?}");
                assert_eq!(&reopened.storage.entries_between(1, 2)[0].data[..], b"two");
            });
        }
    }

    /// Disk faults under the quorum's log, on the simulated disk: a failed write or fsync
    /// fails the append (raft must not send what depends on it), and a power loss at any
    /// point keeps every append that returned Ok. Seeded; a failure names its seed.
    #[test]
    fn appends_that_returned_survive_failed_writes_failed_syncs_and_crashes() {
        const SEEDS: u64 = 200;
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let storage = Storage::Sim(disk.clone());
            let dir = PathBuf::from("/sim/metadata");
            run_local(IO_MEMORY_BYTES_DEFAULT, async {
                let mut random = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = move |below: u64| {
                    random ^= random << 13;
                    random ^= random >> 7;
                    random ^= random << 17;
                    random % below
                };
                let mut acknowledged: u64 = 0;
                let mut opened = open(&storage, &dir, &[1]).await.expect("open");
                let mut index = 0;
                for _step in 0..12 {
                    match next(6) {
                        0 => disk.fail_writes(true),
                        1 => disk.fail_syncs(true),
                        2 => {
                            disk.crash();
                            drop(opened);
                            opened = open(&storage, &dir, &[1]).await.unwrap_or_else(|error| {
                                panic!("seed {seed}: reopen after a crash: {error}")
                            });
                            assert!(
                                opened.storage.last_index() >= acknowledged,
                                "seed {seed}: entry {acknowledged} was acknowledged and is gone"
                            );
                            index = opened.storage.last_index();
                            continue;
                        }
                        _ => {}
                    }
                    let batch: Vec<Entry> = (index + 1..=index + 1 + next(3))
                        .map(|at| entry(at, 1, format!("entry {at}").as_bytes()))
                        .collect();
                    let last = batch.last().map_or(index, |entry| entry.index);
                    match write(&mut opened, &batch, hard_state(1, 1, last)).await {
                        Ok(()) => {
                            acknowledged = last;
                            index = last;
                        }
                        Err(_) => {
                            // The driver stops here; the broker restarts and replays.
                            disk.crash();
                            drop(opened);
                            opened = open(&storage, &dir, &[1]).await.unwrap_or_else(|error| {
                                panic!("seed {seed}: reopen after a failed append: {error}")
                            });
                            assert!(opened.storage.last_index() >= acknowledged, "seed {seed}");
                            index = opened.storage.last_index();
                        }
                    }
                    disk.fail_writes(false);
                    disk.fail_syncs(false);
                }
                let entries = opened.storage.entries_between(0, acknowledged);
                for (position, stored) in entries.iter().enumerate() {
                    let at = position as u64 + 1;
                    assert_eq!(stored.index, at, "seed {seed}");
                    assert_eq!(
                        &stored.data[..],
                        format!("entry {at}").as_bytes(),
                        "seed {seed}"
                    );
                }
                assert!(opened.storage.hard_state().commit <= opened.storage.last_index());
            });
        }
    }
}
