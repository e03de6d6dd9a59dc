//! The opaque context string that clients carry from a read (or a write's answer) to the
//! next write: a version vector in a compact, URL- and JSON-safe text form.
//!
//! Form: entries `ACTOR:COUNTER` ("every write of ACTOR up to COUNTER") joined by `,`,
//! actors ascending (node, then incarnation); then, only if the context holds isolated
//! dots, `~` and those dots as `ACTOR:COUNTER` joined by `,`, ascending, each at least two
//! above its actor's entry. Actors are spelled as in PROTOCOL.md section 2 (`17`, `17.2`),
//! counters run from 1 to [`MAX_COUNTER`], and all numbers are canonical decimal. The empty
//! context is the empty string. Examples: `3:2,17:5,17.9:1` (a read's), `3:2~17:7` (a
//! write's answer, when 17 holds a concurrent sibling at 6). Only digits, `.`, `:`, `,`
//! and `~` appear, so the string needs no escaping in JSON or in a URL query. A later
//! format can be told apart by its first character being a letter.
//!
//! Every context has exactly one spelling, and the decoder accepts only that spelling, so
//! `encode(decode(s)) == s` for every accepted `s`.

use std::fmt;

use super::actor::{parse_canonical_u64, Actor, ActorParseError, Dot, MAX_COUNTER};
use super::vv::VersionVector;
use super::{MAX_ACTORS, MAX_CLOUD_DOTS};

/// The longest context string accepted, in bytes. An entry or dot takes at most 48 bytes
/// (`u64.u64:2^53-1,`), so [`MAX_ACTORS`] entries and [`MAX_CLOUD_DOTS`] dots fit; anything
/// longer is refused before it is looked at, so a client cannot make a node parse or
/// allocate without limit.
pub const MAX_CONTEXT_BYTES: usize = 256 * 1024;

/// Why a context string was refused. Positions count entries from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// Longer than [`MAX_CONTEXT_BYTES`].
    TooLong,
    /// More than [`MAX_ACTORS`] entries.
    TooManyActors,
    /// More than [`MAX_CLOUD_DOTS`] isolated dots.
    TooManyDots,
    /// An entry is not `ACTOR:COUNTER`.
    MalformedEntry(usize),
    /// An entry's actor is not a canonical actor.
    BadActor(usize, ActorParseError),
    /// An entry's counter is not canonical decimal from 1 to [`MAX_COUNTER`].
    BadCounter(usize),
    /// An entry's actor is not above the previous entry's, or an isolated dot is not above
    /// the previous dot.
    NotAscending(usize),
    /// An isolated dot is at or next to its actor's entry (so it belongs in the entry), or
    /// `~` is followed by no dot.
    NotCanonical(usize),
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => write!(f, "context longer than {MAX_CONTEXT_BYTES} bytes"),
            Self::TooManyActors => write!(f, "context with more than {MAX_ACTORS} actors"),
            Self::TooManyDots => write!(f, "context with more than {MAX_CLOUD_DOTS} dots"),
            Self::MalformedEntry(i) => write!(f, "context entry {i} is not ACTOR:COUNTER"),
            Self::BadActor(i, e) => write!(f, "context entry {i}: {e}"),
            Self::BadCounter(i) => write!(f, "context entry {i}: counter out of range"),
            Self::NotAscending(i) => write!(f, "context entry {i}: not ascending"),
            Self::NotCanonical(i) => write!(f, "context dot {i}: belongs in its actor's entry"),
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
        out.push_str(&format!("{actor}:{counter}"));
    }
    for (i, dot) in vv.cloud().enumerate() {
        out.push(if i == 0 { '~' } else { ',' });
        out.push_str(&format!("{dot}"));
    }
    out
}

/// Parses one `ACTOR:COUNTER` item at position `i`.
fn parse_item(i: usize, item: &str) -> Result<(Actor, u64), ContextError> {
    let (actor_text, counter_text) = item
        .split_once(':')
        .ok_or(ContextError::MalformedEntry(i))?;
    let actor: Actor = actor_text
        .parse()
        .map_err(|e| ContextError::BadActor(i, e))?;
    match parse_canonical_u64(counter_text) {
        Ok(counter) if (1..=MAX_COUNTER).contains(&counter) => Ok((actor, counter)),
        _ => Err(ContextError::BadCounter(i)),
    }
}

/// Decodes a context string from a client. Strict (only the canonical spelling), bounded
/// ([`MAX_CONTEXT_BYTES`], [`MAX_ACTORS`], [`MAX_CLOUD_DOTS`]), and never panics.
pub fn decode_context(text: &str) -> Result<VersionVector, ContextError> {
    if text.len() > MAX_CONTEXT_BYTES {
        return Err(ContextError::TooLong);
    }
    let (entries_text, cloud_text) = match text.split_once('~') {
        Some((entries, cloud)) => (entries, Some(cloud)),
        None => (text, None),
    };
    let mut vv = VersionVector::new();
    let mut previous: Option<Actor> = None;
    let entries = entries_text.split(',').filter(|_| !entries_text.is_empty());
    for (i, item) in entries.enumerate() {
        if i >= MAX_ACTORS {
            return Err(ContextError::TooManyActors);
        }
        let (actor, counter) = parse_item(i, item)?;
        if previous.is_some_and(|p| p >= actor) {
            return Err(ContextError::NotAscending(i));
        }
        previous = Some(actor);
        vv.raise(actor, counter);
    }
    let Some(cloud_text) = cloud_text else {
        return Ok(vv);
    };
    let mut previous: Option<Dot> = None;
    for (i, item) in cloud_text.split(',').enumerate() {
        if i >= MAX_CLOUD_DOTS {
            return Err(ContextError::TooManyDots);
        }
        if item.is_empty() && i == 0 {
            return Err(ContextError::NotCanonical(0));
        }
        let (actor, counter) = parse_item(i, item)?;
        let dot = Dot::new(actor, counter);
        if previous.is_some_and(|p| p >= dot) {
            return Err(ContextError::NotAscending(i));
        }
        previous = Some(dot);
        // A dot the entries already cover or that would extend them has another spelling.
        if counter <= vv.get(actor).saturating_add(1) {
            return Err(ContextError::NotCanonical(i));
        }
        vv.insert(dot);
    }
    Ok(vv)
}
