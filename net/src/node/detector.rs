//! The node's failure detector, in the shell because it needs real time and sockets:
//! every node pings every other node each [`PING_INTERVAL_MS`] on the connection it keeps
//! to it; any line back (a pong, an answer), any message or ping from that node counts as
//! a sign of life. A node is down once its connection fails or nothing was heard from it
//! for [`DOWN_AFTER_MS`], and up again at its next sign of life. The core hears of each
//! change once (`NodeUp`, `NodeDown`), and answers `unavailable` when fewer replicas than
//! a request needs are up.

use std::collections::BTreeMap;

use ringkv_core::eventual::NodeId;

/// How often each other node is pinged.
pub(crate) const PING_INTERVAL_MS: u64 = 300;
/// Silence after which a node is taken to be down: several pings, so that one slow turn
/// does not flap it.
pub(crate) const DOWN_AFTER_MS: u64 = 1_500;

/// A change of a node's state, for the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// It showed a sign of life after being down.
    Up(NodeId),
    /// It was lost.
    Down(NodeId),
}

/// What the detector knows of each other node.
#[derive(Debug)]
pub(crate) struct Detector {
    /// Up or down, and when it was last heard from.
    nodes: BTreeMap<NodeId, (bool, u64)>,
    next_ping_ms: u64,
}

impl Detector {
    /// Every node starts up (as in the core), heard from at `now_ms`.
    pub(crate) fn new(others: impl IntoIterator<Item = NodeId>, now_ms: u64) -> Self {
        Self {
            nodes: others.into_iter().map(|id| (id, (true, now_ms))).collect(),
            next_ping_ms: now_ms,
        }
    }

    /// `node` showed a sign of life.
    pub(crate) fn heard(&mut self, node: NodeId, now_ms: u64) -> Option<Change> {
        let (up, heard_ms) = self.nodes.get_mut(&node)?;
        *heard_ms = now_ms;
        let was_down = !*up;
        *up = true;
        was_down.then_some(Change::Up(node))
    }

    /// Whether `node` is taken to be up (false for a node not in the cluster).
    pub(crate) fn is_up(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|(up, _)| *up)
    }

    /// The connection to `node` failed or could not be opened.
    pub(crate) fn lost(&mut self, node: NodeId) -> Option<Change> {
        let (up, _) = self.nodes.get_mut(&node)?;
        let was_up = *up;
        *up = false;
        was_up.then_some(Change::Down(node))
    }

    /// Nodes silent for too long, now down.
    pub(crate) fn expire(&mut self, now_ms: u64, changes: &mut Vec<Change>) {
        for (&node, (up, heard_ms)) in &mut self.nodes {
            if *up && now_ms.saturating_sub(*heard_ms) >= DOWN_AFTER_MS {
                *up = false;
                changes.push(Change::Down(node));
            }
        }
    }

    /// Whether a ping round is due; if so, the next one is scheduled.
    pub(crate) fn ping_due(&mut self, now_ms: u64) -> bool {
        if now_ms < self.next_ping_ms {
            return false;
        }
        self.next_ping_ms = now_ms.saturating_add(PING_INTERVAL_MS);
        true
    }

    /// When the detector next has work: the next ping round (which also expires nodes).
    pub(crate) fn next_deadline_ms(&self) -> u64 {
        self.next_ping_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_or_a_lost_connection_downs_a_node_and_life_brings_it_back_once() {
        let mut d = Detector::new([1, 2], 0);
        let mut changes = Vec::new();
        d.expire(DOWN_AFTER_MS - 1, &mut changes);
        assert!(changes.is_empty());
        assert_eq!(d.heard(1, 1_000), None, "up already: no change");
        d.expire(DOWN_AFTER_MS, &mut changes);
        assert_eq!(changes, vec![Change::Down(2)]);
        assert_eq!(d.heard(2, 1_600), Some(Change::Up(2)));
        assert_eq!(d.lost(1), Some(Change::Down(1)));
        assert_eq!(d.lost(1), None, "reported once");
        assert!(!d.is_up(1) && d.is_up(2) && !d.is_up(9));
        assert_eq!(d.heard(9, 0), None, "not a member");
        assert!(d.ping_due(0));
        assert!(!d.ping_due(PING_INTERVAL_MS - 1));
        assert!(d.ping_due(PING_INTERVAL_MS));
    }
}
