//! ringkv's protocol as a deterministic, sans-IO state-machine core.
//!
//! Every role is a plain struct driven through the [`Role`] contract: `handle(now,
//! input)`, drained through `poll_output()`, woken at `poll_timeout()`, and checked with
//! `check_invariants()`. Nothing here touches sockets, files, clocks, threads or OS
//! randomness, so the simulator and the real shells run the very same code, and a seed
//! reproduces any run.
//!
//! Components (what roles are built from): [`proto`], [`ring`], [`cache`], [`log`],
//! [`storage`], [`time`], [`twopc`], [`versions`], [`session`], [`rng`], [`buggify`]. Roles (thin
//! compositions of them): [`coordinator`], [`replica`] (the KV server), [`registration`],
//! [`eventual`] (the eventual-mode node).
//! [`peer`] (the peer two-phase-commit node).
//! Components never use roles.

pub mod buggify;
pub mod cache;
pub mod coordinator;
pub mod eventual;
pub mod limits;
pub mod log;
pub mod peer;
pub mod proto;
pub mod registration;
pub mod replica;
pub mod ring;
pub mod rng;
pub mod role;
pub mod session;
pub mod storage;
pub mod time;
pub mod twopc;
pub mod versions;

pub use role::Role;

/// A point in time, in milliseconds, as the caller sees it. The core never reads a clock.
pub type Ts = u64;

/// Where an answer goes: an opaque handle the caller gave with the request (in the
/// shells a connection and a request on it; in the simulator a link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyTo(pub u64);
