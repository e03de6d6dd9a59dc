//! The coordinator SIGKILLed again and again during a stream of writes, and restarted on
//! its data directory: no acknowledged write is lost, every write of unknown outcome is
//! on both replicas or on neither, and no key stays locked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_e2e::{get, put, Client, Cluster};

const IDS: [u64; 3] = [1 << 20, 1 << 62, 3 << 62];
const KEYS: usize = 16;

/// What one writer knows of each key: the values it wrote in order, each acknowledged
/// or of unknown outcome (an error answer changed nothing, so it is not kept).
type Writes = BTreeMap<String, Vec<(String, bool)>>;

fn write_until(addr: std::net::SocketAddr, stop: &AtomicBool) -> (Writes, usize) {
    let mut writes = Writes::new();
    let mut acked = 0;
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = client.as_mut() else {
            client = Client::try_connect(addr);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let key = format!("key{}", n % KEYS as u64);
        let value = format!("value-{n}");
        n += 1;
        match conn.try_request(&put(&key, &value)) {
            Some(answer) if answer["message"] == "Success" && answer.get("error").is_none() => {
                writes.entry(key).or_default().push((value, true));
                acked += 1;
            }
            Some(_) => {}
            None => {
                writes.entry(key).or_default().push((value, false));
                client = None;
            }
        }
    }
    (writes, acked)
}

#[test]
fn coordinator_sigkilled_during_writes_loses_nothing_and_locks_nothing() {
    let mut c = Cluster::start(&IDS, &["--timeout-ms", "1000"]);
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.client_addr;
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || write_until(addr, &writer_stop));
    for pause_ms in [400, 650, 300] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        c.restart_coordinator();
    }
    std::thread::sleep(Duration::from_millis(900));
    // The writes stop at the last kill: what the replicas hold at the end then depends
    // on the last coordinator's recovery alone (finishing phase 2 of what the killed one
    // decided, aborting what it had not), not on later writes that would overwrite it.
    c.kill_coordinator();
    stop.store(true, Ordering::Relaxed);
    let (writes, acked) = writer.join().expect("the writer finishes");
    assert!(acked > 20, "writes went on between the crashes: {acked}");
    c.start_coordinator_again();
    c.wait_for_ring(IDS.len());

    // Once the restarted coordinator has finished phase 2 of what it had decided and
    // aborted what it had not, both replicas of every key hold one and the same value:
    // the last acknowledged one, or a later write whose outcome the writer never learnt.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (key, values) in &writes {
        let last_acked = values.iter().rposition(|(_, ok)| *ok);
        let allowed: Vec<&str> = values
            .iter()
            .enumerate()
            .filter(|(i, _)| last_acked.is_none_or(|last| *i >= last))
            .map(|(_, (v, _))| v.as_str())
            .collect();
        loop {
            let held: Vec<String> = c
                .replicas_of(key)
                .iter()
                .map(|&s| {
                    Client::connect(c.server_listen(s)).request(&get(key))["value"].to_string()
                })
                .collect();
            let agree = held[0] == held[1];
            let fine = agree
                && (allowed.iter().any(|v| held[0] == format!("\"{v}\""))
                    || (last_acked.is_none() && held[0] == "null"));
            if fine {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{key}: replicas hold {held:?}; allowed {allowed:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // No key stays locked: every key takes a new write.
    let mut client = c.client();
    for i in 0..KEYS {
        let key = format!("key{i}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = client.request(&put(&key, "after"));
            if answer["message"] == "Success" {
                break;
            }
            assert!(Instant::now() < deadline, "{key} stays locked: {answer}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(client.request(&get(&key))["value"], "after");
    }
}

#[test]
fn a_server_on_another_servers_old_address_never_takes_its_writes() {
    let mut c = Cluster::start(&IDS, &["--timeout-ms", "500"]);
    // A key that server 0 holds and server 2 does not.
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let replicas = c.replicas_of(k);
            replicas.contains(&0) && !replicas.contains(&2)
        })
        .expect("such a key");
    let old_addr = c.server_listen(0);
    c.kill_server(0);
    c.kill_server(2);
    // Server 2 comes back on server 0's old port; the coordinator still sends server 0's
    // prepares there until server 0 registers again.
    c.start_server_on(2, &old_addr.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = c.client().request(r#"{"type":"statusreq"}"#);
        let servers = status["servers"].as_array().cloned().unwrap_or_default();
        let moved = servers
            .iter()
            .any(|s| s["id"] == IDS[2] && s["addr"] == old_addr.to_string().as_str());
        if moved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server 2 never registered: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every attempt meets server 2 where server 0 used to be, and fails.
    for _ in 0..5 {
        let answer = c.client().request(&put(&key, "misdirected"));
        assert!(answer.get("error").is_some(), "{answer}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let held = Client::connect(c.server_listen(2)).request(&get(&key));
    assert_eq!(
        held["error"], "not_found",
        "server 2 took server 0's write: {held}"
    );
    c.start_server(0);
    c.wait_for_ring(IDS.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = c.client().request(&put(&key, "home"));
        if answer["message"] == "Success" {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_connection_that_goes_silent_is_replaced_and_updates_go_on() {
    let mut c = Cluster::start(&IDS, &["--timeout-ms", "1000"]);
    // Server 0 moves behind a proxy on another loopback address, at the same port.
    c.kill_server(0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    let front: std::net::SocketAddr = format!("127.0.0.2:{port}").parse().expect("an address");
    let proxy = ringkv_e2e::SilencingProxy::start(front, listen);
    c.start_server_flags_pub(0, &listen.to_string(), &["--advertise-host", "127.0.0.2"]);
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| c.replicas_of(k).contains(&0))
        .expect("a key of server 0");
    let put_until_success = |c: &Cluster, value: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = c.client().request(&put(&key, value));
            if answer["message"] == "Success" {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{key} never took {value}: {answer}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    put_until_success(&c, "before");
    // The flows the coordinator has open to server 0 go silent; only new ones work.
    proxy.silence_open_flows();
    let silenced_at = Instant::now();
    put_until_success(&c, "after");
    assert!(
        silenced_at.elapsed() < Duration::from_secs(15),
        "the coordinator replaced the silent connection"
    );
    assert_eq!(c.client().request(&get(&key))["value"], "after");
}
