//! The simulator in `cargo test`: a fixed sweep of seeds, each run checked for
//! linearizability, per-connection program order, lost writes, replica agreement and
//! liveness, and each failure reported with its seed and the command that replays it.

use ringkv_sim::config::Mode;
use ringkv_sim::trace::Trace;
use ringkv_sim::{run_seed, RunReport};

/// Runs seeds `range` of this mode and fails with every failing seed's report and
/// replay command.
fn sweep(range: std::ops::Range<u64>) {
    if let Err(text) = ringkv_sim::sweep_in(Mode::Strong, range) {
        panic!("{text}");
    }
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

#[test]
fn runs_exercise_the_faults() {
    // Over a handful of seeds, crashes of both kinds happen, reads fail, pipelines wait,
    // and operations both succeed and fail: a sweep where nothing goes wrong would prove
    // little.
    let reports: Vec<RunReport> = (0..20).map(|s| run_seed(s, Trace::hashed())).collect();
    let crashes: u64 = reports.iter().map(|r| r.crashes).sum();
    let unanswered: usize = reports.iter().map(|r| r.operations - r.answered).sum();
    let machine: u64 = reports.iter().map(|r| r.machine_crashes).sum();
    let failed_reads: u64 = reports.iter().map(|r| r.failed_reads).sum();
    let held: u64 = reports.iter().map(|r| r.held_requests).sum();
    let coordinator: u64 = reports.iter().map(|r| r.coordinator_crashes).sum();
    assert!(coordinator > 0, "the coordinator must crash too");
    assert!(crashes > 10, "crashes: {crashes}");
    assert!(
        machine > 0 && machine < crashes,
        "both process and machine crashes: {machine} of {crashes} machine"
    );
    assert!(failed_reads > 0, "some reads must fail");
    assert!(
        held > 0,
        "some pipelined requests must wait for earlier ones"
    );
    assert!(unanswered > 0, "some operations must time out");
}
