//! Every message of the wire protocol (`docs/protocol.md`) as typed values, with one
//! strict decoder per port that never panics and an exact encoder.
//!
//! A line is decoded in two steps: [`json`] turns the bytes into a JSON object (rejecting
//! duplicate fields and anything that is not an object; [`flat`] reads the usual flat
//! shape without serde_json's machinery), then each message type picks its fields out of
//! it. The order of faults is the protocol's: `malformed` before the limit
//! codes, `empty_key` before `key_too_long` before `value_too_large`.

mod client;
mod error;
mod eventual;
mod flat;
mod json;
mod lines;
mod participant;
pub mod peer;
mod register;

pub use client::{ClientRequest, ClientResponse, ServerStatus};
pub use error::{DecodeError, ErrorCode, ErrorReply};
pub use eventual::{
    Consistency, EventualRequest, EventualResponse, NodeMessage, NodeStatus, PeerMessage,
    StateBytes, WriteOp,
};
pub use lines::{LineEvent, LineSplitter};
pub use participant::{ParticipantRequest, ParticipantResponse, TxOp};
pub use register::{Register, RegisterResponse};

use crate::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// The identifier of a transaction, unique per transaction.
pub type TxId = u64;

/// A request's `"id"`: echoed on its answer so that a client can match the two.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestId {
    /// A non-negative JSON integer (0..2^64-1).
    Unsigned(u64),
    /// A negative JSON integer (-2^63..-1).
    Negative(i64),
    /// A JSON string.
    Text(String),
}

/// A message with the `"id"` it carried on the wire, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<M> {
    /// The request's id, echoed on its answer.
    pub id: Option<RequestId>,
    /// The message itself.
    pub msg: M,
    /// The server a coordinator-to-server request is addressed to (`"server"`, an
    /// extension): a process that is not that server refuses the work, so a restarted
    /// server on another's old address, or two processes started with one ID, never
    /// answer each other's prepares. `None` on every other port.
    pub server: Option<u64>,
}

impl<M> Envelope<M> {
    /// A message without an id.
    pub fn bare(msg: M) -> Self {
        Self {
            id: None,
            msg,
            server: None,
        }
    }

    /// A message carrying `id`.
    pub fn with_id(id: Option<RequestId>, msg: M) -> Self {
        Self {
            id,
            msg,
            server: None,
        }
    }

    /// A request to the server `server`, carrying `id`.
    pub fn to_server(server: u64, id: Option<RequestId>, msg: M) -> Self {
        Self {
            id,
            msg,
            server: Some(server),
        }
    }
}

impl<M: WireMessage> Envelope<M> {
    /// The message as one line, `\n` included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.msg.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    /// Appends the message as one line, `\n` included.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.msg
            .encode_addressed(self.id.as_ref(), self.server, out);
    }

    /// Decodes one line (without its line end) into a message.
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        M::decode(line)
    }
}

/// A message that travels as one JSON line.
pub trait WireMessage: Sized {
    /// Appends the message as one JSON line ending in `\n`, carrying `id` if given.
    fn encode_into(&self, id: Option<&RequestId>, out: &mut Vec<u8>);

    /// Appends the message addressed to `server`; only the messages of a port that
    /// carries the target server write it.
    fn encode_addressed(&self, id: Option<&RequestId>, server: Option<u64>, out: &mut Vec<u8>) {
        debug_assert!(server.is_none(), "this port carries no target server");
        self.encode_into(id, out);
    }

    /// Decodes one line (without its line end). Never panics, whatever the bytes.
    fn decode(line: &[u8]) -> Result<Envelope<Self>, DecodeError>;

    /// About how many bytes the message's line takes: what it carries plus room for
    /// the field names and numbers, so that a buffer sized by it is allocated once
    /// (growing one step by step showed in profiles).
    fn encoded_len_hint(&self) -> usize {
        LINE_OVERHEAD_BYTES
    }
}

/// Room for a line's field names, numbers and punctuation besides its strings.
const LINE_OVERHEAD_BYTES: usize = 128;

/// [`WireMessage::encoded_len_hint`] for a line carrying these strings.
fn hint_with(strings: &[&str]) -> usize {
    strings.iter().map(|text| text.len()).sum::<usize>() + LINE_OVERHEAD_BYTES
}

/// Checks a key against the protocol's limits, in the protocol's order of faults.
pub fn check_key(key: &str) -> Result<(), ErrorCode> {
    if key.is_empty() {
        Err(ErrorCode::EmptyKey)
    } else if key.len() > MAX_KEY_BYTES {
        Err(ErrorCode::KeyTooLong)
    } else {
        Ok(())
    }
}

/// Checks a value against the protocol's limit.
pub fn check_value(value: &str) -> Result<(), ErrorCode> {
    if value.len() > MAX_VALUE_BYTES {
        Err(ErrorCode::ValueTooLarge)
    } else {
        Ok(())
    }
}

/// Checks a key and an optional value, key faults first.
pub fn check_key_value(key: &str, value: Option<&str>) -> Result<(), ErrorCode> {
    check_key(key)?;
    value.map_or(Ok(()), check_value)
}

#[cfg(test)]
mod tests;
