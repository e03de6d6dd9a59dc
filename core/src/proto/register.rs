//! Registration of a KV server with the coordinator (port 9090). Here `"id"` is the
//! server's ring ID, not a request id, so nothing is echoed.

use super::client::decode_error_fields;
use super::json::{Fields, Object, ObjectWriter};
use super::{DecodeError, Envelope, ErrorReply, RequestId, WireMessage};

/// A KV server announcing its ID and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    /// The server's unique ID on the ring.
    pub id: u64,
    /// Where the server listens for two-phase-commit traffic, as `host:port`.
    pub addr: String,
}

impl WireMessage for Register {
    fn encode_into(&self, _id: Option<&RequestId>, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::new(out, "register");
        w.u64("id", self.id).str("addr", &self.addr);
        w.finish();
    }

    fn decode(line: &[u8]) -> Result<Envelope<Self>, DecodeError> {
        let mut obj = Object::parse(line)?;
        obj.reject_duplicates(&None)?;
        let mut fields = Fields {
            obj: &mut obj,
            id: &None,
        };
        let kind = fields.kind()?;
        if kind != "register" {
            return Err(fields.unknown_kind(&kind));
        }
        let id = fields.u64("id")?;
        let addr = fields.string("addr")?;
        Ok(Envelope::bare(Register { id, addr }))
    }
}

/// The coordinator's answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterResponse {
    /// Registered (or registered again with a new address).
    Ack,
    /// Refused; see the message.
    Error(ErrorReply),
}

impl WireMessage for RegisterResponse {
    fn encode_into(&self, _id: Option<&RequestId>, out: &mut Vec<u8>) {
        match self {
            RegisterResponse::Ack => ObjectWriter::new(out, "ack").finish(),
            RegisterResponse::Error(reply) => {
                let mut w = ObjectWriter::new(out, "resp");
                w.str("error", reply.code.as_str())
                    .str("message", &reply.message);
                w.finish();
            }
        }
    }

    fn decode(line: &[u8]) -> Result<Envelope<Self>, DecodeError> {
        let mut obj = Object::parse(line)?;
        obj.reject_duplicates(&None)?;
        let mut fields = Fields {
            obj: &mut obj,
            id: &None,
        };
        let kind = fields.kind()?;
        match &*kind {
            "ack" => Ok(Envelope::bare(RegisterResponse::Ack)),
            "resp" => Ok(Envelope::bare(RegisterResponse::Error(
                decode_error_fields(&mut fields)?,
            ))),
            other => Err(fields.unknown_kind(other)),
        }
    }
}
