//! Share groups (Kafka's KIP-932): queues over Kafka partitions.
//!
//! Several members of one share group read the same partitions. Each record is leased to
//! one member at a time under an acquisition lock, and the member then accepts it, releases
//! it (it is offered again) or rejects it; a record delivered too often is archived.
//!
//! Three kinds of state, each on the core that has a reason to own it:
//! - **Membership** ([`membership`]): members, their epochs, subscriptions, assignments and
//!   share sessions. It lives on the core of the group's `__consumer_offsets` partition (the
//!   same placement as classic groups, [`group::coordinator_for`](super::group::coordinator_for)),
//!   in memory only, as Kafka's classic membership does here.
//! - **Share partitions** ([`window`], [`leader`]): for one (group, topic, partition), the
//!   start offset (SPSO), the end of what was ever acquired (SPEO), and the state and
//!   delivery count of every record in between. It lives on the core that owns the data
//!   partition, so acquiring reads the log locally; other cores forward to it, as produce
//!   and fetch do.
//! - **Durable state** ([`store`], layout in [`record`]): every change that must survive a
//!   restart (acknowledgements, releases, archived records, delivery counts) writes a
//!   snapshot of the share partition to the internal topic `__share_group_state`; a core
//!   replays its partitions of that topic on first use. Locks are not written: after a
//!   restart, acquired records are offered again, as Kafka does.
//!
//! Everything here crosses cores as a [`ShareCall`] (through `Shard::call_core`) and comes
//! back as a [`ShareAnswer`]; refusals are [`ShareError`]s, which `broker::api` turns into
//! Kafka codes. `docs/groups.md` ("Share groups") covers the protocol, the
//! record format and the limits.

pub mod error;
pub mod leader;
pub mod membership;
pub mod record;
pub mod remote;
pub mod store;
pub mod window;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use event_listener::EventListener;
use uuid::Uuid;

use super::metadata::Topic;
use super::shard::Shard;
pub use error::{AckBatchError, ShareError, StateRefusal};
pub use membership::{
    HeartbeatAnswer, HeartbeatOutcome, HeartbeatRefusal, HeartbeatRequest, SessionOp,
    ShareGroupDescription,
};
pub use record::{Snapshot, StateKey};
pub use window::AckBatch;

/// The internal topic that holds share-partition state.
pub const STATE_TOPIC: &str = "__share_group_state";

/// Acknowledge types of ShareFetch and ShareAcknowledge v1.
pub mod acknowledge_type {
    pub const GAP: i8 = 0;
    pub const ACCEPT: i8 = 1;
    pub const RELEASE: i8 = 2;
    pub const REJECT: i8 = 3;
}

/// The group config (IncrementalAlterConfigs on a GROUP resource) that overrides
/// `share_auto_offset_reset` for one group.
pub const GROUP_CONFIG_OFFSET_RESET: &str = "share.auto.offset.reset";

pub use super::config::OffsetReset;

/// The share groups' limits and timings (from the broker's config: [`ShareSettings::from_config`]).
#[derive(Clone, Debug)]
pub struct ShareSettings {
    pub lock_duration: Duration,
    pub delivery_count_limit: u16,
    pub max_record_locks: u32,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub max_size: usize,
    pub offset_reset: OffsetReset,
    pub state_topic_partitions: i32,
}

impl ShareSettings {
    /// The settings the broker's config names.
    pub fn from_config(config: &super::BrokerConfig) -> ShareSettings {
        ShareSettings {
            lock_duration: Duration::from_millis(config.share_record_lock_duration_ms),
            delivery_count_limit: config.share_delivery_count_limit,
            max_record_locks: config.share_partition_max_record_locks,
            session_timeout: Duration::from_millis(config.share_session_timeout_ms),
            heartbeat_interval: Duration::from_millis(config.share_heartbeat_interval_ms),
            max_size: config.share_group_max_size,
            offset_reset: OffsetReset::from_name(&config.share_auto_offset_reset)
                .unwrap_or(OffsetReset::Latest),
            state_topic_partitions: config.share_state_topic_partitions,
        }
    }
}

/// What a ShareFetch asks of one partition besides acknowledging.
#[derive(Clone, Copy, Debug)]
pub struct AcquireLimits {
    pub max_records: u32,
    pub max_bytes: u64,
}

/// A request for one share partition, served on the core that owns the data partition.
#[derive(Debug)]
pub struct PartitionCall {
    pub group_id: String,
    pub member_id: String,
    pub topic: Arc<Topic>,
    pub partition: i32,
    /// Validated by the API layer (`window::check_batches`), applied all or nothing.
    pub acknowledgements: Vec<AckBatch>,
    /// `None`: acknowledge only.
    pub acquire: Option<AcquireLimits>,
}

/// Offsets `first..=last` acquired, each delivered `delivery_count` times so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcquiredRange {
    pub first: i64,
    pub last: i64,
    pub delivery_count: u16,
}

/// What one partition call acquired for its member.
#[derive(Debug, Default)]
pub struct Acquisition {
    /// Whole batches that hold the acquired records (and maybe others, not acquired).
    pub records: Option<Bytes>,
    pub acquired: Vec<AcquiredRange>,
    /// When nothing was acquired: fires when something may have become acquirable.
    pub wake: Vec<EventListener>,
}

/// One share partition's answer: the partition's (acquiring, or why it could not be
/// served at all) and its acknowledgements', apart, as ShareFetch answers them.
#[derive(Debug)]
pub struct PartitionAnswer {
    pub acquisition: Result<Acquisition, ShareError>,
    pub acknowledged: Result<(), ShareError>,
}

impl PartitionAnswer {
    /// Nothing acquired, nothing refused.
    pub fn empty() -> PartitionAnswer {
        PartitionAnswer {
            acquisition: Ok(Acquisition::default()),
            acknowledged: Ok(()),
        }
    }

    /// The partition could not be served.
    pub fn failed(error: impl Into<ShareError>) -> PartitionAnswer {
        PartitionAnswer {
            acquisition: Err(error.into()),
            acknowledged: Ok(()),
        }
    }
}

/// What one core is asked to do for share groups (it crosses cores, so it is `Send`).
#[derive(Debug)]
pub enum ShareCall {
    /// For the group coordinator (the core of the group's `__consumer_offsets` partition).
    Heartbeat(HeartbeatRequest),
    Describe {
        group_id: String,
    },
    Session(SessionOp),
    /// For the core that owns the data partition.
    Partition(PartitionCall),
    /// Every core: release what `member_id` holds in every share partition of `group_id`.
    ReleaseMember {
        group_id: String,
        member_id: String,
    },
    /// For the core that owns `__share_group_state` partition `partition`, asked by the
    /// leader of the data partition at `leader_epoch`.
    ReadState {
        partition: i32,
        key: StateKey,
        leader_epoch: i32,
    },
    WriteState {
        partition: i32,
        key: StateKey,
        leader_epoch: i32,
        snapshot: Snapshot,
    },
}

/// The answer, one variant per [`ShareCall`] kind.
#[derive(Debug)]
pub enum ShareAnswer {
    Heartbeat(HeartbeatOutcome),
    Described(Result<ShareGroupDescription, ShareError>),
    /// The session's partitions to fetch from.
    Session(Result<Vec<(Uuid, i32)>, ShareError>),
    Partition(PartitionAnswer),
    Released,
    State(Result<Option<Snapshot>, ShareError>),
    Written(Result<(), ShareError>),
}

/// One core's share-group state; lives in its [`Shard`].
pub struct ShareCore {
    pub settings: ShareSettings,
    pub groups: membership::ShareGroups,
    pub partitions: leader::SharePartitions,
    pub store: store::StateStore,
    ticking: Cell<bool>,
}

impl ShareCore {
    pub fn new(config: &super::BrokerConfig) -> ShareCore {
        ShareCore {
            settings: ShareSettings::from_config(config),
            groups: membership::ShareGroups::default(),
            partitions: leader::SharePartitions::default(),
            store: store::StateStore::default(),
            ticking: Cell::new(false),
        }
    }
}

/// How often each core expires members and acquisition locks.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// Serves one call on this core.
pub async fn handle(shard: &Rc<Shard>, call: ShareCall) -> ShareAnswer {
    start_ticking(shard);
    match call {
        ShareCall::Heartbeat(request) => {
            ShareAnswer::Heartbeat(membership::heartbeat(shard, request))
        }
        ShareCall::Describe { group_id } => {
            ShareAnswer::Described(membership::describe(shard, &group_id))
        }
        ShareCall::Session(op) => ShareAnswer::Session(membership::session(shard, op)),
        ShareCall::Partition(call) => ShareAnswer::Partition(leader::serve(shard, call).await),
        ShareCall::ReleaseMember {
            group_id,
            member_id,
        } => {
            leader::release_member(shard, &group_id, &member_id).await;
            ShareAnswer::Released
        }
        ShareCall::ReadState {
            partition,
            key,
            leader_epoch,
        } => ShareAnswer::State(store::read(shard, partition, &key, leader_epoch).await),
        ShareCall::WriteState {
            partition,
            key,
            leader_epoch,
            snapshot,
        } => {
            ShareAnswer::Written(store::write(shard, partition, key, leader_epoch, snapshot).await)
        }
    }
}

/// Sends `call` to `core` and waits for its answer (`None`: the core is gone).
pub async fn call_core(shard: &Rc<Shard>, core: usize, call: ShareCall) -> Option<ShareAnswer> {
    // Boxed: serving a share call may forward another one (the future would be recursive).
    Box::pin(shard.call_core(core, move |shard| async move { handle(&shard, call).await })).await
}

/// Starts this core's timer task once: it expires silent members and acquisition locks,
/// and retries durable writes that failed.
fn start_ticking(shard: &Rc<Shard>) {
    if shard.shares.ticking.replace(true) {
        return;
    }
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(TICK_INTERVAL).await;
            let Some(shard) = weak.upgrade() else { break };
            if shard.shared.is_shutting_down() {
                break;
            }
            let now = std::time::Instant::now();
            for (group_id, member_id) in membership::expire(&shard, now) {
                tracing::info!(group = %group_id, member = %member_id, "share member expired");
                glommio::spawn_local(release_everywhere(Rc::clone(&shard), group_id, member_id))
                    .detach();
            }
            leader::tick(&shard, now).await;
        }
    })
    .detach();
}

/// Releases what a member holds in every share partition, on every core.
pub async fn release_everywhere(shard: Rc<Shard>, group_id: String, member_id: String) {
    for core in 0..shard.shared.cores {
        let call = ShareCall::ReleaseMember {
            group_id: group_id.clone(),
            member_id: member_id.clone(),
        };
        call_core(&shard, core, call).await;
    }
}
