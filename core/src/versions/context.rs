//! The opaque context string that clients carry from a read (or a write's answer) to the
//! next write: a version vector in a compact, URL- and JSON-safe text form.
//!
//! Form: entries `ACTOR:COUNTER` joined by `,`, actors in ascending order (node, then
//! incarnation), each actor as in PROTOCOL.md section 2 (`17`, `17.2`), counters from 1 to
//! [`MAX_COUNTER`], all numbers in canonical decimal. The empty vector is the empty string.
//! Example: `3:2,17:5,17.9:1`. Only digits, `.`, `:` and `,` appear, so the string needs no
//! escaping in JSON or in a URL query. A later format can be told apart by its first
//! character being a letter.
//!
//! Every vector has exactly one spelling, and the decoder accepts only that spelling, so
//! `encode(decode(s)) == s` for every accepted `s`.

use std::fmt;

use super::actor::{parse_canonical_u64, Actor, ActorParseError, MAX_COUNTER};
use super::vv::VersionVector;
use super::MAX_ACTORS;

/// The longest context string accepted, in bytes. An entry takes at most 48 bytes
/// (`u64.u64:2^53-1,`), so [`MAX_ACTORS`] entries fit; anything longer is refused before it
/// is looked at, so a client cannot make a node parse or allocate without limit.
pub const MAX_CONTEXT_BYTES: usize = 256 * 1024;

/// Why a context string was refused. Positions count entries from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// Longer than [`MAX_CONTEXT_BYTES`].
    TooLong,
    /// More than [`MAX_ACTORS`] entries.
    TooManyActors,
    /// An entry is not `ACTOR:COUNTER`.
    MalformedEntry(usize),
    /// An entry's actor is not a canonical actor.
    BadActor(usize, ActorParseError),
    /// An entry's counter is not canonical decimal from 1 to [`MAX_COUNTER`].
    BadCounter(usize),
    /// An entry's actor is not above the previous entry's.
    NotAscending(usize),
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => write!(f, "context longer than {MAX_CONTEXT_BYTES} bytes"),
            Self::TooManyActors => write!(f, "context with more than {MAX_ACTORS} actors"),
            Self::MalformedEntry(i) => write!(f, "context entry {i} is not ACTOR:COUNTER"),
            Self::BadActor(i, e) => write!(f, "context entry {i}: {e}"),
            Self::BadCounter(i) => write!(f, "context entry {i}: counter out of range"),
            Self::NotAscending(i) => write!(f, "context entry {i}: actors not ascending"),
        }
    }
}

impl std::error::Error for ContextError {}

/// The context string of `vv`, for answers.
pub fn encode_context(vv: &VersionVector) -> String {
    let mut out = String::new();
    for (i, (actor, counter)) in vv.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&actor.to_string());
        out.push(':');
        out.push_str(&counter.to_string());
    }
    out
}

/// Decodes a context string from a client. Strict (only the canonical spelling), bounded
/// ([`MAX_CONTEXT_BYTES`], [`MAX_ACTORS`]), and never panics.
pub fn decode_context(text: &str) -> Result<VersionVector, ContextError> {
    if text.len() > MAX_CONTEXT_BYTES {
        return Err(ContextError::TooLong);
    }
    let mut vv = VersionVector::new();
    if text.is_empty() {
        return Ok(vv);
    }
    let mut previous: Option<Actor> = None;
    for (i, entry) in text.split(',').enumerate() {
        if i >= MAX_ACTORS {
            return Err(ContextError::TooManyActors);
        }
        let (actor_text, counter_text) = entry
            .split_once(':')
            .ok_or(ContextError::MalformedEntry(i))?;
        let actor: Actor = actor_text
            .parse()
            .map_err(|e| ContextError::BadActor(i, e))?;
        let counter = parse_canonical_u64(counter_text).map_err(|_| ContextError::BadCounter(i))?;
        if counter == 0 || counter > MAX_COUNTER {
            return Err(ContextError::BadCounter(i));
        }
        if previous.is_some_and(|p| p >= actor) {
            return Err(ContextError::NotAscending(i));
        }
        previous = Some(actor);
        vv.raise(actor, counter);
    }
    Ok(vv)
}
