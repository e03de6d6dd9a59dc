//! A KV server killed with SIGKILL in the middle of a stream of writes and restarted on
//! the same data directory loses no acknowledged write, and both replicas of every key
//! end up agreeing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_e2e::{error_code, get, put, Client, Cluster};

const IDS: [u64; 3] = [1 << 20, 1 << 62, 3 << 62];
const KEYS: usize = 24;

#[test]
fn sigkill_during_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::start(&IDS, &["--timeout-ms", "1000"]);
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.client_addr;
    let writer_stop = stop.clone();
    // One writer, so that each key's last acknowledged value is its only right answer:
    // an error answer guarantees the write changed nothing.
    let writer = std::thread::spawn(move || {
        let mut client = Client::connect(addr);
        let mut acked: BTreeMap<String, String> = BTreeMap::new();
        let (mut ok, mut failed) = (0, 0);
        let mut n = 0u64;
        while !writer_stop.load(Ordering::Relaxed) {
            let key = format!("key{}", n % KEYS as u64);
            let value = format!("value-{n}");
            let answer = client.request(&put(&key, &value));
            if answer["message"] == "Success" && answer.get("error").is_none() {
                acked.insert(key, value);
                ok += 1;
            } else {
                let code = error_code(&answer).unwrap_or("?").to_owned();
                assert_eq!(code, "unavailable", "only the downed server's keys fail");
                failed += 1;
            }
            n += 1;
        }
        (acked, ok, failed)
    });

    std::thread::sleep(Duration::from_millis(700));
    c.kill_server(1);
    std::thread::sleep(Duration::from_millis(1500));
    // The writes stop before the server comes back: every value it must hold then was
    // acknowledged before it was killed, so only its recovery from its log can give it
    // (a later write would overwrite a key and hide a server that came back empty).
    stop.store(true, Ordering::Relaxed);
    let (acked, ok, failed) = writer.join().expect("the writer finishes");
    assert!(ok > 50, "writes went on around the crash: {ok} ok");
    assert!(
        failed > 0,
        "writes to the dead server's keys failed meanwhile"
    );
    c.start_server(1);
    c.wait_for_ring(IDS.len());

    // Every acknowledged write is on both replicas, once phase 2 has reached them.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (key, value) in &acked {
        for server in c.replicas_of(key) {
            loop {
                let mut participant = Client::connect(c.server_listen(server));
                let answer = participant.request(&get(key));
                if answer["value"] == value.as_str() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "server {} has {answer} for {key}, acknowledged {value}",
                    c.ids[server]
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // And through the coordinator.
        assert_eq!(c.client().request(&get(key))["value"], value.as_str());
    }
    assert_eq!(acked.len(), KEYS);
}

#[test]
fn servers_register_again_when_the_coordinator_restarts() {
    let mut c = Cluster::start(&IDS, &["--timeout-ms", "1000"]);
    let mut client = c.client();
    for i in 0..10 {
        let answer = client.request(&put(&format!("kept{i}"), &format!("v{i}")));
        assert_eq!(answer["message"], "Success");
    }
    // Let phase 2 reach every replica before the coordinator dies.
    for i in 0..10 {
        let key = format!("kept{i}");
        for server in c.replicas_of(&key) {
            ringkv_e2e::wait_for_replica_value(c.server_listen(server), &key, &format!("v{i}"));
        }
    }
    c.restart_coordinator();
    // The servers notice the lost connection and register again, unprompted.
    c.wait_for_ring(IDS.len());
    let mut client = c.client();
    for i in 0..10 {
        let answer = client.request(&get(&format!("kept{i}")));
        assert_eq!(answer["value"], format!("v{i}"), "{answer}");
    }
    let answer = client.request(&put("kept0", "after restart"));
    assert_eq!(answer["message"], "Success", "{answer}");
    assert_eq!(client.request(&get("kept0"))["value"], "after restart");
}
