//! Many clients writing one key at once, through real processes: PUTs queued behind the
//! key's transaction run as one transaction carrying the last value, and every client of
//! the run hears its answer. The history (JSON and RESP clients alike) must still be
//! linearizable, every PUT must succeed, and the log must show fewer transactions than
//! acknowledged PUTs: the absorbed values were never prepared. In strong mode the
//! coordinator queues the PUTs; in peer mode the node the clients ask does.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;
use std::path::Path;

use ringkv_core::coordinator::record::CoordinatorRecord;
use ringkv_core::peer::record::PeerRecord;
use ringkv_core::proto::TxOp;
use ringkv_core::storage::replay_log;
use ringkv_e2e::nemesis::{run_client, ClientPlan, Port, Recorder};
use ringkv_e2e::peer::start_peer;
use ringkv_e2e::Cluster;
use ringkv_sim::check::{check_linearizable, LinearizabilityConfig};
use ringkv_sim::history::{Command, Outcome};

const IDS: [u64; 3] = [1 << 20, 1 << 62, 3 << 62];
/// Clients on the one key: more than one transaction at a time can serve, so that PUTs
/// queue two and more deep, and fewer than the 64 updates a key may queue, so that none
/// is refused.
const CLIENTS: u32 = 8;
const KEY: &str = "hot";

#[test]
fn many_clients_writing_one_key_share_transactions_and_stay_linearizable() {
    let cluster = Cluster::start(
        &IDS,
        &["--resp-addr", "127.0.0.1:0", "--timeout-ms", "3000"],
    );
    let resp = cluster.coordinator.addr("resp");
    let target = |id: u32| match id % 2 {
        0 => (Port::Json, cluster.client_addr),
        _ => (Port::Resp, resp),
    };
    let acknowledged = run_on_one_key(target);
    let log = cluster
        .data_dir(0)
        .parent()
        .expect("the cluster's directory")
        .join("coordinator")
        .join("wal.log");
    check_fewer_transactions(&acknowledged, &staged_values(&log));
}

#[test]
fn many_clients_writing_one_key_through_one_peer_node_share_attempts() {
    let cluster = start_peer(3, None, &["--timeout-ms", "3000"]);
    let node = cluster.addrs[0];
    let acknowledged = run_on_one_key(|_| (Port::Json, node));
    // Every node holds every key: the first node's log has every attempt's prepare.
    let log = cluster.data_dir(0).join("wal.log");
    check_fewer_transactions(&acknowledged, &prepared_values(&log));
}

/// Runs the clients on the one key for a second, client `id` speaking to `target(id)`,
/// checks the history, and returns the values of the acknowledged PUTs.
fn run_on_one_key(target: impl Fn(u32) -> (Port, SocketAddr)) -> BTreeSet<String> {
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (port, target) = target(id);
            let plan = ClientPlan {
                id,
                seed: 0x4107_0000 ^ u64::from(id),
                keys: vec![KEY.to_owned()],
                targets: vec![target],
                port,
                pause_ms: (0, 1),
            };
            let (recorder, stop) = (Arc::clone(&recorder), Arc::clone(&stop));
            std::thread::spawn(move || run_client(plan, &recorder, &stop))
        })
        .collect();
    // Long enough for hundreds of absorbed PUTs, short enough that the checker decides
    // one key of thousands of operations by 8 clients at once.
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client panicked");
    }

    let history = recorder.history();
    // One key written by every client at once makes a larger search than the default
    // budget is sized for (keys of a few hundred operations).
    let config = LinearizabilityConfig {
        max_steps_per_key: 50_000_000,
    };
    let stats = check_linearizable(&history, &config)
        .unwrap_or_else(|violation| panic!("not linearizable: {violation}"));
    let mut acknowledged = BTreeSet::new();
    for op in history.operations() {
        let Command::Put { value } = &op.command else {
            continue;
        };
        match &op.outcome {
            Outcome::Done => {
                acknowledged.insert(value.clone());
            }
            other => panic!("with no faults every PUT succeeds: {value} -> {other:?}"),
        }
    }
    eprintln!("{} PUTs acknowledged; {stats:?}", acknowledged.len());
    assert!(acknowledged.len() > 100, "{} PUTs", acknowledged.len());
    acknowledged
}

/// Every value a transaction carried was acknowledged, and there were fewer
/// transactions than acknowledged PUTs: some were absorbed and never prepared.
fn check_fewer_transactions(acknowledged: &BTreeSet<String>, carried: &BTreeSet<String>) {
    eprintln!("{} PUT transactions", carried.len());
    assert!(
        carried.is_subset(acknowledged),
        "a value the clients did not hear acknowledged was prepared: {:?}",
        carried.difference(acknowledged).collect::<Vec<_>>()
    );
    assert!(
        carried.len() < acknowledged.len(),
        "{} transactions for {} acknowledged PUTs: none was absorbed",
        carried.len(),
        acknowledged.len()
    );
}

/// The values of the PUT transactions in a coordinator's log.
fn staged_values(path: &Path) -> BTreeSet<String> {
    let log = std::fs::read(path).expect("the coordinator's log");
    let mut values = BTreeSet::new();
    let scan = replay_log(&log, |record: CoordinatorRecord, _| {
        if let CoordinatorRecord::Staged {
            op: TxOp::Put { value },
            ..
        } = record
        {
            values.insert(value);
        }
        Ok(())
    });
    assert!(scan.bad_record.is_none(), "{:?}", scan.bad_record);
    values
}

/// The values of the PUTs prepared in a peer node's log.
fn prepared_values(path: &Path) -> BTreeSet<String> {
    let log = std::fs::read(path).expect("the node's log");
    let mut values = BTreeSet::new();
    let scan = replay_log(&log, |record: PeerRecord, _| {
        if let PeerRecord::PreparePut { value, .. } = record {
            values.insert(value);
        }
        Ok(())
    });
    assert!(scan.bad_record.is_none(), "{:?}", scan.bad_record);
    values
}
