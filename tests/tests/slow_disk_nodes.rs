//! A slow disk does not stall a node's loop, in eventual and in peer mode: while a write
//! waits for its fsyncs, every node answers a read of its own copy of another key at
//! once. Every process here runs with the sync test hook `RINGKV_TEST_SYNC_DELAY_MS`,
//! which makes each log sync sleep first; a node that synced in its event loop would
//! leave the probes waiting for the sleep.
//!
//! Reads at a consistency level are not probed: an eventual replica shows its state of a
//! key only once its last log write, whatever the key, is durable
//! (`core/src/eventual/serve.rs`), so such a read does wait for the slow sync.
//!
//! One test in this file: the hook is set in this test process's environment, which
//! every process it starts inherits.

use std::time::{Duration, Instant};

use ringkv_e2e::eventual::{ev_local, ev_put, EvCluster};
use ringkv_e2e::{error_code, put};

/// How long every sync sleeps.
const SYNC_DELAY_MS: u64 = 2_000;
/// The most a probe may take: far above a loaded machine's round trip, far below a sync.
const PROBE_LIMIT_MS: u64 = SYNC_DELAY_MS / 2;

#[test]
fn every_node_reads_its_own_copy_at_once_during_a_writes_fsync() {
    std::env::set_var("RINGKV_TEST_SYNC_DELAY_MS", SYNC_DELAY_MS.to_string());
    for mode in ["eventual", "peer"] {
        let write = match mode {
            "eventual" => ev_put("slow", "disk", "all", None),
            _ => put("slow", "disk"),
        };
        let read = ev_local("other");
        let c = EvCluster::start_mode(mode, 3, None, &["--timeout-ms", "20000"]);
        let mut probes: Vec<_> = (0..3).map(|i| c.client(i)).collect();
        let mut writer_client = c.client(0);
        let writer = std::thread::spawn(move || {
            let started = Instant::now();
            let answer = writer_client.request(&write);
            (answer, started.elapsed())
        });
        let mut worst = Duration::ZERO;
        let mut rounds = 0u32;
        while !writer.is_finished() {
            for probe in &mut probes {
                let started = Instant::now();
                let answer = probe.request(&read);
                assert_eq!(error_code(&answer), Some("not_found"), "{mode}: {answer}");
                worst = worst.max(started.elapsed());
            }
            rounds += 1;
        }
        let (answer, write_took) = writer.join().expect("the writer finishes");
        assert_eq!(answer["message"], "Success", "{mode}: {answer}");
        assert!(
            write_took >= Duration::from_millis(SYNC_DELAY_MS),
            "{mode}: the write took {write_took:?}: the sync hook is not in effect"
        );
        assert!(
            rounds >= 2,
            "{mode}: probes ran during the write: {rounds} rounds"
        );
        assert!(
            worst < Duration::from_millis(PROBE_LIMIT_MS),
            "{mode}: a read took {worst:?} during a write whose syncs take {SYNC_DELAY_MS} ms \
             each ({rounds} rounds over {write_took:?})"
        );
    }
}
