//! RESP2 replies: how the core's answers, and the port's own, are written for Redis
//! clients.

use ringkv_core::proto::{ClientResponse, ErrorCode, ErrorReply, ServerStatus};

use crate::inbound::Join;

/// How one core answer becomes a RESP reply: the command the request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Shape {
    /// GET, an MGET element: the value as a bulk string; a missing key is nil.
    Bulk = 1,
    /// SET: `+OK`.
    Ok = 2,
    /// DEL, EXISTS (one key's part): `:1` if the key was there, `:0` if not.
    Count = 3,
    /// INFO: the ring as the replication section (with the server section).
    InfoAll = 4,
    /// INFO replication: the ring alone.
    InfoReplication = 5,
}

impl Shape {
    /// The shape behind a slot's tag; unknown tags answer as bulk strings.
    pub(crate) fn from_tag(tag: u8) -> Shape {
        match tag {
            2 => Shape::Ok,
            3 => Shape::Count,
            4 => Shape::InfoAll,
            5 => Shape::InfoReplication,
            _ => Shape::Bulk,
        }
    }
}

/// Encodes the core's answer `msg` to a request of `shape`.
pub(crate) fn encode(shape: Shape, msg: &ClientResponse) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(shape, msg, &mut out);
    out
}

/// Appends the RESP reply to `msg`, a request of `shape`, to `out`: the connection's
/// unsent bytes on the hot path, so a GET's value is copied once, onto the wire buffer.
pub(crate) fn encode_into(shape: Shape, msg: &ClientResponse, out: &mut Vec<u8>) {
    let capacity = match msg {
        ClientResponse::Value { value, .. } => value.len() + 16,
        _ => 32,
    };
    out.reserve(capacity);
    match (shape, msg) {
        (_, ClientResponse::Error(reply)) if reply.code == ErrorCode::NotFound => match shape {
            Shape::Bulk => out.extend_from_slice(b"$-1\r\n"),
            Shape::Count => out.extend_from_slice(b":0\r\n"),
            _ => error(out, reply),
        },
        (_, ClientResponse::Error(reply)) => error(out, reply),
        (Shape::Bulk, ClientResponse::Value { value, .. }) => bulk(out, value.as_bytes()),
        (Shape::Count, ClientResponse::Value { .. } | ClientResponse::Success) => {
            out.extend_from_slice(b":1\r\n")
        }
        (Shape::Ok, ClientResponse::Success) => out.extend_from_slice(b"+OK\r\n"),
        (Shape::InfoAll, ClientResponse::Status { servers, expected }) => {
            let mut text = info_server();
            text.push_str("\r\n");
            text.push_str(&info_replication(servers, *expected));
            bulk(out, text.as_bytes());
        }
        (Shape::InfoReplication, ClientResponse::Status { servers, expected }) => {
            bulk(out, info_replication(servers, *expected).as_bytes())
        }
        _ => error(
            out,
            &ErrorReply::with_message(ErrorCode::Internal, "answer of an unexpected kind"),
        ),
    }
}

/// `-CODE message`: the protocol's code upper-cased, so that clients can match on it as
/// on Redis's `ERR`/`WRONGTYPE`; line breaks in the message become spaces.
pub(crate) fn error(out: &mut Vec<u8>, reply: &ErrorReply) {
    out.push(b'-');
    out.extend(reply.code.as_str().bytes().map(|b| b.to_ascii_uppercase()));
    out.push(b' ');
    simple_text(out, &reply.message);
    out.extend_from_slice(b"\r\n");
}

/// `-ERR message` (or another prefix the message carries), as Redis words its own errors.
pub(crate) fn redis_error(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(b'-');
    simple_text(&mut out, message);
    out.extend_from_slice(b"\r\n");
    out
}

/// The error answer of a protocol code with its default message.
pub(crate) fn code_error(code: ErrorCode) -> Vec<u8> {
    let mut out = Vec::new();
    error(&mut out, &ErrorReply::new(code));
    out
}

fn simple_text(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// `+text`.
pub(crate) fn simple(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 3);
    out.push(b'+');
    simple_text(&mut out, text);
    out.extend_from_slice(b"\r\n");
    out
}

/// `$len\r\nbytes\r\n`.
pub(crate) fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    decimal(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `:n`.
pub(crate) fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `*n`: an array header; the elements follow.
pub(crate) fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    decimal(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal without a temporary string: every bulk reply has a length.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(digit) = digits.get_mut(start) {
            *digit = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Joins the replies of one command's requests. Any error answers the whole command
/// (the first, in key order): a partial MGET or DEL count would hide that some keys
/// could not be reached.
pub(crate) fn join(join: Join, parts: Vec<Vec<u8>>, out: &mut Vec<u8>) {
    if let Some(err) = parts.iter().find(|part| part.first() == Some(&b'-')) {
        out.extend_from_slice(err);
        return;
    }
    match join {
        Join::One => parts.iter().for_each(|part| out.extend_from_slice(part)),
        Join::Array => {
            array_header(out, parts.len());
            parts.iter().for_each(|part| out.extend_from_slice(part));
        }
        Join::Sum => {
            // Every part is `:0\r\n` or `:1\r\n`, written by `encode` above.
            let sum = parts
                .iter()
                .filter(|part| part.as_slice() == b":1\r\n")
                .count();
            integer(out, i64::try_from(sum).unwrap_or(i64::MAX));
        }
    }
}

/// The version of Redis whose RESP2 commands this port follows; clients read
/// `redis_version` from INFO to decide which commands they may send.
pub(crate) const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// INFO's server section: what a Redis client looks for, and which ringkv this is.
pub(crate) fn info_server() -> String {
    format!(
        "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nringkv_version:{}\r\n\
         redis_mode:standalone\r\nprocess_id:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}

/// INFO's replication section: the ring, one line per KV server in ring order.
fn info_replication(servers: &[ServerStatus], expected: u64) -> String {
    let registered = servers.len();
    let complete = u64::try_from(registered).is_ok_and(|n| n >= expected);
    let mut text = format!(
        "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nreplicas_per_key:2\r\n\
         ring_servers_expected:{expected}\r\nring_servers_registered:{registered}\r\n\
         ring_complete:{}\r\n",
        if complete { "yes" } else { "no" }
    );
    for (i, server) in servers.iter().enumerate() {
        text.push_str(&format!(
            "ring_server{i}:id={},addr={},up={}\r\n",
            server.id,
            server.addr,
            if server.up { "yes" } else { "no" }
        ));
    }
    text
}
