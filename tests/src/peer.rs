//! A harness for peer-mode (two-phase commit) end-to-end tests: the node cluster of
//! [`crate::eventual`] started with `--mode peer`, and the checks a peer cluster needs:
//! every node's own copy of a key (`localreq`), waited for until all agree (phase 2 is
//! asynchronous), a node paused and resumed.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::eventual::EvCluster;
use crate::Client;

/// How long a check waits for the nodes to agree: past the in-doubt queries' backoff
/// (up to 2 s) a few times over.
const AGREE_WAIT: Duration = Duration::from_secs(20);

/// Starts `count` peer nodes, with `--replication` if given (else every node holds
/// every key), and `flags` on every node; waits until every node sees every node up.
pub fn start_peer(count: usize, replication: Option<usize>, flags: &[&str]) -> EvCluster {
    EvCluster::start_mode("peer", count, replication, flags)
}

/// A `localreq`: a node's own committed copy.
pub fn local(key: &str) -> String {
    json!({"type": "localreq", "key": key}).to_string()
}

/// What a node's own copy of `key` holds: `Some(value)`, or `None` when it has none.
/// Panics on any other answer (a node that is no replica answers `unavailable`).
pub fn own_copy(client: &mut Client, key: &str) -> Option<String> {
    let answer = client.request(&local(key));
    match (answer["value"].as_str(), answer["error"].as_str()) {
        (Some(value), _) => Some(value.to_owned()),
        (None, Some("not_found")) => None,
        _ => panic!("localreq {key}: {answer}"),
    }
}

/// Every listed node's own copy of `key`, in order.
pub fn copies(c: &EvCluster, nodes: &[usize], key: &str) -> Vec<Option<String>> {
    nodes
        .iter()
        .map(|&i| own_copy(&mut c.client(i), key))
        .collect()
}

/// Waits until the listed nodes all hold the same copy of `key` and `accept` takes it;
/// returns it. Phase 2 reaches the replicas after the client's answer, and an in-doubt
/// replica learns the outcome by asking, so agreement is waited for, not assumed.
pub fn wait_agree(
    c: &EvCluster,
    nodes: &[usize],
    key: &str,
    accept: impl Fn(&Option<String>) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + AGREE_WAIT;
    loop {
        let seen = copies(c, nodes, key);
        if let Some(first) = seen.first() {
            if seen.iter().all(|copy| copy == first) && accept(first) {
                return first.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "nodes {nodes:?} never agreed on {key}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `line` to node `i` until the answer satisfies `done`, for at most `secs`.
pub fn retry_until(
    c: &EvCluster,
    i: usize,
    line: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(mut client) = Client::try_connect(c.addrs[i]) {
            if let Some(answer) = client.try_request(line) {
                if done(&answer) {
                    return answer;
                }
            }
        }
        assert!(Instant::now() < deadline, "{line} on node {i} never done");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` (`STOP`, `CONT`) to node `i`'s process.
pub fn signal_node(c: &EvCluster, i: usize, signal: &str) {
    c.proc(i).expect("the node runs").signal(signal);
}
