//! The votes of one transaction's participants (after raft-rs's `quorum/majority.rs`:
//! the count is its own piece). Two-phase commit needs every vote, not a majority.

use std::collections::BTreeMap;

use super::{NodeId, Vote};

/// Who was asked and what each voted so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteTally {
    participants: Vec<NodeId>,
    votes: BTreeMap<NodeId, Vote>,
}

impl VoteTally {
    /// A tally over `participants`: at least one, no node twice.
    pub fn new(participants: Vec<NodeId>) -> Self {
        assert!(
            !participants.is_empty(),
            "a transaction needs a participant"
        );
        let mut sorted = participants.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            participants.len(),
            "a participant listed twice"
        );
        Self {
            participants,
            votes: BTreeMap::new(),
        }
    }

    /// The participants, in the order they were given.
    pub fn participants(&self) -> &[NodeId] {
        &self.participants
    }

    /// Whether `node` takes part.
    pub fn includes(&self, node: NodeId) -> bool {
        self.participants.contains(&node)
    }

    /// Records `node`'s vote; whether it changed the tally. A `ready` replaces a refusal
    /// (the participant lost its refusal in a crash and then prepared durably, so it must
    /// hear the decision), and a refusal never replaces a `ready` (that prepare is
    /// durable and stays).
    pub fn record(&mut self, node: NodeId, vote: Vote) -> bool {
        if !self.includes(node) {
            return false;
        }
        match (self.votes.get(&node), &vote) {
            (Some(Vote::Ready), _) => false,
            (Some(Vote::Refuse(..)), Vote::Refuse(..)) => false,
            _ => {
                self.votes.insert(node, vote);
                true
            }
        }
    }

    /// `node`'s vote, if it voted.
    pub fn vote(&self, node: NodeId) -> Option<&Vote> {
        self.votes.get(&node)
    }

    /// Whether every participant voted.
    pub fn complete(&self) -> bool {
        self.votes.len() == self.participants.len()
    }

    /// Whether every participant voted ready: the only way to commit.
    pub fn unanimous_ready(&self) -> bool {
        self.complete() && self.votes.values().all(|v| *v == Vote::Ready)
    }

    /// Participants that have not voted, in order.
    pub fn missing(&self) -> Vec<NodeId> {
        self.participants
            .iter()
            .copied()
            .filter(|n| !self.votes.contains_key(n))
            .collect()
    }

    /// Votes only from participants.
    pub fn check_invariants(&self) {
        assert!(self.votes.len() <= self.participants.len());
        for node in self.votes.keys() {
            assert!(self.includes(*node), "a vote from outside the transaction");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ErrorCode;

    fn refuse() -> Vote {
        Vote::Refuse(ErrorCode::Locked, "locked".into())
    }

    #[test]
    fn commit_needs_every_vote_ready() {
        let mut t = VoteTally::new(vec![3, 1, 2]);
        assert!(t.record(1, Vote::Ready));
        assert!(!t.record(9, Vote::Ready), "outsiders do not vote");
        assert!(t.record(2, Vote::Ready));
        assert!(!t.complete());
        assert_eq!(t.missing(), vec![3]);
        assert!(t.record(3, refuse()));
        assert!(t.complete() && !t.unanimous_ready());
        assert!(
            t.record(3, Vote::Ready),
            "a durable ready replaces a refusal"
        );
        assert!(!t.record(3, refuse()), "a refusal never replaces a ready");
        assert!(t.unanimous_ready());
        t.check_invariants();
    }

    #[test]
    #[should_panic(expected = "listed twice")]
    fn a_participant_cannot_be_listed_twice() {
        VoteTally::new(vec![1, 1]);
    }
}
