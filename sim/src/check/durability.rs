//! No acknowledged write lost: after the cluster quiesced, every key's final value must
//! come from a write that is not older than any acknowledged update of the key.
//!
//! Linearizability judges only what clients saw, so a write lost after the last read of
//! its key goes unnoticed there. Reading every key back once the cluster is quiet and
//! checking it here closes that gap.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use ringkv_core::Ts;

use super::describe;
use crate::history::{Command, History, Operation, Outcome};

/// Why the final state loses or invents a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurabilityError {
    /// A key holds a value no PUT of that key could have written.
    PhantomValue {
        /// The key.
        key: String,
        /// The value it holds.
        value: String,
    },
    /// An acknowledged update was overwritten by something that happened entirely before it.
    LostWrite {
        /// The key.
        key: String,
        /// The index ([`Operation::index`]) of the acknowledged PUT or DEL that was lost.
        lost_operation: usize,
        /// The key's final value.
        final_value: Option<String>,
        /// The lost operation and the latest possible source of the final value, with times.
        detail: String,
    },
    /// Two PUTs wrote the same value: the workload broke its promise of unique values, so
    /// the final state cannot be traced to one write.
    DuplicateValue {
        /// The key of the second PUT of the value.
        key: String,
        /// The value written twice.
        value: String,
    },
}

impl fmt::Display for DurabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurabilityError::PhantomValue { key, value } => write!(
                f,
                "phantom value: key {key:?} ended holding {value:?}, which no PUT of the key \
                 that could have taken effect wrote"
            ),
            DurabilityError::LostWrite {
                key,
                lost_operation,
                final_value,
                detail,
            } => {
                writeln!(
                    f,
                    "lost write: key {key:?} ended {}, losing acknowledged operation \
                     #{lost_operation}:",
                    describe::value(final_value.as_deref())
                )?;
                for line in detail.lines() {
                    writeln!(f, "  {line}")?;
                }
                Ok(())
            }
            DurabilityError::DuplicateValue { key, value } => write!(
                f,
                "workload bug: value {value:?} was written twice (again on key {key:?}), so \
                 writes cannot be told apart"
            ),
        }
    }
}

impl std::error::Error for DurabilityError {}

/// When a possible source of the final value ended, ordered by how late that is.
///
/// The initial state ends before every operation begins; an update without an answer
/// never ends, so it precedes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SourceEnd {
    Initial,
    /// Completed at this time; the operation's index breaks ties, to keep the report
    /// deterministic.
    At(Ts, usize),
    Never,
}

impl SourceEnd {
    /// Whether the source ended strictly before an operation invoked at `invoke_ms`.
    fn precedes(self, invoke_ms: Ts) -> bool {
        match self {
            SourceEnd::Initial => true,
            SourceEnd::At(complete_ms, _) => complete_ms < invoke_ms,
            SourceEnd::Never => false,
        }
    }
}

/// Whether `op` may have changed its key: answered `done`, or never answered.
fn may_have_taken_effect(op: &Operation) -> bool {
    matches!(op.outcome, Outcome::Done | Outcome::Unknown)
}

/// Checks that `final_values` (every key's value read back after the cluster quiesced; a
/// key missing from the map is absent) loses no acknowledged PUT or DEL of `history`.
///
/// Keys are checked in lexical order and the first problem is reported, so the same
/// inputs always give the same report. A duplicate value is reported before anything
/// else, since it makes the other checks meaningless.
pub fn check_no_lost_writes(
    history: &History,
    final_values: &BTreeMap<String, Option<String>>,
) -> Result<(), DurabilityError> {
    let mut writer_of: BTreeMap<&str, &Operation> = BTreeMap::new();
    for op in history.operations() {
        if let Command::Put { value } = &op.command {
            if writer_of.insert(value, op).is_some() {
                return Err(DurabilityError::DuplicateValue {
                    key: op.key.clone(),
                    value: value.clone(),
                });
            }
        }
    }

    let mut ops_by_key: BTreeMap<&str, Vec<&Operation>> = final_values
        .keys()
        .map(|key| (key.as_str(), Vec::new()))
        .collect();
    for op in history.operations() {
        ops_by_key.entry(&op.key).or_default().push(op);
    }
    for (key, key_ops) in ops_by_key {
        let final_value = final_values.get(key).cloned().flatten();
        let latest_source = latest_source(key, &key_ops, final_value.as_deref(), &writer_of)?;
        let lost = key_ops.iter().find(|op| {
            op.command != Command::Get
                && op.outcome == Outcome::Done
                && latest_source.precedes(op.invoke_ms)
        });
        if let Some(lost) = lost {
            return Err(DurabilityError::LostWrite {
                key: key.to_owned(),
                lost_operation: lost.index,
                detail: explain(history, lost, final_value.as_deref(), latest_source),
                final_value,
            });
        }
    }
    Ok(())
}

/// The latest-ending operation among `key_ops` (or the initial state) that could have left
/// `key` holding `final_value`. Every candidate precedes an update exactly when this one
/// does.
fn latest_source(
    key: &str,
    key_ops: &[&Operation],
    final_value: Option<&str>,
    writer_of: &BTreeMap<&str, &Operation>,
) -> Result<SourceEnd, DurabilityError> {
    let end = |op: &Operation| match op.complete_ms {
        Some(complete_ms) => SourceEnd::At(complete_ms, op.index),
        None => SourceEnd::Never,
    };
    match final_value {
        Some(value) => match writer_of.get(value) {
            Some(&put) if put.key == key && may_have_taken_effect(put) => Ok(end(put)),
            _ => Err(DurabilityError::PhantomValue {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
        },
        None => Ok(key_ops
            .iter()
            .filter(|op| op.command == Command::Del && may_have_taken_effect(op))
            .map(|op| end(op))
            .fold(SourceEnd::Initial, SourceEnd::max)),
    }
}

/// The report of a lost write: what was lost, and why nothing left could be newer.
fn explain(
    history: &History,
    lost: &Operation,
    final_value: Option<&str>,
    latest_source: SourceEnd,
) -> String {
    let source = match latest_source {
        SourceEnd::Initial => format!(
            "the final value {} can only be the initial state: no DEL of the key may have \
             taken effect",
            describe::value(final_value)
        ),
        SourceEnd::At(complete_ms, index) => format!(
            "the final value {} was last possibly written by {},\n\
             which completed at {complete_ms} ms, before the acknowledged operation was \
             invoked at {} ms",
            describe::value(final_value),
            describe::operation(&history.operations()[index]),
            lost.invoke_ms
        ),
        SourceEnd::Never => unreachable!("a source that never ends precedes nothing"),
    };
    format!("acknowledged: {}\n{source}", describe::operation(lost))
}
