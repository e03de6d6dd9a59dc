//! Eventual-mode worlds in `cargo test`: a fixed sweep of seeds, each checked for
//! convergence, Jepsen's set test, no resurrection, liveness, no false siblings, reads
//! after writes, monotonic reads and last write wins, each failure reported
//! with its seed and the command that replays it; a seed replays to the same trace; and
//! the sweep's worlds do meet the faults and conflicts the checks are about.

use ringkv_core::eventual::{Conflicts, Repair};
use ringkv_sim::config::{Mode, SimConfig};
use ringkv_sim::driver::World;
use ringkv_sim::eventual::workload::{EvCommand, EvOutcome};
use ringkv_sim::run_seed_in;
use ringkv_sim::trace::Trace;

/// Runs seeds `range` of this mode and fails with every failing seed's report and
/// replay command.
fn sweep(range: std::ops::Range<u64>) {
    if let Err(text) = ringkv_sim::sweep_in(Mode::Eventual, range) {
        panic!("{text}");
    }
}

// Four sweeps of 128 seeds, so that the test harness runs them side by side.
#[test]
fn eventual_seeds_0_to_128() {
    sweep(0..128);
}

#[test]
fn eventual_seeds_128_to_256() {
    sweep(128..256);
}

#[test]
fn eventual_seeds_256_to_384() {
    sweep(256..384);
}

#[test]
fn eventual_seeds_384_to_512() {
    sweep(384..512);
}

#[test]
fn an_eventual_seed_replays_to_the_same_trace() {
    for seed in [0, 7, 1234, u64::MAX] {
        let first = run_seed_in(Mode::Eventual, seed, Trace::hashed());
        let second = run_seed_in(Mode::Eventual, seed, Trace::hashed());
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.operations, second.operations, "seed {seed}");
        assert!(first.operations > 0, "seed {seed} ran no operation");
    }
    let a = run_seed_in(Mode::Eventual, 1, Trace::hashed());
    let b = run_seed_in(Mode::Strong, 1, Trace::hashed());
    assert_ne!(a.trace_hash, b.trace_hash, "the mode decides the world");
}

#[test]
fn eventual_worlds_are_drawn_across_their_knobs() {
    let configs: Vec<SimConfig> = (0..300).map(SimConfig::eventual_from_seed).collect();
    let knobs = |c: &SimConfig| c.eventual.clone().expect("eventual knobs");
    let nodes: std::collections::BTreeSet<usize> =
        configs.iter().map(|c| c.server_ids.len()).collect();
    assert_eq!(nodes, (3..=7).collect());
    assert!(configs
        .iter()
        .all(|c| (1..=c.server_ids.len()).contains(&knobs(c).replication)));
    let lww = configs
        .iter()
        .filter(|c| knobs(c).conflicts == Conflicts::Lww)
        .count();
    assert!((20..120).contains(&lww), "lww worlds: {lww} of 300");
    for repair in [Repair::Both, Repair::Hints, Repair::Read] {
        assert!(
            configs.iter().any(|c| knobs(c).repair == repair),
            "{repair:?}"
        );
    }
    let losing = configs.iter().filter(|c| knobs(c).disk_loss > 0.0).count();
    assert!((60..200).contains(&losing), "worlds losing disks: {losing}");
    assert_eq!(
        SimConfig::for_mode(Mode::Strong, 5),
        SimConfig::from_seed(5)
    );
}

#[test]
fn eventual_runs_meet_siblings_deletes_timeouts_and_lost_disks() {
    // A sweep where no read saw siblings, no delete or add was acknowledged, nothing
    // timed out, no disk was lost and no value looked like a log frame would prove
    // little.
    let (mut siblings, mut deletes, mut adds, mut timeouts, mut lost) = (0, 0, 0, 0, 0);
    let mut lookalikes = 0;
    for seed in 0..24 {
        let config = SimConfig::eventual_from_seed(seed);
        let mut world = World::new(config.clone(), Trace::hashed());
        world.run_until(config.end_at_ms());
        lookalikes += world.lookalike_values();
        let (history, disks_lost_at) = world.eventual_history().expect("eventual");
        lost += disks_lost_at.len();
        for op in history {
            match (&op.command, &op.outcome) {
                (EvCommand::Read, EvOutcome::Found { values, .. }) if values.len() > 1 => {
                    siblings += 1
                }
                (EvCommand::Delete { .. }, EvOutcome::Written { .. }) => deletes += 1,
                (EvCommand::Add { .. }, EvOutcome::Written { .. }) => adds += 1,
                (_, EvOutcome::Timeout) => timeouts += 1,
                _ => {}
            }
        }
    }
    assert!(siblings > 0, "reads that saw siblings");
    assert!(deletes > 10, "acknowledged deletes: {deletes}");
    assert!(adds > 100, "acknowledged adds: {adds}");
    assert!(timeouts > 0, "timeouts");
    assert!(lost > 0, "lost disks");
    assert!(
        lookalikes > 10,
        "values that look like log frames: {lookalikes}"
    );
}
