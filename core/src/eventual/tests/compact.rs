//! Compaction of a node's log: recovering from the compacted log rebuilds what
//! recovering from the whole log does, and a node goes on after installing it.

use proptest::prelude::*;

use crate::proto::{Consistency, EventualResponse};
use crate::versions::Stamp;

use super::super::hints::Hint;
use super::super::owed::Owed;
use super::super::{Conflicts, KeyState, Node, NodeId, Repair};
use super::harness::{MemLog, World};

use Consistency::{All, One, Quorum, Two};

const IDS: [u64; 3] = [10, 20, 30];

/// What recovery rebuilds of a node from its log, to compare two recoveries.
#[derive(Clone, Debug, PartialEq)]
struct Rebuilt {
    states: Vec<(String, KeyState)>,
    graves: Vec<String>,
    hints: Vec<Hint>,
    owed: Vec<(u64, Owed)>,
    floor: u64,
    catching_up: bool,
}

/// Recovers node `id` of `w` from `bytes` alone; what it rebuilt and its next request
/// number and last stamp.
fn rebuild(w: &World, id: NodeId, bytes: &[u8]) -> (Rebuilt, u64, Option<Stamp>) {
    let slot = &w.slots[&id];
    let mut config = slot.config.clone();
    config.incarnation = slot.incarnation;
    let log = MemLog::default();
    *log.0.borrow_mut() = bytes.to_vec();
    let (node, report) = Node::recover(config, bytes, log).expect("recovers");
    assert_eq!(report.valid_len as usize, bytes.len(), "the log is whole");
    assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
    let rebuilt = Rebuilt {
        states: node
            .keys()
            .map(|key| (key.to_owned(), node.local_state(key).expect("readable")))
            .collect(),
        graves: node.graves.keys().cloned().collect(),
        hints: node.hints.iter().cloned().collect(),
        owed: node.owed.iter().map(|(&id, o)| (id, o.clone())).collect(),
        floor: node.floor,
        catching_up: node.resync.logged,
    };
    (rebuilt, node.next_req, node.last_stamp)
}

/// Node `id`'s log recovered as compacted and as it would be without compactions: the
/// same node, numbering its requests and stamping its writes no lower. (The compacted
/// log carries the node's own last stamp, which may be above every stamp its log held:
/// a write it stamped for a key of which it is no replica.)
fn assert_same_recovery(w: &World, id: NodeId) -> Rebuilt {
    let slot = &w.slots[&id];
    let compacted = slot.log.0.borrow().clone();
    let (from_compacted, next_compacted, stamp_compacted) = rebuild(w, id, &compacted);
    let (from_full, next_full, stamp_full) = rebuild(w, id, &slot.full_log());
    // A replica that confirmed an owed key is dropped from its debt in memory only: the
    // whole log would ship to it again, the compacted one does not.
    assert_eq!(from_compacted.owed.len(), from_full.owed.len(), "node {id}");
    for ((id_c, owed_c), (id_f, owed_f)) in from_compacted.owed.iter().zip(&from_full.owed) {
        assert_eq!(
            (
                id_c,
                &owed_c.key,
                owed_c.coordinator,
                owed_c.coordinator_req
            ),
            (
                id_f,
                &owed_f.key,
                owed_f.coordinator,
                owed_f.coordinator_req
            )
        );
        assert!(!owed_c.targets.is_empty() && owed_c.targets.is_subset(&owed_f.targets));
    }
    let without_owed = |r: &Rebuilt| Rebuilt {
        owed: Vec::new(),
        ..r.clone()
    };
    assert_eq!(
        without_owed(&from_compacted),
        without_owed(&from_full),
        "node {id}"
    );
    assert!(
        next_compacted >= next_full,
        "node {id} numbers from {next_compacted}, below {next_full}"
    );
    assert!(stamp_compacted >= stamp_full, "node {id} stamps go back");
    from_compacted
}

fn values(answer: Option<&EventualResponse>) -> Vec<String> {
    match answer {
        Some(EventualResponse::Read { versions, .. }) => versions
            .iter()
            .filter_map(|v| v.get("value").and_then(|v| v.as_str()).map(str::to_owned))
            .collect(),
        Some(EventualResponse::NotFound { .. }) => Vec::new(),
        other => panic!("expected versions, got {other:?}"),
    }
}

fn written(w: &World, handle: u64) -> bool {
    matches!(w.answer(handle), Some(EventualResponse::Written { .. }))
}

#[test]
fn a_compacted_log_recovers_the_node_the_whole_log_does_and_the_node_goes_on() {
    let mut w = World::new(&IDS, |c| {
        c.repair = Repair::Hints;
        c.hints.max_age_ms = 10_000;
    });
    for round in 0..3 {
        for i in 0..20 {
            let put = w.put(10, &format!("k{i}"), &format!("v{round}"), All, None);
            assert!(written(&w, put));
        }
    }
    // A key reaped for good (the floor moves), and a tombstone kept.
    for key in ["gone", "tomb"] {
        let handle = w.put(10, key, "x", All, None);
        assert!(written(&w, handle));
        let handle = w.del(10, key, All, None);
        assert!(written(&w, handle));
    }
    w.get(20, "gone", All);
    w.advance(10_000 + 2 * 3000 + 1);
    assert_eq!(w.state(10, "gone"), None);
    assert!(w.node(10).floor > 0, "the reap raised the floor");
    // A replica cut off: hints for it, and (before the write's deadline) a debt of the
    // first replica.
    w.crash(30);
    w.announce(30, false);
    for i in 0..5 {
        let handle = w.put(10, &format!("h{i}"), "hinted", Quorum, None);
        assert!(written(&w, handle));
    }
    w.advance(3000);
    let owed_key = w.key_owned_by(10, 3);
    let handle = w.put(10, &owed_key, "owed", Two, None);
    assert!(written(&w, handle));
    assert!(w.node(10).hints_for(30) >= 5);
    assert!(w.node(10).owed_count() > 0, "a debt is held");

    let before = w.slots[&10].log.0.borrow().len();
    let compacted = w.compact(10);
    assert!(
        compacted.bytes.len() * 2 < before,
        "{} of {before} bytes",
        compacted.bytes.len()
    );
    assert_eq!(w.slots[&10].full_log().len(), before);
    let rebuilt = assert_same_recovery(&w, 10);
    assert_eq!(rebuilt.states.len(), compacted.keys);
    // The tombstone is kept as a deleted state; the reaped key left only its grave (or
    // nothing), no state.
    let tomb = rebuilt.states.iter().find(|(key, _)| key == "tomb");
    assert!(
        tomb.is_some_and(|(_, state)| state.all_deleted()),
        "the tombstone is kept: {tomb:?}"
    );
    assert!(
        rebuilt.states.iter().all(|(key, _)| key != "gone"),
        "the reaped key holds no state"
    );
    assert_eq!(rebuilt.hints.len(), compacted.hints);
    assert_eq!(rebuilt.owed.len(), compacted.owed);
    assert!(rebuilt.floor > 0 && !rebuilt.owed.is_empty() && !rebuilt.hints.is_empty());

    // The node goes on: more writes, reads from the moved states, a restart.
    for i in 0..20 {
        let handle = w.put(10, &format!("k{i}"), "after", Quorum, None);
        assert!(written(&w, handle));
        if i % 2 == 0 {
            let get = w.get(10, &format!("k{}", i + 1), One);
            assert_eq!(values(w.answer(get)), ["v2"]);
        }
    }
    w.advance(3000);
    w.crash(10);
    w.restart(10);
    w.restart(30);
    w.announce(30, true);
    w.announce(10, true);
    w.advance(3 * 3000);
    for i in 0..20 {
        let get = w.get(10, &format!("k{i}"), One);
        assert_eq!(values(w.answer(get)), ["after"], "k{i}");
    }
    for i in 0..5 {
        let get = w.get(30, &format!("h{i}"), One);
        assert_eq!(values(w.answer(get)), ["hinted"], "the hints reached 30");
    }
    let get = w.get(10, &owed_key, All);
    assert_eq!(values(w.answer(get)), ["owed"]);
    assert_eq!(w.node(10).hints_for(30), 0);
    // A second compaction of a compacted log recovers the same node too.
    w.compact(10);
    assert_same_recovery(&w, 10);
}

#[test]
fn a_compaction_covers_writes_not_yet_synced_and_releases_what_waited() {
    let mut w = World::new(&IDS, |_| {});
    let key = w.key_owned_by(10, 3);
    let handle = w.put(10, &key, "first", All, None);
    assert!(written(&w, handle));
    w.slots.get_mut(&10).expect("node").auto_sync = false;
    let put = w.put(10, &key, "second", All, None);
    assert_eq!(w.answer(put), None, "waits for this node's sync");
    assert!(!w.slots[&10].unsynced.is_empty());
    w.compact(10);
    assert!(written(&w, put), "the compacted log made the write durable");
    // Appends go on after the compacted log, and are read back from there.
    let put = w.put(10, "other", "third", All, None);
    w.sync(10);
    w.run();
    assert!(written(&w, put));
    w.crash(10);
    w.restart(10);
    for (key, value) in [(key.as_str(), "second"), ("other", "third")] {
        let get = w.get(10, key, One);
        assert_eq!(values(w.answer(get)), [value]);
        assert_eq!(w.state(10, key), w.state(20, key), "{key}");
    }
}

#[test]
fn a_restarted_node_numbers_requests_past_a_compacted_log() {
    let mut w = World::new(&IDS, |c| c.repair = Repair::Hints);
    let handle = w.put(10, "k", "v", All, None);
    assert!(written(&w, handle));
    let at_compaction = w.node(10).next_req;
    w.compact(10);
    let (_, next, _) = rebuild(&w, 10, &w.slots[&10].log.0.borrow().clone());
    assert!(
        next > at_compaction.saturating_add(1 << 39),
        "requests made after the compaction and never logged are not reused"
    );
}

/// One step of a history a world of three nodes could live through.
#[derive(Clone, Debug)]
enum Step {
    Put {
        node: usize,
        key: u8,
        level: u8,
    },
    Del {
        node: usize,
        key: u8,
    },
    ReadAll {
        node: usize,
        key: u8,
    },
    Down {
        node: usize,
    },
    Up {
        node: usize,
    },
    Advance {
        ms: u64,
    },
    Compact {
        node: usize,
    },
    /// The node's syncs stop (its writes wait, and so do answers promising them) or
    /// resume.
    Stall {
        node: usize,
        stalled: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0u8..6, 0u8..3).prop_map(|(node, key, level)| Step::Put { node, key, level }),
        1 => (0..3usize, 0u8..6).prop_map(|(node, key)| Step::Del { node, key }),
        1 => (0..3usize, 0u8..6).prop_map(|(node, key)| Step::ReadAll { node, key }),
        1 => (0..3usize).prop_map(|node| Step::Down { node }),
        1 => (0..3usize).prop_map(|node| Step::Up { node }),
        1 => (0u64..12_000).prop_map(|ms| Step::Advance { ms }),
        1 => (0..3usize).prop_map(|node| Step::Compact { node }),
        1 => (0..3usize, any::<bool>()).prop_map(|(node, stalled)| Step::Stall { node, stalled }),
    ]
}

fn play(w: &mut World, step: &Step) {
    let up = |w: &World, id: NodeId| w.slots[&id].node.is_some();
    match *step {
        Step::Put { node, key, level } if up(w, IDS[node]) => {
            let level = [One, Quorum, All][usize::from(level)];
            let value = format!("v{}", w.now);
            w.put(IDS[node], &format!("k{key}"), &value, level, None);
        }
        Step::Del { node, key } if up(w, IDS[node]) => {
            w.del(IDS[node], &format!("k{key}"), Quorum, None);
        }
        Step::ReadAll { node, key } if up(w, IDS[node]) => {
            w.get(IDS[node], &format!("k{key}"), All);
        }
        Step::Down { node } if up(w, IDS[node]) => {
            w.crash(IDS[node]);
            w.announce(IDS[node], false);
        }
        Step::Up { node } if !up(w, IDS[node]) => {
            w.restart(IDS[node]);
            w.announce(IDS[node], true);
        }
        Step::Advance { ms } => w.advance(ms),
        Step::Compact { node } if up(w, IDS[node]) => {
            w.compact(IDS[node]);
        }
        Step::Stall { node, stalled } => {
            w.slots.get_mut(&IDS[node]).expect("node").auto_sync = !stalled;
            w.run();
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_log_compacted_anywhere_recovers_as_the_whole_log(
        steps in prop::collection::vec(step(), 1..60),
        compact_at in any::<prop::sample::Index>(),
        lww in any::<bool>(),
    ) {
        let mut w = World::new(&IDS, |c| {
            c.repair = Repair::Hints;
            c.hints.max_age_ms = 8_000;
            if lww {
                c.conflicts = Conflicts::Lww;
            }
        });
        // At least one compaction, at a point of the history drawn apart from the steps,
        // of the first node up from the one drawn.
        let at = compact_at.index(steps.len());
        for (i, step) in steps.iter().enumerate() {
            play(&mut w, step);
            if i == at {
                let up = (0..3).map(|k| IDS[(i + k) % 3]).find(|id| w.slots[id].node.is_some());
                if let Some(id) = up {
                    w.compact(id);
                }
            }
        }
        // A node whose log was never compacted would compare its log with itself.
        let compacted: Vec<NodeId> =
            IDS.into_iter().filter(|id| w.slots[id].replaced.is_some()).collect();
        prop_assume!(!compacted.is_empty(), "every node was down at the forced compaction");
        for id in compacted {
            assert_same_recovery(&w, id);
        }
    }
}
