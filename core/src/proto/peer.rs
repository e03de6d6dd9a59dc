//! The peer node's port (PROTOCOL.md section 3): clients and other nodes share one port,
//! and the `type` tells them apart. Client requests are section 1's plus `localreq`;
//! node-to-node messages are the project's own, every `type` starting with `peer_` so
//! that none can collide with a client's, and every one naming its sender (`"from"`), so
//! that a node needs no connection bookkeeping to know who spoke.

use serde_json::Value;

use super::json::{take_request_id, Field, Fields, Object, ObjectWriter};
use super::{
    check_key, ClientRequest, ClientResponse, DecodeError, Envelope, ErrorCode, ErrorReply,
    RequestId, TxId, TxOp, WireMessage,
};

/// The most participants a prepare may name (a cluster file of more nodes is refused).
pub const MAX_PEER_PARTICIPANTS: usize = 64;

/// A client's request to a peer node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerClientRequest {
    /// A request of section 1 (`getreq`, `putreq`, `delreq`, `statusreq`).
    Client(ClientRequest),
    /// `localreq`: this node's own committed copy of a key, asking no other node.
    Local {
        /// The key.
        key: String,
    },
}

impl PeerClientRequest {
    /// The key the request is about and how it touches it, for program order.
    pub fn access(&self) -> Option<(&str, crate::session::Access)> {
        match self {
            PeerClientRequest::Client(request) => request.access(),
            PeerClientRequest::Local { key } => Some((key, crate::session::Access::Read)),
        }
    }
}

impl WireMessage for PeerClientRequest {
    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>) {
        match self {
            PeerClientRequest::Client(request) => request.encode_into(id, out),
            PeerClientRequest::Local { key } => {
                let mut w = ObjectWriter::new(out, "localreq");
                w.str("key", key);
                w.id(id);
                w.finish();
            }
        }
    }

    fn decode(line: &[u8]) -> Result<Envelope<Self>, DecodeError> {
        let mut obj = Object::parse(line)?;
        let id = take_request_id(&mut obj)?;
        let mut fields = Fields {
            obj: &mut obj,
            id: &id,
        };
        if fields.kind()? != "localreq" {
            let env = ClientRequest::decode(line)?;
            return Ok(Envelope::with_id(
                env.id,
                PeerClientRequest::Client(env.msg),
            ));
        }
        let key = fields.string("key")?;
        check_key(&key).map_err(|code| DecodeError::limit(id.clone(), code))?;
        Ok(Envelope::with_id(id, PeerClientRequest::Local { key }))
    }
}

/// One node as `statusreq` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNodeStatus {
    /// Its ID.
    pub id: u64,
    /// Its address in the cluster file.
    pub addr: String,
    /// Whether it was heard from recently (this node always is).
    pub up: bool,
}

/// A peer node's answer to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerReply {
    /// An answer of section 1's shape.
    Client(ClientResponse),
    /// `statusreq`: section 2's shape without `conflicts` and `repair`.
    Status {
        /// This node.
        node: u64,
        /// How many nodes hold each key.
        replication: u64,
        /// Every node, in ring order.
        nodes: Vec<PeerNodeStatus>,
    },
}

impl WireMessage for PeerReply {
    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>) {
        let (node, replication, nodes) = match self {
            PeerReply::Client(response) => return response.encode_into(id, out),
            PeerReply::Status {
                node,
                replication,
                nodes,
            } => (node, replication, nodes),
        };
        let mut w = ObjectWriter::new(out, "resp");
        w.u64("node", *node).u64("replication", *replication);
        let raw = w.raw("nodes");
        raw.push(b'[');
        for (i, status) in nodes.iter().enumerate() {
            if i > 0 {
                raw.push(b',');
            }
            let mut item = ObjectWriter::untyped(&mut *raw);
            // A peer node holds no hints; the field keeps section 2's shape.
            item.u64("id", status.id)
                .str("addr", &status.addr)
                .bool("up", status.up)
                .u64("hints", 0);
            item.close();
        }
        raw.push(b']');
        w.id(id);
        w.finish();
    }

    fn decode(line: &[u8]) -> Result<Envelope<Self>, DecodeError> {
        let mut obj = Object::parse(line)?;
        if !obj.has("nodes") {
            let env = ClientResponse::decode(line)?;
            return Ok(Envelope::with_id(env.id, PeerReply::Client(env.msg)));
        }
        let id = take_request_id(&mut obj)?;
        let mut fields = Fields {
            obj: &mut obj,
            id: &id,
        };
        let node = fields.u64("node")?;
        let replication = fields.u64("replication")?;
        let mut nodes = Vec::new();
        for item in fields.array("nodes")? {
            let Value::Object(map) = item else {
                return Err(fields.invalid("\"nodes\" must hold objects"));
            };
            let id_field = map.get("id").and_then(Value::as_u64);
            let addr = map.get("addr").and_then(Value::as_str);
            let up = map.get("up").and_then(Value::as_bool);
            let (Some(node_id), Some(addr), Some(up)) = (id_field, addr, up) else {
                return Err(fields.invalid("a node needs \"id\", \"addr\" and \"up\""));
            };
            let addr = addr.to_owned();
            nodes.push(PeerNodeStatus {
                id: node_id,
                addr,
                up,
            });
        }
        let status = PeerReply::Status {
            node,
            replication,
            nodes,
        };
        Ok(Envelope::with_id(id, status))
    }
}

/// What a read of a replica found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// The committed value.
    Value(String),
    /// No committed value.
    NotFound,
    /// No answer from this replica (`unavailable`, `internal`, ...): ask another.
    Error(ErrorCode),
}

/// A message between peer nodes; every one names its sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerMessage {
    /// The node that sent it.
    pub from: u64,
    /// What it says.
    pub body: PeerBody,
}

/// What one peer node tells another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerBody {
    /// `peer_prepare`: phase 1, with every participant (for cooperative termination).
    Prepare {
        /// The transaction; its coordinator is part of it.
        txid: TxId,
        /// The key.
        key: String,
        /// What to do with it.
        op: TxOp,
        /// Every participant, the receiver included.
        participants: Vec<u64>,
    },
    /// `peer_ready`: a durable vote to commit.
    Ready {
        /// The transaction.
        txid: TxId,
    },
    /// `peer_refuse`: a vote to abort.
    Refuse {
        /// The transaction.
        txid: TxId,
        /// Why, for programs (`locked`, `not_found`, a limit, `overloaded`).
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// `peer_decide`: phase 2.
    Decide {
        /// The transaction.
        txid: TxId,
        /// Commit or abort.
        commit: bool,
    },
    /// `peer_ack`: the decision is durable at the sender (or the transaction is unknown).
    Ack {
        /// The transaction.
        txid: TxId,
    },
    /// `peer_query`: the sender holds the transaction in doubt and asks its decision.
    Query {
        /// The transaction.
        txid: TxId,
    },
    /// `peer_outcome`: the decision of a transaction, answering a query.
    Outcome {
        /// The transaction.
        txid: TxId,
        /// Commit or abort.
        commit: bool,
    },
    /// `peer_get`: read a replica's committed copy (waiting for a prepared key's decision).
    Read {
        /// Matches the answer to the read.
        rid: u64,
        /// The key.
        key: String,
    },
    /// `peer_value`: the answer to a read.
    ReadAnswer {
        /// The read.
        rid: u64,
        /// What the replica found.
        result: ReadResult,
    },
    /// `peer_ping`: a sign of life, asking for one back.
    Ping,
    /// `peer_pong`: the answer to a ping.
    Pong,
}

impl PeerMessage {
    /// The message as one line, `\n` included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(None, &mut out);
        out
    }
}

fn write_body<'a>(out: &'a mut Vec<u8>, body: &PeerBody) -> ObjectWriter<'a> {
    let simple = |out: &'a mut Vec<u8>, kind: &'static str, txid: TxId| {
        let mut w = ObjectWriter::new(out, kind);
        w.u64("txid", txid);
        w
    };
    match body {
        PeerBody::Prepare {
            txid,
            key,
            op,
            participants,
        } => {
            let mut w = simple(out, "peer_prepare", *txid);
            w.str("key", key);
            if let TxOp::Put { value } = op {
                w.str("value", value);
            }
            let raw = w.raw("participants");
            let list: Vec<String> = participants.iter().map(u64::to_string).collect();
            raw.extend_from_slice(format!("[{}]", list.join(",")).as_bytes());
            w
        }
        PeerBody::Ready { txid } => simple(out, "peer_ready", *txid),
        PeerBody::Refuse {
            txid,
            code,
            message,
        } => {
            let mut w = simple(out, "peer_refuse", *txid);
            w.str("error", code.as_str()).str("message", message);
            w
        }
        PeerBody::Decide { txid, commit } => {
            let mut w = simple(out, "peer_decide", *txid);
            w.bool("commit", *commit);
            w
        }
        PeerBody::Ack { txid } => simple(out, "peer_ack", *txid),
        PeerBody::Query { txid } => simple(out, "peer_query", *txid),
        PeerBody::Outcome { txid, commit } => {
            let mut w = simple(out, "peer_outcome", *txid);
            w.bool("commit", *commit);
            w
        }
        PeerBody::Read { rid, key } => {
            let mut w = ObjectWriter::new(out, "peer_get");
            w.u64("rid", *rid).str("key", key);
            w
        }
        PeerBody::ReadAnswer { rid, result } => {
            let mut w = ObjectWriter::new(out, "peer_value");
            w.u64("rid", *rid);
            match result {
                ReadResult::Value(value) => w.str("value", value),
                ReadResult::NotFound => w.str("error", ErrorCode::NotFound.as_str()),
                ReadResult::Error(code) => w.str("error", code.as_str()),
            };
            w
        }
        PeerBody::Ping => ObjectWriter::new(out, "peer_ping"),
        PeerBody::Pong => ObjectWriter::new(out, "peer_pong"),
    }
}

fn read_body(kind: &str, fields: &mut Fields<'_, '_>) -> Result<PeerBody, DecodeError> {
    Ok(match kind {
        "peer_prepare" => {
            let txid = fields.u64("txid")?;
            let key = fields.string("key")?;
            let op = match fields.opt_string("value")? {
                Some(value) => TxOp::Put { value },
                None => TxOp::Del,
            };
            let items = fields.array("participants")?;
            let participants = items
                .iter()
                .map(Value::as_u64)
                .collect::<Option<Vec<u64>>>()
                .filter(|list| !list.is_empty() && list.len() <= MAX_PEER_PARTICIPANTS)
                .ok_or_else(|| fields.invalid("\"participants\" must hold 1 to 64 IDs"))?;
            PeerBody::Prepare {
                txid,
                key,
                op,
                participants,
            }
        }
        "peer_ready" => PeerBody::Ready {
            txid: fields.u64("txid")?,
        },
        "peer_refuse" => {
            let txid = fields.u64("txid")?;
            // A vote to abort with a code this version does not know is still a refusal.
            let code = ErrorCode::parse(&fields.string("error")?).unwrap_or(ErrorCode::Aborted);
            let message = fields.opt_string("message")?.unwrap_or_default();
            PeerBody::Refuse {
                txid,
                code,
                message,
            }
        }
        "peer_decide" => PeerBody::Decide {
            txid: fields.u64("txid")?,
            commit: fields.bool("commit")?,
        },
        "peer_ack" => PeerBody::Ack {
            txid: fields.u64("txid")?,
        },
        "peer_query" => PeerBody::Query {
            txid: fields.u64("txid")?,
        },
        "peer_outcome" => PeerBody::Outcome {
            txid: fields.u64("txid")?,
            commit: fields.bool("commit")?,
        },
        "peer_get" => PeerBody::Read {
            rid: fields.u64("rid")?,
            key: fields.string("key")?,
        },
        "peer_value" => {
            let rid = fields.u64("rid")?;
            let result = match fields.opt_string("value")? {
                Some(value) => ReadResult::Value(value),
                None => match ErrorCode::parse(&fields.string("error")?) {
                    Some(ErrorCode::NotFound) => ReadResult::NotFound,
                    Some(code) => ReadResult::Error(code),
                    None => ReadResult::Error(ErrorCode::Internal),
                },
            };
            PeerBody::ReadAnswer { rid, result }
        }
        "peer_ping" => PeerBody::Ping,
        "peer_pong" => PeerBody::Pong,
        other => return Err(fields.unknown_kind(other)),
    })
}

impl WireMessage for PeerMessage {
    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>) {
        let mut w = write_body(out, &self.body);
        w.u64("from", self.from);
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
        let body = read_body(&kind, &mut fields)?;
        let from = fields.u64("from")?;
        Ok(Envelope::with_id(id, PeerMessage { from, body }))
    }
}

/// One line on a peer node's port: a client's request or another node's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMessage {
    /// From a client.
    Client(Envelope<PeerClientRequest>),
    /// From another node.
    Peer(PeerMessage),
}

impl PortMessage {
    /// Decodes one line of the port (without its line end): a `type` starting with
    /// `peer_` is another node's, anything else a client's. Never panics.
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        let mut obj = Object::parse(line)?;
        let is_peer =
            matches!(obj.take("type"), Some(Field::Str(kind)) if kind.starts_with("peer_"));
        if is_peer {
            PeerMessage::decode(line).map(|env| PortMessage::Peer(env.msg))
        } else {
            PeerClientRequest::decode(line).map(PortMessage::Client)
        }
    }
}

/// The error answer a client gets for `code` on a peer node.
pub fn peer_error(code: ErrorCode, message: impl Into<String>) -> PeerReply {
    PeerReply::Client(ClientResponse::Error(ErrorReply::with_message(
        code, message,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: PeerBody) {
        let msg = PeerMessage { from: 7, body };
        let line = msg.encode();
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        match PortMessage::decode(text) {
            Ok(PortMessage::Peer(back)) => assert_eq!(back, msg),
            other => panic!("{:?} decoded as {other:?}", String::from_utf8_lossy(&line)),
        }
    }

    #[test]
    fn every_peer_message_round_trips_through_the_port() {
        let put = TxOp::Put {
            value: "v\n\"x".into(),
        };
        round_trip(PeerBody::Prepare {
            txid: u64::MAX,
            key: "k".into(),
            op: put,
            participants: vec![0, u64::MAX],
        });
        round_trip(PeerBody::Prepare {
            txid: 1,
            key: "k".into(),
            op: TxOp::Del,
            participants: vec![3],
        });
        round_trip(PeerBody::Ready { txid: 2 });
        round_trip(PeerBody::Refuse {
            txid: 2,
            code: ErrorCode::Locked,
            message: "busy".into(),
        });
        for commit in [true, false] {
            round_trip(PeerBody::Decide { txid: 3, commit });
            round_trip(PeerBody::Outcome { txid: 3, commit });
        }
        round_trip(PeerBody::Ack { txid: 4 });
        round_trip(PeerBody::Query { txid: 4 });
        round_trip(PeerBody::Read {
            rid: 5,
            key: "k".into(),
        });
        for result in [
            ReadResult::Value(String::new()),
            ReadResult::NotFound,
            ReadResult::Error(ErrorCode::Unavailable),
        ] {
            round_trip(PeerBody::ReadAnswer { rid: 5, result });
        }
        round_trip(PeerBody::Ping);
        round_trip(PeerBody::Pong);
    }

    #[test]
    fn client_lines_on_the_port_are_client_requests() {
        let local = PortMessage::decode(br#"{"type":"localreq","key":"k","id":3}"#);
        let Ok(PortMessage::Client(env)) = local else {
            panic!("{local:?}");
        };
        assert_eq!(env.id, Some(RequestId::Unsigned(3)));
        assert_eq!(env.msg, PeerClientRequest::Local { key: "k".into() });
        let get = PortMessage::decode(br#"{"type":"getreq","key":"k"}"#);
        assert!(matches!(
            get,
            Ok(PortMessage::Client(Envelope {
                msg: PeerClientRequest::Client(ClientRequest::Get { .. }),
                ..
            }))
        ));
        let empty = PortMessage::decode(br#"{"type":"localreq","key":"","id":"a"}"#);
        let Err(err) = empty else {
            panic!("{empty:?}");
        };
        assert_eq!(
            (err.code, err.id),
            (ErrorCode::EmptyKey, Some(RequestId::Text("a".into())))
        );
        for bad in [
            &br#"{"type":"peer_prepare","txid":1,"key":"k","participants":[],"from":1}"#[..],
            br#"{"type":"peer_decide","txid":1,"commit":"yes","from":1}"#,
            br#"{"type":"peer_ack","txid":1}"#,
            br#"{"type":"peer_nonsense","from":1}"#,
            b"[1]",
        ] {
            let got = PortMessage::decode(bad);
            assert!(
                matches!(&got, Err(e) if e.code == ErrorCode::Malformed),
                "{got:?}"
            );
        }
    }

    #[test]
    fn a_status_answer_round_trips() {
        let status = PeerReply::Status {
            node: 2,
            replication: 3,
            nodes: vec![PeerNodeStatus {
                id: 2,
                addr: "127.0.0.1:1".into(),
                up: true,
            }],
        };
        let line = Envelope::with_id(Some(RequestId::Unsigned(1)), status.clone()).encode();
        let text = String::from_utf8_lossy(&line).into_owned();
        assert!(text.contains(r#""hints":0"#), "{text}");
        let back = PeerReply::decode(line.strip_suffix(b"\n").unwrap_or(&line));
        assert_eq!(back.map(|e| e.msg), Ok(status));
        let success = PeerReply::decode(br#"{"type":"resp","message":"Success"}"#);
        assert_eq!(
            success.map(|e| e.msg),
            Ok(PeerReply::Client(ClientResponse::Success))
        );
    }
}
