//! Reaping tombstones. A key whose every replica was seen by one read holding exactly
//! the same state, only deletions, with no hint of the key at the reading node, is
//! reaped in two steps:
//! 1. each replica that still holds exactly that state and no hint of the key keeps only
//!    its knowledge (a grave: a container without versions), so a state delayed in a
//!    hint or a repair elsewhere cannot bring a superseded value back;
//! 2. after the grave time (the hint age bound plus two timeouts, past which no hint or
//!    request that could carry an older state is left) the key is removed for good, and
//!    the node's counter floor is raised above every counter its actor used for the key,
//!    so a later write never reuses a dot a slower replica still knows.

use crate::proto::{PeerMessage, StateBytes};
use crate::storage::LogReader;

use super::read::{merge_all, PendingRead};
use super::record::Record;
use super::state::KeyState;
use super::{Node, Pending, TimerKind};

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

    /// After a read that heard every replica: start reaping if they all hold the same
    /// deletions and nothing of the key is owed from here.
    pub(super) fn maybe_reap(&mut self, req: u64, read: &PendingRead) {
        if read.answers.len() != read.replicas.len() || self.hints.has_key(&read.key) {
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
        let bytes = merged.to_bytes();
        for &target in &read.replicas {
            let msg = PeerMessage::Reap {
                req,
                key: read.key.clone(),
                state: StateBytes(bytes.clone()),
            };
            self.send(target, msg);
        }
    }

    /// `ev_reap`: keep a grave instead of the tombstones, if this replica still holds
    /// exactly the state every replica was seen with and owes nothing of the key.
    pub(super) fn serve_reap(&mut self, key: String, state: StateBytes) {
        let Ok(seen) = KeyState::from_bytes(&state.0) else {
            self.stats.bad_states += 1;
            return;
        };
        let Ok(Some(held)) = self.store.get(&key) else {
            return;
        };
        let KeyState::Siblings(container) = &held else {
            return;
        };
        let same = held.includes(&seen) && seen.includes(&held);
        let busy = self.hints.has_key(&key) || self.writing(&key);
        if !same || busy || container.is_empty() || !container.all_deleted() {
            return;
        }
        if !self.durability.has_room(1) {
            return;
        }
        let grave = KeyState::Siblings(container.without_versions());
        self.put_state(&key, grave);
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
                self.graves.remove(key);
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
            if self.hints.has_key(&key) || self.writing(&key) {
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
            self.append(&Record::Reaped {
                key: key.clone(),
                floor,
            });
            self.store.remove(&key);
            self.graves.remove(&key);
        }
        self.arm_grave_sweep();
    }
}
