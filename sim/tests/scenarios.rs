//! Scenarios that need a precise order of events rather than a random workload: each one
//! drives a quiet world (no faults, 1 ms links) by hand and asserts what a feature of the
//! simulated cluster must do.

use ringkv_core::cache::CacheConfig;
use ringkv_sim::config::{DiskFaults, NetFaults, SimConfig};
use ringkv_sim::disk::CrashKind;
use ringkv_sim::driver::World;
use ringkv_sim::history::{Command, Outcome};
use ringkv_sim::network::NodeId;
use ringkv_sim::trace::Trace;

/// A world with `servers`, no faults and no random operations: only what a test issues.
fn quiet(servers: &[u64]) -> World {
    let mut config = SimConfig::from_seed(1);
    config.server_ids = servers.to_vec();
    config.clients = 2;
    config.pipeline = 1;
    config.keys = vec!["k".into()];
    config.net = NetFaults {
        min_delay_ms: 1,
        max_delay_ms: 1,
        loss: 0.0,
        duplication: 0.0,
        client_loss: 0.0,
        partition_every_ms: 0,
        clog_every_ms: 0,
    };
    config.crashes.crash_every_ms = 0;
    config.disk = DiskFaults {
        sync_ms: (1, 1),
        read_failure: 0.0,
    };
    // The smallest caches, so that reads reach the disks.
    config.coordinator_cache = CacheConfig { sets: 1, ways: 1 };
    config.server_cache = CacheConfig { sets: 1, ways: 1 };
    // Faults stop at once and random clients never start.
    config.safety_ms = 0;
    config.liveness_ms = 0;
    World::new(config, Trace::hashed())
}

fn outcome(world: &World, op: usize) -> Outcome {
    world.history().operations()[op].outcome.clone()
}

fn put(value: &str) -> Command {
    Command::Put {
        value: value.into(),
    }
}

#[test]
fn a_pipelined_get_reads_the_put_sent_before_it_on_its_connection() {
    let mut world = quiet(&[10, 20, 30]);
    world.run_until(1_000);
    let put = world.issue(0, "k", put("v1"));
    let get = world.issue(0, "k", Command::Get);
    // The same GET on another connection, at the same instant: nothing orders it.
    let other = world.issue(1, "k", Command::Get);
    world.run_until(3_000);
    assert_eq!(outcome(&world, put), Outcome::Done);
    assert_eq!(outcome(&world, get), Outcome::Found("v1".into()));
    assert_eq!(
        outcome(&world, other),
        Outcome::NotFound,
        "without program order the GET overtakes the PUT in flight"
    );
    assert_eq!(world.stats().held_requests, 1);
}

#[test]
fn a_failed_read_sends_the_coordinator_to_the_other_replica() {
    let mut world = quiet(&[10, 20]);
    world.run_until(1_000);
    let put_k = world.issue(0, "k", put("v1"));
    world.run_until(1_100);
    // Another key pushes k out of every one-entry cache.
    let put_j = world.issue(0, "j", put("w1"));
    world.run_until(1_200);
    assert_eq!(outcome(&world, put_k), Outcome::Done);
    assert_eq!(outcome(&world, put_j), Outcome::Done);

    let disk_10 = world.cluster().disk(NodeId::Node(10)).unwrap().clone();
    let disk_20 = world.cluster().disk(NodeId::Node(20)).unwrap().clone();
    disk_10.set_read_failure(1.0);
    let get = world.issue(0, "k", Command::Get);
    world.run_until(1_300);
    assert_eq!(outcome(&world, get), Outcome::Found("v1".into()));
    assert_eq!(disk_10.failed_reads(), 1, "the first replica asked failed");
    assert_eq!(disk_20.failed_reads(), 0);

    disk_20.set_read_failure(1.0);
    let evict = world.issue(0, "j", put("w2"));
    world.run_until(1_400);
    assert_eq!(outcome(&world, evict), Outcome::Done);
    let get = world.issue(0, "k", Command::Get);
    world.run_until(2_000);
    assert_eq!(
        outcome(&world, get),
        Outcome::Failed,
        "with both reads failing the GET is unavailable"
    );
}

#[test]
fn the_coordinator_restarts_as_a_new_run_and_servers_find_it() {
    let mut world = quiet(&[10, 20, 30]);
    world.run_until(1_000);
    let first = world.issue(0, "k", put("v1"));
    world.run_until(2_000);
    assert_eq!(outcome(&world, first), Outcome::Done);

    world.crash(NodeId::Coordinator, CrashKind::Process);
    assert!(!world.cluster().is_up(NodeId::Coordinator));
    let lost = world.issue(1, "k", Command::Get);
    world.run_until(2_100);
    world.start(NodeId::Coordinator);
    assert_eq!(world.cluster().incarnation(NodeId::Coordinator), Some(1));
    // Servers register again within their 2 s refresh.
    world.run_until(5_000);
    let get = world.issue(0, "k", Command::Get);
    let second = world.issue(0, "k", put("v2"));
    let after = world.issue(0, "k", Command::Get);
    world.run_until(8_000);
    assert!(world.history().is_open(lost), "nobody was there to answer");
    assert_eq!(outcome(&world, get), Outcome::Found("v1".into()));
    assert_eq!(outcome(&world, second), Outcome::Done);
    assert_eq!(outcome(&world, after), Outcome::Found("v2".into()));
}
