//! The coordinator's RESP2 port against real processes: the commands as Redis clients
//! use them, the same data and semantics as the JSON port, limits and bad input, and
//! redis-cli / redis-benchmark themselves when they are installed.

use std::process::Command;

use ringkv_e2e::resp::{encode_command, Reply};
use ringkv_e2e::{error_code, get, put, Cluster, Proc};

const IDS: [u64; 2] = [100, u64::MAX - 100];

fn resp_cluster(extra: &[&str]) -> Cluster {
    let mut flags = vec!["--resp-addr", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    Cluster::start(&IDS, &flags)
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

#[test]
fn data_commands_answer_as_redis_does() {
    let c = resp_cluster(&[]);
    let mut r = c.resp();
    assert_eq!(r.call(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(r.call(&["ping", "hello"]), Reply::bulk("hello"));
    assert_eq!(r.call(&["ECHO", "a b"]), Reply::bulk("a b"));
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
        r.call(&["MGET", "missing"]),
        Reply::Array(Some(vec![Reply::Bulk(None)]))
    );
    assert_eq!(
        r.call(&["EXISTS", "k1", "missing", "k1"]),
        Reply::Integer(2)
    );
    assert_eq!(
        r.call(&["DEL", "k1", "missing", "k1", "k2"]),
        Reply::Integer(2)
    );
    assert_eq!(r.call(&["EXISTS", "k1", "k2"]), Reply::Integer(0));
    assert_eq!(r.call(&["DEL", "k1"]), Reply::Integer(0));
    assert_eq!(r.call(&["QUIT"]), ok());
    assert!(r.is_closed(), "QUIT closes the connection");
}

#[test]
fn both_ports_see_the_same_data() {
    let c = resp_cluster(&[]);
    let mut r = c.resp();
    let mut json = c.client();
    assert_eq!(r.call(&["SET", "shared", "from resp"]), ok());
    assert_eq!(json.request(&get("shared"))["value"], "from resp");
    assert_eq!(
        json.request(&put("shared", "from json"))["message"],
        "Success"
    );
    assert_eq!(r.call(&["GET", "shared"]), Reply::bulk("from json"));
    assert_eq!(r.call(&["DEL", "shared"]), Reply::Integer(1));
    let answer = json.request(&get("shared"));
    assert_eq!(error_code(&answer), Some("not_found"), "{answer}");
}

#[test]
fn pipelined_commands_answer_in_order_and_take_effect_in_order() {
    let c = resp_cluster(&[]);
    let mut r = c.resp();
    let mut batch = Vec::new();
    for args in [
        &["SET", "p", "1"][..],
        &["GET", "p"],
        &["SET", "p", "2"],
        &["MGET", "p", "q"],
        &["DEL", "p"],
        &["EXISTS", "p"],
    ] {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        batch.extend_from_slice(&encode_command(&args));
    }
    batch.extend_from_slice(b"SET q \"two words\"\r\nGET q\r\n\r\nPING\r\n");
    r.send_raw(&batch);
    let replies: Vec<Reply> = (0..9).map(|_| r.recv()).collect();
    assert_eq!(
        replies,
        vec![
            ok(),
            Reply::bulk("1"),
            ok(),
            Reply::Array(Some(vec![Reply::bulk("2"), Reply::Bulk(None)])),
            Reply::Integer(1),
            Reply::Integer(0),
            ok(),
            Reply::bulk("two words"),
            Reply::Simple("PONG".into()),
        ]
    );
}

#[test]
fn a_long_pipeline_of_multi_key_commands_is_answered_in_full() {
    // 300 MGETs of 200 keys each: far more requests than a connection may have in flight
    // (256), so the port must take them a few commands at a time.
    let c = resp_cluster(&[]);
    let mut r = c.resp();
    assert_eq!(r.call(&["SET", "a", "1"]), ok());
    let mut args: Vec<String> = vec!["MGET".into(), "a".into()];
    args.extend((1..200).map(|i| format!("m{i}")));
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let command = encode_command(&args);
    r.send_raw(&command.repeat(300));
    let mut expected = vec![Reply::bulk("1")];
    expected.extend((1..200).map(|_| Reply::Bulk(None)));
    for i in 0..300 {
        assert_eq!(r.recv(), Reply::Array(Some(expected.clone())), "reply {i}");
    }
}

#[test]
fn a_half_closed_connection_gets_every_answer_then_eof() {
    let c = resp_cluster(&[]);
    let mut r = c.resp();
    // The last inline command has no line end: the EOF ends it.
    r.send_raw(b"SET h v\r\nGET h");
    r.finish_sending();
    assert_eq!(r.recv(), ok());
    assert_eq!(r.recv(), Reply::bulk("v"));
    assert!(r.is_closed());
}

fn assert_error_prefix(reply: &Reply, prefix: &str) {
    let text = reply.error_text().unwrap_or_default();
    assert!(
        text.starts_with(prefix),
        "expected an error starting {prefix:?}, got {reply:?}"
    );
}

#[test]
fn limits_and_bad_commands_get_the_json_ports_codes_and_the_connection_stays() {
    let c = resp_cluster(&[]);
    let mut r = c.resp();
    assert_error_prefix(&r.call(&["SET", "", "v"]), "EMPTY_KEY ");
    assert_error_prefix(&r.call(&["GET", &"k".repeat(257)]), "KEY_TOO_LONG ");
    assert_eq!(r.call(&["SET", &"k".repeat(256), "v"]), ok());
    let big = "v".repeat(256 * 1024 + 1);
    assert_error_prefix(&r.call(&["SET", "big", &big]), "VALUE_TOO_LARGE ");
    assert_eq!(r.call(&["SET", "big", &big[1..]]), ok());
    r.send_raw(&encode_command(&[b"SET", b"\xff", b"v"]));
    assert_error_prefix(&r.recv(), "MALFORMED ");
    r.send_raw(&encode_command(&[b"SET", b"k", b"\xc3"]));
    assert_error_prefix(&r.recv(), "MALFORMED ");
    assert_error_prefix(&r.call(&["DEL", "ok", ""]), "EMPTY_KEY ");
    assert_eq!(
        r.call(&["FLUSHALL", "now", "please"]),
        Reply::Error(
            "ERR unknown command 'FLUSHALL', with args beginning with: 'now' 'please' ".into()
        )
    );
    assert_eq!(
        r.call(&["GET"]),
        Reply::Error("ERR wrong number of arguments for 'get' command".into())
    );
    assert_error_prefix(&r.call(&["SET", "k", "v", "EX", "10"]), "ERR syntax error");
    assert_error_prefix(&r.call(&["SELECT", "1"]), "ERR DB index is out of range");
    assert_error_prefix(&r.call(&["HELLO", "3"]), "NOPROTO ");
    let keys: Vec<String> = (0..257).map(|i| format!("k{i}")).collect();
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    assert_error_prefix(&r.call(&mget), "OVERLOADED ");
    assert_eq!(r.call(&["GET", "big"]), Reply::bulk(&big[1..]));
}

#[test]
fn a_frame_over_the_limit_is_answered_and_closes() {
    let c = resp_cluster(&["--max-frame-bytes", "1000"]);
    let mut r = c.resp();
    assert_eq!(r.call(&["SET", "small", &"x".repeat(900)]), ok());
    r.send(&["SET", "large", &"x".repeat(1000)]);
    assert_error_prefix(&r.recv(), "FRAME_TOO_LARGE ");
    assert!(r.is_closed());
    // An announced length alone is enough: the body is never awaited.
    let mut r = c.resp();
    r.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n");
    assert_error_prefix(&r.recv(), "FRAME_TOO_LARGE ");
    assert!(r.is_closed());
    assert_eq!(
        c.resp().call(&["GET", "small"]),
        Reply::bulk(&"x".repeat(900))
    );
}

#[test]
fn bytes_that_are_not_resp_get_a_protocol_error_and_a_close() {
    let c = resp_cluster(&[]);
    for junk in [
        &b"*x\r\n"[..],
        b"*1\r\n+GET\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$3\r\nGETXX",
        b"SET \"unbalanced k\r\n",
        b"*99999999999999999999999999999\r\n",
    ] {
        let mut r = c.resp();
        r.send_raw(b"PING\r\n");
        r.send_raw(junk);
        assert_eq!(r.recv(), Reply::Simple("PONG".into()), "before {junk:?}");
        assert_error_prefix(&r.recv(), "ERR Protocol error: ");
        assert!(r.is_closed(), "closed after {junk:?}");
    }
    assert_eq!(c.resp().call(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn an_incomplete_ring_answers_unavailable_and_info_says_so() {
    let coordinator = Proc::start(
        &[
            "coordinator",
            "--client-addr",
            "127.0.0.1:0",
            "--server-addr",
            "127.0.0.1:0",
            "--resp-addr",
            "127.0.0.1:0",
            "--servers",
            "2",
        ],
        |lines| lines.iter().any(|l| l.starts_with("resp ")),
    );
    let mut r = ringkv_e2e::resp::RespClient::connect(coordinator.addr("resp"));
    assert_error_prefix(&r.call(&["SET", "k", "v"]), "UNAVAILABLE ");
    assert_error_prefix(&r.call(&["GET", "k"]), "UNAVAILABLE ");
    assert_error_prefix(&r.call(&["MGET", "k", "j"]), "UNAVAILABLE ");
    let Reply::Bulk(Some(info)) = r.call(&["INFO", "replication"]) else {
        panic!("INFO answers a bulk string");
    };
    let info = String::from_utf8(info).expect("INFO is text");
    assert!(info.contains("ring_servers_expected:2\r\n"), "{info}");
    assert!(info.contains("ring_servers_registered:0\r\n"), "{info}");
    assert!(info.contains("ring_complete:no\r\n"), "{info}");
}

#[test]
fn info_lists_the_ring_and_command_docs_describe_the_commands() {
    let c = resp_cluster(&[]);
    let mut r = c.resp();
    let Reply::Bulk(Some(info)) = r.call(&["INFO"]) else {
        panic!("INFO answers a bulk string");
    };
    let info = String::from_utf8(info).expect("INFO is text");
    assert!(info.starts_with("# Server\r\n"), "{info}");
    assert!(info.contains("ring_complete:yes\r\n"), "{info}");
    for (i, id) in IDS.iter().enumerate() {
        assert!(info.contains(&format!("ring_server{i}:id={id},")), "{info}");
    }
    let Reply::Array(Some(docs)) = r.call(&["COMMAND", "DOCS", "get", "nosuch"]) else {
        panic!("COMMAND DOCS answers an array");
    };
    assert_eq!(docs.first(), Some(&Reply::bulk("get")));
    assert_eq!(docs.len(), 2, "unknown names are left out: {docs:?}");
    assert_eq!(r.call(&["COMMAND", "COUNT"]), Reply::Integer(14));
    assert_eq!(
        r.call(&["CONFIG", "GET", "appendfs*"]),
        Reply::Array(Some(vec![
            Reply::bulk("appendfsync"),
            Reply::bulk("always")
        ]))
    );
}

#[test]
fn a_port_at_its_connection_limit_answers_overloaded_and_closes() {
    let c = resp_cluster(&["--max-connections", "3"]);
    let mut served: Vec<_> = (0..3).map(|_| c.resp()).collect();
    for r in &mut served {
        assert_eq!(r.call(&["PING"]), Reply::Simple("PONG".into()));
    }
    let mut refused = c.resp();
    assert_error_prefix(&refused.recv(), "OVERLOADED ");
    assert!(refused.is_closed());
    drop(served);
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
fn redis_cli_works_against_the_resp_port() {
    let c = resp_cluster(&[]);
    let addr = c.coordinator.addr("resp");
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let cli = |args: &[&str]| -> Option<String> {
        let mut all = vec!["-h", &host, "-p", &port];
        all.extend_from_slice(args);
        redis_tool("redis-cli").map(|cmd| run(cmd, &all))
    };
    let Some(answer) = cli(&["SET", "cli key", "cli value"]) else {
        return;
    };
    assert_eq!(answer, "OK\n");
    assert_eq!(cli(&["GET", "cli key"]).as_deref(), Some("cli value\n"));
    assert_eq!(cli(&["EXISTS", "cli key", "nope"]).as_deref(), Some("1\n"));
    assert_eq!(cli(&["DEL", "cli key"]).as_deref(), Some("1\n"));
    assert_eq!(cli(&["GET", "cli key"]).as_deref(), Some("\n"));
    let info = cli(&["INFO", "replication"]).unwrap_or_default();
    assert!(info.contains("ring_servers_registered:2"), "{info}");
    let json_view = c.client().request(&get("cli key"));
    assert_eq!(error_code(&json_view), Some("not_found"), "{json_view}");
}

#[test]
fn redis_benchmark_runs_against_the_resp_port() {
    let c = resp_cluster(&[]);
    let addr = c.coordinator.addr("resp");
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let Some(cmd) = redis_tool("redis-benchmark") else {
        return;
    };
    let args = [
        "-h", &host, "-p", &port, "-t", "set,get", "-n", "2000", "-c", "10", "-r", "1000", "-d",
        "16", "-q",
    ];
    let out = run(cmd, &args);
    assert!(out.contains("SET: ") && out.contains("GET: "), "{out}");
    assert!(!out.contains("rror"), "{out}");
    // The benchmark's writes are there: some of the keys it picked from exist.
    let keys: Vec<String> = (0..256).map(|i| format!("key:{i:012}")).collect();
    let mut exists = vec!["EXISTS"];
    exists.extend(keys.iter().map(String::as_str));
    let Reply::Integer(found) = c.resp().call(&exists) else {
        panic!("EXISTS answers an integer");
    };
    assert!(found > 0, "none of the benchmark's keys exists");
}
