//! The node driven through its `Role` interface in a small world of several nodes.

use serde_json::json;

use crate::proto::{
    Consistency, ErrorCode, EventualRequest, EventualResponse, PeerMessage, StateBytes,
};
use crate::role::Role;
use crate::versions::decode_context;

use super::super::{parse_cluster, Conflicts, KeyState, Repair};
use super::harness::World;

use Consistency::{All, One, Quorum, Three, Two};

const IDS: [u64; 3] = [10, 20, 30];

fn values(answer: Option<&EventualResponse>) -> Vec<String> {
    match answer {
        Some(EventualResponse::Read { versions, .. }) => versions
            .iter()
            .map(|v| match v.get("value").and_then(|v| v.as_str()) {
                Some(value) => value.to_owned(),
                None => "<deleted>".to_owned(),
            })
            .collect(),
        other => panic!("expected versions, got {other:?}"),
    }
}

fn context_of(answer: Option<&EventualResponse>) -> String {
    match answer {
        Some(EventualResponse::Read { context, .. })
        | Some(EventualResponse::Written { context, .. }) => context.clone(),
        Some(EventualResponse::NotFound {
            context: Some(context),
        }) => context.clone(),
        other => panic!("expected a context, got {other:?}"),
    }
}

fn local_values(world: &World, id: u64, key: &str) -> Vec<String> {
    match world.state(id, key) {
        None => Vec::new(),
        Some(state) => match KeyState::answer(key, Some(&state)) {
            EventualResponse::NotFound { .. } => vec!["<deleted>".to_owned()],
            answer => values(Some(&answer)),
        },
    }
}

fn is_written(answer: Option<&EventualResponse>) -> bool {
    matches!(answer, Some(EventualResponse::Written { .. }))
}

#[test]
fn a_quorum_write_reaches_every_replica_and_any_node_reads_it() {
    let mut w = World::new(&IDS, |_| {});
    let put = w.put(10, "k", "v1", Quorum, None);
    let Some(EventualResponse::Written { clock, context }) = w.answer(put).cloned() else {
        panic!("write failed: {:?}", w.answer(put));
    };
    assert_eq!(clock, json!({"10": 1}));
    assert_eq!(context, "10:1");
    for id in IDS {
        assert_eq!(local_values(&w, id, "k"), ["v1"], "replica {id}");
        let get = w.get(id, "k", All);
        assert_eq!(values(w.answer(get)), ["v1"]);
        let local = w.request(id, EventualRequest::Local { key: "k".into() });
        assert!(
            matches!(w.answer(local), Some(EventualResponse::Read { value: Some(v), .. }) if v == "v1")
        );
    }
    let missing = w.get(20, "nothing", One);
    assert_eq!(
        w.answer(missing),
        Some(&EventualResponse::NotFound { context: None })
    );
}

#[test]
fn a_node_that_is_not_a_replica_forwards_to_the_first_replica_up() {
    // IDs spread over the ring, so that keys land on every node.
    let step = u64::MAX / 5;
    let [n1, n2, n3, n4, n5] = [step, 2 * step, 3 * step, 4 * step, 5 * step];
    let mut w = World::new(&[n1, n2, n3, n4, n5], |c| c.replication = 2);
    let key = w.key_owned_by(n3, 2);
    let replicas = w.node(n1).replicas_of(&key);
    assert_eq!(replicas, [n3, n4]);
    let put = w.put(n1, &key, "v", Two, None);
    let Some(EventualResponse::Written { clock, .. }) = w.answer(put).cloned() else {
        panic!("write failed: {:?}", w.answer(put));
    };
    assert_eq!(
        clock,
        json!({n3.to_string(): 1}),
        "the first replica names the write"
    );
    assert_eq!(
        w.state(n1, &key),
        None,
        "the coordinator holds nothing of it"
    );
    let local = w.request(n1, EventualRequest::Local { key: key.clone() });
    assert_eq!(
        w.answer(local),
        Some(&EventualResponse::error(ErrorCode::Unavailable))
    );
    // With the owner known down, the next replica up applies it first.
    w.crash(n3);
    w.announce(n3, false);
    let put = w.put(n1, &key, "v2", One, None);
    let Some(EventualResponse::Written { clock, .. }) = w.answer(put).cloned() else {
        panic!("write failed: {:?}", w.answer(put));
    };
    assert_eq!(
        clock,
        json!({n3.to_string(): 1, n4.to_string(): 1}),
        "a blind write at the next replica superseded what it held"
    );
    assert_eq!(local_values(&w, n4, &key), ["v2"]);
}

#[test]
fn blind_writes_through_one_node_replace_each_other() {
    let mut w = World::new(&IDS, |_| {});
    for value in ["a", "b", "c"] {
        let put = w.put(20, "k", value, Quorum, None);
        assert!(is_written(w.answer(put)));
    }
    let get = w.get(10, "k", All);
    assert_eq!(values(w.answer(get)), ["c"]);
}

#[test]
fn concurrent_blind_writes_through_different_nodes_become_siblings_and_a_context_resolves_them() {
    let mut w = World::new(&IDS, |_| {});
    // Nodes 10 and 20 cannot see each other's writes until the partition heals.
    w.partition(10, 20, true);
    w.partition(10, 30, true);
    let a = w.put(10, "k", "from10", One, None);
    let b = w.put(20, "k", "from20", One, None);
    assert!(is_written(w.answer(a)) && is_written(w.answer(b)));
    w.partition(10, 20, false);
    w.partition(10, 30, false);
    let get = w.get(30, "k", All);
    let mut seen = values(w.answer(get));
    seen.sort();
    assert_eq!(seen, ["from10", "from20"]);
    assert_eq!(
        match w.answer(get) {
            Some(EventualResponse::Read { value, .. }) => value.clone(),
            _ => None,
        },
        None,
        "no single value for siblings"
    );
    let context = context_of(w.answer(get));
    let put = w.put(30, "k", "merged", Quorum, Some(&context));
    assert!(is_written(w.answer(put)));
    let get = w.get(10, "k", All);
    assert_eq!(values(w.answer(get)), ["merged"]);
}

#[test]
fn a_write_with_a_context_keeps_the_versions_its_reader_did_not_see() {
    let mut w = World::new(&IDS, |_| {});
    let first = w.put(10, "k", "one", All, None);
    let read_context = context_of(w.answer(first));
    // Another client writes without having seen "one" (an empty context).
    let other = w.put(20, "k", "two", All, Some(""));
    assert!(is_written(w.answer(other)));
    // The first client's next write supersedes only what it saw.
    let put = w.put(30, "k", "three", All, Some(&read_context));
    assert!(is_written(w.answer(put)));
    let get = w.get(10, "k", All);
    let mut seen = values(w.answer(get));
    seen.sort();
    assert_eq!(seen, ["three", "two"]);
    let bad = w.put(10, "k", "x", Quorum, Some("not a context"));
    assert!(
        matches!(w.answer(bad), Some(EventualResponse::Error(e)) if e.code == ErrorCode::Malformed)
    );
    // Malformed comes first, even when the write could not be tried.
    w.crash(20);
    w.crash(30);
    w.announce(20, false);
    w.announce(30, false);
    let bad = w.put(10, "k", "x", All, Some("1:0"));
    assert!(
        matches!(w.answer(bad), Some(EventualResponse::Error(e)) if e.code == ErrorCode::Malformed)
    );
}

#[test]
fn unavailable_is_not_tried_and_timeout_was_tried() {
    let mut w = World::new(&IDS, |_| {});
    // A level above N can never be met.
    let mut one = World::new(&[7], |_| {});
    let put = one.put(7, "k", "v", Two, None);
    assert_eq!(
        one.answer(put),
        Some(&EventualResponse::error(ErrorCode::Unavailable))
    );
    let get = one.get(7, "k", Three);
    assert_eq!(
        one.answer(get),
        Some(&EventualResponse::error(ErrorCode::Unavailable))
    );
    // Two replicas known down: a quorum write is not tried, nothing is written anywhere.
    w.crash(20);
    w.crash(30);
    w.announce(20, false);
    w.announce(30, false);
    let log_before = w.node(10).log_len();
    let put = w.put(10, "k", "v", Quorum, None);
    assert_eq!(
        w.answer(put),
        Some(&EventualResponse::error(ErrorCode::Unavailable))
    );
    assert_eq!(w.node(10).log_len(), log_before, "nothing written");
    assert_eq!(w.state(10, "k"), None);
    // Believed up but silent: tried, and timed out; the coordinator's copy stays.
    w.announce(20, true);
    w.announce(30, true);
    let put = w.put(10, "k", "v", Quorum, None);
    assert_eq!(w.answer(put), None, "waits for the replicas");
    w.advance(2999);
    assert_eq!(w.answer(put), None);
    w.advance(1);
    assert_eq!(w.answer(put), Some(&EventualResponse::Timeout));
    assert_eq!(local_values(&w, 10, "k"), ["v"]);
    let get = w.get(10, "k", Two);
    w.advance(3000);
    assert_eq!(w.answer(get), Some(&EventualResponse::Timeout));
    let get = w.get(10, "k", One);
    assert_eq!(
        values(w.answer(get)),
        ["v"],
        "R = 1 is met by the coordinator alone"
    );
}

#[test]
fn a_write_is_acknowledged_only_once_durable_at_w_replicas() {
    let mut w = World::new(&IDS, |_| {});
    for id in IDS {
        w.slots.get_mut(&id).expect("slot").auto_sync = false;
    }
    // The first replica's own copy.
    let put = w.put(10, "j", "v", One, None);
    assert_eq!(w.answer(put), None, "not synced at the first replica yet");
    w.sync(10);
    w.run();
    assert!(is_written(w.answer(put)), "one durable copy");
    // The copies shipped to the other replicas.
    let put = w.put(10, "k", "v", Two, None);
    assert_eq!(w.answer(put), None, "nothing is synced yet");
    w.sync(10);
    w.run();
    assert_eq!(w.answer(put), None, "one durable copy is not two");
    w.sync(20);
    w.run();
    assert!(is_written(w.answer(put)), "two durable copies");
}

#[test]
fn a_read_repairs_the_replicas_it_used_before_answering_and_the_rest_after() {
    let mut w = World::new(&IDS, |_| {});
    w.partition(10, 30, true);
    let put = w.put(10, "k", "v", Two, None);
    assert!(is_written(w.answer(put)));
    assert_eq!(w.state(30, "k"), None);
    w.partition(10, 30, false);
    // 30 answers first and holds nothing; the answer waits for its repair to be durable.
    w.slots.get_mut(&30).expect("slot").auto_sync = false;
    let get = w.get(30, "k", Two);
    assert_eq!(
        w.answer(get),
        None,
        "the stale replica it used is repaired first"
    );
    w.sync(30);
    w.run();
    assert_eq!(values(w.answer(get)), ["v"]);
    assert_eq!(local_values(&w, 30, "k"), ["v"]);

    // The replica a read did not wait for is repaired afterwards, within the timeout.
    let mut w = World::new(&IDS, |_| {});
    w.partition(10, 30, true);
    let put = w.put(10, "k", "v", Two, None);
    assert!(is_written(w.answer(put)));
    w.partition(10, 30, false);
    let get = w.get(10, "k", One);
    assert_eq!(values(w.answer(get)), ["v"]);
    assert_eq!(
        local_values(&w, 30, "k"),
        ["v"],
        "repaired after the answer"
    );
}

#[test]
fn without_read_repair_a_read_changes_no_replica() {
    let mut w = World::new(&IDS, |c| c.repair = Repair::Hints);
    w.partition(10, 30, true);
    let put = w.put(10, "k", "v", Two, None);
    assert!(is_written(w.answer(put)));
    w.partition(10, 30, false);
    let get = w.get(30, "k", All);
    assert_eq!(values(w.answer(get)), ["v"]);
    assert_eq!(w.state(30, "k"), None);
}

#[test]
fn a_missed_replica_gets_a_durable_hint_that_is_replayed_when_it_is_back() {
    let mut w = World::new(&IDS, |c| c.repair = Repair::Hints);
    w.crash(30);
    let put = w.put(10, "k", "v", Quorum, None);
    assert!(
        is_written(w.answer(put)),
        "hints never count, but two replicas do"
    );
    w.advance(3000);
    assert_eq!(w.node(10).hints_for(30), 1);
    let status = w.request(10, EventualRequest::Status);
    let Some(EventualResponse::Status {
        nodes,
        conflicts,
        repair,
        replication,
        node,
        hints_dropped,
        catching_up: _,
    }) = w.answer(status).cloned()
    else {
        panic!("status");
    };
    assert_eq!(
        (node, replication, conflicts.as_str(), repair.as_str()),
        (10, 3, "siblings", "hints")
    );
    let hints: Vec<(u64, u64)> = nodes.iter().map(|n| (n.id, n.hints)).collect();
    assert_eq!(hints, [(10, 0), (20, 0), (30, 1)]);
    assert_eq!(hints_dropped, 0);
    // The hint survives the coordinator's restart.
    w.crash(10);
    w.restart(10);
    assert_eq!(w.node(10).hints_for(30), 1);
    w.restart(30);
    assert_eq!(w.state(30, "k"), None);
    w.announce(30, true);
    w.advance(1);
    assert_eq!(local_values(&w, 30, "k"), ["v"], "handed over");
    assert_eq!(w.node(10).hints_for(30), 0, "deleted once confirmed");
    assert_eq!(w.node(10).stats().hints_delivered, 1);
    // Its deletion is durable too.
    w.crash(10);
    w.restart(10);
    assert_eq!(w.node(10).hints_for(30), 0);
}

#[test]
fn hints_are_bounded_in_count_and_age_and_dropped_ones_are_counted() {
    let mut w = World::new(&IDS, |c| {
        c.hints.max_count = 1;
        c.hints.max_age_ms = 10_000;
    });
    w.crash(30);
    for key in ["a", "b"] {
        let put = w.put(10, key, "v", Quorum, None);
        assert!(is_written(w.answer(put)));
    }
    w.advance(3000);
    assert_eq!(w.node(10).hints_for(30), 1);
    assert_eq!(
        w.node(10).hints_dropped(),
        1,
        "the second is over the count bound"
    );
    let status = w.request(10, EventualRequest::Status);
    assert!(
        matches!(
            w.answer(status),
            Some(EventualResponse::Status {
                hints_dropped: 1,
                ..
            })
        ),
        "statusreq shows the dropped hints"
    );
    w.advance(60_000);
    assert_eq!(w.node(10).hints_for(30), 0, "aged out");
    assert_eq!(w.node(10).hints_dropped(), 2);
    // With read repair on, the dropped states still spread.
    w.restart(30);
    let get = w.get(20, "b", All);
    assert_eq!(values(w.answer(get)), ["v"]);
    assert_eq!(local_values(&w, 30, "b"), ["v"]);
}

#[test]
fn a_deletion_is_a_tombstone_that_repair_never_undoes() {
    let mut w = World::new(&IDS, |_| {});
    let put = w.put(10, "k", "v", All, None);
    assert!(is_written(w.answer(put)));
    w.partition(10, 30, true);
    w.partition(20, 30, true);
    let del = w.del(10, "k", Quorum, None);
    assert!(is_written(w.answer(del)));
    assert_eq!(local_values(&w, 30, "k"), ["v"], "30 missed the delete");
    w.partition(10, 30, false);
    w.partition(20, 30, false);
    // 30's old value meets the tombstone in a read: the tombstone wins everywhere.
    let get = w.get(30, "k", All);
    let Some(EventualResponse::NotFound {
        context: Some(context),
    }) = w.answer(get).cloned()
    else {
        panic!("expected not_found with a context: {:?}", w.answer(get));
    };
    assert!(decode_context(&context).is_ok());
    for id in IDS {
        assert_eq!(
            local_values(&w, id, "k"),
            ["<deleted>"],
            "replica {id} keeps the tombstone"
        );
    }
    // A later write with that context supersedes the deletion.
    let put = w.put(20, "k", "again", Quorum, Some(&context));
    assert!(is_written(w.answer(put)));
    let get = w.get(30, "k", All);
    assert_eq!(values(w.answer(get)), ["again"]);
}

#[test]
fn a_deletion_concurrent_with_a_value_is_shown_beside_it() {
    let mut w = World::new(&IDS, |_| {});
    let put = w.put(10, "k", "v", All, None);
    let context = context_of(w.answer(put));
    w.partition(10, 20, true);
    w.partition(10, 30, true);
    let del = w.del(10, "k", One, Some(&context));
    let put = w.put(20, "k", "w", One, Some(&context));
    assert!(is_written(w.answer(del)) && is_written(w.answer(put)));
    w.partition(10, 20, false);
    w.partition(10, 30, false);
    let get = w.get(30, "k", All);
    let mut seen = values(w.answer(get));
    seen.sort();
    assert_eq!(seen, ["<deleted>", "w"]);
}

#[test]
fn client_writes_beyond_max_siblings_are_overloaded_but_repair_is_not() {
    let mut w = World::new(&IDS, |c| c.max_siblings = 2);
    w.partition(10, 30, true);
    w.partition(20, 30, true);
    for value in ["a", "b"] {
        let put = w.put(10, "k", value, Two, Some(""));
        assert!(is_written(w.answer(put)));
    }
    let log_before = w.node(10).log_len();
    let put = w.put(10, "k", "c", Two, Some(""));
    assert!(
        matches!(w.answer(put), Some(EventualResponse::Error(e)) if e.code == ErrorCode::Overloaded)
    );
    assert_eq!(w.node(10).log_len(), log_before, "nothing changed");
    // A third sibling made where the others are not yet still arrives by repair.
    let put = w.put(30, "k", "elsewhere", One, Some(""));
    assert!(is_written(w.answer(put)));
    w.partition(10, 30, false);
    w.partition(20, 30, false);
    let get = w.get(10, "k", All);
    assert_eq!(values(w.answer(get)).len(), 3, "merges are never refused");
    // A write that resolves them is fine.
    let context = context_of(w.answer(get));
    let put = w.put(10, "k", "one", All, Some(&context));
    assert!(is_written(w.answer(put)));
}

#[test]
fn last_write_wins_keeps_the_highest_stamp() {
    let mut w = World::new(&IDS, |c| c.conflicts = Conflicts::Lww);
    w.advance(100);
    w.partition(10, 20, true);
    w.partition(10, 30, true);
    let early = w.put(10, "k", "early", One, None);
    w.advance(5);
    let late = w.put(20, "k", "late", One, Some("anything goes"));
    let Some(EventualResponse::Written { clock, context }) = w.answer(late).cloned() else {
        panic!("lww write failed: {:?}", w.answer(late));
    };
    assert_eq!(clock, json!({"ts": 105, "node": 20}));
    assert_eq!(context, "");
    assert!(is_written(w.answer(early)));
    w.partition(10, 20, false);
    w.partition(10, 30, false);
    let get = w.get(10, "k", All);
    assert_eq!(
        values(w.answer(get)),
        ["late"],
        "the concurrent earlier write is lost"
    );
    for id in IDS {
        assert_eq!(local_values(&w, id, "k"), ["late"]);
    }
    let del = w.del(30, "k", All, None);
    assert!(is_written(w.answer(del)));
    let get = w.get(10, "k", All);
    assert_eq!(
        w.answer(get),
        Some(&EventualResponse::NotFound { context: None })
    );
}

#[test]
fn a_restarted_node_holds_every_write_it_confirmed() {
    let mut w = World::new(&IDS, |_| {});
    let put = w.put(10, "k", "v", All, None);
    assert!(is_written(w.answer(put)));
    let put = w.put(20, "j", "w", All, None);
    assert!(is_written(w.answer(put)));
    for id in IDS {
        w.crash(id);
    }
    for id in IDS {
        w.restart(id);
        assert_eq!(local_values(&w, id, "k"), ["v"]);
        assert_eq!(local_values(&w, id, "j"), ["w"]);
    }
    // Writes go on where they left off: the next blind write supersedes the old one.
    let put = w.put(10, "k", "v2", All, None);
    assert!(is_written(w.answer(put)));
    let get = w.get(30, "k", All);
    assert_eq!(values(w.answer(get)), ["v2"]);
}

#[test]
fn a_node_that_lost_its_disk_takes_a_new_incarnation_and_loses_no_write() {
    let mut w = World::new(&IDS, |_| {});
    let put = w.put(10, "k", "old", All, None);
    assert!(is_written(w.answer(put)));
    w.crash(10);
    w.wipe_and_restart(10, 7);
    // Node 10 holds nothing; a blind write through it supersedes nothing it holds.
    let put = w.put(10, "k", "new", One, None);
    let Some(EventualResponse::Written { clock, .. }) = w.answer(put).cloned() else {
        panic!("write failed");
    };
    assert_eq!(
        clock,
        json!({"10.7": 1}),
        "a new actor, so no counter is reused"
    );
    let get = w.get(20, "k", All);
    let mut seen = values(w.answer(get));
    seen.sort();
    assert_eq!(seen, ["new", "old"], "neither write is lost");
    assert_eq!(w.node(20).stats().reused_dots, 0);
}

#[test]
fn reusing_the_old_incarnation_after_disk_loss_is_detected() {
    // What incarnations prevent: the same actor hands out the same dot twice.
    let mut w = World::new(&IDS, |_| {});
    let put = w.put(10, "k", "old", All, None);
    assert!(is_written(w.answer(put)));
    w.crash(10);
    w.wipe_and_restart(10, 0);
    let put = w.put(10, "k", "new", One, None);
    assert!(is_written(w.answer(put)));
    let get = w.get(20, "k", All);
    assert_eq!(
        values(w.answer(get)).len(),
        1,
        "one of the two writes was lost"
    );
    assert!(
        w.node(20).stats().reused_dots > 0,
        "and the merge counted it"
    );
}

#[test]
fn fault_sites_take_only_legal_paths() {
    use crate::buggify::BuggifyConfig;
    for seed in 0..20 {
        let mut w = World::new(&IDS, |c| {
            c.buggify = Some(BuggifyConfig {
                seed: seed * 7 + c.id,
                until_ms: 1_000_000,
            })
        });
        let mut acknowledged = Vec::new();
        for i in 0..20 {
            let value = format!("v{i}");
            let put = w.put(IDS[i % 3], "k", &value, Quorum, None);
            match w.answer(put) {
                Some(EventualResponse::Written { .. }) => acknowledged.push(value),
                Some(EventualResponse::Error(e)) => assert_eq!(e.code, ErrorCode::Overloaded),
                other => panic!("seed {seed}: {other:?}"),
            }
            w.advance(10);
        }
        w.advance(10_000);
        let get = w.get(10, "k", All);
        let last = acknowledged.last().cloned();
        assert_eq!(values(w.answer(get)).last().cloned(), last, "seed {seed}");
    }
}

#[test]
fn the_cluster_file_is_read_strictly() {
    let ok = parse_cluster(
        "# nodes\n\n1 a:1\n2 b:2 # the second\n18446744073709551615 [::1]:3\n",
        2,
    )
    .expect("valid");
    assert_eq!(
        ok.nodes.keys().copied().collect::<Vec<_>>(),
        [1, 2, u64::MAX]
    );
    let err = |text: &str, own: u64| parse_cluster(text, own).expect_err(text);
    assert_eq!(err("1 a:1\nx a:2\n", 1).line, 2);
    assert_eq!(err("1 a:1\n1 b:2\n", 1).line, 2);
    assert!(err("1 a:1\n1 b:2\n", 1).message.contains("repeats line 1"));
    assert_eq!(err("1 a:1\n\n2 a:1\n", 1).line, 3);
    assert_eq!(err("1 a:1 extra\n", 1).line, 1);
    assert_eq!(err("1 nohost\n", 1).line, 1);
    assert_eq!(err("1 a:99999\n", 1).line, 1);
    assert_eq!(err("1 a:1\n", 2).line, 0);
    assert_eq!(err("# nothing\n", 1).line, 0);
    assert_eq!(err("-1 a:1\n", 1).line, 1);
    assert_eq!(Conflicts::parse("lww"), Some(Conflicts::Lww));
    assert_eq!(Conflicts::parse("LWW"), None);
    assert_eq!(Repair::parse("none"), Some(Repair::None));
    assert_eq!(Repair::parse("all"), None);
}

#[test]
fn requests_in_flight_are_bounded() {
    let mut w = World::new(&IDS, |c| c.max_pending = 1);
    w.crash(20);
    w.crash(30);
    let first = w.put(10, "k", "v", Two, None);
    assert_eq!(w.answer(first), None);
    let second = w.get(10, "k", One);
    assert_eq!(
        w.answer(second),
        Some(&EventualResponse::error(ErrorCode::Overloaded))
    );
    w.advance(3000);
    assert_eq!(w.answer(first), Some(&EventualResponse::Timeout));
}

#[test]
fn tombstones_held_by_every_replica_are_reaped_to_graves_then_removed() {
    let mut w = World::new(&IDS, |c| c.hints.max_age_ms = 10_000);
    let put = w.put(10, "k", "v", All, None);
    assert!(is_written(w.answer(put)));
    let old = w.state(20, "k").expect("held");
    let del = w.del(10, "k", Quorum, None);
    assert!(is_written(w.answer(del)));
    // A read that hears every replica holding the same deletions reaps them.
    let get = w.get(20, "k", All);
    let Some(EventualResponse::NotFound {
        context: Some(context),
    }) = w.answer(get).cloned()
    else {
        panic!("expected not_found with a context: {:?}", w.answer(get));
    };
    for id in IDS {
        let Some(KeyState::Siblings(grave)) = w.state(id, "k") else {
            panic!("replica {id} keeps a grave");
        };
        assert!(grave.is_empty(), "replica {id} holds no version");
    }
    // A state delayed in the network cannot bring the value back while graves are kept.
    let stale = PeerMessage::Store {
        req: 1,
        key: "k".into(),
        state: StateBytes(old.to_bytes()),
    };
    w.inject(10, 30, stale.clone());
    assert_eq!(local_values(&w, 30, "k"), ["<deleted>"]);
    let get = w.get(30, "k", All);
    assert_eq!(
        w.answer(get),
        Some(&EventualResponse::NotFound {
            context: Some(context.clone())
        })
    );
    // After the grave time the key is gone for good, everywhere, also after a restart.
    w.advance(10_000 + 2 * 3000 + 1);
    for id in IDS {
        assert_eq!(w.state(id, "k"), None, "replica {id} removed it");
    }
    w.crash(20);
    w.restart(20);
    assert_eq!(w.state(20, "k"), None);
    // A new write is numbered above every counter used for the key before.
    let put = w.put(10, "k", "new", All, None);
    let Some(EventualResponse::Written { clock, .. }) = w.answer(put).cloned() else {
        panic!("write failed");
    };
    assert_eq!(
        clock,
        json!({"10": 3}),
        "above the reaped dots 10:1 and 10:2"
    );
}

#[test]
fn a_grave_written_again_moves_the_grave_sweep_to_the_next_grave() {
    // Found by the simulator (eventual seeds 14, 26, 37, 47, 53, 72 of 100): the sweep
    // stayed armed for a grave that a new write had replaced.
    let mut w = World::new(&IDS, |c| c.hints.max_age_ms = 10_000);
    for key in ["a", "b"] {
        let put = w.put(10, key, "v", All, None);
        assert!(is_written(w.answer(put)));
        let del = w.del(10, key, All, None);
        assert!(is_written(w.answer(del)));
        let get = w.get(20, key, All);
        assert!(w.answer(get).is_some());
        w.advance(100);
    }
    // "a" holds the earliest grave; writing it again leaves "b" the earliest (the world
    // checks every node's invariants after every input).
    let put = w.put(10, "a", "again", All, None);
    assert!(is_written(w.answer(put)));
    w.advance(10_000 + 2 * 3000 + 1);
    assert_eq!(
        w.state(20, "b"),
        None,
        "the remaining grave is still removed"
    );
}

#[test]
fn tombstones_are_not_reaped_while_a_replica_lacks_them_or_a_hint_is_owed() {
    let mut w = World::new(&IDS, |c| c.hints.max_age_ms = 10_000);
    let put = w.put(10, "k", "v", All, None);
    assert!(is_written(w.answer(put)));
    w.crash(30);
    w.announce(30, false);
    let del = w.del(10, "k", Quorum, None);
    assert!(is_written(w.answer(del)));
    w.advance(3000);
    assert_eq!(w.node(10).hints_for(30), 1, "the deletion is owed to 30");
    let get = w.get(20, "k", Two);
    assert!(matches!(
        w.answer(get),
        Some(EventualResponse::NotFound { .. })
    ));
    w.advance(3000);
    for id in [10, 20] {
        assert_eq!(local_values(&w, id, "k"), ["<deleted>"]);
        let Some(KeyState::Siblings(c)) = w.state(id, "k") else {
            panic!("held")
        };
        assert!(
            !c.is_empty(),
            "replica {id} keeps its tombstone: 30 never answered"
        );
    }
    // 30 comes back with its old value; the hint and a full read bring the deletion.
    w.restart(30);
    assert_eq!(local_values(&w, 30, "k"), ["v"]);
    w.announce(30, true);
    w.advance(1);
    assert_eq!(
        local_values(&w, 30, "k"),
        ["<deleted>"],
        "the hint carried the deletion"
    );
    let get = w.get(30, "k", All);
    assert!(matches!(
        w.answer(get),
        Some(EventualResponse::NotFound { .. })
    ));
    w.advance(20_000);
    for id in IDS {
        assert_eq!(
            w.state(id, "k"),
            None,
            "replica {id} reaped it once all held it"
        );
    }
}

#[test]
fn a_replica_shows_its_state_only_once_durable() {
    let mut w = World::new(&IDS, |_| {});
    w.slots.get_mut(&20).expect("slot").auto_sync = false;
    w.partition(10, 30, true);
    w.partition(20, 30, true);
    let put = w.put(10, "k", "v", One, None);
    assert!(is_written(w.answer(put)));
    assert_eq!(
        local_values(&w, 20, "k"),
        ["v"],
        "20 holds it, not yet durably"
    );
    w.partition(20, 30, false);
    // 30 reads from itself and 20 (10 is cut off): 20 may show the write only once a
    // crash cannot take it back.
    let get = w.get(30, "k", Two);
    assert_eq!(w.answer(get), None);
    w.sync(20);
    w.run();
    assert_eq!(values(w.answer(get)), ["v"]);
}

#[test]
fn a_replica_shows_a_key_once_its_own_writes_are_durable_whatever_follows() {
    let mut w = World::new(&IDS, |_| {});
    w.slots.get_mut(&20).expect("slot").auto_sync = false;
    w.partition(10, 30, true);
    w.partition(20, 30, true);
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("key{i}"))
        .filter(|key| w.node(10).replicas_of(key).first() == Some(&10))
        .take(2)
        .collect();
    let [first, second] = [&keys[0], &keys[1]];
    for (key, value) in [(first, "v1"), (second, "v2")] {
        let put = w.put(10, key, value, One, None);
        assert!(is_written(w.answer(put)));
    }
    // The second key's state is 20's last write; everything before it, the first key's
    // state among it, becomes durable.
    assert!(
        w.slots[&20].unsynced.len() >= 2,
        "20 holds both, not yet durably"
    );
    w.partition(20, 30, false);
    while w.slots[&20].unsynced.len() > 1 {
        w.sync_first(20);
    }
    w.run();
    let get_first = w.get(30, first, Two);
    assert_eq!(values(w.answer(get_first)), ["v1"]);
    let get_second = w.get(30, second, Two);
    assert_eq!(w.answer(get_second), None, "shown before it is durable");
    w.sync(20);
    w.run();
    assert_eq!(values(w.answer(get_second)), ["v2"]);
}

#[test]
fn a_torn_log_tail_is_cut_and_the_rest_recovered() {
    let mut w = World::new(&IDS, |_| {});
    let put = w.put(10, "k", "v", All, None);
    assert!(is_written(w.answer(put)));
    let slot = w.slots.get_mut(&20).expect("slot");
    let good = slot.log.0.borrow().len();
    let mut torn = slot.log.0.borrow().clone();
    torn.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    let config = slot.config.clone();
    let (node, report) =
        super::super::Node::recover(config, &torn, slot.log.clone()).expect("recovers");
    assert_eq!(report.valid_len as usize, good, "the torn frame is cut");
    assert_eq!((report.keys, report.hints, report.bad_record), (1, 0, None));
    assert!(matches!(node.local_state("k"), Some(KeyState::Siblings(c)) if c.len() == 1));
}

#[test]
fn a_restarted_lww_node_stamps_above_its_own_earlier_writes() {
    let mut w = World::new(&IDS, |c| c.conflicts = Conflicts::Lww);
    w.advance(100);
    let put = w.put(10, "k", "b", All, None);
    assert!(is_written(w.answer(put)));
    w.crash(10);
    w.restart(10);
    // The same millisecond: the stamp must still be above the one before the restart.
    let put = w.put(10, "k", "a", All, None);
    let Some(EventualResponse::Written { clock, .. }) = w.answer(put).cloned() else {
        panic!("lww write failed");
    };
    assert_eq!(clock, json!({"ts": 101, "node": 10}));
    let get = w.get(20, "k", All);
    assert_eq!(values(w.answer(get)), ["a"]);
}

#[test]
fn a_write_whose_coordinator_crashed_still_reaches_every_replica_without_a_read() {
    let step = u64::MAX / 5;
    let ids: Vec<u64> = (1..=5).map(|i| i * step).collect();
    let mut w = World::new(&ids, |c| c.replication = 2);
    let (n1, n3, n4) = (ids[0], ids[2], ids[3]);
    let key = w.key_owned_by(n3, 2);
    // Settled: a write every replica confirmed leaves nothing owed.
    let put = w.put(n1, &key, "v0", Two, None);
    assert!(is_written(w.answer(put)));
    assert_eq!(w.node(n3).owed_count(), 0, "settled by the coordinator");
    // The coordinator's copy to the second replica is lost, and it crashes before its
    // deadline, so it never makes a hint.
    w.partition(n1, n4, true);
    let put = w.put(n1, &key, "v1", One, None);
    assert!(is_written(w.answer(put)));
    w.crash(n1);
    w.partition(n1, n4, false);
    assert_eq!(local_values(&w, n4, &key), ["v0"]);
    assert_eq!(w.node(n3).owed_count(), 1);
    // The first replica's record survives its own restart too.
    w.crash(n3);
    w.restart(n3);
    w.advance(2 * 3000);
    assert_eq!(
        local_values(&w, n4, &key),
        ["v1"],
        "shipped by the first replica"
    );
    assert_eq!(w.node(n3).owed_count(), 0, "settled once confirmed");
}

#[test]
fn a_node_that_lost_its_disk_gets_its_keys_back_without_a_read() {
    let mut w = World::new(&IDS, |c| c.hints.replay_batch = 2);
    let keys: Vec<String> = (0..7).map(|i| format!("key{i}")).collect();
    for key in &keys {
        let put = w.put(10, key, "v", All, None);
        assert!(is_written(w.answer(put)));
    }
    w.crash(30);
    w.wipe_and_restart(30, 1);
    assert_eq!(w.node(30).keys().count(), 0);
    assert!(w.node(30).catching_up());
    assert_eq!(
        status_catching_up(&mut w, 30),
        Some(true),
        "statusreq says so"
    );
    // Streamed two keys a round from each of the others.
    w.advance(1000);
    for key in &keys {
        assert_eq!(local_values(&w, 30, key), ["v"], "{key}");
    }
    w.advance(10_000);
    assert!(!w.node(30).catching_up());
    assert_eq!(status_catching_up(&mut w, 30), Some(false));
    assert_eq!(
        w.node(30).poll_timeout(),
        None,
        "caught up: asks nobody any more"
    );
}

/// What node `id`'s `statusreq` answers for `catching_up`.
fn status_catching_up(w: &mut World, id: u64) -> Option<bool> {
    let status = w.request(id, EventualRequest::Status);
    match w.answer(status) {
        Some(EventualResponse::Status { catching_up, .. }) => Some(*catching_up),
        _ => None,
    }
}

#[test]
fn settings_that_cannot_work_are_refused() {
    use super::super::{Node, NodeConfig};
    use super::harness::MemLog;
    let cluster = parse_cluster("1 a:1\n2 b:2\n", 1).expect("cluster");
    let config = NodeConfig::new(1, cluster.clone(), 0, 0);
    assert_eq!(
        config.replication, 2,
        "the default 3 is capped at the node count"
    );
    assert!(Node::new(config.clone(), MemLog::default()).is_ok());
    let refused = |tweak: &dyn Fn(&mut NodeConfig)| {
        let mut c = config.clone();
        tweak(&mut c);
        Node::new(c, MemLog::default()).is_err()
    };
    assert!(refused(&|c| c.replication = 0));
    assert!(refused(&|c| c.replication = 3));
    assert!(refused(&|c| c.id = 9));
    assert!(refused(&|c| c.timeout_ms = 0));
    assert!(refused(&|c| c.max_siblings = 0));
    assert!(refused(&|c| c.hints.replay_batch = 0));
    assert!(refused(&|c| c.max_pending = 0));
}

#[test]
fn a_duplicated_ev_write_is_applied_once() {
    let mut w = World::new(&IDS, |_| {});
    let key = "k".to_owned();
    let first = w.node(10).replicas_of(&key)[0];
    let coordinator = IDS.into_iter().find(|&id| id != first).unwrap();
    let write = PeerMessage::Write {
        req: 77,
        key: key.clone(),
        op: crate::proto::WriteOp::Put("v".into()),
        context: Some(String::new()),
    };
    w.inject(coordinator, first, write.clone());
    // The network delivers the same message again: a second version of the same write
    // would be a sibling no client wrote concurrently.
    w.inject(coordinator, first, write);
    assert_eq!(local_values(&w, first, &key), ["v"]);
    let Some(KeyState::Siblings(container)) = w.state(first, &key) else {
        panic!("the first replica holds the key");
    };
    assert_eq!(container.len(), 1, "{container:?}");
    // Another request of the same coordinator is a new write.
    let again = PeerMessage::Write {
        req: 78,
        key: key.clone(),
        op: crate::proto::WriteOp::Put("w".into()),
        context: None,
    };
    w.inject(coordinator, first, again);
    assert_eq!(local_values(&w, first, &key), ["w"]);
}

#[test]
fn the_first_replica_keeps_its_debt_until_the_coordinators_hints_are_durable() {
    let ids = [10, 20, 30, 40];
    let mut w = World::new(&ids, |c| {
        c.repair = Repair::Hints;
        c.replication = 3;
    });
    let key = "k".to_owned();
    let coordinator = ids
        .into_iter()
        .find(|id| !w.node(10).replicas_of(&key).contains(id))
        .expect("a node that does not hold the key");
    let replicas = w.node(coordinator).replicas_of(&key);
    let missed = replicas[2];
    // Every node caught up with the others at start, and holds something.
    w.advance(10);
    let put = w.put(coordinator, "other", "x", All, None);
    assert!(is_written(w.answer(put)));
    w.crash(missed);
    w.announce(missed, false);
    let put = w.put(coordinator, &key, "v", Two, None);
    assert!(is_written(w.answer(put)));
    // The coordinator's hint for the missed replica is made at the deadline and is not
    // yet synced when its machine crashes.
    w.slots.get_mut(&coordinator).expect("node").auto_sync = false;
    w.advance(3000);
    w.crash(coordinator);
    w.announce(coordinator, false);
    w.slots.get_mut(&coordinator).expect("node").auto_sync = true;
    w.restart(coordinator);
    assert_eq!(
        w.node(coordinator).hints_for(missed),
        0,
        "the hint was lost"
    );
    // The first replica was not told to forget what it owes: it ships the write itself.
    w.restart(missed);
    w.announce(missed, true);
    w.announce(coordinator, true);
    w.advance(3 * 3000);
    assert_eq!(local_values(&w, missed, &key), ["v"]);
}

/// A world of four nodes (hints only, N = 3) where the first replica of `k` is about to
/// take a write from a coordinator that holds no copy, its log syncs held back: the
/// world, the coordinator and the first replica.
fn world_with_a_first_replica_held_back() -> (World, u64, u64) {
    let ids = [10, 20, 30, 40];
    let mut w = World::new(&ids, |c| {
        c.repair = Repair::Hints;
        c.replication = 3;
    });
    let coordinator = ids
        .into_iter()
        .find(|id| !w.node(10).replicas_of("k").contains(id))
        .expect("a node that does not hold the key");
    let first = w.node(coordinator).replicas_of("k")[0];
    // Every node caught up with the others at start.
    w.advance(10);
    assert!(ids.iter().all(|&id| !w.node(id).catching_up()));
    w.slots.get_mut(&first).expect("node").auto_sync = false;
    (w, coordinator, first)
}

/// The first replica crashes once `keep` made what it keeps durable; the put times out
/// at the coordinator; then it restarts, and the hints run. Returns each replica's values.
fn crash_the_first_replica_mid_write(keep: fn(&mut World, u64)) -> Vec<Vec<String>> {
    let (mut w, coordinator, first) = world_with_a_first_replica_held_back();
    let put = w.put(coordinator, "k", "v", Quorum, None);
    keep(&mut w, first);
    w.crash(first);
    w.announce(first, false);
    w.slots.get_mut(&first).expect("node").auto_sync = true;
    w.advance(3000);
    assert_eq!(w.answer(put), Some(&EventualResponse::Timeout));
    w.restart(first);
    w.announce(first, true);
    w.advance(3 * 3000);
    w.node(coordinator)
        .replicas_of("k")
        .into_iter()
        .map(|id| local_values(&w, id, "k"))
        .collect()
}

#[test]
fn a_write_kept_by_its_first_replica_after_a_crash_is_owed_to_the_others() {
    // Both of the first replica's records of the write (what it owes, then the state)
    // reached its disk, but the machine crashed before the node heard so: nobody else
    // has the write, and the coordinator holds no hint of it.
    let held = crash_the_first_replica_mid_write(World::sync_unreported);
    assert_eq!(
        held,
        vec![vec!["v".to_owned()]; 3],
        "the debt ships it to every replica"
    );
}

#[test]
fn a_debt_whose_write_was_lost_in_a_crash_is_settled_with_nothing_shipped() {
    // Only the first record (what it owes) reached the disk, not the state: the write
    // is nowhere, and the debt must not make one up.
    let held = crash_the_first_replica_mid_write(World::sync_first);
    assert_eq!(held, vec![Vec::<String>::new(); 3]);
}

#[test]
fn a_node_that_crashes_while_catching_up_goes_on_catching_up() {
    let mut w = World::new(&IDS, |c| c.repair = Repair::Hints);
    let put = w.put(10, "old", "v", All, None);
    assert!(is_written(w.answer(put)));
    w.crash(30);
    for other in [10, 20] {
        w.partition(30, other, true);
    }
    w.wipe_and_restart(30, 1);
    assert!(w.node(30).catching_up());
    // Cut off, it writes a key of its own before it got the others: its log is no
    // longer empty when it crashes.
    let put = w.put(30, "new", "w", One, None);
    assert!(is_written(w.answer(put)));
    w.crash(30);
    w.restart(30);
    assert!(
        w.node(30).catching_up(),
        "a restart remembers it was catching up"
    );
    for other in [10, 20] {
        w.partition(30, other, false);
    }
    w.advance(10_000);
    assert_eq!(local_values(&w, 30, "old"), ["v"]);
    assert!(!w.node(30).catching_up());
    // Caught up for good: the next restart asks nobody.
    w.crash(30);
    w.restart(30);
    assert!(!w.node(30).catching_up());
}

#[test]
fn a_write_racing_a_reap_reaches_the_replicas_that_reaped_and_back() {
    let ids = [10, 20, 30, 40];
    let mut w = World::new(&ids, |c| {
        c.repair = Repair::Hints;
        c.replication = 3;
    });
    w.advance(10);
    let key = "k".to_owned();
    let replicas = w.node(10).replicas_of(&key);
    let coordinator = ids
        .into_iter()
        .find(|id| !replicas.contains(id))
        .expect("a node that does not hold the key");
    let (first, other) = (replicas[0], replicas[1]);
    let put = w.put(coordinator, &key, "v", All, None);
    let seen_v = context_of(w.answer(put));
    let del = w.del(coordinator, &key, All, Some(&seen_v));
    assert!(is_written(w.answer(del)));
    let tombstone = w.state(other, &key).expect("a tombstone");
    // A write that saw only `v` reaches the first replica: a sibling of the deletion.
    let write = PeerMessage::Write {
        req: 900,
        key: key.clone(),
        op: crate::proto::WriteOp::Put("w".into()),
        context: Some(seen_v),
    };
    w.inject(coordinator, first, write);
    let raced = w.state(first, &key).expect("the write");
    assert_eq!(local_values(&w, first, &key).len(), 2);
    // Meanwhile the other replicas reaped the deletion to graves.
    for id in [replicas[1], replicas[2]] {
        let reap = PeerMessage::Reap {
            req: 901,
            key: key.clone(),
            state: StateBytes(tombstone.to_bytes()),
            commit: true,
        };
        w.inject(coordinator, id, reap);
    }
    // The coordinator ships the first replica's state: the graves drop the deletion they
    // reaped, and the first replica must hear of it.
    let ship = PeerMessage::Store {
        req: 902,
        key: key.clone(),
        state: StateBytes(raced.to_bytes()),
    };
    w.inject(coordinator, other, ship);
    for id in replicas {
        assert_eq!(local_values(&w, id, &key), ["w"], "replica {id}");
    }
}

#[test]
fn a_restarted_node_never_numbers_a_request_as_its_earlier_life_did() {
    let mut w = World::new(&IDS, |c| c.repair = Repair::Hints);
    w.advance(10);
    for round in 0..8 {
        // A hint logs an id; reads after it use numbers the log never sees.
        w.crash(30);
        w.announce(30, false);
        let put = w.put(10, "k", "v", Two, None);
        assert!(is_written(w.answer(put)));
        w.advance(3000);
        w.restart(30);
        w.announce(30, true);
        w.advance(10);
        for _ in 0..20 {
            w.get(10, "k", One);
        }
        let used = w.node(10).next_req;
        w.crash(10);
        w.restart(10);
        assert!(
            w.node(10).next_req > used,
            "round {round}: a number is used again"
        );
        w.announce(10, true);
    }
}

#[test]
fn a_reap_commit_lost_at_one_replica_still_converges_with_hints_alone() {
    // Without read repair nothing else merges the replicas again: the replicas that
    // reaped must bring their graves to the one that missed the commit.
    let mut w = World::new(&IDS, |c| {
        c.repair = Repair::Hints;
        c.hints.max_age_ms = 10_000;
    });
    w.advance(10);
    let put = w.put(10, "k", "v", All, None);
    assert!(is_written(w.answer(put)));
    let del = w.del(10, "k", All, None);
    assert!(is_written(w.answer(del)));
    w.advance(2 * 3000 + 1);
    let tombstones = w.state(30, "k").expect("the deletion");
    for id in IDS {
        assert_eq!(w.state(id, "k").as_ref(), Some(&tombstones), "replica {id}");
    }
    // Every replica would reap; the commit reaches 10 and 20 and is lost at 30.
    for id in [10, 20] {
        let commit = PeerMessage::Reap {
            req: 900,
            key: "k".into(),
            state: StateBytes(tombstones.to_bytes()),
            commit: true,
        };
        w.inject(20, id, commit);
    }
    let Some(KeyState::Siblings(grave)) = w.state(10, "k") else {
        panic!("10 keeps a grave");
    };
    assert!(grave.is_empty(), "10 reaped");
    // Past the grave time and the retries, every replica holds the same state: none.
    w.advance(10_000 + 4 * 3000);
    w.advance(10_000 + 4 * 3000);
    for id in IDS {
        assert_eq!(w.state(id, "k"), None, "replica {id} converged");
    }
}

#[test]
fn a_damaged_log_of_debts_and_hints_is_skipped_not_trusted() {
    use super::super::record::Record;
    use super::harness::MemLog;
    use std::cell::RefCell;
    use std::rc::Rc;

    let w = World::new(&IDS, |_| {});
    let config = w.slots[&10].config.clone();
    let owed = |id: u64, targets: Vec<u64>| Record::Owed {
        id,
        coordinator: 20,
        coordinator_req: id,
        key: format!("owed{id}"),
        targets,
    };
    let hint = |target: u64, key: &str| Record::Hint {
        id: 5,
        target,
        created_ms: 0,
        key: key.to_owned(),
        state: vec![1],
    };
    let records = [
        owed(1, vec![]),
        owed(2, vec![10, 20]),
        hint(20, "c"),
        hint(30, "d"),
    ];
    let mut bytes = Vec::new();
    for record in &records {
        crate::log::encode_frame(&record.encode(), &mut bytes);
    }
    let log = MemLog(Rc::new(RefCell::new(bytes.clone())));
    let (_, report) = super::super::Node::recover(config, &bytes, log).expect("recovers");
    assert_eq!(report.anomalies.len(), 3, "{:?}", report.anomalies);
    assert_eq!(report.hints, 1, "the first hint 5 stands");
}
