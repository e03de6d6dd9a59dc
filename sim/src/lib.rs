//! ringkv's deterministic simulator: one seed decides a whole cluster's run, its faults
//! and its workload, and checkers judge the history the clients recorded.
//!
//! Nothing here reads a clock, spawns a thread or asks the OS for randomness: the seed's
//! ChaCha stream decides every choice, and events are ordered by (time, sequence), so a
//! seed replays exactly.
//!
//! The parts, one idea each: [`driver`] (event queue and phases), [`cluster`] (nodes
//! running roles, crash and restart), [`network`] (paths and their faults), [`disk`]
//! (page cache, syncs, crashes, read errors), [`faults`] (the fault schedule),
//! [`workload`] (clients and their history) and [`check`] (the verdicts).

#![warn(missing_docs)]

pub mod check;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod driver;
pub mod eventual;
pub mod faults;
pub mod history;
pub mod lookalike;
pub mod network;
pub mod run;
pub mod trace;
pub mod workload;

pub use run::{
    replay_command, replay_command_in, run_config, run_seed, run_seed_in, sweep_in, FaultCounts,
    RunReport, SweepTotals,
};
