//! The checker against a brute-force oracle on many small arbitrary histories, to show
//! that its reductions (interned values, grouped unanswered operations, forced reads,
//! the memo) neither reject a linearizable history nor accept another.
//!
//! The oracle shares no code with the checker: it tries every order of every subset of
//! the unanswered operations, directly on the definitions.

use ringkv_core::Ts;

use super::*;
use crate::check::generated::SplitMix64;
use crate::history::{Command, History, Operation, Outcome};

/// Picks uniformly among `items`.
fn pick<T: Clone>(rng: &mut SplitMix64, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize].clone()
}

/// A history of up to 7 operations on one key with random intervals and random,
/// mostly plausible answers, so that both verdicts are common.
fn arbitrary_history(rng: &mut SplitMix64) -> History {
    let mut history = History::new();
    let count = 2 + rng.below(6) as usize;
    let mut written = vec!["never-written".to_owned()];
    for i in 0..count {
        let invoke_ms = rng.below(20);
        let command = pick(
            rng,
            &[
                Command::Get,
                Command::Get,
                Command::Put {
                    value: format!("v{i}"),
                },
                Command::Put {
                    value: format!("v{i}"),
                },
                Command::Del,
            ],
        );
        if let Command::Put { value } = &command {
            written.push(value.clone());
        }
        let seen = pick(rng, &written);
        let answer = match &command {
            Command::Get => pick(
                rng,
                &[
                    Some(Outcome::Found(seen.clone())),
                    Some(Outcome::Found(seen)),
                    Some(Outcome::NotFound),
                    Some(Outcome::Failed),
                    None,
                ],
            ),
            Command::Put { .. } => pick(
                rng,
                &[
                    Some(Outcome::Done),
                    Some(Outcome::Done),
                    Some(Outcome::Failed),
                    None,
                    None,
                ],
            ),
            Command::Del => pick(
                rng,
                &[
                    Some(Outcome::Done),
                    Some(Outcome::NotFound),
                    Some(Outcome::Failed),
                    None,
                ],
            ),
        };
        let index = history.invoke((i % 3) as u32, "k", command, invoke_ms);
        if let Some(outcome) = answer {
            history.complete(index, outcome, invoke_ms + rng.below(12));
        }
    }
    history
}

/// Applies `op` to the register, if it can answer as it did.
fn apply(op: &Operation, value: &Option<String>) -> Option<Option<String>> {
    match (&op.command, &op.outcome) {
        (Command::Get, Outcome::Found(seen)) => {
            (value.as_ref() == Some(seen)).then(|| value.clone())
        }
        (Command::Get, Outcome::NotFound) => value.is_none().then_some(None),
        (Command::Put { value: new }, Outcome::Done | Outcome::Unknown) => Some(Some(new.clone())),
        (Command::Del, Outcome::Done) => value.is_some().then_some(None),
        (Command::Del, Outcome::NotFound) => value.is_none().then_some(None),
        (Command::Del, Outcome::Unknown) => Some(None),
        _ => None,
    }
}

/// Whether some order of the remaining operations (answered ones all, unanswered ones
/// any subset) respects real time and the register.
fn oracle(remaining: &mut Vec<&Operation>, value: &Option<String>) -> bool {
    if remaining.iter().all(|op| op.complete_ms.is_none()) {
        return true;
    }
    for i in 0..remaining.len() {
        let op = remaining[i];
        let invoke_ms: Ts = op.invoke_ms;
        let must_wait = remaining
            .iter()
            .any(|other| other.complete_ms.is_some_and(|done_ms| done_ms < invoke_ms));
        if must_wait {
            continue;
        }
        if let Some(next) = apply(op, value) {
            remaining.remove(i);
            let found = oracle(remaining, &next);
            remaining.insert(i, op);
            if found {
                return true;
            }
        }
    }
    false
}

fn oracle_accepts(history: &History) -> bool {
    let mut ops: Vec<&Operation> = history
        .operations()
        .iter()
        .filter(|op| {
            op.outcome != Outcome::Failed
                && !(op.command == Command::Get && op.outcome == Outcome::Unknown)
        })
        .collect();
    oracle(&mut ops, &None)
}

#[test]
fn agrees_with_a_brute_force_oracle() {
    let mut rng = SplitMix64(7);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let history = arbitrary_history(&mut rng);
        let expected = oracle_accepts(&history);
        let verdict = check_linearizable(&history, &LinearizabilityConfig::default());
        assert_eq!(
            verdict.is_ok(),
            expected,
            "case {case}: {verdict:?}\n{:#?}",
            history.operations()
        );
        if expected {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    // Both verdicts must be common, or the comparison proves little.
    assert!(accepted > 600 && rejected > 600, "{accepted} / {rejected}");
}
