//! Peer mode (PROTOCOL.md section 3) against real `ringkv node --mode peer` processes:
//! updates through every node, colliding writers, a participant and a coordinator killed
//! during writes, a node paused, `--replication`, abuse of the port, a damaged log, and
//! the client commands and `ringkv local` against peer nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringkv_e2e::eventual::EvCluster;
use ringkv_e2e::peer::{local, retry_until, signal_node, start_peer, wait_agree};
use ringkv_e2e::{del, error_code, get, put, Client, Proc};
use serde_json::json;

/// A short timeout, so that a write that cannot reach every replica answers quickly.
const FAST: &[&str] = &["--timeout-ms", "1000"];

fn all(c: &EvCluster) -> Vec<usize> {
    (0..c.ids.len()).collect()
}

fn success(answer: &serde_json::Value) -> bool {
    answer["message"] == "Success"
}

#[test]
fn updates_through_every_node_reach_every_node_and_every_read_sees_them() {
    let c = start_peer(5, None, FAST);
    for i in 0..5 {
        let answer = c
            .client(i)
            .request(&put(&format!("k{i}"), &format!("v{i}")));
        assert!(success(&answer), "put through node {i}: {answer}");
    }
    for i in 0..5 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        // Linearizable: a read through any node sees an acknowledged write at once.
        for j in 0..5 {
            let answer = c.client(j).request(&get(&key));
            assert_eq!(answer["value"], value.as_str(), "{key} through node {j}");
        }
        wait_agree(&c, &all(&c), &key, |copy| copy.as_ref() == Some(&value));
    }
    let answer = c.client(3).request(&del("k0"));
    assert!(success(&answer), "{answer}");
    let answer = c.client(1).request(&get("k0"));
    assert_eq!(error_code(&answer), Some("not_found"), "{answer}");
    wait_agree(&c, &all(&c), "k0", Option::is_none);
    let answer = c.client(4).request(&del("k0"));
    assert_eq!(error_code(&answer), Some("not_found"), "{answer}");

    let status = c
        .client(2)
        .request(&json!({"type": "statusreq"}).to_string());
    assert_eq!(status["node"], c.ids[2], "{status}");
    assert_eq!(status["replication"], 5, "{status}");
    assert!(status.get("conflicts").is_none(), "{status}");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 5, "{status}");
    assert!(nodes.iter().all(|n| n["up"] == true), "{status}");
}

/// What one writer saw: each value it wrote, by key, with the answer's error code
/// (`None`: Success) or no answer at all (the outcome unknown).
type Outcomes = Vec<(String, String, Option<Option<String>>)>;

#[test]
fn five_clients_on_five_nodes_writing_the_same_keys_all_get_answers_and_the_nodes_agree() {
    let c = start_peer(5, None, &[]);
    let keys = ["hot0", "hot1"];
    let writers: Vec<JoinHandle<Outcomes>> = (0..5)
        .map(|i| {
            let addr = c.addrs[i];
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut seen = Outcomes::new();
                for n in 0..12 {
                    let key = keys[n % keys.len()];
                    let value = format!("c{i}-{n}");
                    let started = Instant::now();
                    let answer = client.request(&put(key, &value));
                    // Retries stop once the timeout (3 s) is spent; the last attempt's
                    // phase 1 may take one more timeout at most. The rest is slack for
                    // a loaded machine.
                    assert!(started.elapsed() < Duration::from_secs(8), "{answer}");
                    let code = error_code(&answer).map(str::to_owned);
                    seen.push((key.to_owned(), value, Some(code)));
                }
                seen
            })
        })
        .collect();
    let mut acknowledged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut successes_per_writer = Vec::new();
    for writer in writers {
        let seen = writer.join().expect("the writer finished");
        let mut successes = 0;
        for (key, value, outcome) in seen {
            match outcome.flatten() {
                None => {
                    successes += 1;
                    acknowledged.entry(key).or_default().insert(value);
                }
                Some(code) => assert_eq!(code, "aborted", "only collisions fail"),
            }
        }
        successes_per_writer.push(successes);
    }
    // No livelock: updates keep succeeding for every writer.
    assert!(
        successes_per_writer.iter().all(|&n| n > 0),
        "{successes_per_writer:?}"
    );
    for key in keys {
        let done = wait_agree(&c, &all(&c), key, |copy| copy.is_some());
        let value = done.expect("a value");
        assert!(
            acknowledged
                .get(key)
                .is_some_and(|set| set.contains(&value)),
            "{key} holds {value}, which no client saw succeed"
        );
    }
}

/// Writes `keys` through node `at` one after another with numbered values until `stop`,
/// recording every outcome; ends at the first connection failure (outcome unknown).
fn writer(
    addr: std::net::SocketAddr,
    keys: &'static [&'static str],
    tag: String,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Outcomes> {
    std::thread::spawn(move || {
        let mut seen = Outcomes::new();
        let Some(mut client) = Client::try_connect(addr) else {
            return seen;
        };
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let key = keys[n % keys.len()];
            let value = format!("{tag}-{n}");
            n += 1;
            match client.try_request(&put(key, &value)) {
                Some(answer) => {
                    let code = error_code(&answer).map(str::to_owned);
                    seen.push((key.to_owned(), value, Some(code)));
                }
                None => {
                    seen.push((key.to_owned(), value, None));
                    break;
                }
            }
        }
        seen
    })
}

fn count(seen: &Outcomes, code: Option<&str>) -> usize {
    seen.iter()
        .filter(|(_, _, outcome)| outcome.as_ref().is_some_and(|c| c.as_deref() == code))
        .count()
}

#[test]
fn a_participant_killed_during_writes_makes_them_unavailable_never_partial_and_catches_up() {
    static KEYS: &[&str] = &["p0", "p1", "p2"];
    let mut c = start_peer(5, None, FAST);
    let stop = Arc::new(AtomicBool::new(false));
    let before = writer(c.addrs[0], KEYS, "a".into(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    c.kill_node(4);
    // Every key lives on node 4: writes answer `unavailable` until it is back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut during = Client::connect(c.addrs[1]);
    let mut unavailable = 0;
    while unavailable < 2 {
        let answer = during.request(&put("p0", "never"));
        if error_code(&answer) == Some("unavailable") {
            unavailable += 1;
        }
        assert!(Instant::now() < deadline, "never unavailable: {answer}");
    }
    stop.store(true, Ordering::SeqCst);
    let seen = before.join().expect("the writer finished");
    c.start_node(4);
    retry_until(&c, 0, &put("p1", "back"), 20, success);
    assert!(count(&seen, None) > 0, "some writes succeeded: {seen:?}");
    assert!(count(&seen, Some("unavailable")) > 0, "{seen:?}");
    let mut last_success: BTreeMap<&str, String> = BTreeMap::new();
    for (key, value, outcome) in &seen {
        let code = outcome.as_ref().expect("node 0 stayed up");
        match code.as_deref() {
            None => {
                let key = KEYS.iter().find(|k| **k == key).expect("a key");
                last_success.insert(key, value.clone());
            }
            Some(code) => assert!(code == "unavailable" || code == "aborted", "{code}"),
        }
    }
    last_success.insert("p1", "back".into());
    // One writer per key, one write at a time: the last success is the value, on every
    // node, the restarted one included; no failed write left anything anywhere.
    for key in KEYS {
        let want = last_success.get(key).cloned();
        wait_agree(&c, &all(&c), key, |copy| *copy == want);
    }
}

#[test]
fn a_coordinator_killed_during_writes_loses_nothing_acknowledged_and_leaves_nothing_locked() {
    static KEYS: &[&str] = &["q0", "q1", "q2"];
    let mut c = start_peer(5, None, FAST);
    let mut seen = Outcomes::new();
    // Killed at different moments of its writes (the exact moment does not matter: every
    // outcome is checked against what the writer saw).
    for (round, after_ms) in [(0, 120), (1, 450), (2, 900)] {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = writer(c.addrs[0], KEYS, format!("r{round}"), stop.clone());
        std::thread::sleep(Duration::from_millis(after_ms));
        c.kill_node(0);
        stop.store(true, Ordering::SeqCst);
        seen.extend(handle.join().expect("the writer finished"));
        c.start_node(0);
    }
    assert!(count(&seen, None) > 0, "some writes succeeded: {seen:?}");
    for key in KEYS {
        // Every node agrees: an update of unknown outcome is on all nodes or none.
        let value = wait_agree(&c, &all(&c), key, |_| true);
        let writes: Vec<_> = seen.iter().filter(|(k, _, _)| k == key).collect();
        let last_ack = writes
            .iter()
            .rposition(|(_, _, outcome)| matches!(outcome, Some(None)));
        let allowed: Vec<Option<String>> = match last_ack {
            // The last acknowledged write, or a later one whose outcome is unknown.
            Some(at) => writes[at..]
                .iter()
                .filter(|(_, _, o)| o.is_none() || matches!(o, Some(None)))
                .map(|(_, v, _)| Some(v.clone()))
                .collect(),
            None => std::iter::once(None)
                .chain(
                    writes
                        .iter()
                        .filter(|(_, _, o)| o.is_none())
                        .map(|(_, v, _)| Some(v.clone())),
                )
                .collect(),
        };
        assert!(
            allowed.contains(&value),
            "{key} holds {value:?}; allowed {allowed:?}"
        );
        // Nothing is left locked: an update through another node goes through.
        retry_until(&c, 2, &put(key, "after"), 20, success);
        wait_agree(&c, &all(&c), key, |copy| copy.as_deref() == Some("after"));
    }
}

#[test]
fn a_paused_node_makes_updates_unavailable_and_catches_up_when_resumed() {
    let c = start_peer(5, None, FAST);
    let answer = c.client(0).request(&put("s", "before"));
    assert!(success(&answer), "{answer}");
    wait_agree(&c, &all(&c), "s", |copy| copy.as_deref() == Some("before"));
    signal_node(&c, 2, "STOP");
    let answer = c.client(0).request(&put("s", "during"));
    assert_eq!(error_code(&answer), Some("unavailable"), "{answer}");
    for reader in [0, 1] {
        let answer = c.client(reader).request(&get("s"));
        assert_eq!(answer["value"], "before", "reads go on: {answer}");
    }
    signal_node(&c, 2, "CONT");
    retry_until(&c, 0, &put("s", "after"), 20, success);
    wait_agree(&c, &all(&c), "s", |copy| copy.as_deref() == Some("after"));
}

#[test]
fn with_replication_three_a_key_lives_on_its_three_replicas_and_any_node_reads_it() {
    let c = start_peer(5, Some(3), FAST);
    for n in 0..5 {
        let (key, value) = (format!("r{n}"), format!("v{n}"));
        let answer = c.client(n).request(&put(&key, &value));
        assert!(success(&answer), "{answer}");
        let replicas = c.replicas_of(&key);
        assert_eq!(replicas.len(), 3);
        wait_agree(&c, &replicas, &key, |copy| copy.as_ref() == Some(&value));
        for other in (0..5).filter(|i| !replicas.contains(i)) {
            let answer = c.client(other).request(&local(&key));
            assert_eq!(error_code(&answer), Some("unavailable"), "{answer}");
            let answer = c.client(other).request(&get(&key));
            assert_eq!(answer["value"], value.as_str(), "{answer}");
        }
    }
    let status = c
        .client(0)
        .request(&json!({"type": "statusreq"}).to_string());
    assert_eq!(status["replication"], 3, "{status}");
}

#[test]
fn abuse_on_a_peer_port_is_answered_and_the_node_goes_on() {
    let c = start_peer(3, None, FAST);
    let mut raw = c.client(0);
    raw.send_raw(b"\x01garbage\n");
    assert_eq!(error_code(&raw.recv()), Some("malformed"));
    for line in [
        r#"{"type":"peer_prepare","txid":1,"key":"k","value":"v","participants":[1]}"#,
        r#"{"type":"peer_decide","txid":1,"commit":true}"#,
        r#"{"type":"nonsense"}"#,
    ] {
        let answer = raw.request(line);
        assert_eq!(error_code(&answer), Some("malformed"), "{line}: {answer}");
    }
    let answer = raw.request(r#"{"type":"peer_ack","txid":1,"id":5}"#);
    assert_eq!(
        (error_code(&answer), &answer["id"]),
        (Some("malformed"), &json!(5))
    );
    let answer = raw.request(&put("", "v"));
    assert!(error_code(&answer).is_some(), "{answer}");
    // A node message from outside the cluster is taken and ignored: no answer of its
    // own, and the next request is answered.
    raw.send(r#"{"type":"peer_decide","txid":1,"commit":true,"from":999}"#);
    let answer = raw.request(&get("k"));
    assert_eq!(error_code(&answer), Some("not_found"), "{answer}");
    let mut big = Client::connect(c.addrs[1]);
    let mut line = vec![b'x'; 3 * 1024 * 1024];
    line.push(b'\n');
    big.send_raw(&line);
    assert_eq!(error_code(&big.recv()), Some("frame_too_large"));
    assert!(big.is_closed());
    let answer = c.client(2).request(&put("k", "fine"));
    assert!(success(&answer), "{answer}");
    assert_eq!(c.client(1).request(&get("k"))["value"], "fine");
}

#[test]
fn a_damaged_log_refuses_to_start_until_restored() {
    let mut c = start_peer(3, None, FAST);
    for n in 0..20 {
        let answer = c.client(n % 3).request(&put(&format!("d{n}"), "value"));
        assert!(success(&answer), "{answer}");
    }
    wait_agree(&c, &all(&c), "d19", |copy| copy.is_some());
    c.kill_node(1);
    let log = c.data_dir(1).join("wal.log");
    let good = std::fs::read(&log).expect("the log");
    let mut bad = good.clone();
    // In the middle of the records, not of the zeros allocated after them.
    let middle = ringkv_e2e::log_sizes::records_len(&log) as usize / 2;
    bad[middle] ^= 0x55;
    std::fs::write(&log, &bad).expect("damaged");
    let (code, stderr) = run_bounded(&c.node_args(1), Duration::from_secs(15));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is damaged at byte"), "{stderr}");
    assert_eq!(
        std::fs::read(&log).expect("the log"),
        bad,
        "nothing changed"
    );
    std::fs::write(&log, &good).expect("restored");
    c.start_node(1);
    let answer = c.client(1).request(&local("d7"));
    assert_eq!(answer["value"], "value", "{answer}");
}

/// Runs `ringkv ARGS` and waits for its end, at most `limit`: a process still running
/// then (a node that started when it should have refused) is killed and fails the test.
fn run_bounded(args: &[String], limit: Duration) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(ringkv_e2e::ringkv_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ringkv runs");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("waitable").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringkv {args:?} still runs after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("ringkv ended");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr)
}

/// Runs `ringkv ARGS` with `stdin`; its exit code, stdout and stderr.
fn ringkv(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = std::process::Command::new(ringkv_e2e::ringkv_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ringkv runs");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("stdin written");
    }
    let out = child.wait_with_output().expect("ringkv ends");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_console_and_one_shot_commands_speak_to_peer_nodes_and_refuse_levels() {
    let c = start_peer(3, None, FAST);
    let (a0, a1, a2) = (
        c.addrs[0].to_string(),
        c.addrs[1].to_string(),
        c.addrs[2].to_string(),
    );
    let (code, out, _) = ringkv(&["put", "k", "v", "--addr", &a0], "");
    assert_eq!((code, out.trim()), (Some(0), "OK"));
    let (code, out, _) = ringkv(&["get", "k", "--addr", &a1], "");
    assert_eq!((code, out.trim()), (Some(0), "v"));
    let (code, _, err) = ringkv(&["get", "k", "--addr", &a1, "--consistency", "one"], "");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("peer-mode node"), "{err}");
    let (code, out, _) = ringkv(&["status", "--addr", &a2], "");
    assert_eq!(code, Some(0));
    assert!(
        out.contains("peer mode") && out.contains("replication 3"),
        "{out}"
    );
    let (code, _, _) = ringkv(&["get", "missing", "--addr", &a2], "");
    assert_eq!(code, Some(1), "not found exits 1");
    let script = "put k2 hello world\nget k2\nget k2 --consistency all\ndel k2\nget k2\n";
    let (code, console, _) = ringkv(&["console", "--addr", &a2], script);
    assert_eq!(code, Some(0), "{console}");
    assert!(console.contains("peer-mode node"), "{console}");
    assert!(
        console.lines().any(|l| l.trim() == "hello world"),
        "{console}"
    );
    assert!(console.contains("no consistency levels"), "{console}");
    assert!(console.contains("error not_found"), "{console}");
    let (code, _, err) = ringkv(
        &[
            "bench",
            "--addr",
            &a0,
            "--consistency",
            "one",
            "--ops",
            "10",
        ],
        "",
    );
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn a_local_peer_cluster_serves_through_any_node() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let data = tmp.path().join("data");
    let args = [
        "local",
        "--mode",
        "peer",
        "--nodes",
        "3",
        "--no-console",
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
    ];
    let ready = |lines: &[String]| lines.iter().any(|l| l.starts_with("cluster file"));
    let local_cluster = Proc::start(&args, ready);
    assert!(
        local_cluster
            .lines
            .iter()
            .any(|l| l.starts_with("peer-mode cluster")),
        "{:?}",
        local_cluster.lines
    );
    let addrs: Vec<std::net::SocketAddr> = local_cluster
        .lines
        .iter()
        .filter_map(|l| l.split("listen ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|a| a.parse().expect("an address"))
        .collect();
    assert_eq!(addrs.len(), 3, "{:?}", local_cluster.lines);
    // Nodes started one after another may miss each other's first messages; the
    // update is retried until every replica took part.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = Client::connect(addrs[1]).request(&put("kept", "yes"));
        if success(&answer) {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
    }
    let answer = Client::connect(addrs[2]).request(&get("kept"));
    assert_eq!(answer["value"], "yes", "{answer}");
}
