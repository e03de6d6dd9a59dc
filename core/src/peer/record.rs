//! The records of a peer node's log: one log for both of its sides.
//!
//! Participant side: `PreparePut`/`PrepareDel` (with the transaction's participants, so
//! that a node restarted in doubt knows whom to ask), `Commit`/`Abort` (a decision
//! heard), and `Renounce` (asked about a transaction it never prepared, it refused it for
//! good: it will never vote ready, so the asker may abort).
//!
//! Coordinator side: `Epoch` (written at every start before any transaction ID of the
//! epoch is used), `Decided` (a commit decision, synced before phase 2 and before
//! `Success`; presumed abort: aborts are not written) and `Finished` (every participant
//! acknowledged the commit; not waited for).
//!
//! Written only by compaction (`compact`): `Value` (a committed value whose
//! transaction's records are gone) and `Committed` (a commit this participant still
//! remembers, whose records are gone).

use crate::proto::TxId;
use crate::storage::codec::{push_key, push_text, Reader, RecordError};
use crate::storage::LogRecord;

const TAG_PREPARE_PUT: u8 = 1;
const TAG_PREPARE_DEL: u8 = 2;
const TAG_COMMIT: u8 = 3;
const TAG_ABORT: u8 = 4;
const TAG_RENOUNCE: u8 = 5;
const TAG_EPOCH: u8 = 6;
const TAG_DECIDED: u8 = 7;
const TAG_FINISHED: u8 = 8;
const TAG_VALUE: u8 = 9;
const TAG_COMMITTED: u8 = 10;

/// The most participants a record names.
const MAX_PARTICIPANTS: usize = crate::proto::peer::MAX_PEER_PARTICIPANTS;

/// One record of a peer node's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRecord {
    /// Prepared: writes `value` to `key` if it commits.
    PreparePut {
        /// The transaction.
        txid: TxId,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Every participant.
        participants: Vec<u64>,
    },
    /// Prepared: deletes `key` if it commits.
    PrepareDel {
        /// The transaction.
        txid: TxId,
        /// The key.
        key: String,
        /// Every participant.
        participants: Vec<u64>,
    },
    /// The transaction committed here.
    Commit {
        /// The transaction.
        txid: TxId,
    },
    /// The transaction aborted here.
    Abort {
        /// The transaction.
        txid: TxId,
    },
    /// This node will never vote ready for the transaction.
    Renounce {
        /// The transaction.
        txid: TxId,
    },
    /// A start of the node as a coordinator.
    Epoch {
        /// The high part of every transaction ID it issues in this run.
        epoch: u32,
    },
    /// This node, coordinating, decided to commit.
    Decided {
        /// The transaction.
        txid: TxId,
        /// Who must hear the commit.
        participants: Vec<u64>,
    },
    /// Every participant acknowledged the commit.
    Finished {
        /// The transaction.
        txid: TxId,
    },
    /// A committed value carried over by compaction: the transaction that wrote it is
    /// gone from the log with its records.
    Value {
        /// The key.
        key: String,
        /// Its committed value.
        value: String,
    },
    /// A commit this participant took part in and still remembers, carried over by
    /// compaction (its prepare and decision records are gone): a node in doubt that
    /// asks about it hears `commit`, not a renouncing `abort`.
    Committed {
        /// The transaction.
        txid: TxId,
    },
}

/// Where a prepared value's bytes lie inside a `PreparePut` payload.
pub(crate) fn value_offset_in_payload(key_len_bytes: usize) -> usize {
    1 + 8 + 2 + key_len_bytes + 4
}

/// Where a carried value's bytes lie inside a [`PeerRecord::Value`] payload.
pub(crate) fn carried_value_offset_in_payload(key_len_bytes: usize) -> usize {
    1 + 2 + key_len_bytes + 4
}

fn push_participants(out: &mut Vec<u8>, participants: &[u64]) {
    assert!(
        participants.len() <= MAX_PARTICIPANTS,
        "too many participants"
    );
    out.extend_from_slice(&(participants.len() as u16).to_le_bytes());
    for id in participants {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

fn read_participants(reader: &mut Reader<'_>) -> Result<Vec<u64>, RecordError> {
    let count = reader.u16()? as usize;
    if count > MAX_PARTICIPANTS {
        return Err(RecordError::Truncated);
    }
    (0..count).map(|_| reader.u64()).collect()
}

/// The payload of a [`PeerRecord::PreparePut`] from borrowed parts, the value where
/// [`value_offset_in_payload`] says.
pub(crate) fn encode_prepare_put(
    txid: TxId,
    key: &str,
    value: &str,
    participants: &[u64],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(value_offset_in_payload(key.len()) + value.len() + 64);
    out.push(TAG_PREPARE_PUT);
    out.extend_from_slice(&txid.to_le_bytes());
    push_key(&mut out, key);
    push_text(&mut out, value);
    push_participants(&mut out, participants);
    out
}

impl PeerRecord {
    /// The record's payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, txid) = match self {
            PeerRecord::PreparePut {
                txid,
                key,
                value,
                participants,
            } => return encode_prepare_put(*txid, key, value, participants),
            PeerRecord::PrepareDel {
                txid,
                key,
                participants,
            } => {
                let mut out = vec![TAG_PREPARE_DEL];
                out.extend_from_slice(&txid.to_le_bytes());
                push_key(&mut out, key);
                push_participants(&mut out, participants);
                return out;
            }
            PeerRecord::Decided { txid, participants } => {
                let mut out = vec![TAG_DECIDED];
                out.extend_from_slice(&txid.to_le_bytes());
                push_participants(&mut out, participants);
                return out;
            }
            PeerRecord::Epoch { epoch } => {
                let mut out = vec![TAG_EPOCH];
                out.extend_from_slice(&epoch.to_le_bytes());
                return out;
            }
            PeerRecord::Value { key, value } => {
                let mut out =
                    Vec::with_capacity(carried_value_offset_in_payload(key.len()) + value.len());
                out.push(TAG_VALUE);
                push_key(&mut out, key);
                push_text(&mut out, value);
                return out;
            }
            PeerRecord::Committed { txid } => (TAG_COMMITTED, txid),
            PeerRecord::Commit { txid } => (TAG_COMMIT, txid),
            PeerRecord::Abort { txid } => (TAG_ABORT, txid),
            PeerRecord::Renounce { txid } => (TAG_RENOUNCE, txid),
            PeerRecord::Finished { txid } => (TAG_FINISHED, txid),
        };
        let mut out = vec![tag];
        out.extend_from_slice(&txid.to_le_bytes());
        out
    }

    /// Decodes one payload; never panics, whatever the bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, RecordError> {
        let mut reader = Reader::new(payload);
        let record = match reader.u8()? {
            TAG_PREPARE_PUT => {
                let txid = reader.u64()?;
                let key = reader.key()?;
                let len = reader.u32()? as usize;
                let value = reader.text(len)?;
                let participants = read_participants(&mut reader)?;
                PeerRecord::PreparePut {
                    txid,
                    key,
                    value,
                    participants,
                }
            }
            TAG_PREPARE_DEL => PeerRecord::PrepareDel {
                txid: reader.u64()?,
                key: reader.key()?,
                participants: read_participants(&mut reader)?,
            },
            TAG_COMMIT => PeerRecord::Commit {
                txid: reader.u64()?,
            },
            TAG_ABORT => PeerRecord::Abort {
                txid: reader.u64()?,
            },
            TAG_RENOUNCE => PeerRecord::Renounce {
                txid: reader.u64()?,
            },
            TAG_EPOCH => PeerRecord::Epoch {
                epoch: reader.u32()?,
            },
            TAG_DECIDED => PeerRecord::Decided {
                txid: reader.u64()?,
                participants: read_participants(&mut reader)?,
            },
            TAG_FINISHED => PeerRecord::Finished {
                txid: reader.u64()?,
            },
            TAG_VALUE => {
                let key = reader.key()?;
                let len = reader.u32()? as usize;
                let value = reader.text(len)?;
                PeerRecord::Value { key, value }
            }
            TAG_COMMITTED => PeerRecord::Committed {
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

impl LogRecord for PeerRecord {
    type Error = RecordError;

    fn decode(payload: &[u8]) -> Result<Self, RecordError> {
        PeerRecord::decode(payload)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record() -> impl Strategy<Value = PeerRecord> {
        let ids = prop::collection::vec(any::<u64>(), 0..8);
        prop_oneof![
            (any::<u64>(), ".{0,20}", ".{0,50}", ids.clone()).prop_map(
                |(txid, key, value, participants)| {
                    PeerRecord::PreparePut {
                        txid,
                        key,
                        value,
                        participants,
                    }
                }
            ),
            (any::<u64>(), ".{0,20}", ids.clone()).prop_map(|(txid, key, participants)| {
                PeerRecord::PrepareDel {
                    txid,
                    key,
                    participants,
                }
            }),
            any::<u64>().prop_map(|txid| PeerRecord::Commit { txid }),
            any::<u64>().prop_map(|txid| PeerRecord::Abort { txid }),
            any::<u64>().prop_map(|txid| PeerRecord::Renounce { txid }),
            any::<u32>().prop_map(|epoch| PeerRecord::Epoch { epoch }),
            (any::<u64>(), ids)
                .prop_map(|(txid, participants)| PeerRecord::Decided { txid, participants }),
            any::<u64>().prop_map(|txid| PeerRecord::Finished { txid }),
            (".{0,20}", ".{0,50}").prop_map(|(key, value)| PeerRecord::Value { key, value }),
            any::<u64>().prop_map(|txid| PeerRecord::Committed { txid }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(record in record()) {
            prop_assert_eq!(PeerRecord::decode(&record.encode()), Ok(record));
        }

        #[test]
        fn a_value_lies_where_the_offset_says(key in ".{0,20}", value in ".{0,50}") {
            let payload = encode_prepare_put(1, &key, &value, &[1, 2]);
            let at = value_offset_in_payload(key.len());
            prop_assert_eq!(&payload[at..at + value.len()], value.as_bytes());
        }

        #[test]
        fn a_carried_value_lies_where_the_offset_says(key in ".{0,20}", value in ".{0,50}") {
            let payload = PeerRecord::Value { key: key.clone(), value: value.clone() }.encode();
            let at = carried_value_offset_in_payload(key.len());
            prop_assert_eq!(&payload[at..], value.as_bytes());
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = PeerRecord::decode(&bytes);
        }
    }
}
