//! Last-write-wins worlds: the final value of each key is the write with the highest
//! stamp among those acknowledged or possibly applied. The final state's stamp is at
//! least every acknowledged write's (unless a lost disk may have held that write's only
//! copy), and it was made by a write that may have been applied: its value's own add,
//! with that add's stamp when the add was acknowledged, or some delete.

use ringkv_core::eventual::KeyState;
use ringkv_core::versions::{LwwVersion, Payload, Stamp};
use ringkv_core::Ts;
use serde_json::Value;

use super::{excused_by_disk_loss, possibly_applied, EvSnapshot};
use crate::eventual::workload::{EvCommand, EvHistory, EvOp, EvOutcome};

/// The stamp an acknowledged write's answer gave.
fn acked_stamp(op: &EvOp) -> Option<Stamp> {
    let EvOutcome::Written { clock, .. } = &op.outcome else {
        return None;
    };
    Some(Stamp {
        ts_ms: clock.get("ts").and_then(Value::as_u64)?,
        node: clock.get("node").and_then(Value::as_u64)?,
    })
}

/// The state every replica of `key` agreed on (convergence was checked before).
fn final_state<'a>(snapshot: &'a EvSnapshot, key: &str) -> Option<&'a KeyState> {
    let first = snapshot.replicas.get(key)?.first()?;
    snapshot.nodes.get(first)?.as_ref()?.states.get(key)
}

/// Every key's final state is the write with the highest stamp among those that may have
/// been applied.
pub fn check_lww_final(
    history: &EvHistory,
    snapshot: &EvSnapshot,
    n: usize,
    disks_lost_at: &[Ts],
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for key in snapshot.replicas.keys() {
        let ops: Vec<&EvOp> = history
            .iter()
            .filter(|op| &op.key == key && op.command != EvCommand::Read)
            .collect();
        let version = match final_state(snapshot, key) {
            Some(KeyState::Lww(version)) => Some(version),
            Some(other) => {
                problems.push(format!("{key}: a last-write-wins world holds {other:?}"));
                continue;
            }
            None => None,
        };
        if let Err(problem) = judge_key(&ops, version, n, disks_lost_at) {
            problems.push(format!("{key}: {problem}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// One key: its writes (in order) and its final version, if any.
fn judge_key(
    ops: &[&EvOp],
    version: Option<&LwwVersion>,
    n: usize,
    disks_lost_at: &[Ts],
) -> Result<(), String> {
    let must_keep = ops
        .iter()
        .filter(|op| !excused_by_disk_loss(op, n, disks_lost_at))
        .filter_map(|op| Some((acked_stamp(op)?, op.index)))
        .max();
    let Some(version) = version else {
        // Nothing left: a deletion won and was reaped, or nothing was ever kept.
        let deleted = ops.iter().any(|op| {
            matches!(op.command, EvCommand::Delete { .. })
                && possibly_applied(op)
                && acked_stamp(op).is_none_or(|s| must_keep.is_none_or(|(keep, _)| s >= keep))
        });
        return match must_keep {
            Some((_, index)) if !deleted => Err(format!(
                "holds nothing, though operation {index} was acknowledged and no delete may have won"
            )),
            _ => Ok(()),
        };
    };
    if let Some((keep, index)) = must_keep.filter(|(keep, _)| *keep > version.stamp) {
        return Err(format!(
            "the final stamp {:?} is below {keep:?} of acknowledged operation {index}",
            version.stamp
        ));
    }
    let made_by = |op: &&&EvOp| match (&op.command, &version.payload) {
        (EvCommand::Add { value, .. }, Payload::Value(v)) => value == v,
        (EvCommand::Delete { .. }, Payload::Deleted) => true,
        _ => false,
    };
    let makers: Vec<&&EvOp> = ops.iter().filter(made_by).collect();
    let fits = makers
        .iter()
        .any(|op| possibly_applied(op) && acked_stamp(op).is_none_or(|s| s == version.stamp));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "the final version {version:?} was made by no write that may have been applied with its stamp"
        ))
    }
}
