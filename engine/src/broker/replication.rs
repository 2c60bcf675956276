//! Replication on the broker: each core adopts the quorum's view of the partitions it owns,
//! leads some (tracking followers, moving the high watermark, proposing ISR changes) and
//! follows others (a fetch task per partition that copies the leader's batches as they are).
//!
//! The rules live in `cluster::replica` (watermark, ISR), `cluster::epochs` (where each
//! leader epoch began), `cluster::leader` (answering fetches and epoch questions, ISR
//! proposals) and `cluster::follower` (the fetch loop's steps, appending fetched batches);
//! this file is the I/O around them, and the replication simulation drives the same rules. Everything runs on the core that
//! owns the partition, like produce and fetch, so nothing here takes a lock.

use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::FutureExt;

use super::group::OFFSETS_TOPIC;
use super::metadata::{PartitionState, Topic};
use super::partition::{EpochEnd, EpochEndOutcome};
use super::shard::{rebuild_producers, Partition, Shard};
use super::share::STATE_TOPIC;
use crate::cluster::fetcher::{FetchedPartition, FetcherError, LeaderConnection};
use crate::cluster::follower::{
    self, AfterFetch, Divergence, FetchAnswer, Follower, FollowerRequest,
};
use crate::cluster::leader;
use crate::cluster::quorum::ProposeError;
use crate::cluster::replica::Transition;
use crate::cluster::state::{BrokerId, Command};
use crate::log::AppendInfo;
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
            // Share partitions are kept by the data partition's leader, built from their
            // snapshots: a new role starts from those again.
            self.shares.partitions.unload(topic.id, partition);
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
            let proposal = leader::isr_proposal(
                &mut open.replica.borrow_mut(),
                &open.epochs.borrow(),
                now_ms(),
                lag_max_ms,
            );
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
                        leader::isr_proposal_refused(&mut open.replica.borrow_mut(), &refusal);
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
        let open = self.partition(topic, partition).await?;
        let (leader_epoch, end_offset) = leader::epoch_end(
            &open.replica.borrow(),
            &open.epochs.borrow(),
            current_leader_epoch,
            epoch,
            open.log.log_end_offset(),
        )?;
        Ok(EpochEnd {
            leader_epoch,
            end_offset,
        })
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
        let mut follower = Follower::new(leader);
        while current() {
            let Some(leader_connection) = connection.as_mut() else {
                match self.connect_to(leader, me).await {
                    Ok(fresh) => {
                        connection = Some(fresh);
                        follower.resync();
                    }
                    Err(error) => {
                        tracing::debug!(topic = %topic.name, partition, leader, %error, "leader unreachable");
                        glommio::timer::sleep(RETRY_PAUSE).await;
                    }
                }
                continue;
            };
            let epoch = open.replica.borrow().leader_epoch();
            let latest_epoch = open.epochs.borrow().latest_epoch();
            let offset = match follower.next_request(latest_epoch, open.log.log_end_offset()) {
                FollowerRequest::EpochEnd { epoch: latest } => {
                    let step = self
                        .truncate_divergent(
                            &open,
                            &mut follower,
                            leader_connection,
                            (&topic.name, partition),
                            (epoch, latest),
                            generation,
                        )
                        .await;
                    match step {
                        Ok(()) => {}
                        Err(Retry::Reconnect) => connection = None,
                        Err(Retry::Later) => glommio::timer::sleep(RETRY_PAUSE).await,
                    }
                    continue;
                }
                FollowerRequest::Fetch { offset } => offset,
            };
            let fetched = leader_connection
                .fetch(
                    &topic.name,
                    partition,
                    offset,
                    epoch,
                    config.replica_fetch_max_bytes.min(i32::MAX as u32) as i32,
                    Duration::from_millis(config.replica_fetch_wait_max_ms),
                )
                .await;
            if !current() {
                break;
            }
            let fetched = match fetched {
                Ok(fetched) => fetched,
                Err(error) => {
                    tracing::debug!(topic = %topic.name, partition, %error, "replica fetch failed");
                    connection = None;
                    glommio::timer::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            let answer = fetched.answer;
            if answer == FetchAnswer::OffsetOutOfRange {
                tracing::warn!(topic = %topic.name, partition, leader, "replica fetch offset out of range");
            }
            match follower.fetch_answered(answer) {
                AfterFetch::Append => {
                    if let Err(error) = self.append_fetched(&open, &fetched).await {
                        tracing::warn!(topic = %topic.name, partition, %error, "cannot append replicated batches");
                        follower.resync();
                        glommio::timer::sleep(RETRY_PAUSE).await;
                    }
                }
                AfterFetch::Pause => glommio::timer::sleep(RETRY_PAUSE).await,
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
            return Err(FetcherError::UnknownBroker { broker });
        };
        let idle_buffer_bytes = self.shared.config.replica_fetch_max_bytes as usize;
        LeaderConnection::connect(&address, me, CONNECT_TIMEOUT, idle_buffer_bytes).await
    }

    /// Asks the leader where this log's latest epoch (`epochs.1`) ended there, and cuts this
    /// log to that point (Kafka's KIP-101 and KIP-279): records past it were never committed.
    /// `epochs.0` is the leader epoch this follower believes current.
    async fn truncate_divergent(
        &self,
        open: &Partition,
        follower: &mut Follower,
        connection: &mut LeaderConnection,
        (topic, partition): (&str, i32),
        (current_epoch, latest): (i32, i32),
        generation: u64,
    ) -> Result<(), Retry> {
        let answer = connection
            .end_offset_for_epoch(topic, partition, current_epoch, latest)
            .await
            .map_err(|error| {
                tracing::debug!(topic, partition, %error, "OffsetForLeaderEpoch failed");
                Retry::Reconnect
            })?;
        // The role may have changed while we asked (this broker may even lead now): the
        // answer is about a log this broker no longer follows.
        if open.role_generation.get() != generation {
            return Err(Retry::Later);
        }
        let log_end = open.log.log_end_offset();
        let divergence = follower.divergence(
            answer,
            &open.epochs.borrow(),
            open.replica.borrow().high_watermark(),
            open.log.log_start_offset(),
            log_end,
        );
        let target = match divergence {
            Divergence::None => return Ok(()),
            Divergence::AskAgainLater => return Err(Retry::Later),
            Divergence::CutTo(target) => target,
        };
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
            })?;
        follower.cut();
        Ok(())
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
        let checkpoint = open.epochs.borrow_mut().stage_truncate_from_end(log_end);
        if let Some(checkpoint) = checkpoint {
            checkpoint.write().await?;
        }
        open.replica.borrow_mut().truncated(log_end);
        if let Some(tail) = &open.tail {
            tail.borrow_mut().clear();
        }
        *open.producers.borrow_mut() = rebuild_producers(&open.log).await?;
        open.publish_progress();
        Ok(())
    }

    /// Appends the whole batches of a replica fetch as the leader wrote them
    /// ([`follower::append_fetched`]), then takes the leader's high watermark (capped at our
    /// log end).
    async fn append_fetched(
        &self,
        open: &Partition,
        fetched: &FetchedPartition,
    ) -> Result<(), LogError> {
        let cache_and_publish = |info: &AppendInfo, batch: &Bytes| {
            if let Some(tail) = &open.tail {
                // The fetched batch already holds the leader's offsets and epoch. A replica
                // fetch names one partition, so the slice keeps alive a response buffer of
                // little more than the batches cached from it.
                tail.borrow_mut().push(
                    info.base_offset,
                    info.last_offset,
                    Bytes::new(),
                    batch.clone(),
                );
            }
            open.end_offset.store(
                open.log.log_end_offset(),
                std::sync::atomic::Ordering::Release,
            );
        };
        follower::append_fetched(
            &open.log,
            &open.epochs,
            &open.producers,
            &fetched.records,
            self.shared.config.max_batch_bytes,
            cache_and_publish,
        )
        .await?;
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
