//! A key's state in eventual mode: its sibling versions and what it has seen (DVVSet).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use super::actor::{Actor, Dot, MAX_COUNTER};
use super::vv::VersionVector;
use super::{MAX_ACTORS, MAX_CLOUD_DOTS};

/// What a version holds: a value, or the deletion that a delete request wrote.
///
/// Deletions are versions like any other (tombstones), so a delete supersedes exactly what
/// a write would, and repair cannot bring a deleted value back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Payload {
    /// A value a client wrote.
    Value(String),
    /// A deletion a client wrote.
    Deleted,
}

impl Payload {
    /// Whether this is a deletion, for answers and for reaping tombstones.
    pub fn is_deleted(&self) -> bool {
        matches!(self, Self::Deleted)
    }
}

/// One sibling: the write that made it (its dot), what its writer had seen (its causal
/// past), and what it holds.
///
/// The past is kept so that every version can show a clock that is above the clocks of
/// everything it superseded (PROTOCOL.md section 2); see [`Version::clock`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    dot: Dot,
    past: VersionVector,
    payload: Payload,
}

impl Version {
    /// Builds a version. Crate-private: only a write or a decoder may make one, so that a
    /// version's past never covers its own dot.
    pub(super) fn from_parts(dot: Dot, past: VersionVector, payload: Payload) -> Self {
        Self { dot, past, payload }
    }

    /// The write that made this version.
    pub fn dot(&self) -> Dot {
        self.dot
    }

    /// The context its writer had seen: every version this one superseded is covered by it.
    pub fn past(&self) -> &VersionVector {
        &self.past
    }

    /// The value or deletion it holds.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The clock answered for this version: its past with its own dot added, as per-actor
    /// highest counters.
    ///
    /// A write's dot counter is above every counter of its actor in its past, so the clock
    /// is strictly above the past's clock; and the past holds the dot and the past of every
    /// version the write superseded, so it is at least their clocks. Hence every clock is
    /// above the clock of every version it superseded, directly or through others.
    pub fn clock(&self) -> VersionVector {
        let mut clock = self.past.to_clock();
        clock.raise(self.dot.actor, self.dot.counter);
        clock
    }

    /// The context answered for the write that made this version: its past and its dot,
    /// and nothing else. A later write carrying it supersedes exactly this version and what
    /// it superseded, even when a sibling of the same actor has a lower counter.
    pub fn answer_context(&self) -> VersionVector {
        let mut context = self.past.clone();
        context.insert(self.dot);
        context
    }
}

/// A fixed total order on versions, used only to choose between two different versions
/// under one reused dot, so that the choice (and so the merge) is the same on every replica
/// and in every order.
fn reuse_order(a: &Version, b: &Version) -> Ordering {
    a.dot
        .cmp(&b.dot)
        .then_with(|| a.past.iter().cmp(b.past.iter()))
        .then_with(|| a.past.cloud().cmp(b.past.cloud()))
        .then_with(|| a.payload.cmp(&b.payload))
}

/// Why a write was refused; the container is unchanged when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The new dot's counter, or a counter of the context, would exceed [`MAX_COUNTER`].
    /// Only a forged context can get here; the caller answers it as malformed.
    CounterExhausted,
    /// The key would know more than [`MAX_ACTORS`] actors.
    TooManyActors,
    /// The context, or the key's knowledge, would hold more than [`MAX_CLOUD_DOTS`]
    /// isolated dots.
    TooManyDots,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CounterExhausted => f.write_str("a version counter would exceed 2^53 - 1"),
            Self::TooManyActors => write!(f, "a key would know more than {MAX_ACTORS} actors"),
            Self::TooManyDots => write!(f, "more than {MAX_CLOUD_DOTS} isolated dots"),
        }
    }
}

impl std::error::Error for WriteError {}

/// What a merge did, so the caller persists only real changes and can report dot reuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Whether this container's state changed.
    pub changed: bool,
    /// Dots held on both sides with different contents. Each is one dot handed out twice,
    /// the bug incarnations exist to prevent (riak_kv issue 679); the merge still picks
    /// one deterministically so replicas converge, and the caller should count it loudly.
    pub reused_dots: usize,
}

/// A broken rule of a container, found by [`Container::check_invariants`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvariantError {
    /// A version is stored under a dot other than its own.
    MisfiledVersion(Dot),
    /// A dot has counter 0, or a counter exceeds [`MAX_COUNTER`].
    BadCounter(Dot),
    /// The container holds a version whose dot its knowledge does not cover.
    DotNotKnown(Dot),
    /// A version's past is not covered by the container's knowledge.
    PastNotKnown(Dot),
    /// A version's past covers its own dot.
    PastCoversOwnDot(Dot),
    /// A version is still held although the version at `by` superseded it.
    Superseded {
        /// The version that should have been dropped.
        dot: Dot,
        /// The version whose past covers it.
        by: Dot,
    },
    /// The knowledge has a counter above [`MAX_COUNTER`].
    KnownCounterTooLarge,
}

impl fmt::Display for InvariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MisfiledVersion(dot) => write!(f, "version stored under another dot than {dot}"),
            Self::BadCounter(dot) => write!(f, "dot {dot} has a counter out of range"),
            Self::DotNotKnown(dot) => write!(f, "dot {dot} is not covered by the container"),
            Self::PastNotKnown(dot) => write!(f, "past of {dot} is not covered by the container"),
            Self::PastCoversOwnDot(dot) => write!(f, "past of {dot} covers its own dot"),
            Self::Superseded { dot, by } => write!(f, "version {dot} is superseded by {by}"),
            Self::KnownCounterTooLarge => f.write_str("known counter exceeds 2^53 - 1"),
        }
    }
}

impl std::error::Error for InvariantError {}

/// A key's state in eventual mode (a DVVSet): its sibling versions, each with its dot, and
/// its knowledge: per actor the counter up to which it has seen every dot.
///
/// Containers travel whole between replicas and merge as a join, so a container knows a
/// later dot of an actor without its earlier ones only when a write answer's context
/// brought it (an isolated dot, see [`VersionVector`]), and then only until it merges the
/// writer's state; "seen" is one comparison or one lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    known: VersionVector,
    versions: BTreeMap<Dot, Version>,
}

impl Container {
    /// A key with no history, as a replica holds a key it never heard of.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a container from decoded parts, refusing any that breaks an invariant.
    pub(super) fn from_parts(
        known: VersionVector,
        versions: BTreeMap<Dot, Version>,
    ) -> Result<Self, InvariantError> {
        let container = Self { known, versions };
        container.check_invariants()?;
        Ok(container)
    }

    /// Applies a client write at `actor`, returning the new version's dot. `actor` must be
    /// this replica's own (its node ID and current incarnation): the replica that applies
    /// a write first names it, and every dot of its actor for this key was made here.
    ///
    /// With a context, drops exactly the versions the context has seen; without one (a blind
    /// write), uses this container's own knowledge, so it replaces everything held here.
    /// The new dot's counter is one above both what this container and the context know of
    /// `actor`, so it is new to everyone who could have seen either. The caller checks the
    /// sibling limit first with [`Container::siblings_after_write`].
    pub fn write(
        &mut self,
        actor: Actor,
        context: Option<&VersionVector>,
        payload: Payload,
    ) -> Result<Dot, WriteError> {
        self.write_above(actor, context, payload, 0)
    }

    /// [`Container::write`] with a floor under the new counter: the dot's counter is also
    /// above `floor`. A node passes the highest counter its actor handed out for any key, so
    /// a key it reaped and that is written again never reuses a dot that a replica which
    /// has not reaped it yet still knows (the "doomstone" of riak_kv issue 679).
    pub fn write_above(
        &mut self,
        actor: Actor,
        context: Option<&VersionVector>,
        payload: Payload,
        floor: u64,
    ) -> Result<Dot, WriteError> {
        let past = context.unwrap_or(&self.known).clone();
        let counter = self
            .known
            .top(actor)
            .max(past.top(actor))
            .max(floor)
            .checked_add(1)
            .filter(|&counter| counter <= MAX_COUNTER)
            .ok_or(WriteError::CounterExhausted)?;
        if past.max_counter() > MAX_COUNTER {
            return Err(WriteError::CounterExhausted);
        }
        let mut known = self.known.clone();
        known.join(&past);
        // Every earlier dot of `actor` for this key was applied here first (or, below a
        // floor, reaped here), so this replica has seen them all.
        known.raise(actor, counter);
        if known.len() > MAX_ACTORS || past.len() > MAX_ACTORS {
            return Err(WriteError::TooManyActors);
        }
        if known.cloud_len() > MAX_CLOUD_DOTS || past.cloud_len() > MAX_CLOUD_DOTS {
            return Err(WriteError::TooManyDots);
        }
        self.versions.retain(|&dot, _| !past.has_seen(dot));
        self.known = known;
        let dot = Dot::new(actor, counter);
        self.versions
            .insert(dot, Version::from_parts(dot, past, payload));
        debug_assert_eq!(self.check_invariants(), Ok(()));
        Ok(dot)
    }

    /// How many versions the key would hold after a client write with `context` (`None`:
    /// a blind write), without changing anything, so the caller can refuse a write beyond
    /// its sibling limit with `overloaded` before applying it.
    pub fn siblings_after_write(&self, context: Option<&VersionVector>) -> usize {
        let kept = match context {
            None => 0,
            Some(context) => self
                .versions
                .keys()
                .filter(|&&dot| !context.has_seen(dot))
                .count(),
        };
        kept.saturating_add(1)
    }

    /// Whether a client write with `context` would leave more than `max_siblings` versions:
    /// the `overloaded` test of PROTOCOL.md section 2. Merges are never subject to it.
    pub fn write_exceeds(&self, context: Option<&VersionVector>, max_siblings: usize) -> bool {
        self.siblings_after_write(context) > max_siblings
    }

    /// Joins `other` into this container: keeps a version if both hold it or the side
    /// without it has not seen its dot, and joins the knowledge. Commutative, associative
    /// and idempotent, so read repair, hints and replication may deliver states in any
    /// order, any number of times. Never refused.
    pub fn merge(&mut self, other: &Container) -> MergeReport {
        let mut report = MergeReport::default();
        self.versions.retain(|&dot, _| {
            let keep = other.versions.contains_key(&dot) || !other.known.has_seen(dot);
            report.changed |= !keep;
            keep
        });
        for (&dot, theirs) in &other.versions {
            match self.versions.get_mut(&dot) {
                Some(mine) => {
                    if mine != theirs {
                        report.reused_dots = report.reused_dots.saturating_add(1);
                        // Any fixed choice keeps the merge a join; take the larger.
                        if reuse_order(theirs, mine) == Ordering::Greater {
                            *mine = theirs.clone();
                            report.changed = true;
                        }
                    }
                }
                None => {
                    if !self.known.has_seen(dot) {
                        self.versions.insert(dot, theirs.clone());
                        report.changed = true;
                    }
                }
            }
        }
        if !self.known.covers(&other.known) {
            self.known.join(&other.known);
            report.changed = true;
        }
        debug_assert_eq!(self.check_invariants(), Ok(()));
        report
    }

    /// The merge of two containers as a new one, for callers that keep both inputs.
    pub fn join(&self, other: &Container) -> Container {
        let mut joined = self.clone();
        joined.merge(other);
        joined
    }

    /// The knowledge alone, without the versions: what a replica keeps of a key whose
    /// tombstones it reaped (a grave), so that a state delayed in a hint or a repair
    /// cannot bring a superseded value back while the grave is kept. A write on it is
    /// numbered above everything it had seen.
    pub fn without_versions(&self) -> Container {
        Container {
            known: self.known.clone(),
            versions: BTreeMap::new(),
        }
    }

    /// The context a read of this container returns: everything it has seen. A write
    /// carrying it supersedes exactly the versions held here (and what they superseded).
    pub fn context(&self) -> &VersionVector {
        &self.known
    }

    /// The sibling versions, in dot order.
    pub fn versions(&self) -> impl Iterator<Item = &Version> + '_ {
        self.versions.values()
    }

    /// The version made by the write `dot`, if held.
    pub fn version(&self, dot: Dot) -> Option<&Version> {
        self.versions.get(&dot)
    }

    /// The number of sibling versions, deletions included.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether no version is held (a key never written, or reaped).
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Whether every held version is a deletion (true when none is held): the key answers
    /// `not_found`, and it is a candidate for reaping.
    pub fn all_deleted(&self) -> bool {
        self.versions.values().all(|v| v.payload.is_deleted())
    }

    /// Whether merging `other` into this container would change nothing: this container
    /// holds everything of `other`. A caller reaps a tombstone only once every replica's
    /// container includes it (and no hint for the key is pending).
    pub fn includes(&self, other: &Container) -> bool {
        self.known.covers(&other.known)
            && other
                .versions
                .iter()
                .all(|(&dot, theirs)| match self.versions.get(&dot) {
                    Some(mine) => reuse_order(mine, theirs) != Ordering::Less,
                    None => self.known.has_seen(dot),
                })
            && self
                .versions
                .keys()
                .all(|&dot| other.versions.contains_key(&dot) || !other.known.has_seen(dot))
    }

    /// Checks every rule a container keeps, so tests, the simulator and decoders can assert
    /// them: dots in range and covered by the knowledge, pasts covered and not covering
    /// their own dot, and no held version superseded by another.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        if self.known.max_counter() > MAX_COUNTER {
            return Err(InvariantError::KnownCounterTooLarge);
        }
        // Per actor, the highest counter of any past and whose past it is, and every cloud
        // dot of any past: a version is superseded exactly when one of them reaches its dot,
        // so one pass suffices instead of comparing every pair of versions.
        let mut highest_past: BTreeMap<Actor, (u64, Dot)> = BTreeMap::new();
        let mut cloud_past: BTreeMap<Dot, Dot> = BTreeMap::new();
        for version in self.versions.values() {
            for (actor, counter) in version.past.iter() {
                let slot = highest_past.entry(actor).or_insert((0, version.dot));
                if counter > slot.0 {
                    *slot = (counter, version.dot);
                }
            }
            for dot in version.past.cloud() {
                cloud_past.entry(dot).or_insert(version.dot);
            }
        }
        for (&dot, version) in &self.versions {
            if version.dot != dot {
                return Err(InvariantError::MisfiledVersion(dot));
            }
            if dot.counter == 0 || dot.counter > MAX_COUNTER {
                return Err(InvariantError::BadCounter(dot));
            }
            if !self.known.has_seen(dot) {
                return Err(InvariantError::DotNotKnown(dot));
            }
            if !self.known.covers(&version.past) {
                return Err(InvariantError::PastNotKnown(dot));
            }
            if version.past.has_seen(dot) {
                return Err(InvariantError::PastCoversOwnDot(dot));
            }
            if let Some(&(counter, by)) = highest_past.get(&dot.actor) {
                if counter >= dot.counter {
                    return Err(InvariantError::Superseded { dot, by });
                }
            }
            if let Some(&by) = cloud_past.get(&dot) {
                return Err(InvariantError::Superseded { dot, by });
            }
        }
        Ok(())
    }
}
