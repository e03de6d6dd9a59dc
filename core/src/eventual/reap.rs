//! Reaping tombstones. A key whose every replica was seen by one read holding exactly
//! the same state, only deletions, with no hint of the key at the reading node, is
//! reaped in two steps:
//! 1. the reading node asks every replica whether it still holds exactly that state, owes
//!    no hint of the key and is not writing it; once all said so, it tells them to reap,
//!    and each that still can keeps only its knowledge (a grave: a container without versions), so a state delayed in a
//!    hint or a repair elsewhere cannot bring a superseded value back; with hints on, it
//!    first owes the other replicas its grave, so one that missed the commit joins it;
//! 2. after the grave time (the hint age bound plus two timeouts, past which no hint or
//!    request that could carry an older state is left) the key is removed for good, and
//!    the node's counter floor is raised above every counter its actor used for the key,
//!    so a later write never reuses a dot a slower replica still knows.

use std::collections::BTreeSet;

use crate::proto::{PeerMessage, StateBytes};
use crate::storage::LogReader;

use super::config::NodeId;
use super::read::{merge_all, PendingRead};
use super::record::Record;
use super::state::KeyState;
use super::{Node, Pending, TimerKind};

/// A reaping in flight: the replicas asked whether they would reap, and who said so.
#[derive(Clone, Debug)]
pub(super) struct PendingReap {
    pub(super) key: String,
    pub(super) replicas: Vec<NodeId>,
    /// The state every replica was seen holding.
    pub(super) state: Vec<u8>,
    pub(super) willing: BTreeSet<NodeId>,
}

impl<R: LogReader> Node<R> {
    pub(super) fn grave_ms(&self) -> u64 {
        self.config
            .hints
            .max_age_ms
            .saturating_add(self.config.timeout_ms.saturating_mul(2))
    }

    /// Whether a write of `key` coordinated here is in flight (its state may be older
    /// than a tombstone and still be shipped or hinted).
    fn writing(&self, key: &str) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::Write(w) if w.key == key))
    }

    /// After a read that heard every replica: if they all hold the same deletions and
    /// nothing of the key is owed from here, ask each whether it would reap them.
    pub(super) fn maybe_reap(&mut self, read: &PendingRead) {
        if read.answers.len() != read.replicas.len()
            || self.hints.has_key(&read.key)
            || self.pending.len() >= self.config.max_pending
        {
            return;
        }
        let (Some(merged), _) = merge_all(read.answers.values()) else {
            return;
        };
        let KeyState::Siblings(container) = &merged else {
            return;
        };
        let same = read.answers.values().all(|answer| {
            answer
                .as_ref()
                .is_some_and(|s| s.includes(&merged) && merged.includes(s))
        });
        if !same || container.is_empty() || !container.all_deleted() {
            return;
        }
        let req = self.new_req();
        let reap = PendingReap {
            key: read.key.clone(),
            replicas: read.replicas.clone(),
            state: merged.to_bytes(),
            willing: BTreeSet::new(),
        };
        self.send_reaps(req, &reap, false);
        self.pending.insert(req, Pending::Reap(reap));
        self.timers
            .set(TimerKind::Request(req), self.now + self.config.timeout_ms);
    }

    fn send_reaps(&mut self, req: u64, reap: &PendingReap, commit: bool) {
        for &target in &reap.replicas {
            let msg = PeerMessage::Reap {
                req,
                key: reap.key.clone(),
                state: StateBytes(reap.state.clone()),
                commit,
            };
            self.send(target, msg);
        }
    }

    /// A replica would reap: once every replica would, they all do.
    pub(super) fn on_reap_ok(&mut self, from: NodeId, req: u64) {
        let Some(Pending::Reap(reap)) = self.pending.get_mut(&req) else {
            return;
        };
        if reap.replicas.contains(&from) {
            reap.willing.insert(from);
        }
        if reap.willing.len() < reap.replicas.len() {
            return;
        }
        if let Some(Pending::Reap(reap)) = self.pending.remove(&req) {
            self.timers.cancel(&TimerKind::Request(req));
            self.send_reaps(req, &reap, true);
        }
    }

    /// What this replica would keep instead of `key`'s tombstones: a grave, if it still
    /// holds exactly the state every replica was seen with, only deletions, and owes
    /// nothing of the key.
    fn grave_of(&mut self, key: &str, seen: &KeyState) -> Option<KeyState> {
        let held = self.store.get(key).ok().flatten()?;
        let KeyState::Siblings(container) = &held else {
            return None;
        };
        let same = held.includes(seen) && seen.includes(&held);
        let busy = self.hints.has_key(key) || self.writing(key) || self.owes(key);
        let reapable = !container.is_empty() && container.all_deleted();
        (same && !busy && reapable).then(|| KeyState::Siblings(container.without_versions()))
    }

    /// `ev_reap`: say whether this replica would reap, or reap.
    pub(super) fn serve_reap(
        &mut self,
        from: NodeId,
        req: u64,
        key: String,
        state: StateBytes,
        commit: bool,
    ) {
        let Ok(seen) = KeyState::from_bytes(&state.0) else {
            self.stats.bad_states += 1;
            return;
        };
        let Some(grave) = self.grave_of(&key, &seen) else {
            return;
        };
        if !commit {
            self.send(from, PeerMessage::ReapOk { req });
        } else if self.owe_grave(&key, from, req) {
            self.put_state(&key, grave);
        }
    }

    /// Logs, before a commit makes `key` a grave here, that the other replicas are owed
    /// the grave: a commit lost on its way to one of them would otherwise leave it
    /// holding the tombstones for good, since with hints alone nothing else merges the
    /// replicas again. The grave joins over the tombstones, and is not removed while owed.
    /// False, and nothing is reaped here, without room for the debt and the grave: the
    /// replicas that did reap owe this one their grave.
    fn owe_grave(&mut self, key: &str, coordinator: NodeId, req: u64) -> bool {
        if !self.config.repair.hints() {
            return self.durability.has_room(1);
        }
        if self.owed.len() >= self.config.max_pending || !self.durability.has_room(2) {
            return false;
        }
        // The reap's request is never settled by its coordinator, which settles writes
        // only: the debt ends once every other replica confirmed the grave.
        self.owe(key, coordinator, req);
        true
    }

    /// Keeps the grave table in step with a key's new state: a state without versions is
    /// a grave, removed for good after the grave time.
    pub(super) fn track_grave(&mut self, key: &str, state: &KeyState) {
        match state {
            KeyState::Siblings(container) if container.is_empty() => {
                let at = self.now.saturating_add(self.grave_ms());
                self.graves.entry(key.to_owned()).or_insert(at);
                self.arm_grave_sweep();
            }
            _ => {
                // The earliest grave may be the one going: the sweep follows the next.
                if self.graves.remove(key).is_some() {
                    self.arm_grave_sweep();
                }
            }
        }
    }

    pub(super) fn arm_grave_sweep(&mut self) {
        match self.graves.values().min() {
            Some(&at) => self.timers.set(TimerKind::GraveSweep, at),
            None => {
                self.timers.cancel(&TimerKind::GraveSweep);
            }
        }
    }

    /// Removes for good the graves whose time is up, raising the counter floor; a grave
    /// of a key that is being written or owed waits another grave time.
    pub(super) fn sweep_graves(&mut self) {
        let due: Vec<String> = self
            .graves
            .iter()
            .filter(|(_, &at)| at <= self.now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            if self.hints.has_key(&key) || self.writing(&key) || self.owes(&key) {
                let at = self.now.saturating_add(self.grave_ms());
                self.graves.insert(key, at);
                continue;
            }
            let top = match self.store.get(&key) {
                Ok(Some(KeyState::Siblings(container))) => container.context().top(self.actor),
                _ => 0,
            };
            self.floor = self.floor.max(top);
            let floor = self.floor;
            let (token, _) = self.append(&Record::Reaped {
                key: key.clone(),
                floor,
            });
            self.key_writes.note(&key, token);
            self.store.remove(&key);
            self.graves.remove(&key);
        }
        self.arm_grave_sweep();
    }
}
