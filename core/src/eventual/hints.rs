//! Hinted handoff's store: the states this node owes replicas that missed a write, at
//! most one hint per (target, key) (a newer one replaces the older, as a merged state
//! would), bounded per target in count and bytes and in age. A hint beyond a bound is
//! dropped and counted; the state then spreads by read repair.
//!
//! The store is memory only; the node logs every hint and its end, and rebuilds this
//! from the log at recovery.

use std::collections::BTreeMap;

use crate::Ts;

use super::config::{HintBounds, NodeId};

/// One hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// Names it; the target's `ev_stored` for this id ends it.
    pub id: u64,
    /// The replica it is owed to.
    pub target: NodeId,
    /// The key.
    pub key: String,
    /// The key's state, as it travels.
    pub state: Vec<u8>,
    /// When it was made, for the age bound.
    pub created_ms: Ts,
    /// When it was last sent, if it was; resent after the node's timeout.
    pub sent_ms: Option<Ts>,
}

/// Whether a new hint fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It fits (replacing the target's older hint of the key, if any).
    Fits,
    /// A bound of its target is reached: drop it and count it.
    Full,
}

/// Every hint this node holds.
#[derive(Clone, Debug)]
pub struct Hints {
    bounds: HintBounds,
    by_id: BTreeMap<u64, Hint>,
    by_target_key: BTreeMap<(NodeId, String), u64>,
    /// Count and state bytes held per target.
    per_target: BTreeMap<NodeId, (usize, usize)>,
    dropped: u64,
}

impl Hints {
    /// An empty store with these bounds.
    pub fn new(bounds: HintBounds) -> Self {
        Self {
            bounds,
            by_id: BTreeMap::new(),
            by_target_key: BTreeMap::new(),
            per_target: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Whether a hint of `state_len` bytes for `target` and `key` fits its bounds.
    pub fn admit(&self, target: NodeId, key: &str, state_len: usize) -> Admission {
        let (count, bytes) = self.per_target.get(&target).copied().unwrap_or((0, 0));
        let replaced = self
            .by_target_key
            .get(&(target, key.to_owned()))
            .and_then(|id| self.by_id.get(id));
        let (count, bytes) = match replaced {
            Some(old) => (count - 1, bytes - old.state.len()),
            None => (count, bytes),
        };
        if count + 1 > self.bounds.max_count || bytes + state_len > self.bounds.max_bytes {
            Admission::Full
        } else {
            Admission::Fits
        }
    }

    /// Holds `hint`, replacing the older hint of its target and key; returns the id of the
    /// one replaced.
    pub fn insert(&mut self, hint: Hint) -> Option<u64> {
        let slot = (hint.target, hint.key.clone());
        let replaced = self.by_target_key.get(&slot).copied();
        if let Some(old) = replaced {
            self.remove(old);
        }
        let totals = self.per_target.entry(hint.target).or_insert((0, 0));
        totals.0 += 1;
        totals.1 += hint.state.len();
        self.by_target_key.insert(slot, hint.id);
        self.by_id.insert(hint.id, hint);
        replaced
    }

    /// Ends hint `id` (delivered, dropped or replaced).
    pub fn remove(&mut self, id: u64) -> Option<Hint> {
        let hint = self.by_id.remove(&id)?;
        self.by_target_key.remove(&(hint.target, hint.key.clone()));
        if let Some(totals) = self.per_target.get_mut(&hint.target) {
            totals.0 -= 1;
            totals.1 -= hint.state.len();
            if totals.0 == 0 {
                self.per_target.remove(&hint.target);
            }
        }
        Some(hint)
    }

    /// Counts a hint that was dropped at a bound.
    pub fn count_dropped(&mut self) {
        self.dropped = self.dropped.saturating_add(1);
    }

    /// Hints dropped at a bound since the node started.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Every hint held, by id (so in the order they were made).
    pub fn iter(&self) -> impl Iterator<Item = &Hint> {
        self.by_id.values()
    }

    /// The hint `id`, if held.
    pub fn get(&self, id: u64) -> Option<&Hint> {
        self.by_id.get(&id)
    }

    /// Marks hint `id` sent at `now`.
    pub fn sent(&mut self, id: u64, now: Ts) {
        if let Some(hint) = self.by_id.get_mut(&id) {
            hint.sent_ms = Some(now);
        }
    }

    /// Forgets that `target`'s hints were sent, so that they are sent again at once (the
    /// target was down, and what was sent to it then is lost).
    pub fn unsend(&mut self, target: NodeId) {
        let ids: Vec<u64> = self
            .by_target_key
            .range((target, String::new())..)
            .take_while(|((t, _), _)| *t == target)
            .map(|(_, &id)| id)
            .collect();
        for id in ids {
            if let Some(hint) = self.by_id.get_mut(&id) {
                hint.sent_ms = None;
            }
        }
    }

    /// Hints held for `target`.
    pub fn count(&self, target: NodeId) -> usize {
        self.per_target.get(&target).map_or(0, |t| t.0)
    }

    /// Every hint held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no hint is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The targets that are owed something, ascending.
    pub fn targets(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.per_target.keys().copied()
    }

    /// Whether some hint of `key` is held, for any target (tombstones of such a key are
    /// not reaped).
    pub fn has_key(&self, key: &str) -> bool {
        self.per_target
            .keys()
            .any(|&target| self.by_target_key.contains_key(&(target, key.to_owned())))
    }

    /// The ids of `target`'s hints due to be sent at `now` (never sent, or sent more than
    /// `resend_ms` ago, and within their age), at most `limit`, in key order.
    pub fn due(&self, target: NodeId, now: Ts, resend_ms: u64, limit: usize) -> Vec<u64> {
        let from = (target, String::new());
        self.by_target_key
            .range(from..)
            .take_while(|((t, _), _)| *t == target)
            .filter_map(|(_, id)| self.by_id.get(id))
            .filter(|h| {
                h.sent_ms
                    .is_none_or(|at| now.saturating_sub(at) >= resend_ms)
            })
            // A hint past its age is never sent, even before the sweep drops it, so no
            // state older than the age bound is handed over.
            .filter(|h| now.saturating_sub(h.created_ms) <= self.bounds.max_age_ms)
            .take(limit)
            .map(|h| h.id)
            .collect()
    }

    /// The ids of hints older than the age bound at `now`. A hint stamped after `now`
    /// (made before a restart whose caller's clock began again) counts as new.
    pub fn expired(&self, now: Ts) -> Vec<u64> {
        self.by_id
            .values()
            .filter(|h| now.saturating_sub(h.created_ms) > self.bounds.max_age_ms)
            .map(|h| h.id)
            .collect()
    }

    /// The indexes agree and every target is within its bounds.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.by_id.len(),
            self.by_target_key.len(),
            "hint indexes differ"
        );
        let mut totals: BTreeMap<NodeId, (usize, usize)> = BTreeMap::new();
        for (slot, id) in &self.by_target_key {
            let hint = self.by_id.get(id).expect("hint index points nowhere");
            assert!(hint.target == slot.0 && hint.key == slot.1, "hint misfiled");
            let t = totals.entry(hint.target).or_insert((0, 0));
            t.0 += 1;
            t.1 += hint.state.len();
        }
        assert_eq!(totals, self.per_target, "hint totals wrong");
        for (count, bytes) in totals.values() {
            assert!(
                *count <= self.bounds.max_count,
                "hints over their count bound"
            );
            assert!(
                *bytes <= self.bounds.max_bytes,
                "hints over their byte bound"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(id: u64, target: NodeId, key: &str, len: usize, created_ms: Ts) -> Hint {
        Hint {
            id,
            target,
            key: key.to_owned(),
            state: vec![0; len],
            created_ms,
            sent_ms: None,
        }
    }

    #[test]
    fn bounds_replacement_age_and_due() {
        let bounds = HintBounds {
            max_count: 2,
            max_bytes: 10,
            max_age_ms: 100,
            replay_batch: 1,
            replay_interval_ms: 1,
        };
        let mut hints = Hints::new(bounds);
        assert_eq!(hints.admit(1, "a", 6), Admission::Fits);
        assert_eq!(hints.insert(hint(1, 1, "a", 6, 0)), None);
        assert_eq!(hints.admit(1, "b", 6), Admission::Full, "bytes bound");
        assert_eq!(
            hints.admit(1, "a", 9),
            Admission::Fits,
            "a replacement frees its bytes"
        );
        assert_eq!(hints.insert(hint(2, 1, "a", 9, 50)), Some(1));
        assert_eq!(hints.get(1), None);
        assert_eq!(hints.insert(hint(3, 1, "b", 1, 60)), None);
        assert_eq!(hints.admit(1, "c", 0), Admission::Full, "count bound");
        assert_eq!(
            hints.admit(2, "c", 10),
            Admission::Fits,
            "bounds are per target"
        );
        hints.check_invariants();
        assert!(hints.has_key("b") && !hints.has_key("c"));
        assert_eq!(hints.due(1, 0, 10, 5), vec![2, 3]);
        hints.sent(2, 5);
        assert_eq!(hints.due(1, 10, 10, 5), vec![3]);
        assert_eq!(hints.due(1, 15, 10, 1), vec![2]);
        hints.sent(3, 15);
        hints.unsend(1);
        assert_eq!(hints.due(1, 16, 10, 5), vec![2, 3], "sent again at once");
        assert_eq!(hints.expired(151), vec![2]);
        assert_eq!(
            hints.due(1, 151, 10, 5),
            vec![3],
            "an expired hint is not sent"
        );
        assert_eq!(hints.expired(20), Vec::<u64>::new());
        assert!(hints.remove(2).is_some() && hints.remove(2).is_none());
        assert_eq!(hints.count(1), 1);
        hints.check_invariants();
    }
}
