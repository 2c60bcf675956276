//! Kafka's safety invariants, checked after every step of the simulation.
//!
//! The checker keeps the cluster's committed log: whenever a broker that believes it leads
//! has a high watermark past the end of what is known committed, the records below it are
//! appended. Then, after every step:
//! 1. a leader's high watermark never goes back while it leads (same process, same epoch),
//!    and a leader's records below its watermark are the committed ones (so the committed
//!    prefix never changes or shrinks);
//! 2. every committed record, so every acknowledged one, is in the log of the partition's
//!    leader and of every ISR member as the newest state any voter applied names them, at its offset, with its value (brokers that
//!    are down, or restarted and not yet registered, are skipped: they serve nothing);
//! 3. every broker's records below its own watermark are the committed ones, so no two
//!    replicas disagree below the smaller of their watermarks;
//! 4. each log's offsets are contiguous from 0 and its epochs never decrease;
//! 5. each broker's leader-epoch cache describes its log: the entry covering an offset names
//!    the epoch of the record there (the follower's truncation relies on it).
//!
//! An acknowledgement is checked when the producer receives it: the record must be the
//! committed one at its offset.

use std::collections::BTreeMap;

use shardlog::cluster::epochs::EpochEntry;
use shardlog::cluster::replica::Role;
use shardlog::cluster::state::{BrokerId, NO_LEADER};

use super::broker::SimBroker;
use super::log::Record;
use super::quorum::Quorum;

#[derive(Default)]
pub struct Checker {
    committed: Vec<Record>,
    acked: BTreeMap<i64, u64>,
    /// Per broker, how long a prefix of its log equals the committed log (a lower bound
    /// that only needs rechecking from where the log changed).
    agree: BTreeMap<BrokerId, usize>,
    /// Per broker that leads: (incarnation, epoch, watermark) when last seen.
    leading: BTreeMap<BrokerId, (u64, i32, i64)>,
    epochs_seen: BTreeMap<BrokerId, Vec<EpochEntry>>,
}

fn describe(record: Option<&Record>) -> String {
    record.map_or("nothing".to_string(), |record| {
        format!("e{}:v{}", record.epoch, record.value)
    })
}

impl Checker {
    pub fn committed_len(&self) -> usize {
        self.committed.len()
    }

    pub fn acked_count(&self) -> usize {
        self.acked.len()
    }

    /// Whether `broker`'s log holds every committed record.
    pub fn holds_everything_committed(&self, broker: BrokerId) -> bool {
        self.agree.get(&broker).copied().unwrap_or(0) >= self.committed.len()
    }

    /// A producer was told these records are acknowledged.
    pub fn acknowledged(&mut self, records: &[(i64, u64)]) -> Result<(), String> {
        for &(offset, value) in records {
            let committed = self.committed.get(offset as usize);
            if committed.map(|record| record.value) != Some(value) {
                return Err(format!(
                    "acknowledged v{value} at offset {offset}, but the committed record there is {}",
                    describe(committed)
                ));
            }
            if let Some(earlier) = self.acked.insert(offset, value) {
                if earlier != value {
                    return Err(format!(
                        "offset {offset} acknowledged twice: v{earlier} and v{value}"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn check(&mut self, brokers: &mut [SimBroker], quorum: &Quorum) -> Result<(), String> {
        for broker in brokers.iter_mut() {
            self.check_log_shape(broker)?;
        }
        for broker in brokers.iter() {
            self.check_leader(broker)?;
        }
        for broker in brokers.iter() {
            self.extend_agreement(broker);
            let agree = self.agree[&broker.id] as i64;
            let high_watermark = broker.replica.high_watermark();
            if broker.up && high_watermark > agree {
                return Err(format!(
                    "invariant 3: b{} has {} at offset {agree}, below its high watermark \
                     {high_watermark}, where the committed record is {}",
                    broker.id,
                    describe(broker.log.records().get(agree as usize)),
                    describe(self.committed.get(agree as usize))
                ));
            }
        }
        self.check_leader_and_isr_hold_committed(brokers, quorum)
    }

    /// Invariants 4 and 5, over what changed since the last step.
    fn check_log_shape(&mut self, broker: &mut SimBroker) -> Result<(), String> {
        let changed_from = broker.log.take_changed_from();
        let agree = self.agree.entry(broker.id).or_insert(0);
        *agree = (*agree).min(changed_from);
        let records = broker.log.records();
        for index in changed_from..records.len() {
            let record = records[index];
            if record.offset != index as i64 {
                return Err(format!(
                    "invariant 4: b{} holds offset {} at position {index}",
                    broker.id, record.offset
                ));
            }
            if index > 0 && records[index - 1].epoch > record.epoch {
                return Err(format!(
                    "invariant 4: b{}'s epochs go back at offset {index}: e{} then e{}",
                    broker.id,
                    records[index - 1].epoch,
                    record.epoch
                ));
            }
        }
        let epochs = broker.epochs.borrow();
        let entries = epochs.entries();
        let seen = self.epochs_seen.entry(broker.id).or_default();
        let recheck_from = if seen.as_slice() == entries {
            changed_from
        } else {
            *seen = entries.to_vec();
            0
        };
        for record in &records[recheck_from..] {
            let covering = entries
                .partition_point(|entry| entry.start_offset <= record.offset)
                .checked_sub(1)
                .map(|position| entries[position]);
            if covering.map(|entry| entry.epoch) != Some(record.epoch) {
                return Err(format!(
                    "invariant 5: b{}'s record at {} has epoch {} but its epoch cache says {:?} \
                     (cache {entries:?})",
                    broker.id, record.offset, record.epoch, covering
                ));
            }
        }
        Ok(())
    }

    fn extend_agreement(&mut self, broker: &SimBroker) {
        let records = broker.log.records();
        let agree = self.agree.entry(broker.id).or_insert(0);
        let limit = records.len().min(self.committed.len());
        while *agree < limit && records[*agree] == self.committed[*agree] {
            *agree += 1;
        }
    }

    /// Invariant 1, and the growth of the committed log.
    fn check_leader(&mut self, broker: &SimBroker) -> Result<(), String> {
        if !broker.up || broker.replica.role() != Role::Leader {
            self.leading.remove(&broker.id);
            return Ok(());
        }
        let now = (
            broker.incarnation,
            broker.replica.leader_epoch(),
            broker.replica.high_watermark(),
        );
        if let Some(before) = self.leading.insert(broker.id, now) {
            if before.0 == now.0 && before.1 == now.1 && now.2 < before.2 {
                return Err(format!(
                    "invariant 1: leader b{}'s high watermark went back from {} to {} in epoch {}",
                    broker.id, before.2, now.2, now.1
                ));
            }
        }
        self.extend_agreement(broker);
        let high_watermark = now.2.max(0) as usize;
        let agree = self.agree[&broker.id];
        let known = self.committed.len();
        if agree < high_watermark.min(known) {
            return Err(format!(
                "invariant 1: leader b{} (epoch {}) has {} at offset {agree}, below its high \
                 watermark {high_watermark}, where the committed record is {}",
                broker.id,
                now.1,
                describe(broker.log.records().get(agree)),
                describe(self.committed.get(agree))
            ));
        }
        if high_watermark > known {
            let records = broker.log.records();
            assert!(
                high_watermark <= records.len(),
                "b{}'s high watermark {high_watermark} is past its log end {}",
                broker.id,
                records.len()
            );
            self.committed
                .extend_from_slice(&records[known..high_watermark]);
            self.agree.insert(broker.id, high_watermark);
        }
        Ok(())
    }

    /// Invariant 2.
    fn check_leader_and_isr_hold_committed(
        &self,
        brokers: &[SimBroker],
        quorum: &Quorum,
    ) -> Result<(), String> {
        let partition = quorum.partition();
        let mut holders: Vec<(BrokerId, &str)> =
            partition.isr.iter().map(|&id| (id, "ISR member")).collect();
        if partition.leader != NO_LEADER {
            holders.push((partition.leader, "leader"));
        }
        for (id, what) in holders {
            let Some(broker) = brokers.iter().find(|broker| broker.id == id) else {
                continue;
            };
            if !broker.up || !broker.registered {
                continue;
            }
            let agree = self.agree[&id];
            if agree < self.committed.len() {
                let acked = self
                    .acked
                    .get(&(agree as i64))
                    .map_or("not acknowledged".to_string(), |value| {
                        format!("acknowledged as v{value}")
                    });
                return Err(format!(
                    "invariant 2: {what} b{id} (quorum: leader {} epoch {} isr {:?}) has {} \
                     at offset {agree}, where the committed record is {} ({acked}); {} records \
                     are committed",
                    partition.leader,
                    partition.leader_epoch,
                    partition.isr,
                    describe(broker.log.records().get(agree)),
                    describe(self.committed.get(agree)),
                    self.committed.len()
                ));
            }
        }
        Ok(())
    }
}
