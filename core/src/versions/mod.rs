//! Versions for eventual mode: dotted version vectors in the DVVSet form (Almeida,
//! Baquero, Gonçalves, Preguiça, Fonte, 2014; Riak 2.x), and last-write-wins stamps.
//!
//! A key's state is a [`Container`] of sibling versions, each made by one write and named
//! by its [`Dot`]; a client carries a [`VersionVector`] context from a read to its next
//! write, so the write supersedes exactly what the read showed. Replicas ship whole
//! containers and [`Container::merge`] them, a join, so any order and any number of
//! deliveries converge. No clock is ever pruned. See `docs/versions.md` for the rules and
//! why they meet PROTOCOL.md section 2.

mod actor;
mod binary;
mod clock;
mod container;
mod context;
mod vv;

#[cfg(test)]
mod tests;

pub use actor::{Actor, ActorParseError, Dot, MAX_COUNTER};
pub use binary::{
    container_to_bytes, decode_container, decode_lww, encode_container, encode_lww, BinaryError,
    CONTAINER_FORMAT, LWW_FORMAT, MAX_DECODED_VALUE_BYTES, MAX_VERSIONS,
};
pub use clock::{clock_json, parse_clock_json, ClockJsonError, LwwVersion, Stamp};
pub use container::{Container, InvariantError, MergeReport, Payload, Version, WriteError};
pub use context::{decode_context, encode_context, ContextError, MAX_CONTEXT_BYTES};
pub use vv::VersionVector;

/// The most actors one key's knowledge, a context or a clock may name. An actor is a node
/// and one life of its data directory, so this is far above any real cluster's history of
/// one key; it bounds what a client's context or a peer's bytes can make a node allocate.
/// Writes that would exceed it are refused; merges are not, so it is also the decoders'
/// bound and a state beyond it (more than this many node lives writing one key) would not
/// decode.
pub const MAX_ACTORS: usize = 4096;

/// The most isolated dots (seen without the earlier dots of their actor) one context or
/// one key's knowledge may hold. Such dots come only from the context of a write's answer
/// used before the replica has merged the writer's state, and fold away once it has, so a
/// real key holds a handful at most; this bounds what a client or a peer can make a node
/// allocate, like [`MAX_ACTORS`].
pub const MAX_CLOUD_DOTS: usize = 1024;

/// The default `--max-siblings` (PROTOCOL.md section 2): a client write that would leave
/// more versions of a key is answered `overloaded`.
pub const DEFAULT_MAX_SIBLINGS: usize = 64;
