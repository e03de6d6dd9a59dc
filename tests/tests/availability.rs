//! While a KV server is down, updates of its keys answer `unavailable` within the
//! configured timeout and change nothing, and GETs of every key are still answered.

use std::time::{Duration, Instant};

use ringkv_e2e::{del, error_code, get, put, Cluster};

const IDS: [u64; 3] = [5, 1 << 63, u64::MAX - 5];
const TIMEOUT_MS: u64 = 500;

#[test]
fn a_down_server_blocks_only_updates_of_its_keys() {
    let mut c = Cluster::start(&IDS, &["--timeout-ms", "500"]);
    let keys: Vec<String> = (0..12).map(|i| format!("avail{i}")).collect();
    let mut client = c.client();
    for key in &keys {
        assert_eq!(client.request(&put(key, "before"))["message"], "Success");
    }
    let down = 0;
    c.kill_server(down);

    let (mut blocked, mut free) = (0, 0);
    for key in &keys {
        // Every key is still readable: from its other replica when needed.
        let answer = client.request(&get(key));
        assert_eq!(answer["value"], "before", "{key}: {answer}");
        if c.replicas_of(key).contains(&down) {
            blocked += 1;
            for line in [put(key, "after"), del(key)] {
                let started = Instant::now();
                let answer = client.request(&line);
                let took = started.elapsed();
                assert_eq!(error_code(&answer), Some("unavailable"), "{line}: {answer}");
                // Answered within the timeout, give or take scheduling.
                assert!(
                    took < Duration::from_millis(TIMEOUT_MS * 3),
                    "{line} took {took:?}"
                );
            }
            assert_eq!(
                client.request(&get(key))["value"],
                "before",
                "nothing changed"
            );
        } else {
            free += 1;
            assert_eq!(client.request(&put(key, "after"))["message"], "Success");
            assert_eq!(client.request(&get(key))["value"], "after");
        }
    }
    assert!(
        blocked > 0 && free > 0,
        "both kinds of keys: {blocked} blocked, {free} free"
    );

    // The server comes back with its data and updates go through again.
    c.start_server(down);
    c.wait_for_ring(IDS.len());
    for key in keys.iter().filter(|k| c.replicas_of(k).contains(&down)) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = client.request(&put(key, "after"));
            if answer["message"] == "Success" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{key} stays unavailable: {answer}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(client.request(&get(key))["value"], "after");
    }
}
