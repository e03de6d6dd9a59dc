//! Eventual mode under a nemesis, on real processes: three `ringkv node --mode
//! eventual` processes (N = 3, siblings, hints and read repair) while clients run
//! read-modify-write cycles at `quorum` (and some blind writes) through any node, and a
//! node (or two at once) is SIGKILLed and restarted on its data, or one is paused
//! (SIGSTOP) past the timeouts and resumed, every few hundred milliseconds. Each
//! write's context came from a read whose versions the test saw, so it knows what each
//! write superseded (PROTOCOL.md section 2: exactly the versions of the answer that gave
//! the context); a blind write supersedes what its first replica held, which the test
//! does not see, so there only the clocks speak ("every version's clock is above the
//! clock of every version it superseded"). The rules:
//!
//! - a read at quorum invoked after a write was acknowledged at quorum shows that write
//!   or a version written after it (R + W > N: the read meets a replica that holds it);
//! - such a read never shows a version that the acknowledged write superseded;
//! - every value shown was written by a client, once per answer;
//! - once the kills stop, the replicas converge without any read (hints), and the
//!   converged state keeps every acknowledged write or a version written after it, and
//!   none that an acknowledged write superseded.
//!
//! (Two siblings written through one node may have clocks that compare as ordered, as
//! docs/versions.md says; so the clocks alone cannot show that siblings are concurrent.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringkv_core::rng::DetRng;
use ringkv_e2e::eventual::{ev_get, ev_local, ev_put, EvCluster};
use ringkv_e2e::log_sizes::LogSizes;
use ringkv_e2e::nemesis::{faults_for, seed_or};
use ringkv_e2e::{error_code, Client};
use serde_json::Value;

const CLIENTS: u64 = 4;
const KEYS: u64 = 3;

/// A version clock: actor to counter, a missing actor counting 0.
type Clock = BTreeMap<String, u64>;

/// Whether `later` is `earlier` or descends from it.
fn covers(later: &Clock, earlier: &Clock) -> bool {
    earlier
        .iter()
        .all(|(actor, &n)| later.get(actor).copied().unwrap_or(0) >= n)
}

fn clock_of(value: &Value) -> Clock {
    value
        .as_object()
        .map(|clock| {
            clock
                .iter()
                .map(|(actor, n)| (actor.clone(), n.as_u64().expect("a counter")))
                .collect()
        })
        .unwrap_or_default()
}

/// A version as answered: its value (`None` for a deletion) and clock.
type Version = (Option<String>, Clock);

fn versions_of(answer: &Value) -> Vec<Version> {
    answer["versions"]
        .as_array()
        .map(|versions| {
            versions
                .iter()
                .map(|v| {
                    (
                        v["value"].as_str().map(str::to_owned),
                        clock_of(&v["clock"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug)]
struct Read {
    key: String,
    invoked_us: u64,
    versions: Vec<Version>,
}

#[derive(Debug)]
struct Write {
    key: String,
    value: String,
    /// The values of the read whose context it carried; `None` for a blind write.
    superseded: Option<Vec<String>>,
    /// When it was acknowledged, and the new version's clock; `None` if it was not.
    acked: Option<(u64, Clock)>,
}

#[derive(Default)]
struct Log {
    reads: Vec<Read>,
    writes: Vec<Write>,
}

struct Run {
    seed: u64,
    started: Instant,
    log: Mutex<Log>,
}

impl Run {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
}

/// Read-modify-write cycles through random nodes until `stop`; one write in six is
/// blind (no context).
fn client(id: u64, addrs: Vec<SocketAddr>, run: Arc<Run>, stop: Arc<AtomicBool>) {
    let mut rng = DetRng::new(run.seed ^ (id << 32));
    let mut connection: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.between(1, 8)));
        if connection.is_none() {
            let at = addrs[rng.between(0, addrs.len() as u64 - 1) as usize];
            connection = Client::try_connect(at);
        }
        let Some(c) = connection.as_mut() else {
            continue;
        };
        let key = format!("ek{}", rng.between(0, KEYS - 1));
        let invoked_us = run.now_us();
        let Some(read) = c.try_request(&ev_get(&key, "quorum")) else {
            connection = None;
            continue;
        };
        let (context, shown) = match error_code(&read) {
            None => {
                let versions = versions_of(&read);
                let shown = versions.iter().filter_map(|(v, _)| v.clone()).collect();
                let record = Read {
                    key: key.clone(),
                    invoked_us,
                    versions,
                };
                run.log.lock().unwrap().reads.push(record);
                (read["context"].as_str().map(str::to_owned), shown)
            }
            Some("not_found") => (read["context"].as_str().map(str::to_owned), Vec::new()),
            Some("unavailable" | "timeout" | "overloaded") => continue,
            Some(_) => panic!("a read the protocol does not allow: {read}"),
        };
        n += 1;
        let value = format!("c{id}w{n}");
        let context = context.filter(|_| !rng.percent(17));
        let superseded = context.as_ref().map(|_| shown);
        let line = ev_put(&key, &value, "quorum", context.as_deref());
        let answer = c.try_request(&line);
        let acked = match answer.as_ref().map(|a| (a, error_code(a))) {
            Some((a, None)) if a["message"] == "Success" => {
                Some((run.now_us(), clock_of(&a["clock"])))
            }
            Some((_, Some("unavailable" | "timeout" | "overloaded"))) => None,
            Some((a, _)) => panic!("a write the protocol does not allow: {a}"),
            None => {
                connection = None;
                None
            }
        };
        let write = Write {
            key,
            value,
            superseded,
            acked,
        };
        run.log.lock().unwrap().writes.push(write);
    }
}

/// Each replica's own versions of `key`, sorted, through `localreq`.
fn local_versions(c: &EvCluster, key: &str) -> Vec<Vec<Version>> {
    (0..3)
        .map(|i| {
            let answer = c.client(i).request(&ev_local(key));
            let mut versions = versions_of(&answer);
            versions.sort();
            versions
        })
        .collect()
}

/// Waits until the three replicas hold the same versions of every key; returns them.
fn converged(c: &EvCluster) -> BTreeMap<String, Vec<Version>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut states = BTreeMap::new();
    for k in 0..KEYS {
        let key = format!("ek{k}");
        loop {
            let copies = local_versions(c, &key);
            if copies.iter().all(|copy| *copy == copies[0]) {
                states.insert(key, copies[0].clone());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{key} never converged: {copies:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    states
}

/// What the writes tell of each other: by value, the write, and every value it
/// superseded directly or through the writes it superseded.
struct Causality<'a> {
    written: BTreeMap<&'a str, &'a Write>,
    /// The acknowledged writes of each key, in the order they were made.
    acked_by_key: BTreeMap<&'a str, Vec<&'a Write>>,
}

impl<'a> Causality<'a> {
    fn new(writes: &'a [Write]) -> Self {
        let written = writes.iter().map(|w| (w.value.as_str(), w)).collect();
        let mut acked_by_key: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
        for write in writes.iter().filter(|w| w.acked.is_some()) {
            acked_by_key.entry(&write.key).or_default().push(write);
        }
        Self {
            written,
            acked_by_key,
        }
    }

    /// Whether `later` is `earlier` or was written with a context that (through other
    /// writes) covered it; or, past a blind write, whether its clock covers `clock`.
    fn descends(&self, later: &Version, earlier: &Write, clock: &Clock) -> bool {
        let Some(value) = later.0.as_deref() else {
            return covers(&later.1, clock);
        };
        let mut stack = vec![value];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(v) = stack.pop() {
            if v == earlier.value {
                return true;
            }
            if !seen.insert(v) {
                continue;
            }
            match self.written.get(v).and_then(|w| w.superseded.as_ref()) {
                Some(parents) => stack.extend(parents.iter().map(String::as_str)),
                None => {
                    if covers(&later.1, clock) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// An answer's versions: each value written by a client, once; none superseded by
    /// an acknowledged write of `key` acknowledged before `after_us`; and each such
    /// write shown or descended from.
    fn check(&self, key: &str, versions: &[Version], after_us: u64, what: &str) -> usize {
        let mut values = std::collections::BTreeSet::new();
        for value in versions.iter().filter_map(|(v, _)| v.as_deref()) {
            assert!(
                self.written.contains_key(value),
                "{what}: {value} was never written"
            );
            assert!(
                values.insert(value),
                "{what}: {value} twice in {versions:?}"
            );
        }
        let mut checked = 0;
        for write in self.acked_by_key.get(key).into_iter().flatten() {
            let Some((acked_us, clock)) = &write.acked else {
                continue;
            };
            if *acked_us >= after_us {
                continue;
            }
            checked += 1;
            let shown = versions.iter().any(|v| self.descends(v, write, clock));
            assert!(shown, "{what}: {versions:?} lost {write:?}");
            for gone in write.superseded.iter().flatten() {
                assert!(
                    !values.contains(gone.as_str()),
                    "{what}: {gone} came back after {write:?}"
                );
            }
        }
        checked
    }
}

#[test]
fn eventual_nodes_keep_acknowledged_writes_and_converge_while_any_node_is_killed() {
    // A small log threshold, so that the nodes compact their logs under the faults.
    let mut c = EvCluster::start(
        3,
        3,
        &["--timeout-ms", "500", "--log-compact-bytes", "4096"],
    );
    let seed = seed_or(0xe7e7);
    let run = Arc::new(Run {
        seed,
        started: Instant::now(),
        log: Mutex::new(Log::default()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (addrs, run, stop) = (c.addrs.clone(), Arc::clone(&run), Arc::clone(&stop));
            std::thread::spawn(move || client(id, addrs, run, stop))
        })
        .collect();
    let mut rng = DetRng::new(seed);
    let (mut kills, mut pauses, mut round) = (0, 0, 0);
    let mut sizes = LogSizes::new(3);
    while run.started.elapsed() < faults_for() {
        std::thread::sleep(Duration::from_millis(rng.between(200, 600)));
        sizes.observe(&c);
        let first = rng.between(0, 2) as usize;
        round += 1;
        if round % 3 == 0 {
            // Paused past the timeouts: the others hint its writes and go on.
            let pause = Duration::from_millis(rng.between(100, 1500));
            c.proc(first).expect("up").pause_for(pause);
            pauses += 1;
            continue;
        }
        // One node, or (two rounds in five) two at once: a write acknowledged by two
        // replicas may then have lost both for a while, so each must keep it itself.
        let down = match rng.percent(40) {
            true => vec![first, (first + 1) % 3],
            false => vec![first],
        };
        for &i in &down {
            c.kill_node(i);
            kills += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.between(50, 500)));
        for &i in &down {
            c.start_node(i);
        }
    }
    c.wait_all_up();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client
            .join()
            .expect("a client saw only answers the protocol allows");
    }
    let final_states = converged(&c);
    // Each node's log was seen shorter than at the look before: compacted, under the
    // faults.
    let compactions = sizes.compactions();
    assert!(
        compactions.iter().all(|&n| n > 0),
        "seed {seed}: compactions {compactions:?}"
    );
    let log = run.log.lock().unwrap();
    let causality = Causality::new(&log.writes);
    let acked = log.writes.iter().filter(|w| w.acked.is_some()).count();
    let mut checked_reads = 0;
    for read in &log.reads {
        let what = format!(
            "seed {seed}: a read of {} at {} us",
            read.key, read.invoked_us
        );
        checked_reads += causality.check(&read.key, &read.versions, read.invoked_us, &what);
    }
    for (key, versions) in &final_states {
        let what = format!("seed {seed}: the converged {key}");
        causality.check(key, versions, u64::MAX, &what);
    }
    assert!(kills >= 4 && pauses >= 2, "{kills} kills, {pauses} pauses");
    assert!(acked > 200, "{acked} writes acknowledged");
    assert!(
        checked_reads > 1000,
        "{checked_reads} read-after-write pairs"
    );
    let siblings = log.reads.iter().filter(|r| r.versions.len() > 1).count();
    eprintln!(
        "seed {seed}: {kills} kills, {pauses} pauses, {} reads ({siblings} with siblings), {} writes ({} acknowledged), \
         {checked_reads} read-after-write pairs",
        log.reads.len(),
        log.writes.len(),
        acked
    );
}
