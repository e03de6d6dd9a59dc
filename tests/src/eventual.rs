//! A harness for node end-to-end tests (eventual mode, and peer mode through
//! [`crate::peer`]): `ringkv node` processes on loopback, with a cluster file of ports
//! reserved by binding them first (see `reserve_ports`).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringkv_core::ring::Ring;
use serde_json::{json, Value};

use crate::resp::RespClient;
use crate::{Client, Proc};

/// A cluster of eventual-mode nodes, each a process, with data in a temporary directory.
pub struct EvCluster {
    /// The nodes' IDs, in the order of `addrs` and `procs`.
    pub ids: Vec<u64>,
    /// Each node's address, as the cluster file names it.
    pub addrs: Vec<SocketAddr>,
    procs: Vec<Option<Proc>>,
    flags: Vec<String>,
    replication: usize,
    /// `eventual` or `peer`.
    mode: &'static str,
    /// Whether `--replication` is given (a peer node's default is every node).
    pass_replication: bool,
    tmp: tempfile::TempDir,
}

/// Free loopback ports: bound, then released for the nodes to take. They are drawn
/// below the kernel's ephemeral range where it leaves room: a port from that range (what
/// port 0 gives) may be taken in between as the local port of any outgoing connection on
/// the machine, and the node then fails to bind ("Address already in use").
fn reserve_ports(count: usize) -> Vec<SocketAddr> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    let mut listeners: Vec<TcpListener> = Vec::new();
    if ephemeral_low > 12_000 {
        // Ports from 10,000 up to the range, in an order drawn per process and call.
        let span = u64::from(ephemeral_low - 10_000);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        let mut x = u64::from(std::process::id()) << 32 ^ nanos;
        for _ in 0..1_000 {
            if listeners.len() == count {
                break;
            }
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let port = 10_000 + ((x >> 33) % span) as u16;
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                listeners.push(listener);
            }
        }
    }
    while listeners.len() < count {
        listeners.push(TcpListener::bind("127.0.0.1:0").expect("a free port"));
    }
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound"))
        .collect()
}

impl EvCluster {
    /// Starts `count` nodes (IDs spread over the ring) with N = `replication` and the
    /// extra node `flags` (the same on every node).
    pub fn start(count: usize, replication: usize, flags: &[&str]) -> EvCluster {
        EvCluster::start_mode("eventual", count, Some(replication), flags)
    }

    /// Starts `count` nodes of `mode` (IDs spread over the ring) with `--replication`
    /// if given (else the mode's default, taken to be every node) and the extra node
    /// `flags`; waits until every node sees every node up.
    pub fn start_mode(
        mode: &'static str,
        count: usize,
        replication: Option<usize>,
        flags: &[&str],
    ) -> EvCluster {
        let ids: Vec<u64> = (0..count as u64)
            .map(|i| (i + 1) * (u64::MAX / (count as u64 + 1)))
            .collect();
        let addrs = reserve_ports(count);
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let text: String = ids
            .iter()
            .zip(&addrs)
            .map(|(id, addr)| format!("{id} {addr}\n"))
            .collect();
        std::fs::write(tmp.path().join("cluster"), text).expect("cluster file written");
        let mut cluster = EvCluster {
            ids,
            addrs,
            procs: (0..count).map(|_| None).collect(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            replication: replication.unwrap_or(count),
            mode,
            pass_replication: replication.is_some(),
            tmp,
        };
        for i in 0..count {
            cluster.start_node(i);
        }
        // A node that started before another found it down; wait until all see all.
        for i in 0..count {
            cluster.wait_for_view(i, &[]);
        }
        cluster
    }

    /// The cluster file.
    pub fn cluster_file(&self) -> PathBuf {
        self.tmp.path().join("cluster")
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("node-{i}"))
    }

    /// Starts (or restarts) node `i`; waits until it listens.
    pub fn start_node(&mut self, i: usize) {
        let owned = self.node_args(i);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let proc = Proc::start(&args, |lines| {
            lines.iter().any(|l| l.starts_with("listen "))
                && lines.iter().any(|l| l.starts_with("id "))
        });
        assert_eq!(proc.addr("listen"), self.addrs[i], "listens on its line");
        self.procs[i] = Some(proc);
    }

    /// The arguments node `i` is started with (the node's flags of this cluster).
    pub fn node_args(&self, i: usize) -> Vec<String> {
        let mut args: Vec<String> = [
            "node",
            "--mode",
            self.mode,
            "--id",
            &self.ids[i].to_string(),
            "--cluster",
            self.cluster_file().to_str().expect("a UTF-8 path"),
            "--data-dir",
            self.data_dir(i).to_str().expect("a UTF-8 path"),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        if self.pass_replication {
            args.extend(["--replication".to_owned(), self.replication.to_string()]);
        }
        args.extend(self.flags.iter().cloned());
        args
    }

    /// The process of node `i`, if running.
    pub fn proc(&self, i: usize) -> Option<&Proc> {
        self.procs[i].as_ref()
    }

    /// SIGKILLs every node, starts them all again on their data directories, and waits
    /// until each sees every other up.
    pub fn kill_all_and_restart(&mut self) {
        for i in 0..self.ids.len() {
            self.kill_node(i);
        }
        for i in 0..self.ids.len() {
            self.start_node(i);
        }
        self.wait_all_up();
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut proc) = self.procs[i].take() {
            proc.kill();
        }
    }

    /// Removes node `i`'s data directory (the node must be stopped): its disk was lost.
    pub fn wipe_node(&mut self, i: usize) {
        std::fs::remove_dir_all(self.data_dir(i)).expect("the data directory is removed");
    }

    /// A connection to node `i`.
    pub fn client(&self, i: usize) -> Client {
        Client::connect(self.addrs[i])
    }

    /// A connection to node `i`'s RESP2 port (the cluster started with `--resp-addr`).
    pub fn resp(&self, i: usize) -> RespClient {
        let proc = self.proc(i).expect("node is running");
        RespClient::connect(proc.addr("resp"))
    }

    /// The indexes of `key`'s replicas, its first replica first.
    pub fn replicas_of(&self, key: &str) -> Vec<usize> {
        let mut ring = Ring::new();
        for &id in &self.ids {
            ring.insert(id);
        }
        ring.preference_list(key, self.replication)
            .into_iter()
            .filter_map(|id| self.ids.iter().position(|&x| x == id))
            .collect()
    }

    /// Waits until every running node sees every node up (after a restart: the others
    /// reconnect with a backoff of up to a second).
    pub fn wait_all_up(&self) {
        for i in 0..self.ids.len() {
            if self.procs[i].is_some() {
                self.wait_for_view(i, &[]);
            }
        }
    }

    /// Waits until node `at` sees each node of `down` down and every other node up.
    pub fn wait_for_view(&self, at: usize, down: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut client = self.client(at);
        loop {
            let status = client.request(&json!({"type": "statusreq"}).to_string());
            let ok = status["nodes"].as_array().is_some_and(|nodes| {
                nodes.iter().all(|n| {
                    let i = self.ids.iter().position(|&x| n["id"] == x);
                    let want_up = !i.is_some_and(|i| down.contains(&i));
                    n["up"] == want_up
                })
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {at} never saw {down:?} down only: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until node `at`, started on an empty data directory, has finished catching
    /// up from the others (its `statusreq` says `"catching_up":false`). A node killed
    /// before then goes on catching up when it restarts, and fetches every key again.
    pub fn wait_caught_up(&self, at: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut client = self.client(at);
        loop {
            let status = client.request(&json!({"type": "statusreq"}).to_string());
            if status["catching_up"] == false {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {at} never finished catching up: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A `putreq` at `level`, with `context` if given.
pub fn ev_put(key: &str, value: &str, level: &str, context: Option<&str>) -> String {
    let mut msg = json!({"type": "putreq", "key": key, "value": value, "consistency": level});
    if let Some(context) = context {
        msg["context"] = json!(context);
    }
    msg.to_string()
}

/// A `getreq` at `level`.
pub fn ev_get(key: &str, level: &str) -> String {
    json!({"type": "getreq", "key": key, "consistency": level}).to_string()
}

/// A `localreq`.
pub fn ev_local(key: &str) -> String {
    json!({"type": "localreq", "key": key}).to_string()
}

/// The values of an answer's versions (deletions left out), sorted.
pub fn values_of(answer: &Value) -> Vec<String> {
    let mut values: Vec<String> = answer["versions"]
        .as_array()
        .map(|versions| {
            versions
                .iter()
                .filter_map(|v| v["value"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    values.sort();
    values
}

/// Asks `client` `line` until `done` holds for the answer, for at most `secs` seconds.
pub fn wait_until(
    client: &mut Client,
    line: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let answer = client.request(line);
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{line} never got there: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
