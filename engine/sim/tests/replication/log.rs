//! A replica's partition log in the simulation: the real `PartitionLog` on the broker's
//! `SimDisk`, with small segments so rolls happen often, and a decoded view of what it holds
//! for the invariant checker.
//!
//! Each produced value is one batch of one record whose value is the number's 8 bytes; the
//! view lists (offset, leader epoch, value) for every batch in the log, in order. The view is
//! kept in step with the log by the calls that change it (appends, cuts) and is read back
//! from the log itself after a crash, so what recovery kept is what the checker sees.
//!
//! Durability is the log's own policy (`always` or `none`); under `none` the simulated OS
//! writes dirty pages back now and then ([`SimLog::write_back`]).

use std::cell::RefCell;
use std::path::Path;

use bytes::Bytes;
use shardlog::batch::{self, decode_records, BatchBuilder, BatchHeader, Compression};
use shardlog::cluster::epochs::LeaderEpochCache;
use shardlog::cluster::follower;
use shardlog::cluster::producers::ProducerStates;
use shardlog::log::{Durability, LogConfig, PartitionLog};
use shardlog::storage::{SimDisk, Storage};
use shardlog::LogError;

/// The smallest segment the log accepts: a roll every ~50 records.
const SEGMENT_BYTES: u64 = 4096;
const MAX_BATCH_BYTES: usize = 1 << 20;

/// One record: the offset the leader gave it, the leader epoch it was written in, and the
/// value a producer sent (unique per produce, so a lost or moved record is visible).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub epoch: i32,
    pub value: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Always,
    None,
}

pub fn partition_dir() -> &'static Path {
    Path::new("/sim/t-0")
}

pub struct SimLog {
    disk: SimDisk,
    config: LogConfig,
    log: PartitionLog,
    records: Vec<Record>,
    /// The lowest offset changed (appended at or cut to) since the invariant checker last
    /// looked, so it rechecks only what changed.
    changed_from: usize,
}

impl SimLog {
    pub async fn open(disk: SimDisk, policy: Policy) -> SimLog {
        let config = LogConfig {
            segment_bytes: SEGMENT_BYTES,
            durability: match policy {
                Policy::Always => Durability::Always,
                Policy::None => Durability::None,
            },
            max_batch_bytes: MAX_BATCH_BYTES,
            ..LogConfig::default()
        };
        let log = open_log(&disk, &config).await;
        let mut opened = SimLog {
            disk,
            config,
            log,
            records: Vec::new(),
            changed_from: 0,
        };
        opened.records = opened.read_back().await;
        opened
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// Appends `value` as the leader does, at `epoch`, if `admit` (the broker's admission
    /// rule, asked under the append lock) allows it. Returns the offset, or `None`.
    pub async fn append_as_leader(
        &mut self,
        epoch: i32,
        value: u64,
        admit: impl FnOnce(&BatchHeader) -> bool,
    ) -> Result<Option<i64>, LogError> {
        let mut builder = BatchBuilder::new(0, Compression::None);
        builder.push_kv(None, Some(&value.to_be_bytes()), &[], 0);
        let batch = builder.build(0).expect("a one-record batch encodes");
        let Some(info) = self.log.append_with(&batch, epoch, admit).await? else {
            return Ok(None);
        };
        self.push(Record {
            offset: info.base_offset,
            epoch,
            value,
        });
        Ok(Some(info.base_offset))
    }

    /// Appends a replica fetch's batches through the broker's own follower path.
    pub async fn append_fetched(
        &mut self,
        epochs: &RefCell<LeaderEpochCache>,
        producers: &RefCell<ProducerStates>,
        batches: &Bytes,
    ) -> Result<(), LogError> {
        let mut appended = Vec::new();
        follower::append_fetched(
            &self.log,
            epochs,
            producers,
            batches,
            MAX_BATCH_BYTES,
            |_, batch| appended.extend(decode(batch)),
        )
        .await?;
        for record in appended {
            self.push(record);
        }
        Ok(())
    }

    /// Whole batches from `offset`, below `upper`, of at most about `max_bytes` (at least
    /// one batch), as the leader's fetch path reads them.
    pub async fn read(&self, offset: i64, upper: i64, max_bytes: u64) -> Result<Bytes, LogError> {
        let mut bytes = Vec::new();
        for region in self.log.read_below(offset, max_bytes, upper).await? {
            bytes.extend_from_slice(&region.read_bytes().await?);
        }
        Ok(Bytes::from(bytes))
    }

    fn push(&mut self, record: Record) {
        self.changed_from = self.changed_from.min(self.records.len());
        self.records.push(record);
    }

    /// Cuts the log to end at `offset`; returns the new log end.
    pub async fn truncate_to(&mut self, offset: i64) -> Result<i64, LogError> {
        let log_end = self.log.truncate_to(offset).await?;
        let keep = self
            .records
            .partition_point(|record| record.offset < log_end);
        self.records.truncate(keep);
        self.changed_from = self.changed_from.min(keep);
        Ok(log_end)
    }

    /// The lowest offset changed since the last call (the log end if nothing changed).
    pub fn take_changed_from(&mut self) -> usize {
        let changed_from = self.changed_from.min(self.records.len());
        self.changed_from = self.records.len();
        changed_from
    }

    /// The OS wrote everything back.
    pub async fn write_back(&self) -> Result<(), LogError> {
        self.log.sync().await
    }

    /// Power loss: the disk keeps what it made durable (and a seeded part of the rest); the
    /// log is opened again, as the next process will, and recovery decides what survived.
    /// Returns how many records were lost.
    pub async fn crash(&mut self) -> usize {
        self.disk.crash();
        self.log = open_log(&self.disk, &self.config).await;
        let before = std::mem::take(&mut self.records);
        self.records = self.read_back().await;
        let same = before
            .iter()
            .zip(&self.records)
            .take_while(|(old, new)| old == new)
            .count();
        self.changed_from = self.changed_from.min(same);
        before.len().saturating_sub(self.records.len())
    }

    /// Every record in the log, decoded from the log's own bytes.
    async fn read_back(&self) -> Vec<Record> {
        let mut records = Vec::new();
        let mut offset = self.log.log_start_offset();
        let end = self.log.log_end_offset();
        while offset < end {
            let bytes = self
                .read(offset, end, 1 << 16)
                .await
                .expect("read back the recovered log");
            let before = records.len();
            for found in batch::batches(&bytes, MAX_BATCH_BYTES) {
                let (position, header) = found.expect("a recovered log holds whole batches");
                records.extend(decode(&bytes[position..position + header.total_bytes()]));
            }
            assert!(
                records.len() > before,
                "a read below the log end returned nothing"
            );
            offset = records.last().expect("records").offset + 1;
        }
        records
    }
}

async fn open_log(disk: &SimDisk, config: &LogConfig) -> PartitionLog {
    PartitionLog::open(Storage::Sim(disk.clone()), partition_dir(), config.clone())
        .await
        .expect("the log opens and recovers")
}

/// The records of whole batches back to back (a fetch answer), for traces.
pub fn decode_all(bytes: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    for (position, header) in batch::batches(bytes, MAX_BATCH_BYTES).map_while(Result::ok) {
        records.extend(decode(&bytes[position..position + header.total_bytes()]));
    }
    records
}

/// The records of one batch as the view lists them.
fn decode(batch: &[u8]) -> Vec<Record> {
    let header = BatchHeader::parse(batch).expect("a stored batch has a header");
    decode_records(batch, MAX_BATCH_BYTES)
        .expect("a stored batch decodes")
        .into_iter()
        .map(|record| {
            let value = record
                .value
                .as_deref()
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map_or(u64::MAX, u64::from_be_bytes);
            Record {
                offset: header.base_offset + i64::from(record.offset_delta),
                epoch: header.partition_leader_epoch,
                value,
            }
        })
        .collect()
}
