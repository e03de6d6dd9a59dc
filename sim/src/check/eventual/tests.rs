//! Each eventual checker accepts a good end state and history and rejects hand-built bad
//! ones.

use std::collections::BTreeMap;

use ringkv_core::eventual::KeyState;
use ringkv_core::proto::Consistency;
use ringkv_core::versions::{Actor, Container, Payload};

use super::*;

/// A container holding `values` as siblings, each written blind by its own actor.
fn siblings(values: &[&str]) -> KeyState {
    let mut container = Container::new();
    for (i, value) in values.iter().enumerate() {
        let actor = Actor::new(i as u64 + 1, 0);
        let payload = Payload::Value((*value).to_owned());
        container
            .write(actor, Some(&Default::default()), payload)
            .unwrap();
    }
    KeyState::Siblings(container)
}

fn node(states: &[(&str, KeyState)]) -> Option<EvNodeSnapshot> {
    Some(EvNodeSnapshot {
        states: states
            .iter()
            .map(|(k, s)| ((*k).to_owned(), s.clone()))
            .collect(),
        ..EvNodeSnapshot::default()
    })
}

/// Nodes 1, 2, 3; k0 on 1 and 2.
fn snapshot(one: &[(&str, KeyState)], two: &[(&str, KeyState)]) -> EvSnapshot {
    EvSnapshot {
        nodes: BTreeMap::from([(1, node(one)), (2, node(two)), (3, node(&[]))]),
        replicas: BTreeMap::from([("k0".to_owned(), vec![1, 2])]),
        placed_by: BTreeMap::new(),
    }
}

#[test]
fn convergence_accepts_agreeing_replicas_and_gives_the_final_values() {
    let state = siblings(&["a", "b"]);
    let snap = snapshot(&[("k0", state.clone())], &[("k0", state)]);
    let finals = check_convergence(&snap).unwrap();
    assert_eq!(finals["k0"].len(), 2);
    assert!(finals["k0"].contains(&Some("a".to_owned())));
}

#[test]
fn convergence_rejects_differing_replicas_strays_and_leftover_work() {
    let snap = snapshot(
        &[("k0", siblings(&["a"]))],
        &[("k0", siblings(&["a", "b"]))],
    );
    let problems = check_convergence(&snap).unwrap_err();
    assert!(problems[0].contains("differ"), "{problems:?}");

    let snap = snapshot(&[("k0", siblings(&["a"]))], &[]);
    assert!(
        check_convergence(&snap).is_err(),
        "one replica lacks the key"
    );

    let mut snap = snapshot(&[], &[]);
    snap.nodes.insert(3, node(&[("k0", siblings(&["a"]))]));
    let problems = check_convergence(&snap).unwrap_err();
    assert!(problems[0].contains("no replica"), "{problems:?}");

    // A node that stores k0 somewhere the ring does not put it.
    let mut snap = snapshot(&[], &[]);
    let placed = BTreeMap::from([("k0".to_owned(), vec![1, 3])]);
    snap.placed_by.insert(2, placed);
    let problems = check_convergence(&snap).unwrap_err();
    assert!(
        problems[0].contains("node 2 places it on [1, 3]"),
        "{problems:?}"
    );
    snap.placed_by
        .insert(2, BTreeMap::from([("k0".to_owned(), vec![1, 2])]));
    check_convergence(&snap).unwrap();

    for spoil in 0..5 {
        let mut snap = snapshot(&[], &[]);
        let one = snap.nodes.get_mut(&1).unwrap();
        match spoil {
            0 => *one = None,
            1 => one.as_mut().unwrap().owed = 1,
            2 => one.as_mut().unwrap().catching_up = true,
            3 => one.as_mut().unwrap().reused_dots = 1,
            _ => {
                one.as_mut().unwrap().hints.insert(2, 3);
            }
        }
        assert!(check_convergence(&snap).is_err(), "spoiled {spoil}");
    }
}

fn op(index: usize, key: &str, command: EvCommand, outcome: EvOutcome) -> EvOp {
    EvOp {
        index,
        client: 0,
        node: 1,
        key: key.to_owned(),
        level: Consistency::Quorum,
        command,
        invoke_ms: index as u64 * 10,
        complete_ms: Some(index as u64 * 10 + 5),
        outcome,
    }
}

/// An acknowledged write's outcome, its clock and context left empty.
fn written() -> EvOutcome {
    EvOutcome::Written {
        clock: serde_json::Value::Null,
        context: String::new(),
    }
}

fn found(values: &[&str]) -> EvOutcome {
    EvOutcome::Found {
        values: values.iter().map(|v| Some((*v).to_owned())).collect(),
        context: String::new(),
        clocks: Vec::new(),
    }
}

fn add(index: usize, element: &str, value: &str, read: usize, outcome: EvOutcome) -> EvOp {
    let command = EvCommand::Add {
        element: element.to_owned(),
        value: value.to_owned(),
        read,
        blind: false,
    };
    op(index, "k0", command, outcome)
}

/// Two reads and two adds on the set key k0: `c0e1` acknowledged, `c0e2` timed out.
fn set_history() -> EvHistory {
    vec![
        op(
            0,
            "k0",
            EvCommand::Read,
            EvOutcome::NotFound { context: None },
        ),
        add(1, "c0e1", "c0e1", 0, written()),
        op(2, "k0", EvCommand::Read, found(&["c0e1"])),
        add(3, "c0e2", "c0e1 c0e2", 2, EvOutcome::Timeout),
    ]
}

fn finals(values: &[&str]) -> FinalValues {
    let values = values.iter().map(|v| Some((*v).to_owned())).collect();
    BTreeMap::from([("k0".to_owned(), values)])
}

#[test]
fn the_set_test_accepts_every_acknowledged_add_with_or_without_unknown_ones() {
    let history = set_history();
    check_set(&history, &finals(&["c0e1"]), true, 3, &[]).unwrap();
    check_set(&history, &finals(&["c0e1 c0e2"]), true, 3, &[]).unwrap();
    // Siblings are merged by union.
    check_set(&history, &finals(&["c0e1", "c0e2"]), true, 3, &[]).unwrap();
}

#[test]
fn the_set_test_rejects_a_lost_add_and_an_element_never_added() {
    let history = set_history();
    let problems = check_set(&history, &finals(&["c0e2"]), true, 3, &[]).unwrap_err();
    assert!(
        problems[0].contains("c0e1") && problems[0].contains("lost"),
        "{problems:?}"
    );
    let problems = check_set(&history, &finals(&[]), true, 3, &[]).unwrap_err();
    assert!(problems[0].contains("lost"), "{problems:?}");
    let problems = check_set(&history, &finals(&["c0e1 c9e9"]), true, 3, &[]).unwrap_err();
    assert!(problems[0].contains("never added"), "{problems:?}");
    // Last write wins may lose adds, never invent them.
    check_set(&history, &finals(&[]), false, 3, &[]).unwrap();
    assert!(check_set(&history, &finals(&["c9e9"]), false, 3, &[]).is_err());
}

#[test]
fn an_add_acknowledged_by_one_replica_is_excused_only_by_a_later_disk_loss() {
    let mut history = set_history();
    history[1].level = Consistency::One;
    // Sent at 10 ms and answered at 15: a disk lost at 12 ms (the replica confirmed,
    // then lost it, before the answer arrived) or at 20 ms may have held its only copy.
    check_set(&history, &finals(&[]), true, 3, &[20]).unwrap();
    check_set(&history, &finals(&[]), true, 3, &[12]).unwrap();
    assert!(check_set(&history, &finals(&[]), true, 3, &[5]).is_err());
    history[1].level = Consistency::Quorum;
    assert!(check_set(&history, &finals(&[]), true, 3, &[20]).is_err());
}

#[test]
fn resurrection_is_rejected_after_an_acknowledged_delete_and_a_superseding_add() {
    let delete = vec![
        op(0, "k1", EvCommand::Read, found(&["c0e1"])),
        op(
            1,
            "k1",
            EvCommand::Delete {
                read: 0,
                blind: false,
            },
            written(),
        ),
    ];
    let gone = BTreeMap::from([("k1".to_owned(), vec![])]);
    check_superseded(&delete, &gone, 3, &[]).unwrap();
    let back = BTreeMap::from([("k1".to_owned(), vec![Some("c0e1".to_owned())])]);
    let problems = check_superseded(&delete, &back, 3, &[]).unwrap_err();
    assert!(problems[0].contains("deleted"), "{problems:?}");
    // A delete that was not acknowledged may not have happened.
    let mut unsure = delete.clone();
    unsure[1].outcome = EvOutcome::Timeout;
    check_superseded(&unsure, &back, 3, &[]).unwrap();
    // A blind delete supersedes what its first replica held, which the client never saw.
    let mut blind = delete.clone();
    blind[1].command = EvCommand::Delete {
        read: 0,
        blind: true,
    };
    check_superseded(&blind, &back, 3, &[]).unwrap();

    let history = set_history();
    check_superseded(&history, &finals(&["c0e1"]), 3, &[]).unwrap();
    let mut acked = history.clone();
    acked[3].outcome = written();
    check_superseded(&acked, &finals(&["c0e1 c0e2"]), 3, &[]).unwrap();
    let problems = check_superseded(&acked, &finals(&["c0e1", "c0e1 c0e2"]), 3, &[]);
    assert!(problems.unwrap_err()[0].contains("superseded"));
}

#[test]
fn liveness_rejects_a_failure_after_the_cluster_settled_at_a_level_that_can_be_met() {
    let mut history = set_history();
    check_eventual_liveness(&history, 0, 3).unwrap_err();
    check_eventual_liveness(&history, 25, 3).unwrap_err();
    check_eventual_liveness(&history, 31, 3).unwrap();
    history[3].outcome = EvOutcome::Unknown;
    check_eventual_liveness(&history, 25, 3).unwrap_err();
    // `three` with N = 2 can never be met: its `unavailable` is right.
    history[3].level = Consistency::Three;
    history[3].outcome = EvOutcome::Failed("unavailable".to_owned());
    check_eventual_liveness(&history, 25, 2).unwrap();
}
