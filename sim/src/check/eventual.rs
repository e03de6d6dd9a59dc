//! The verdicts of eventual-mode runs (PROTOCOL.md section 2), each a pure function of
//! the clients' history and the cluster's final state:
//! - [`check_convergence`]: once the faults stopped and the run went quiet, every node
//!   places every key where the ring does, every replica of every key holds the same
//!   state, no other node holds the key, and nothing is still
//!   owed (hints, writes owed by a first replica, a node still catching up), and no
//!   node ever met a dot handed out twice;
//! - [`check_set`]: Jepsen's set test: every acknowledged add is in the final set (the
//!   union of the final siblings), and nothing is there that no client ever added;
//! - [`check_superseded`]: a write acknowledged with a read's context superseded every
//!   version that read showed, so none of them is in the final state: no resurrection
//!   after an acknowledged delete, and no add undone by repair;
//! - [`check_eventual_liveness`]: once the cluster settled after the faults, every request
//!   at a level N can meet succeeds;
//! - [`check_siblings`]: no more siblings than concurrent writers;
//! - [`check_origins`]: no value from nowhere: every value shown was written by an add
//!   that may have been applied, invoked before the read showing it was answered;
//! - [`check_read_after_write`] and [`check_monotonic_reads`]: reads that overlap an
//!   acknowledged write, or an earlier read, return it or a successor;
//! - [`check_lww_final`]: under last write wins, the final value is the write with the
//!   highest stamp among those that may have been applied.

use std::collections::{BTreeMap, BTreeSet};

use ringkv_core::eventual::KeyState;
use ringkv_core::proto::EventualResponse;
use ringkv_core::Ts;

use crate::eventual::workload::{
    elements, is_set_key, version_values, EvCommand, EvHistory, EvOp, EvOutcome,
};

mod lww;
mod origins;
mod recency;
mod siblings;

pub use lww::check_lww_final;
pub use origins::check_origins;
pub use recency::{check_monotonic_reads, check_read_after_write};
pub use siblings::check_siblings;

/// What the checks see of one node at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvNodeSnapshot {
    /// Every key's state on this node.
    pub states: BTreeMap<String, KeyState>,
    /// Hints held, by target node.
    pub hints: BTreeMap<u64, usize>,
    /// Writes this node applied first and still owes another replica.
    pub owed: usize,
    /// Whether it still waits for its keys after starting on an empty disk.
    pub catching_up: bool,
    /// Dots its merges found handed out twice (a counter reused after a lost disk).
    pub reused_dots: u64,
}

/// The cluster at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvSnapshot {
    /// Every node, `None` if it does not run.
    pub nodes: BTreeMap<u64, Option<EvNodeSnapshot>>,
    /// Each workload key's replicas (its preference list), as the checker places it from
    /// the ring (`check::cluster::replica_set`), not as the nodes do.
    pub replicas: BTreeMap<String, Vec<u64>>,
    /// Each running node's own preference list for each workload key: every one must
    /// equal `replicas`, or the nodes store keys where the protocol does not.
    pub placed_by: BTreeMap<u64, BTreeMap<String, Vec<u64>>>,
}

/// A key's final state as the clients would read it: its versions' values (`None` for a
/// deletion among siblings); empty when the key holds nothing or only deletions.
pub type FinalValues = BTreeMap<String, Vec<Option<String>>>;

/// Every node places each key on the replicas the ring gives; every replica of every key
/// holds the same state and nothing else holds it; nothing is still owed. Returns the
/// agreed values of each key.
pub fn check_convergence(snapshot: &EvSnapshot) -> Result<FinalValues, Vec<String>> {
    let mut problems = Vec::new();
    for (&id, node) in &snapshot.nodes {
        let Some(node) = node else {
            problems.push(format!("node {id} does not run at the end"));
            continue;
        };
        for (&target, &count) in node.hints.iter().filter(|(_, &c)| c > 0) {
            problems.push(format!("node {id} still holds {count} hints for {target}"));
        }
        if node.owed > 0 {
            problems.push(format!("node {id} still owes {} writes", node.owed));
        }
        if node.catching_up {
            problems.push(format!("node {id} is still catching up"));
        }
        if node.reused_dots > 0 {
            let reused = node.reused_dots;
            problems.push(format!("node {id} met {reused} dots handed out twice"));
        }
    }
    for (&id, placed) in &snapshot.placed_by {
        for (key, replicas) in placed {
            let expected = snapshot.replicas.get(key);
            if expected != Some(replicas) {
                problems.push(format!(
                    "{key}: node {id} places it on {replicas:?}, the ring on {expected:?}"
                ));
            }
        }
    }
    let mut finals = FinalValues::new();
    for (key, replicas) in &snapshot.replicas {
        let state_on = |id: &u64| -> Option<Option<&KeyState>> {
            Some(snapshot.nodes.get(id)?.as_ref()?.states.get(key))
        };
        let states: Vec<(u64, Option<&KeyState>)> = replicas
            .iter()
            .filter_map(|id| Some((*id, state_on(id)?)))
            .collect();
        if let Some((first, state)) = states.first() {
            for (other, other_state) in &states[1..] {
                if other_state != state {
                    problems.push(format!(
                        "{key}: replicas {first} and {other} differ: {state:?} vs {other_state:?}"
                    ));
                }
            }
            match final_values(key, *state) {
                Ok(values) => {
                    finals.insert(key.clone(), values);
                }
                Err(err) => problems.push(format!("{key}: {err}")),
            }
        }
        for (&id, node) in &snapshot.nodes {
            let held = node.as_ref().and_then(|n| n.states.get(key));
            if !replicas.contains(&id) && held.is_some() {
                problems.push(format!("{key}: node {id} is no replica but holds {held:?}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(finals)
    } else {
        Err(problems)
    }
}

/// The values a read of `state` shows.
fn final_values(key: &str, state: Option<&KeyState>) -> Result<Vec<Option<String>>, String> {
    match KeyState::answer(key, state) {
        EventualResponse::Read { versions, .. } => version_values(&versions),
        EventualResponse::NotFound { .. } => Ok(Vec::new()),
        other => Err(format!("a state answers {other:?}")),
    }
}

/// Whether an acknowledged write may have been lost with a disk: acknowledged by a
/// single replica, and sent before a disk was lost (that replica may have been the one,
/// and may have confirmed it before the loss though the answer reached the client after).
pub fn excused_by_disk_loss(op: &EvOp, n: usize, disks_lost_at: &[Ts]) -> bool {
    op.level.replicas(n) <= 1 && disks_lost_at.iter().any(|&lost| op.invoke_ms <= lost)
}

/// Whether a write may have been applied: every outcome but an error that means nothing
/// was tried or changed.
pub fn possibly_applied(op: &EvOp) -> bool {
    match &op.outcome {
        EvOutcome::Failed(code) => {
            !matches!(code.as_str(), "unavailable" | "overloaded" | "malformed")
        }
        _ => true,
    }
}

/// Whether a disk was lost from `from_ms` to `until_ms`, both included.
pub fn disk_lost_between(disks_lost_at: &[Ts], from_ms: Ts, until_ms: Ts) -> bool {
    disks_lost_at
        .iter()
        .any(|&lost| (from_ms..=until_ms).contains(&lost))
}

/// Jepsen's set test over the keys that only ever get adds: every acknowledged add is in
/// the final set (`check_acked`: false in last-write-wins worlds, where concurrent adds
/// are lost by design), and every element there was added by some client.
pub fn check_set(
    history: &EvHistory,
    finals: &FinalValues,
    check_acked: bool,
    n: usize,
    disks_lost_at: &[Ts],
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut added: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for op in history {
        if let EvCommand::Add { element, .. } = &op.command {
            added.entry(&op.key).or_default().insert(element);
        }
    }
    for (key, values) in finals {
        let present: BTreeSet<&str> = values.iter().flatten().flat_map(|v| elements(v)).collect();
        let known = added.get(key.as_str());
        for element in &present {
            if !known.is_some_and(|k| k.contains(element)) {
                problems.push(format!("{key}: element {element} was never added"));
            }
        }
        if !check_acked || !is_set_key(key) {
            continue;
        }
        for op in history.iter().filter(|op| &op.key == key) {
            let EvCommand::Add { element, .. } = &op.command else {
                continue;
            };
            if matches!(op.outcome, EvOutcome::Written { .. })
                && !present.contains(element.as_str())
                && !excused_by_disk_loss(op, n, disks_lost_at)
            {
                problems.push(format!(
                    "{key}: acknowledged add of {element} (operation {}, at {:?} through node {}, {}..{:?} ms) is lost",
                    op.index, op.level, op.node, op.invoke_ms, op.complete_ms
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// No version that an acknowledged write's context saw is in the final state: a delete
/// or add superseded it for good (siblings mode). Blind writes are not judged here.
pub fn check_superseded(
    history: &EvHistory,
    finals: &FinalValues,
    n: usize,
    disks_lost_at: &[Ts],
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for op in history {
        // What a blind write supersedes is up to the replica that applies it first.
        let read = match &op.command {
            EvCommand::Add {
                read, blind: false, ..
            }
            | EvCommand::Delete { read, blind: false } => *read,
            _ => continue,
        };
        if !matches!(op.outcome, EvOutcome::Written { .. })
            || excused_by_disk_loss(op, n, disks_lost_at)
        {
            continue;
        }
        let EvOutcome::Found { values, .. } = &history[read].outcome else {
            continue;
        };
        let Some(now) = finals.get(&op.key) else {
            continue;
        };
        for value in values.iter().flatten() {
            if now.contains(&Some(value.clone())) {
                let what = match op.command {
                    EvCommand::Delete { .. } => "deleted",
                    _ => "superseded",
                };
                problems.push(format!(
                    "{}: {value:?} came back after operation {} {what} it ({:?}, done at {:?} ms)",
                    op.key, op.index, op.level, op.complete_ms
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Every operation invoked from `settled_ms` on, at a level N can meet, succeeded.
pub fn check_eventual_liveness(
    history: &EvHistory,
    settled_ms: Ts,
    n: usize,
) -> Result<(), Vec<String>> {
    let problems: Vec<String> = history
        .iter()
        .filter(|op| op.invoke_ms >= settled_ms && op.level.replicas(n) <= n)
        .filter(|op| !op.outcome.is_success())
        .map(|op| {
            format!(
                "operation {} ({:?} of {} at {:?} through node {}, at {} ms) ended {:?} after the cluster settled",
                op.index, op.command, op.key, op.level, op.node, op.invoke_ms, op.outcome
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod order_tests;
