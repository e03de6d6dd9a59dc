//! Eventual mode's port (PROTOCOL.md section 2): one port per node, spoken by clients
//! and by the other nodes, told apart by `"type"`. The client messages are normative;
//! the node-to-node messages are the project's own (`docs/protocol.md`), and their types
//! all start with `ev_`, which no client type does.
//!
//! Key states travel as the versions component's binary encoding, written as lower-case
//! hex in a JSON string: JSON strings cannot carry raw bytes, and hex needs no escaping.

use serde_json::Value;

use super::client::decode_error_fields;
use super::json::{take_request_id, Field, Fields, Object, ObjectWriter};
use super::{
    check_key, check_key_value, DecodeError, Envelope, ErrorCode, ErrorReply, RequestId,
    WireMessage,
};

/// How many replicas must answer a request (`"consistency"`, default `quorum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Consistency {
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// Three replicas.
    Three,
    /// floor(N/2)+1 replicas.
    Quorum,
    /// Every replica.
    All,
}

impl Consistency {
    /// The level as it is spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::One => "one",
            Consistency::Two => "two",
            Consistency::Three => "three",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
        }
    }

    /// Parses a level as it is spelled on the wire.
    pub fn parse(text: &str) -> Option<Consistency> {
        [
            Consistency::One,
            Consistency::Two,
            Consistency::Three,
            Consistency::Quorum,
            Consistency::All,
        ]
        .into_iter()
        .find(|level| level.as_str() == text)
    }

    /// R or W under replication `n`: 1, 2, 3, floor(n/2)+1, n. A result above `n` can
    /// never be met, and the request is answered `unavailable`.
    pub fn replicas(self, n: usize) -> usize {
        match self {
            Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Three => 3,
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
        }
    }
}

/// What a client write does to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// `putreq`: write the value.
    Put(String),
    /// `delreq`: write a deletion.
    Del,
}

/// A client's request to an eventual-mode node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventualRequest {
    /// `getreq`: read a key from R replicas.
    Get {
        /// The key.
        key: String,
        /// How many replicas must answer.
        consistency: Consistency,
    },
    /// `putreq` or `delreq`: write a key at W replicas.
    Write {
        /// The key.
        key: String,
        /// The value or the deletion.
        op: WriteOp,
        /// How many replicas must hold it durably.
        consistency: Consistency,
        /// The opaque context of an earlier answer, as the client sent it; `None` for a
        /// blind write. Decoded by the node, since its meaning depends on `--conflicts`.
        context: Option<String>,
    },
    /// `localreq`: this node's own copy of a key.
    Local {
        /// The key.
        key: String,
    },
    /// `statusreq`: the node, its settings and the cluster.
    Status,
}

/// One node as `statusreq` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's ID.
    pub id: u64,
    /// Its address from the cluster file.
    pub addr: String,
    /// Whether the answering node believes it up.
    pub up: bool,
    /// Hints the answering node holds for it.
    pub hints: u64,
}

/// An eventual-mode node's answer to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventualResponse {
    /// A read found versions: each a VERSION object (`{"value":V,"clock":CLOCK}` or
    /// `{"deleted":true,"clock":CLOCK}`), with `value` set when there is exactly one
    /// version and it is not a deletion.
    Read {
        /// The key.
        key: String,
        /// The VERSION objects.
        versions: Vec<Value>,
        /// The only value, if there is exactly one version and it holds a value.
        value: Option<String>,
        /// The context a later write carries to supersede these versions.
        context: String,
    },
    /// A write is held durably by W replicas.
    Written {
        /// The new version's CLOCK object.
        clock: Value,
        /// A context covering the new version.
        context: String,
    },
    /// The key does not exist or holds only deletions; `context` is set when it has
    /// deletions, so a later write can supersede them.
    NotFound {
        /// The context of the deletions, if any.
        context: Option<String>,
    },
    /// The node's settings and the cluster in ring order.
    Status {
        /// This node's ID.
        node: u64,
        /// N.
        replication: u64,
        /// `siblings` or `lww`.
        conflicts: String,
        /// `read`, `hints`, `both` or `none`.
        repair: String,
        /// Every node, ascending ID.
        nodes: Vec<NodeStatus>,
        /// Hints dropped at a bound since the node started (an addition to section 2's
        /// shape; absent reads as 0).
        hints_dropped: u64,
        /// Whether this node, started on an empty data directory, still waits for other
        /// nodes to stream it their keys (an addition to section 2's shape; absent reads
        /// as false). Until it is false the node may miss writes it should hold.
        catching_up: bool,
    },
    /// The request failed; see the code. `timeout` travels as its own variant.
    Error(ErrorReply),
    /// `timeout`: tried, fewer than R or W replicas answered in time (section 2's code
    /// beyond section 1's table).
    Timeout,
}

impl EventualResponse {
    /// An error answer with the code's default message.
    pub fn error(code: ErrorCode) -> Self {
        EventualResponse::Error(ErrorReply::new(code))
    }
}

/// A key's state as it travels between nodes: the versions component's binary encoding
/// of a container (or a last-write-wins version), decoded by the receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateBytes(pub Vec<u8>);

/// What one node sends another (the project's own messages, `docs/protocol.md`). `req`
/// names a request of the sender so that its answer can be matched; answers carry the
/// `req` of what they answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    /// `ev_write`: apply a client write as the key's first replica (the blind-write rule
    /// of section 2), answered `ev_written` once durable, or `ev_refused`.
    Write {
        /// The coordinator's request.
        req: u64,
        /// The key.
        key: String,
        /// The value or the deletion.
        op: WriteOp,
        /// The client's context string, `None` for a blind write.
        context: Option<String>,
    },
    /// `ev_written`: the write is durable here; the key's resulting state, and the new
    /// version's CLOCK and answer context.
    Written {
        /// The request answered.
        req: u64,
        /// The key's whole state after the write.
        state: StateBytes,
        /// The new version's CLOCK object.
        clock: Value,
        /// The context to answer the client.
        context: String,
    },
    /// `ev_store`: merge this state of the key (replication, read repair, hint delivery);
    /// answered `ev_stored` once the merge is durable. Never refused by the sibling
    /// limit.
    Store {
        /// The sender's request (a write, a read repair, or a hint).
        req: u64,
        /// The key.
        key: String,
        /// Its state.
        state: StateBytes,
    },
    /// `ev_reap`: every replica was seen holding exactly this state, only deletions, and
    /// the sender holds no hint of the key. Without `commit`, a replica that still holds
    /// exactly it, owes no hint of it and is not writing it answers `ev_reap_ok` (else
    /// nothing); with `commit` (sent once every replica said so), it checks the same again
    /// and reaps (keeps a grave of the key's knowledge). Two steps, so that replicas reap
    /// together or not at all, unless the key changed in between.
    Reap {
        /// The sender's request.
        req: u64,
        /// The key.
        key: String,
        /// The state every replica held.
        state: StateBytes,
        /// Reap now (every replica agreed), or only say whether you would.
        commit: bool,
    },
    /// `ev_reap_ok`: this replica would reap the key of an `ev_reap` without `commit`.
    ReapOk {
        /// The request answered.
        req: u64,
    },
    /// `ev_sync`: the sender started on an empty data directory (its disk was lost, or
    /// it is new): send it every key you hold that it is a replica of, a batch at a time,
    /// then `ev_sync_done`. A repeated `ev_sync` while a stream runs changes nothing.
    Sync {
        /// The sender's request.
        req: u64,
    },
    /// `ev_sync_done`: every key of an `ev_sync` was sent.
    SyncDone {
        /// The request answered.
        req: u64,
    },
    /// `ev_settled`: from a write's coordinator to its first replica: every replica
    /// confirmed the write or has a hint for it here, so the first replica owes nothing
    /// for it any more. Not answered.
    Settled {
        /// The coordinator's request that the `ev_write` carried.
        req: u64,
    },
    /// `ev_apply`: an `ev_store` of a last-write-wins write to the key's first replica,
    /// which also logs what the other replicas are owed (as `ev_write` does in siblings
    /// mode); answered `ev_stored` once both are durable.
    Apply {
        /// The coordinator's request.
        req: u64,
        /// The key.
        key: String,
        /// Its state.
        state: StateBytes,
    },
    /// `ev_stored`: the merged state of an `ev_store` is durable here.
    Stored {
        /// The request answered.
        req: u64,
    },
    /// `ev_read`: send this replica's state of the key.
    Read {
        /// The coordinator's request.
        req: u64,
        /// The key.
        key: String,
    },
    /// `ev_state`: this replica's durable state of the key; `None` when it holds nothing.
    State {
        /// The request answered.
        req: u64,
        /// The state, if any.
        state: Option<StateBytes>,
    },
    /// `ev_refused`: the request was not done (an error code: `overloaded` when the
    /// sibling limit or a queue is full, `malformed` for a bad context).
    Refused {
        /// The request answered.
        req: u64,
        /// Why.
        error: ErrorReply,
    },
}

impl PeerMessage {
    /// The message's `"type"` on the wire; every one starts with `ev_`.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Write { .. } => "ev_write",
            PeerMessage::Written { .. } => "ev_written",
            PeerMessage::Store { .. } => "ev_store",
            PeerMessage::Apply { .. } => "ev_apply",
            PeerMessage::Reap { .. } => "ev_reap",
            PeerMessage::ReapOk { .. } => "ev_reap_ok",
            PeerMessage::Settled { .. } => "ev_settled",
            PeerMessage::Sync { .. } => "ev_sync",
            PeerMessage::SyncDone { .. } => "ev_sync_done",
            PeerMessage::Stored { .. } => "ev_stored",
            PeerMessage::Read { .. } => "ev_read",
            PeerMessage::State { .. } => "ev_state",
            PeerMessage::Refused { .. } => "ev_refused",
        }
    }

    /// The request a message belongs to.
    pub fn req(&self) -> u64 {
        match self {
            PeerMessage::Write { req, .. }
            | PeerMessage::Written { req, .. }
            | PeerMessage::Store { req, .. }
            | PeerMessage::Apply { req, .. }
            | PeerMessage::Reap { req, .. }
            | PeerMessage::ReapOk { req }
            | PeerMessage::Settled { req }
            | PeerMessage::Sync { req }
            | PeerMessage::SyncDone { req }
            | PeerMessage::Stored { req }
            | PeerMessage::Read { req, .. }
            | PeerMessage::State { req, .. }
            | PeerMessage::Refused { req, .. } => *req,
        }
    }
}

/// Anything that arrives on a node's port: a client request or a node's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMessage {
    /// From a client (or an operator).
    Client(EventualRequest),
    /// From another node.
    Peer(PeerMessage),
}

fn write_hex(w: &mut ObjectWriter<'_>, name: &'static str, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    w.str(name, &text);
}

fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Lower-case hex to bytes; `None` for anything else (odd length, other characters).
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some(hex_digit(*hi)? << 4 | hex_digit(*lo)?),
            _ => None,
        })
        .collect()
}

fn write_op(w: &mut ObjectWriter<'_>, op: &WriteOp) {
    match op {
        WriteOp::Put(value) => w.str("value", value),
        WriteOp::Del => w.bool("deleted", true),
    };
}

fn encode_client(msg: &EventualRequest, id: Option<&RequestId>, out: &mut Vec<u8>) {
    let mut w = match msg {
        EventualRequest::Get { key, consistency } => {
            let mut w = ObjectWriter::new(out, "getreq");
            w.str("key", key).str("consistency", consistency.as_str());
            w
        }
        EventualRequest::Write {
            key,
            op,
            consistency,
            context,
        } => {
            let mut w = match op {
                WriteOp::Put(value) => {
                    let mut w = ObjectWriter::new(out, "putreq");
                    w.str("key", key).str("value", value);
                    w
                }
                WriteOp::Del => {
                    let mut w = ObjectWriter::new(out, "delreq");
                    w.str("key", key);
                    w
                }
            };
            w.str("consistency", consistency.as_str());
            if let Some(context) = context {
                w.str("context", context);
            }
            w
        }
        EventualRequest::Local { key } => {
            let mut w = ObjectWriter::new(out, "localreq");
            w.str("key", key);
            w
        }
        EventualRequest::Status => ObjectWriter::new(out, "statusreq"),
    };
    w.id(id);
    w.finish();
}

fn encode_peer(msg: &PeerMessage, id: Option<&RequestId>, out: &mut Vec<u8>) {
    let mut w = ObjectWriter::new(out, msg.kind());
    w.u64("req", msg.req());
    match msg {
        PeerMessage::Write {
            key, op, context, ..
        } => {
            w.str("key", key);
            write_op(&mut w, op);
            if let Some(context) = context {
                w.str("context", context);
            }
        }
        PeerMessage::Written {
            state,
            clock,
            context,
            ..
        } => {
            write_hex(&mut w, "state", &state.0);
            write_raw(&mut w, "clock", clock);
            w.str("context", context);
        }
        PeerMessage::Apply { key, state, .. } | PeerMessage::Store { key, state, .. } => {
            w.str("key", key);
            write_hex(&mut w, "state", &state.0);
        }
        PeerMessage::Reap {
            key, state, commit, ..
        } => {
            w.str("key", key);
            write_hex(&mut w, "state", &state.0);
            w.bool("commit", *commit);
        }
        PeerMessage::Read { key, .. } => {
            w.str("key", key);
        }
        PeerMessage::State { state, .. } => {
            if let Some(state) = state {
                write_hex(&mut w, "state", &state.0);
            }
        }
        PeerMessage::Refused { error, .. } => {
            w.str("error", error.code.as_str())
                .str("message", &error.message);
        }
        PeerMessage::Stored { .. }
        | PeerMessage::ReapOk { .. }
        | PeerMessage::Settled { .. }
        | PeerMessage::Sync { .. }
        | PeerMessage::SyncDone { .. } => {}
    }
    w.id(id);
    w.finish();
}

fn write_raw(w: &mut ObjectWriter<'_>, name: &'static str, value: &Value) {
    let raw = w.raw(name);
    // Serializing a Value into a Vec fails neither in serde_json nor in the Vec.
    let written = serde_json::to_writer(&mut *raw, value);
    debug_assert!(written.is_ok());
}

impl WireMessage for NodeMessage {
    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>) {
        match self {
            NodeMessage::Client(msg) => encode_client(msg, id, out),
            NodeMessage::Peer(msg) => encode_peer(msg, id, out),
        }
    }

    /// Faults in the protocol's order: `malformed` (a bad `consistency` or `context`
    /// type included), then `empty_key`, `key_too_long`, `value_too_large`.
    fn decode(line: &[u8]) -> Result<Envelope<Self>, DecodeError> {
        let mut obj = Object::parse(line)?;
        let id = take_request_id(&mut obj)?;
        let mut fields = Fields {
            obj: &mut obj,
            id: &id,
        };
        let kind = fields.kind()?;
        let msg = match kind.strip_prefix("ev_") {
            Some(peer) => NodeMessage::Peer(decode_peer(peer, &kind, &mut fields)?),
            None => NodeMessage::Client(decode_client(&kind, &mut fields)?),
        };
        let limits = match &msg {
            NodeMessage::Client(EventualRequest::Status) => Ok(()),
            NodeMessage::Client(EventualRequest::Get { key, .. })
            | NodeMessage::Client(EventualRequest::Local { key })
            | NodeMessage::Peer(PeerMessage::Read { key, .. })
            | NodeMessage::Peer(PeerMessage::Store { key, .. })
            | NodeMessage::Peer(PeerMessage::Apply { key, .. })
            | NodeMessage::Peer(PeerMessage::Reap { key, .. }) => check_key(key),
            NodeMessage::Client(EventualRequest::Write { key, op, .. })
            | NodeMessage::Peer(PeerMessage::Write { key, op, .. }) => match op {
                WriteOp::Put(value) => check_key_value(key, Some(value)),
                WriteOp::Del => check_key(key),
            },
            NodeMessage::Peer(_) => Ok(()),
        };
        match limits {
            Ok(()) => Ok(Envelope::with_id(id, msg)),
            Err(code) => Err(DecodeError::limit(id, code)),
        }
    }
}

fn consistency(fields: &mut Fields<'_, '_>) -> Result<Consistency, DecodeError> {
    match fields.opt_string("consistency")? {
        None => Ok(Consistency::Quorum),
        Some(text) => Consistency::parse(&text)
            .ok_or_else(|| fields.invalid(format!("unknown consistency \"{text}\""))),
    }
}

fn decode_client(kind: &str, fields: &mut Fields<'_, '_>) -> Result<EventualRequest, DecodeError> {
    Ok(match kind {
        "getreq" => {
            let key = fields.string("key")?;
            EventualRequest::Get {
                key,
                consistency: consistency(fields)?,
            }
        }
        "putreq" | "delreq" => {
            let key = fields.string("key")?;
            let op = if kind == "putreq" {
                WriteOp::Put(fields.string("value")?)
            } else {
                WriteOp::Del
            };
            let consistency = consistency(fields)?;
            let context = fields.opt_string("context")?;
            EventualRequest::Write {
                key,
                op,
                consistency,
                context,
            }
        }
        "localreq" => EventualRequest::Local {
            key: fields.string("key")?,
        },
        "statusreq" => EventualRequest::Status,
        other => return Err(fields.unknown_kind(other)),
    })
}

fn state_field(fields: &mut Fields<'_, '_>) -> Result<StateBytes, DecodeError> {
    let text = fields.string("state")?;
    parse_hex(&text)
        .map(StateBytes)
        .ok_or_else(|| fields.invalid("\"state\" must be lower-case hex"))
}

fn op_field(fields: &mut Fields<'_, '_>) -> Result<WriteOp, DecodeError> {
    match fields.opt_string("value")? {
        Some(value) => Ok(WriteOp::Put(value)),
        None if fields.obj.take("deleted") == Some(Field::Bool(true)) => Ok(WriteOp::Del),
        None => Err(fields.invalid("ev_write needs \"value\" or \"deleted\":true")),
    }
}

fn decode_peer(
    peer: &str,
    kind: &str,
    fields: &mut Fields<'_, '_>,
) -> Result<PeerMessage, DecodeError> {
    let req = fields.u64("req")?;
    Ok(match peer {
        "write" => PeerMessage::Write {
            req,
            key: fields.string("key")?,
            op: op_field(fields)?,
            context: fields.opt_string("context")?,
        },
        "written" => PeerMessage::Written {
            req,
            state: state_field(fields)?,
            clock: fields
                .obj
                .take("clock")
                .map(Field::into_value)
                .filter(Value::is_object)
                .ok_or_else(|| fields.invalid("\"clock\" must be an object"))?,
            context: fields.string("context")?,
        },
        "apply" => PeerMessage::Apply {
            req,
            key: fields.string("key")?,
            state: state_field(fields)?,
        },
        "store" => PeerMessage::Store {
            req,
            key: fields.string("key")?,
            state: state_field(fields)?,
        },
        "reap" => PeerMessage::Reap {
            req,
            key: fields.string("key")?,
            state: state_field(fields)?,
            commit: match fields.obj.take("commit") {
                Some(Field::Bool(commit)) => commit,
                _ => return Err(fields.invalid("\"commit\" must be true or false")),
            },
        },
        "reap_ok" => PeerMessage::ReapOk { req },
        "settled" => PeerMessage::Settled { req },
        "sync" => PeerMessage::Sync { req },
        "sync_done" => PeerMessage::SyncDone { req },
        "stored" => PeerMessage::Stored { req },
        "read" => PeerMessage::Read {
            req,
            key: fields.string("key")?,
        },
        "state" => PeerMessage::State {
            req,
            state: if fields.obj.has("state") {
                Some(state_field(fields)?)
            } else {
                None
            },
        },
        "refused" => PeerMessage::Refused {
            req,
            error: decode_error_fields(fields)?,
        },
        _ => return Err(fields.unknown_kind(kind)),
    })
}

impl WireMessage for EventualResponse {
    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::new(out, "resp");
        match self {
            EventualResponse::Read {
                key,
                versions,
                value,
                context,
            } => {
                w.str("key", key);
                write_raw(&mut w, "versions", &Value::Array(versions.clone()));
                if let Some(value) = value {
                    w.str("value", value);
                }
                w.str("context", context);
            }
            EventualResponse::Written { clock, context } => {
                w.str("message", "Success");
                write_raw(&mut w, "clock", clock);
                w.str("context", context);
            }
            EventualResponse::NotFound { context } => {
                let code = ErrorCode::NotFound;
                w.str("error", code.as_str())
                    .str("message", code.default_message());
                if let Some(context) = context {
                    w.str("context", context);
                }
            }
            EventualResponse::Status {
                node,
                replication,
                conflicts,
                repair,
                nodes,
                hints_dropped,
                catching_up,
            } => {
                w.u64("node", *node)
                    .u64("replication", *replication)
                    .str("conflicts", conflicts)
                    .str("repair", repair);
                write_nodes(&mut w, nodes);
                w.u64("hints_dropped", *hints_dropped)
                    .bool("catching_up", *catching_up);
            }
            EventualResponse::Error(reply) => {
                w.str("error", reply.code.as_str())
                    .str("message", &reply.message);
            }
            EventualResponse::Timeout => {
                w.str("error", TIMEOUT).str(
                    "message",
                    "Timeout: too few replicas answered in time; a write may exist on some",
                );
            }
        }
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
        if kind != "resp" {
            return Err(fields.unknown_kind(&kind));
        }
        let msg = decode_response_fields(&mut fields)?;
        Ok(Envelope::with_id(id, msg))
    }
}

/// The error code of section 2 that section 1's table does not have.
const TIMEOUT: &str = "timeout";

fn write_nodes(w: &mut ObjectWriter<'_>, nodes: &[NodeStatus]) {
    let raw = w.raw("nodes");
    raw.push(b'[');
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            raw.push(b',');
        }
        let mut item = ObjectWriter::untyped(&mut *raw);
        item.u64("id", node.id)
            .str("addr", &node.addr)
            .bool("up", node.up)
            .u64("hints", node.hints);
        item.close();
    }
    raw.push(b']');
}

fn decode_response_fields(fields: &mut Fields<'_, '_>) -> Result<EventualResponse, DecodeError> {
    if fields.obj.has("error") {
        let code = fields.string("error")?;
        let message = fields.opt_string("message")?.unwrap_or_default();
        return Ok(match code.as_str() {
            TIMEOUT => EventualResponse::Timeout,
            "not_found" => EventualResponse::NotFound {
                context: fields.opt_string("context")?,
            },
            other => EventualResponse::Error(ErrorReply {
                code: ErrorCode::parse(other)
                    .ok_or_else(|| fields.invalid(format!("unknown error code \"{other}\"")))?,
                message,
            }),
        });
    }
    if fields.obj.has("nodes") {
        let node = fields.u64("node")?;
        let replication = fields.u64("replication")?;
        let conflicts = fields.string("conflicts")?;
        let repair = fields.string("repair")?;
        let items = fields.array("nodes")?;
        let hints_dropped = if fields.obj.has("hints_dropped") {
            fields.u64("hints_dropped")?
        } else {
            0
        };
        let catching_up = if fields.obj.has("catching_up") {
            fields.bool("catching_up")?
        } else {
            false
        };
        let nodes = items
            .iter()
            .map(|item| decode_node_status(item).ok_or_else(|| fields.invalid("bad node")))
            .collect::<Result<_, _>>()?;
        return Ok(EventualResponse::Status {
            node,
            replication,
            conflicts,
            repair,
            nodes,
            hints_dropped,
            catching_up,
        });
    }
    if fields.obj.has("versions") {
        let key = fields.string("key")?;
        let versions = fields.array("versions")?;
        let value = fields.opt_string("value")?;
        let context = fields.string("context")?;
        return Ok(EventualResponse::Read {
            key,
            versions,
            value,
            context,
        });
    }
    let clock = fields
        .obj
        .take("clock")
        .map(Field::into_value)
        .filter(Value::is_object)
        .ok_or_else(|| fields.invalid("a write's answer needs a \"clock\" object"))?;
    let context = fields.string("context")?;
    Ok(EventualResponse::Written { clock, context })
}

fn decode_node_status(item: &Value) -> Option<NodeStatus> {
    Some(NodeStatus {
        id: item.get("id")?.as_u64()?,
        addr: item.get("addr")?.as_str()?.to_owned(),
        up: item.get("up")?.as_bool()?,
        hints: item.get("hints")?.as_u64()?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug + Clone>(
        msg: M,
        id: Option<RequestId>,
    ) {
        let envelope = Envelope::with_id(id, msg);
        let line = envelope.encode();
        assert_eq!(line.last(), Some(&b'\n'));
        let back = Envelope::<M>::decode(&line[..line.len() - 1]).expect("decodes");
        assert_eq!(back, envelope, "{}", String::from_utf8_lossy(&line));
    }

    fn decode(line: &str) -> Result<NodeMessage, DecodeError> {
        Envelope::<NodeMessage>::decode(line.as_bytes()).map(|e| e.msg)
    }

    #[test]
    fn every_message_round_trips() {
        let state = StateBytes(vec![0, 1, 0xab, 0xff]);
        let messages = [
            NodeMessage::Client(EventualRequest::Get {
                key: "k".into(),
                consistency: Consistency::One,
            }),
            NodeMessage::Client(EventualRequest::Write {
                key: "k".into(),
                op: WriteOp::Put("v\n\"".into()),
                consistency: Consistency::All,
                context: Some("1:2~3:4".into()),
            }),
            NodeMessage::Client(EventualRequest::Write {
                key: "k".into(),
                op: WriteOp::Del,
                consistency: Consistency::Quorum,
                context: None,
            }),
            NodeMessage::Client(EventualRequest::Local { key: "k".into() }),
            NodeMessage::Client(EventualRequest::Status),
            NodeMessage::Peer(PeerMessage::Write {
                req: 1,
                key: "k".into(),
                op: WriteOp::Del,
                context: Some(String::new()),
            }),
            NodeMessage::Peer(PeerMessage::Write {
                req: u64::MAX,
                key: "k".into(),
                op: WriteOp::Put(String::new()),
                context: None,
            }),
            NodeMessage::Peer(PeerMessage::Written {
                req: 2,
                state: state.clone(),
                clock: json!({"1": 2}),
                context: "1:2".into(),
            }),
            NodeMessage::Peer(PeerMessage::Store {
                req: 3,
                key: "k".into(),
                state: state.clone(),
            }),
            NodeMessage::Peer(PeerMessage::Reap {
                req: 3,
                key: "k".into(),
                state: state.clone(),
                commit: false,
            }),
            NodeMessage::Peer(PeerMessage::Reap {
                req: 3,
                key: "k".into(),
                state: state.clone(),
                commit: true,
            }),
            NodeMessage::Peer(PeerMessage::ReapOk { req: 3 }),
            NodeMessage::Peer(PeerMessage::Settled { req: 3 }),
            NodeMessage::Peer(PeerMessage::Apply {
                req: 3,
                key: "k".into(),
                state: StateBytes(vec![2, 0]),
            }),
            NodeMessage::Peer(PeerMessage::Sync { req: 3 }),
            NodeMessage::Peer(PeerMessage::SyncDone { req: 3 }),
            NodeMessage::Peer(PeerMessage::Stored { req: 4 }),
            NodeMessage::Peer(PeerMessage::Read {
                req: 5,
                key: "k".into(),
            }),
            NodeMessage::Peer(PeerMessage::State {
                req: 6,
                state: Some(state),
            }),
            NodeMessage::Peer(PeerMessage::State {
                req: 7,
                state: None,
            }),
            NodeMessage::Peer(PeerMessage::Refused {
                req: 8,
                error: ErrorReply::new(ErrorCode::Overloaded),
            }),
        ];
        for msg in messages {
            round_trip(msg.clone(), None);
            round_trip(msg, Some(RequestId::Text("x".into())));
        }
        let answers = [
            EventualResponse::Read {
                key: "k".into(),
                versions: vec![json!({"value": "v", "clock": {"1": 1}})],
                value: Some("v".into()),
                context: "1:1".into(),
            },
            EventualResponse::Read {
                key: "k".into(),
                versions: vec![
                    json!({"deleted": true, "clock": {"1": 1}}),
                    json!({"value": "w", "clock": {"2": 1}}),
                ],
                value: None,
                context: "1:1,2:1".into(),
            },
            EventualResponse::Written {
                clock: json!({"ts": 5, "node": 1}),
                context: String::new(),
            },
            EventualResponse::NotFound { context: None },
            EventualResponse::NotFound {
                context: Some("1:1".into()),
            },
            EventualResponse::Status {
                node: 1,
                replication: 3,
                conflicts: "siblings".into(),
                repair: "both".into(),
                nodes: vec![NodeStatus {
                    id: 1,
                    addr: "a:1".into(),
                    up: true,
                    hints: 2,
                }],
                hints_dropped: 4,
                catching_up: true,
            },
            EventualResponse::error(ErrorCode::Unavailable),
            EventualResponse::Timeout,
        ];
        for answer in answers {
            round_trip(answer.clone(), Some(RequestId::Unsigned(9)));
        }
    }

    #[test]
    fn answers_are_spelled_as_section_2_says() {
        let line = Envelope::bare(EventualResponse::Written {
            clock: json!({"17.2": 1}),
            context: "~17.2:1".into(),
        })
        .encode();
        assert_eq!(line, b"{\"type\":\"resp\",\"message\":\"Success\",\"clock\":{\"17.2\":1},\"context\":\"~17.2:1\"}\n");
        let line = Envelope::bare(EventualResponse::NotFound {
            context: Some("1:1".into()),
        })
        .encode();
        let text = String::from_utf8(line).expect("utf-8");
        assert!(text.contains("\"error\":\"not_found\"") && text.contains("\"context\":\"1:1\""));
        let line = Envelope::bare(EventualResponse::Timeout).encode();
        assert!(String::from_utf8(line)
            .expect("utf-8")
            .contains("\"error\":\"timeout\""));
    }

    #[test]
    fn defaults_and_faults_in_the_protocol_order() {
        assert_eq!(
            decode(r#"{"type":"getreq","key":"k"}"#),
            Ok(NodeMessage::Client(EventualRequest::Get {
                key: "k".into(),
                consistency: Consistency::Quorum
            }))
        );
        let code = |line: &str| decode(line).expect_err(line).code;
        assert_eq!(
            code(r#"{"type":"getreq","key":"k","consistency":"most"}"#),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(r#"{"type":"getreq","key":"k","consistency":3}"#),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(r#"{"type":"putreq","key":"","value":"v","context":5}"#),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(r#"{"type":"putreq","key":"","value":"v","consistency":"x"}"#),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(r#"{"type":"putreq","key":"","value":"v"}"#),
            ErrorCode::EmptyKey
        );
        let long_key = "k".repeat(257);
        let line = format!(r#"{{"type":"delreq","key":"{long_key}"}}"#);
        assert_eq!(code(&line), ErrorCode::KeyTooLong);
        let big = "v".repeat(crate::limits::MAX_VALUE_BYTES + 1);
        let line = format!(r#"{{"type":"putreq","key":"k","value":"{big}"}}"#);
        assert_eq!(code(&line), ErrorCode::ValueTooLarge);
        assert_eq!(
            code(r#"{"type":"ev_nothing","req":1}"#),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(r#"{"type":"ev_store","req":1,"key":"k","state":"0G"}"#),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(r#"{"type":"ev_store","req":1,"key":"k","state":"ABCD"}"#),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(r#"{"type":"ev_store","req":1,"key":"k","state":"abc"}"#),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(r#"{"type":"ev_write","req":1,"key":"k"}"#),
            ErrorCode::Malformed
        );
        assert_eq!(code(r#"{"type":"ev_stored"}"#), ErrorCode::Malformed);
        assert_eq!(code(r#"{"type":"resp"}"#), ErrorCode::Malformed);
        let err = decode(r#"{"type":"getreq","id":7,"key":"k","key":"j"}"#).expect_err("duplicate");
        assert_eq!(
            (err.code, err.id),
            (ErrorCode::Malformed, Some(RequestId::Unsigned(7)))
        );
    }

    #[test]
    fn levels_count_replicas() {
        let counts: Vec<usize> = ["one", "two", "three", "quorum", "all"]
            .iter()
            .map(|text| Consistency::parse(text).expect("level").replicas(5))
            .collect();
        assert_eq!(counts, [1, 2, 3, 3, 5]);
        assert_eq!(Consistency::Quorum.replicas(4), 3);
        assert_eq!(Consistency::Quorum.replicas(1), 1);
        assert_eq!(Consistency::parse("ONE"), None);
    }
}
