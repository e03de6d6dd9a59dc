//! What arrives on a node's one port, and how a node's own messages name their sender.
//!
//! Clients and nodes share the port (PROTOCOL.md sections 2 and 3). A node's message must
//! say which node sent it, for a core answers only members of its cluster and the shell
//! marks the sender up; connections are one-way (each node writes its messages on the
//! connection it opened to the receiver), so the sender is written into every line. An
//! eventual-mode line starts with `{"from":ID,`, which its core's decoder ignores; a
//! peer-mode message carries `"from"` as one of its own fields. A ping is the one message
//! the shell keeps for itself (the failure detector's), the same in both modes:
//! `{"from":ID,"type":"ev_ping"}`, answered `{"type":"ev_pong"}` on the same connection.

use ringkv_core::eventual::NodeId;
use ringkv_core::proto::{Envelope, NodeMessage, PeerMessage};

/// The start of every line a node sends another.
const FROM_PREFIX: &[u8] = b"{\"from\":";
/// What follows the sender in a ping.
const PING_REST: &[u8] = b"\"type\":\"ev_ping\"}";
/// The answer to a ping.
pub(crate) const PONG_LINE: &[u8] = b"{\"type\":\"ev_pong\"}\n";

/// One request read from the port.
#[derive(Debug)]
pub(crate) enum Inbound<Q, M> {
    /// A client's request.
    Client(Q),
    /// A node's message, with the sender the line names.
    Peer(NodeId, M),
    /// A node's ping: a sign of life of the sender, answered at once.
    Ping(NodeId),
}

/// The sender a node's line names, and the rest of the line after `{"from":ID,`.
pub(crate) fn sender_of(line: &[u8]) -> Option<(NodeId, &[u8])> {
    let rest = line.strip_prefix(FROM_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, after) = rest.split_at_checked(digits)?;
    let after = after.strip_prefix(b",")?;
    let number = std::str::from_utf8(number).ok()?.parse::<NodeId>().ok()?;
    Some((number, after))
}

/// The sender of a ping line; `None` for any other line.
pub(crate) fn ping_of(line: &[u8]) -> Option<NodeId> {
    let (from, rest) = sender_of(line)?;
    (rest == PING_REST).then_some(from)
}

/// Encodes node messages with the sender in front.
pub(crate) struct PeerEncoder {
    prefix: Vec<u8>,
    scratch: Vec<u8>,
}

impl PeerEncoder {
    /// An encoder for the messages of node `me`.
    pub(crate) fn new(me: NodeId) -> Self {
        Self {
            prefix: format!("{{\"from\":{me},").into_bytes(),
            scratch: Vec::new(),
        }
    }

    /// The line of an eventual-mode `msg`, `{"from":ME,` then the core's encoding after
    /// its `{`.
    pub(crate) fn encode(&mut self, msg: PeerMessage) -> Vec<u8> {
        self.scratch.clear();
        Envelope::bare(NodeMessage::Peer(msg)).encode_into(&mut self.scratch);
        let body = self.scratch.get(1..).unwrap_or_default();
        let mut line = Vec::with_capacity(self.prefix.len() + body.len());
        line.extend_from_slice(&self.prefix);
        line.extend_from_slice(body);
        line
    }

    /// A ping from this node.
    pub(crate) fn ping(&self) -> Vec<u8> {
        let mut line = self.prefix.clone();
        line.extend_from_slice(PING_REST);
        line.push(b'\n');
        line
    }
}
