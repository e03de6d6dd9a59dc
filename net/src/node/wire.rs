//! What arrives on a node's one port, told apart by its message type, and how a node's
//! own messages name their sender.
//!
//! Clients and nodes share the port (PROTOCOL.md section 2). A node's message must say
//! which node sent it, for the core answers only members of its cluster and marks the
//! sender up; connections are one-way (each node writes its messages on the connection
//! it opened to the receiver), so the sender is written into every line: the line starts
//! with `{"from":ID,`. The core's decoder ignores the extra field. A ping is the one
//! message the shell keeps for itself (the failure detector's): `{"from":ID,"type":"ev_ping"}`,
//! answered `{"type":"ev_pong"}` on the same connection.

use ringkv_core::eventual::NodeId;
use ringkv_core::proto::{
    Envelope, ErrorCode, ErrorReply, EventualRequest, EventualResponse, NodeMessage, PeerMessage,
};
use ringkv_core::session::Access;

use crate::inbound::{decoded_line, Decoded, PortSpec};

/// The start of every line a node sends another.
const FROM_PREFIX: &[u8] = b"{\"from\":";
/// What follows the sender in a ping.
const PING_REST: &[u8] = b"\"type\":\"ev_ping\"}";
/// The answer to a ping.
pub(crate) const PONG_LINE: &[u8] = b"{\"type\":\"ev_pong\"}\n";

/// One request read from the port.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A client's request.
    Client(EventualRequest),
    /// A node's message, with the sender the line names.
    Peer(NodeId, PeerMessage),
    /// A node's ping: a sign of life of the sender, answered at once.
    Ping(NodeId),
}

/// The sender a node's line names, and the rest of the line after `{"from":ID,`.
fn sender_of(line: &[u8]) -> Option<(NodeId, &[u8])> {
    let rest = line.strip_prefix(FROM_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, after) = rest.split_at_checked(digits)?;
    let after = after.strip_prefix(b",")?;
    let number = std::str::from_utf8(number).ok()?.parse::<NodeId>().ok()?;
    Some((number, after))
}

fn decode(line: Vec<u8>) -> Decoded<Inbound> {
    let sender = sender_of(&line);
    if let Some((from, rest)) = sender {
        if rest == PING_REST {
            return decoded_line(Ok(Envelope::bare(Inbound::Ping(from))));
        }
    }
    let decoded = match Envelope::<NodeMessage>::decode(&line) {
        Ok(envelope) => match (envelope.msg, sender) {
            (NodeMessage::Client(msg), _) => {
                Ok(Envelope::with_id(envelope.id, Inbound::Client(msg)))
            }
            (NodeMessage::Peer(msg), Some((from, _))) => {
                Ok(Envelope::with_id(envelope.id, Inbound::Peer(from, msg)))
            }
            (NodeMessage::Peer(_), None) => Err(Envelope::with_id(
                envelope.id,
                EventualResponse::Error(ErrorReply::with_message(
                    ErrorCode::Malformed,
                    "a node's message must start with {\"from\":ID, naming its sender",
                )),
            )
            .encode()),
        },
        Err(err) => {
            Err(Envelope::with_id(err.id.clone(), EventualResponse::Error(err.reply())).encode())
        }
    };
    decoded_line(decoded)
}

/// Client requests of one connection take effect in the order sent, key by key, as on
/// every other port; nodes' messages need no such order (every one is idempotent).
fn access(msg: &Inbound) -> Option<(&str, Access)> {
    match msg {
        Inbound::Client(EventualRequest::Get { key, .. } | EventualRequest::Local { key }) => {
            Some((key, Access::Read))
        }
        Inbound::Client(EventualRequest::Write { key, .. }) => Some((key, Access::Write)),
        Inbound::Client(EventualRequest::Status) | Inbound::Peer(..) | Inbound::Ping(_) => None,
    }
}

/// The node port: clients and nodes.
pub(crate) fn node_spec() -> PortSpec<Inbound> {
    PortSpec {
        name: "node",
        decode,
        error_line: |code| Envelope::bare(EventualResponse::error(code)).encode(),
        protocol_error: |_| Envelope::bare(EventualResponse::error(ErrorCode::Malformed)).encode(),
        // Nodes ping each other every few hundred milliseconds, so a live node's
        // connection is never idle.
        idle_timeout: true,
        access,
        first_handle: 1,
        // Other nodes' messages (acknowledgements among them) are never held back.
        budgeted: |msg| matches!(msg, Inbound::Client(_)),
    }
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

    /// The line of `msg`, `{"from":ME,` then the core's encoding after its `{`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one(decoded: Decoded<Inbound>) -> Inbound {
        match decoded {
            Decoded::One { msg, .. } => msg,
            other => panic!("not one request: {other:?}"),
        }
    }

    #[test]
    fn a_node_line_names_its_sender_and_round_trips() {
        let mut enc = PeerEncoder::new(42);
        let line = enc.encode(PeerMessage::Stored { req: 7 });
        assert!(
            line.starts_with(b"{\"from\":42,\"type\":\"ev_stored\""),
            "{line:?}"
        );
        let body = line.strip_suffix(b"\n").unwrap().to_vec();
        match one(decode(body)) {
            Inbound::Peer(42, PeerMessage::Stored { req: 7 }) => {}
            other => panic!("{other:?}"),
        }
        let ping = enc.ping();
        match one(decode(ping.strip_suffix(b"\n").unwrap().to_vec())) {
            Inbound::Ping(42) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_node_message_without_sender_is_malformed_and_clients_need_none() {
        match decode(b"{\"type\":\"ev_stored\",\"req\":1}".to_vec()) {
            Decoded::Answer(answer) => {
                let text = String::from_utf8(answer).unwrap();
                assert!(text.contains("\"error\":\"malformed\""), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one(decode(b"{\"type\":\"statusreq\"}".to_vec())),
            Inbound::Client(EventualRequest::Status)
        ));
        for bad in [
            &b"{\"from\":,\"type\":\"ev_ping\"}"[..],
            b"{\"from\":99999999999999999999,\"type\":\"ev_ping\"}",
        ] {
            assert!(
                matches!(decode(bad.to_vec()), Decoded::Answer(_)),
                "{bad:?}"
            );
        }
    }
}
