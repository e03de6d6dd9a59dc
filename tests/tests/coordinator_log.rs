//! The coordinator's log is compacted once it passes `--log-compact-bytes`, and a
//! coordinator SIGKILLed after compactions recovers every write and locks no key.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_e2e::{get, put, Client, Cluster};

const IDS: [u64; 3] = [1 << 20, 1 << 62, 3 << 62];
const KEYS: usize = 20;
const COMPACT_BYTES: u64 = 4096;

#[test]
fn a_compacted_coordinator_log_stays_small_and_recovers_every_write() {
    let compact = COMPACT_BYTES.to_string();
    let mut c = Cluster::start(
        &IDS,
        &["--timeout-ms", "1000", "--log-compact-bytes", &compact],
    );
    let log = coordinator_log(&c);
    let size = || ringkv_e2e::log_sizes::records_len(&log);
    let file_size = || std::fs::metadata(&log).map_or(0, |meta| meta.len());
    let mut client = c.client();
    let mut last = BTreeMap::new();
    let (mut largest, mut shrank, mut largest_file) = (0, false, 0);
    for n in 0..400 {
        let key = format!("key{}", n % KEYS);
        let value = format!("value number {n} of the compaction test");
        let answer = client.request(&put(&key, &value));
        assert_eq!(answer["message"], "Success", "{key}: {answer}");
        last.insert(key, value);
        let now = size();
        shrank |= now < largest;
        largest = largest.max(now);
        largest_file = largest_file.max(file_size());
    }
    // 400 commits and their ends are far more than the threshold; without compaction
    // the log would hold all of them.
    assert!(shrank, "the log never shrank (largest {largest} bytes)");
    assert!(
        largest < 4 * COMPACT_BYTES,
        "the log grew to {largest} bytes past a threshold of {COMPACT_BYTES}"
    );
    let small_prealloc = ringkv_e2e::log_sizes::SMALL_PREALLOC_BYTES;
    assert!(
        largest_file < 4 * COMPACT_BYTES + 2 * small_prealloc,
        "the log file took {largest_file} bytes on disk past a threshold of {COMPACT_BYTES}"
    );

    c.restart_coordinator();
    c.wait_for_ring(IDS.len());
    check_values_and_locks(&c, &last);
}

/// The coordinator's log file, beside the servers' data directories.
fn coordinator_log(c: &Cluster) -> std::path::PathBuf {
    c.data_dir(0)
        .parent()
        .expect("the cluster's directory")
        .join("coordinator")
        .join("wal.log")
}

/// Every key reads `last` through the coordinator and on both replicas, then takes a new
/// write within a bounded wait (none stays locked).
fn check_values_and_locks(c: &Cluster, last: &BTreeMap<String, String>) {
    let mut client = c.client();
    for (key, value) in last {
        let answer = client.request(&get(key));
        assert_eq!(
            answer["value"],
            value.as_str(),
            "{key} after the restart: {answer}"
        );
        for replica in c.replicas_of(key) {
            ringkv_e2e::wait_for_replica_value(c.server_listen(replica), key, value);
        }
    }
    // No key stays locked: every key takes a new write at once or after a bounded wait.
    for key in last.keys() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = client.request(&put(key, "after"));
            if answer["message"] == "Success" {
                break;
            }
            assert!(Instant::now() < deadline, "{key} stays locked: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(client.request(&get(key))["value"], "after");
    }
}

/// Writes in turn over the keys until `stop`; returns each key's last acknowledged value
/// and whether a later write of unknown outcome followed it.
fn write_until(addr: std::net::SocketAddr, stop: &AtomicBool) -> BTreeMap<String, (String, bool)> {
    let mut last = BTreeMap::new();
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = client.as_mut() else {
            client = Client::try_connect(addr);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let key = format!("key{}", n % KEYS as u64);
        let value = format!("value number {n} written through crashes");
        n += 1;
        match conn.try_request(&put(&key, &value)) {
            Some(answer) if answer["message"] == "Success" && answer.get("error").is_none() => {
                last.insert(key, (value, false));
            }
            Some(_) => {}
            None => {
                if let Some(entry) = last.get_mut(&key) {
                    entry.1 = true;
                }
                client = None;
            }
        }
    }
    last
}

#[test]
fn a_coordinator_killed_while_compacting_often_loses_no_acknowledged_write() {
    let compact = COMPACT_BYTES.to_string();
    let mut c = Cluster::start(
        &IDS,
        &["--timeout-ms", "1000", "--log-compact-bytes", &compact],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.client_addr;
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || write_until(addr, &writer_stop));
    let log = coordinator_log(&c);
    let mut watch = LogWatch::default();
    for pause_ms in [500, 350] {
        watch.sleep(&log, pause_ms);
        c.restart_coordinator();
    }
    watch.sleep(&log, 700);
    // The writes stop at the last kill: what the keys hold at the end then depends on
    // the last coordinator's recovery from a compacted log alone, not on later writes.
    c.kill_coordinator();
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().expect("the writer finishes");
    assert!(
        last.len() == KEYS,
        "writes went on between the crashes: {last:?}"
    );
    assert!(
        watch.shrank,
        "the log was never compacted between the kills (largest {} bytes)",
        watch.largest
    );
    c.start_coordinator_again();
    c.wait_for_ring(IDS.len());
    // A key whose last acknowledged write was followed by one of unknown outcome may
    // hold either; the others must hold exactly their last acknowledged value.
    let known: BTreeMap<String, String> = last
        .into_iter()
        .filter(|(_, (_, unknown_after))| !unknown_after)
        .map(|(key, (value, _))| (key, value))
        .collect();
    assert!(!known.is_empty(), "some key ended on an acknowledged write");
    check_values_and_locks(&c, &known);
}

/// The coordinator's log seen while waiting: its largest size, and whether it ever
/// shrank (a compaction).
#[derive(Default)]
struct LogWatch {
    largest: u64,
    shrank: bool,
}

impl LogWatch {
    /// Sleeps `ms`, reading the log's size every 10 ms.
    fn sleep(&mut self, log: &std::path::Path, ms: u64) {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            let now = ringkv_e2e::log_sizes::records_len(log);
            self.shrank |= now < self.largest;
            self.largest = self.largest.max(now);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
