//! ringkv's protocol as a deterministic, sans-IO state-machine core.
//!
//! Every role is a plain struct driven through `handle(now, input)`, drained through
//! `poll_output()`, and woken at `poll_timeout()`. Nothing here touches sockets, files,
//! clocks, threads or OS randomness, so the simulator and the real shells run the very
//! same code, and a seed reproduces any run.

pub mod cache;
pub mod coordinator;
pub mod limits;
pub mod log;
pub mod proto;
pub mod registration;
pub mod replica;
pub mod ring;
pub mod session;
pub mod versions;

/// A point in time, in milliseconds, as the caller sees it. The core never reads a clock.
pub type Ts = u64;

/// Where an answer goes: an opaque handle the caller gave with the request (in the
/// shells a connection and a request on it; in the simulator a link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyTo(pub u64);
