//! The client interface of the coordinator (port 8080): requests and their answers.

use serde_json::Value;

use super::json::{take_request_id, Fields, Object, ObjectWriter};
use super::{
    check_key_value, hint_with, DecodeError, Envelope, ErrorCode, ErrorReply, RequestId,
    WireMessage,
};

/// A client's request to the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// `getreq`: read a key.
    Get {
        /// The key.
        key: String,
    },
    /// `putreq`: write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `delreq`: delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// `statusreq`: the servers of the ring.
    Status,
}

impl ClientRequest {
    /// The key the request is about and how it touches it, for ordering the requests of
    /// one connection; `None` for requests on no key.
    pub fn access(&self) -> Option<(&str, crate::session::Access)> {
        use crate::session::Access;
        match self {
            ClientRequest::Get { key } => Some((key, Access::Read)),
            ClientRequest::Put { key, .. } | ClientRequest::Del { key } => {
                Some((key, Access::Write))
            }
            ClientRequest::Status => None,
        }
    }

    /// The key the request is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ClientRequest::Get { key } | ClientRequest::Put { key, .. } => Some(key),
            ClientRequest::Del { key } => Some(key),
            ClientRequest::Status => None,
        }
    }
}

impl WireMessage for ClientRequest {
    fn encoded_len_hint(&self) -> usize {
        match self {
            ClientRequest::Put { key, value } => hint_with(&[key, value]),
            ClientRequest::Get { key } | ClientRequest::Del { key } => hint_with(&[key]),
            ClientRequest::Status => hint_with(&[]),
        }
    }

    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>) {
        let mut w = match self {
            ClientRequest::Get { key } => {
                let mut w = ObjectWriter::new(out, "getreq");
                w.str("key", key);
                w
            }
            ClientRequest::Put { key, value } => {
                let mut w = ObjectWriter::new(out, "putreq");
                w.str("key", key).str("value", value);
                w
            }
            ClientRequest::Del { key } => {
                let mut w = ObjectWriter::new(out, "delreq");
                w.str("key", key);
                w
            }
            ClientRequest::Status => ObjectWriter::new(out, "statusreq"),
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
            "getreq" => ClientRequest::Get {
                key: fields.string("key")?,
            },
            "putreq" => {
                let key = fields.string("key")?;
                let value = fields.string("value")?;
                ClientRequest::Put { key, value }
            }
            "delreq" => ClientRequest::Del {
                key: fields.string("key")?,
            },
            "statusreq" => ClientRequest::Status,
            other => return Err(fields.unknown_kind(other)),
        };
        let limits = match &msg {
            ClientRequest::Get { key } | ClientRequest::Del { key } => check_key_value(key, None),
            ClientRequest::Put { key, value } => check_key_value(key, Some(value)),
            ClientRequest::Status => Ok(()),
        };
        match limits {
            Ok(()) => Ok(Envelope::with_id(id, msg)),
            Err(code) => Err(DecodeError::limit(id, code)),
        }
    }
}

/// One server as `statusreq` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// The server's ID on the ring.
    pub id: u64,
    /// Where it listens, as it registered.
    pub addr: String,
    /// Whether it answered recently.
    pub up: bool,
}

/// The coordinator's answer to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientResponse {
    /// A GET found the key.
    Value {
        /// The key.
        key: String,
        /// Its value.
        value: String,
    },
    /// A PUT or DEL committed.
    Success,
    /// The ring: every registered server in ring order, and how many are expected.
    Status {
        /// The registered servers, by ascending ID.
        servers: Vec<ServerStatus>,
        /// How many servers the coordinator waits for.
        expected: u64,
    },
    /// The request failed; see the code.
    Error(ErrorReply),
}

impl ClientResponse {
    /// An error answer with the code's default message.
    pub fn error(code: ErrorCode) -> Self {
        ClientResponse::Error(ErrorReply::new(code))
    }
}

impl WireMessage for ClientResponse {
    fn encoded_len_hint(&self) -> usize {
        match self {
            ClientResponse::Value { key, value } => hint_with(&[key, value]),
            ClientResponse::Success => hint_with(&[]),
            ClientResponse::Status { servers, .. } => servers
                .iter()
                .map(|server| hint_with(&[&server.addr]))
                .sum::<usize>()
                .saturating_add(hint_with(&[])),
            ClientResponse::Error(reply) => hint_with(&[&reply.message]),
        }
    }

    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::new(out, "resp");
        match self {
            ClientResponse::Value { key, value } => {
                w.str("key", key).str("value", value);
            }
            ClientResponse::Success => {
                w.str("message", "Success");
            }
            ClientResponse::Status { servers, expected } => {
                let raw = w.raw("servers");
                raw.push(b'[');
                for (i, server) in servers.iter().enumerate() {
                    if i > 0 {
                        raw.push(b',');
                    }
                    let mut item = ObjectWriter::untyped(&mut *raw);
                    item.u64("id", server.id)
                        .str("addr", &server.addr)
                        .bool("up", server.up);
                    item.close();
                }
                raw.push(b']');
                w.u64("expected", *expected);
            }
            ClientResponse::Error(reply) => {
                w.str("error", reply.code.as_str())
                    .str("message", &reply.message);
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
        let msg = if fields.obj.has("error") {
            ClientResponse::Error(decode_error_fields(&mut fields)?)
        } else if fields.obj.has("servers") {
            let items = fields.array("servers")?;
            let expected = fields.u64("expected")?;
            let mut servers = Vec::with_capacity(items.len());
            for item in items {
                servers.push(decode_server_status(item, &id)?);
            }
            ClientResponse::Status { servers, expected }
        } else if fields.obj.has("key") || fields.obj.has("value") {
            let key = fields.string("key")?;
            let value = fields.string("value")?;
            ClientResponse::Value { key, value }
        } else {
            ClientResponse::Success
        };
        Ok(Envelope::with_id(id, msg))
    }
}

/// Reads `"error"` and `"message"` of an error answer.
pub(crate) fn decode_error_fields(fields: &mut Fields<'_, '_>) -> Result<ErrorReply, DecodeError> {
    let code_text = fields.string("error")?;
    let code = ErrorCode::parse(&code_text)
        .ok_or_else(|| fields.invalid(format!("unknown error code \"{code_text}\"")))?;
    let message = fields.opt_string("message")?.unwrap_or_default();
    Ok(ErrorReply { code, message })
}

fn decode_server_status(item: Value, id: &Option<RequestId>) -> Result<ServerStatus, DecodeError> {
    let Value::Object(map) = item else {
        return Err(DecodeError::malformed(
            id.clone(),
            "\"servers\" must hold objects",
        ));
    };
    let server_id = map.get("id").and_then(Value::as_u64);
    let addr = map.get("addr").and_then(Value::as_str);
    let up = map.get("up").and_then(Value::as_bool);
    match (server_id, addr, up) {
        (Some(server_id), Some(addr), Some(up)) => Ok(ServerStatus {
            id: server_id,
            addr: addr.to_owned(),
            up,
        }),
        _ => Err(DecodeError::malformed(
            id.clone(),
            "a server needs \"id\", \"addr\" and \"up\"",
        )),
    }
}
