//! The records of the coordinator's log: what must survive a coordinator crash.
//!
//! - `Epoch`: written at every start before any transaction ID of the epoch is used, so
//!   that IDs never repeat across restarts (IDs are `epoch << 32 | sequence`), with the
//!   number of servers the ring expects.
//! - `Member`: a server's ID and address, written before its registration is answered, so
//!   that a stray new ID cannot take a slot after a restart.
//! - `Commit`: a commit decision with its key, operation and participants, synced before
//!   the client hears `Success` and before phase 2 (presumed abort: aborts are not
//!   written; a transaction without a commit record is aborted).
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

/// The most participants a commit record names.
const MAX_PARTICIPANTS: usize = 16;

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
}

impl CoordinatorRecord {
    /// How soon the record must be synced: nothing waits for a `Finished` record (a lost
    /// one only makes recovery send the commit again), so it rides with the next commit's
    /// sync and starts none of its own.
    pub fn urgency(&self) -> SyncUrgency {
        match self {
            CoordinatorRecord::Finished { .. } => SyncUrgency::Never,
            CoordinatorRecord::Epoch { .. }
            | CoordinatorRecord::Member { .. }
            | CoordinatorRecord::Commit { .. } => SyncUrgency::Now,
        }
    }

    /// The record's payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
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
            } => encode_commit(&mut out, *txid, key, op, participants),
            CoordinatorRecord::Finished { txid } => {
                out.push(TAG_FINISHED);
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
            tag @ (TAG_COMMIT_PUT | TAG_COMMIT_DEL) => decode_commit(&mut reader, tag)?,
            TAG_FINISHED => CoordinatorRecord::Finished {
                txid: reader.u64()?,
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

fn encode_commit(out: &mut Vec<u8>, txid: TxId, key: &str, op: &TxOp, participants: &[u64]) {
    assert!(
        participants.len() <= MAX_PARTICIPANTS,
        "too many participants"
    );
    out.push(match op {
        TxOp::Put { .. } => TAG_COMMIT_PUT,
        TxOp::Del => TAG_COMMIT_DEL,
    });
    out.extend_from_slice(&txid.to_le_bytes());
    push_key(out, key);
    out.push(participants.len() as u8);
    for id in participants {
        out.extend_from_slice(&id.to_le_bytes());
    }
    if let TxOp::Put { value } = op {
        push_text(out, value);
    }
}

fn decode_commit(reader: &mut Reader<'_>, tag: u8) -> Result<CoordinatorRecord, RecordError> {
    let txid = reader.u64()?;
    let key = reader.key()?;
    let count = usize::from(reader.u8()?);
    if count > MAX_PARTICIPANTS {
        return Err(RecordError::Truncated);
    }
    let participants = (0..count)
        .map(|_| reader.u64())
        .collect::<Result<Vec<_>, _>>()?;
    let op = if tag == TAG_COMMIT_PUT {
        let len = reader.u32()? as usize;
        TxOp::Put {
            value: reader.text(len)?,
        }
    } else {
        TxOp::Del
    };
    Ok(CoordinatorRecord::Commit {
        txid,
        key,
        op,
        participants,
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
