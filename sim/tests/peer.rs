//! Peer worlds in `cargo test`: a fixed sweep of peer seeds (every node a coordinator,
//! faults on every path, crashes of any node), each checked for linearizability, program
//! order, lost writes, agreement of every replica, keys left locked and progress under
//! contention; determinism; and a world of steady contention on one key, where updates
//! must keep succeeding for every client.

use ringkv_sim::check::check_progress;
use ringkv_sim::config::{DiskFaults, Mode, NetFaults, SimConfig};
use ringkv_sim::driver::World;
use ringkv_sim::history::{Command, Operation, Outcome};
use ringkv_sim::trace::Trace;
use ringkv_sim::{run_seed_in, RunReport};

/// Runs seeds `range` of this mode and fails with every failing seed's report and
/// replay command.
fn sweep(range: std::ops::Range<u64>) {
    if let Err(text) = ringkv_sim::sweep_in(Mode::Peer, range) {
        panic!("{text}");
    }
}

// Four sweeps of 128 seeds, so that the test harness runs them side by side.
#[test]
fn peer_seeds_0_to_128() {
    sweep(0..128);
}

#[test]
fn peer_seeds_128_to_256() {
    sweep(128..256);
}

#[test]
fn peer_seeds_256_to_384() {
    sweep(256..384);
}

#[test]
fn peer_seeds_384_to_512() {
    sweep(384..512);
}

#[test]
fn a_peer_seed_replays_to_the_same_trace() {
    for seed in [0, 9, 4321, u64::MAX] {
        let first = run_seed_in(Mode::Peer, seed, Trace::hashed());
        let second = run_seed_in(Mode::Peer, seed, Trace::hashed());
        assert_eq!(first.trace_hash, second.trace_hash, "peer seed {seed}");
        assert_eq!(first.operations, second.operations, "peer seed {seed}");
        assert!(first.operations > 0, "peer seed {seed} ran no operation");
    }
    let strong = run_seed_in(Mode::Strong, 5, Trace::hashed());
    let peer = run_seed_in(Mode::Peer, 5, Trace::hashed());
    assert_ne!(
        strong.trace_hash, peer.trace_hash,
        "one seed, two modes, two runs"
    );
}

/// Eight clients on one key, every node coordinating: updates whose next retry fell past
/// their deadline gave up at once, with time left, and after the faults stopped more
/// updates were answered `aborted` than succeeded. An update now tries once more before
/// its deadline.
#[test]
fn peer_seed_4347_updates_use_their_whole_timeout_under_contention() {
    let report = run_seed_in(Mode::Peer, 4347, Trace::hashed());
    assert!(report.failures.is_empty(), "{:?}", report.failures);
}

#[test]
fn peer_worlds_vary_and_exercise_their_faults() {
    let configs: Vec<SimConfig> = (0..200)
        .map(|s| SimConfig::for_mode(Mode::Peer, s))
        .collect();
    let sizes: std::collections::BTreeSet<usize> =
        configs.iter().map(|c| c.server_ids.len()).collect();
    assert_eq!(sizes, (3..=7).collect());
    let partial = configs.iter().filter(|c| c.replication.is_some()).count();
    assert!((30..110).contains(&partial), "preference lists: {partial}");
    let reports: Vec<RunReport> = (0..20)
        .map(|s| run_seed_in(Mode::Peer, s, Trace::hashed()))
        .collect();
    let crashes: u64 = reports.iter().map(|r| r.faults.crashes).sum();
    let machine: u64 = reports.iter().map(|r| r.faults.machine_crashes).sum();
    let unanswered: usize = reports.iter().map(|r| r.operations - r.answered).sum();
    assert!(
        crashes > 10 && machine > 0,
        "crashes: {crashes}, {machine} of a machine"
    );
    assert!(unanswered > 0, "some operations time out during the faults");
    let lookalikes: u64 = reports.iter().map(|r| r.faults.lookalike_values).sum();
    assert!(
        lookalikes > 10,
        "values that look like log frames: {lookalikes}"
    );
    let absorbed: u64 = reports.iter().map(|r| r.faults.absorbed_updates).sum();
    assert!(
        absorbed > 10,
        "PUTs waiting for their key absorbed into another: {absorbed}"
    );
}

/// Eight clients spread over seven nodes, all updating one key for 20 s with no fault:
/// coordinators collide all the time.
#[test]
fn under_steady_contention_on_one_key_updates_keep_succeeding_for_every_client() {
    let mut config = SimConfig::for_mode(Mode::Peer, 11);
    config.server_ids = vec![1, 2, 3, 4, 5, 6, 7];
    config.replication = None;
    config.clients = 8;
    config.pipeline = 1;
    config.keys = vec!["k".into()];
    config.timeout_ms = 1000;
    config.net = NetFaults {
        min_delay_ms: 1,
        max_delay_ms: 20,
        loss: 0.0,
        duplication: 0.0,
        client_loss: 0.0,
        partition_every_ms: 0,
        clog_every_ms: 0,
    };
    config.crashes.crash_every_ms = 0;
    config.disk = DiskFaults {
        sync_ms: (1, 5),
        read_failure: 0.0,
    };
    config.buggify = false;
    config.safety_ms = 0;
    config.liveness_ms = 20_000;
    let mut world = World::new(config.clone(), Trace::hashed());
    world.run_until(config.end_at_ms());
    let history = world.history();
    let (snapshot, errors) = world.cluster().snapshot(7);
    assert!(errors.is_empty(), "{errors:?}");
    let window = 0..config.clients_stop_at_ms();
    if let Err(problems) = check_progress(history, window, &snapshot) {
        panic!("no progress under contention: {problems:?}");
    }
    let updates = |client: u32| {
        history
            .operations()
            .iter()
            .filter(move |op| op.client == client && op.command != Command::Get)
    };
    for client in 0..config.clients {
        let succeeded = |op: &&Operation| matches!(op.outcome, Outcome::Done | Outcome::NotFound);
        let done = updates(client).filter(succeeded).count();
        let all = updates(client).count();
        assert!(
            done * 2 > all,
            "client {client}: {done} of {all} updates succeeded"
        );
    }
}
