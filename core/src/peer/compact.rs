//! Compaction of a peer node's log: the whole log is rewritten as the records from which
//! [`Peer::recover`] rebuilds an equivalent node, and nothing else. The node writes one
//! log for both of its sides and never rewrites it; without this, the log and the time
//! recovery takes to read it grow with the node's whole history.
//!
//! What a compacted log holds, in this order (replay needs values before the prepares
//! that lock their keys):
//! - `Epoch`: the current epoch, so that recovery starts the next one and transaction IDs
//!   stay unique across the restart;
//! - the decisions the participant remembers, oldest first, within its bounded memory:
//!   an abort as `Renounce` (replay accepts it for a transaction it never saw prepared,
//!   and remembers it as aborted: a late prepare is still refused), a commit as
//!   `Committed`. A commit needs its record too: a participant in doubt asks every other
//!   participant, and one that forgot the commit would take the transaction as never
//!   seen, renounce it and answer `abort` for a transaction that committed. Refusals are
//!   in no log and stay forgotten, as after any restart;
//! - every committed value, as `Value` (its transaction's records are gone);
//! - every transaction prepared here and undecided, as its `PreparePut`/`PrepareDel`
//!   with its participants;
//! - every commit coordinated here whose end is not recorded, as `Decided` with its
//!   participants (recovery runs its phase 2 again).
//!
//! A prepared transaction whose decision is written but not yet durable is carried with
//! its decision (`Commit`/`Abort` after its prepare): the node acknowledges the decision
//! once its write is durable, and the compacted log is what makes it so.
//!
//! The compacted log replaces the whole log, the writes not yet durable included: the
//! caller writes it, makes it durable, puts it in the old log's place, and then calls
//! [`Peer::install_compaction`] with the last of those writes before anything else
//! reaches the node: values moved, so the store and the prepared transactions are told
//! where each one went, appends go on from the new length, and what waited for the
//! covered writes runs. In-memory state (timers, updates in flight, reads, queries,
//! settling) is untouched.

use std::collections::BTreeMap;

use crate::log::{encode_frame, FRAME_HEADER_BYTES};
use crate::replica::compaction::Moved;
use crate::storage::{PersistToken, StorageError, ValueLoc};

use super::record::{
    carried_value_offset_in_payload, encode_prepare_put, value_offset_in_payload, PeerRecord,
};
use super::{Change, LogReader, Peer};

/// A compacted log of a peer node, built by [`Peer::compacted_log`], to replace its
/// whole log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCompaction {
    /// The new log: whole frames, from offset 0.
    pub bytes: Vec<u8>,
    /// Where every value the node points to went, from its offset in the old log.
    pub moves: Vec<Moved>,
    /// The length of the log these bytes replace: nothing may be appended to it before
    /// the compaction is installed.
    pub replaced_len: u64,
}

/// Why no compaction was built; nothing changed, and the caller may try again later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCompactError {
    /// A committed value could not be read back from the log.
    Read(StorageError),
}

impl std::fmt::Display for PeerCompactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerCompactError::Read(e) => write!(f, "reading a value back: {e}"),
        }
    }
}

impl std::error::Error for PeerCompactError {}

/// The compacted log being written, and where its values went.
#[derive(Default)]
struct Writer {
    bytes: Vec<u8>,
    moves: Vec<Moved>,
}

impl Writer {
    fn record(&mut self, record: &PeerRecord) {
        encode_frame(&record.encode(), &mut self.bytes);
    }

    /// Appends a record whose payload holds, at `value_at`, the value that lay at `from`.
    fn value_record(&mut self, payload: &[u8], value_at: usize, from: ValueLoc) {
        let offset = (self.bytes.len() + FRAME_HEADER_BYTES + value_at) as u64;
        encode_frame(payload, &mut self.bytes);
        self.moves.push(Moved {
            from: from.offset,
            to: ValueLoc {
                offset,
                len: from.len,
            },
        });
    }
}

impl<R: LogReader> Peer<R> {
    /// The records of a log from which [`Peer::recover`] rebuilds this node, its writes
    /// not yet durable included, framed as a whole log, with where every value went.
    /// Fails, changing nothing, when a value cannot be read back: the caller skips
    /// compaction.
    pub fn compacted_log(&self) -> Result<PeerCompaction, PeerCompactError> {
        let mut out = Writer::default();
        out.record(&PeerRecord::Epoch { epoch: self.epoch });
        for (txid, commit) in self.participant.remembered_decisions() {
            out.record(&if commit {
                PeerRecord::Committed { txid }
            } else {
                PeerRecord::Renounce { txid }
            });
        }
        self.write_values(&mut out)?;
        self.write_prepares(&mut out);
        self.write_open_commits(&mut out);
        Ok(PeerCompaction {
            bytes: out.bytes,
            moves: out.moves,
            replaced_len: self.durability.log_len(),
        })
    }

    /// Every committed value, read back through the store (its cache, or the log).
    fn write_values(&self, out: &mut Writer) -> Result<(), PeerCompactError> {
        for (key, loc) in self.store.entries() {
            let value = match self.store.peek(key) {
                Ok(Some(value)) => value,
                Ok(None) => {
                    let why = format!("the store lists {key:?} and holds nothing for it");
                    return Err(PeerCompactError::Read(StorageError(why)));
                }
                Err(e) => return Err(PeerCompactError::Read(e)),
            };
            let record = PeerRecord::Value {
                key: key.to_owned(),
                value,
            };
            let at = carried_value_offset_in_payload(key.len());
            out.value_record(&record.encode(), at, loc);
        }
        Ok(())
    }

    /// Every transaction prepared here and not finished, as it was prepared, with its
    /// decision if that is written and not yet durable.
    fn write_prepares(&self, out: &mut Writer) {
        for (txid, key, prepared) in self.participant.prepared_ops() {
            let participants = &prepared.participants;
            match &prepared.change {
                Change::Put { loc, value } => {
                    let payload = encode_prepare_put(txid, key, value, participants);
                    out.value_record(&payload, value_offset_in_payload(key.len()), *loc);
                }
                Change::Del => out.record(&PeerRecord::PrepareDel {
                    txid,
                    key: key.to_owned(),
                    participants: participants.clone(),
                }),
            }
            // A decision still syncing: the compacted log makes it durable.
            match self.participant.deciding_of(txid) {
                Some(true) => out.record(&PeerRecord::Commit { txid }),
                Some(false) => out.record(&PeerRecord::Abort { txid }),
                None => {}
            }
        }
    }

    /// Every commit decided here whose end is not recorded.
    fn write_open_commits(&self, out: &mut Writer) {
        for &txid in &self.commits {
            let Some(participants) = self.driver.participants(txid) else {
                panic!("commit {txid} left the driver unrecorded");
            };
            out.record(&PeerRecord::Decided {
                txid,
                participants: participants.to_vec(),
            });
        }
    }

    /// The caller put `compaction`'s bytes, durable, in the place of the whole log (the
    /// reader now reads them); `covered` is the last write of the old log not yet
    /// reported durable, durable now. Every value is pointed to where it went, appends
    /// go on from the new length, and what waited for the covered writes runs. Legal
    /// only if nothing reached the node since the bytes were built.
    pub fn install_compaction(
        &mut self,
        compaction: &PeerCompaction,
        covered: Option<PersistToken>,
    ) {
        assert_eq!(
            self.durability.log_len(),
            compaction.replaced_len,
            "the log grew after its compaction was built"
        );
        let moved: BTreeMap<u64, ValueLoc> =
            compaction.moves.iter().map(|m| (m.from, m.to)).collect();
        let new = |loc: ValueLoc| -> ValueLoc {
            let Some(&to) = moved.get(&loc.offset) else {
                panic!(
                    "a value at {} was left behind by the compaction",
                    loc.offset
                );
            };
            assert_eq!(to.len, loc.len, "a value moved with another length");
            to
        };
        self.store.relocate(new);
        self.participant.relocate_ops(|prepared| {
            if let Change::Put { loc, .. } = &mut prepared.change {
                *loc = new(*loc);
            }
        });
        if let Some(token) = covered {
            self.durability.persisted(token);
        }
        let new_len = compaction.bytes.len() as u64;
        self.durability.rebase(compaction.replaced_len, new_len);
        while let Some(action) = self.durability.pop_ready() {
            self.run(action);
        }
        while let Some(msg) = self.local.pop_front() {
            self.on_peer(msg);
        }
        self.drain_driver();
        self.check_invariants_impl();
    }
}
