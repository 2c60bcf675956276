//! A partition log as the simulation models it: records in memory, each one batch of one
//! record, with the prefix that would survive a crash kept apart from the rest.
//!
//! Durability contract, per policy (the same per-log policy on leaders and followers):
//! - `Always`: an append is durable when it returns (the real log fsyncs before answering).
//! - `None`: appends stay volatile until the next background flush (the OS writing back);
//!   a crash keeps the durable prefix plus a seeded random part of the volatile tail.
//!
//! A cut (truncation) is durable at once, as the real log's `set_len` is.

use super::rng::Rng;

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

#[derive(Debug)]
pub struct SimLog {
    policy: Policy,
    records: Vec<Record>,
    /// How many records at the front survive a crash.
    durable_len: usize,
    /// The lowest offset changed (appended at or cut to) since the invariant checker last
    /// looked, so it rechecks only what changed.
    changed_from: usize,
}

impl SimLog {
    pub fn new(policy: Policy) -> SimLog {
        SimLog {
            policy,
            records: Vec::new(),
            durable_len: 0,
            changed_from: 0,
        }
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The log start never moves in the simulation (no retention).
    pub fn log_start_offset(&self) -> i64 {
        0
    }

    pub fn log_end_offset(&self) -> i64 {
        self.records.len() as i64
    }

    /// Appends as the leader does: the record gets the next offset and `epoch`.
    pub fn append_as_leader(&mut self, epoch: i32, value: u64) -> i64 {
        let offset = self.log_end_offset();
        self.push(Record {
            offset,
            epoch,
            value,
        });
        offset
    }

    /// Appends a record copied from the leader, keeping its offset. A record whose offset is
    /// not the log end is still stored: the contiguity invariant is what catches it.
    pub fn append_replicated(&mut self, record: Record) {
        self.push(record);
    }

    fn push(&mut self, record: Record) {
        self.changed_from = self.changed_from.min(self.records.len());
        self.records.push(record);
        if self.policy == Policy::Always {
            self.durable_len = self.records.len();
        }
    }

    /// Cuts the log to end at `offset`; returns the new log end.
    pub fn truncate_to(&mut self, offset: i64) -> i64 {
        let keep = offset.clamp(0, self.log_end_offset()) as usize;
        self.records.truncate(keep);
        self.durable_len = self.durable_len.min(keep);
        self.changed_from = self.changed_from.min(keep);
        self.log_end_offset()
    }

    /// The lowest offset changed since the last call (the log end if nothing changed).
    pub fn take_changed_from(&mut self) -> usize {
        let changed_from = self.changed_from.min(self.records.len());
        self.changed_from = self.records.len();
        changed_from
    }

    /// The OS wrote everything back.
    pub fn flush(&mut self) {
        self.durable_len = self.records.len();
    }

    /// Power loss: keeps the durable prefix and a random prefix of the volatile tail.
    /// Returns how many records were lost.
    pub fn crash(&mut self, rng: &mut Rng) -> usize {
        let volatile = self.records.len() - self.durable_len;
        let kept = self.durable_len + rng.between(0, volatile as u64) as usize;
        let lost = self.records.len() - kept;
        self.records.truncate(kept);
        self.durable_len = kept;
        self.changed_from = self.changed_from.min(kept);
        lost
    }
}
