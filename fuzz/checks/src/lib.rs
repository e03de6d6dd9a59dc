//! The checks behind the fuzz targets of `fuzz/`: each module's `check(input)` runs one
//! target's assertions on one input and panics on a violation. The targets under
//! `fuzz/fuzz_targets/` only hand libFuzzer's inputs to them.
//!
//! They live here, in the main workspace, so that `cargo test --workspace` builds and
//! lints them with the code they check (a change to the core that a target no longer
//! compiles against fails CI, not the next fuzzing run), and so that the committed seeds
//! and regressions, with mutations of them, run through every check on each test run
//! (`tests/corpus.rs`). Fuzzing itself still needs cargo-fuzz (docs/fuzzing.md).

pub mod log;
pub mod proto;
pub mod resp;
pub mod roles;
