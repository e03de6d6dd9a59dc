//! Checkers that judge a run's history; each one states a guarantee of ringkv and fails
//! with a report naming the operations that break it.
//!
//! - [`linearizability`]: every key behaves as one register that each operation reads or
//!   writes atomically at some instant between its invocation and its answer (or at any
//!   time after its invocation, or never, if it got no answer).
//! - [`cluster`]: when the run ends, every replica of every key agrees, no server holds a
//!   key it does not replicate, nothing is open or in doubt; and once the faults stopped
//!   and the cluster settled, every operation succeeded in time.
//! - [`program_order`]: requests pipelined on one connection take effect in order where
//!   they conflict, judged from when the serving node got and answered each.
//! - [`durability`]: once the cluster is quiet, no key's final value is older than an
//!   acknowledged PUT or DEL of that key, and no key holds a value nobody wrote.

pub mod cluster;
mod describe;
pub mod durability;
pub mod eventual;
#[cfg(test)]
mod generated;
pub mod linearizability;
pub mod program_order;

pub use cluster::{
    check_agreement, check_liveness, check_progress, replica_set, ClusterSnapshot, ServerSnapshot,
};
pub use durability::{check_no_lost_writes, DurabilityError};
pub use linearizability::{
    check_linearizable, LinearizabilityConfig, LinearizabilityError, LinearizabilityStats,
};
pub use program_order::{check_program_order, served_history};
