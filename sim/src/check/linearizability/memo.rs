//! What the search has already tried: every visit, keyed on the set of ordinary operations
//! placed and the register state, with how many grouped operations it spent.
//!
//! A visit to a key seen before can only fail as the earlier one did, unless it spent
//! fewer grouped operations: those are optional, so spending fewer leaves strictly more
//! options. Only the visits no other visit dominates are kept.

use std::collections::HashMap;

use super::input::Group;
use super::model::State;

/// How many operations of each group have been placed.
pub(super) type Spent = [u32; Group::COUNT];

/// The placed set being built, and every visit so far.
pub(super) struct Visited {
    /// One bit per operation, then the state: the current memo key.
    key: Vec<u64>,
    // Looked up only, never iterated, so its order cannot reach the output.
    spent_by_key: HashMap<Box<[u64]>, Vec<Spent>>,
}

impl Visited {
    /// Nothing placed among `ops` operations, nothing visited.
    pub(super) fn new(ops: usize) -> Self {
        Visited {
            key: vec![0; ops.div_ceil(64) + 1],
            spent_by_key: HashMap::new(),
        }
    }

    /// Marks `op` placed, or no longer placed.
    pub(super) fn toggle(&mut self, op: usize) {
        self.key[op / 64] ^= 1 << (op % 64);
    }

    /// Records a visit to the current placed set in `state` having spent `spent`;
    /// `false` if an earlier visit already covers it.
    pub(super) fn enter(&mut self, state: State, spent: Spent) -> bool {
        let last = self.key.len() - 1;
        self.key[last] = u64::from(state);
        let no_more = |a: &Spent, b: &Spent| a.iter().zip(b).all(|(x, y)| x <= y);
        match self.spent_by_key.get_mut(self.key.as_slice()) {
            Some(visits) => {
                if visits.iter().any(|earlier| no_more(earlier, &spent)) {
                    return false;
                }
                visits.retain(|earlier| !no_more(&spent, earlier));
                visits.push(spent);
            }
            None => {
                self.spent_by_key
                    .insert(self.key.as_slice().into(), vec![spent]);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visit_is_covered_by_one_with_the_same_key_that_spent_no_more() {
        let mut visited = Visited::new(3);
        visited.toggle(1);
        assert!(visited.enter(7, [1, 0]));
        assert!(!visited.enter(7, [1, 0]));
        assert!(!visited.enter(7, [2, 3]));
        assert!(visited.enter(7, [0, 5]));
        assert!(visited.enter(8, [1, 0]));
        visited.toggle(2);
        assert!(visited.enter(7, [1, 0]));
        visited.toggle(2);
        assert!(visited.enter(7, [0, 0]));
        assert!(!visited.enter(7, [0, 5]));
    }
}
