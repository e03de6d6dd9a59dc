//! The RESP2 port of eventual-mode and peer nodes against real `ringkv node` processes:
//! the commands as Redis clients use them, the same data as the JSON port of any node,
//! siblings never hidden, INFO's ring, limits and bad input, `ringkv local`, and
//! redis-cli / redis-benchmark themselves when they are installed.

use std::process::Command;
use std::time::{Duration, Instant};

use ringkv_e2e::eventual::{ev_get, ev_put, values_of, wait_until, EvCluster};
use ringkv_e2e::peer::start_peer;
use ringkv_e2e::resp::{encode_command, Reply, RespClient};
use ringkv_e2e::{error_code, get, put, Proc};

const RESP_FLAGS: [&str; 2] = ["--resp-addr", "127.0.0.1:0"];

fn eventual(extra: &[&str]) -> EvCluster {
    let mut flags = vec!["--timeout-ms", "2000"];
    flags.extend_from_slice(&RESP_FLAGS);
    flags.extend_from_slice(extra);
    EvCluster::start(3, 3, &flags)
}

fn peer(extra: &[&str]) -> EvCluster {
    let mut flags = RESP_FLAGS.to_vec();
    flags.extend_from_slice(extra);
    start_peer(3, None, &flags)
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn assert_error_prefix(reply: &Reply, prefix: &str) {
    let text = reply.error_text().unwrap_or_default();
    assert!(
        text.starts_with(prefix),
        "expected an error starting {prefix:?}, got {reply:?}"
    );
}

fn info_text(r: &mut RespClient, sections: &[&str]) -> String {
    let mut args = vec!["INFO"];
    args.extend_from_slice(sections);
    let Reply::Bulk(Some(info)) = r.call(&args) else {
        panic!("INFO answers a bulk string");
    };
    String::from_utf8(info).expect("INFO is text")
}

#[test]
fn a_node_prints_its_resp_address_between_listen_and_id() {
    let c = eventual(&[]);
    let lines = &c.proc(0).expect("running").lines;
    let labels: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split(' ').next())
        .filter(|label| ["listen", "resp", "id"].contains(label))
        .collect();
    assert_eq!(labels, ["listen", "resp", "id"], "{lines:?}");
    let resp = c.proc(0).expect("running").addr("resp");
    assert_ne!(resp, c.addrs[0], "a port of its own");
}

#[test]
fn eventual_nodes_answer_data_commands_at_quorum_and_del_counts_deletions_written() {
    let c = eventual(&[]);
    let mut r = c.resp(0);
    assert_eq!(r.call(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(r.call(&["SELECT", "0"]), ok());
    assert_eq!(r.call(&["SET", "k1", "v1"]), ok());
    assert_eq!(r.call(&["set", "k2", ""]), ok());
    assert_eq!(r.call(&["GET", "k1"]), Reply::bulk("v1"));
    assert_eq!(r.call(&["GET", "k2"]), Reply::bulk(""));
    assert_eq!(r.call(&["GET", "missing"]), Reply::Bulk(None));
    assert_eq!(
        r.call(&["MGET", "k1", "missing", "k2"]),
        Reply::Array(Some(vec![
            Reply::bulk("v1"),
            Reply::Bulk(None),
            Reply::bulk("")
        ]))
    );
    assert_eq!(
        r.call(&["EXISTS", "k1", "missing", "k1"]),
        Reply::Integer(2)
    );
    // An eventual node writes a deletion without reading first: every key named gets
    // one, and the integer counts them.
    assert_eq!(r.call(&["DEL", "k1", "missing"]), Reply::Integer(2));
    assert_eq!(r.call(&["GET", "k1"]), Reply::Bulk(None));
    assert_eq!(
        r.call(&["EXISTS", "k1", "k2", "missing"]),
        Reply::Integer(1)
    );
    // Quorum writes and quorum reads overlap: another node's RESP port sees them.
    let mut other = c.resp(2);
    assert_eq!(other.call(&["GET", "k2"]), Reply::bulk(""));
    assert_eq!(other.call(&["GET", "k1"]), Reply::Bulk(None));
    assert_eq!(r.call(&["QUIT"]), ok());
    assert!(r.is_closed(), "QUIT closes the connection");
}

#[test]
fn an_eventual_write_through_resp_is_seen_through_json_on_another_node_and_the_reverse() {
    let c = eventual(&[]);
    let mut r = c.resp(0);
    assert_eq!(r.call(&["SET", "shared", "from resp"]), ok());
    let read = c.client(1).request(&ev_get("shared", "quorum"));
    assert_eq!(read["value"], "from resp", "{read}");
    let answer = c.client(2).request(&ev_put(
        "shared",
        "from json",
        "quorum",
        read["context"].as_str(),
    ));
    assert_eq!(answer["message"], "Success", "{answer}");
    assert_eq!(r.call(&["GET", "shared"]), Reply::bulk("from json"));
    assert_eq!(r.call(&["DEL", "shared"]), Reply::Integer(1));
    let gone = c.client(1).request(&ev_get("shared", "quorum"));
    assert_eq!(error_code(&gone), Some("not_found"), "{gone}");
}

#[test]
fn siblings_answer_an_error_and_never_one_of_them() {
    let c = eventual(&[]);
    let key = "conflicted";
    let first = c.client(0).request(&ev_put(key, "base", "all", None));
    assert_eq!(first["message"], "Success", "{first}");
    let base = c.client(1).request(&ev_get(key, "all"));
    let context = base["context"].as_str().expect("a context").to_owned();
    for (node, value) in [(1, "left"), (2, "right")] {
        let answer = c
            .client(node)
            .request(&ev_put(key, value, "all", Some(&context)));
        assert_eq!(answer["message"], "Success", "{answer}");
    }
    let both = c.client(0).request(&ev_get(key, "all"));
    assert_eq!(values_of(&both), ["left", "right"], "{both}");
    let mut r = c.resp(0);
    let answer = r.call(&["GET", key]);
    assert_error_prefix(&answer, "SIBLINGS ");
    assert!(
        answer
            .error_text()
            .is_some_and(|t| t.contains("2 concurrent")),
        "{answer:?}"
    );
    assert_error_prefix(&r.call(&["MGET", "nothing", key]), "SIBLINGS ");
    assert_eq!(r.call(&["EXISTS", key]), Reply::Integer(1));
    // Resolved through the JSON port with the context, RESP sees the one value.
    let resolving = both["context"].as_str().expect("a context");
    let answer = c
        .client(2)
        .request(&ev_put(key, "merged", "all", Some(resolving)));
    assert_eq!(answer["message"], "Success", "{answer}");
    assert_eq!(r.call(&["GET", key]), Reply::bulk("merged"));
}

#[test]
fn info_describes_the_eventual_ring_and_sees_a_node_go_down() {
    let mut c = eventual(&[]);
    let mut r = c.resp(0);
    let info = info_text(&mut r, &[]);
    assert!(info.starts_with("# Server\r\nredis_version:"), "{info}");
    for line in [
        "ringkv_mode:eventual\r\n".to_owned(),
        format!("node_id:{}\r\n", c.ids[0]),
        "replicas_per_key:3\r\n".to_owned(),
        "conflicts:siblings\r\n".to_owned(),
        "ring_nodes:3\r\nring_nodes_up:3\r\n".to_owned(),
        format!("ring_node2:id={},addr={},up=yes,", c.ids[2], c.addrs[2]),
    ] {
        assert!(info.contains(&line), "{line} in {info}");
    }
    c.kill_node(2);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = info_text(&mut r, &["replication"]);
        if info.contains("ring_nodes_up:2\r\n") {
            assert!(info.contains(",up=no,"), "{info}");
            assert!(!info.contains("# Server"), "{info}");
            break;
        }
        assert!(Instant::now() < deadline, "node 2 never seen down: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // With one of three down, quorum still reads and writes.
    assert_eq!(r.call(&["SET", "still", "here"]), ok());
    assert_eq!(r.call(&["GET", "still"]), Reply::bulk("here"));
}

#[test]
fn peer_nodes_answer_as_strong_mode_and_share_data_with_the_json_port() {
    let c = peer(&[]);
    let mut r = c.resp(0);
    assert_eq!(r.call(&["SET", "k1", "v1"]), ok());
    assert_eq!(r.call(&["GET", "k1"]), Reply::bulk("v1"));
    assert_eq!(r.call(&["GET", "missing"]), Reply::Bulk(None));
    assert_eq!(
        r.call(&["MGET", "k1", "missing"]),
        Reply::Array(Some(vec![Reply::bulk("v1"), Reply::Bulk(None)]))
    );
    assert_eq!(r.call(&["EXISTS", "k1", "missing"]), Reply::Integer(1));
    // Taken in program order: the second DEL of k1 finds it gone.
    assert_eq!(r.call(&["DEL", "k1", "missing", "k1"]), Reply::Integer(1));
    assert_eq!(r.call(&["SET", "shared", "from resp"]), ok());
    let read = c.client(1).request(&get("shared"));
    assert_eq!(read["value"], "from resp", "{read}");
    let answer = c.client(2).request(&put("shared", "from json"));
    assert_eq!(answer["message"], "Success", "{answer}");
    assert_eq!(c.resp(1).call(&["GET", "shared"]), Reply::bulk("from json"));
    let info = info_text(&mut r, &["replication"]);
    for line in [
        "ringkv_mode:peer\r\n".to_owned(),
        format!("node_id:{}\r\n", c.ids[0]),
        "replicas_per_key:3\r\n".to_owned(),
        "ring_nodes:3\r\nring_nodes_up:3\r\n".to_owned(),
    ] {
        assert!(info.contains(&line), "{line} in {info}");
    }
}

#[test]
fn limits_and_garbage_on_a_node_port_are_answered_and_the_node_goes_on() {
    for c in [
        eventual(&["--max-frame-bytes", "1000", "--max-connections", "3"]),
        peer(&["--max-frame-bytes", "1000", "--max-connections", "3"]),
    ] {
        // First, while no other RESP connection is open: the connection limit.
        let mut served: Vec<RespClient> = (0..3).map(|_| c.resp(1)).collect();
        for r in &mut served {
            assert_eq!(r.call(&["PING"]), Reply::Simple("PONG".into()));
        }
        let mut refused = c.resp(1);
        assert_error_prefix(&refused.recv(), "OVERLOADED ");
        assert!(refused.is_closed());
        drop(refused);
        let mut r = served.pop().expect("three connections");
        drop(served);
        assert_error_prefix(&r.call(&["SET", "", "v"]), "EMPTY_KEY ");
        assert_error_prefix(&r.call(&["GET", &"k".repeat(257)]), "KEY_TOO_LONG ");
        r.send_raw(&encode_command(&[b"SET", b"\xff", b"v"]));
        assert_error_prefix(&r.recv(), "MALFORMED ");
        assert_error_prefix(&r.call(&["SET", "k", "v", "EX", "1"]), "ERR syntax error");
        assert_error_prefix(&r.call(&["FLUSHALL"]), "ERR unknown command 'FLUSHALL'");
        let keys: Vec<String> = (0..257).map(|i| format!("k{i}")).collect();
        let mut mget = vec!["MGET"];
        mget.extend(keys.iter().map(String::as_str));
        r.send(&mget);
        assert_error_prefix(&r.recv(), "FRAME_TOO_LARGE ");
        assert!(r.is_closed(), "a frame over the limit closes");
        drop(r);
        // Small: the nodes' own lines carry the value too, under the same frame limit.
        let mut r = c.resp(1);
        assert_eq!(r.call(&["SET", "small", &"x".repeat(50)]), ok());
        r.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n");
        assert_error_prefix(&r.recv(), "FRAME_TOO_LARGE ");
        assert!(r.is_closed());
        drop(r);
        for junk in [&b"*x\r\n"[..], b"*1\r\n$-1\r\n", b"SET \"open k\r\n"] {
            let mut r = c.resp(1);
            r.send_raw(junk);
            assert_error_prefix(&r.recv(), "ERR Protocol error: ");
            assert!(r.is_closed(), "closed after {junk:?}");
        }
        // The node goes on, on both ports.
        let mut r = c.resp(1);
        assert_eq!(r.call(&["GET", "small"]), Reply::bulk(&"x".repeat(50)));
        let read = c.client(1).request(&get("small"));
        assert_eq!(read["value"], "x".repeat(50), "{read}");
    }
}

/// `ringkv local --mode MODE` with its RESP port on a free port, or (`taken`) asked for
/// a port another socket holds, which it then leaves for a free one and says so: the
/// first node serves Redis clients, and a write through it reaches another node's JSON
/// port.
fn local_serves_resp(mode: &str, taken: bool) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let data = tmp.path().join("data");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let asked = match taken {
        true => holder.local_addr().expect("bound").to_string(),
        false => "127.0.0.1:0".to_owned(),
    };
    let args = [
        "local",
        "--mode",
        mode,
        "--nodes",
        "3",
        "--no-console",
        "--resp-addr",
        &asked,
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
    ];
    let local = Proc::start(&args, |lines| {
        lines.iter().any(|l| l.starts_with("Redis clients"))
    });
    let resp_line = local
        .lines
        .iter()
        .find(|l| l.starts_with("Redis clients"))
        .expect("the RESP line");
    let addr = resp_line
        .split_whitespace()
        .nth(4)
        .and_then(|a| a.trim_end_matches(':').parse::<std::net::SocketAddr>().ok())
        .expect("an address in the RESP line");
    if taken {
        let port = holder.local_addr().expect("bound").port();
        assert!(
            resp_line.contains(&format!("(port {port} was taken)")),
            "{resp_line}"
        );
        assert_ne!(addr.port(), port, "{resp_line}");
    }
    let listen: Vec<std::net::SocketAddr> = local
        .lines
        .iter()
        .filter_map(|l| l.split("listen ").nth(1)?.split_whitespace().next())
        .filter_map(|a| a.parse().ok())
        .collect();
    assert_eq!(listen.len(), 3, "{:?}", local.lines);
    let mut r = RespClient::connect(addr);
    // Nodes started one after another answer `unavailable` until each has seen the
    // others; bounded retries.
    let deadline = Instant::now() + Duration::from_secs(15);
    while r.call(&["SET", "via", "resp"]) != ok() {
        assert!(Instant::now() < deadline, "the local cluster never wrote");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut json = ringkv_e2e::Client::connect(listen[2]);
    let level = if mode == "eventual" { "quorum" } else { "" };
    let line = if level.is_empty() {
        get("via")
    } else {
        ev_get("via", level)
    };
    wait_until(&mut json, &line, 10, |a| a["value"] == "resp");
}

#[test]
fn local_eventual_and_peer_clusters_open_resp_on_their_first_node() {
    local_serves_resp("eventual", false);
    local_serves_resp("peer", true);
}

/// Runs an installed Redis tool, or says why the test is skipped.
fn redis_tool(name: &str) -> Option<Command> {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        println!("skipped: {name} is not installed (apt-get install redis-tools)");
        return None;
    }
    Some(Command::new(name))
}

fn run(mut cmd: Command, args: &[&str]) -> String {
    let out = cmd.args(args).output().expect("the tool runs");
    assert!(out.status.success(), "{args:?} failed: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn redis_cli_and_redis_benchmark_work_against_both_node_kinds() {
    for (mode, c) in [("eventual", eventual(&[])), ("peer", peer(&[]))] {
        let addr = c.proc(0).expect("running").addr("resp");
        let (host, port) = (addr.ip().to_string(), addr.port().to_string());
        let cli = |args: &[&str]| -> Option<String> {
            let mut all = vec!["-h", &host, "-p", &port];
            all.extend_from_slice(args);
            redis_tool("redis-cli").map(|cmd| run(cmd, &all))
        };
        let Some(answer) = cli(&["SET", "cli key", "cli value"]) else {
            return;
        };
        assert_eq!(answer, "OK\n", "{mode}");
        assert_eq!(cli(&["GET", "cli key"]).as_deref(), Some("cli value\n"));
        assert_eq!(cli(&["EXISTS", "cli key", "nope"]).as_deref(), Some("1\n"));
        let info = cli(&["INFO", "replication"]).unwrap_or_default();
        assert!(info.contains(&format!("ringkv_mode:{mode}")), "{info}");
        let Some(bench) = redis_tool("redis-benchmark") else {
            return;
        };
        let args = [
            "-h", &host, "-p", &port, "-t", "set,get", "-n", "1000", "-c", "10", "-r", "100", "-d",
            "16", "-q",
        ];
        let out = run(bench, &args);
        assert!(
            out.contains("SET: ") && out.contains("GET: "),
            "{mode}: {out}"
        );
        assert!(!out.contains("rror"), "{mode}: {out}");
        // The benchmark's writes are there, seen through the JSON port of another node.
        let keys: Vec<String> = (0..100).map(|i| format!("key:{i:012}")).collect();
        let found = keys.iter().any(|key| {
            let line = if mode == "eventual" {
                ev_get(key, "quorum")
            } else {
                get(key)
            };
            c.client(1).request(&line)["value"].is_string()
        });
        assert!(found, "{mode}: none of the benchmark's keys is readable");
    }
}
