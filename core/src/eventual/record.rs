//! The records of an eventual-mode node's write-ahead log, each the payload of one log
//! frame: a key's whole state after every change, hints and their end, debts of a first
//! replica and their end, reaped keys, catching up after an empty data directory, and
//! what a compaction carried over from the records it dropped.
//!
//! A state record ends with the state's bytes, so the store can point at them and read
//! them back in place.

use std::fmt;

use crate::limits::MAX_KEY_BYTES;
use crate::storage::LogRecord;

use super::config::NodeId;

const TAG_STATE: u8 = 1;
const TAG_HINT: u8 = 2;
const TAG_HINT_DONE: u8 = 3;
const TAG_REAPED: u8 = 4;
const TAG_OWED: u8 = 5;
const TAG_SETTLED: u8 = 6;
const TAG_CATCHING_UP: u8 = 7;
const TAG_CAUGHT_UP: u8 = 8;
const TAG_CARRIED: u8 = 9;

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// `key` now holds `state` (a key state's bytes).
    State {
        /// The key.
        key: String,
        /// Its whole state, as `KeyState::to_bytes` wrote it.
        state: Vec<u8>,
    },
    /// A hint: `state` of `key` is owed to `target`. A later hint of the same target and
    /// key replaces it.
    Hint {
        /// Names this hint; its delivery is acknowledged by it.
        id: u64,
        /// The replica it is for.
        target: NodeId,
        /// When it was made (the node's `now`), for its age bound.
        created_ms: u64,
        /// The key.
        key: String,
        /// The state owed.
        state: Vec<u8>,
    },
    /// The hint `id` was delivered or dropped.
    HintDone {
        /// The hint.
        id: u64,
    },
    /// Applying a client write first, this node owes `key` to `targets` until the write's
    /// coordinator settles it or each target confirms.
    Owed {
        /// Names it.
        id: u64,
        /// The write's coordinator.
        coordinator: NodeId,
        /// The coordinator's request.
        coordinator_req: u64,
        /// The key.
        key: String,
        /// The other replicas.
        targets: Vec<NodeId>,
    },
    /// What `Owed { id }` owed is settled.
    Settled {
        /// The owed record.
        id: u64,
    },
    /// The tombstones of `key` were reaped; the node's counters stay above `floor`.
    Reaped {
        /// The key.
        key: String,
        /// The highest counter this node's actor had handed out.
        floor: u64,
    },
    /// This node started on an empty data directory and waits for its keys from the
    /// others; written before its first other record, so a restart goes on waiting.
    CatchingUp,
    /// Every node asked streamed its keys: the catching up that began with the last
    /// `CatchingUp` is over.
    CaughtUp,
    /// Written by a compaction of the log: what the records it dropped told recovery
    /// besides keys, hints and debts. Recovery takes the highest of each it reads.
    Carried {
        /// The floor of this node's counters (`Reaped` records carried it).
        floor: u64,
        /// The node's next request number when the log was compacted: a recovered node
        /// numbers past it as past any logged hint or debt id (the settled ids carried it).
        next_req: u64,
        /// The time of this node's last last-write-wins stamp, if it made one (the states
        /// of its writes carried it, and a later write of another node may have replaced
        /// them).
        last_stamp_ms: Option<u64>,
    },
}

/// Why a payload is no record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The payload ended early.
    Truncated,
    /// A tag this version does not know.
    UnknownTag(u8),
    /// A key that is not UTF-8 or over the limit.
    BadKey,
    /// Bytes after a record that has no tail.
    TrailingBytes,
    /// A presence byte that is neither 0 nor 1.
    BadFlag,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated => f.write_str("record truncated"),
            RecordError::UnknownTag(tag) => write!(f, "unknown record tag {tag}"),
            RecordError::BadKey => f.write_str("bad key"),
            RecordError::TrailingBytes => f.write_str("trailing bytes"),
            RecordError::BadFlag => f.write_str("bad presence byte"),
        }
    }
}

fn push_key(out: &mut Vec<u8>, key: &str) {
    // Keys are checked against the limit (256 bytes) before they reach a record.
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&key.as_bytes()[..usize::from(len).min(key.len())]);
}

/// Where the state's bytes start in a state record of a key of `key_len` bytes.
pub fn state_offset_in_payload(key_len: usize) -> usize {
    1 + 2 + key_len
}

impl Record {
    /// The record's payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Record::State { key, state } => {
                out.push(TAG_STATE);
                push_key(&mut out, key);
                out.extend_from_slice(state);
            }
            Record::Hint {
                id,
                target,
                created_ms,
                key,
                state,
            } => {
                out.push(TAG_HINT);
                for n in [id, target, created_ms] {
                    out.extend_from_slice(&n.to_le_bytes());
                }
                push_key(&mut out, key);
                out.extend_from_slice(state);
            }
            Record::HintDone { id } => {
                out.push(TAG_HINT_DONE);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Record::Owed {
                id,
                coordinator,
                coordinator_req,
                key,
                targets,
            } => {
                out.push(TAG_OWED);
                for n in [id, coordinator, coordinator_req] {
                    out.extend_from_slice(&n.to_le_bytes());
                }
                push_key(&mut out, key);
                for target in targets {
                    out.extend_from_slice(&target.to_le_bytes());
                }
            }
            Record::Settled { id } => {
                out.push(TAG_SETTLED);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Record::Reaped { key, floor } => {
                out.push(TAG_REAPED);
                out.extend_from_slice(&floor.to_le_bytes());
                push_key(&mut out, key);
            }
            Record::CatchingUp => out.push(TAG_CATCHING_UP),
            Record::CaughtUp => out.push(TAG_CAUGHT_UP),
            Record::Carried {
                floor,
                next_req,
                last_stamp_ms,
            } => {
                out.push(TAG_CARRIED);
                out.extend_from_slice(&floor.to_le_bytes());
                out.extend_from_slice(&next_req.to_le_bytes());
                match last_stamp_ms {
                    Some(ms) => {
                        out.push(1);
                        out.extend_from_slice(&ms.to_le_bytes());
                    }
                    None => out.push(0),
                }
            }
        }
        out
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let bytes: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| RecordError::Truncated)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn key(&mut self) -> Result<String, RecordError> {
        let len_bytes: [u8; 2] = self
            .take(2)?
            .try_into()
            .map_err(|_| RecordError::Truncated)?;
        let len = usize::from(u16::from_le_bytes(len_bytes));
        if len == 0 || len > MAX_KEY_BYTES {
            return Err(RecordError::BadKey);
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::BadKey)
    }

    fn tail(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rest).to_vec()
    }
}

impl LogRecord for Record {
    type Error = RecordError;

    fn decode(payload: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader { rest: payload };
        let tag = r.take(1)?.first().copied().ok_or(RecordError::Truncated)?;
        let record = match tag {
            TAG_STATE => {
                let key = r.key()?;
                Record::State {
                    key,
                    state: r.tail(),
                }
            }
            TAG_HINT => {
                let (id, target, created_ms) = (r.u64()?, r.u64()?, r.u64()?);
                let key = r.key()?;
                Record::Hint {
                    id,
                    target,
                    created_ms,
                    key,
                    state: r.tail(),
                }
            }
            TAG_HINT_DONE => Record::HintDone { id: r.u64()? },
            TAG_OWED => {
                let (id, coordinator, coordinator_req) = (r.u64()?, r.u64()?, r.u64()?);
                let key = r.key()?;
                let mut targets = Vec::new();
                while !r.rest.is_empty() {
                    targets.push(r.u64()?);
                }
                Record::Owed {
                    id,
                    coordinator,
                    coordinator_req,
                    key,
                    targets,
                }
            }
            TAG_SETTLED => Record::Settled { id: r.u64()? },
            TAG_REAPED => {
                let floor = r.u64()?;
                Record::Reaped {
                    key: r.key()?,
                    floor,
                }
            }
            TAG_CATCHING_UP => Record::CatchingUp,
            TAG_CAUGHT_UP => Record::CaughtUp,
            TAG_CARRIED => {
                let (floor, next_req) = (r.u64()?, r.u64()?);
                let flag = r.take(1)?.first().copied();
                let last_stamp_ms = match flag {
                    Some(0) => None,
                    Some(1) => Some(r.u64()?),
                    _ => return Err(RecordError::BadFlag),
                };
                Record::Carried {
                    floor,
                    next_req,
                    last_stamp_ms,
                }
            }
            other => return Err(RecordError::UnknownTag(other)),
        };
        if r.rest.is_empty() {
            Ok(record)
        } else {
            Err(RecordError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_bad_bytes() {
        let records = [
            Record::State {
                key: "k".to_owned(),
                state: vec![1, 2, 3],
            },
            Record::Hint {
                id: 7,
                target: u64::MAX,
                created_ms: 99,
                key: "ké".to_owned(),
                state: vec![9],
            },
            Record::HintDone { id: 7 },
            Record::Owed {
                id: 3,
                coordinator: 4,
                coordinator_req: 5,
                key: "k".to_owned(),
                targets: vec![6, u64::MAX],
            },
            Record::Settled { id: 3 },
            Record::Reaped {
                key: "k".to_owned(),
                floor: 12,
            },
            Record::CatchingUp,
            Record::CaughtUp,
            Record::Carried {
                floor: 12,
                next_req: u64::MAX,
                last_stamp_ms: Some(77),
            },
            Record::Carried {
                floor: 0,
                next_req: 1,
                last_stamp_ms: None,
            },
        ];
        for record in records {
            let bytes = record.encode();
            assert_eq!(Record::decode(&bytes), Ok(record.clone()));
            for cut in 0..bytes.len() {
                if let Ok(decoded) = Record::decode(&bytes[..cut]) {
                    // Only a record with a tail may be cut and still decode (frames carry
                    // the length, so a cut record never reaches the decoder in a log).
                    assert!(matches!(
                        decoded,
                        Record::State { .. } | Record::Hint { .. } | Record::Owed { .. }
                    ));
                }
            }
        }
        assert_eq!(Record::decode(&[]), Err(RecordError::Truncated));
        assert_eq!(Record::decode(&[10]), Err(RecordError::UnknownTag(10)));
        assert_eq!(Record::decode(&[1, 0, 0]), Err(RecordError::BadKey));
        let mut done = Record::HintDone { id: 1 }.encode();
        done.push(0);
        assert_eq!(Record::decode(&done), Err(RecordError::TrailingBytes));
        let mut carried = Record::Carried {
            floor: 1,
            next_req: 2,
            last_stamp_ms: None,
        }
        .encode();
        *carried.last_mut().expect("a presence byte") = 2;
        assert_eq!(Record::decode(&carried), Err(RecordError::BadFlag));
        assert_eq!(state_offset_in_payload(1), 4);
    }
}
