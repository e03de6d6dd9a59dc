//! ringkv's deterministic simulator: one seed decides a whole cluster's run, its faults
//! and its workload, and checkers judge the history the clients recorded.
//!
//! Nothing here reads a clock, spawns a thread or asks the OS for randomness: the seed's
//! ChaCha stream decides every choice, and events are ordered by (time, sequence), so a
//! seed replays exactly.

pub mod check;
pub mod config;
pub mod disk;
pub mod history;
pub mod network;
pub mod run;
pub mod trace;
pub mod world;

pub use run::{replay_command, run_config, run_seed, RunReport};
