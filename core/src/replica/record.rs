//! The records of a KV server's write-ahead log, each the payload of one log frame.
//!
//! The encoding is a small fixed binary layout (little-endian integers, length-prefixed
//! UTF-8), so that a value's bytes sit in the log as they are and can be read back in
//! place by offset, without decoding the record around them.

use crate::proto::TxId;
pub use crate::storage::codec::RecordError;
use crate::storage::codec::{push_key, push_text, Reader};

const TAG_PREPARE_PUT: u8 = 1;
const TAG_PREPARE_DEL: u8 = 2;
const TAG_COMMIT: u8 = 3;
const TAG_ABORT: u8 = 4;
const TAG_VALUE: u8 = 5;

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A transaction was prepared: it writes `value` to `key` if it commits.
    PreparePut {
        /// The transaction.
        txid: TxId,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A transaction was prepared: it deletes `key` if it commits.
    PrepareDel {
        /// The transaction.
        txid: TxId,
        /// The key.
        key: String,
    },
    /// The coordinator decided to commit the transaction.
    Commit {
        /// The transaction.
        txid: TxId,
    },
    /// The coordinator decided to abort the transaction.
    Abort {
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
}

/// Where a prepared value's bytes lie inside a record's payload.
pub(crate) fn value_offset_in_payload(key_len_bytes: usize) -> usize {
    1 + 8 + 2 + key_len_bytes + 4
}

/// Where a carried value's bytes lie inside a [`Record::Value`] payload.
pub(crate) fn carried_value_offset_in_payload(key_len_bytes: usize) -> usize {
    1 + 2 + key_len_bytes + 4
}

impl Record {
    /// The record's payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Record::PreparePut { txid, key, value } => {
                return encode_prepare_put(*txid, key, value);
            }
            Record::PrepareDel { txid, key } => {
                out.push(TAG_PREPARE_DEL);
                out.extend_from_slice(&txid.to_le_bytes());
                push_key(&mut out, key);
            }
            Record::Commit { txid } => {
                out.push(TAG_COMMIT);
                out.extend_from_slice(&txid.to_le_bytes());
            }
            Record::Abort { txid } => {
                out.push(TAG_ABORT);
                out.extend_from_slice(&txid.to_le_bytes());
            }
            Record::Value { key, value } => {
                out.push(TAG_VALUE);
                push_key(&mut out, key);
                push_text(&mut out, value);
            }
        }
        out
    }

    /// Decodes one record's payload.
    pub fn decode(payload: &[u8]) -> Result<Record, RecordError> {
        let mut reader = Reader::new(payload);
        let tag = reader.u8()?;
        let record = match tag {
            TAG_PREPARE_PUT => {
                let txid = reader.u64()?;
                let key = reader.key()?;
                let len = reader.u32()? as usize;
                let value = reader.text(len)?;
                Record::PreparePut { txid, key, value }
            }
            TAG_PREPARE_DEL => {
                let txid = reader.u64()?;
                let key = reader.key()?;
                Record::PrepareDel { txid, key }
            }
            TAG_COMMIT => Record::Commit {
                txid: reader.u64()?,
            },
            TAG_ABORT => Record::Abort {
                txid: reader.u64()?,
            },
            TAG_VALUE => {
                let key = reader.key()?;
                let len = reader.u32()? as usize;
                let value = reader.text(len)?;
                Record::Value { key, value }
            }
            other => return Err(RecordError::UnknownTag(other)),
        };
        if reader.is_empty() {
            Ok(record)
        } else {
            Err(RecordError::TrailingBytes)
        }
    }
}

/// The payload of a [`Record::PreparePut`], from borrowed parts: the value is not copied
/// twice on the write path.
pub fn encode_prepare_put(txid: TxId, key: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value_offset_in_payload(key.len()) + value.len());
    out.push(TAG_PREPARE_PUT);
    out.extend_from_slice(&txid.to_le_bytes());
    push_key(&mut out, key);
    push_text(&mut out, value);
    out
}

impl crate::storage::LogRecord for Record {
    type Error = RecordError;

    fn decode(payload: &[u8]) -> Result<Self, RecordError> {
        Record::decode(payload)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (any::<u64>(), ".{0,20}", ".{0,50}")
                .prop_map(|(txid, key, value)| Record::PreparePut { txid, key, value }),
            (any::<u64>(), ".{0,20}").prop_map(|(txid, key)| Record::PrepareDel { txid, key }),
            any::<u64>().prop_map(|txid| Record::Commit { txid }),
            any::<u64>().prop_map(|txid| Record::Abort { txid }),
            (".{0,20}", ".{0,50}").prop_map(|(key, value)| Record::Value { key, value }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(record in record()) {
            prop_assert_eq!(Record::decode(&record.encode()), Ok(record));
        }

        #[test]
        fn a_carried_value_lies_where_the_offset_says(key in ".{0,20}", value in ".{0,50}") {
            let payload = Record::Value { key: key.clone(), value: value.clone() }.encode();
            let at = carried_value_offset_in_payload(key.len());
            prop_assert_eq!(&payload[at..], value.as_bytes());
        }

        #[test]
        fn value_lies_where_the_offset_says(txid in any::<u64>(), key in ".{0,20}", value in ".{0,50}") {
            let payload = Record::PreparePut { txid, key: key.clone(), value: value.clone() }.encode();
            let at = value_offset_in_payload(key.len());
            prop_assert_eq!(&payload[at..], value.as_bytes());
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Record::decode(&bytes);
        }
    }

    #[test]
    fn truncated_and_padded_records_are_rejected() {
        let payload = Record::PrepareDel {
            txid: 1,
            key: "k".into(),
        }
        .encode();
        for cut in 0..payload.len() {
            assert!(Record::decode(&payload[..cut]).is_err());
        }
        let mut padded = payload.clone();
        padded.push(0);
        assert_eq!(Record::decode(&padded), Err(RecordError::TrailingBytes));
        assert_eq!(Record::decode(&[9]), Err(RecordError::UnknownTag(9)));
    }
}
