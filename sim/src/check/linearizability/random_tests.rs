//! Randomized histories that are linearizable by construction (see
//! [`crate::check::generated`]) must be accepted; corrupting one GET into reading a value
//! it provably could not see must then make the checker reject them.

use super::*;
use crate::check::generated::{plan, record, Planned, Workload, MIXED, UNRELIABLE};
use crate::history::{Command, Outcome};

fn is_answered_read(op: &Planned) -> bool {
    op.command == Command::Get && matches!(op.outcome, Some(Outcome::Found(_) | Outcome::NotFound))
}

fn is_acknowledged_update(op: &Planned) -> bool {
    op.command != Command::Get && op.outcome == Some(Outcome::Done)
}

/// A value the read at `read` cannot see in any linearization: written by an acknowledged
/// PUT that an acknowledged update overwrote before the read was invoked.
fn overwritten_value(planned: &[Planned], read: usize) -> Option<String> {
    let get = &planned[read];
    let same_key = || planned.iter().filter(|op| op.key == get.key);
    same_key()
        .filter(|put| is_acknowledged_update(put))
        .find_map(|put| match &put.command {
            Command::Put { value }
                if same_key().any(|later| {
                    is_acknowledged_update(later)
                        && put.end_ms < later.invoke_ms
                        && later.end_ms < get.invoke_ms
                }) =>
            {
                Some(value.clone())
            }
            _ => None,
        })
}

/// A value the read at `read` cannot see in any linearization: written by a PUT invoked
/// after the read was answered.
fn future_value(planned: &[Planned], read: usize) -> Option<String> {
    let get = &planned[read];
    planned.iter().find_map(|put| match &put.command {
        Command::Put { value } if put.key == get.key && put.invoke_ms > get.end_ms => {
            Some(value.clone())
        }
        _ => None,
    })
}

/// Replaces the answer of one read in the second half of the history with a value
/// `impossible` picks, and returns the corrupted plan and the read's key.
fn corrupt(
    mut planned: Vec<Planned>,
    impossible: fn(&[Planned], usize) -> Option<String>,
) -> (Vec<Planned>, &'static str) {
    let read = (planned.len() / 2..planned.len())
        .find(|&i| is_answered_read(&planned[i]) && impossible(&planned, i).is_some())
        .expect("a read to corrupt");
    let value = impossible(&planned, read).expect("checked above");
    planned[read].outcome = Some(Outcome::Found(value));
    let key = planned[read].key;
    (planned, key)
}

fn assert_accepted(seed: u64, workload: &Workload) -> LinearizabilityStats {
    let planned = plan(seed, workload).planned;
    let history = record(&planned);
    let stats = check_linearizable(&history, &LinearizabilityConfig::default())
        .unwrap_or_else(|e| panic!("seed {seed}: rejected a linearizable history:\n{e}"));
    let informative = planned
        .iter()
        .filter(|op| {
            !matches!(
                (&op.command, &op.outcome),
                (_, Some(Outcome::Failed)) | (Command::Get, None)
            )
        })
        .count();
    assert_eq!(stats.operations, informative, "seed {seed}");
    assert_eq!(stats.keys, workload.keys.len(), "seed {seed}");
    // The checker runs for thousands of seeds: it must stay far from its budget.
    let steps_per_op = stats.steps / stats.operations as u64;
    assert!(steps_per_op <= 100, "seed {seed}: {stats:?}");
    stats
}

fn assert_rejected(
    seed: u64,
    workload: &Workload,
    impossible: fn(&[Planned], usize) -> Option<String>,
) {
    let (planned, key) = corrupt(plan(seed, workload).planned, impossible);
    let history = record(&planned);
    match check_linearizable(&history, &LinearizabilityConfig::default()) {
        Err(LinearizabilityError::Violation { key: violated, .. }) => {
            assert_eq!(violated, key, "seed {seed}")
        }
        other => panic!("seed {seed}: expected a violation on {key:?}, got {other:?}"),
    }
}

const SEEDS: std::ops::Range<u64> = 0..20;

#[test]
fn accepts_randomized_linearizable_histories() {
    for seed in SEEDS {
        let stats = assert_accepted(seed, &MIXED);
        // The generator must produce real concurrency and faults, or the test is vacuous.
        let planned = plan(seed, &MIXED).planned;
        let overlapping = planned
            .windows(2)
            .filter(|pair| pair[1].invoke_ms <= pair[0].end_ms)
            .count();
        assert!(
            overlapping > planned.len() / 3,
            "seed {seed}: {overlapping}"
        );
        assert!(
            stats.operations < planned.len(),
            "seed {seed}: no failed ops"
        );
    }
}

#[test]
fn accepts_randomized_histories_full_of_unknown_operations() {
    for seed in SEEDS {
        assert_accepted(seed, &UNRELIABLE);
    }
}

#[test]
fn rejects_randomized_histories_with_one_stale_read() {
    for seed in SEEDS {
        assert_rejected(seed, &MIXED, overwritten_value);
        assert_rejected(seed, &UNRELIABLE, overwritten_value);
    }
}

#[test]
fn rejects_randomized_histories_with_one_read_from_the_future() {
    for seed in SEEDS {
        assert_rejected(seed, &MIXED, future_value);
        assert_rejected(seed, &UNRELIABLE, future_value);
    }
}
