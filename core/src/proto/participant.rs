//! The two-phase-commit port of a KV server: what the coordinator sends, what the server
//! answers. Limits are not checked here: a prepare with a key over the limit is a vote to
//! abort, which is the participant's decision, not a decoding error.

use super::client::decode_error_fields;
use super::json::{take_request_id, Fields, Object, ObjectWriter};
use super::{
    hint_with, DecodeError, Envelope, ErrorCode, ErrorReply, RequestId, TxId, WireMessage,
};

/// The operation a transaction prepares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxOp {
    /// Write the value.
    Put {
        /// The value to write.
        value: String,
    },
    /// Delete the key.
    Del,
}

/// What the coordinator sends to a KV server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParticipantRequest {
    /// Phase 1 (`putreq` or `delreq` with a `txid`): vote on the operation.
    Prepare {
        /// The transaction.
        txid: TxId,
        /// The key.
        key: String,
        /// What to do with it.
        op: TxOp,
    },
    /// Phase 2: apply the prepared transaction.
    Commit {
        /// The transaction.
        txid: TxId,
    },
    /// Phase 2: drop the prepared transaction.
    Abort {
        /// The transaction.
        txid: TxId,
    },
    /// Read the last committed value of a key.
    Get {
        /// The key.
        key: String,
    },
    /// Liveness probe (an extension: `{"type":"ping"}`, answered `{"type":"pong"}`).
    Ping,
    /// Which transactions the server holds prepared and undecided (an extension:
    /// `{"type":"indoubt"}`), so that a restarted coordinator aborts those it has no
    /// commit record of (presumed abort). Also a sign of life.
    InDoubt,
}

impl WireMessage for ParticipantRequest {
    fn encoded_len_hint(&self) -> usize {
        match self {
            ParticipantRequest::Prepare {
                key,
                op: TxOp::Put { value },
                ..
            } => hint_with(&[key, value]),
            ParticipantRequest::Prepare { key, .. } | ParticipantRequest::Get { key } => {
                hint_with(&[key])
            }
            _ => hint_with(&[]),
        }
    }

    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>) {
        self.encode_addressed(id, None, out);
    }

    fn encode_addressed(&self, id: Option<&RequestId>, server: Option<u64>, out: &mut Vec<u8>) {
        let mut w = match self {
            ParticipantRequest::Prepare { txid, key, op } => match op {
                TxOp::Put { value } => {
                    let mut w = ObjectWriter::new(out, "putreq");
                    w.u64("txid", *txid).str("key", key).str("value", value);
                    w
                }
                TxOp::Del => {
                    let mut w = ObjectWriter::new(out, "delreq");
                    w.u64("txid", *txid).str("key", key);
                    w
                }
            },
            ParticipantRequest::Commit { txid } => {
                let mut w = ObjectWriter::new(out, "commit");
                w.u64("txid", *txid);
                w
            }
            ParticipantRequest::Abort { txid } => {
                let mut w = ObjectWriter::new(out, "abort");
                w.u64("txid", *txid);
                w
            }
            ParticipantRequest::Get { key } => {
                let mut w = ObjectWriter::new(out, "getreq");
                w.str("key", key);
                w
            }
            ParticipantRequest::Ping => ObjectWriter::new(out, "ping"),
            ParticipantRequest::InDoubt => ObjectWriter::new(out, "indoubt"),
        };
        w.id(id);
        if let Some(server) = server {
            w.u64("server", server);
        }
        w.finish();
    }

    fn decode(line: &[u8]) -> Result<Envelope<Self>, DecodeError> {
        let mut obj = Object::parse(line)?;
        let id = take_request_id(&mut obj)?;
        let mut fields = Fields {
            obj: &mut obj,
            id: &id,
        };
        let kind = fields.kind()?;
        let msg = match &*kind {
            "putreq" => {
                let txid = fields.u64("txid")?;
                let key = fields.string("key")?;
                let value = fields.string("value")?;
                ParticipantRequest::Prepare {
                    txid,
                    key,
                    op: TxOp::Put { value },
                }
            }
            "delreq" => {
                let txid = fields.u64("txid")?;
                let key = fields.string("key")?;
                ParticipantRequest::Prepare {
                    txid,
                    key,
                    op: TxOp::Del,
                }
            }
            "commit" => ParticipantRequest::Commit {
                txid: fields.u64("txid")?,
            },
            "abort" => ParticipantRequest::Abort {
                txid: fields.u64("txid")?,
            },
            "getreq" => ParticipantRequest::Get {
                key: fields.string("key")?,
            },
            "ping" => ParticipantRequest::Ping,
            "indoubt" => ParticipantRequest::InDoubt,
            other => return Err(fields.unknown_kind(other)),
        };
        let server = if fields.obj.has("server") {
            Some(fields.u64("server")?)
        } else {
            None
        };
        Ok(Envelope { id, msg, server })
    }
}

/// What a KV server answers the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParticipantResponse {
    /// A vote to commit: the prepare record is durable.
    Ready {
        /// The transaction.
        txid: TxId,
    },
    /// A vote to abort, with the reason.
    Refuse {
        /// The transaction.
        txid: TxId,
        /// Why, for programs.
        code: ErrorCode,
        /// Why, for people; passed on verbatim to the client.
        message: String,
    },
    /// The phase-2 decision is durable (or the transaction is unknown: presumed abort).
    Ack {
        /// The transaction.
        txid: TxId,
    },
    /// A read found the key.
    Value {
        /// The key.
        key: String,
        /// Its last committed value.
        value: String,
    },
    /// A read failed (`not_found`, a limit, ...), or a request was malformed.
    Error(ErrorReply),
    /// The answer to a ping.
    Pong,
    /// The transactions prepared and undecided here, in order.
    InDoubt {
        /// Their IDs.
        txids: Vec<TxId>,
    },
}

impl WireMessage for ParticipantResponse {
    fn encoded_len_hint(&self) -> usize {
        match self {
            ParticipantResponse::Value { key, value } => hint_with(&[key, value]),
            ParticipantResponse::Refuse { message, .. } => hint_with(&[message]),
            ParticipantResponse::Error(reply) => hint_with(&[&reply.message]),
            ParticipantResponse::InDoubt { txids } => txids
                .len()
                .saturating_mul(21)
                .saturating_add(hint_with(&[])),
            _ => hint_with(&[]),
        }
    }

    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>) {
        let mut w = match self {
            ParticipantResponse::Ready { txid } => {
                let mut w = ObjectWriter::new(out, "ready");
                w.u64("txid", *txid);
                w
            }
            ParticipantResponse::Refuse {
                txid,
                code,
                message,
            } => {
                let mut w = ObjectWriter::new(out, "abort");
                w.u64("txid", *txid)
                    .str("error", code.as_str())
                    .str("message", message);
                w
            }
            ParticipantResponse::Ack { txid } => {
                let mut w = ObjectWriter::new(out, "ack");
                w.u64("txid", *txid);
                w
            }
            ParticipantResponse::Value { key, value } => {
                let mut w = ObjectWriter::new(out, "resp");
                w.str("key", key).str("value", value);
                w
            }
            ParticipantResponse::Error(reply) => {
                let mut w = ObjectWriter::new(out, "resp");
                w.str("error", reply.code.as_str())
                    .str("message", &reply.message);
                w
            }
            ParticipantResponse::Pong => ObjectWriter::new(out, "pong"),
            ParticipantResponse::InDoubt { txids } => {
                let mut w = ObjectWriter::new(out, "indoubt");
                let raw = w.raw("txids");
                raw.push(b'[');
                for (i, txid) in txids.iter().enumerate() {
                    if i > 0 {
                        raw.push(b',');
                    }
                    raw.extend_from_slice(txid.to_string().as_bytes());
                }
                raw.push(b']');
                w
            }
        };
        w.id(id);
        w.finish();
    }

    fn decode(line: &[u8]) -> Result<Envelope<Self>, DecodeError> {
        let mut obj = Object::parse(line)?;
        let id = take_request_id(&mut obj)?;
        let mut fields = Fields {
            obj: &mut obj,
            id: &id,
        };
        let kind = fields.kind()?;
        let msg = match &*kind {
            "ready" => ParticipantResponse::Ready {
                txid: fields.u64("txid")?,
            },
            "abort" => {
                let txid = fields.u64("txid")?;
                // A vote to abort is a vote to abort, whatever its code: one this version
                // does not know counts as `aborted`, its reason kept for the client.
                let code_text = fields.string("error")?;
                let code = ErrorCode::parse(&code_text).unwrap_or(ErrorCode::Aborted);
                let message = fields.opt_string("message")?.unwrap_or_default();
                ParticipantResponse::Refuse {
                    txid,
                    code,
                    message,
                }
            }
            "ack" => ParticipantResponse::Ack {
                txid: fields.u64("txid")?,
            },
            "resp" => {
                if fields.obj.has("error") {
                    ParticipantResponse::Error(decode_error_fields(&mut fields)?)
                } else {
                    let key = fields.string("key")?;
                    let value = fields.string("value")?;
                    ParticipantResponse::Value { key, value }
                }
            }
            "pong" => ParticipantResponse::Pong,
            "indoubt" => {
                let items = fields.array("txids")?;
                let txids = items
                    .iter()
                    .map(|item| item.as_u64())
                    .collect::<Option<Vec<TxId>>>()
                    .ok_or_else(|| fields.invalid("\"txids\" must hold integers in 0..2^64-1"))?;
                ParticipantResponse::InDoubt { txids }
            }
            other => return Err(fields.unknown_kind(other)),
        };
        Ok(Envelope::with_id(id, msg))
    }
}
