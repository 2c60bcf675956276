//! Faults injected during the measured period (`--kill-leader-at`, `--restart-after`).
//!
//! At `kill_leader_at` into the measured period the harness asks the cluster which broker
//! leads partition 0 of the topic and kills that broker's process with SIGKILL: no clean
//! shutdown, whatever was not yet replicated is gone. `restart_after` later it starts the
//! same broker again on the same data directory and port. Producers and consumers carry on
//! through the failover on their own (`kafka::failover`); the run's verification then shows
//! whether any acknowledged record was lost or written twice.
//!
//! Only the harness's own cluster (`--brokers`) can be killed: the [`FaultInjector`] is what
//! reaches the processes.

use std::time::Duration;

use serde::Serialize;

use crate::kafka::failover::KnownBrokers;
use crate::kafka::{metadata, WorkloadError};

/// When to inject what, from the start of the measured period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    pub kill_leader_at: Duration,
    /// Restart the killed broker this long after the kill; `None`: leave it dead.
    pub restart_after: Option<Duration>,
}

/// What reaches the brokers' processes.
pub trait FaultInjector {
    /// Kills the broker serving Kafka clients at `address` with SIGKILL; returns its node id.
    fn kill(&mut self, address: &str) -> Result<usize, String>;
    /// Starts the broker killed last again (returns once it is started, not once it serves).
    fn restart(&mut self) -> Result<(), String>;
}

/// What happened, for the results.
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct FaultReport {
    /// The partition whose leader was killed (always 0), its node id and address.
    pub killed_partition: i32,
    pub killed_node: Option<usize>,
    pub killed_address: Option<String>,
    /// Seconds into the measured period.
    pub killed_at_s: Option<f64>,
    pub restarted_at_s: Option<f64>,
    /// Pipelines the producers and fetchers the consumers had to restart on new leaders.
    pub producer_failovers: u64,
    pub consumer_failovers: u64,
}

/// Steps through a [`FaultPlan`] as the measured period goes by.
pub struct FaultSchedule<'a> {
    plan: FaultPlan,
    injector: &'a mut dyn FaultInjector,
    pub report: FaultReport,
    restarted: bool,
}

impl<'a> FaultSchedule<'a> {
    pub fn new(plan: FaultPlan, injector: &'a mut dyn FaultInjector) -> FaultSchedule<'a> {
        FaultSchedule {
            plan,
            injector,
            report: FaultReport::default(),
            restarted: false,
        }
    }

    /// Injects what is due at `elapsed` into the measured period.
    pub fn tick(
        &mut self,
        elapsed: Duration,
        brokers: &KnownBrokers,
        topic: &str,
    ) -> Result<(), WorkloadError> {
        if self.report.killed_at_s.is_none() && elapsed >= self.plan.kill_leader_at {
            let address = leader_of_partition_0(brokers, topic)?;
            let node = self
                .injector
                .kill(&address)
                .map_err(|what| WorkloadError::Unsupported { what })?;
            eprintln!("harness: killed broker {node} ({address}), the leader of {topic}/0");
            self.report.killed_node = Some(node);
            self.report.killed_address = Some(address);
            self.report.killed_at_s = Some(elapsed.as_secs_f64());
        }
        let restart_due = self
            .plan
            .restart_after
            .zip(self.report.killed_at_s)
            .is_some_and(|(after, killed_at_s)| {
                elapsed.as_secs_f64() >= killed_at_s + after.as_secs_f64()
            });
        if restart_due && !self.restarted {
            self.restarted = true;
            self.injector
                .restart()
                .map_err(|what| WorkloadError::Unsupported { what })?;
            eprintln!("harness: restarted the killed broker");
            self.report.restarted_at_s = Some(elapsed.as_secs_f64());
        }
        Ok(())
    }
}

/// The address of the broker leading partition 0 now, from fresh metadata.
fn leader_of_partition_0(brokers: &KnownBrokers, topic: &str) -> Result<String, WorkloadError> {
    let mut connection = brokers.any()?;
    let layout =
        metadata::describe_topic(&mut connection, topic)?.ok_or_else(|| WorkloadError::Topic {
            topic: topic.to_string(),
            reason: "partition 0 has no leader to kill".to_string(),
        })?;
    layout
        .partitions
        .iter()
        .find(|leader| leader.partition == 0)
        .map(|leader| leader.leader_address.clone())
        .ok_or_else(|| WorkloadError::Topic {
            topic: topic.to_string(),
            reason: "no partition 0 in metadata".to_string(),
        })
}
