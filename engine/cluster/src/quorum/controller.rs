//! The controller's duties, run by whichever voter is the raft leader: fence brokers that
//! stopped heartbeating, unfence fenced brokers that heartbeat again.
//!
//! Pure bookkeeping over the clock the driver passes in, so it is tested without a network.
//! A new leader has heard from nobody yet, so it counts every broker as heard at the moment
//! it became leader: nobody is fenced within the first session timeout of a leadership.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::state::{BrokerId, ClusterState, Command};

/// How long the controller waits before proposing the same fence or unfence again (the first
/// proposal may have been lost in a leader change).
pub const REPROPOSE_INTERVAL: Duration = Duration::from_secs(1);

/// The largest number of brokers whose heartbeats are remembered: bounds the map against
/// heartbeats from ids that never register.
pub const BROKERS_TRACKED_MAX: usize = 4096;

pub struct Controller {
    session_timeout: Duration,
    /// When this voter became the leader; `None` while it is not.
    leader_since: Option<Instant>,
    last_heard: HashMap<BrokerId, Instant>,
    /// Fence or unfence proposals made recently, per broker.
    proposed: HashMap<BrokerId, Instant>,
}

impl Controller {
    pub fn new(session_timeout: Duration) -> Controller {
        Controller {
            session_timeout,
            leader_since: None,
            last_heard: HashMap::new(),
            proposed: HashMap::new(),
        }
    }

    /// A heartbeat from `broker` arrived.
    pub fn heard(&mut self, broker: BrokerId, now: Instant) {
        if self.last_heard.len() >= BROKERS_TRACKED_MAX && !self.last_heard.contains_key(&broker) {
            return;
        }
        self.last_heard.insert(broker, now);
    }

    /// Follows the raft role: call on every turn of the driver.
    pub fn set_leader(&mut self, is_leader: bool, now: Instant) {
        match (is_leader, self.leader_since) {
            (true, None) => self.leader_since = Some(now),
            (false, Some(_)) => {
                self.leader_since = None;
                self.proposed.clear();
            }
            _ => {}
        }
    }

    /// The fences and unfences to propose now (empty unless leader).
    pub fn due(&mut self, state: &ClusterState, now: Instant) -> Vec<Command> {
        let Some(leader_since) = self.leader_since else {
            return Vec::new();
        };
        let mut commands = Vec::new();
        for broker in state.brokers.values() {
            let heard = self.last_heard.get(&broker.id).copied();
            let alive_since = heard.map_or(leader_since, |heard| heard.max(leader_since));
            let silent = now.saturating_duration_since(alive_since) >= self.session_timeout;
            let command = if !broker.fenced && silent {
                Command::FenceBroker { id: broker.id }
            } else if broker.fenced
                && heard.is_some_and(|heard| {
                    now.saturating_duration_since(heard) < self.session_timeout
                })
            {
                Command::UnfenceBroker { id: broker.id }
            } else {
                continue;
            };
            let recently = self
                .proposed
                .get(&broker.id)
                .is_some_and(|at| now.saturating_duration_since(*at) < REPROPOSE_INTERVAL);
            if !recently {
                self.proposed.insert(broker.id, now);
                commands.push(command);
            }
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(9);

    fn state(fenced: &[BrokerId]) -> ClusterState {
        let mut state = ClusterState::default();
        for id in 0..3 {
            state
                .apply(&Command::RegisterBroker {
                    id,
                    host: "h".into(),
                    port: 1,
                })
                .expect("register");
        }
        for id in fenced {
            state
                .apply(&Command::FenceBroker { id: *id })
                .expect("fence");
        }
        state
    }

    #[test]
    fn nobody_is_fenced_within_the_first_session_of_a_leadership() {
        let start = Instant::now();
        let mut controller = Controller::new(SESSION);
        assert!(
            controller.due(&state(&[]), start + SESSION * 2).is_empty(),
            "not leader"
        );
        controller.set_leader(true, start);
        assert!(controller.due(&state(&[]), start + SESSION / 2).is_empty());
        controller.heard(0, start + SESSION / 2);
        controller.heard(1, start + SESSION / 2);
        let due = controller.due(&state(&[]), start + SESSION);
        assert_eq!(due, vec![Command::FenceBroker { id: 2 }]);
        assert!(
            controller.due(&state(&[]), start + SESSION).is_empty(),
            "not proposed twice at once"
        );
    }

    #[test]
    fn a_fenced_broker_that_heartbeats_is_unfenced() {
        let start = Instant::now();
        let mut controller = Controller::new(SESSION);
        controller.set_leader(true, start);
        let fenced = state(&[1]);
        assert!(controller
            .due(&fenced, start + Duration::from_secs(1))
            .iter()
            .all(|command| !matches!(command, Command::UnfenceBroker { .. })));
        controller.heard(1, start + Duration::from_secs(2));
        let due = controller.due(&fenced, start + Duration::from_secs(3));
        assert!(due.contains(&Command::UnfenceBroker { id: 1 }), "{due:?}");
    }

    #[test]
    fn losing_leadership_stops_the_duties() {
        let start = Instant::now();
        let mut controller = Controller::new(SESSION);
        controller.set_leader(true, start);
        controller.set_leader(false, start + SESSION);
        assert!(controller.due(&state(&[]), start + SESSION * 3).is_empty());
    }
}
