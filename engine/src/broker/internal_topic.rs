//! The state a core rebuilds from the partitions of an internal topic it leads
//! (`__consumer_offsets` for groups, `__share_group_state` for share groups), under one rule.
//!
//! - A partition's state is built on first use by replaying the partition's whole log, and
//!   only while this broker leads the partition: a follower's log may lag.
//! - Concurrent first uses share one replay; nothing is answered before it ends.
//! - Leadership is checked again once the replay ends, since it may have moved while the log
//!   was read: a state kept then would be taken for current by a later leadership.
//! - When this broker stops leading the partition, the owner drops its state
//!   ([`Replayed::unload`]); a later leadership replays afresh.
//!
//! **Concurrency.** One per core, on that core's executor (`RefCell`s, no locks). The loading
//! map holds one shared future per partition being replayed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::future::{FutureExt, LocalBoxFuture, Shared as SharedFuture};

use super::metadata::{Topic, TopicError};
use super::shard::{Partition, PartitionError, Shard};
use crate::error::LogError;

type Loading<S> = SharedFuture<LocalBoxFuture<'static, Result<Rc<S>, LoadError>>>;

/// Why the state of an internal topic's partition is not there to serve from. Both
/// coordinators answer these alike: the client looks for the coordinator again and retries.
/// `Clone` because one failed replay is reported to every request that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The internal topic does not exist (yet), or could not be created.
    #[error("internal topic {topic} is not available")]
    NoTopic {
        topic: &'static str,
        #[source]
        source: Option<TopicError>,
    },
    /// The partition's log could not be opened on this broker.
    #[error(transparent)]
    Open(PartitionError),
    /// This broker does not lead the partition (before the replay, or no longer after it).
    #[error("this broker does not lead {topic}-{partition}")]
    NotLeader { topic: String, partition: i32 },
    /// Reading the partition's log failed partway through the replay. (Boxed: the log's
    /// error is large, and this one travels in every coordinator answer.)
    #[error("cannot replay {topic}-{partition}: {source}")]
    Replay {
        topic: String,
        partition: i32,
        source: Box<LogError>,
    },
}

/// The replayed state `S` of each partition of one internal topic that this core leads.
pub struct Replayed<S> {
    loaded: RefCell<HashMap<i32, Rc<S>>>,
    loading: RefCell<HashMap<i32, Loading<S>>>,
}

impl<S> Default for Replayed<S> {
    fn default() -> Self {
        Replayed {
            loaded: RefCell::new(HashMap::new()),
            loading: RefCell::new(HashMap::new()),
        }
    }
}

impl<S: 'static> Replayed<S> {
    /// The partition's state, replaying its log with `replay` on first use. Errs when the
    /// partition cannot be opened, when this broker does not lead it (before or after the
    /// replay), or when `replay` cannot read the log.
    pub async fn load<F, Fut>(
        &self,
        shard: &Rc<Shard>,
        topic: &Arc<Topic>,
        partition: i32,
        replay: F,
    ) -> Result<Rc<S>, LoadError>
    where
        F: FnOnce(Rc<Partition>) -> Fut + 'static,
        Fut: Future<Output = Result<S, LogError>> + 'static,
    {
        if let Some(state) = self.loaded.borrow().get(&partition) {
            return Ok(Rc::clone(state));
        }
        let existing = self.loading.borrow().get(&partition).cloned();
        let loading = match existing {
            Some(loading) => loading,
            None => {
                let shard = Rc::clone(shard);
                let topic = Arc::clone(topic);
                let future = async move {
                    let open = open_led(&shard, &topic, partition).await?;
                    replay(open).await.map(Rc::new).map_err(|source| {
                        tracing::error!(topic = %topic.name, partition, %source, "cannot replay an internal partition");
                        LoadError::Replay {
                            topic: topic.name.clone(),
                            partition,
                            source: Box::new(source),
                        }
                    })
                }
                .boxed_local()
                .shared();
                self.loading.borrow_mut().insert(partition, future.clone());
                future
            }
        };
        let result = loading.await;
        self.loading.borrow_mut().remove(&partition);
        let state = result?;
        if open_led(shard, topic, partition).await.is_err() {
            return Err(LoadError::NotLeader {
                topic: topic.name.clone(),
                partition,
            });
        }
        Ok(Rc::clone(
            self.loaded
                .borrow_mut()
                .entry(partition)
                .or_insert_with(|| state),
        ))
    }

    /// Forgets the partition's state (this broker stopped leading it); the state, if any.
    pub fn unload(&self, partition: i32) -> Option<Rc<S>> {
        self.loaded.borrow_mut().remove(&partition)
    }

    /// The states loaded now.
    pub fn loaded(&self) -> Vec<Rc<S>> {
        self.loaded.borrow().values().cloned().collect()
    }
}

/// The partition, open, if this broker leads it.
async fn open_led(
    shard: &Rc<Shard>,
    topic: &Arc<Topic>,
    partition: i32,
) -> Result<Rc<Partition>, LoadError> {
    let open = shard.partition(topic, partition).await.map_err(|error| {
        tracing::error!(%error, "cannot open an internal partition");
        LoadError::Open(error)
    })?;
    if !open.is_leader() {
        return Err(LoadError::NotLeader {
            topic: topic.name.clone(),
            partition,
        });
    }
    Ok(open)
}
