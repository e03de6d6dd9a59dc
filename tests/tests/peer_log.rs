//! A peer-mode node's log is compacted once it passes `--log-compact-bytes`: it stays
//! bounded however many writes it takes, and nodes killed after compactions recover
//! every committed write from it.

use std::collections::BTreeMap;

use ringkv_e2e::eventual::EvCluster;
use ringkv_e2e::peer::{start_peer, wait_agree};
use ringkv_e2e::{get, put};

const KEYS: usize = 20;
const COMPACT_BYTES: u64 = 16 * 1024;
const NODES: usize = 3;

#[test]
fn a_compacted_peer_log_stays_bounded_and_recovers_every_write() {
    let compact = COMPACT_BYTES.to_string();
    let mut c = start_peer(
        NODES,
        None,
        &["--timeout-ms", "2000", "--log-compact-bytes", &compact],
    );
    let size = |c: &EvCluster, i: usize| {
        std::fs::metadata(c.data_dir(i).join("wal.log"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let mut last = BTreeMap::new();
    let mut largest = [0u64; NODES];
    let mut previous = [0u64; NODES];
    let mut compactions = [0usize; NODES];
    let mut left = [0u64; NODES];
    for n in 0..400 {
        let key = format!("key{}", n % KEYS);
        let value = format!("value number {n} of the peer log compaction test");
        let answer = c.client(n % NODES).request(&put(&key, &value));
        assert_eq!(answer["message"], "Success", "{key}: {answer}");
        last.insert(key, value);
        for i in 0..NODES {
            let now = size(&c, i);
            if now < previous[i] {
                compactions[i] += 1;
                left[i] = left[i].max(now);
            }
            previous[i] = now;
            largest[i] = largest[i].max(now);
        }
    }
    // Each node logs every write (a prepare and a decision as a replica, and the commit
    // and its end for the writes it coordinated): about 250 bytes a write, 100 KB in all.
    // A compacted log holds the 20 values and a record of each decision the node
    // remembers (all 400 here), under the threshold; the next compaction is due at twice
    // that, at the first turn where every write is durable, which between one client's
    // writes comes within a write or two.
    eprintln!("compactions {compactions:?}, compacted to {left:?}, largest {largest:?}");
    for i in 0..NODES {
        assert!(
            compactions[i] >= 2,
            "node {i}'s log was compacted {} times (largest {} bytes)",
            compactions[i],
            largest[i]
        );
        assert!(
            left[i] < COMPACT_BYTES,
            "node {i}'s compacted log holds {} bytes",
            left[i]
        );
        assert!(
            largest[i] < 2 * COMPACT_BYTES,
            "node {i}'s log grew to {} bytes past a threshold of {COMPACT_BYTES}",
            largest[i]
        );
    }
    check_values(&c, &last);
    for i in 0..NODES {
        c.kill_node(i);
    }
    for i in 0..NODES {
        c.start_node(i);
    }
    c.wait_all_up();
    check_values(&c, &last);
    // The recovered nodes take writes on top of the compacted logs.
    for (n, key) in last.keys().enumerate() {
        let answer = c.client(n % NODES).request(&put(key, "after"));
        assert_eq!(answer["message"], "Success", "{key}: {answer}");
    }
}

/// Every node's own copy of every key is its last value (phase 2 reaches a replica
/// after the client's answer, so that is waited for), and a read through any node
/// answers it.
fn check_values(c: &EvCluster, last: &BTreeMap<String, String>) {
    let nodes: Vec<usize> = (0..NODES).collect();
    for (key, value) in last {
        wait_agree(c, &nodes, key, |copy| copy.as_ref() == Some(value));
        for i in 0..NODES {
            let answer = c.client(i).request(&get(key));
            assert_eq!(answer["value"], value.as_str(), "node {i}, {key}: {answer}");
        }
    }
}
