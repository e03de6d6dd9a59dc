//! The checkers of siblings, reads after writes, monotonic reads and last write wins
//! accept good hand-built histories and reject bad ones.

use std::collections::BTreeMap;

use ringkv_core::eventual::KeyState;
use ringkv_core::proto::Consistency::{self, One, Quorum};
use ringkv_core::versions::{encode_context, Actor, LwwVersion, Payload, Stamp, VersionVector};
use serde_json::{json, Value};

use super::*;

/// An operation on `key` through node 1, invoked at `index * 10` ms, answered 5 ms later.
fn op(index: usize, key: &str, command: EvCommand, outcome: EvOutcome) -> EvOp {
    EvOp {
        index,
        client: 0,
        node: 1,
        key: key.to_owned(),
        level: Quorum,
        command,
        invoke_ms: index as u64 * 10,
        complete_ms: Some(index as u64 * 10 + 5),
        outcome,
    }
}

fn read(index: usize, outcome: EvOutcome) -> EvOp {
    op(index, "k0", EvCommand::Read, outcome)
}

fn add(index: usize, value: &str, read: usize, blind: bool, outcome: EvOutcome) -> EvOp {
    let command = EvCommand::Add {
        element: format!("e{index}"),
        value: value.to_owned(),
        read,
        blind,
    };
    op(index, "k0", command, outcome)
}

/// A context of `(node, counter)` entries, incarnation 0.
fn ctx(entries: &[(u64, u64)]) -> String {
    let vv: VersionVector = entries
        .iter()
        .map(|&(node, counter)| (Actor::new(node, 0), counter))
        .collect();
    encode_context(&vv)
}

fn found(values: &[&str], context: String, clocks: Vec<Value>) -> EvOutcome {
    EvOutcome::Found {
        values: values.iter().map(|v| Some((*v).to_owned())).collect(),
        context,
        clocks,
    }
}

fn written(context: String, clock: Value) -> EvOutcome {
    EvOutcome::Written { clock, context }
}

fn nothing() -> EvOutcome {
    EvOutcome::NotFound { context: None }
}

fn finals_of(values: &[&str]) -> FinalValues {
    let values = values.iter().map(|v| Some((*v).to_owned())).collect();
    BTreeMap::from([("k0".to_owned(), values)])
}

fn replicas() -> BTreeMap<String, Vec<u64>> {
    BTreeMap::from([("k0".to_owned(), vec![1, 2, 3])])
}

/// A read that saw `a`, an add of `a b` with its context, and a concurrent add of `c`
/// from a read that saw nothing.
fn context_history() -> EvHistory {
    vec![
        read(0, nothing()),
        add(1, "a", 0, false, written(String::new(), Value::Null)),
        read(2, found(&["a"], String::new(), vec![])),
        add(3, "a b", 2, false, written(String::new(), Value::Null)),
        add(4, "c", 0, false, written(String::new(), Value::Null)),
    ]
}

#[test]
fn siblings_accepts_concurrent_writes_and_rejects_a_superseded_version_beside_its_successor() {
    let mut history = context_history();
    history.push(read(5, found(&["a b", "c"], String::new(), vec![])));
    check_siblings(&history, &finals_of(&["a b", "c"]), &replicas(), &[]).unwrap();
    // `a b` was written with a context that saw `a`: never its sibling.
    history.push(read(6, found(&["a", "a b"], String::new(), vec![])));
    let problems = check_siblings(&history, &finals_of(&["a b"]), &replicas(), &[]).unwrap_err();
    assert!(
        problems[0].contains("read 6") && problems[0].contains("superseded"),
        "{problems:?}"
    );
    history.pop();
    assert!(check_siblings(&history, &finals_of(&["a", "a b"]), &replicas(), &[]).is_err());
    // Transitively: a write that saw `a b` superseded `a` too.
    history.push(read(6, found(&["a b"], String::new(), vec![])));
    history.push(add(
        7,
        "a b d",
        6,
        false,
        written(String::new(), Value::Null),
    ));
    check_siblings(&history, &finals_of(&["a b d", "c"]), &replicas(), &[]).unwrap();
    assert!(check_siblings(&history, &finals_of(&["a", "a b d"]), &replicas(), &[]).is_err());
}

/// Two blind adds through node 1, the second sent after the first was acknowledged.
fn blind_history() -> EvHistory {
    vec![
        read(0, nothing()),
        add(1, "x", 0, true, written(String::new(), Value::Null)),
        add(2, "y", 0, true, written(String::new(), Value::Null)),
        read(3, found(&["x", "y"], String::new(), vec![])),
    ]
}

#[test]
fn siblings_rejects_blind_writes_through_one_replica_in_turn_shown_together() {
    let history = blind_history();
    let problems = check_siblings(&history, &FinalValues::new(), &replicas(), &[]).unwrap_err();
    assert!(problems[0].contains("operation 1"), "{problems:?}");
    // Through different nodes they may be siblings.
    let mut other = history.clone();
    other[2].node = 2;
    check_siblings(&other, &FinalValues::new(), &replicas(), &[]).unwrap();
    // Through a node that is no replica, the first replica is whichever is up.
    let elsewhere = BTreeMap::from([("k0".to_owned(), vec![2, 3])]);
    check_siblings(&history, &FinalValues::new(), &elsewhere, &[]).unwrap();
    // Overlapping in time, or with a disk lost in between, they may be too.
    let mut overlapping = history.clone();
    overlapping[1].complete_ms = Some(25);
    check_siblings(&overlapping, &FinalValues::new(), &replicas(), &[]).unwrap();
    check_siblings(&history, &FinalValues::new(), &replicas(), &[17]).unwrap();
    // A first write that was not acknowledged may never have reached the replica.
    let mut unsure = history.clone();
    unsure[1].outcome = EvOutcome::Timeout;
    check_siblings(&unsure, &FinalValues::new(), &replicas(), &[]).unwrap();
}

#[test]
fn siblings_rejects_more_versions_than_writes_that_may_have_been_applied() {
    let mut history = context_history();
    // Two values and a tombstone (a delete's version): three versions.
    let mut three = found(&["a b", "c"], String::new(), vec![]);
    if let EvOutcome::Found { values, .. } = &mut three {
        values.push(None);
    }
    history.push(read(5, three));
    check_siblings(&history, &FinalValues::new(), &replicas(), &[]).unwrap();
    // An add answered `unavailable` was never tried: two writes cannot make three (nor
    // none read 2's one).
    history[1].outcome = EvOutcome::Failed("unavailable".to_owned());
    let problems = check_siblings(&history, &FinalValues::new(), &replicas(), &[]).unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("read 2") && problems[0].contains("the 0 writes"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("read 5") && problems[1].contains("the 2 writes"),
        "{problems:?}"
    );
    history[1].outcome = EvOutcome::Timeout;
    check_siblings(&history, &FinalValues::new(), &replicas(), &[]).unwrap();
    // Writes invoked after the read was answered cannot have made its versions.
    history.truncate(5);
    history.push(add(5, "e", 0, false, written(String::new(), Value::Null)));
    let mut early = found(&["a b", "c"], String::new(), vec![]);
    if let EvOutcome::Found { values, .. } = &mut early {
        values.push(None);
    }
    // Read 6 is answered before add 5, and before add 4 as well.
    let mut read6 = read(6, early);
    read6.invoke_ms = history[4].invoke_ms - 5;
    read6.complete_ms = Some(history[4].invoke_ms - 1);
    history.push(read6);
    let problems = check_siblings(&history, &FinalValues::new(), &replicas(), &[]).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("read 6") && problems[0].contains("the 2 writes"),
        "{problems:?}"
    );
}

#[test]
fn origins_rejects_a_value_no_applied_earlier_add_wrote() {
    let mut history = context_history();
    history.push(read(5, found(&["a b", "c"], String::new(), vec![])));
    check_origins(&history, &finals_of(&["a b", "c"])).unwrap();
    // A value no client wrote, in a read or in the final state.
    let mut forged = history.clone();
    forged[5] = read(5, found(&["a b", "z"], String::new(), vec![]));
    let problems = check_origins(&forged, &FinalValues::new()).unwrap_err();
    assert!(
        problems[0].contains("\"z\", which no client wrote"),
        "{problems:?}"
    );
    let problems = check_origins(&history, &finals_of(&["z"])).unwrap_err();
    assert!(problems[0].contains("the final state"), "{problems:?}");
    // The value of an add that was never tried.
    let mut never = history.clone();
    never[4].outcome = EvOutcome::Failed("unavailable".to_owned());
    let problems = check_origins(&never, &FinalValues::new()).unwrap_err();
    assert!(
        problems[0].contains("operation 4, which was never applied"),
        "{problems:?}"
    );
    // The value of an add invoked after the read was answered.
    let mut late = history.clone();
    late[4].invoke_ms = late[5].complete_ms.unwrap() + 1;
    let problems = check_origins(&late, &FinalValues::new()).unwrap_err();
    assert!(
        problems[0].contains("invoked after the read was answered"),
        "{problems:?}"
    );
    // An add that timed out may have been applied.
    let mut unsure = history.clone();
    unsure[4].outcome = EvOutcome::Timeout;
    check_origins(&unsure, &FinalValues::new()).unwrap();
}

/// A write acknowledged at `level` with context {1: 2}, then a read at `read_level`
/// answering `context`.
fn after_write(level: Consistency, read_level: Consistency, context: String) -> EvHistory {
    let mut history = vec![
        read(0, nothing()),
        add(1, "a", 0, false, written(ctx(&[(1, 2)]), Value::Null)),
        read(2, found(&["a"], context, vec![])),
    ];
    history[1].level = level;
    history[2].level = read_level;
    history
}

#[test]
fn a_read_overlapping_an_acknowledged_write_must_show_it_or_a_successor() {
    check_read_after_write(&after_write(Quorum, Quorum, ctx(&[(1, 2)])), 3, false, &[]).unwrap();
    let later = ctx(&[(1, 3), (2, 1)]);
    check_read_after_write(&after_write(Quorum, Quorum, later), 3, false, &[]).unwrap();
    let stale = after_write(Quorum, Quorum, ctx(&[(1, 1)]));
    let problems = check_read_after_write(&stale, 3, false, &[]).unwrap_err();
    assert!(
        problems[0].contains("read 2") && problems[0].contains("operation 1"),
        "{problems:?}"
    );
    let mut gone = stale.clone();
    gone[2].outcome = nothing();
    assert!(check_read_after_write(&gone, 3, false, &[]).is_err());
    // R + W = N: no overlap promised.
    check_read_after_write(&after_write(Quorum, One, ctx(&[(1, 1)])), 3, false, &[]).unwrap();
    check_read_after_write(&after_write(One, Quorum, ctx(&[(1, 1)])), 3, false, &[]).unwrap();
    // A read sent before the write was answered overlaps nothing.
    let mut early = stale.clone();
    early[2].invoke_ms = 12;
    check_read_after_write(&early, 3, false, &[]).unwrap();
    // A disk lost meanwhile, or a delete that may have been applied, excuses it.
    check_read_after_write(&stale, 3, false, &[14]).unwrap();
    let mut deleted = gone.clone();
    deleted.insert(
        2,
        op(
            2,
            "k0",
            EvCommand::Delete {
                read: 0,
                blind: true,
            },
            EvOutcome::Timeout,
        ),
    );
    deleted[3].index = 3;
    check_read_after_write(&deleted, 3, false, &[]).unwrap();
}

#[test]
fn under_last_write_wins_a_read_after_a_write_shows_at_least_its_stamp() {
    let mut history = after_write(Quorum, Quorum, String::new());
    history[1].outcome = written(String::new(), json!({"ts": 100, "node": 1}));
    history[2].outcome = found(&["b"], String::new(), vec![json!({"ts": 100, "node": 2})]);
    check_read_after_write(&history, 3, true, &[]).unwrap();
    history[2].outcome = found(&["b"], String::new(), vec![json!({"ts": 99, "node": 7})]);
    assert!(check_read_after_write(&history, 3, true, &[]).is_err());
    history[2].outcome = nothing();
    assert!(check_read_after_write(&history, 3, true, &[]).is_err());
}

#[test]
fn a_read_overlapping_an_earlier_read_never_goes_back_in_time() {
    let history = |first: String, second: String, level: Consistency| {
        let mut h = vec![
            read(0, found(&["a"], first, vec![])),
            read(1, found(&["a"], second, vec![])),
        ];
        h[1].level = level;
        h
    };
    let (old, new) = (ctx(&[(1, 1)]), ctx(&[(1, 2)]));
    check_monotonic_reads(&history(old.clone(), new.clone(), Quorum), 3, false, &[]).unwrap();
    check_monotonic_reads(&history(new.clone(), new.clone(), Quorum), 3, false, &[]).unwrap();
    let back = history(new.clone(), old.clone(), Quorum);
    let problems = check_monotonic_reads(&back, 3, false, &[]).unwrap_err();
    assert!(problems[0].contains("read 1"), "{problems:?}");
    // Concurrent knowledge is not a successor either.
    let aside = history(new.clone(), ctx(&[(2, 5)]), Quorum);
    assert!(check_monotonic_reads(&aside, 3, false, &[]).is_err());
    check_monotonic_reads(&history(new.clone(), old.clone(), One), 3, false, &[]).unwrap();
    check_monotonic_reads(&back, 3, false, &[3]).unwrap();
    let mut lww = history(String::new(), String::new(), Quorum);
    lww[0].outcome = found(&["a"], String::new(), vec![json!({"ts": 5, "node": 1})]);
    lww[1].outcome = found(&["b"], String::new(), vec![json!({"ts": 4, "node": 9})]);
    assert!(check_monotonic_reads(&lww, 3, true, &[]).is_err());
}

/// Nodes 1 and 2 both holding `state` for k0.
fn lww_snapshot(state: Option<(u64, u64, Payload)>) -> EvSnapshot {
    let states: BTreeMap<String, KeyState> = state
        .into_iter()
        .map(|(ts_ms, node, payload)| {
            let version = LwwVersion {
                stamp: Stamp { ts_ms, node },
                payload,
            };
            ("k0".to_owned(), KeyState::Lww(version))
        })
        .collect();
    let node = Some(EvNodeSnapshot {
        states,
        ..EvNodeSnapshot::default()
    });
    EvSnapshot {
        nodes: BTreeMap::from([(1, node.clone()), (2, node)]),
        replicas: BTreeMap::from([("k0".to_owned(), vec![1, 2])]),
        placed_by: BTreeMap::new(),
    }
}

fn value(v: &str) -> Payload {
    Payload::Value(v.to_owned())
}

/// Adds of `a` at stamp (100, 1) and `b` at (200, 2), both acknowledged, and an add of
/// `c` that timed out.
fn lww_history() -> EvHistory {
    vec![
        read(0, nothing()),
        add(
            1,
            "a",
            0,
            false,
            written(String::new(), json!({"ts": 100, "node": 1})),
        ),
        add(
            2,
            "b",
            0,
            false,
            written(String::new(), json!({"ts": 200, "node": 2})),
        ),
        add(3, "c", 0, false, EvOutcome::Timeout),
    ]
}

#[test]
fn last_write_wins_keeps_the_highest_stamp_of_the_writes_that_may_have_been_applied() {
    let history = lww_history();
    check_lww_final(&history, &lww_snapshot(Some((200, 2, value("b")))), 3, &[]).unwrap();
    // The write that timed out may have been applied, with any stamp above.
    check_lww_final(&history, &lww_snapshot(Some((250, 3, value("c")))), 3, &[]).unwrap();
    // An older write won over an acknowledged newer one.
    let problems =
        check_lww_final(&history, &lww_snapshot(Some((100, 1, value("a")))), 3, &[]).unwrap_err();
    assert!(problems[0].contains("operation 2"), "{problems:?}");
    // A value nobody wrote, or an acknowledged write under another stamp.
    assert!(check_lww_final(&history, &lww_snapshot(Some((300, 1, value("z")))), 3, &[]).is_err());
    assert!(check_lww_final(&history, &lww_snapshot(Some((300, 1, value("a")))), 3, &[]).is_err());
    // A deletion needs a delete that may have been applied.
    let deleted = Some((300, 1, Payload::Deleted));
    assert!(check_lww_final(&history, &lww_snapshot(deleted.clone()), 3, &[]).is_err());
    assert!(check_lww_final(&history, &lww_snapshot(None), 3, &[]).is_err());
    let mut with_delete = history.clone();
    with_delete.push(op(
        4,
        "k0",
        EvCommand::Delete {
            read: 0,
            blind: false,
        },
        EvOutcome::Unknown,
    ));
    check_lww_final(&with_delete, &lww_snapshot(deleted), 3, &[]).unwrap();
    check_lww_final(&with_delete, &lww_snapshot(None), 3, &[]).unwrap();
    // A write acknowledged by one replica before a disk was lost may be gone.
    let mut lost = history.clone();
    lost[2].level = One;
    check_lww_final(&lost, &lww_snapshot(Some((100, 1, value("a")))), 3, &[30]).unwrap();
}
