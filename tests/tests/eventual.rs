//! Eventual mode (PROTOCOL.md section 2) against real `ringkv node` processes: levels,
//! convergence, siblings and their resolution, crashes, a lost disk, unavailability,
//! hinted handoff, and abuse of a node's port.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringkv_e2e::eventual::{ev_get, ev_local, ev_put, values_of, wait_until, EvCluster};
use ringkv_e2e::{error_code, Client};
use serde_json::json;

#[test]
fn writes_and_reads_at_every_level_through_different_nodes_converge_on_every_replica() {
    let c = EvCluster::start(4, 3, &["--timeout-ms", "2000"]);
    let levels = ["one", "two", "quorum", "three", "all"];
    for (n, level) in levels.iter().enumerate() {
        let key = format!("level-{level}");
        let value = format!("v{n}");
        let answer = c.client(n % 4).request(&ev_put(&key, &value, level, None));
        assert_eq!(answer["message"], "Success", "{level}: {answer}");
        assert!(
            answer["clock"].is_object() && answer["context"].is_string(),
            "{answer}"
        );
        // R + W > N: the read meets a replica that has the write (a read at `one`
        // after a write at `one` may not, and that is allowed).
        let read_level = if *level == "one" { "all" } else { level };
        let read = c.client((n + 1) % 4).request(&ev_get(&key, read_level));
        assert_eq!(read["value"], value.as_str(), "{level}: {read}");
        for &r in &c.replicas_of(&key) {
            let mut replica = c.client(r);
            wait_until(&mut replica, &ev_local(&key), 10, |a| {
                a["value"] == value.as_str()
            });
        }
        let outsider = (0..4).find(|i| !c.replicas_of(&key).contains(i));
        if let Some(outsider) = outsider {
            let answer = c.client(outsider).request(&ev_local(&key));
            assert_eq!(
                error_code(&answer),
                Some("unavailable"),
                "not a replica: {answer}"
            );
        }
    }
    let missing = c.client(2).request(&ev_get("never-written", "all"));
    assert_eq!(error_code(&missing), Some("not_found"), "{missing}");
}

#[test]
fn concurrent_writes_through_different_nodes_are_siblings_until_a_context_write() {
    let c = EvCluster::start(4, 3, &["--timeout-ms", "2000"]);
    let key = "conflicted";
    let first = c.client(0).request(&ev_put(key, "base", "all", None));
    assert_eq!(first["message"], "Success", "{first}");
    let base = c.client(1).request(&ev_get(key, "all"));
    let context = base["context"].as_str().expect("a context").to_owned();
    // Two clients that both saw `base` write through different nodes: neither saw the
    // other's write, so both stay.
    for (node, value) in [(1, "left"), (2, "right")] {
        let answer = c
            .client(node)
            .request(&ev_put(key, value, "all", Some(&context)));
        assert_eq!(answer["message"], "Success", "{answer}");
    }
    let both = c.client(3).request(&ev_get(key, "all"));
    assert_eq!(values_of(&both), ["left", "right"], "{both}");
    assert!(
        both.get("value").is_none(),
        "two versions, no single value: {both}"
    );
    let resolving = both["context"].as_str().expect("a context").to_owned();
    let answer = c
        .client(0)
        .request(&ev_put(key, "merged", "all", Some(&resolving)));
    assert_eq!(answer["message"], "Success", "{answer}");
    let one = c.client(2).request(&ev_get(key, "all"));
    assert_eq!(values_of(&one), ["merged"], "{one}");
    assert_eq!(one["value"], "merged");
}

/// The value numbered `n` written to key `k` by the writer below.
fn numbered(answer: &serde_json::Value) -> Vec<u64> {
    values_of(answer)
        .iter()
        .filter_map(|v| v.strip_prefix("n")?.parse().ok())
        .collect()
}

#[test]
fn a_node_killed_during_writes_at_two_loses_no_acknowledged_write_and_replays_its_log() {
    // No repair at all: what the restarted node holds can come from its log only.
    let mut c = EvCluster::start(3, 3, &["--timeout-ms", "1000", "--repair", "none"]);
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.addrs[0];
    let writer_stop = stop.clone();
    // Even keys are written at `all`: each acknowledged one was confirmed by the node
    // about to be killed, so its own log must give it back.
    let writer = std::thread::spawn(move || {
        let mut client = Client::connect(addr);
        let mut acked: BTreeMap<String, u64> = BTreeMap::new();
        let mut n = 0u64;
        while !writer_stop.load(Ordering::Relaxed) {
            let key = format!("key{}", n % 16);
            let level = if n % 2 == 0 { "all" } else { "two" };
            let answer = client.request(&ev_put(&key, &format!("n{n}"), level, None));
            if answer["message"] == "Success" {
                acked.insert(key, n);
            }
            n += 1;
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(600));
    c.kill_node(2);
    std::thread::sleep(Duration::from_millis(800));
    // The writes stop before the node comes back, so that what it holds of the keys
    // written at `all` (which failed while it was down) can come from its log alone.
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().expect("the writer finishes");
    c.start_node(2);
    c.wait_all_up();
    assert_eq!(
        acked.len(),
        16,
        "writes went on around the crash: {acked:?}"
    );
    let mut reader = c.client(1);
    for (key, &n) in &acked {
        let answer = reader.request(&ev_get(key, "all"));
        // The last acknowledged write, or a later one that superseded it.
        assert!(
            numbered(&answer).iter().any(|&m| m >= n),
            "{key}: acknowledged n{n} lost: {answer}"
        );
    }
    // The restarted node's own copy of each key written at `all` (no repair: from its
    // log alone): the last write it confirmed before the kill, or a later one.
    let mut restarted = c.client(2);
    for (key, &n) in acked.iter().filter(|(_, &n)| n % 2 == 0) {
        let answer = restarted.request(&ev_local(key));
        assert!(
            numbered(&answer).iter().any(|&m| m >= n),
            "{key}: n{n}, confirmed by the killed node, not in its log: {answer}"
        );
    }

    // Writes every replica acknowledged, then a crash right after: the log has them.
    c.wait_all_up();
    for i in 0..8 {
        let answer = c
            .client(0)
            .request(&ev_put(&format!("durable{i}"), "kept", "all", None));
        assert_eq!(answer["message"], "Success", "{answer}");
    }
    c.kill_node(2);
    c.start_node(2);
    let mut restarted = c.client(2);
    for i in 0..8 {
        let answer = restarted.request(&ev_local(&format!("durable{i}")));
        assert_eq!(answer["value"], "kept", "replayed from the log: {answer}");
    }
}

#[test]
fn a_node_restarted_on_a_wiped_directory_keeps_the_writes_it_coordinates_afterwards() {
    let mut c = EvCluster::start(3, 3, &["--timeout-ms", "1000"]);
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| c.replicas_of(k)[0] == 1)
        .expect("a key");
    // Node 1 applies these as the key's first replica: its clock entries climb.
    for i in 0..5 {
        let answer = c
            .client(1)
            .request(&ev_put(&key, &format!("old{i}"), "all", None));
        assert_eq!(answer["message"], "Success", "{answer}");
    }
    c.kill_node(1);
    c.wipe_node(1);
    c.start_node(1);
    let answer = c.client(1).request(&ev_put(&key, "after", "all", None));
    assert_eq!(answer["message"], "Success", "{answer}");
    // Written at once, before the restarted node caught up from the others: it knows
    // nothing of its earlier counters. The other nodes then see it up again.
    c.wait_all_up();
    // A node that reused its old counters would see "after" as already superseded.
    let read = c.client(0).request(&ev_get(&key, "all"));
    assert!(
        values_of(&read).contains(&"after".to_owned()),
        "the new write was lost: {read}"
    );
    let again = c
        .client(2)
        .request(&ev_put(&key, "final", "all", read["context"].as_str()));
    assert_eq!(again["message"], "Success", "{again}");
    let last = c.client(1).request(&ev_get(&key, "all"));
    assert_eq!(values_of(&last), ["final"], "{last}");
}

#[test]
fn two_of_four_nodes_down_make_a_level_two_write_unavailable_and_write_nothing() {
    let mut c = EvCluster::start(4, 3, &["--timeout-ms", "1000"]);
    c.kill_node(2);
    c.kill_node(3);
    // Both nodes asked below must see the two nodes down, or they would try and time out.
    c.wait_for_view(0, &[2, 3]);
    c.wait_for_view(1, &[2, 3]);
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let replicas = c.replicas_of(k);
            replicas.contains(&2) && replicas.contains(&3)
        })
        .expect("a key on both downed nodes");
    let answer = c.client(0).request(&ev_put(&key, "v", "two", None));
    assert_eq!(error_code(&answer), Some("unavailable"), "{answer}");
    let live = c
        .replicas_of(&key)
        .into_iter()
        .find(|r| *r < 2)
        .expect("a live replica");
    let local = c.client(live).request(&ev_local(&key));
    assert_eq!(
        error_code(&local),
        Some("not_found"),
        "nothing was written: {local}"
    );
    let answer = c.client(1).request(&ev_get(&key, "two"));
    assert_eq!(error_code(&answer), Some("unavailable"), "{answer}");
    let fine = c.client(0).request(&ev_put(&key, "v", "one", None));
    assert_eq!(
        fine["message"], "Success",
        "one live replica suffices for one: {fine}"
    );
}

#[test]
fn hinted_handoff_catches_a_node_up_without_any_read() {
    let mut c = EvCluster::start(4, 4, &["--timeout-ms", "500", "--repair", "hints"]);
    // Something in node 3's log, so that it restarts by replaying it rather than as a
    // node on an empty directory (which would ask the others for every key).
    let before = c.client(0).request(&ev_put("before", "x", "all", None));
    assert_eq!(before["message"], "Success", "{before}");
    // A node still catching up from its first start would restart catching up too, and
    // fetch every key without any hint: it must have finished before it is killed.
    c.wait_caught_up(3);
    c.kill_node(3);
    for i in 0..3 {
        c.wait_for_view(i, &[3]);
    }
    for i in 0..10 {
        let answer = c
            .client(i % 3)
            .request(&ev_put(&format!("h{i}"), "hinted", "two", None));
        assert_eq!(answer["message"], "Success", "{answer}");
    }
    c.start_node(3);
    let mut back = c.client(3);
    let status = back.request(&json!({"type": "statusreq"}).to_string());
    assert_eq!(
        status["catching_up"], false,
        "it replays its log, and asks no one: {status}"
    );
    for i in 0..10 {
        wait_until(&mut back, &ev_local(&format!("h{i}")), 20, |a| {
            a["value"] == "hinted"
        });
    }
}

#[test]
fn abuse_on_a_node_port_is_answered_and_the_node_goes_on() {
    let c = EvCluster::start(3, 3, &[]);
    let mut junk = c.client(0);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Random bytes, with line ends, so that many lines are tried.
            if seed % 50 == 0 {
                b'\n'
            } else {
                (seed >> 24) as u8
            }
        })
        .collect();
    junk.send_raw(&bytes);
    junk.send_raw(b"\n");
    let answer = junk.recv();
    assert!(error_code(&answer).is_some(), "an error answer: {answer}");

    let mut stream = std::net::TcpStream::connect(c.addrs[1]).expect("connects");
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..3 {
        if stream.write_all(&chunk).is_err() {
            break; // closed after the frame_too_large answer: expected
        }
    }
    let _ = stream.write_all(b"\n");
    let mut huge = Client::from_stream(stream);
    let answer = huge.recv();
    assert_eq!(error_code(&answer), Some("frame_too_large"), "{answer}");
    assert!(huge.is_closed());

    let forged = c
        .client(2)
        .request(&json!({"type": "ev_store", "req": 1, "key": "k", "state": "zz"}).to_string());
    assert_eq!(error_code(&forged), Some("malformed"), "{forged}");
    for i in 0..3 {
        let answer = c
            .client(i)
            .request(&ev_put("after-abuse", "fine", "all", None));
        assert_eq!(
            answer["message"], "Success",
            "node {i} still serves: {answer}"
        );
    }
}

#[test]
fn a_bad_cluster_file_is_refused_naming_the_line() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let cases = [
        ("1 127.0.0.1:1\nnot a line\n", "line 2"),
        ("1 127.0.0.1:1\n1 127.0.0.1:2\n", "line 2"),
        ("1 127.0.0.1:1\n2 127.0.0.1:1\n", "line 2"),
        ("# only others\n2 127.0.0.1:2\n", "ID 1 is not in the file"),
    ];
    for (text, expected) in cases {
        let file = tmp.path().join("cluster");
        std::fs::write(&file, text).expect("written");
        let out = std::process::Command::new(ringkv_e2e::ringkv_bin())
            .args(["node", "--mode", "eventual", "--id", "1", "--cluster"])
            .arg(&file)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .output()
            .expect("ringkv runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
    }
    let peer = std::process::Command::new(ringkv_e2e::ringkv_bin())
        .args([
            "node",
            "--mode",
            "peer",
            "--id",
            "1",
            "--cluster",
            "x",
            "--data-dir",
            "y",
        ])
        .output()
        .expect("ringkv runs");
    assert_eq!(peer.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&peer.stderr).contains("cannot open the cluster file"));
}

/// Runs `ringkv ARGS` with `stdin` and returns its exit code and stdout.
fn ringkv(args: &[&str], stdin: &str) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(ringkv_e2e::ringkv_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("ringkv runs");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("stdin written");
    }
    let out = child.wait_with_output().expect("ringkv ends");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_console_and_one_shot_commands_show_siblings_and_resolve_them_with_the_context() {
    let c = EvCluster::start(3, 3, &[]);
    let (a0, a1) = (c.addrs[0].to_string(), c.addrs[1].to_string());
    let (code, _) = ringkv(
        &["put", "k", "base", "--addr", &a0, "--consistency", "all"],
        "",
    );
    assert_eq!(code, Some(0));
    let base = c.client(0).request(&ev_get("k", "all"));
    let context = base["context"].as_str().expect("a context").to_owned();
    for (addr, value) in [(&a0, "left"), (&a1, "right")] {
        let args = [
            "put",
            "k",
            value,
            "--addr",
            addr,
            "--context",
            &context,
            "--consistency",
            "all",
        ];
        assert_eq!(ringkv(&args, "").0, Some(0));
    }
    let (code, listing) = ringkv(&["get", "k", "--addr", &a1, "--consistency", "all"], "");
    assert_eq!(code, Some(0));
    assert!(
        listing.contains("2 versions")
            && listing.contains("\"left\"")
            && listing.contains("\"right\""),
        "{listing}"
    );
    assert!(listing.contains("clock"), "{listing}");

    // The console's put after its get sends the read's context: one version is left.
    let script =
        "get k --consistency all\nput k \"one value\" --consistency all\nget,k,all\nstatus\n";
    let (code, console) = ringkv(&["console", "--addr", &a0], script);
    assert_eq!(code, Some(0), "{console}");
    assert!(console.contains("2 versions"), "{console}");
    assert!(
        console.lines().any(|l| l.trim() == "one value"),
        "{console}"
    );
    assert!(
        console.contains("replication 3"),
        "the status table: {console}"
    );
    let after = c.client(2).request(&ev_get("k", "all"));
    assert_eq!(values_of(&after), ["one value"], "{after}");
    let (code, _) = ringkv(&["get", "missing", "--addr", &a0], "");
    assert_eq!(code, Some(1), "not found exits 1");
}

#[test]
fn with_read_repair_only_a_node_that_missed_writes_is_stale_until_a_read_at_all() {
    let mut c = EvCluster::start(4, 4, &["--timeout-ms", "500", "--repair", "read"]);
    // Node 3 has caught up and holds something in its log after that (the write's
    // record follows the log's `CaughtUp` and is synced with it), so that it restarts by
    // replaying its log rather than asking the others for every key again.
    c.wait_caught_up(3);
    let before = c.client(0).request(&ev_put("before", "x", "all", None));
    assert_eq!(before["message"], "Success", "{before}");
    // A node still catching up from its first start would restart catching up too, and
    // fetch every key without any hint: it must have finished before it is killed.
    c.wait_caught_up(3);
    c.kill_node(3);
    for i in 0..3 {
        c.wait_for_view(i, &[3]);
    }
    for i in 0..5 {
        let answer = c
            .client(i % 3)
            .request(&ev_put(&format!("r{i}"), "new", "two", None));
        assert_eq!(answer["message"], "Success", "{answer}");
    }
    c.start_node(3);
    c.wait_for_view(0, &[]);
    let mut back = c.client(3);
    for i in 0..5 {
        let stale = back.request(&ev_local(&format!("r{i}")));
        assert_eq!(
            error_code(&stale),
            Some("not_found"),
            "no hints, no read yet: {stale}"
        );
    }
    for i in 0..5 {
        let read = c.client(0).request(&ev_get(&format!("r{i}"), "all"));
        assert_eq!(read["value"], "new", "{read}");
        wait_until(&mut back, &ev_local(&format!("r{i}")), 10, |a| {
            a["value"] == "new"
        });
    }
}

#[test]
fn a_replica_down_during_a_delete_never_brings_the_value_back() {
    let mut c = EvCluster::start(3, 3, &["--timeout-ms", "500"]);
    let put = c.client(0).request(&ev_put("doomed", "v", "all", None));
    assert_eq!(put["message"], "Success", "{put}");
    c.kill_node(2);
    for i in 0..2 {
        c.wait_for_view(i, &[2]);
    }
    let read = c.client(1).request(&ev_get("doomed", "two"));
    let del = json!({"type": "delreq", "key": "doomed", "consistency": "two",
                     "context": read["context"]});
    let answer = c.client(1).request(&del.to_string());
    assert_eq!(answer["message"], "Success", "{answer}");
    c.start_node(2);
    c.wait_for_view(0, &[]);
    // The returning replica still holds the value; repair must spread the deletion to
    // it, never the value back to the others.
    let mut back = c.client(2);
    for _ in 0..3 {
        let answer = c.client(0).request(&ev_get("doomed", "all"));
        assert_eq!(
            error_code(&answer),
            Some("not_found"),
            "the value came back: {answer}"
        );
    }
    wait_until(&mut back, &ev_local("doomed"), 15, |a| {
        error_code(a) == Some("not_found")
    });
    let answer = c.client(2).request(&ev_get("doomed", "all"));
    assert_eq!(error_code(&answer), Some("not_found"), "{answer}");
}

#[test]
fn the_conflicts_demo_runs_its_story_to_the_end() {
    let (code, story) = ringkv(&["demo", "conflicts"], "");
    assert_eq!(code, Some(0), "{story}");
    let siblings = story
        .split("6. ")
        .nth(1)
        .and_then(|rest| rest.split("7. ").next())
        .unwrap_or_default();
    assert!(
        siblings.contains("\"milk, eggs, bread\"") && siblings.contains("\"milk, eggs, butter\""),
        "both siblings shown: {story}"
    );
    assert!(story.contains("by hinted handoff"), "{story}");
    assert!(
        story.contains("a read now returns: \"milk, eggs, bread, butter\""),
        "{story}"
    );
}

#[test]
fn a_local_eventual_cluster_serves_and_comes_back_with_its_data_and_addresses() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let data = tmp.path().join("data");
    let args = [
        "local",
        "--mode",
        "eventual",
        "--nodes",
        "3",
        "--no-console",
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
    ];
    let ready = |lines: &[String]| lines.iter().any(|l| l.starts_with("cluster file"));
    let listens = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.split("listen ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    let mut first = ringkv_e2e::Proc::start(&args, ready);
    let addrs = listens(&first.lines);
    assert_eq!(addrs.len(), 3, "{:?}", first.lines);
    let addr = addrs[1].parse().expect("an address");
    // Nodes started one after another answer `unavailable` until each has seen the
    // others (a second or so); the write at `all` must then succeed.
    let mut writer = Client::connect(addr);
    wait_until(&mut writer, &ev_put("kept", "yes", "all", None), 10, |a| {
        a["message"] == "Success"
    });
    first.kill();
    let second = ringkv_e2e::Proc::start(&args, ready);
    assert_eq!(listens(&second.lines), addrs, "the cluster file is reused");
    let mut client = Client::connect(addrs[0].parse().expect("an address"));
    wait_until(&mut client, &ev_get("kept", "all"), 10, |a| {
        a["value"] == "yes"
    });
}
