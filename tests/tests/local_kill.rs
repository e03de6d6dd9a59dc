//! `ringkv local`, the store as the README starts it (every role in one process),
//! SIGKILLed in the middle of a stream of writes and started again on its data
//! directory: every write it acknowledged is there, the one in flight is there or not,
//! and every key takes new writes (none stayed locked).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_e2e::{error_code, get, put, Client, Proc};

const KEYS: u64 = 30;

/// What the writer saw: each key's last acknowledged value, and the write whose answer
/// never came (the kill took it), if any.
struct Written {
    acked: BTreeMap<String, String>,
    in_flight: Option<(String, String)>,
    count: u64,
}

/// Starts `ringkv local` with `args`; returns it and the addresses clients may use.
fn start_local(args: &[&str]) -> (Proc, Vec<SocketAddr>) {
    let ready = |lines: &[String]| {
        lines.iter().any(|l| l.starts_with("clients connect to "))
            || lines.iter().any(|l| l.starts_with("cluster file"))
    };
    let local = Proc::start(args, ready);
    let addrs: Vec<SocketAddr> = local
        .lines
        .iter()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("clients connect to ")
                .or_else(|| l.split("listen ").nth(1))?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect();
    assert!(!addrs.is_empty(), "no address printed: {:?}", local.lines);
    (local, addrs)
}

/// Sends `line` until the answer is not `unavailable` (the ring or the nodes still
/// starting), for at most 20 s.
fn until_available(addr: SocketAddr, line: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(answer) = Client::try_connect(addr).and_then(|mut c| c.try_request(line)) {
            if error_code(&answer) != Some("unavailable") {
                return answer;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} stayed unavailable for {line}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_until_killed(addr: SocketAddr, stop: &AtomicBool) -> Written {
    let mut written = Written {
        acked: BTreeMap::new(),
        in_flight: None,
        count: 0,
    };
    let mut client = Client::connect(addr);
    while !stop.load(Ordering::Relaxed) {
        let n = written.count;
        let (key, value) = (format!("key{}", n % KEYS), format!("value-{n}"));
        written.count += 1;
        match client.try_request(&put(&key, &value)) {
            Some(answer) if answer["message"] == "Success" => {
                written.acked.insert(key, value);
            }
            // Nodes that just started may not see each other yet; nothing changed.
            Some(answer)
                if matches!(
                    error_code(&answer),
                    Some("unavailable" | "aborted" | "overloaded")
                ) => {}
            Some(answer) => panic!("an answer the protocol does not allow: {answer}"),
            None => {
                written.in_flight = Some((key, value));
                break;
            }
        }
    }
    written
}

fn killed_mid_writes_comes_back_with_every_acknowledged_write(mode_args: &[&str]) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let data = tmp.path().join("data");
    let mut args = vec!["local", "--no-console", "--data-dir"];
    args.push(data.to_str().expect("a UTF-8 path"));
    args.extend_from_slice(mode_args);
    let (mut local, addrs) = start_local(&args);
    let addr = addrs[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    while until_available(addr, &put("warm", "up"))["message"] != "Success" {
        assert!(Instant::now() < deadline, "the cluster never took a write");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = Arc::clone(&stop);
    let writer = std::thread::spawn(move || write_until_killed(addr, &writer_stop));
    std::thread::sleep(Duration::from_millis(1500));
    local.kill();
    stop.store(true, Ordering::Relaxed);
    let written = writer
        .join()
        .expect("the writer saw only successes before the kill");
    assert!(
        written.acked.len() == KEYS as usize,
        "{} writes",
        written.count
    );

    let (_local, addrs) = start_local(&args);
    let addr = addrs[addrs.len() - 1];
    for n in 0..KEYS {
        let key = format!("key{n}");
        let answer = until_available(addr, &get(&key));
        let value = answer["value"].as_str().unwrap_or_default();
        let acked = written.acked.get(&key).map(String::as_str);
        let in_flight = written
            .in_flight
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str());
        assert!(
            Some(value) == acked || Some(value) == in_flight,
            "{key}: {answer} after the restart, acknowledged {acked:?}, in flight {in_flight:?}"
        );
    }
    for n in 0..KEYS {
        let answer = until_available(addr, &put(&format!("key{n}"), "after"));
        assert_eq!(answer["message"], "Success", "key{n}: {answer}");
    }
}

#[test]
fn a_strong_local_cluster_killed_mid_writes_keeps_every_acknowledged_write() {
    killed_mid_writes_comes_back_with_every_acknowledged_write(&[
        "--servers",
        "3",
        "--client-addr",
        "127.0.0.1:0",
        "--server-addr",
        "127.0.0.1:0",
    ]);
}

#[test]
fn a_peer_local_cluster_killed_mid_writes_keeps_every_acknowledged_write() {
    killed_mid_writes_comes_back_with_every_acknowledged_write(&["--mode", "peer", "--nodes", "3"]);
}
