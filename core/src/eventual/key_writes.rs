//! The last write of each key that is not durable yet.
//!
//! A node shows its state of a key (to a read, or as the answer to a shipped state it
//! already held) only once the records that made that state are durable: a machine
//! crash must not take back what another node has seen. Waiting for the log's last write
//! instead, whatever key it was for, held every read behind unrelated writes, and on a
//! slow disk behind syncs that had nothing to do with it. Syncs cover the log in order,
//! so a key's last record being durable means all of the key's records are.

use std::collections::{BTreeMap, VecDeque};

use crate::storage::PersistToken;

/// Keys whose last write (a state or a reap) is not yet known durable, with its token.
/// Holds one entry per such write: bounded by the writes not yet synced.
#[derive(Clone, Debug, Default)]
pub(super) struct KeyWrites {
    /// Each key's last undurable write.
    last: BTreeMap<String, PersistToken>,
    /// Every undurable keyed write, oldest first, to forget them in order.
    order: VecDeque<(PersistToken, String)>,
}

impl KeyWrites {
    /// Write `token` changed `key`'s state. Tokens come in the order they were written.
    pub(super) fn note(&mut self, key: &str, token: PersistToken) {
        if let Some(&(newest, _)) = self.order.back() {
            assert!(newest < token, "keyed writes noted out of order");
        }
        self.last.insert(key.to_owned(), token);
        self.order.push_back((token, key.to_owned()));
    }

    /// The write `key`'s state waits for, if one is not durable yet.
    pub(super) fn pending(&self, key: &str) -> Option<PersistToken> {
        self.last.get(key).copied()
    }

    /// Every write up to `token` is durable.
    pub(super) fn persisted(&mut self, token: PersistToken) {
        while let Some((oldest, _)) = self.order.front() {
            if *oldest > token {
                break;
            }
            if let Some((oldest, key)) = self.order.pop_front() {
                if self.last.get(&key) == Some(&oldest) {
                    self.last.remove(&key);
                }
            }
        }
    }

    /// Each key's entry is its newest write in the order, and the order ascends.
    pub(super) fn check_invariants(&self) {
        assert!(
            self.order
                .iter()
                .zip(self.order.iter().skip(1))
                .all(|(a, b)| a.0 < b.0),
            "keyed writes out of order"
        );
        let mut newest_found = 0;
        for (token, key) in &self.order {
            let last = self.last.get(key);
            assert!(last >= Some(token), "a key's entry is older than its write");
            newest_found += usize::from(last == Some(token));
        }
        assert_eq!(newest_found, self.last.len(), "a key without its write");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> PersistToken {
        PersistToken(n)
    }

    #[test]
    fn a_key_waits_for_its_own_last_write_only() {
        let mut writes = KeyWrites::default();
        writes.note("a", t(1));
        writes.note("b", t(2));
        writes.note("a", t(3));
        writes.note("c", t(4));
        writes.check_invariants();
        assert_eq!(writes.pending("a"), Some(t(3)));
        assert_eq!(writes.pending("b"), Some(t(2)));
        assert_eq!(writes.pending("z"), None);

        writes.persisted(t(2));
        writes.check_invariants();
        assert_eq!(
            writes.pending("a"),
            Some(t(3)),
            "a's later write still pending"
        );
        assert_eq!(writes.pending("b"), None);
        assert_eq!(writes.pending("c"), Some(t(4)));

        writes.persisted(t(4));
        writes.check_invariants();
        assert_eq!(writes.pending("a"), None);
        assert_eq!(writes.pending("c"), None);
        assert!(writes.order.is_empty() && writes.last.is_empty());
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn writes_noted_out_of_order_are_a_bug() {
        let mut writes = KeyWrites::default();
        writes.note("a", t(5));
        writes.note("b", t(4));
    }
}
