//! A peer-mode node's log is compacted once it passes `--log-compact-bytes`: it stays
//! bounded however many writes it takes, and nodes killed after compactions recover
//! every committed write from it.

use std::collections::BTreeMap;

use ringkv_e2e::eventual::EvCluster;
use ringkv_e2e::log_sizes::LogSizes;
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
    let mut last = BTreeMap::new();
    let mut sizes = LogSizes::new(NODES);
    for n in 0..400 {
        let key = format!("key{}", n % KEYS);
        let value = format!("value number {n} of the peer log compaction test");
        let answer = c.client(n % NODES).request(&put(&key, &value));
        assert_eq!(answer["message"], "Success", "{key}: {answer}");
        last.insert(key, value);
        sizes.observe(&c);
    }
    // Each node logs every write (a prepare and a decision as a replica, and the commit
    // and its end for the writes it coordinated): about 250 bytes a write, 100 KB in all.
    // A compacted log holds the 20 values and a record of each decision the node
    // remembers (all 400 here), under the threshold; the next compaction is due at the
    // threshold (more than twice that), between two syncs.
    sizes.assert_compacted(COMPACT_BYTES, COMPACT_BYTES);
    check_values(&c, &last);
    c.kill_all_and_restart();
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
