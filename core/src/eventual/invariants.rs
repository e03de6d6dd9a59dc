//! The rules an eventual-mode node keeps between any two inputs.

use crate::storage::LogReader;

use super::{Node, Pending, TimerKind};

impl<R: LogReader> Node<R> {
    pub(super) fn check_node_invariants(&self) {
        self.timers.check_invariants();
        self.durability.check_invariants();
        self.hints.check_invariants();
        self.key_writes.check_invariants();
        assert!(
            self.inbox.is_empty(),
            "a message to itself was left unhandled"
        );
        assert!(
            self.pending.len() <= self.config.max_pending,
            "more requests in flight than the limit"
        );
        self.check_pending();
        self.check_background();
    }

    /// Every request in flight has its deadline and keeps its counts within N.
    fn check_pending(&self) {
        for (&req, pending) in &self.pending {
            assert!(
                self.timers.deadline(&TimerKind::Request(req)).is_some(),
                "request {req} has no deadline"
            );
            let (replicas, need) = match pending {
                Pending::Write(w) => {
                    assert!(
                        w.answered == (w.acked.len() >= w.need),
                        "a write is answered exactly when W replicas hold it"
                    );
                    assert!(w.acked.iter().all(|id| w.replicas.contains(id)));
                    assert!(
                        w.acked.is_empty() || w.state.is_some(),
                        "acked before applied"
                    );
                    (&w.replicas, w.need)
                }
                Pending::Read(r) => {
                    assert!(r.answers.keys().all(|id| r.replicas.contains(id)));
                    (&r.replicas, r.need)
                }
                Pending::Reap(r) => {
                    assert!(r.willing.iter().all(|id| r.replicas.contains(id)));
                    assert!(
                        r.willing.len() < r.replicas.len(),
                        "a reap agreed but not sent"
                    );
                    (&r.replicas, r.replicas.len())
                }
            };
            assert!(need >= 1 && need <= replicas.len(), "R or W out of range");
        }
        for kind in self.timers.kinds() {
            if let TimerKind::Request(req) = kind {
                assert!(self.pending.contains_key(req), "deadline of no request");
            }
        }
        for target in self.hints.targets() {
            assert!(
                self.config.cluster.nodes.contains_key(&target) && target != self.config.id,
                "hint for a node that is not another member"
            );
        }
    }

    /// Hints, graves, owed keys and resync streams keep their bounds and their timers.
    fn check_background(&self) {
        if !self.hints.is_empty() {
            assert!(
                self.timers.deadline(&TimerKind::HintAge).is_some(),
                "hints held without an age sweep"
            );
        }
        if !self.graves.is_empty() && !self.rearm_after_recovery {
            assert_eq!(
                self.timers.deadline(&TimerKind::GraveSweep),
                self.graves.values().min().copied(),
                "the grave sweep is armed for the earliest grave"
            );
        }
        if !self.owed.is_empty() && !self.rearm_after_recovery {
            assert_eq!(
                self.timers.deadline(&TimerKind::OwedSweep),
                self.owed.values().filter_map(|o| o.due_ms).min(),
                "the owed sweep is armed for the earliest owed key"
            );
        }
        assert!(
            self.owed.len() <= self.config.max_pending,
            "owed over its limit"
        );
        for owed in self.owed.values() {
            assert!(!owed.targets.is_empty(), "an owed key with nobody owed");
            assert!(!owed.targets.contains(&self.config.id), "owed to itself");
        }
        if !self.resync.waiting.is_empty() {
            assert!(
                self.timers.deadline(&TimerKind::ResyncAsk).is_some(),
                "waiting for a resync without asking again"
            );
        }
        for node in self.resync.streams.keys() {
            assert!(
                self.timers.deadline(&TimerKind::Resync(*node)).is_some(),
                "a stream without its next round"
            );
        }
        for key in self.graves.keys() {
            assert!(self.store.contains(key), "a grave of a key not held");
        }
    }
}
