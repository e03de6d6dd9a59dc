//! Hand-written histories, each small enough to judge by eye, on both sides of the line:
//! every rejection below is a real anomaly and every acceptance needs the checker to find
//! a non-trivial order (or to drop an operation that may never have happened).

use super::*;
use crate::history::{ClientId, Command, History, Outcome};

fn put(value: &str) -> Command {
    Command::Put {
        value: value.to_owned(),
    }
}

fn found(value: &str) -> Outcome {
    Outcome::Found(value.to_owned())
}

/// Records an operation answered at `complete_ms`.
fn answered(
    h: &mut History,
    client: ClientId,
    key: &str,
    command: Command,
    [invoke_ms, complete_ms]: [u64; 2],
    outcome: Outcome,
) -> usize {
    let index = h.invoke(client, key, command, invoke_ms);
    h.complete(index, outcome, complete_ms);
    index
}

fn check(h: &History) -> Result<LinearizabilityStats, LinearizabilityError> {
    check_linearizable(h, &LinearizabilityConfig::default())
}

/// Asserts acceptance, and that the checker looked at `operations` operations, so that a
/// pass cannot come from ignoring the history.
fn assert_accepted(h: &History, operations: usize) -> LinearizabilityStats {
    let stats = check(h).unwrap_or_else(|e| panic!("rejected a linearizable history:\n{e}"));
    assert_eq!(stats.operations, operations, "{stats:?}");
    assert!(stats.steps >= 1, "{stats:?}");
    stats
}

/// Asserts a violation on `key` that blames operation `blocked`.
fn assert_violation(h: &History, key: &str, blocked: usize) -> String {
    match check(h) {
        Err(LinearizabilityError::Violation {
            key: violated,
            operations,
            detail,
        }) => {
            assert_eq!(violated, key);
            let expected: Vec<usize> = h
                .operations()
                .iter()
                .filter(|op| op.key == key)
                .map(|op| op.index)
                .collect();
            assert_eq!(operations, expected);
            let blamed = format!("could not place #{blocked} ");
            assert!(
                detail.contains(&blamed),
                "expected {blamed:?} in:\n{detail}"
            );
            detail
        }
        other => panic!("expected a violation on {key:?}, got {other:?}"),
    }
}

#[test]
fn accepts_sequential_puts_gets_and_deletes() {
    let mut h = History::new();
    answered(&mut h, 1, "k", Command::Get, [0, 5], Outcome::NotFound);
    answered(&mut h, 1, "k", put("1"), [10, 20], Outcome::Done);
    answered(&mut h, 2, "k", Command::Get, [30, 40], found("1"));
    answered(&mut h, 1, "k", put("2"), [50, 60], Outcome::Done);
    answered(&mut h, 2, "k", Command::Get, [70, 80], found("2"));
    assert_accepted(&h, 5);
}

#[test]
fn accepts_a_get_concurrent_with_a_put_seeing_either_value() {
    for seen in ["1", "2"] {
        let mut h = History::new();
        answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
        let slow_put = h.invoke(1, "k", put("2"), 20);
        answered(&mut h, 2, "k", Command::Get, [30, 40], found(seen));
        h.complete(slow_put, Outcome::Done, 50);
        assert_accepted(&h, 3);
    }
}

#[test]
fn accepts_a_get_that_overlaps_its_put_only_at_one_instant() {
    // The put returns at 10 and the get is invoked at 10: concurrent, not ordered.
    let mut h = History::new();
    answered(&mut h, 1, "k", Command::Get, [10, 20], found("1"));
    answered(&mut h, 2, "k", put("1"), [0, 10], Outcome::Done);
    assert_accepted(&h, 2);
}

#[test]
fn accepts_an_unknown_put_whose_value_is_read_later() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    h.invoke(2, "k", put("2"), 20);
    answered(&mut h, 1, "k", Command::Get, [30, 40], found("1"));
    answered(&mut h, 3, "k", Command::Get, [500, 510], found("2"));
    answered(&mut h, 1, "k", Command::Get, [600, 610], found("2"));
    assert_accepted(&h, 5);
}

#[test]
fn accepts_an_unknown_put_never_read() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    h.invoke(2, "k", put("lost"), 20);
    answered(&mut h, 1, "k", Command::Get, [30, 40], found("1"));
    answered(&mut h, 1, "k", Command::Del, [50, 60], Outcome::Done);
    answered(&mut h, 3, "k", Command::Get, [70, 80], Outcome::NotFound);
    assert_accepted(&h, 5);
}

#[test]
fn accepts_an_unknown_put_that_is_needed_for_a_later_delete() {
    // The DEL answered done, so the key was present: only the unknown PUT explains it.
    let mut h = History::new();
    h.invoke(1, "k", put("1"), 0);
    answered(&mut h, 2, "k", Command::Del, [50, 60], Outcome::Done);
    answered(&mut h, 2, "k", Command::Get, [70, 80], Outcome::NotFound);
    assert_accepted(&h, 3);
}

#[test]
fn accepts_an_unknown_delete_taking_effect_or_not() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    h.invoke(2, "k", Command::Del, 20);
    answered(&mut h, 1, "k", Command::Get, [30, 40], found("1"));
    answered(&mut h, 3, "k", Command::Get, [50, 60], Outcome::NotFound);
    assert_accepted(&h, 4);

    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    h.invoke(2, "k", Command::Del, 20);
    answered(&mut h, 1, "k", Command::Get, [30, 40], found("1"));
    answered(&mut h, 3, "k", Command::Get, [50, 60], found("1"));
    assert_accepted(&h, 4);
}

#[test]
fn accepts_delete_then_not_found() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "k", Command::Del, [20, 30], Outcome::Done);
    answered(&mut h, 2, "k", Command::Get, [40, 50], Outcome::NotFound);
    answered(&mut h, 2, "k", Command::Del, [60, 70], Outcome::NotFound);
    assert_accepted(&h, 4);
}

#[test]
fn ignores_failed_operations_and_unanswered_gets() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "k", put("2"), [20, 30], Outcome::Failed);
    answered(&mut h, 1, "k", Command::Del, [40, 50], Outcome::Failed);
    h.invoke(2, "k", Command::Get, 60);
    answered(&mut h, 1, "k", Command::Get, [70, 80], found("1"));
    assert_accepted(&h, 2);
}

#[test]
fn checks_keys_independently() {
    // As one register this would be a stale read; as two it is fine.
    let mut h = History::new();
    answered(&mut h, 1, "a", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 2, "b", put("2"), [20, 30], Outcome::Done);
    answered(&mut h, 1, "a", Command::Get, [40, 50], found("1"));
    answered(&mut h, 2, "b", Command::Get, [60, 70], found("2"));
    answered(&mut h, 3, "b", Command::Get, [80, 90], found("2"));
    let stats = assert_accepted(&h, 5);
    assert_eq!(stats.keys, 2);
}

#[test]
fn rejects_a_stale_read_after_a_completed_put() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "k", put("2"), [20, 30], Outcome::Done);
    let get = answered(&mut h, 2, "k", Command::Get, [40, 50], found("1"));
    let detail = assert_violation(&h, "k", get);
    assert!(detail.contains("value after the prefix: \"2\""), "{detail}");
}

#[test]
fn rejects_a_read_of_a_value_never_written() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    let get = answered(&mut h, 2, "k", Command::Get, [5, 15], found("ghost"));
    assert_violation(&h, "k", get);
}

#[test]
fn rejects_a_read_of_a_failed_put() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Failed);
    let get = answered(&mut h, 2, "k", Command::Get, [20, 30], found("1"));
    assert_violation(&h, "k", get);
}

#[test]
fn rejects_not_found_after_a_completed_put_without_delete() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    h.invoke(3, "k", put("2"), 12);
    let get = answered(&mut h, 2, "k", Command::Get, [20, 30], Outcome::NotFound);
    assert_violation(&h, "k", get);
}

#[test]
fn rejects_a_delete_done_on_a_key_never_written() {
    let mut h = History::new();
    let del = answered(&mut h, 1, "k", Command::Del, [0, 10], Outcome::Done);
    answered(&mut h, 2, "k", put("1"), [20, 30], Outcome::Done);
    assert_violation(&h, "k", del);
}

#[test]
fn rejects_a_value_reappearing_after_an_unknown_delete() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    h.invoke(2, "k", Command::Del, 20);
    answered(&mut h, 1, "k", Command::Get, [30, 40], Outcome::NotFound);
    let get = answered(&mut h, 3, "k", Command::Get, [50, 60], found("1"));
    assert_violation(&h, "k", get);
}

#[test]
fn rejects_a_new_then_old_inversion_during_a_put() {
    // Once a reader saw "2", a later reader may not see "1", however long the PUT of "2"
    // takes to answer, or whether it answers at all.
    for answered_at in [Some(100), None] {
        let mut h = History::new();
        answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
        let slow_put = h.invoke(1, "k", put("2"), 20);
        answered(&mut h, 2, "k", Command::Get, [30, 40], found("2"));
        let old = answered(&mut h, 3, "k", Command::Get, [50, 60], found("1"));
        if let Some(at) = answered_at {
            h.complete(slow_put, Outcome::Done, at);
        }
        assert_violation(&h, "k", old);
    }
}

#[test]
fn rejects_a_read_before_the_put_was_invoked() {
    for put_answer in [Some(Outcome::Done), None] {
        let mut h = History::new();
        let get = answered(&mut h, 2, "k", Command::Get, [0, 10], found("1"));
        let put_op = h.invoke(1, "k", put("1"), 20);
        if let Some(outcome) = put_answer.clone() {
            h.complete(put_op, outcome, 30);
        }
        assert_violation(&h, "k", get);
    }
}

#[test]
fn rejects_answers_no_register_gives() {
    let mut h = History::new();
    let bad = answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::NotFound);
    assert_violation(&h, "k", bad);
}

#[test]
fn finds_a_violation_on_the_last_key_only() {
    let mut h = History::new();
    answered(&mut h, 1, "a", put("a1"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "b", put("b1"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "a", put("a2"), [20, 30], Outcome::Done);
    answered(&mut h, 2, "a", Command::Get, [40, 50], found("a2"));
    answered(&mut h, 1, "b", put("b2"), [20, 30], Outcome::Done);
    let stale = answered(&mut h, 2, "b", Command::Get, [40, 50], found("b1"));
    assert_violation(&h, "b", stale);
}

#[test]
fn reports_an_exhausted_budget_as_inconclusive() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 2, "k", Command::Get, [0, 10], found("1"));
    let config = LinearizabilityConfig {
        max_steps_per_key: 1,
    };
    assert_eq!(
        check_linearizable(&h, &config),
        Err(LinearizabilityError::Inconclusive {
            key: "k".to_owned(),
            steps: 1
        })
    );
}

#[test]
fn prefers_a_violation_to_an_undecided_key() {
    let mut h = History::new();
    // Key "a" needs three steps, key "b" two to be found violated.
    answered(&mut h, 1, "a", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 2, "a", Command::Get, [0, 10], found("1"));
    answered(&mut h, 2, "a", Command::Get, [20, 30], found("1"));
    let del = answered(&mut h, 1, "b", Command::Del, [0, 10], Outcome::Done);
    let config = LinearizabilityConfig {
        max_steps_per_key: 2,
    };
    match check_linearizable(&h, &config) {
        Err(LinearizabilityError::Violation { key, detail, .. }) => {
            assert_eq!(key, "b");
            assert!(detail.contains(&format!("could not place #{del} ")));
        }
        other => panic!("expected the violation on b, got {other:?}"),
    }
}

#[test]
fn the_report_lists_the_prefix_and_the_blocked_operation() {
    let mut h = History::new();
    answered(&mut h, 7, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 7, "k", Command::Del, [20, 30], Outcome::Done);
    answered(&mut h, 8, "k", Command::Get, [40, 50], found("1"));
    let report = check(&h).unwrap_err().to_string();
    let expected = "\
linearizability violation on key \"k\" (3 operations on the key):
  longest linearizable prefix found (2 of 3 operations):
    1. #0 client 7 PUT \"1\" -> done [0, 10] ms
    2. #1 client 7 DEL -> done [20, 30] ms
  value after the prefix: absent
  could not place #2 client 8 GET -> found \"1\" [40, 50] ms
";
    assert!(report.starts_with(expected), "{report}");
}
