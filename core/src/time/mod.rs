//! Time in the core: a timer table indexed by kind, and retry waits with seeded jitter.
//!
//! Time is always an argument (`now`, milliseconds): nothing here reads a clock.

mod backoff;
mod timers;

pub use backoff::{Attempts, Backoff};
pub use timers::Timers;
