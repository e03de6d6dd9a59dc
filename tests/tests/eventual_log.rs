//! An eventual-mode node's log is compacted once it passes `--log-compact-bytes`: it
//! stays small however many writes it takes, and a node killed after compactions
//! recovers every write from it.

use std::collections::BTreeMap;

use ringkv_e2e::eventual::{ev_get, ev_local, EvCluster};
use ringkv_e2e::log_sizes::LogSizes;

const KEYS: usize = 20;
const COMPACT_BYTES: u64 = 16 * 1024;
const NODES: usize = 3;

#[test]
fn a_compacted_node_log_stays_small_and_recovers_every_write() {
    let compact = COMPACT_BYTES.to_string();
    // No repair: what a restarted node holds can come from its own log only.
    let mut c = EvCluster::start(
        NODES,
        NODES,
        &[
            "--timeout-ms",
            "2000",
            "--repair",
            "none",
            "--log-compact-bytes",
            &compact,
        ],
    );
    let mut last = BTreeMap::new();
    let mut sizes = LogSizes::new(NODES);
    for n in 0..400 {
        let key = format!("key{}", n % KEYS);
        let value = format!("value number {n} of the node log compaction test");
        let answer = c
            .client(n % NODES)
            .request(&ringkv_e2e::eventual::ev_put(&key, &value, "all", None));
        assert_eq!(answer["message"], "Success", "{key}: {answer}");
        last.insert(key, value);
        sizes.observe(&c);
    }
    // Every node logs all 400 writes (N is every node), about 80 KB: far past the
    // threshold. The 20 keys' states take under half of it (checked), so a log is
    // rewritten as soon as it passes the threshold, in the loop turn after the sync that
    // took it there: it never holds more than the threshold and a few writes' records
    // beyond.
    sizes.assert_compacted(COMPACT_BYTES, COMPACT_BYTES / 2);
    check_values(&c, &last);
    c.kill_all_and_restart();
    check_values(&c, &last);
    // The recovered nodes take writes on top of the compacted logs.
    for (n, key) in last.keys().enumerate() {
        let answer = c
            .client(n % NODES)
            .request(&ringkv_e2e::eventual::ev_put(key, "after", "all", None));
        assert_eq!(answer["message"], "Success", "{key}: {answer}");
    }
}

/// Every key holds its last value on every node (a local read: no other node is asked),
/// and a read at `all` through any node answers it alone.
fn check_values(c: &EvCluster, last: &BTreeMap<String, String>) {
    for i in 0..NODES {
        let mut client = c.client(i);
        for (key, value) in last {
            let answer = client.request(&ev_local(key));
            assert_eq!(answer["value"], value.as_str(), "node {i}, {key}: {answer}");
            let answer = client.request(&ev_get(key, "all"));
            assert_eq!(answer["value"], value.as_str(), "node {i}, {key}: {answer}");
        }
    }
}
