//! A coordinator and two KV servers as separate `ringkv` processes, driven by the one-shot
//! commands, the console and the benchmark, as a user would.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{code, run, stderr, stdout, Cluster};

/// Two IDs far apart on the ring, so that both servers hold keys.
const IDS: [u64; 2] = [1 << 62, 3 << 62];

#[test]
fn one_shot_commands_tell_outcomes_by_exit_code() {
    let cluster = Cluster::start(&IDS);
    let addr = cluster.client_addr.as_str();

    let put = run(&["put", "greeting", "hello world", "--addr", addr]);
    assert_eq!(code(put.status), 0, "{}", stderr(&put));
    assert_eq!(stdout(&put), "OK\n");

    let get = run(&["get", "greeting", "--addr", addr]);
    assert_eq!(code(get.status), 0, "{}", stderr(&get));
    assert_eq!(stdout(&get), "hello world\n");

    let json = run(&["get", "greeting", "--addr", addr, "--json"]);
    assert_eq!(code(json.status), 0);
    let answer: serde_json::Value = serde_json::from_str(stdout(&json).trim()).unwrap();
    assert_eq!(answer["value"], "hello world");

    let del = run(&["del", "greeting", "--addr", addr]);
    assert_eq!(code(del.status), 0, "{}", stderr(&del));

    let missing = run(&["get", "greeting", "--addr", addr]);
    assert_eq!(code(missing.status), 1);
    assert_eq!(stdout(&missing), "");
    assert!(
        stderr(&missing).contains("error not_found: "),
        "{}",
        stderr(&missing)
    );
    assert_eq!(code(run(&["del", "greeting", "--addr", addr]).status), 1);

    let empty_key = run(&["put", "", "v", "--addr", addr]);
    assert_eq!(code(empty_key.status), 3);
    assert!(stderr(&empty_key).contains("error empty_key: "));

    let empty_value = run(&["put", "k", "", "--addr", addr]);
    assert_eq!(code(empty_value.status), 0, "{}", stderr(&empty_value));
    assert_eq!(stdout(&run(&["get", "k", "--addr", addr])), "\n");

    let status = run(&["status", "--addr", addr]);
    assert_eq!(code(status.status), 0);
    let table = stdout(&status);
    assert!(table.contains("2 of 2 servers registered"), "{table}");
    for id in IDS {
        assert!(table.contains(&id.to_string()), "{table}");
    }
    let raw = run(&["status", "--addr", addr, "--json"]);
    let raw: serde_json::Value = serde_json::from_str(stdout(&raw).trim()).unwrap();
    let ids: Vec<u64> = raw["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|server| server["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, IDS);
    assert_eq!(raw["expected"], 2);
}

#[test]
fn an_unreachable_store_exits_2() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let get = run(&["get", "k", "--addr", &addr]);
    assert_eq!(code(get.status), 2);
    assert!(stderr(&get).contains("cannot connect"), "{}", stderr(&get));
    let bench = run(&["bench", "--addr", &addr, "--ops", "10"]);
    assert_eq!(code(bench.status), 2);
}

#[test]
fn bench_reports_every_operation_as_json() {
    let cluster = Cluster::start(&IDS);
    let bench = run(&[
        "bench",
        "--addr",
        &cluster.client_addr,
        "--ops",
        "2000",
        "--connections",
        "4",
        "--pipeline",
        "4",
        "--keys",
        "100",
        "--json",
    ]);
    assert_eq!(code(bench.status), 0, "{}", stderr(&bench));
    let text = stdout(&bench);
    assert_eq!(text.lines().count(), 1, "{text}");
    let report: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(report["ops"], 2000, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let gets = report["get"]["count"].as_u64().unwrap();
    let puts = report["put"]["count"].as_u64().unwrap();
    assert_eq!(gets + puts, 2000);
    assert!(gets > puts, "90% GETs by default: {report}");
    for kind in ["get", "put"] {
        let p50 = report[kind]["p50_us"].as_u64().unwrap();
        let max = report[kind]["max_us"].as_u64().unwrap();
        assert!(p50 > 0 && p50 <= max, "{report}");
    }
    assert!(report["ops_per_s"].as_f64().unwrap() > 0.0);
    // Without --pids, the process listening on --addr is measured: the coordinator.
    assert_eq!(
        report["cpu"]["pids"],
        serde_json::json!([cluster.coordinator.pid()]),
        "{report}"
    );
    assert!(
        report["cpu"]["cluster_us_per_op"].as_f64().is_some(),
        "{report}"
    );

    // With every key written first, no GET misses; --pids names the processes measured.
    let all: Vec<u32> = std::iter::once(cluster.coordinator.pid())
        .chain(cluster.servers.iter().map(|server| server.pid()))
        .collect();
    let pids = all.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let preloaded = run(&[
        "bench",
        "--addr",
        &cluster.client_addr,
        "--ops",
        "500",
        "--connections",
        "2",
        "--keys",
        "50",
        "--preload",
        "--value-chars",
        "printable",
        "--json",
        "--pids",
        &pids,
    ]);
    assert_eq!(code(preloaded.status), 0, "{}", stderr(&preloaded));
    let report: serde_json::Value = serde_json::from_str(stdout(&preloaded).trim()).unwrap();
    assert_eq!(report["ops"], 500);
    assert_eq!(report["get"]["misses"], 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["cpu"]["pids"], serde_json::json!(all), "{report}");
    // The printable values went through the JSON port escaped and came back whole.
    let get = run(&["get", "k0", "--addr", &cluster.client_addr, "--json"]);
    assert_eq!(code(get.status), 0, "{}", stderr(&get));
    let answer: serde_json::Value = serde_json::from_str(stdout(&get).trim()).unwrap();
    let value = answer["value"].as_str().unwrap();
    assert_eq!(value.len(), 100, "{value}");
    assert!(value.bytes().all(|b| (b' '..=b'~').contains(&b)), "{value}");
    assert!(value.contains('"') || value.contains('\\'), "{value}");
}

#[test]
fn a_second_server_on_a_locked_data_dir_exits_2() {
    let cluster = Cluster::start(&IDS);
    let dir = cluster.data_dir(IDS[0]);
    let second = run(&[
        "server",
        "--coordinator",
        &cluster.server_addr,
        "--data-dir",
        &dir,
    ]);
    assert_eq!(code(second.status), 2);
    let message = stderr(&second);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("is in use by another ringkv server"),
        "{message}"
    );
}

#[test]
fn the_console_reads_commands_from_a_pipe() {
    let cluster = Cluster::start(&IDS);
    let mut console = common::ringkv()
        .args(["console", "--addr", &cluster.client_addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script =
        "put motto  less is more \nget motto\nfrobnicate\ndel motto\nget motto\nstatus\nquit\n";
    console
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = console.wait_with_output().unwrap();
    assert_eq!(code(output.status), 0, "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("connected to "), "{text}");
    assert_eq!(lines[1], "OK");
    assert_eq!(lines[2], "less is more ");
    assert!(lines[3].starts_with("unknown command"), "{text}");
    assert_eq!(lines[4], "OK");
    assert!(lines[5].starts_with("error not_found: "), "{text}");
    assert!(lines[6].starts_with("2 of 2 servers registered"), "{text}");
}
