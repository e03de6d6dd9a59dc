//! How checkers name an operation in their reports, so that every report shows the same
//! facts (index, client, command, answer, interval) in the same words.

use crate::history::{Command, Operation, Outcome};

/// One line naming `op`: enough to find it in the history and to see why it matters.
pub(crate) fn operation(op: &Operation) -> String {
    let command = match &op.command {
        Command::Get => "GET".to_owned(),
        Command::Put { value } => format!("PUT {value:?}"),
        Command::Del => "DEL".to_owned(),
    };
    let answer = match &op.outcome {
        Outcome::Found(value) => format!("found {value:?}"),
        Outcome::NotFound => "not_found".to_owned(),
        Outcome::Done => "done".to_owned(),
        Outcome::Failed => "failed".to_owned(),
        Outcome::Unknown => "unknown".to_owned(),
    };
    let interval = match op.complete_ms {
        Some(complete_ms) => format!("[{}, {}] ms", op.invoke_ms, complete_ms),
        None => format!("[{}, never) ms", op.invoke_ms),
    };
    format!(
        "#{} client {} {} -> {} {}",
        op.index, op.client, command, answer, interval
    )
}

/// A register value as a report shows it, so that "absent" cannot be mistaken for a
/// value spelled `absent`.
pub(crate) fn value(value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_owned(),
    }
}
