//! From one key's recorded operations to the search's input: which operations carry
//! information, what each one does to the register, and two reductions that keep
//! operations without an answer from blowing up the search.
//!
//! An operation without an answer never returns, so it stays concurrent with everything
//! invoked after it, and a naive search tries every subset of them at every point. Two
//! exact reductions avoid that:
//! - A PUT without an answer whose value some GET read must have taken effect before the
//!   first such GET returned (values are unique, so nothing else could have written it).
//!   Giving it that return time removes it from the rest of the history.
//! - PUTs without an answer whose value nobody read are interchangeable once invoked (same
//!   transition, same never-arriving return), and so are DELs without an answer. The
//!   search only ever places the earliest unplaced one of each group (see
//!   [`Group`]).

use std::collections::BTreeMap;

use ringkv_core::Ts;

use super::model::{Effect, State, ABSENT, FIRST_OBSERVED, UNOBSERVED};
use crate::history::{Command, Operation, Outcome};

/// Operations that are interchangeable once invoked, so that trying more than the
/// earliest unplaced one of a group could only revisit equivalent histories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Group {
    /// PUTs without an answer whose value no GET returned.
    UnreadUnknownPut,
    /// DELs without an answer.
    UnknownDelete,
}

impl Group {
    /// How many groups there are, to size per-group counters.
    pub(super) const COUNT: usize = 2;

    /// This group's slot in per-group counters.
    pub(super) fn slot(self) -> usize {
        match self {
            Group::UnreadUnknownPut => 0,
            Group::UnknownDelete => 1,
        }
    }
}

/// One operation as the search sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SearchOp {
    /// What it requires of the register and does to it.
    pub effect: Effect,
    /// When it was invoked: it cannot take effect earlier.
    pub invoke_ms: Ts,
    /// The latest time it can take effect; `None` if it may take effect at any later time
    /// or never.
    pub complete_ms: Option<Ts>,
    /// Its group of interchangeable operations, if any.
    pub group: Option<Group>,
}

/// One key's operations ready for the search, with the recorded operation behind each.
pub(super) struct KeyInput<'h> {
    /// The operations that carry information, in recorded order.
    pub ops: Vec<SearchOp>,
    /// `sources[i]` is the recorded operation behind `ops[i]`, for the report.
    pub sources: Vec<&'h Operation>,
}

/// Whether `op` says anything about the register: a failed operation changed and observed
/// nothing, and a GET without an answer observed nothing anyone saw.
fn carries_information(op: &Operation) -> bool {
    !matches!(
        (&op.command, &op.outcome),
        (_, Outcome::Failed) | (Command::Get, Outcome::Unknown)
    )
}

/// Prepares the operations of one key (all of them, in recorded order) for the search.
pub(super) fn prepare<'h>(key_ops: &[&'h Operation]) -> KeyInput<'h> {
    let sources: Vec<&Operation> = key_ops
        .iter()
        .copied()
        .filter(|op| carries_information(op))
        .collect();

    let mut observed: BTreeMap<&str, State> = BTreeMap::new();
    let mut first_read_complete_ms: BTreeMap<&str, Ts> = BTreeMap::new();
    let mut writers: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &sources {
        match (&op.command, &op.outcome, op.complete_ms) {
            (Command::Get, Outcome::Found(value), Some(complete_ms)) => {
                let next = FIRST_OBSERVED + observed.len() as State;
                observed.entry(value).or_insert(next);
                let first = first_read_complete_ms.entry(value).or_insert(complete_ms);
                *first = (*first).min(complete_ms);
            }
            (Command::Put { value }, _, _) => *writers.entry(value).or_default() += 1,
            _ => {}
        }
    }

    let ops = sources
        .iter()
        .map(|op| {
            let mut search_op = SearchOp {
                effect: Effect::Impossible,
                invoke_ms: op.invoke_ms,
                complete_ms: op.complete_ms,
                group: None,
            };
            match (&op.command, &op.outcome) {
                (Command::Get, Outcome::Found(value)) => {
                    search_op.effect = Effect::Read(observed[value.as_str()]);
                }
                (Command::Get, Outcome::NotFound) => search_op.effect = Effect::Read(ABSENT),
                (Command::Put { value }, Outcome::Done | Outcome::Unknown) => {
                    let state = observed.get(value.as_str()).copied();
                    search_op.effect = Effect::Write(state.unwrap_or(UNOBSERVED));
                    if op.outcome == Outcome::Unknown {
                        match state {
                            None => search_op.group = Some(Group::UnreadUnknownPut),
                            Some(_) if writers[value.as_str()] == 1 => {
                                // A read before the invocation cannot be explained anyway;
                                // keeping the open interval lets the report blame that GET.
                                let read_ms = first_read_complete_ms[value.as_str()];
                                if read_ms >= op.invoke_ms {
                                    search_op.complete_ms = Some(read_ms);
                                }
                            }
                            Some(_) => {}
                        }
                    }
                }
                (Command::Del, Outcome::Done) => search_op.effect = Effect::DeletePresent,
                (Command::Del, Outcome::NotFound) => search_op.effect = Effect::DeleteAbsent,
                (Command::Del, Outcome::Unknown) => {
                    search_op.effect = Effect::Clear;
                    search_op.group = Some(Group::UnknownDelete);
                }
                _ => {}
            }
            search_op
        })
        .collect();

    KeyInput { ops, sources }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;

    fn prepared(history: &History) -> Vec<SearchOp> {
        let ops: Vec<&Operation> = history.operations().iter().collect();
        prepare(&ops).ops
    }

    #[test]
    fn failed_operations_and_unanswered_gets_are_dropped() {
        let mut h = History::new();
        let put = h.invoke(1, "k", Command::Put { value: "a".into() }, 0);
        h.complete(put, Outcome::Failed, 5);
        let get = h.invoke(1, "k", Command::Get, 6);
        h.complete(get, Outcome::Failed, 7);
        h.invoke(2, "k", Command::Get, 8);
        assert!(prepared(&h).is_empty());
    }

    #[test]
    fn an_unknown_put_that_was_read_must_precede_its_first_read() {
        let mut h = History::new();
        h.invoke(1, "k", Command::Put { value: "a".into() }, 0);
        let late = h.invoke(2, "k", Command::Get, 10);
        let early = h.invoke(3, "k", Command::Get, 11);
        h.complete(early, Outcome::Found("a".into()), 20);
        h.complete(late, Outcome::Found("a".into()), 30);
        let ops = prepared(&h);
        assert_eq!(ops[0].complete_ms, Some(20));
        assert_eq!(ops[0].group, None);
        assert_eq!(ops[0].effect, Effect::Write(FIRST_OBSERVED));
    }

    #[test]
    fn unread_unknown_puts_and_unknown_deletes_are_grouped() {
        let mut h = History::new();
        h.invoke(1, "k", Command::Put { value: "a".into() }, 0);
        h.invoke(2, "k", Command::Del, 1);
        let done = h.invoke(3, "k", Command::Put { value: "b".into() }, 2);
        h.complete(done, Outcome::Done, 3);
        let ops = prepared(&h);
        assert_eq!(ops[0].group, Some(Group::UnreadUnknownPut));
        assert_eq!(ops[0].effect, Effect::Write(UNOBSERVED));
        assert_eq!(ops[0].complete_ms, None);
        assert_eq!(ops[1].group, Some(Group::UnknownDelete));
        assert_eq!(ops[2].group, None);
    }
}
