//! Hinted handoff: a write that did not reach a replica by its deadline leaves a durable
//! hint here; hints are replayed to their target once it is seen up (by the failure
//! detector's `NodeUp` or any message from it), a batch per round, and each is deleted
//! once the target confirmed it durable. Hints past their age are dropped and counted.

use crate::proto::{PeerMessage, StateBytes};
use crate::storage::LogReader;

use super::config::NodeId;
use super::hints::{Admission, Hint};
use super::record::Record;
use super::{Node, TimerKind};

/// How often hints are checked for age, at most.
const AGE_SWEEP_MS: u64 = 60_000;

impl<R: LogReader> Node<R> {
    /// Keeps `state` of `key` for `target`, durably, or drops and counts it at a bound;
    /// whether it was kept.
    pub(super) fn add_hint(&mut self, target: NodeId, key: &str, state: Vec<u8>) -> bool {
        if self.hints.admit(target, key, state.len()) == Admission::Full {
            self.hints.count_dropped();
            return false;
        }
        let id = self.new_req();
        let record = Record::Hint {
            id,
            target,
            created_ms: self.now,
            key: key.to_owned(),
            state: state.clone(),
        };
        // A hint need not be durable before anything: nothing is promised on it. A hint
        // a crash takes back leaves the state to read repair, like a dropped one.
        self.append(&record);
        self.hints.insert(Hint {
            id,
            target,
            key: key.to_owned(),
            state,
            created_ms: self.now,
            sent_ms: None,
        });
        self.arm_age_sweep();
        if self.is_up(target) {
            self.wake_hints(target);
        }
        true
    }

    pub(super) fn arm_age_sweep(&mut self) {
        if self.timers.deadline(&TimerKind::HintAge).is_none() && !self.hints.is_empty() {
            let wait_ms = self.config.hints.max_age_ms.clamp(1, AGE_SWEEP_MS);
            self.timers.set(TimerKind::HintAge, self.now + wait_ms);
        }
    }

    /// `target` is up: start replaying its hints unless a round is already planned.
    pub(super) fn wake_hints(&mut self, target: NodeId) {
        let kind = TimerKind::HintReplay(target);
        if self.hints.count(target) > 0 && self.timers.deadline(&kind).is_none() {
            self.timers.set(kind, self.now);
        }
    }

    /// One replay round: a batch of the target's hints not sent lately.
    pub(super) fn replay_hints(&mut self, target: NodeId) {
        if !self.is_up(target) {
            // The next NodeUp, or any message from it, starts again.
            return;
        }
        let due = self.hints.due(
            target,
            self.now,
            self.config.timeout_ms,
            self.config.hints.replay_batch,
        );
        for id in due {
            let Some(hint) = self.hints.get(id) else {
                continue;
            };
            let msg = PeerMessage::Store {
                req: id,
                key: hint.key.clone(),
                state: StateBytes(hint.state.clone()),
            };
            self.hints.sent(id, self.now);
            self.send(target, msg);
        }
        if self.hints.count(target) > 0 {
            let at = self.now + self.config.hints.replay_interval_ms;
            self.timers.set(TimerKind::HintReplay(target), at);
        }
    }

    /// The target confirmed hint `id` durable: it is deleted.
    pub(super) fn hint_delivered(&mut self, from: NodeId, id: u64) {
        if self.hints.get(id).is_some_and(|hint| hint.target == from) {
            self.hints.remove(id);
            self.append(&Record::HintDone { id });
            self.stats.hints_delivered += 1;
        }
    }

    /// Drops and counts the hints past their age.
    pub(super) fn expire_hints(&mut self) {
        for id in self.hints.expired(self.now) {
            self.hints.remove(id);
            self.hints.count_dropped();
            self.append(&Record::HintDone { id });
        }
        self.arm_age_sweep();
    }
}
