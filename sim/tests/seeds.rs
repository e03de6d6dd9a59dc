//! The simulator in `cargo test`: a fixed sweep of seeds, each run checked for
//! linearizability, per-connection program order, lost writes, replica agreement and
//! liveness, and each failure reported with its seed and the command that replays it.

use ringkv_sim::config::Mode;
use ringkv_sim::trace::Trace;
use ringkv_sim::{run_seed, SweepTotals};

/// Runs seeds `range` of this mode and fails with every failing seed's report and
/// replay command, or if the runs did not meet every kind of fault.
fn sweep(range: std::ops::Range<u64>) {
    match ringkv_sim::sweep_in(Mode::Strong, range) {
        Ok(totals) => assert_the_faults_were_met(&totals),
        Err(text) => panic!("{text}"),
    }
}

/// Over a quarter of the sweep, crashes of both kinds and of the coordinator happen,
/// reads fail, pipelines wait, operations both succeed and time out, the coordinator's
/// log is compacted and the servers' segments merged: a sweep where nothing goes wrong
/// would prove little.
/// (Counted over 250 seeds, each kind is met tens of times or more, so a change to the
/// worlds that makes one rare shows here long before it vanishes.)
fn assert_the_faults_were_met(totals: &SweepTotals) {
    let faults = &totals.faults;
    assert!(
        faults.coordinator_crashes > 0,
        "the coordinator must crash too: {totals:?}"
    );
    assert!(faults.crashes > 100, "crashes: {totals:?}");
    assert!(
        faults.machine_crashes > 0 && faults.machine_crashes < faults.crashes,
        "both process and machine crashes: {totals:?}"
    );
    assert!(faults.failed_reads > 10, "some reads must fail: {totals:?}");
    assert!(
        faults.held_requests > 0,
        "some pipelined requests must wait for earlier ones: {totals:?}"
    );
    assert!(
        totals.unanswered > 0,
        "some operations must time out: {totals:?}"
    );
    assert!(
        faults.log_compactions > 100,
        "the coordinator's log must be compacted: {totals:?}"
    );
    assert!(
        faults.lookalike_values > 100,
        "some values must look like log frames: {totals:?}"
    );
    assert!(
        faults.segment_merges > 100,
        "the KV servers' sealed segments must be merged: {totals:?}"
    );
    assert!(
        faults.absorbed_updates > 100,
        "queued PUTs of a key must be absorbed into later ones: {totals:?}"
    );
}

// Four sweeps of 250 seeds, so that the test harness runs them side by side.
#[test]
fn seeds_0_to_250() {
    sweep(0..250);
}

#[test]
fn seeds_250_to_500() {
    sweep(250..500);
}

#[test]
fn seeds_500_to_750() {
    sweep(500..750);
}

#[test]
fn seeds_750_to_1000() {
    sweep(750..1000);
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    for seed in [0, 7, 1234, u64::MAX] {
        let first = run_seed(seed, Trace::hashed());
        let second = run_seed(seed, Trace::hashed());
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.operations, second.operations, "seed {seed}");
        assert!(first.operations > 0, "seed {seed} ran no operation");
    }
    let a = run_seed(1, Trace::hashed());
    let b = run_seed(2, Trace::hashed());
    assert_ne!(
        a.trace_hash, b.trace_hash,
        "different seeds, different runs"
    );
}
