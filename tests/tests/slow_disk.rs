//! A slow disk holds up writes and nothing else: while a PUT waits for its fsyncs, both
//! replicas answer GETs and pings at once. Every process here runs with the sync test
//! hook `RINGKV_TEST_SYNC_DELAY_MS`, which makes each log sync sleep first; a server
//! that synced in its event loop would leave the probes waiting for the sleep.
//!
//! One test in this file: the hook is set in this test process's environment, which
//! every process it starts inherits.

use std::time::{Duration, Instant};

use ringkv_e2e::{error_code, get, put, Client, Cluster};

const IDS: [u64; 2] = [1 << 62, 3 << 62];
/// How long every sync sleeps.
const SYNC_DELAY_MS: u64 = 2_000;
/// The most a probe may take: far above a loaded machine's round trip, far below a sync.
const PROBE_LIMIT_MS: u64 = SYNC_DELAY_MS / 2;

#[test]
fn gets_and_pings_are_answered_during_a_writes_fsync() {
    std::env::set_var("RINGKV_TEST_SYNC_DELAY_MS", SYNC_DELAY_MS.to_string());
    let c = Cluster::start(&IDS, &["--timeout-ms", "10000"]);
    let mut probes: Vec<Client> = (0..IDS.len())
        .map(|i| Client::connect(c.server_listen(i)))
        .collect();
    for probe in &mut probes {
        assert_eq!(probe.request(r#"{"type":"ping"}"#)["type"], "pong");
    }
    wait_until_writable(&c);

    let addr = c.client_addr;
    let writer = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = Client::connect(addr).request(&put("slow", "disk"));
        (answer, started.elapsed())
    });
    let mut worst = Duration::ZERO;
    let mut rounds = 0u32;
    while !writer.is_finished() {
        for probe in &mut probes {
            let started = Instant::now();
            assert_eq!(probe.request(r#"{"type":"ping"}"#)["type"], "pong");
            let answer = probe.request(&get("other"));
            assert_eq!(error_code(&answer), Some("not_found"), "{answer}");
            worst = worst.max(started.elapsed());
        }
        rounds += 1;
    }
    let (answer, put_took) = writer.join().expect("the writer finishes");
    assert_eq!(answer["message"], "Success", "{answer}");
    assert!(
        put_took >= Duration::from_millis(SYNC_DELAY_MS),
        "the PUT took {put_took:?}: the sync hook is not in effect"
    );
    assert!(rounds >= 2, "probes ran during the write: {rounds} rounds");
    assert!(
        worst < Duration::from_millis(PROBE_LIMIT_MS),
        "a GET and ping took {worst:?} during a write whose syncs take {SYNC_DELAY_MS} ms \
         each ({rounds} rounds over {put_took:?})"
    );
    // And the write is there once it was acknowledged.
    assert_eq!(c.client().request(&get("slow"))["value"], "disk");
}

/// Writes a first key until it succeeds: the coordinator answers `unavailable` until its
/// own log's first records are synced, which the hook slows too.
fn wait_until_writable(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = c.client();
    loop {
        let answer = client.request(&put("first", "write"));
        if answer["message"] == "Success" {
            return;
        }
        assert_eq!(error_code(&answer), Some("unavailable"), "{answer}");
        assert!(Instant::now() < deadline, "never writable: {answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
