//! Compaction of a KV server's log (Bitcask's merge): the part of the log before a point
//! is rewritten as the records that still matter, and everything else there is dropped.
//!
//! What still matters of that part: each key's committed value, if the index still
//! points into it (a later write replaced the others), as a [`Record::Value`]; and the
//! prepare of every transaction still in doubt, as it was written. Commits and aborts
//! that were applied, prepares that were decided, and values replaced or deleted are
//! gone. Decisions the participant remembers only from dropped records are forgotten,
//! as a restart forgets refusals: a late repeat of such a transaction is answered as an
//! unknown one (presumed abort), and a late prepare of it is voted on again, which the
//! coordinator answers with an abort.
//!
//! The rewritten bytes take the place of that part of the log in the same offsets: they
//! start where it started and are never longer, and replay skips the rest of the range
//! ([`crate::storage::LogStream::skip_to`]). Values move, so the replica is told where
//! each one went ([`Replica::relocate`]).

use crate::log::encode_frame;
use crate::proto::TxId;
use crate::storage::ValueLoc;

use super::record::{
    carried_value_offset_in_payload, encode_prepare_put, value_offset_in_payload, Record,
};
use super::{LogReader, PreparedOp, Replica};

/// One record a compaction writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Carried {
    /// A committed value whose bytes lie at `loc`.
    Value {
        /// The key.
        key: String,
        /// Where its value lies now.
        loc: ValueLoc,
    },
    /// The prepare of a transaction in doubt: a PUT whose value lies at `put`, or a DEL.
    Prepare {
        /// The transaction.
        txid: TxId,
        /// The key it locks.
        key: String,
        /// Where the value of a PUT lies; `None` for a DEL.
        put: Option<ValueLoc>,
    },
}

/// What a compaction of the log before `end` must write, taken from the replica while
/// every record before `end` is durable and applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionPlan {
    /// Where the compacted part of the log ends (a frame boundary).
    pub end: u64,
    /// The records to write, values first.
    pub carried: Vec<Carried>,
}

/// A value that moved: from the offset it had to where it lies in the rewritten part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Its offset before.
    pub from: u64,
    /// Where it lies now.
    pub to: ValueLoc,
}

impl<R: LogReader> Replica<R> {
    /// What a compaction of the log before `end` must write. Call it only when every
    /// write before `end` is durable and reported (`Persisted`), so that no decision in
    /// that part is still on its way.
    pub fn compaction_plan(&self, end: u64) -> CompactionPlan {
        assert!(
            end <= self.durability.log_len(),
            "compaction past the log's end"
        );
        let mut carried: Vec<Carried> = self
            .store
            .entries()
            .filter(|(_, loc)| loc.offset < end)
            .map(|(key, loc)| Carried::Value {
                key: key.to_owned(),
                loc,
            })
            .collect();
        for (txid, key, op) in self.participant.prepared_ops() {
            let (put, at) = match op {
                PreparedOp::Put { loc, .. } => (Some(*loc), loc.offset),
                PreparedOp::Del { at } => (None, *at),
            };
            if at < end {
                carried.push(Carried::Prepare {
                    txid,
                    key: key.to_owned(),
                    put,
                });
            }
        }
        CompactionPlan { end, carried }
    }

    /// The values of a compaction now lie elsewhere: the index and the prepared
    /// transactions point there. A value that was replaced meanwhile stays replaced.
    /// `start..end` is the compacted part: nothing may still point into it unmoved.
    pub fn relocate(&mut self, start: u64, end: u64, moves: &[Moved]) {
        let moved: std::collections::BTreeMap<u64, ValueLoc> =
            moves.iter().map(|m| (m.from, m.to)).collect();
        let new = |loc: ValueLoc| -> ValueLoc {
            if let Some(&to) = moved.get(&loc.offset) {
                assert_eq!(to.len, loc.len, "a value moved with another length");
                return to;
            }
            assert!(
                !(start..end).contains(&loc.offset),
                "a value at {} was left behind by the compaction of {start}..{end}",
                loc.offset
            );
            loc
        };
        self.store.relocate(new);
        self.participant.relocate_ops(|op| {
            if let PreparedOp::Put { loc, .. } = op {
                *loc = new(*loc);
            }
        });
    }
}

/// Writes a plan's records as log frames placed at offset `start` of the log, through
/// `emit` (one call per frame), reading each value through `read`. Returns where every
/// value went. The frames never take more room than the records they replace.
pub fn write_compacted<E>(
    plan: &CompactionPlan,
    start: u64,
    mut read: impl FnMut(ValueLoc) -> Result<String, E>,
    mut emit: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<Vec<Moved>, E> {
    let mut moves = Vec::new();
    let mut at = start;
    let mut frame = Vec::new();
    for carried in &plan.carried {
        frame.clear();
        let (payload, value_at, from) = match carried {
            Carried::Value { key, loc } => {
                let value = read(*loc)?;
                let record = Record::Value {
                    key: key.clone(),
                    value,
                };
                let at_value = carried_value_offset_in_payload(key.len());
                (record.encode(), Some(at_value), Some(*loc))
            }
            Carried::Prepare {
                txid,
                key,
                put: Some(loc),
            } => {
                let value = read(*loc)?;
                let payload = encode_prepare_put(*txid, key, &value);
                (
                    payload,
                    Some(value_offset_in_payload(key.len())),
                    Some(*loc),
                )
            }
            Carried::Prepare {
                txid,
                key,
                put: None,
            } => {
                let record = Record::PrepareDel {
                    txid: *txid,
                    key: key.clone(),
                };
                (record.encode(), None, None)
            }
        };
        encode_frame(&payload, &mut frame);
        if let (Some(value_at), Some(from)) = (value_at, from) {
            let offset = at + crate::log::FRAME_HEADER_BYTES as u64 + value_at as u64;
            moves.push(Moved {
                from: from.offset,
                to: ValueLoc {
                    offset,
                    len: from.len,
                },
            });
        }
        emit(&frame)?;
        at += frame.len() as u64;
    }
    assert!(
        at <= plan.end.max(start),
        "a compaction wrote {} bytes for {}..{}",
        at - start,
        start,
        plan.end
    );
    Ok(moves)
}
