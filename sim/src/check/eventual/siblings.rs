//! No more siblings than concurrent writers (PROTOCOL.md section 2: versions answered
//! together were written concurrently). No read, and not the final state, shows two
//! versions of which one was written by a client that had seen the other (through its
//! read's context, directly or through versions in between), nor two blind writes that
//! their first replica applied one after the other: a blind write coordinated by a
//! replica of its key, sent after another write through that replica was acknowledged,
//! supersedes it (unless a disk was lost in between, which may have taken the first).

use std::collections::{BTreeMap, BTreeSet};

use ringkv_core::Ts;

use super::{disk_lost_between, possibly_applied, FinalValues};
use crate::eventual::workload::{EvCommand, EvHistory, EvOp, EvOutcome};

/// For each operation, the writes it superseded for good (empty for reads).
type Superseded = Vec<BTreeSet<usize>>;

/// Every read and the final state show only versions that no shown version superseded,
/// and never more versions than writes of the key that may have been applied (for a
/// read, invoked before it was answered).
pub fn check_siblings(
    history: &EvHistory,
    finals: &FinalValues,
    replicas: &BTreeMap<String, Vec<u64>>,
    disks_lost_at: &[Ts],
) -> Result<(), Vec<String>> {
    let writer = writers(history);
    let superseded = superseded(history, &writer, replicas, disks_lost_at);
    // When each write of each key that may have been applied was invoked, in order: a
    // read answered at T can show versions of those invoked by T only.
    let mut writes: BTreeMap<&str, Vec<Ts>> = BTreeMap::new();
    for op in history {
        if op.command != EvCommand::Read && possibly_applied(op) {
            writes
                .entry(op.key.as_str())
                .or_default()
                .push(op.invoke_ms);
        }
    }
    writes
        .values_mut()
        .for_each(|invoked| invoked.sort_unstable());
    let judge = |key: &str, values: &[Option<String>], what: &str, answered: Option<Ts>| {
        let shown = Shown { key, values, what };
        let invoked = writes.get(key).map(Vec::as_slice).unwrap_or_default();
        let writes = answered.map_or(invoked.len(), |at| invoked.partition_point(|&t| t <= at));
        let mut problems = Vec::new();
        shown.judge(history, &writer, &superseded, writes, &mut problems);
        problems
    };
    let mut problems = Vec::new();
    for op in history {
        if let (EvCommand::Read, EvOutcome::Found { values, .. }) = (&op.command, &op.outcome) {
            let what = format!(
                "read {} ({:?} through node {})",
                op.index, op.level, op.node
            );
            problems.extend(judge(&op.key, values, &what, op.complete_ms));
        }
    }
    for (key, values) in finals {
        problems.extend(judge(key, values, "the final state", None));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The add that wrote each value of each key (values are unique: each holds its add's
/// unique element).
fn writers(history: &EvHistory) -> BTreeMap<(&str, &str), usize> {
    history
        .iter()
        .filter_map(|op| match &op.command {
            EvCommand::Add { value, .. } => Some(((op.key.as_str(), value.as_str()), op.index)),
            _ => None,
        })
        .collect()
}

/// What each write superseded, transitively, in history order (a write only ever
/// supersedes writes invoked before it).
fn superseded(
    history: &EvHistory,
    writer: &BTreeMap<(&str, &str), usize>,
    replicas: &BTreeMap<String, Vec<u64>>,
    disks_lost_at: &[Ts],
) -> Superseded {
    let mut out: Superseded = vec![BTreeSet::new(); history.len()];
    for op in history {
        let mut direct = BTreeSet::new();
        match &op.command {
            EvCommand::Read => continue,
            EvCommand::Add { read, blind, .. } | EvCommand::Delete { read, blind } => {
                if !*blind {
                    if let EvOutcome::Found { values, .. } = &history[*read].outcome {
                        for value in values.iter().flatten() {
                            direct.extend(writer.get(&(op.key.as_str(), value.as_str())));
                        }
                    }
                } else if replicas.get(&op.key).is_some_and(|r| r.contains(&op.node)) {
                    direct.extend(blind_predecessors(history, op, disks_lost_at));
                }
            }
        }
        let mut all = direct.clone();
        for &earlier in &direct {
            if earlier < op.index {
                all.extend(out[earlier].iter().copied());
            }
        }
        all.retain(|&e| e < op.index);
        out[op.index] = all;
    }
    out
}

/// The writes of `op`'s key acknowledged through `op`'s node before `op` was sent: its
/// first replica held them durably when it applied the blind `op`.
fn blind_predecessors<'a>(
    history: &'a EvHistory,
    op: &'a EvOp,
    disks_lost_at: &'a [Ts],
) -> impl Iterator<Item = usize> + 'a {
    history[..op.index]
        .iter()
        .filter(move |a| a.key == op.key && a.node == op.node && a.command != EvCommand::Read)
        .filter(move |a| matches!(a.outcome, EvOutcome::Written { .. }))
        .filter(move |a| a.complete_ms.is_some_and(|done| done < op.invoke_ms))
        .filter(move |a| {
            let until = op.complete_ms.unwrap_or(Ts::MAX);
            !disk_lost_between(disks_lost_at, a.invoke_ms, until)
        })
        .map(|a| a.index)
}

/// Versions shown together: by a read, or by the final state.
struct Shown<'a> {
    key: &'a str,
    values: &'a [Option<String>],
    what: &'a str,
}

impl Shown<'_> {
    /// No shown version superseded another shown one, and no more versions than the
    /// `writes` of the key that may have been applied.
    fn judge(
        &self,
        history: &EvHistory,
        writer: &BTreeMap<(&str, &str), usize>,
        superseded: &Superseded,
        writes: usize,
        problems: &mut Vec<String>,
    ) {
        let (key, what) = (self.key, self.what);
        let shown: Vec<usize> = self
            .values
            .iter()
            .flatten()
            .filter_map(|v| writer.get(&(key, v.as_str())).copied())
            .collect();
        for &later in &shown {
            for &earlier in &shown {
                if superseded[later].contains(&earlier) {
                    let (a, b) = (&history[earlier], &history[later]);
                    problems.push(format!(
                        "{key}: {what} shows operation {} as a sibling of operation {} (through node {}, {:?}), which superseded it",
                        a.index, b.index, b.node, b.command
                    ));
                }
            }
        }
        if self.values.len() > writes {
            problems.push(format!(
                "{key}: {what} shows {} versions, more than the {writes} writes that may have been applied by then",
                self.values.len()
            ));
        }
    }
}
