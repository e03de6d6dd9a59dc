//! The records of the coordinator's log: what must survive a coordinator crash.
//!
//! - `Epoch`: written at every start before any transaction ID of the epoch is used, so
//!   that IDs never repeat across restarts (IDs are `epoch << 32 | sequence`), with the
//!   number of servers the ring expects.
//! - `Member`: a server's ID and address, written before its registration is answered, so
//!   that a stray new ID cannot take a slot after a restart.
//! - `Staged`: a transaction's key, operation and participants, written as its prepares
//!   go out (parallel commit). The client hears `Success` once every participant voted
//!   `ready` and this record is durable: the two syncs run side by side, not one after
//!   the other. A staged transaction without a decision record is resolved at recovery
//!   by asking its participants again: it commits if every one holds it prepared.
//! - `Decided`: the decision of a staged transaction. A commit is synced before phase 2
//!   (so no participant commits what recovery could abort); an abort before the client
//!   hears its error (so recovery cannot commit what a client was told failed).
//! - `Commit`: a commit with its key, operation and participants, as compaction writes
//!   an open commit (and as logs before staging wrote every commit).
//! - `Finished`: both participants acknowledged the commit; not waited for, so a lost one
//!   only makes recovery send the commit again, which is harmless.

use crate::proto::{TxId, TxOp};
use crate::ring::ServerId;
use crate::storage::codec::{push_key, push_text, Reader, RecordError};
use crate::storage::{LogRecord, SyncUrgency};

const TAG_EPOCH: u8 = 1;
const TAG_MEMBER: u8 = 2;
const TAG_COMMIT_PUT: u8 = 3;
const TAG_COMMIT_DEL: u8 = 4;
const TAG_FINISHED: u8 = 5;
const TAG_STAGED_PUT: u8 = 6;
const TAG_STAGED_DEL: u8 = 7;
const TAG_DECIDED_COMMIT: u8 = 8;
const TAG_DECIDED_ABORT: u8 = 9;

/// The most participants a commit record names.
const MAX_PARTICIPANTS: usize = 16;
/// Room for the records of a fixed size (a tag and up to two integers).
const SMALL_RECORD_BYTES: usize = 17;

/// One record of the coordinator's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorRecord {
    /// A start of the coordinator.
    Epoch {
        /// The epoch: the high half of every transaction ID issued in it.
        epoch: u32,
        /// The servers the ring expects.
        expected_servers: u32,
    },
    /// A server registered (or registered again at a new address).
    Member {
        /// Its ID.
        id: ServerId,
        /// Where it listens.
        addr: String,
    },
    /// A transaction is committed.
    Commit {
        /// The transaction.
        txid: TxId,
        /// Its key.
        key: String,
        /// What it does.
        op: TxOp,
        /// Who must hear the commit.
        participants: Vec<ServerId>,
    },
    /// Every participant acknowledged the commit.
    Finished {
        /// The transaction.
        txid: TxId,
    },
    /// A transaction began: what it does and where, before its decision is known.
    Staged {
        /// The transaction.
        txid: TxId,
        /// Its key.
        key: String,
        /// What it does.
        op: TxOp,
        /// Who votes on it.
        participants: Vec<ServerId>,
    },
    /// A staged transaction was decided.
    Decided {
        /// The transaction.
        txid: TxId,
        /// Commit or abort.
        commit: bool,
    },
}

impl CoordinatorRecord {
    /// How soon the record must be synced: nothing waits for a `Finished` record (a lost
    /// one only makes recovery send the commit again), so it rides with the next commit's
    /// sync and starts none of its own. A commit decision holds up only phase 2, which no
    /// client waits for: it may ride with the next sync, unless an update of the key
    /// waits (then the coordinator hastens it).
    pub fn urgency(&self) -> SyncUrgency {
        match self {
            CoordinatorRecord::Finished { .. } => SyncUrgency::Never,
            CoordinatorRecord::Decided { commit: true, .. } => SyncUrgency::Deferrable,
            CoordinatorRecord::Epoch { .. }
            | CoordinatorRecord::Member { .. }
            | CoordinatorRecord::Commit { .. }
            | CoordinatorRecord::Staged { .. }
            | CoordinatorRecord::Decided { commit: false, .. } => SyncUrgency::Now,
        }
    }

    /// The record's payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = match self {
            CoordinatorRecord::Commit {
                key,
                op,
                participants,
                ..
            }
            | CoordinatorRecord::Staged {
                key,
                op,
                participants,
                ..
            } => Vec::with_capacity(transaction_len(key, op, participants)),
            _ => Vec::with_capacity(SMALL_RECORD_BYTES),
        };
        match self {
            CoordinatorRecord::Epoch {
                epoch,
                expected_servers,
            } => {
                out.push(TAG_EPOCH);
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&expected_servers.to_le_bytes());
            }
            CoordinatorRecord::Member { id, addr } => {
                out.push(TAG_MEMBER);
                out.extend_from_slice(&id.to_le_bytes());
                push_key(&mut out, addr);
            }
            CoordinatorRecord::Commit {
                txid,
                key,
                op,
                participants,
            } => {
                let tag = tag_of(op, TAG_COMMIT_PUT, TAG_COMMIT_DEL);
                encode_transaction(&mut out, tag, *txid, key, op, participants);
            }
            CoordinatorRecord::Staged {
                txid,
                key,
                op,
                participants,
            } => {
                let tag = tag_of(op, TAG_STAGED_PUT, TAG_STAGED_DEL);
                encode_transaction(&mut out, tag, *txid, key, op, participants);
            }
            CoordinatorRecord::Finished { txid } => {
                out.push(TAG_FINISHED);
                out.extend_from_slice(&txid.to_le_bytes());
            }
            CoordinatorRecord::Decided { txid, commit } => {
                out.push(if *commit {
                    TAG_DECIDED_COMMIT
                } else {
                    TAG_DECIDED_ABORT
                });
                out.extend_from_slice(&txid.to_le_bytes());
            }
        }
        out
    }

    /// Decodes one record's payload; never panics, whatever the bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, RecordError> {
        let mut reader = Reader::new(payload);
        let record = match reader.u8()? {
            TAG_EPOCH => CoordinatorRecord::Epoch {
                epoch: reader.u32()?,
                expected_servers: reader.u32()?,
            },
            TAG_MEMBER => CoordinatorRecord::Member {
                id: reader.u64()?,
                addr: reader.key()?,
            },
            tag @ (TAG_COMMIT_PUT | TAG_COMMIT_DEL | TAG_STAGED_PUT | TAG_STAGED_DEL) => {
                decode_transaction(&mut reader, tag)?
            }
            TAG_FINISHED => CoordinatorRecord::Finished {
                txid: reader.u64()?,
            },
            tag @ (TAG_DECIDED_COMMIT | TAG_DECIDED_ABORT) => CoordinatorRecord::Decided {
                txid: reader.u64()?,
                commit: tag == TAG_DECIDED_COMMIT,
            },
            other => return Err(RecordError::UnknownTag(other)),
        };
        if reader.is_empty() {
            Ok(record)
        } else {
            Err(RecordError::TrailingBytes)
        }
    }
}

/// The payload of a `Staged` record, encoded from borrowed parts: the value is not
/// copied into a record first.
pub fn encode_staged(txid: TxId, key: &str, op: &TxOp, participants: &[ServerId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(transaction_len(key, op, participants));
    let tag = tag_of(op, TAG_STAGED_PUT, TAG_STAGED_DEL);
    encode_transaction(&mut out, tag, txid, key, op, participants);
    out
}

fn tag_of(op: &TxOp, put: u8, del: u8) -> u8 {
    match op {
        TxOp::Put { .. } => put,
        TxOp::Del => del,
    }
}

/// The bytes of a `Commit` or a `Staged` record: its buffer is made once at its size,
/// where growing it step by step cost a PUT four reallocations on the coordinator.
fn transaction_len(key: &str, op: &TxOp, participants: &[ServerId]) -> usize {
    let value_len = match op {
        TxOp::Put { value } => 4 + value.len(),
        TxOp::Del => 0,
    };
    // Tag, txid, key length, key, participant count, participants, value.
    1 + 8 + 2 + key.len() + 1 + 8 * participants.len() + value_len
}

/// A `Commit` or a `Staged` record: the same fields under their own tags.
fn encode_transaction(
    out: &mut Vec<u8>,
    tag: u8,
    txid: TxId,
    key: &str,
    op: &TxOp,
    participants: &[u64],
) {
    assert!(
        participants.len() <= MAX_PARTICIPANTS,
        "too many participants"
    );
    let start = out.len();
    out.push(tag);
    out.extend_from_slice(&txid.to_le_bytes());
    push_key(out, key);
    out.push(participants.len() as u8);
    for id in participants {
        out.extend_from_slice(&id.to_le_bytes());
    }
    if let TxOp::Put { value } = op {
        push_text(out, value);
    }
    assert_eq!(
        out.len() - start,
        transaction_len(key, op, participants),
        "a transaction record's size is not what was reserved"
    );
}

fn decode_transaction(reader: &mut Reader<'_>, tag: u8) -> Result<CoordinatorRecord, RecordError> {
    let txid = reader.u64()?;
    let key = reader.key()?;
    let count = usize::from(reader.u8()?);
    if count > MAX_PARTICIPANTS {
        return Err(RecordError::Truncated);
    }
    let participants = (0..count)
        .map(|_| reader.u64())
        .collect::<Result<Vec<_>, _>>()?;
    let op = if tag == TAG_COMMIT_PUT || tag == TAG_STAGED_PUT {
        let len = reader.u32()? as usize;
        TxOp::Put {
            value: reader.text(len)?,
        }
    } else {
        TxOp::Del
    };
    Ok(if tag == TAG_STAGED_PUT || tag == TAG_STAGED_DEL {
        CoordinatorRecord::Staged {
            txid,
            key,
            op,
            participants,
        }
    } else {
        CoordinatorRecord::Commit {
            txid,
            key,
            op,
            participants,
        }
    })
}

impl LogRecord for CoordinatorRecord {
    type Error = RecordError;

    fn decode(payload: &[u8]) -> Result<Self, RecordError> {
        CoordinatorRecord::decode(payload)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record() -> impl Strategy<Value = CoordinatorRecord> {
        let op = prop_oneof![
            ".{0,40}".prop_map(|value| TxOp::Put { value }),
            Just(TxOp::Del)
        ];
        let op_again = op.clone();
        prop_oneof![
            (any::<u32>(), any::<u32>()).prop_map(|(epoch, expected_servers)| {
                CoordinatorRecord::Epoch {
                    epoch,
                    expected_servers,
                }
            }),
            (any::<u64>(), ".{0,30}").prop_map(|(id, addr)| CoordinatorRecord::Member { id, addr }),
            (
                any::<u64>(),
                ".{0,20}",
                op,
                prop::collection::vec(any::<u64>(), 0..4)
            )
                .prop_map(|(txid, key, op, participants)| CoordinatorRecord::Commit {
                    txid,
                    key,
                    op,
                    participants
                }),
            any::<u64>().prop_map(|txid| CoordinatorRecord::Finished { txid }),
            (
                any::<u64>(),
                ".{0,20}",
                op_again,
                prop::collection::vec(any::<u64>(), 0..4)
            )
                .prop_map(|(txid, key, op, participants)| CoordinatorRecord::Staged {
                    txid,
                    key,
                    op,
                    participants
                }),
            (any::<u64>(), any::<bool>())
                .prop_map(|(txid, commit)| CoordinatorRecord::Decided { txid, commit }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(record in record()) {
            prop_assert_eq!(CoordinatorRecord::decode(&record.encode()), Ok(record));
        }

        #[test]
        fn truncated_or_arbitrary_payloads_never_panic(record in record(), cut in 0usize..64, bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let payload = record.encode();
            let cut = cut.min(payload.len());
            if cut < payload.len() {
                prop_assert!(CoordinatorRecord::decode(&payload[..cut]).is_err());
            }
            let _ = CoordinatorRecord::decode(&bytes);
        }
    }
}
