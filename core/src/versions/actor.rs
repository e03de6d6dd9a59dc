//! Actors and dots: who made a write, and which write it was.

use std::fmt;
use std::str::FromStr;

/// The largest counter a dot may carry: 2^53 - 1. Counters are shown to clients as JSON
/// numbers, and every JSON reader represents integers up to this one exactly, so no client
/// ever sees two different counters as the same number. Decoders refuse larger counters and
/// a write that would need one is refused.
pub const MAX_COUNTER: u64 = (1 << 53) - 1;

/// The node that applied a write first, in one life of its data directory.
///
/// The incarnation changes whenever a node starts on an empty data directory (its disk was
/// lost), so a node that forgot the counters it handed out never hands them out again under
/// the same actor (riak_kv issue 679). Ordered by node then incarnation, so maps keyed by
/// actors iterate the same way on every replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor {
    /// The node's ID from the cluster file.
    pub node: u64,
    /// Which life of the node's data directory; 0 for the first.
    pub incarnation: u64,
}

impl Actor {
    /// An actor, for callers that know the node's ID and current incarnation.
    pub const fn new(node: u64, incarnation: u64) -> Self {
        Self { node, incarnation }
    }
}

/// Shown as PROTOCOL.md section 2 says: the node ID, then `.` and the incarnation unless it
/// is 0 (`"17"`, `"17.2"`). This is the key of a CLOCK entry and the actor in a context.
impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.incarnation == 0 {
            write!(f, "{}", self.node)
        } else {
            write!(f, "{}.{}", self.node, self.incarnation)
        }
    }
}

/// Why a string is not an actor, so a decoder can say what was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorParseError {
    /// The node ID or the incarnation is empty, has a character other than a decimal
    /// digit, or has a leading zero.
    NotCanonical,
    /// A number exceeds 2^64 - 1.
    Overflow,
}

impl fmt::Display for ActorParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotCanonical => {
                f.write_str("actor is not NODE or NODE.INCARNATION in canonical decimal")
            }
            Self::Overflow => f.write_str("actor number exceeds 2^64 - 1"),
        }
    }
}

impl std::error::Error for ActorParseError {}

/// Parses a canonical decimal u64: digits only, no sign, no leading zero (except "0").
/// Canonical forms make every actor have exactly one spelling, so contexts round-trip.
pub(crate) fn parse_canonical_u64(text: &str) -> Result<u64, ActorParseError> {
    let bytes = text.as_bytes();
    let canonical = match bytes {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => bytes.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return Err(ActorParseError::NotCanonical);
    }
    text.parse::<u64>().map_err(|_| ActorParseError::Overflow)
}

/// The exact inverse of `Display`: `"17"` or `"17.2"`, and nothing else (`"17.0"` is
/// refused because `"17"` is the one spelling of that actor).
impl FromStr for Actor {
    type Err = ActorParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (node_text, incarnation) = match text.split_once('.') {
            None => (text, 0),
            Some((node_text, inc_text)) => {
                let incarnation = parse_canonical_u64(inc_text)?;
                if incarnation == 0 {
                    return Err(ActorParseError::NotCanonical);
                }
                (node_text, incarnation)
            }
        };
        Ok(Self {
            node: parse_canonical_u64(node_text)?,
            incarnation,
        })
    }
}

/// One write's identity: the actor that applied it first and that actor's counter for the
/// key. Two different writes never share a dot, which is what lets a replica tell "I have
/// seen this write" by comparing one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// Who made the write.
    pub actor: Actor,
    /// The actor's counter for this key at the write, 1 or more.
    pub counter: u64,
}

impl Dot {
    /// A dot, for callers and tests that build one by hand.
    pub const fn new(actor: Actor, counter: u64) -> Self {
        Self { actor, counter }
    }
}

/// Shown as `ACTOR:COUNTER`, the same shape as one context entry, for logs and messages.
impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.counter)
    }
}
