//! The writes this node applied as a key's first replica, remembered so that a
//! duplicated `ev_write` (the network may deliver a message twice) is applied once. A
//! second application would make a second version with the same value under a new dot:
//! a sibling no client wrote concurrently (PROTOCOL.md section 2 forbids false siblings).

use std::collections::{BTreeSet, VecDeque};

use super::config::NodeId;

/// How many applied writes are remembered. A duplicate comes within the network's delay
/// of the original, while the node applies far fewer writes than this in that time; an
/// older duplicate would be applied again, as before this bound existed.
pub(super) const MAX_RECENT_WRITES: usize = 4096;

/// The most recent writes applied, by coordinator and its request number (unique per
/// coordinator's life, since each life starts its numbers at a random point).
#[derive(Debug, Default)]
pub(super) struct RecentWrites {
    order: VecDeque<(NodeId, u64)>,
    seen: BTreeSet<(NodeId, u64)>,
}

impl RecentWrites {
    /// Whether `coordinator`'s `req` was applied here already.
    pub(super) fn contains(&self, coordinator: NodeId, req: u64) -> bool {
        self.seen.contains(&(coordinator, req))
    }

    /// Remembers that `coordinator`'s `req` was applied, forgetting the oldest at the
    /// bound.
    pub(super) fn insert(&mut self, coordinator: NodeId, req: u64) {
        if !self.seen.insert((coordinator, req)) {
            return;
        }
        self.order.push_back((coordinator, req));
        if self.order.len() > MAX_RECENT_WRITES {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}
