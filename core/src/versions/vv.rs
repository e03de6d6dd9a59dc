//! Version vectors: sets of seen writes, stored as "every dot of this actor up to this
//! counter" plus, rarely, a few dots seen beyond that.

use std::collections::{BTreeMap, BTreeSet};

use super::actor::{Actor, Dot};

/// A set of seen dots: per actor a counter meaning "every dot of this actor up to here",
/// plus isolated dots seen above it (the dot cloud). It is a key's context (what an answer
/// gives and a write carries), a container's knowledge, and a version's causal past.
///
/// The cloud exists for one case: the answer to a write shows only the new version, so its
/// context must cover that version's dot without covering a concurrent sibling of the same
/// actor with a lower counter; a plain vector cannot say that. Replicas that have merged
/// the states of every actor hold no cloud, because a container always knows its own
/// actor's dots without gaps.
///
/// Stored in one canonical form (no zero counters; a cloud dot is at least two above its
/// actor's counter, else it is folded in), so equal sets are equal values and encode the
/// same. A missing actor counts as 0, as PROTOCOL.md section 2 says.
///
/// It deliberately has no `Ord`: the causal order is partial ([`VersionVector::covers`],
/// [`VersionVector::dominates`]), and a total order would invite comparing clocks wrongly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    entries: BTreeMap<Actor, u64>,
    cloud: BTreeSet<Dot>,
}

impl VersionVector {
    /// The empty set: nothing seen. A write carrying it supersedes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter up to which every dot of `actor` was seen, 0 when none.
    pub fn get(&self, actor: Actor) -> u64 {
        self.entries.get(&actor).copied().unwrap_or(0)
    }

    /// The highest counter of `actor` seen, cloud included: a new dot of `actor` must be
    /// above it to be new to whoever holds this set.
    pub fn top(&self, actor: Actor) -> u64 {
        let cloud_top = self
            .cloud
            .range(Dot::new(actor, 0)..=Dot::new(actor, u64::MAX))
            .next_back()
            .map_or(0, |dot| dot.counter);
        self.get(actor).max(cloud_top)
    }

    /// Marks every dot of `actor` up to `counter` as seen. Never forgets anything.
    pub fn raise(&mut self, actor: Actor, counter: u64) {
        if counter <= self.get(actor) {
            return;
        }
        self.entries.insert(actor, counter);
        self.compact(actor);
    }

    /// Marks the one dot `dot` as seen, without the dots of its actor below it.
    pub fn insert(&mut self, dot: Dot) {
        if dot.counter == 0 || self.has_seen(dot) {
            return;
        }
        self.cloud.insert(dot);
        self.compact(dot.actor);
    }

    /// Folds the cloud dots of `actor` that are at or next to its counter into the counter.
    /// Each step removes one dot with one lookup, so decoding a cloud costs no more than
    /// its size times a logarithm, whatever its shape.
    fn compact(&mut self, actor: Actor) {
        let mut counter = self.get(actor);
        while let Some(&dot) = self
            .cloud
            .range(Dot::new(actor, 0)..=Dot::new(actor, counter.saturating_add(1)))
            .next()
        {
            self.cloud.remove(&dot);
            counter = counter.max(dot.counter);
        }
        if counter > 0 {
            self.entries.insert(actor, counter);
        }
    }

    /// Whether the write `dot` is in the set, i.e. was seen by whoever holds it.
    pub fn has_seen(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.actor) || self.cloud.contains(&dot)
    }

    /// The union: what two parties have seen together. Read answers merge the contexts of
    /// several replicas this way.
    pub fn join(&mut self, other: &VersionVector) {
        for (&actor, &counter) in &other.entries {
            self.raise(actor, counter);
        }
        for &dot in &other.cloud {
            self.insert(dot);
        }
    }

    /// Whether every dot of `other` is in this set.
    pub fn covers(&self, other: &VersionVector) -> bool {
        // In canonical form a set cannot cover a range of an actor beyond its counter,
        // since the dot right above the counter is never in its cloud.
        other
            .entries
            .iter()
            .all(|(&actor, &counter)| counter <= self.get(actor))
            && other.cloud.iter().all(|&dot| self.has_seen(dot))
    }

    /// Whether this set covers `other` and holds something more. On clocks (which have no
    /// cloud) this is the entry-wise "above" of PROTOCOL.md section 2.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        self.covers(other) && self != other
    }

    /// Whether neither set covers the other.
    pub fn concurrent_with(&self, other: &VersionVector) -> bool {
        !self.covers(other) && !other.covers(self)
    }

    /// The per-actor counters in actor order, for encoders and answers.
    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64)> + '_ {
        self.entries
            .iter()
            .map(|(&actor, &counter)| (actor, counter))
    }

    /// The dots seen above their actor's counter, in dot order, for encoders.
    pub fn cloud(&self) -> impl Iterator<Item = Dot> + '_ {
        self.cloud.iter().copied()
    }

    /// The number of actors with a counter, for the limits of writes and encoders.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The number of dots in the cloud, for the limits of writes and encoders.
    pub fn cloud_len(&self) -> usize {
        self.cloud.len()
    }

    /// Whether nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.cloud.is_empty()
    }

    /// The largest counter of any entry or cloud dot, 0 when empty, so writes and encoders
    /// can check [`super::MAX_COUNTER`].
    pub fn max_counter(&self) -> u64 {
        let entries = self.entries.values().copied().max().unwrap_or(0);
        let cloud = self.cloud.iter().map(|d| d.counter).max().unwrap_or(0);
        entries.max(cloud)
    }

    /// The vector of per-actor highest counters, cloud folded in: the entry-wise clock a
    /// client sees. Forgets which lower dots were not seen, so it is for showing only.
    pub fn to_clock(&self) -> VersionVector {
        let mut clock = VersionVector {
            entries: self.entries.clone(),
            cloud: BTreeSet::new(),
        };
        for dot in &self.cloud {
            let entry = clock.entries.entry(dot.actor).or_insert(0);
            *entry = (*entry).max(dot.counter);
        }
        clock
    }
}

/// Builds a set from `(actor, counter)` pairs ("every dot up to"), keeping the largest
/// counter of an actor named twice and dropping zeros, so no caller can build a
/// non-canonical one.
impl FromIterator<(Actor, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (Actor, u64)>>(iter: I) -> Self {
        let mut vv = Self::new();
        for (actor, counter) in iter {
            vv.raise(actor, counter);
        }
        vv
    }
}
