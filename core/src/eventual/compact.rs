//! Compaction of an eventual-mode node's log: the records recovery needs, and nothing
//! else.
//!
//! Recovery folds the log into every key's last state, the hints still held, the debts
//! still owed, whether the node is catching up, the floor of its counters and the
//! request numbers it has used. All of those are in the node's memory or its store, so a
//! compacted log is a function of its state: `CatchingUp` if the log says so, one
//! `Carried` record for the floor, the request high-water mark and the last stamp, one
//! `State` per key in key order, one `Hint` per hint held and one `Owed` per debt, by id.
//! A debt names only the replicas that have not confirmed it yet: confirmations are not
//! logged, so the whole log would have this node ship again to one that did (harmless,
//! as every delivery is a merge), and the compacted log does not.
//! Its size is bounded by the store and the bounded hints and debts, not by the history.
//!
//! States are copied byte for byte from where the store points, read back through its
//! reader, so a read can fail: then there is no compaction this time, and the log goes on.
//! The state described includes records appended and not yet durable: once the compacted
//! log is durable, so is everything appended before it was built. Timers and what is
//! only in memory (grave and debt times, when hints were sent, requests in flight) are
//! untouched: only the log and the store's locations change.

use std::collections::BTreeMap;

use crate::log::{encode_frame, FRAME_HEADER_BYTES};
use crate::storage::{LogReader, PersistToken, ValueLoc};

use super::record::{state_offset_in_payload, Record};
use super::Node;

/// A compacted log, built from a node's state and waiting to replace its log.
#[derive(Clone, Debug)]
pub struct CompactedLog {
    /// The whole new log, as framed records.
    pub bytes: Vec<u8>,
    /// Keys it holds a state of.
    pub keys: usize,
    /// Hints it holds.
    pub hints: usize,
    /// Debts it holds.
    pub owed: usize,
    /// Where each key's state lay (its offset in the old log) and where it lies in the
    /// new one.
    moves: BTreeMap<u64, ValueLoc>,
    /// The old log's length when this was built, appends not yet durable included.
    built_len: u64,
}

/// Appends `record` to `out` as one frame; where its payload starts.
fn push_frame(out: &mut Vec<u8>, record: &Record) -> u64 {
    let payload_offset = (out.len() + FRAME_HEADER_BYTES) as u64;
    encode_frame(&record.encode(), out);
    payload_offset
}

impl<R: LogReader> Node<R> {
    /// The log from which [`Node::recover`] rebuilds this node: its keys, hints, debts,
    /// catching up, counters' floor and request numbers. Fails if a state cannot be read
    /// back from the log; the caller then keeps the log as it is.
    pub fn compaction_log(&self) -> Result<CompactedLog, String> {
        let mut bytes = Vec::new();
        if self.resync.logged {
            push_frame(&mut bytes, &Record::CatchingUp);
        }
        let carried = Record::Carried {
            floor: self.floor,
            next_req: self.next_req,
            last_stamp_ms: self.last_stamp.map(|stamp| stamp.ts_ms),
        };
        push_frame(&mut bytes, &carried);
        let mut moves = BTreeMap::new();
        for (key, loc) in self.store.entries() {
            let state = self
                .store
                .reader()
                .read_at(loc.offset, loc.len as usize)
                .map_err(|err| format!("reading the state of {key:?}: {err}"))?;
            if state.len() != loc.len as usize {
                return Err(format!(
                    "reading the state of {key:?}: {} of {} bytes",
                    state.len(),
                    loc.len
                ));
            }
            let record = Record::State {
                key: key.to_owned(),
                state,
            };
            let payload_offset = push_frame(&mut bytes, &record);
            let to = ValueLoc {
                offset: payload_offset + state_offset_in_payload(key.len()) as u64,
                len: loc.len,
            };
            let clash = moves.insert(loc.offset, to);
            assert!(clash.is_none(), "two keys' states at offset {}", loc.offset);
        }
        for hint in self.hints.iter() {
            let record = Record::Hint {
                id: hint.id,
                target: hint.target,
                created_ms: hint.created_ms,
                key: hint.key.clone(),
                state: hint.state.clone(),
            };
            push_frame(&mut bytes, &record);
        }
        for (&id, owed) in &self.owed {
            let record = Record::Owed {
                id,
                coordinator: owed.coordinator,
                coordinator_req: owed.coordinator_req,
                key: owed.key.clone(),
                targets: owed.targets.iter().copied().collect(),
            };
            push_frame(&mut bytes, &record);
        }
        Ok(CompactedLog {
            bytes,
            keys: moves.len(),
            hints: self.hints.len(),
            owed: self.owed.len(),
            moves,
            built_len: self.durability.log_len(),
        })
    }

    /// The caller replaced the log with `compacted.bytes`, durably, and nothing was
    /// appended since it was built; `covered` is the last write the old log held that
    /// had not been reported durable (the new log holds its effect, so it is durable
    /// now). The store points into the new log and appends go on after it; what waited
    /// for the covered writes runs now, as after any report.
    pub fn install_compaction(&mut self, compacted: CompactedLog, covered: Option<PersistToken>) {
        if let Some(token) = covered {
            self.durability.persisted(token);
            self.key_writes.persisted(token);
        }
        self.durability
            .rebase(compacted.built_len, compacted.bytes.len() as u64);
        let moves = compacted.moves;
        self.store.relocate(|loc| {
            let to = moves.get(&loc.offset).copied();
            let to = to.unwrap_or_else(|| {
                panic!(
                    "the state at offset {} was left out of the compacted log",
                    loc.offset
                )
            });
            assert_eq!(to.len, loc.len, "a state moved with another length");
            to
        });
        while let Some(action) = self.durability.pop_ready() {
            self.run(action);
        }
        while let Some(msg) = self.inbox.pop_front() {
            self.on_peer(self.config.id, msg);
        }
    }
}
