//! Sets of connection tokens that a port fills and empties every turn.
//!
//! A port notes which connections to read and which to flush as events come, then
//! visits each once, in token order. A `BTreeSet` allocated and freed a node for that
//! every turn, which showed in profiles of cached GETs; a vector that keeps its
//! allocation and is sorted only when visited gives the same visits.

use mio::Token;

/// Most tokens held before duplicates are folded: far above the connections of a port,
/// so folding is rare, and it bounds the vector whatever the events.
const FOLD_AT_TOKENS: usize = 4096;

/// Connection tokens, each visited once and in increasing order by
/// [`TokenSet::drain_sorted_into`], whatever the order and repetition of inserts.
#[derive(Debug, Default)]
pub(crate) struct TokenSet {
    /// Unsorted, possibly with duplicates; at most `FOLD_AT_TOKENS` plus the distinct
    /// tokens.
    tokens: Vec<Token>,
}

impl TokenSet {
    /// Adds `token` (again, perhaps).
    pub(crate) fn insert(&mut self, token: Token) {
        if self.tokens.last() == Some(&token) {
            return;
        }
        if self.tokens.len() >= FOLD_AT_TOKENS {
            self.fold();
        }
        self.tokens.push(token);
    }

    /// Drops `token`, e.g. of a connection that closed.
    pub(crate) fn remove(&mut self, token: Token) {
        self.tokens.retain(|&held| held != token);
    }

    /// Whether no token is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Moves the tokens into `into` (emptied first), in increasing order and each once,
    /// keeping both vectors' allocations for the next turn.
    pub(crate) fn drain_sorted_into(&mut self, into: &mut Vec<Token>) {
        into.clear();
        into.append(&mut self.tokens);
        into.sort_unstable();
        into.dedup();
    }

    fn fold(&mut self) {
        self.tokens.sort_unstable();
        self.tokens.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_leave_once_each_in_order_and_removed_ones_not_at_all() {
        let mut set = TokenSet::default();
        assert!(set.is_empty());
        for n in [5, 3, 5, 5, 9, 3, 1, 7] {
            set.insert(Token(n));
        }
        set.remove(Token(7));
        assert!(!set.is_empty());
        let mut out = vec![Token(42)];
        set.drain_sorted_into(&mut out);
        assert_eq!(out, [Token(1), Token(3), Token(5), Token(9)]);
        assert!(set.is_empty());
    }

    #[test]
    fn repeated_inserts_stay_bounded() {
        let mut set = TokenSet::default();
        for round in 0..10 * FOLD_AT_TOKENS {
            set.insert(Token(round % 3));
        }
        assert!(set.tokens.len() <= FOLD_AT_TOKENS + 3);
        let mut out = Vec::new();
        set.drain_sorted_into(&mut out);
        assert_eq!(out, [Token(0), Token(1), Token(2)]);
    }
}
