//! What a committed raft entry carries: a [`Command`] and the id its proposer waits on.
//!
//! The data of a normal entry is the JSON of [`Proposal`]. An entry with empty data is the
//! no-op a new leader appends and carries nothing. The id lets the broker that proposed the
//! command (possibly a follower whose proposal raft forwarded to the leader) find its waiter
//! when the entry is applied; it is random, so ids from before a restart never match.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::Command;

/// The largest encoded proposal: bounds an entry (and so every raft message).
pub const PROPOSAL_BYTES_MAX: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: Uuid,
    pub command: Command,
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        // A Command holds only strings, numbers and lists: serialising it cannot fail.
        serde_json::to_vec(self).expect("a proposal serialises to JSON")
    }

    pub fn decode(bytes: &[u8]) -> Result<Proposal, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_round_trips() {
        let proposal = Proposal {
            id: Uuid::new_v4(),
            command: Command::FenceBroker { id: 3 },
        };
        assert_eq!(
            Proposal::decode(&proposal.encode()).expect("decode"),
            proposal
        );
        assert!(Proposal::decode(b"{\"id\":1}").is_err());
    }
}
