//! Version vectors: "I have seen every write of this actor up to this counter".

use std::collections::BTreeMap;

use super::actor::{Actor, Dot};

/// A map from actor to counter with no zero entries, meaning "every dot of this actor up to
/// this counter has been seen". It is a key's context (what a read returns and a write
/// carries), a container's knowledge, and a version's clock.
///
/// Zero entries are never stored, so two vectors that mean the same are equal, encode the
/// same and compare the same; a missing actor counts as 0, as PROTOCOL.md section 2 says.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionVector {
    entries: BTreeMap<Actor, u64>,
}

impl VersionVector {
    /// The empty vector: nothing seen. A write carrying it supersedes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of `actor`, 0 when absent.
    pub fn get(&self, actor: Actor) -> u64 {
        self.entries.get(&actor).copied().unwrap_or(0)
    }

    /// Raises `actor`'s entry to at least `counter`, as seeing a write does. Never lowers an
    /// entry: knowledge only grows.
    pub fn raise(&mut self, actor: Actor, counter: u64) {
        if counter == 0 {
            return;
        }
        let entry = self.entries.entry(actor).or_insert(0);
        *entry = (*entry).max(counter);
    }

    /// Whether the write `dot` is covered, i.e. was seen by whoever holds this vector.
    pub fn has_seen(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.actor)
    }

    /// Entry-wise maximum: what two parties have seen together. Read answers merge the
    /// contexts of several replicas this way.
    pub fn join(&mut self, other: &VersionVector) {
        for (&actor, &counter) in &other.entries {
            self.raise(actor, counter);
        }
    }

    /// Whether every entry of `other` is at most the same entry here: this vector has seen
    /// everything `other` has.
    pub fn covers(&self, other: &VersionVector) -> bool {
        other
            .entries
            .iter()
            .all(|(&actor, &counter)| counter <= self.get(actor))
    }

    /// Whether this vector covers `other` and has seen something more: the entry-wise
    /// "above" of PROTOCOL.md section 2.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        self.covers(other) && self != other
    }

    /// Whether neither vector covers the other.
    pub fn concurrent_with(&self, other: &VersionVector) -> bool {
        !self.covers(other) && !other.covers(self)
    }

    /// The entries in actor order, for encoders and answers.
    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64)> + '_ {
        self.entries
            .iter()
            .map(|(&actor, &counter)| (actor, counter))
    }

    /// The number of actors with a non-zero entry, for the limits of the encoders.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The largest counter of any entry, 0 when empty, so encoders can check
    /// [`super::MAX_COUNTER`].
    pub fn max_counter(&self) -> u64 {
        self.entries.values().copied().max().unwrap_or(0)
    }
}

/// Builds a vector from `(actor, counter)` pairs, keeping the largest counter of an actor
/// named twice and dropping zeros, so tests and callers cannot build a non-canonical one.
impl FromIterator<(Actor, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (Actor, u64)>>(iter: I) -> Self {
        let mut vv = Self::new();
        for (actor, counter) in iter {
            vv.raise(actor, counter);
        }
        vv
    }
}
