//! Replication on the broker: each core adopts the quorum's view of the partitions it owns,
//! leads some (tracking followers, moving the high watermark, proposing ISR changes) and
//! follows others (a fetch task per partition that copies the leader's batches as they are).
//!
//! The rules live in `cluster::replica` (watermark, ISR) and `cluster::epochs` (where each
//! leader epoch began); this file is the I/O around them. Everything runs on the core that
//! owns the partition, like produce and fetch, so nothing here takes a lock.

use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::FutureExt;

use super::group::OFFSETS_TOPIC;
use super::metadata::{PartitionState, Topic};
use super::partition::EpochEndOutcome;
use super::shard::{error_code, rebuild_producers, Partition, Shard};
use super::share::STATE_TOPIC;
use crate::batch::{self, BatchError};
use crate::broker::api::codes::KafkaCode;
use crate::cluster::fetcher::{FetchedPartition, FetcherError, LeaderConnection};
use crate::cluster::quorum::ProposeError;
use crate::cluster::replica::Transition;
use crate::cluster::state::{BrokerId, Command};
use crate::LogError;

/// Who is fetching: a consumer, or a follower copying the log.
#[derive(Clone, Copy, Debug)]
pub struct Reader {
    /// The follower's broker id; `None` for consumers.
    pub replica: Option<BrokerId>,
    /// The leader epoch the reader believes current, or -1.
    pub current_leader_epoch: i32,
}

impl Reader {
    pub const CONSUMER: Reader = Reader {
        replica: None,
        current_leader_epoch: -1,
    };
}

/// Milliseconds on a monotonic clock (the replica rules take time as a number).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Pause after a failed exchange with a leader before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a follower waits to connect to its leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Shard {
    /// Runs on every core until shutdown: adopts each metadata change for the partitions this
    /// core owns, and lets leaders propose ISR changes.
    pub async fn follow_metadata(self: Rc<Self>) {
        let check_every =
            Duration::from_millis((self.shared.config.replica_lag_time_max_ms / 4).clamp(50, 1000));
        loop {
            let seen = self.shared.metadata.version();
            self.adopt_metadata().await;
            self.propose_isr_changes();
            let metadata = &self.shared.metadata;
            async { metadata.changed_since(seen).await }
                .or(glommio::timer::sleep(check_every))
                .or(self.shared.shutdown_requested())
                .await;
            if self.shared.is_shutting_down() {
                break;
            }
        }
    }

    /// Opens every partition this core owns and this broker holds, and gives each its role.
    /// Partitions this broker no longer holds (a reassignment moved them away, or their topic
    /// was deleted) are closed and their directories deleted.
    async fn adopt_metadata(self: &Rc<Self>) {
        let me = self.shared.config.node_id;
        let snapshot = self.shared.metadata.snapshot();
        let mut moved_away = Vec::new();
        for topic in snapshot.topics.values() {
            for (index, state) in topic.assignment.iter().enumerate() {
                let partition = index as i32;
                if self.owner(&topic.name, partition) != self.core {
                    continue;
                }
                let key = (topic.name.clone(), partition);
                let already_open = self.partitions.borrow().get(&key).cloned();
                let open = match already_open {
                    Some(open) if !state.replicas.contains(&me) => {
                        // Going offline first answers waiting produces (not the leader).
                        self.adopt(&open, topic, partition, state);
                        moved_away.push(key);
                        continue;
                    }
                    Some(open) => open,
                    None if state.replicas.contains(&me) => {
                        // Opening adopts the current state itself.
                        let _ = self.partition(topic, partition).await;
                        continue;
                    }
                    None => continue,
                };
                self.adopt(&open, topic, partition, state);
            }
        }
        // Topics deleted through another broker: their partitions go here too.
        let gone: Vec<(String, i32)> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(topic, _)| !snapshot.topics.contains_key(topic))
            .cloned()
            .collect();
        for (topic, partition) in gone {
            tracing::info!(%topic, partition, "deleting a partition of a deleted topic");
            self.delete_partition_here(&topic, partition).await;
        }
        for (topic, partition) in moved_away {
            tracing::info!(%topic, partition, "deleting a partition this broker no longer holds");
            self.delete_partition_here(&topic, partition).await;
        }
    }

    /// Gives a just-opened partition its role from the current metadata.
    pub(super) fn adopt_current_state(
        self: &Rc<Self>,
        open: &Rc<Partition>,
        topic: &Arc<Topic>,
        partition: i32,
    ) {
        let snapshot = self.shared.metadata.snapshot();
        let current = snapshot.topics.get(&topic.name).cloned();
        if let Some(state) = current
            .as_ref()
            .and_then(|topic| topic.partition(partition))
        {
            self.adopt(open, topic, partition, state);
        }
    }

    /// Applies one partition's metadata: starts leading, starts following, or stops.
    fn adopt(
        self: &Rc<Self>,
        open: &Rc<Partition>,
        topic: &Arc<Topic>,
        partition: i32,
        state: &PartitionState,
    ) {
        let log_end = open.log.log_end_offset();
        let transition = open.replica.borrow_mut().update(state, log_end, now_ms());
        if transition != Transition::Unchanged {
            tracing::info!(topic = %topic.name, partition, ?transition, epoch = state.leader_epoch, "partition role");
            open.role_generation.set(open.role_generation.get() + 1);
            // Internal topics' state is kept by the leader; a new leader replays it afresh.
            if topic.name == OFFSETS_TOPIC {
                self.groups.unload(partition);
            } else if topic.name == STATE_TOPIC {
                self.shares.store.unload(partition);
            }
        }
        match transition {
            Transition::BecameLeader => {
                if let Err(error) = open.epochs.borrow_mut().assign(state.leader_epoch, log_end) {
                    tracing::error!(topic = %topic.name, partition, %error, "cannot record the leader epoch");
                }
            }
            Transition::BecameFollower { leader } => {
                let generation = open.role_generation.get();
                let follower = Rc::clone(self).follow(
                    Rc::clone(open),
                    Arc::clone(topic),
                    partition,
                    leader,
                    generation,
                );
                glommio::spawn_local(follower).detach();
            }
            Transition::Unchanged | Transition::WentOffline => {}
        }
        open.publish_progress();
    }

    /// Leaders whose followers fell behind or caught up propose the new ISR to the quorum.
    /// One proposal per partition at a time; one whose answer was lost (a timeout, a
    /// controller change) is sent again unchanged, since the quorum may have applied it.
    fn propose_isr_changes(self: &Rc<Self>) {
        let me = self.shared.config.node_id;
        let lag_max_ms = self.shared.config.replica_lag_time_max_ms;
        let open: Vec<_> = self
            .partitions
            .borrow()
            .iter()
            .map(|((topic, partition), open)| (topic.clone(), *partition, Rc::clone(open)))
            .collect();
        for (topic, partition, open) in open {
            if open.isr_proposal_in_flight.get() {
                continue;
            }
            let proposal = {
                let mut replica = open.replica.borrow_mut();
                match replica.pending_isr() {
                    Some((isr, partition_epoch)) => Some((isr.to_vec(), partition_epoch)),
                    None => {
                        let epoch_start = open
                            .epochs
                            .borrow()
                            .entries()
                            .last()
                            .map_or(0, |entry| entry.start_offset);
                        replica
                            .wanted_isr(epoch_start, now_ms(), lag_max_ms)
                            .map(|isr| (isr.clone(), replica.proposing_isr(isr)))
                    }
                }
            };
            let Some((isr, partition_epoch)) = proposal else {
                continue;
            };
            tracing::info!(%topic, partition, ?isr, "proposing an ISR change");
            let command = Command::AlterIsr {
                topic: topic.clone(),
                partition,
                leader: me,
                partition_epoch,
                isr,
            };
            open.isr_proposal_in_flight.set(true);
            let shard = Rc::clone(self);
            glommio::spawn_local(async move {
                // Yield first: spawn_local runs the task at once, inside our loop.
                glommio::yield_if_needed().await;
                let outcome = shard.shared.metadata.propose(command).await;
                open.isr_proposal_in_flight.set(false);
                match outcome {
                    // The metadata update settles the pending change.
                    Ok(()) => {}
                    Err(ProposeError::Refused(refusal)) => {
                        tracing::info!(%topic, partition, %refusal, "ISR change refused");
                        open.replica.borrow_mut().isr_proposal_failed();
                    }
                    Err(error) => {
                        tracing::info!(%topic, partition, %error, "ISR change unanswered; will resend");
                    }
                }
            })
            .detach();
        }
    }

    /// OffsetForLeaderEpoch on the leader: where `epoch` ended in this log.
    pub(super) async fn epoch_end_here(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
        current_leader_epoch: i32,
        epoch: i32,
    ) -> EpochEndOutcome {
        let open = match self.partition(topic, partition).await {
            Ok(open) => open,
            Err(code) => return EpochEndOutcome::failed(code),
        };
        if let Err(refusal) = open.replica.borrow().check_leader(current_leader_epoch) {
            return EpochEndOutcome::failed(refusal.code());
        }
        let (leader_epoch, end_offset) = open
            .epochs
            .borrow()
            .end_offset_for(epoch, open.log.log_end_offset());
        EpochEndOutcome {
            error_code: error_code::NONE,
            leader_epoch,
            end_offset,
        }
    }

    /// A follower's fetch loop for one partition, until its role changes (`generation`) or
    /// the broker stops: cut any divergent tail, then fetch from the log end and append.
    async fn follow(
        self: Rc<Self>,
        open: Rc<Partition>,
        topic: Arc<Topic>,
        partition: i32,
        leader: BrokerId,
        generation: u64,
    ) {
        // spawn_local runs us at once; let the caller finish adopting first.
        glommio::yield_if_needed().await;
        let current =
            || open.role_generation.get() == generation && !self.shared.is_shutting_down();
        let config = &self.shared.config;
        let me = config.node_id;
        let mut connection: Option<LeaderConnection> = None;
        let mut needs_truncation = true;
        while current() {
            let Some(leader_connection) = connection.as_mut() else {
                match self.connect_to(leader, me).await {
                    Ok(fresh) => {
                        connection = Some(fresh);
                        needs_truncation = true;
                    }
                    Err(error) => {
                        tracing::debug!(topic = %topic.name, partition, leader, %error, "leader unreachable");
                        glommio::timer::sleep(RETRY_PAUSE).await;
                    }
                }
                continue;
            };
            let epoch = open.replica.borrow().leader_epoch();
            if needs_truncation {
                match self
                    .truncate_divergent(
                        &open,
                        leader_connection,
                        &topic.name,
                        partition,
                        epoch,
                        generation,
                    )
                    .await
                {
                    Ok(()) => needs_truncation = false,
                    Err(Retry::Reconnect) => connection = None,
                    Err(Retry::Later) => glommio::timer::sleep(RETRY_PAUSE).await,
                }
                continue;
            }
            let fetched = leader_connection
                .fetch(
                    &topic.name,
                    partition,
                    open.log.log_end_offset(),
                    epoch,
                    config.replica_fetch_max_bytes.min(i32::MAX as u32) as i32,
                    Duration::from_millis(config.replica_fetch_wait_max_ms),
                )
                .await;
            if !current() {
                break;
            }
            match fetched {
                Err(error) => {
                    tracing::debug!(topic = %topic.name, partition, %error, "replica fetch failed");
                    connection = None;
                    glommio::timer::sleep(RETRY_PAUSE).await;
                }
                Ok(fetched) if fetched.error_code == error_code::NONE => {
                    if let Err(error) = self.append_fetched(&open, &fetched).await {
                        tracing::warn!(topic = %topic.name, partition, %error, "cannot append replicated batches");
                        needs_truncation = true;
                        glommio::timer::sleep(RETRY_PAUSE).await;
                    }
                }
                Ok(fetched) => {
                    if fetched.error_code == error_code::OFFSET_OUT_OF_RANGE {
                        tracing::warn!(topic = %topic.name, partition, leader, "replica fetch offset out of range");
                        needs_truncation = true;
                    }
                    // Leader changes reach us through the metadata; until then, wait.
                    glommio::timer::sleep(RETRY_PAUSE).await;
                }
            }
        }
        tracing::debug!(topic = %topic.name, partition, leader, "stopped following");
    }

    async fn connect_to(
        &self,
        broker: BrokerId,
        me: BrokerId,
    ) -> Result<LeaderConnection, FetcherError> {
        let Some(address) = self.shared.metadata.broker_address(broker) else {
            return Err(FetcherError::Malformed(format!(
                "broker {broker} is not registered"
            )));
        };
        let idle_buffer_bytes = self.shared.config.replica_fetch_max_bytes as usize;
        LeaderConnection::connect(&address, me, CONNECT_TIMEOUT, idle_buffer_bytes).await
    }

    /// Asks the leader where this log's latest epoch ended there, and cuts this log to that
    /// point (Kafka's KIP-101 and KIP-279): records past it were never committed.
    async fn truncate_divergent(
        &self,
        open: &Partition,
        connection: &mut LeaderConnection,
        topic: &str,
        partition: i32,
        current_epoch: i32,
        generation: u64,
    ) -> Result<(), Retry> {
        let Some(latest) = open.epochs.borrow().latest_epoch() else {
            return Ok(());
        };
        let answer = connection
            .end_offset_for_epoch(topic, partition, current_epoch, latest)
            .await
            .map_err(|error| {
                tracing::debug!(topic, partition, %error, "OffsetForLeaderEpoch failed");
                Retry::Reconnect
            })?;
        if answer.error_code != error_code::NONE {
            return Err(Retry::Later);
        }
        // The role may have changed while we asked (this broker may even lead now): the
        // answer is about a log this broker no longer follows.
        if open.role_generation.get() != generation {
            return Err(Retry::Later);
        }
        let log_end = open.log.log_end_offset();
        let high_watermark = open.replica.borrow().high_watermark();
        let target = open.epochs.borrow().divergence_point(
            (answer.leader_epoch, answer.end_offset),
            high_watermark,
            log_end,
        );
        if target >= log_end {
            return Ok(());
        }
        let target = target.max(open.log.log_start_offset());
        tracing::warn!(
            topic,
            partition,
            from = log_end,
            to = target,
            "cutting a divergent tail"
        );
        self.truncate_partition(topic, partition, open, target)
            .await
            .map_err(|error| {
                tracing::error!(topic, partition, %error, "cannot cut the log");
                Retry::Later
            })
    }

    /// Cuts the log at `offset` and brings everything derived from it along.
    async fn truncate_partition(
        &self,
        topic: &str,
        partition: i32,
        open: &Partition,
        offset: i64,
    ) -> Result<(), LogError> {
        let log_end = open.log.truncate_to(offset).await?;
        self.read_ahead.forget(&(topic.to_string(), partition));
        open.epochs.borrow_mut().truncate_from_end(log_end)?;
        open.replica.borrow_mut().truncated(log_end);
        if let Some(tail) = &open.tail {
            tail.borrow_mut().clear();
        }
        *open.producers.borrow_mut() = rebuild_producers(&open.log).await?;
        open.publish_progress();
        Ok(())
    }

    /// Appends the whole batches of a replica fetch as the leader wrote them, then takes the
    /// leader's high watermark (capped at our log end).
    async fn append_fetched(
        &self,
        open: &Partition,
        fetched: &FetchedPartition,
    ) -> Result<(), LogError> {
        let records: &Bytes = &fetched.records;
        let cut = |range| records.slice(range);
        for item in batch::valid_batches(records, self.shared.config.max_batch_bytes, cut) {
            let valid = match item {
                Ok(found) => found,
                // A size-limited fetch may end inside a batch; it comes whole next time.
                Err(BatchError::Truncated { .. }) => break,
                Err(error) => return Err(LogError::InvalidBatch(error)),
            };
            let header = *valid.header();
            if header.last_offset() < open.log.log_end_offset() {
                continue;
            }
            open.epochs
                .borrow_mut()
                .assign(header.partition_leader_epoch, header.base_offset)?;
            let producers = &open.producers;
            let record_producer = |stored: &batch::BatchHeader| {
                if stored.producer_id >= 0 {
                    producers.borrow_mut().record(
                        stored.producer_id,
                        stored.producer_epoch,
                        stored.base_sequence,
                        stored.records_count,
                        stored.base_offset,
                    );
                }
                true
            };
            if let Some(info) = open
                .log
                .append_valid_replicated(&valid, record_producer)
                .await?
            {
                if let Some(tail) = &open.tail {
                    // The fetched batch already holds the leader's offsets and epoch. A
                    // replica fetch names one partition, so the slice keeps alive a response
                    // buffer of little more than the batches cached from it.
                    tail.borrow_mut().push(
                        info.base_offset,
                        info.last_offset,
                        Bytes::new(),
                        valid.bytes().clone(),
                    );
                }
            }
            open.end_offset.store(
                open.log.log_end_offset(),
                std::sync::atomic::Ordering::Release,
            );
        }
        open.replica
            .borrow_mut()
            .follow_high_watermark(fetched.high_watermark, open.log.log_end_offset());
        open.publish_progress();
        Ok(())
    }
}

/// What a follower does after a failed step.
enum Retry {
    /// The connection is suspect: open a new one.
    Reconnect,
    /// The leader is not ready (it has not seen the new epoch yet): ask again shortly.
    Later,
}
