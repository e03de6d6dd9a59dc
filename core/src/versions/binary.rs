//! A compact binary encoding of a whole container, for the write-ahead log and for
//! shipping states between nodes.
//!
//! Layout (integers are unsigned LEB128 varints in their shortest form):
//!
//! ```text
//! FORMAT (one byte, 1)
//! VECTOR                                              the knowledge
//! V, then V versions, dots ascending:
//!   NODE INCARNATION COUNTER                          the dot
//!   VECTOR                                            the past
//!   TAG (one byte: 0 deletion, 1 value), then for a value LEN and LEN bytes of UTF-8
//!
//! VECTOR is K, then K entries NODE INCARNATION COUNTER (actors ascending), then C, then
//! C isolated dots NODE INCARNATION COUNTER (ascending, each at least two above its
//! actor's counter).
//! ```
//!
//! Nothing may follow. The decoder accepts only this one spelling of a state (shortest
//! varints, ascending order, no zero counters), so `encode(decode(b)) == b`, and it checks
//! every container invariant, so a decoded container is as sound as a local one.

use std::collections::BTreeMap;
use std::fmt;

use super::actor::{Actor, Dot, MAX_COUNTER};
use super::clock::{LwwVersion, Stamp};
use super::container::{Container, InvariantError, Payload, Version};
use super::vv::VersionVector;
use super::{MAX_ACTORS, MAX_CLOUD_DOTS};

/// The format byte this module writes and reads, so a later format can be told apart.
pub const CONTAINER_FORMAT: u8 = 1;

/// The format byte of a last-write-wins state, distinct from [`CONTAINER_FORMAT`] so a
/// record of one mode is never read as the other.
pub const LWW_FORMAT: u8 = 2;

/// The most versions a decoded container may hold. Far above the default sibling limit
/// (64), since merges are never refused and may join several replicas' siblings.
pub const MAX_VERSIONS: usize = 4096;

/// The largest value a decoded version may hold, in bytes: the protocol's value limit
/// (PROTOCOL.md, Limits), repeated here so this component depends on nothing else.
pub const MAX_DECODED_VALUE_BYTES: usize = 256 * 1024;

/// Why bytes are not an encoded container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryError {
    /// The bytes ended in the middle of something.
    Truncated,
    /// The first byte is not [`CONTAINER_FORMAT`].
    UnknownFormat(u8),
    /// A varint is longer than its shortest form or exceeds 2^64 - 1.
    BadVarint,
    /// A vector has more than [`MAX_ACTORS`] entries.
    TooManyActors,
    /// A vector has more than [`MAX_CLOUD_DOTS`] isolated dots.
    TooManyDots,
    /// More than [`MAX_VERSIONS`] versions.
    TooManyVersions,
    /// A counter is 0 or above [`MAX_COUNTER`].
    BadCounter,
    /// Actors of a vector, or dots of the versions, are not strictly ascending.
    NotAscending,
    /// An isolated dot of a vector is at or next to its actor's counter.
    NotCanonical,
    /// A version's tag is neither 0 nor 1.
    BadTag(u8),
    /// A value is longer than [`MAX_DECODED_VALUE_BYTES`].
    ValueTooLarge,
    /// A value is not UTF-8.
    BadUtf8,
    /// Bytes follow the last version.
    TrailingBytes,
    /// The decoded state breaks a container invariant.
    Invariant(InvariantError),
}

impl fmt::Display for BinaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("container bytes end too early"),
            Self::UnknownFormat(b) => write!(f, "unknown container format {b}"),
            Self::BadVarint => f.write_str("bad varint"),
            Self::TooManyActors => write!(f, "more than {MAX_ACTORS} actors"),
            Self::TooManyDots => write!(f, "more than {MAX_CLOUD_DOTS} isolated dots"),
            Self::TooManyVersions => write!(f, "more than {MAX_VERSIONS} versions"),
            Self::BadCounter => f.write_str("counter out of range"),
            Self::NotAscending => f.write_str("entries not strictly ascending"),
            Self::NotCanonical => f.write_str("isolated dot belongs in its actor's counter"),
            Self::BadTag(t) => write!(f, "unknown version tag {t}"),
            Self::ValueTooLarge => write!(f, "value longer than {MAX_DECODED_VALUE_BYTES} bytes"),
            Self::BadUtf8 => f.write_str("value is not UTF-8"),
            Self::TrailingBytes => f.write_str("bytes after the container"),
            Self::Invariant(e) => write!(f, "container invariant broken: {e}"),
        }
    }
}

impl std::error::Error for BinaryError {}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        // Truncation to the low 7 bits is the point.
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn put_usize(out: &mut Vec<u8>, value: usize) {
    // usize -> u64 is lossless on every supported target.
    put_varint(out, value as u64);
}

fn put_entry(out: &mut Vec<u8>, actor: Actor, counter: u64) {
    put_varint(out, actor.node);
    put_varint(out, actor.incarnation);
    put_varint(out, counter);
}

fn put_vv(out: &mut Vec<u8>, vv: &VersionVector) {
    put_usize(out, vv.len());
    for (actor, counter) in vv.iter() {
        put_entry(out, actor, counter);
    }
    put_usize(out, vv.cloud_len());
    for dot in vv.cloud() {
        put_entry(out, dot.actor, dot.counter);
    }
}

/// Appends the encoding of `container` to `out`, so a caller can frame it with other
/// fields of a log record or message without copying.
pub fn encode_container(container: &Container, out: &mut Vec<u8>) {
    out.push(CONTAINER_FORMAT);
    put_vv(out, container.context());
    put_usize(out, container.len());
    for version in container.versions() {
        let dot = version.dot();
        put_varint(out, dot.actor.node);
        put_varint(out, dot.actor.incarnation);
        put_varint(out, dot.counter);
        put_vv(out, version.past());
        put_payload(out, version.payload());
    }
}

fn put_payload(out: &mut Vec<u8>, payload: &Payload) {
    match payload {
        Payload::Deleted => out.push(0),
        Payload::Value(value) => {
            out.push(1);
            put_usize(out, value.len());
            out.extend_from_slice(value.as_bytes());
        }
    }
}

/// The encoding of `container` as a new buffer.
pub fn container_to_bytes(container: &Container) -> Vec<u8> {
    let mut out = Vec::new();
    encode_container(container, &mut out);
    out
}

/// Reads from a byte slice, refusing anything but the canonical form.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, BinaryError> {
        let (&first, rest) = self.rest.split_first().ok_or(BinaryError::Truncated)?;
        self.rest = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<u64, BinaryError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && bits > 1 {
                return Err(BinaryError::BadVarint);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                // A last byte of 0 after others means a longer than shortest form.
                if byte == 0 && shift > 0 {
                    return Err(BinaryError::BadVarint);
                }
                return Ok(value);
            }
        }
        Err(BinaryError::BadVarint)
    }

    fn count(&mut self, max: usize, too_many: BinaryError) -> Result<usize, BinaryError> {
        match usize::try_from(self.varint()?) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(too_many),
        }
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], BinaryError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or(BinaryError::Truncated)?;
        self.rest = rest;
        Ok(taken)
    }

    fn entry(&mut self) -> Result<(Actor, u64), BinaryError> {
        let actor = Actor::new(self.varint()?, self.varint()?);
        let counter = self.varint()?;
        if counter == 0 || counter > MAX_COUNTER {
            return Err(BinaryError::BadCounter);
        }
        Ok((actor, counter))
    }

    fn vv(&mut self) -> Result<VersionVector, BinaryError> {
        let n = self.count(MAX_ACTORS, BinaryError::TooManyActors)?;
        let mut vv = VersionVector::new();
        let mut previous: Option<Actor> = None;
        for _ in 0..n {
            let (actor, counter) = self.entry()?;
            if previous.is_some_and(|p| p >= actor) {
                return Err(BinaryError::NotAscending);
            }
            previous = Some(actor);
            vv.raise(actor, counter);
        }
        let n = self.count(MAX_CLOUD_DOTS, BinaryError::TooManyDots)?;
        let mut previous: Option<Dot> = None;
        for _ in 0..n {
            let (actor, counter) = self.entry()?;
            let dot = Dot::new(actor, counter);
            if previous.is_some_and(|p| p >= dot) {
                return Err(BinaryError::NotAscending);
            }
            previous = Some(dot);
            // A dot at or next to its actor's counter has another spelling.
            if counter <= vv.get(actor).saturating_add(1) {
                return Err(BinaryError::NotCanonical);
            }
            vv.insert(dot);
        }
        Ok(vv)
    }

    fn payload(&mut self) -> Result<Payload, BinaryError> {
        match self.byte()? {
            0 => Ok(Payload::Deleted),
            1 => {
                let len = self.count(MAX_DECODED_VALUE_BYTES, BinaryError::ValueTooLarge)?;
                let raw = self.bytes(len)?;
                let text = std::str::from_utf8(raw).map_err(|_| BinaryError::BadUtf8)?;
                Ok(Payload::Value(text.to_owned()))
            }
            tag => Err(BinaryError::BadTag(tag)),
        }
    }
}

/// Decodes a container from exactly `bytes`. Strict, bounded ([`MAX_ACTORS`] per vector,
/// [`MAX_VERSIONS`], [`MAX_DECODED_VALUE_BYTES`]; nothing is allocated ahead of the bytes that
/// back it), checks every invariant, and never panics.
pub fn decode_container(bytes: &[u8]) -> Result<Container, BinaryError> {
    let mut reader = Reader { rest: bytes };
    let format = reader.byte()?;
    if format != CONTAINER_FORMAT {
        return Err(BinaryError::UnknownFormat(format));
    }
    let known = reader.vv()?;
    let n = reader.count(MAX_VERSIONS, BinaryError::TooManyVersions)?;
    let mut versions = BTreeMap::new();
    let mut previous: Option<Dot> = None;
    for _ in 0..n {
        let (actor, counter) = reader.entry()?;
        let dot = Dot::new(actor, counter);
        if previous.is_some_and(|p| p >= dot) {
            return Err(BinaryError::NotAscending);
        }
        previous = Some(dot);
        let past = reader.vv()?;
        let payload = reader.payload()?;
        versions.insert(dot, Version::from_parts(dot, past, payload));
    }
    if !reader.rest.is_empty() {
        return Err(BinaryError::TrailingBytes);
    }
    Container::from_parts(known, versions).map_err(BinaryError::Invariant)
}

/// Appends the encoding of a last-write-wins state to `out`: [`LWW_FORMAT`], the stamp's
/// time and node as varints, then the payload as in a container.
pub fn encode_lww(version: &LwwVersion, out: &mut Vec<u8>) {
    out.push(LWW_FORMAT);
    put_varint(out, version.stamp.ts_ms);
    put_varint(out, version.stamp.node);
    put_payload(out, &version.payload);
}

/// Decodes a last-write-wins state from exactly `bytes`: strict, bounded by
/// [`MAX_DECODED_VALUE_BYTES`], never panics.
pub fn decode_lww(bytes: &[u8]) -> Result<LwwVersion, BinaryError> {
    let mut reader = Reader { rest: bytes };
    let format = reader.byte()?;
    if format != LWW_FORMAT {
        return Err(BinaryError::UnknownFormat(format));
    }
    let stamp = Stamp {
        ts_ms: reader.varint()?,
        node: reader.varint()?,
    };
    let payload = reader.payload()?;
    if !reader.rest.is_empty() {
        return Err(BinaryError::TrailingBytes);
    }
    Ok(LwwVersion { stamp, payload })
}
