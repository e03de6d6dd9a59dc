//! RESP on the nodes of the peer-to-peer modes: the coordinator's commands, decoded by
//! the same code, become the request a node's JSON line would be, and the node's answers
//! are written back in RESP.
//!
//! Eventual mode reads and writes at `quorum`, the JSON port's default when a line names
//! no `consistency`. A read that finds siblings is never answered with one of them: it
//! gets `-SIBLINGS`, for RESP has no way to carry the versions and their context. A DEL
//! writes a deletion whether or not the key had a value (the node does not read first),
//! so its integer counts the deletions written. Peer mode takes section 1's requests and
//! answers as they are, like the coordinator.

use std::fmt::Write as _;

use ringkv_core::proto::peer::{PeerClientRequest, PeerNodeStatus, PeerReply};
use ringkv_core::proto::{
    ClientRequest, ClientResponse, Consistency, ErrorCode, EventualRequest, EventualResponse,
    NodeStatus, WriteOp,
};
use ringkv_core::session::Access;

use super::reply::{self, Shape};
use super::RespParser;
use crate::inbound::{Decoded, PortSpec};

/// The consistency of every eventual-mode request made through RESP: the JSON port's
/// default, so that a RESP write and a JSON read (or the reverse) overlap on a replica.
pub const RESP_CONSISTENCY: Consistency = Consistency::Quorum;

/// A node's client request, made from the coordinator's request a RESP command becomes.
pub(crate) trait RespRequest: Sized + std::fmt::Debug {
    /// The node's request for `request`.
    fn from_client(request: ClientRequest) -> Self;
    /// The key it touches, for program order on the connection.
    fn access(&self) -> Option<(&str, Access)>;
}

/// A node's answer, written as RESP for a request whose slot carries `tag`.
pub(crate) trait RespAnswer {
    /// The RESP reply.
    fn encode_resp(&self, tag: u8) -> Vec<u8>;
}

impl RespRequest for EventualRequest {
    fn from_client(request: ClientRequest) -> Self {
        let write = |key, op| EventualRequest::Write {
            key,
            op,
            consistency: RESP_CONSISTENCY,
            context: None,
        };
        match request {
            ClientRequest::Get { key } => EventualRequest::Get {
                key,
                consistency: RESP_CONSISTENCY,
            },
            ClientRequest::Put { key, value } => write(key, WriteOp::Put(value)),
            ClientRequest::Del { key } => write(key, WriteOp::Del),
            ClientRequest::Status => EventualRequest::Status,
        }
    }

    fn access(&self) -> Option<(&str, Access)> {
        match self {
            EventualRequest::Get { key, .. } | EventualRequest::Local { key } => {
                Some((key, Access::Read))
            }
            EventualRequest::Write { key, .. } => Some((key, Access::Write)),
            EventualRequest::Status => None,
        }
    }
}

impl RespRequest for PeerClientRequest {
    fn from_client(request: ClientRequest) -> Self {
        PeerClientRequest::Client(request)
    }

    fn access(&self) -> Option<(&str, Access)> {
        PeerClientRequest::access(self)
    }
}

fn decode_as<R: RespRequest>(args: Vec<Vec<u8>>) -> Decoded<R> {
    match super::command::decode(args) {
        Decoded::One { id, msg, tag } => Decoded::One {
            id,
            msg: R::from_client(msg),
            tag,
        },
        Decoded::Many { parts, join } => Decoded::Many {
            parts: parts
                .into_iter()
                .map(|(msg, tag)| (R::from_client(msg), tag))
                .collect(),
            join,
        },
        Decoded::Answer(answer) => Decoded::Answer(answer),
        Decoded::Last(answer) => Decoded::Last(answer),
    }
}

fn access_of<R: RespRequest>(request: &R) -> Option<(&str, Access)> {
    request.access()
}

/// How a node's RESP port frames, decodes and answers: the coordinator's, with the
/// node's requests.
pub(crate) fn node_spec<R: RespRequest>() -> PortSpec<R, RespParser> {
    let coordinator = super::spec();
    PortSpec {
        name: coordinator.name,
        decode: decode_as::<R>,
        error_line: coordinator.error_line,
        protocol_error: coordinator.protocol_error,
        idle_timeout: coordinator.idle_timeout,
        access: access_of::<R>,
        first_handle: coordinator.first_handle,
        budgeted: |_| true,
    }
}

impl RespAnswer for EventualResponse {
    fn encode_resp(&self, tag: u8) -> Vec<u8> {
        let shape = Shape::from_tag(tag);
        let as_client = match self {
            EventualResponse::Read {
                key,
                versions,
                value,
                ..
            } => match (versions.len(), value) {
                (1, Some(value)) => ClientResponse::Value {
                    key: key.clone(),
                    value: value.clone(),
                },
                (0 | 1, _) => ClientResponse::error(ErrorCode::NotFound),
                // A key with siblings exists, whatever they hold.
                (_, _) if shape == Shape::Count => ClientResponse::Success,
                (count, _) => return siblings(key, count),
            },
            EventualResponse::Written { .. } => ClientResponse::Success,
            EventualResponse::NotFound { .. } => ClientResponse::error(ErrorCode::NotFound),
            EventualResponse::Error(err) => ClientResponse::Error(err.clone()),
            EventualResponse::Timeout => {
                return reply::redis_error(
                    "TIMEOUT too few replicas answered in time; a write may exist on some",
                )
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
                let mut text = ring_head("eventual", *node, *replication);
                let catching_up = if *catching_up { "yes" } else { "no" };
                let _ = write!(
                    text,
                    "conflicts:{conflicts}\r\nrepair:{repair}\r\nhints_dropped:{hints_dropped}\r\ncatching_up:{catching_up}\r\n"
                );
                eventual_nodes(&mut text, nodes);
                return info(shape, &text);
            }
        };
        reply::encode(shape, &as_client)
    }
}

impl RespAnswer for PeerReply {
    fn encode_resp(&self, tag: u8) -> Vec<u8> {
        let shape = Shape::from_tag(tag);
        match self {
            PeerReply::Client(answer) => reply::encode(shape, answer),
            PeerReply::Status {
                node,
                replication,
                nodes,
            } => {
                let mut text = ring_head("peer", *node, *replication);
                peer_nodes(&mut text, nodes);
                info(shape, &text)
            }
        }
    }
}

/// The answer to a GET of a key with `count` versions: an error, never one of them.
fn siblings(key: &str, count: usize) -> Vec<u8> {
    reply::redis_error(&format!(
        "SIBLINGS key '{}' has {count} concurrent versions; read them with getreq on the \
         node's JSON port and write one with its context to resolve them",
        key.chars().take(64).collect::<String>()
    ))
}

/// The INFO reply for `shape`: the replication section, after the server section when
/// both were asked for.
fn info(shape: Shape, replication: &str) -> Vec<u8> {
    let mut text = String::new();
    if shape != Shape::InfoReplication {
        text.push_str(&reply::info_server());
        text.push_str("\r\n");
    }
    text.push_str(replication);
    let mut out = Vec::with_capacity(text.len() + 16);
    reply::bulk(&mut out, text.as_bytes());
    out
}

/// The replication section's first lines: which node this is, of which mode, and N.
fn ring_head(mode: &str, node: u64, replication: u64) -> String {
    format!(
        "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nringkv_mode:{mode}\r\n\
         node_id:{node}\r\nreplicas_per_key:{replication}\r\n"
    )
}

fn yes_no(up: bool) -> &'static str {
    if up {
        "yes"
    } else {
        "no"
    }
}

/// One line per node in ring order, with the hints this node holds for it.
fn eventual_nodes(text: &mut String, nodes: &[NodeStatus]) {
    let up = nodes.iter().filter(|node| node.up).count();
    let _ = write!(text, "ring_nodes:{}\r\nring_nodes_up:{up}\r\n", nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let _ = write!(
            text,
            "ring_node{i}:id={},addr={},up={},hints={}\r\n",
            node.id,
            node.addr,
            yes_no(node.up),
            node.hints
        );
    }
}

/// One line per node in ring order.
fn peer_nodes(text: &mut String, nodes: &[PeerNodeStatus]) {
    let up = nodes.iter().filter(|node| node.up).count();
    let _ = write!(text, "ring_nodes:{}\r\nring_nodes_up:{up}\r\n", nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let _ = write!(
            text,
            "ring_node{i}:id={},addr={},up={}\r\n",
            node.id,
            node.addr,
            yes_no(node.up)
        );
    }
}

#[cfg(test)]
mod tests {
    use ringkv_core::proto::{ClientResponse, ErrorReply, NodeStatus, WireMessage};

    use super::*;
    use crate::inbound::Join;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn eventual(words: &[&str]) -> Decoded<EventualRequest> {
        decode_as::<EventualRequest>(args(words))
    }

    /// An eventual node's answer as its JSON port would carry it, decoded.
    fn eventual_answer(json: &str) -> EventualResponse {
        EventualResponse::decode(json.as_bytes()).unwrap().msg
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn eventual_commands_become_the_json_ports_requests_at_quorum() {
        match eventual(&["SET", "k", "v"]) {
            Decoded::One { msg, tag, .. } => {
                assert_eq!(
                    msg,
                    EventualRequest::Write {
                        key: "k".into(),
                        op: WriteOp::Put("v".into()),
                        consistency: Consistency::Quorum,
                        context: None,
                    }
                );
                assert_eq!(tag, Shape::Ok as u8);
            }
            other => panic!("{other:?}"),
        }
        match eventual(&["get", "k"]) {
            Decoded::One { msg, .. } => assert_eq!(
                msg,
                EventualRequest::Get {
                    key: "k".into(),
                    consistency: Consistency::Quorum
                }
            ),
            other => panic!("{other:?}"),
        }
        match eventual(&["DEL", "a", "b"]) {
            Decoded::Many { parts, join } => {
                assert_eq!(join, Join::Sum);
                let ops: Vec<_> = parts.into_iter().map(|(msg, _)| msg).collect();
                assert!(matches!(
                    &ops[..],
                    [
                        EventualRequest::Write {
                            op: WriteOp::Del,
                            context: None,
                            ..
                        },
                        EventualRequest::Write {
                            op: WriteOp::Del,
                            context: None,
                            ..
                        },
                    ]
                ));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            eventual(&["INFO"]),
            Decoded::One {
                msg: EventualRequest::Status,
                ..
            }
        ));
        // The port's own answers and its refusals are the coordinator's.
        for (words, start) in [
            (&["PING"][..], "+PONG"),
            (&["SET", "", "v"][..], "-EMPTY_KEY "),
            (&["NOSUCH"][..], "-ERR unknown command 'NOSUCH'"),
            (&["SET", "k"][..], "-ERR wrong number of arguments"),
        ] {
            match eventual(words) {
                Decoded::Answer(bytes) => assert!(text(bytes).starts_with(start), "{words:?}"),
                other => panic!("{words:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn peer_commands_carry_section_1_requests() {
        match decode_as::<PeerClientRequest>(args(&["SET", "k", "v"])) {
            Decoded::One { msg, .. } => assert_eq!(
                msg,
                PeerClientRequest::Client(ClientRequest::Put {
                    key: "k".into(),
                    value: "v".into()
                })
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            PeerClientRequest::Client(ClientRequest::Get { key: "k".into() }).access(),
            Some(("k", Access::Read))
        );
        let write = EventualRequest::from_client(ClientRequest::Del { key: "d".into() });
        assert_eq!(RespRequest::access(&write), Some(("d", Access::Write)));
    }

    #[test]
    fn an_eventual_read_answers_its_one_value_and_never_picks_a_sibling() {
        let one = eventual_answer(
            r#"{"type":"resp","key":"k","value":"v","versions":[{"value":"v","clock":{}}],"context":"c"}"#,
        );
        assert_eq!(one.encode_resp(Shape::Bulk as u8), b"$1\r\nv\r\n");
        assert_eq!(one.encode_resp(Shape::Count as u8), b":1\r\n");
        let two = eventual_answer(
            r#"{"type":"resp","key":"k","versions":[{"value":"a","clock":{}},{"value":"b","clock":{}}],"context":"c"}"#,
        );
        let answer = text(two.encode_resp(Shape::Bulk as u8));
        assert!(answer.starts_with("-SIBLINGS key 'k' has 2 "), "{answer}");
        assert!(answer.ends_with("\r\n") && answer.matches('\n').count() == 1);
        assert_eq!(two.encode_resp(Shape::Count as u8), b":1\r\n");
        let mut mget = Vec::new();
        reply::join(
            Join::Array,
            vec![
                one.encode_resp(Shape::Bulk as u8),
                two.encode_resp(Shape::Bulk as u8),
            ],
            &mut mget,
        );
        assert!(text(mget).starts_with("-SIBLINGS"));
        let missing = eventual_answer(r#"{"type":"resp","error":"not_found","message":"x"}"#);
        assert_eq!(missing.encode_resp(Shape::Bulk as u8), b"$-1\r\n");
        assert_eq!(missing.encode_resp(Shape::Count as u8), b":0\r\n");
        let deleted = EventualResponse::Read {
            key: "k".into(),
            versions: Vec::new(),
            value: None,
            context: String::new(),
        };
        assert_eq!(deleted.encode_resp(Shape::Bulk as u8), b"$-1\r\n");
    }

    #[test]
    fn eventual_writes_count_and_errors_keep_their_code() {
        let written =
            eventual_answer(r#"{"type":"resp","message":"Success","clock":{},"context":"c"}"#);
        assert_eq!(written.encode_resp(Shape::Ok as u8), b"+OK\r\n");
        let mut out = Vec::new();
        reply::join(
            Join::Sum,
            vec![
                written.encode_resp(Shape::Count as u8),
                written.encode_resp(Shape::Count as u8),
            ],
            &mut out,
        );
        assert_eq!(out, b":2\r\n");
        let timeout = text(EventualResponse::Timeout.encode_resp(Shape::Ok as u8));
        assert!(timeout.starts_with("-TIMEOUT "), "{timeout}");
        let down = EventualResponse::Error(ErrorReply::with_message(
            ErrorCode::Unavailable,
            "two\nlines",
        ));
        assert_eq!(
            down.encode_resp(Shape::Ok as u8),
            b"-UNAVAILABLE two lines\r\n"
        );
    }

    #[test]
    fn info_describes_the_nodes_ring() {
        let status = EventualResponse::Status {
            node: 7,
            replication: 3,
            conflicts: "siblings".into(),
            repair: "both".into(),
            nodes: vec![
                NodeStatus {
                    id: 7,
                    addr: "127.0.0.1:1".into(),
                    up: true,
                    hints: 0,
                },
                NodeStatus {
                    id: 9,
                    addr: "127.0.0.1:2".into(),
                    up: false,
                    hints: 4,
                },
            ],
            hints_dropped: 0,
            catching_up: false,
        };
        let only = text(status.encode_resp(Shape::InfoReplication as u8));
        for line in [
            "ringkv_mode:eventual\r\n",
            "node_id:7\r\n",
            "replicas_per_key:3\r\n",
            "ring_nodes:2\r\nring_nodes_up:1\r\n",
            "catching_up:no\r\n",
            "ring_node1:id=9,addr=127.0.0.1:2,up=no,hints=4\r\n",
        ] {
            assert!(only.contains(line), "{line} in {only}");
        }
        assert!(!only.contains("redis_version"));
        let all = text(status.encode_resp(Shape::InfoAll as u8));
        assert!(all.contains("# Server\r\nredis_version:") && all.contains("# Replication"));
        let peer = PeerReply::Status {
            node: 1,
            replication: 2,
            nodes: vec![PeerNodeStatus {
                id: 1,
                addr: "a:1".into(),
                up: true,
            }],
        };
        let peer = text(peer.encode_resp(Shape::InfoReplication as u8));
        assert!(
            peer.contains("ringkv_mode:peer\r\n")
                && peer.contains("ring_node0:id=1,addr=a:1,up=yes\r\n")
        );
        let value = PeerReply::Client(ClientResponse::Value {
            key: "k".into(),
            value: "v".into(),
        });
        assert_eq!(value.encode_resp(Shape::Bulk as u8), b"$1\r\nv\r\n");
    }
}
