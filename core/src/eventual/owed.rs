//! The first replica's backstop for hinted handoff. Hints are made by the coordinator
//! at a write's deadline; a coordinator that crashes before it would leave a replica
//! that missed the write to read repair, and section 2 wants replicas to converge with
//! hints alone. So the replica that applied a client write first also logs which other
//! replicas are owed the key (a small record: its own state is what is owed). The
//! coordinator releases it with `ev_settled` once every replica confirmed or got a hint;
//! otherwise, after two timeouts, the first replica ships its current state of the key to
//! each owed replica itself until each confirms. A replica that reaps a key owes its
//! grave the same way (see `reap`).

use std::collections::BTreeSet;

use crate::proto::{PeerMessage, StateBytes};
use crate::storage::LogReader;
use crate::Ts;

use super::config::NodeId;
use super::record::Record;
use super::{Node, TimerKind};

/// What a first replica owes for one write it applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Owed {
    pub(super) key: String,
    /// Replicas that have not confirmed the key since.
    pub(super) targets: BTreeSet<NodeId>,
    /// The write's coordinator and its request, named by `ev_settled`.
    pub(super) coordinator: NodeId,
    pub(super) coordinator_req: u64,
    /// When to ship if not settled; `None` until the first input after recovery.
    pub(super) due_ms: Option<Ts>,
}

impl<R: LogReader> Node<R> {
    /// Logs what applying a client write of `key` for `coordinator`'s `req` owes the
    /// other replicas, before the write's state is logged (the write's answer waits for
    /// that later record, so for this one too). Nothing is owed when hints are off, or
    /// (at the limit) when too many writes are owed already: the coordinator's hints
    /// still cover those.
    pub(super) fn owe(&mut self, key: &str, coordinator: NodeId, req: u64) {
        let targets: BTreeSet<NodeId> = self
            .replicas_of(key)
            .into_iter()
            .filter(|&id| id != self.config.id)
            .collect();
        let room = self.owed.len() < self.config.max_pending && self.durability.has_room(1);
        if !self.config.repair.hints() || targets.is_empty() || !room {
            return;
        }
        let id = self.new_req();
        let record = Record::Owed {
            id,
            coordinator,
            coordinator_req: req,
            key: key.to_owned(),
            targets: targets.iter().copied().collect(),
        };
        self.append(&record);
        let due_ms = Some(self.owed_wait_ms());
        let owed = Owed {
            key: key.to_owned(),
            targets,
            coordinator,
            coordinator_req: req,
            due_ms,
        };
        self.owed.insert(id, owed);
        self.arm_owed_sweep();
    }

    fn owed_wait_ms(&self) -> Ts {
        self.now
            .saturating_add(self.config.timeout_ms.saturating_mul(2))
    }

    pub(super) fn arm_owed_sweep(&mut self) {
        match self.owed.values().filter_map(|o| o.due_ms).min() {
            Some(at) => self.timers.set(TimerKind::OwedSweep, at),
            None => {
                self.timers.cancel(&TimerKind::OwedSweep);
            }
        }
    }

    fn settle(&mut self, id: u64) {
        if self.owed.remove(&id).is_some() {
            self.append(&Record::Settled { id });
            self.arm_owed_sweep();
        }
    }

    /// `ev_settled`: the coordinator saw every replica confirm, or left hints.
    pub(super) fn on_settled(&mut self, from: NodeId, req: u64) {
        let id = self
            .owed
            .iter()
            .find(|(_, o)| o.coordinator == from && o.coordinator_req == req)
            .map(|(&id, _)| id);
        if let Some(id) = id {
            self.settle(id);
        }
    }

    /// An owed replica confirmed what this node shipped it.
    pub(super) fn owed_delivered(&mut self, from: NodeId, id: u64) {
        let Some(owed) = self.owed.get_mut(&id) else {
            return;
        };
        owed.targets.remove(&from);
        if owed.targets.is_empty() {
            self.settle(id);
        }
    }

    /// Ships the current state of each unsettled key whose time came to the replicas that
    /// have not confirmed it, and tries again a timeout later.
    pub(super) fn sweep_owed(&mut self) {
        let due: Vec<u64> = self
            .owed
            .iter()
            .filter(|(_, o)| o.due_ms.is_some_and(|at| at <= self.now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(owed) = self.owed.get(&id).cloned() else {
                continue;
            };
            let next = Some(self.now.saturating_add(self.config.timeout_ms));
            let state = match self.store.get(&owed.key) {
                Ok(Some(state)) => state.to_bytes(),
                // Reaped: nothing left to ship from here.
                Ok(None) => {
                    self.settle(id);
                    continue;
                }
                // A failed read of the log: the debt stays, for the next sweep.
                Err(_) => {
                    if let Some(owed) = self.owed.get_mut(&id) {
                        owed.due_ms = next;
                    }
                    continue;
                }
            };
            let up: Vec<NodeId> = owed
                .targets
                .iter()
                .copied()
                .filter(|&t| self.is_up(t))
                .collect();
            for target in up {
                let msg = PeerMessage::Store {
                    req: id,
                    key: owed.key.clone(),
                    state: StateBytes(state.clone()),
                };
                self.send(target, msg);
            }
            if let Some(owed) = self.owed.get_mut(&id) {
                owed.due_ms = next;
            }
        }
        self.arm_owed_sweep();
    }

    /// Whether this node owes some replica `key`.
    pub(super) fn owes(&self, key: &str) -> bool {
        self.owed.values().any(|o| o.key == key)
    }
}
