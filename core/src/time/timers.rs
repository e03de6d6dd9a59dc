//! A timer table: one deadline per timer kind.
//!
//! Setting a kind that is already set replaces its deadline, so a stale timer never fires
//! to be ignored by a role that has to remember which of its timers still counts. Timers
//! due at the same moment fire in the order they were set.

use std::collections::BTreeMap;

use crate::Ts;

/// Deadlines, one per kind `K` (an enum of what a role waits for, with the subject, such
/// as a transaction ID, inside).
#[derive(Clone, Debug)]
pub struct Timers<K: Ord + Clone> {
    /// Deadline and set-order of each armed kind.
    by_kind: BTreeMap<K, (Ts, u64)>,
    /// The same timers ordered by when they fire.
    by_deadline: BTreeMap<(Ts, u64), K>,
    next_seq: u64,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            by_kind: BTreeMap::new(),
            by_deadline: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Arms `kind` to fire at `at`, replacing its earlier deadline if it had one.
    pub fn set(&mut self, kind: K, at: Ts) {
        self.cancel(&kind);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_deadline.insert((at, seq), kind.clone());
        self.by_kind.insert(kind, (at, seq));
    }

    /// Disarms `kind`; whether it was armed.
    pub fn cancel(&mut self, kind: &K) -> bool {
        match self.by_kind.remove(kind) {
            Some(slot) => {
                let removed = self.by_deadline.remove(&slot);
                assert!(removed.is_some(), "timer table lost a deadline");
                true
            }
            None => false,
        }
    }

    /// When `kind` fires, if armed.
    pub fn deadline(&self, kind: &K) -> Option<Ts> {
        self.by_kind.get(kind).map(|&(at, _)| at)
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Ts> {
        self.by_deadline.keys().next().map(|&(at, _)| at)
    }

    /// Disarms and returns the earliest timer due by `now`.
    #[must_use]
    pub fn pop_due(&mut self, now: Ts) -> Option<K> {
        let entry = self.by_deadline.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let kind = entry.remove();
        let removed = self.by_kind.remove(&kind);
        assert!(removed.is_some(), "timer table lost a kind");
        Some(kind)
    }

    /// How many timers are armed.
    pub fn len(&self) -> usize {
        self.by_kind.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }

    /// The armed kinds, in kind order.
    pub fn kinds(&self) -> impl Iterator<Item = &K> {
        self.by_kind.keys()
    }

    /// The two indexes describe the same timers.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.by_kind.len(),
            self.by_deadline.len(),
            "timer indexes differ"
        );
        for (kind, slot) in &self.by_kind {
            assert!(
                self.by_deadline.get(slot) == Some(kind),
                "timer index points at another kind"
            );
            assert!(slot.1 < self.next_seq, "timer from the future");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_again_replaces_and_due_timers_fire_in_order() {
        let mut t: Timers<&str> = Timers::new();
        t.set("a", 10);
        t.set("b", 5);
        t.set("a", 20);
        t.set("c", 5);
        t.check_invariants();
        assert_eq!(t.len(), 3);
        assert_eq!(t.next_deadline(), Some(5));
        assert_eq!(t.pop_due(4), None);
        assert_eq!(t.pop_due(10), Some("b"));
        assert_eq!(t.pop_due(10), Some("c"));
        // "a" was moved to 20: its first deadline never fires.
        assert_eq!(t.pop_due(10), None);
        assert_eq!(t.deadline(&"a"), Some(20));
        assert!(t.cancel(&"a"));
        assert!(!t.cancel(&"a"));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
        t.check_invariants();
    }
}
