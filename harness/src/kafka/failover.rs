//! Finding partition leaders again after one is lost.
//!
//! Producers and consumers connect to the leaders of their partitions, one connection per
//! leader. When a leader dies (connection lost) or steps down (`NOT_LEADER_OR_FOLLOWER` and
//! the other retriable Kafka errors), the actor that noticed asks any broker it knows for fresh
//! metadata, groups its partitions by their leaders again and reconnects, retrying every
//! [`RETRY_BACKOFF`] until the cluster has a leader for each of them, for at most
//! [`FAILOVER_TIMEOUT`]. A cluster needs a while to notice a dead broker (Kafka's broker
//! session timeout, 9 s by default), during which metadata still names it.

use std::time::{Duration, Instant};

use shardlog_protocol::client::Connection;

use super::metadata::{self, TopicLayout};
use super::{open, ClientError, WorkloadError};

/// Longest an actor waits for its partitions to have reachable leaders again.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between attempts to find and reach the leaders.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Connections to partition leaders, each with the partitions it leads.
pub type LeaderConnections = Vec<(Connection, Vec<i32>)>;

/// Whether an error may go away once the actor has fresh metadata: a lost or refused
/// connection, a timeout, or a Kafka error the protocol marks retriable.
pub fn is_retriable(error: &WorkloadError) -> bool {
    match error {
        WorkloadError::Client(error) => client_error_is_retriable(error),
        _ => false,
    }
}

/// [`is_retriable`] for what the client reports.
pub fn client_error_is_retriable(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. }
        | ClientError::Io { .. }
        | ClientError::Closed { .. }
        | ClientError::Timeout { .. } => true,
        ClientError::Broker { error, .. } | ClientError::BrokerRequest { error, .. } => {
            error.is_retriable()
        }
        _ => false,
    }
}

/// The brokers an actor knows: the bootstrap address and every broker metadata named since.
/// Dead ones stay listed (they may come back) and are skipped when they do not answer.
#[derive(Clone, Debug)]
pub struct KnownBrokers {
    addresses: Vec<String>,
    client_id: String,
}

impl KnownBrokers {
    pub fn new(bootstrap: &str, layout: Option<&TopicLayout>, client_id: &str) -> KnownBrokers {
        let mut known = KnownBrokers {
            addresses: vec![bootstrap.to_string()],
            client_id: client_id.to_string(),
        };
        if let Some(layout) = layout {
            known.learn(layout);
        }
        known
    }

    fn learn(&mut self, layout: &TopicLayout) {
        for address in &layout.brokers {
            if !self.addresses.contains(address) {
                self.addresses.push(address.clone());
            }
        }
    }

    /// The same brokers, for an actor with its own client id.
    pub fn with_client_id(&self, client_id: &str) -> KnownBrokers {
        KnownBrokers {
            addresses: self.addresses.clone(),
            client_id: client_id.to_string(),
        }
    }

    /// A connection to the first known broker that answers.
    pub fn any(&self) -> Result<Connection, ClientError> {
        let mut last_error = None;
        for address in &self.addresses {
            match open(address, &self.client_id) {
                Ok(connection) => return Ok(connection),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least the bootstrap address is known"))
    }

    /// The topic's current layout, from the first broker that answers with a leader for
    /// every partition; `Ok(None)` if none does yet.
    fn layout(&mut self, topic: &str) -> Result<Option<TopicLayout>, ClientError> {
        let mut last_error = None;
        for address in self.addresses.clone() {
            let described = open(&address, &self.client_id)
                .and_then(|mut connection| metadata::describe_topic(&mut connection, topic));
            match described {
                Ok(Some(layout)) => {
                    self.learn(&layout);
                    return Ok(Some(layout));
                }
                Ok(None) => {}
                Err(error) if client_error_is_retriable(&error) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        match last_error {
            Some(error) => Err(error),
            None => Ok(None),
        }
    }

    /// Connections to the leaders of `partitions`, each with the partitions it leads,
    /// retrying until every leader is reachable. `Ok(None)` if `give_up` says so first.
    pub fn connect_leaders(
        &mut self,
        topic: &str,
        partitions: &[i32],
        give_up: impl Fn() -> bool,
    ) -> Result<Option<LeaderConnections>, WorkloadError> {
        let started = Instant::now();
        loop {
            if give_up() {
                return Ok(None);
            }
            match self.try_connect_leaders(topic, partitions) {
                Ok(Some(connections)) => return Ok(Some(connections)),
                Ok(None) => {}
                Err(error) if is_retriable(&error) => {
                    if started.elapsed() > FAILOVER_TIMEOUT {
                        return Err(error);
                    }
                }
                Err(error) => return Err(error),
            }
            if started.elapsed() > FAILOVER_TIMEOUT {
                return Err(WorkloadError::Stalled {
                    what: format!("finding the leaders of {topic} {partitions:?}"),
                    waited_s: FAILOVER_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(RETRY_BACKOFF);
        }
    }

    fn try_connect_leaders(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Option<LeaderConnections>, WorkloadError> {
        let Some(layout) = self.layout(topic)? else {
            return Ok(None);
        };
        let mut connections = Vec::new();
        for (leader, led) in by_leader(&layout, partitions)? {
            connections.push((open(&leader, &self.client_id)?, led));
        }
        Ok(Some(connections))
    }
}

/// `partitions` grouped by the broker that leads them, as (leader address, partitions): an
/// actor keeps one connection per broker it talks to, as Kafka clients do.
pub fn by_leader(
    layout: &TopicLayout,
    partitions: &[i32],
) -> Result<Vec<(String, Vec<i32>)>, WorkloadError> {
    let mut groups: Vec<(String, Vec<i32>)> = Vec::new();
    for partition in partitions {
        let leader = layout
            .partitions
            .iter()
            .find(|leader| leader.partition == *partition)
            .map(|leader| leader.leader_address.clone())
            .ok_or_else(|| WorkloadError::Topic {
                topic: layout.name.clone(),
                reason: format!("partition {partition} has no leader in metadata"),
            })?;
        match groups.iter_mut().find(|(address, _)| *address == leader) {
            Some((_, group)) => group.push(*partition),
            None => groups.push((leader, vec![*partition])),
        }
    }
    Ok(groups)
}
