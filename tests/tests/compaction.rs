//! A KV server's log past many segments is merged in the background, stays small on
//! disk, and a server SIGKILLed and restarted on it reads every value back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_e2e::{get, put, Client, Cluster};

const IDS: [u64; 2] = [1 << 62, 3 << 62];
const SEGMENT: &[&str] = &["--segment-bytes", "4096"];

fn log_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("the data directory exists")
        .map(|entry| entry.expect("a directory entry"))
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("wal"))
        .map(|entry| {
            let len = entry.metadata().expect("metadata").len();
            (entry.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_log_written_past_many_segments_is_merged_and_read_back_after_a_restart() {
    let mut c = Cluster::start(&IDS, &["--timeout-ms", "5000"]);
    for i in 0..IDS.len() {
        c.kill_server(i);
        c.start_server_with(i, SEGMENT);
    }
    c.wait_for_ring(IDS.len());

    let mut client = c.client();
    let mut latest = BTreeMap::new();
    let mut written = 0u64;
    for n in 0..600u64 {
        let key = format!("key{}", n % 30);
        let value = format!("{n}:{}", "x".repeat(300));
        written += value.len() as u64;
        let answer = client.request(&put(&key, &value));
        assert_eq!(answer["message"], "Success", "{answer}");
        latest.insert(key, value);
    }
    // Each server holds every key (two servers, two replicas): merges bring its log
    // down to about the live data.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..IDS.len() {
        loop {
            let files = log_files(&c.data_dir(i));
            let bytes: u64 = files.iter().map(|(_, len)| len).sum();
            if bytes < written / 4 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server {i} keeps {bytes} bytes of log for {written} written: {files:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    for i in 0..IDS.len() {
        c.kill_server(i);
        c.start_server_with(i, SEGMENT);
    }
    c.wait_for_ring(IDS.len());
    for i in 0..IDS.len() {
        let mut replica = Client::connect(c.server_listen(i));
        for (key, value) in &latest {
            let answer = replica.request(&get(key));
            assert_eq!(answer["value"], value.as_str(), "server {i}, {key}");
        }
    }
    let mut client = c.client();
    for (key, value) in &latest {
        assert_eq!(client.request(&get(key))["value"], value.as_str());
    }
}
