//! Real processes under a nemesis, judged by the simulator's linearizability checker:
//! clients on a few keys while processes are SIGKILLed and restarted on their data, or
//! paused (SIGSTOP) past the timeouts and resumed: KV servers and the coordinator in
//! strong mode (half the clients on its RESP port), any node in peer mode, the ones
//! coordinating included. Every history the clients saw must be linearizable, and once
//! the faults stop every client's requests succeed again. The simulator shows this over
//! thousands of seeded worlds; this shows that the shells, sockets, files and fsyncs
//! keep what the core promises.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringkv_core::rng::DetRng;
use ringkv_e2e::log_sizes::LogSizes;
use ringkv_e2e::nemesis::{faults_for, run_client, seed_or, ClientPlan, Port, Recorder};
use ringkv_e2e::peer::{start_peer, wait_agree};
use ringkv_e2e::{get, Client, Cluster};
use ringkv_sim::check::{check_linearizable, LinearizabilityConfig};
use ringkv_sim::history::{History, Outcome};

const IDS: [u64; 3] = [1 << 20, 1 << 62, 3 << 62];
const CLIENTS: u32 = 4;
/// How long the clients go on once the kills stop, at least.
const CALM: Duration = Duration::from_secs(1);
/// How long every client may take to succeed again once the kills stop.
const CALM_LIMIT: Duration = Duration::from_secs(20);

/// What the nemesis did.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    kills: u32,
    pauses: u32,
}

impl Faults {
    fn record(&mut self, pause: bool) {
        match pause {
            true => self.pauses += 1,
            false => self.kills += 1,
        }
    }
}

/// How long a paused process stays stopped (SIGSTOP): past the 500 ms timeouts, so
/// that the others give up on it and it comes back to find them moved on.
fn pause_of(rng: &mut DetRng) -> Duration {
    Duration::from_millis(rng.between(100, 1500))
}

fn keys() -> Vec<String> {
    (0..4).map(|k| format!("nk{k}")).collect()
}

/// Starts the clients: client `id` speaks to `port_of(id)`'s targets.
fn start_clients(
    seed: u64,
    port_of: impl Fn(u32) -> (Port, Vec<std::net::SocketAddr>),
    recorder: &Arc<Recorder>,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<u64>> {
    (0..CLIENTS)
        .map(|id| {
            let (port, targets) = port_of(id);
            let plan = ClientPlan {
                id,
                seed: seed ^ (u64::from(id) << 32),
                keys: keys(),
                targets,
                port,
                pause_ms: (2, 12),
            };
            let (recorder, stop) = (Arc::clone(recorder), Arc::clone(stop));
            std::thread::spawn(move || run_client(plan, &recorder, &stop))
        })
        .collect()
}

/// Whether client `id` got an answer meaning success (a value, `not_found`, `Success`)
/// to a request it sent at `from_us` or later.
fn succeeded_since(history: &History, id: u32, from_us: u64) -> bool {
    history.operations().iter().any(|op| {
        op.client == id
            && op.invoke_ms >= from_us
            && matches!(
                op.outcome,
                Outcome::Done | Outcome::Found(_) | Outcome::NotFound
            )
    })
}

/// Once the kills stop, waits until every client has succeeded again (at most
/// [`CALM_LIMIT`]), stops them and checks the history: linearizable, and with enough
/// operations and kills to mean something.
fn judge(
    seed: u64,
    faults: Faults,
    clients: Vec<JoinHandle<u64>>,
    recorder: &Recorder,
    stop: &AtomicBool,
) {
    let calm_from_us = recorder.now_us();
    let deadline = Instant::now() + CALM_LIMIT;
    std::thread::sleep(CALM);
    loop {
        let history = recorder.history();
        if (0..CLIENTS).all(|id| succeeded_since(&history, id, calm_from_us)) {
            break;
        }
        let stuck: Vec<u32> = (0..CLIENTS)
            .filter(|&id| !succeeded_since(&history, id, calm_from_us))
            .collect();
        assert!(
            Instant::now() < deadline,
            "seed {seed}: clients {stuck:?} never succeeded in {CALM_LIMIT:?} after the kills"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let answers = client
            .join()
            .expect("a client saw only answers the protocol allows");
        assert!(answers > 20, "seed {seed}: a client got {answers} answers");
    }
    let history = recorder.history();
    let config = LinearizabilityConfig::default();
    let stats = check_linearizable(&history, &config)
        .unwrap_or_else(|err| panic!("seed {seed}, {faults:?}: {err}"));
    let ops = history.operations();
    let done = ops.iter().filter(|op| op.outcome == Outcome::Done).count();
    let unknown = ops.iter().filter(|op| op.complete_ms.is_none()).count();
    assert!(
        faults.kills >= 4 && faults.pauses >= 2,
        "seed {seed}: {faults:?}"
    );
    assert!(stats.operations > 500, "seed {seed}: {stats:?}");
    assert!(done > 100, "seed {seed}: {done} updates succeeded");
    eprintln!(
        "seed {seed}: {faults:?}, {} operations ({done} updates done, {unknown} unknown), \
         {} checker steps",
        ops.len(),
        stats.steps
    );
}

#[test]
fn a_strong_cluster_stays_linearizable_through_both_ports_while_its_processes_are_killed() {
    let seed = seed_or(0x5eed_0001);
    // The RESP port at a fixed address, so that a restarted coordinator takes it again.
    let resp_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    // Small logs, so that the coordinator's log is compacted and the servers' segments
    // are sealed and merged many times under the faults.
    let flags = [
        "--timeout-ms",
        "500",
        "--resp-addr",
        &resp_addr,
        "--log-compact-bytes",
        "4096",
    ];
    let mut c = Cluster::start_with(&IDS, &flags, &["--segment-bytes", "4096"]);
    let resp = c.coordinator.addr("resp");
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    // Half the clients through the JSON port, half through the RESP port.
    let json = c.client_addr;
    let port_of = |id: u32| match id % 2 {
        0 => (Port::Json, vec![json]),
        _ => (Port::Resp, vec![resp]),
    };
    let clients = start_clients(seed, port_of, &recorder, &stop);
    let mut rng = DetRng::new(seed);
    let mut faults = Faults::default();
    let nemesis_until_us = recorder.now_us() + faults_for().as_micros() as u64;
    let mut round = 0;
    while recorder.now_us() < nemesis_until_us {
        std::thread::sleep(Duration::from_millis(rng.between(200, 600)));
        let down = Duration::from_millis(rng.between(50, 500));
        let i = rng.between(0, IDS.len() as u64 - 1) as usize;
        // Every kind of fault, in turn.
        match round % 5 {
            0 | 3 => {
                c.kill_server(i);
                std::thread::sleep(down);
                c.start_server(i);
            }
            1 => c.servers[i]
                .as_ref()
                .expect("up")
                .pause_for(pause_of(&mut rng)),
            2 => {
                c.kill_coordinator();
                std::thread::sleep(down);
                c.start_coordinator_again();
            }
            _ => c.coordinator.pause_for(pause_of(&mut rng)),
        }
        faults.record(matches!(round % 5, 1 | 4));
        round += 1;
    }
    c.wait_for_ring(IDS.len());
    judge(seed, faults, clients, &recorder, &stop);
    // The servers' segments were merged under the faults (a merged file is named by
    // the range it replaced: `wal-START-END.log`).
    let merged = (0..IDS.len())
        .flat_map(|i| std::fs::read_dir(c.data_dir(i)).expect("a data directory"))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("wal-") && name.matches('-').count() == 2)
        .count();
    assert!(merged > 0, "seed {seed}: no server merged its segments");
    // Phase 2 reached both replicas of every key in the end: each replica's own copy
    // (a direct getreq) is what a GET through the coordinator reads.
    for key in keys() {
        let through = c.client().request(&get(&key));
        let [primary, secondary] = c.replicas_of(&key);
        for server in [primary, secondary] {
            let deadline = Instant::now() + CALM_LIMIT;
            loop {
                let own = Client::connect(c.server_listen(server)).request(&get(&key));
                if own.get("value") == through.get("value") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "seed {seed}: server {server} holds {own} for {key}, the coordinator reads {through}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_peer_cluster_stays_linearizable_while_any_node_is_killed() {
    let seed = seed_or(0x5eed_0002);
    // A small log threshold, so that the nodes compact their logs under the faults.
    let mut c = start_peer(
        3,
        None,
        &["--timeout-ms", "500", "--log-compact-bytes", "4096"],
    );
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let addrs = c.addrs.clone();
    let clients = start_clients(seed, |_| (Port::Json, addrs.clone()), &recorder, &stop);
    let mut rng = DetRng::new(seed);
    let mut faults = Faults::default();
    let nemesis_until_us = recorder.now_us() + faults_for().as_micros() as u64;
    let mut sizes = LogSizes::new(3);
    let mut round = 0;
    while recorder.now_us() < nemesis_until_us {
        std::thread::sleep(Duration::from_millis(rng.between(200, 600)));
        sizes.observe(&c);
        let i = rng.between(0, 2) as usize;
        // One node killed, or paused, or (one round in four) two killed at once: a
        // transaction's coordinator and a participant may then be down together while
        // the other participant is in doubt.
        let kind = round % 4;
        round += 1;
        if kind == 2 {
            c.proc(i).expect("up").pause_for(pause_of(&mut rng));
            faults.record(true);
            continue;
        }
        let down = match kind {
            3 => vec![i, (i + 1) % 3],
            _ => vec![i],
        };
        for &node in &down {
            c.kill_node(node);
            faults.record(false);
        }
        std::thread::sleep(Duration::from_millis(rng.between(50, 500)));
        for &node in &down {
            c.start_node(node);
        }
    }
    c.wait_all_up();
    judge(seed, faults, clients, &recorder, &stop);
    // Each node's log was seen shorter than at the look before: compacted, under the
    // faults.
    let compactions = sizes.compactions();
    assert!(
        compactions.iter().all(|&n| n > 0),
        "seed {seed}: compactions {compactions:?}"
    );
    // Every node's own copy of every key agrees in the end (phase 2, and the in-doubt
    // queries after the restarts, reached them all).
    for key in keys() {
        wait_agree(&c, &[0, 1, 2], &key, |_| true);
    }
}
