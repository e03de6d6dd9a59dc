//! A byte flipped in the middle of a KV server's log: the server refuses to start and
//! names the file and the offset, changing nothing; with `--truncate-corrupt-log` it
//! starts on the records before the damage. A segment gone from the middle of a log is
//! refused the same way.

use std::process::Command;

use ringkv_e2e::{put, ringkv_bin, Cluster};

const IDS: [u64; 2] = [1 << 20, 1 << 62];

#[test]
fn a_flipped_byte_in_the_middle_of_a_log_stops_the_start_until_the_operator_says_cut() {
    let mut c = Cluster::start(&IDS, &["--timeout-ms", "1000"]);
    let mut client = c.client();
    for i in 0..40 {
        let answer = client.request(&put(&format!("k{i}"), &format!("value {i}")));
        assert_eq!(answer["message"], "Success", "{answer}");
    }
    c.kill_server(0);
    let log = c.data_dir(0).join("wal.log");
    let mut bytes = std::fs::read(&log).expect("the log exists");
    assert!(
        bytes.len() > 1000,
        "the log holds the writes: {} bytes",
        bytes.len()
    );
    // A byte of the first record's payload (past its 8-byte header).
    bytes[10] ^= 0x40;
    std::fs::write(&log, &bytes).expect("the log is written back");

    let data_dir = c.data_dir(0);
    let start = |extra: &[&str]| {
        let mut args = vec![
            "server".to_owned(),
            "--id".to_owned(),
            IDS[0].to_string(),
            "--coordinator".to_owned(),
            c.server_addr.to_string(),
            "--data-dir".to_owned(),
            data_dir.to_str().expect("UTF-8").to_owned(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let refused = Command::new(ringkv_bin())
        .args(start(&[]))
        .output()
        .expect("ringkv runs");
    assert!(!refused.status.success(), "the server must not start");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("damaged at byte 0") && stderr.contains("wal.log"),
        "the error names the file and the offset: {stderr}"
    );
    assert_eq!(
        std::fs::read(&log).expect("the log is there"),
        bytes,
        "a refused start changes nothing"
    );
    // With the operator's word, the server starts on what precedes the damage.
    c.start_server_with(0, &["--truncate-corrupt-log"]);
    c.wait_for_ring(IDS.len());
    assert!(std::fs::metadata(&log).expect("the log").len() < bytes.len() as u64);
}

#[test]
fn a_segment_gone_from_the_middle_of_a_log_stops_the_start_until_the_operator_says_cut() {
    let mut c = Cluster::start(&IDS, &["--timeout-ms", "1000"]);
    c.kill_server(0);
    c.start_server_with(0, &["--segment-bytes", "4096"]);
    c.wait_for_ring(IDS.len());
    let mut client = c.client();
    for i in 0..80 {
        let value = format!("value {i} {}", "v".repeat(200));
        let answer = client.request(&put(&format!("k{i}"), &value));
        assert_eq!(answer["message"], "Success", "{answer}");
    }
    c.kill_server(0);
    let dir = c.data_dir(0);
    let mut segments: Vec<String> = std::fs::read_dir(&dir)
        .expect("the data directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with("wal-") && name.ends_with(".log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 2, "the log rolled: {segments:?}");
    // The first segment after wal.log goes, as an operator's mistake or a lost file would
    // take it: the records in it are gone, and records follow.
    std::fs::remove_file(dir.join(&segments[0])).expect("the segment is removed");
    let files_before = files_in(&dir);
    let refused = Command::new(ringkv_bin())
        .args([
            "server",
            "--id",
            &IDS[0].to_string(),
            "--coordinator",
            &c.server_addr.to_string(),
            "--data-dir",
            dir.to_str().expect("UTF-8"),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("ringkv runs");
    assert!(!refused.status.success(), "the server must not start");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let next = segments[1]
        .trim_start_matches("wal-")
        .trim_end_matches(".log");
    let next: u64 = next.parse().expect("a segment's start");
    assert!(
        stderr.contains("are missing") && stderr.contains(&format!("up to byte {next}")),
        "the error says which bytes are missing: {stderr}"
    );
    assert_eq!(
        files_in(&dir),
        files_before,
        "a refused start changes nothing"
    );
    // With the operator's word, the server starts on the records before the gap.
    c.start_server_with(0, &["--truncate-corrupt-log", "--segment-bytes", "4096"]);
    c.wait_for_ring(IDS.len());
}

/// Every file of `dir` with its bytes, in name order.
fn files_in(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("the data directory")
        .map(|e| e.expect("an entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("the file reads"))
        })
        .collect();
    files.sort();
    files
}
