//! Reads that overlap what came before them (PROTOCOL.md section 2):
//! - [`check_read_after_write`]: a read at R after a write acknowledged at W, with
//!   R + W > N, returns that write or a successor: its context covers the write's (under
//!   last write wins, its stamp is at least the write's);
//! - [`check_monotonic_reads`]: with read repair, a read at R2 after a read at R1, with
//!   R1 + R2 > N, never goes back in time: its context covers the first one's.
//!
//! Two things excuse a read that knows less: a disk lost since the earlier operation was
//! sent (it may have taken a copy the overlap counted on), and a delete of the key that
//! may have been applied since (its tombstone may have been reaped, and a grave forgets
//! the versions it removed). Keys that clients never delete are judged in full.

use ringkv_core::proto::Consistency;
use ringkv_core::versions::{decode_context, VersionVector};
use ringkv_core::Ts;
use serde_json::Value;

use super::{disk_lost_between, possibly_applied};
use crate::eventual::workload::{EvCommand, EvHistory, EvOp, EvOutcome};

/// What an answer shows the client knows of its key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Knows {
    /// Siblings mode: the context, every dot seen.
    Dots(VersionVector),
    /// Last write wins: the stamp of the version shown, as (time, node).
    Stamp(u64, u64),
    /// Nothing that can be compared (a failed operation, a deletion under last write
    /// wins, an answer that does not parse).
    Nothing,
}

impl Knows {
    fn of(op: &EvOp, lww: bool) -> Knows {
        match (&op.outcome, lww) {
            (EvOutcome::Found { clocks, .. }, true) => clocks.first().map_or(Knows::Nothing, stamp),
            (EvOutcome::Written { clock, .. }, true) => stamp(clock),
            (EvOutcome::Found { context, .. } | EvOutcome::Written { context, .. }, false) => {
                dots(context)
            }
            (EvOutcome::NotFound { context }, false) => context
                .as_deref()
                .map_or(Knows::Dots(VersionVector::new()), dots),
            _ => Knows::Nothing,
        }
    }

    /// Whether this answer shows everything `earlier` showed, or a successor.
    fn covers(&self, earlier: &Knows) -> bool {
        match (self, earlier) {
            (Knows::Dots(mine), Knows::Dots(theirs)) => mine.covers(theirs),
            (Knows::Stamp(t, n), Knows::Stamp(et, en)) => (t, n) >= (et, en),
            _ => false,
        }
    }
}

fn dots(context: &str) -> Knows {
    decode_context(context).map_or(Knows::Nothing, Knows::Dots)
}

/// A last-write-wins CLOCK object, `{"ts":MS,"node":ID}`.
fn stamp(clock: &Value) -> Knows {
    match (
        clock.get("ts").and_then(Value::as_u64),
        clock.get("node").and_then(Value::as_u64),
    ) {
        (Some(ts), Some(node)) => Knows::Stamp(ts, node),
        _ => Knows::Nothing,
    }
}

/// How many replicas `level` asks for, if N can meet it.
fn quorum(level: Consistency, n: usize) -> Option<usize> {
    Some(level.replicas(n)).filter(|&r| r <= n)
}

/// Whether a delete of `key` may have been applied after `since_ms` and before
/// `until_ms`: it may have removed, by a reap, what the earlier operation knew.
fn deleted_since(history: &EvHistory, key: &str, since_ms: Ts, until_ms: Ts) -> bool {
    history.iter().any(|x| {
        x.key == key
            && matches!(x.command, EvCommand::Delete { .. })
            && possibly_applied(x)
            && x.invoke_ms < until_ms
            && !(matches!(x.outcome, EvOutcome::Written { .. })
                && x.complete_ms.is_some_and(|done| done < since_ms))
    })
}

/// The later read `read` must cover `earlier` (completed before it was sent), unless a
/// disk loss or a delete excuses it.
fn judge(
    history: &EvHistory,
    knows: &[Knows],
    earlier: &EvOp,
    read: &EvOp,
    disks_lost_at: &[Ts],
) -> Option<String> {
    let before = &knows[earlier.index];
    // A deletion under last write wins shows no stamp: nothing to hold the read to.
    if *before == Knows::Nothing || knows[read.index].covers(before) {
        return None;
    }
    let until = read.complete_ms.unwrap_or(Ts::MAX);
    if disk_lost_between(disks_lost_at, earlier.invoke_ms, until)
        || deleted_since(history, &read.key, earlier.invoke_ms, until)
    {
        return None;
    }
    Some(format!(
        "{}: read {} ({:?} through node {}, {}..{:?} ms) answered {:?}, which does not cover operation {} ({:?} {:?} through node {}, done at {:?} ms): {:?}",
        read.key, read.index, read.level, read.node, read.invoke_ms, read.complete_ms,
        read.outcome, earlier.index, earlier.command, earlier.level, earlier.node,
        earlier.complete_ms, earlier.outcome
    ))
}

/// The reads and writes that succeeded, with what they know, and how far each reached.
fn known(history: &EvHistory, lww: bool) -> Vec<Knows> {
    history.iter().map(|op| Knows::of(op, lww)).collect()
}

/// Whether `read` is a successful read of `op`'s key sent after `op` was answered.
fn follows(op: &EvOp, read: &EvOp) -> bool {
    read.key == op.key
        && read.command == EvCommand::Read
        && read.outcome.is_success()
        && op.complete_ms.is_some_and(|done| done < read.invoke_ms)
}

/// A read at R after a write acknowledged at W, R + W > N, returns it or a successor.
pub fn check_read_after_write(
    history: &EvHistory,
    n: usize,
    lww: bool,
    disks_lost_at: &[Ts],
) -> Result<(), Vec<String>> {
    let knows = known(history, lww);
    let mut problems = Vec::new();
    for write in history {
        let acked = matches!(write.outcome, EvOutcome::Written { .. });
        let Some(w) = quorum(write.level, n).filter(|_| acked) else {
            continue;
        };
        for read in &history[write.index + 1..] {
            if !follows(write, read) || quorum(read.level, n).is_none_or(|r| r + w <= n) {
                continue;
            }
            problems.extend(judge(history, &knows, write, read, disks_lost_at));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// With read repair, a read at R2 after a read at R1, R1 + R2 > N, never goes back in
/// time.
pub fn check_monotonic_reads(
    history: &EvHistory,
    n: usize,
    lww: bool,
    disks_lost_at: &[Ts],
) -> Result<(), Vec<String>> {
    let knows = known(history, lww);
    let mut problems = Vec::new();
    for first in history {
        let ok = first.command == EvCommand::Read && first.outcome.is_success();
        let Some(r1) = quorum(first.level, n).filter(|_| ok) else {
            continue;
        };
        for read in &history[first.index + 1..] {
            if !follows(first, read) || quorum(read.level, n).is_none_or(|r2| r1 + r2 <= n) {
                continue;
            }
            problems.extend(judge(history, &knows, first, read, disks_lost_at));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
