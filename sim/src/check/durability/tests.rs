//! Final states judged by hand: each acceptance needs the checker to see some write as
//! possibly last, each rejection names a write that was certainly superseded.

use super::*;
use crate::check::generated::{plan, record, MIXED, UNRELIABLE};
use crate::history::ClientId;

fn put(value: &str) -> Command {
    Command::Put {
        value: value.to_owned(),
    }
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

fn finals(entries: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    entries
        .iter()
        .map(|(key, value)| (key.to_string(), value.map(str::to_owned)))
        .collect()
}

fn assert_lost(result: Result<(), DurabilityError>, key: &str, lost: usize) {
    match result {
        Err(DurabilityError::LostWrite {
            key: k,
            lost_operation,
            ..
        }) => {
            assert_eq!(k, key);
            assert_eq!(lost_operation, lost);
        }
        other => panic!("expected #{lost} on {key:?} lost, got {other:?}"),
    }
}

#[test]
fn accepts_the_last_acknowledged_put() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "k", put("2"), [20, 30], Outcome::Done);
    assert_eq!(
        check_no_lost_writes(&h, &finals(&[("k", Some("2"))])),
        Ok(())
    );
}

#[test]
fn accepts_either_of_two_concurrent_puts() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 30], Outcome::Done);
    answered(&mut h, 2, "k", put("2"), [10, 20], Outcome::Done);
    for last in ["1", "2"] {
        assert_eq!(
            check_no_lost_writes(&h, &finals(&[("k", Some(last))])),
            Ok(())
        );
    }
}

#[test]
fn accepts_an_unknown_put_as_last_even_if_invoked_early() {
    // With no answer it may have taken effect after everything else.
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    h.invoke(2, "k", put("2"), 5);
    answered(&mut h, 1, "k", put("3"), [20, 30], Outcome::Done);
    answered(&mut h, 1, "k", Command::Del, [40, 50], Outcome::Done);
    assert_eq!(
        check_no_lost_writes(&h, &finals(&[("k", Some("2"))])),
        Ok(())
    );
}

#[test]
fn accepts_absent_after_a_delete() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "k", Command::Del, [20, 30], Outcome::Done);
    assert_eq!(check_no_lost_writes(&h, &finals(&[("k", None)])), Ok(()));
    // A key missing from the map is absent.
    assert_eq!(check_no_lost_writes(&h, &finals(&[])), Ok(()));
}

#[test]
fn accepts_absent_after_an_unknown_delete() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    h.invoke(2, "k", Command::Del, 5);
    answered(&mut h, 1, "k", put("2"), [20, 30], Outcome::Done);
    assert_eq!(check_no_lost_writes(&h, &finals(&[("k", None)])), Ok(()));
}

#[test]
fn accepts_keys_only_read_or_only_failed_as_absent() {
    let mut h = History::new();
    answered(&mut h, 1, "read", Command::Get, [0, 10], Outcome::NotFound);
    answered(&mut h, 1, "failed", put("1"), [0, 10], Outcome::Failed);
    let state = finals(&[("read", None), ("failed", None)]);
    assert_eq!(check_no_lost_writes(&h, &state), Ok(()));
}

#[test]
fn rejects_a_final_value_older_than_an_acknowledged_put() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    let newer = answered(&mut h, 2, "k", put("2"), [20, 30], Outcome::Done);
    let result = check_no_lost_writes(&h, &finals(&[("k", Some("1"))]));
    assert_lost(result, "k", newer);
}

#[test]
fn rejects_absent_when_an_acknowledged_put_follows_the_last_delete() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "k", Command::Del, [20, 30], Outcome::Done);
    let newer = answered(&mut h, 2, "k", put("2"), [40, 50], Outcome::Done);
    assert_lost(
        check_no_lost_writes(&h, &finals(&[("k", None)])),
        "k",
        newer,
    );
}

#[test]
fn rejects_absent_when_the_key_was_never_deleted() {
    let mut h = History::new();
    let only = answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    assert_lost(check_no_lost_writes(&h, &finals(&[])), "k", only);
}

#[test]
fn rejects_a_value_that_survived_an_acknowledged_delete() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    let del = answered(&mut h, 1, "k", Command::Del, [20, 30], Outcome::Done);
    let result = check_no_lost_writes(&h, &finals(&[("k", Some("1"))]));
    assert_lost(result, "k", del);
}

#[test]
fn rejects_phantom_values() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "k", put("failed"), [20, 30], Outcome::Failed);
    answered(
        &mut h,
        1,
        "other",
        put("elsewhere"),
        [20, 30],
        Outcome::Done,
    );
    for value in ["never written", "failed", "elsewhere"] {
        let state = finals(&[("k", Some(value)), ("other", Some("elsewhere"))]);
        assert_eq!(
            check_no_lost_writes(&h, &state),
            Err(DurabilityError::PhantomValue {
                key: "k".to_owned(),
                value: value.to_owned()
            })
        );
    }
    // A key the history never touched cannot hold anything either.
    let state = finals(&[
        ("k", Some("1")),
        ("other", Some("elsewhere")),
        ("z", Some("1")),
    ]);
    assert_eq!(
        check_no_lost_writes(&h, &state),
        Err(DurabilityError::PhantomValue {
            key: "z".to_owned(),
            value: "1".to_owned()
        })
    );
}

#[test]
fn rejects_duplicate_values_as_a_workload_bug() {
    let mut h = History::new();
    answered(&mut h, 1, "a", put("x"), [0, 10], Outcome::Done);
    answered(&mut h, 1, "b", put("x"), [20, 30], Outcome::Failed);
    assert_eq!(
        check_no_lost_writes(&h, &finals(&[("a", Some("x"))])),
        Err(DurabilityError::DuplicateValue {
            key: "b".to_owned(),
            value: "x".to_owned()
        })
    );
}

#[test]
fn the_report_names_the_lost_write_and_the_stale_source() {
    let mut h = History::new();
    answered(&mut h, 1, "k", put("1"), [0, 10], Outcome::Done);
    answered(&mut h, 2, "k", put("2"), [20, 30], Outcome::Done);
    let report = check_no_lost_writes(&h, &finals(&[("k", Some("1"))]))
        .unwrap_err()
        .to_string();
    let expected = "\
lost write: key \"k\" ended \"1\", losing acknowledged operation #1:
  acknowledged: #1 client 2 PUT \"2\" -> done [20, 30] ms
  the final value \"1\" was last possibly written by #0 client 1 PUT \"1\" -> done [0, 10] ms,
  which completed at 10 ms, before the acknowledged operation was invoked at 20 ms
";
    assert_eq!(report, expected);
}

/// The PUT of `key` whose value, as the final state, would lose an acknowledged update:
/// acknowledged itself, and completed before another acknowledged update was invoked.
fn superseded_put<'h>(history: &'h History, key: &str) -> Option<&'h Operation> {
    let acknowledged = |op: &&Operation| {
        op.key == key && op.command != Command::Get && op.outcome == Outcome::Done
    };
    history
        .operations()
        .iter()
        .filter(acknowledged)
        .find(|put| {
            matches!(put.command, Command::Put { .. })
                && history
                    .operations()
                    .iter()
                    .filter(acknowledged)
                    .any(|later| {
                        put.complete_ms
                            .is_some_and(|done_ms| done_ms < later.invoke_ms)
                    })
        })
}

#[test]
fn accepts_the_true_final_state_of_randomized_runs() {
    for seed in 0..20 {
        for workload in [&MIXED, &UNRELIABLE] {
            let run = plan(seed, workload);
            let history = record(&run.planned);
            assert_eq!(
                check_no_lost_writes(&history, &run.final_values),
                Ok(()),
                "seed {seed}"
            );
        }
    }
}

#[test]
fn rejects_randomized_final_states_rolled_back_past_an_acknowledged_write() {
    let mut rolled_back = 0;
    for seed in 0..20 {
        let run = plan(seed, &MIXED);
        let history = record(&run.planned);
        for key in MIXED.keys {
            let Some(put) = superseded_put(&history, key) else {
                continue;
            };
            let Command::Put { value } = &put.command else {
                unreachable!("superseded_put returns PUTs");
            };
            let mut state = run.final_values.clone();
            state.insert(key.to_string(), Some(value.clone()));
            match check_no_lost_writes(&history, &state) {
                Err(DurabilityError::LostWrite {
                    key: lost_key,
                    lost_operation,
                    ..
                }) => {
                    let lost = &history.operations()[lost_operation];
                    assert_eq!(lost_key, *key, "seed {seed}");
                    assert_eq!(lost.outcome, Outcome::Done, "seed {seed}");
                    assert!(put.complete_ms.unwrap() < lost.invoke_ms, "seed {seed}");
                }
                other => panic!("seed {seed}, key {key}: expected a lost write, got {other:?}"),
            }
            rolled_back += 1;
        }
    }
    assert!(
        rolled_back >= 40,
        "only {rolled_back} keys could be rolled back"
    );
}
