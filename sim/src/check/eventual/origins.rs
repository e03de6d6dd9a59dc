//! No value from nowhere: every value a read or the final state shows was written by a
//! client's add that may have been applied (not one answered `unavailable`, which was
//! never tried), invoked before a read showing it was answered. Values are unique (each
//! holds its add's unique element), so each names the one add that wrote it. This holds
//! in every world, siblings or last write wins.

use std::collections::BTreeMap;

use ringkv_core::Ts;

use super::{possibly_applied, FinalValues};
use crate::eventual::workload::{EvCommand, EvHistory, EvOp, EvOutcome};

/// Every value every read and the final state show comes from an add that may have been
/// applied, invoked before the read was answered.
pub fn check_origins(history: &EvHistory, finals: &FinalValues) -> Result<(), Vec<String>> {
    let writer: BTreeMap<(&str, &str), &EvOp> = history
        .iter()
        .filter_map(|op| match &op.command {
            EvCommand::Add { value, .. } => Some(((op.key.as_str(), value.as_str()), op)),
            _ => None,
        })
        .collect();
    let mut problems = Vec::new();
    let mut judge = |key: &str, values: &[Option<String>], what: &str, answered_ms: Option<Ts>| {
        for value in values.iter().flatten() {
            let Some(add) = writer.get(&(key, value.as_str())) else {
                problems.push(format!(
                    "{key}: {what} shows {value:?}, which no client wrote"
                ));
                continue;
            };
            if !possibly_applied(add) {
                problems.push(format!(
                    "{key}: {what} shows {value:?} of operation {}, which was never applied ({:?})",
                    add.index, add.outcome
                ));
            }
            if answered_ms.is_some_and(|answered| add.invoke_ms > answered) {
                problems.push(format!(
                    "{key}: {what} shows {value:?} of operation {}, invoked after the read was answered",
                    add.index
                ));
            }
        }
    };
    for op in history {
        if let (EvCommand::Read, EvOutcome::Found { values, .. }) = (&op.command, &op.outcome) {
            let what = format!(
                "read {} ({:?} through node {})",
                op.index, op.level, op.node
            );
            judge(&op.key, values, &what, op.complete_ms);
        }
    }
    for (key, values) in finals {
        judge(key, values, "the final state", None);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
