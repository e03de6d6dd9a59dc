//! Is the history linearizable? Each key is a register (initially absent), checked on its
//! own: linearizability is compositional, so a history is linearizable exactly when every
//! key's sub-history is, and small per-key searches stay fast.
//!
//! [`search`] is Wing & Gong's exhaustive search, over the time-ordered [`events`] and with
//! the [`memo`] of explored nodes; [`input`] decides what each recorded operation means;
//! [`model`] is the register; this module runs them key by key and writes the report.

mod events;
mod input;
mod memo;
mod model;
mod search;

#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use super::describe;
use crate::history::{Command, History, Operation};
use input::KeyInput;
use search::Verdict;

/// Bounds the search, so that a pathological history ends as
/// [`LinearizabilityError::Inconclusive`] instead of running for hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearizabilityConfig {
    /// The most scan steps the search may take on one key before giving up.
    pub max_steps_per_key: u64,
}

impl Default for LinearizabilityConfig {
    /// Far more than a key of a few hundred operations needs (thousands of steps when
    /// linearizable, rarely a few hundred thousand when not), yet a fraction of a second.
    fn default() -> Self {
        LinearizabilityConfig {
            max_steps_per_key: 2_000_000,
        }
    }
}

/// What a successful check covered, so that a test can tell a real pass from a vacuous
/// one and a run can report the checker's cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinearizabilityStats {
    /// Keys checked.
    pub keys: usize,
    /// Operations that carried information (not failed, not a GET without an answer).
    pub operations: usize,
    /// Scan steps taken, over all keys.
    pub steps: u64,
}

/// Why a history was not shown linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinearizabilityError {
    /// No order of the key's operations respects both real time and the register.
    Violation {
        /// The key whose sub-history cannot be linearized.
        key: String,
        /// The indices ([`Operation::index`]) of every operation on the key, failed ones
        /// included, in invocation order: the sub-history to show beside the report.
        operations: Vec<usize>,
        /// The longest linearizable prefix found and the operation that could not follow
        /// it, with times.
        detail: String,
    },
    /// The search ran out of budget on this key before deciding.
    Inconclusive {
        /// The key left undecided.
        key: String,
        /// Steps taken when the search gave up.
        steps: u64,
    },
}

impl fmt::Display for LinearizabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinearizabilityError::Violation {
                key,
                operations,
                detail,
            } => {
                writeln!(
                    f,
                    "linearizability violation on key {key:?} ({} operations on the key):",
                    operations.len()
                )?;
                for line in detail.lines() {
                    writeln!(f, "  {line}")?;
                }
                Ok(())
            }
            LinearizabilityError::Inconclusive { key, steps } => write!(
                f,
                "linearizability of key {key:?} is undecided: the search gave up after \
                 {steps} steps (raise max_steps_per_key to decide it)"
            ),
        }
    }
}

impl std::error::Error for LinearizabilityError {}

/// Checks that every key's sub-history is linearizable.
///
/// A violation is reported in preference to an undecided key, since it is definite; among
/// equals the first key in lexical order wins, so the same history always yields the same
/// report.
pub fn check_linearizable(
    history: &History,
    config: &LinearizabilityConfig,
) -> Result<LinearizabilityStats, LinearizabilityError> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.operations() {
        by_key.entry(&op.key).or_default().push(op);
    }

    let mut stats = LinearizabilityStats::default();
    let mut undecided = None;
    for (key, key_ops) in by_key {
        let input = input::prepare(&key_ops);
        stats.keys += 1;
        stats.operations += input.ops.len();
        match search::search(&input.ops, config.max_steps_per_key) {
            Verdict::Linearizable { steps } => stats.steps += steps,
            Verdict::Exhausted { steps } => {
                stats.steps += steps;
                undecided.get_or_insert(LinearizabilityError::Inconclusive {
                    key: key.to_owned(),
                    steps,
                });
            }
            Verdict::Violation {
                prefix, blocked, ..
            } => {
                return Err(LinearizabilityError::Violation {
                    key: key.to_owned(),
                    operations: key_ops.iter().map(|op| op.index).collect(),
                    detail: explain(&input, &prefix, blocked),
                })
            }
        }
    }
    match undecided {
        Some(error) => Err(error),
        None => Ok(stats),
    }
}

/// The report of a violation: the prefix that worked, the value it left, and the operation
/// that could not follow it.
fn explain(input: &KeyInput<'_>, prefix: &[usize], blocked: usize) -> String {
    let mut text = format!(
        "longest linearizable prefix found ({} of {} operations):\n",
        prefix.len(),
        input.ops.len()
    );
    // Replayed from the recorded commands: the search only knows interned states.
    let mut value: Option<&str> = None;
    for (position, &op) in prefix.iter().enumerate() {
        let source = input.sources[op];
        text += &format!("  {}. {}\n", position + 1, describe::operation(source));
        match &source.command {
            Command::Put { value: written } => value = Some(written),
            Command::Del => value = None,
            Command::Get => {}
        }
    }
    text += &format!(
        "value after the prefix: {}\n\
         could not place {}\n\
         it had to take effect by its return (an unanswered PUT: by the return of the \
         first GET that saw its value), and no order of the operations concurrent with \
         it explains its answer",
        describe::value(value),
        describe::operation(input.sources[blocked]),
    );
    text
}
