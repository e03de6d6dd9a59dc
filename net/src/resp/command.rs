//! RESP commands: what each one asks of the coordinator, or what the port answers itself.
//!
//! GET, SET, DEL, EXISTS, MGET and INFO become the very client requests a JSON line would
//! (`getreq`, `putreq`, `delreq`, `statusreq`), so every semantic of the protocol holds
//! whichever port a request came through. Everything else (PING, ECHO, QUIT, SELECT,
//! COMMAND, CONFIG GET, HELLO, CLIENT) concerns only the connection and is answered here.

use ringkv_core::proto::{check_key, check_value, ClientRequest, ErrorCode, ErrorReply};

use super::reply::{self, Shape};
use crate::inbound::{Decoded, Join};

/// The most keys one command may name (MGET, DEL, EXISTS): each becomes a request in
/// flight, so this bounds what one frame can put in flight, like the per-connection
/// limit of the JSON port (256).
pub const MAX_KEYS_PER_COMMAND: usize = 256;

/// One command this port knows, for dispatch and for COMMAND / COMMAND DOCS.
pub(crate) struct CommandSpec {
    /// Lower-case name.
    pub(crate) name: &'static str,
    /// Redis's arity: exact argument count (name included) if positive, minimum if not.
    pub(crate) arity: i64,
    /// What it does, for redis-cli's help.
    pub(crate) summary: &'static str,
    /// Redis's command group.
    pub(crate) group: &'static str,
    /// Redis's flags (`readonly`, `write`, `fast`, ...).
    pub(crate) flags: &'static [&'static str],
    /// First key position, last (-1: the last argument), step; 0 0 0 for none.
    pub(crate) keys: (i64, i64, i64),
    /// Arguments for redis-cli's hints: name, type, and `multiple`/`optional` or "".
    pub(crate) args: &'static [(&'static str, &'static str, &'static str)],
}

/// Every command of the port, in the order COMMAND lists them.
#[rustfmt::skip]
pub(crate) const COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "get", arity: 2, summary: "Returns the string value of a key.", group: "string", flags: &["readonly", "fast"], keys: (1, 1, 1), args: &[("key", "key", "")] },
    CommandSpec { name: "set", arity: -3, summary: "Sets the string value of a key on both of its replicas (two-phase commit). No options.", group: "string", flags: &["write"], keys: (1, 1, 1), args: &[("key", "key", ""), ("value", "string", "")] },
    CommandSpec { name: "del", arity: -2, summary: "Deletes one or more keys; answers how many existed.", group: "generic", flags: &["write"], keys: (1, -1, 1), args: &[("key", "key", "multiple")] },
    CommandSpec { name: "exists", arity: -2, summary: "Counts how many of the keys exist.", group: "generic", flags: &["readonly", "fast"], keys: (1, -1, 1), args: &[("key", "key", "multiple")] },
    CommandSpec { name: "mget", arity: -2, summary: "Returns the values of one or more keys.", group: "string", flags: &["readonly", "fast"], keys: (1, -1, 1), args: &[("key", "key", "multiple")] },
    CommandSpec { name: "ping", arity: -1, summary: "Returns PONG, or the message given.", group: "connection", flags: &["fast"], keys: (0, 0, 0), args: &[("message", "string", "optional")] },
    CommandSpec { name: "echo", arity: 2, summary: "Returns the message given.", group: "connection", flags: &["fast"], keys: (0, 0, 0), args: &[("message", "string", "")] },
    CommandSpec { name: "quit", arity: -1, summary: "Closes the connection.", group: "connection", flags: &["fast"], keys: (0, 0, 0), args: &[] },
    CommandSpec { name: "select", arity: 2, summary: "Selects the database; ringkv has only database 0.", group: "connection", flags: &["fast"], keys: (0, 0, 0), args: &[("index", "integer", "")] },
    CommandSpec { name: "info", arity: -1, summary: "Returns the server section and the ring (replication section).", group: "server", flags: &[], keys: (0, 0, 0), args: &[("section", "string", "multiple")] },
    CommandSpec { name: "command", arity: -1, summary: "Returns information about the commands (COMMAND, COMMAND COUNT, COMMAND DOCS, COMMAND INFO).", group: "server", flags: &[], keys: (0, 0, 0), args: &[] },
    CommandSpec { name: "config", arity: -2, summary: "CONFIG GET: answers the settings Redis clients ask about.", group: "server", flags: &[], keys: (0, 0, 0), args: &[("subcommand", "string", ""), ("parameter", "string", "multiple")] },
    CommandSpec { name: "hello", arity: -1, summary: "Handshake; only protocol version 2 (RESP2) is spoken.", group: "connection", flags: &["fast"], keys: (0, 0, 0), args: &[("protover", "integer", "optional")] },
    CommandSpec { name: "client", arity: -2, summary: "CLIENT SETNAME, SETINFO, GETNAME, ID: accepted for clients that send them.", group: "connection", flags: &[], keys: (0, 0, 0), args: &[("subcommand", "string", "")] },
];

/// The settings CONFIG GET answers: what redis-benchmark and client libraries ask about,
/// with values that describe ringkv (every write synced before it is answered, one
/// database, no expiry, no eviction).
const CONFIG: &[(&str, &str)] = &[
    ("appendfsync", "always"),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
    ("proto-max-bulk-len", "262144"),
    ("save", ""),
    ("timeout", "300"),
];

/// What the port makes of one command (its arguments, the name first). Keys and values
/// move out of the arguments into the requests, never copied.
pub(crate) fn decode(args: Vec<Vec<u8>>) -> Decoded<ClientRequest> {
    let Some(name) = args.first() else {
        return Decoded::Answer(reply::redis_error("ERR empty command"));
    };
    let Some(spec) = COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
    else {
        return Decoded::Answer(unknown_command(&args));
    };
    let argc = i64::try_from(args.len()).unwrap_or(i64::MAX);
    if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
        return Decoded::Answer(reply::redis_error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        )));
    }
    let mut rest = args;
    rest.remove(0);
    match spec.name {
        "get" => keyed(rest, Shape::Bulk, Join::One, |key| ClientRequest::Get {
            key,
        }),
        "set" => set(rest),
        "del" => keyed(rest, Shape::Count, Join::Sum, |key| ClientRequest::Del {
            key,
        }),
        "exists" => keyed(rest, Shape::Count, Join::Sum, |key| ClientRequest::Get {
            key,
        }),
        "mget" => keyed(rest, Shape::Bulk, Join::Array, |key| ClientRequest::Get {
            key,
        }),
        "quit" => Decoded::Last(reply::simple("OK")),
        "info" => info(&rest),
        _ => Decoded::Answer(super::admin::answer(spec.name, &rest)),
    }
}

/// Redis's words for a command it does not know.
fn unknown_command(args: &[Vec<u8>]) -> Vec<u8> {
    let name = String::from_utf8_lossy(args.first().map(Vec::as_slice).unwrap_or_default());
    let mut listed = String::new();
    for arg in args.iter().skip(1) {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        let text = String::from_utf8_lossy(arg);
        let cut: String = text.chars().take(room).collect();
        listed.push_str(&format!("'{cut}' "));
    }
    let name: String = name.chars().take(128).collect();
    reply::redis_error(&format!(
        "ERR unknown command '{name}', with args beginning with: {listed}"
    ))
}

/// A key as the protocol takes it: UTF-8 within the limits, else the JSON port's code.
fn key_of(bytes: Vec<u8>) -> Result<String, Vec<u8>> {
    let key = String::from_utf8(bytes)
        .map_err(|_| error_answer(ErrorCode::Malformed, "the key is not UTF-8"))?;
    check_key(&key).map_err(reply::code_error)?;
    Ok(key)
}

fn error_answer(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    reply::error(&mut out, &ErrorReply::with_message(code, message));
    out
}

/// A command on one or more keys: one request per key, answered together.
fn keyed(
    keys: Vec<Vec<u8>>,
    shape: Shape,
    join: Join,
    request: fn(String) -> ClientRequest,
) -> Decoded<ClientRequest> {
    // GET, the hottest command, has one key: no list of parts to build and drop.
    let keys = if join == Join::One {
        match <[Vec<u8>; 1]>::try_from(keys) {
            Ok([key]) => {
                return match key_of(key) {
                    Ok(key) => Decoded::One {
                        id: None,
                        msg: request(key),
                        tag: shape as u8,
                    },
                    Err(answer) => Decoded::Answer(answer),
                };
            }
            Err(keys) => keys,
        }
    } else {
        keys
    };
    if keys.len() > MAX_KEYS_PER_COMMAND {
        return Decoded::Answer(error_answer(
            ErrorCode::Overloaded,
            &format!("more than {MAX_KEYS_PER_COMMAND} keys in one command"),
        ));
    }
    let mut parts = Vec::with_capacity(keys.len());
    for key in keys {
        match key_of(key) {
            Ok(key) => parts.push((request(key), shape as u8)),
            Err(answer) => return Decoded::Answer(answer),
        }
    }
    if join == Join::One || parts.len() == 1 {
        if let Some((msg, tag)) = parts.pop() {
            if join == Join::Array {
                // MGET of one key is still an array: keep the join.
                return Decoded::Many {
                    parts: vec![(msg, tag)],
                    join,
                };
            }
            return Decoded::One { id: None, msg, tag };
        }
    }
    Decoded::Many { parts, join }
}

fn set(args: Vec<Vec<u8>>) -> Decoded<ClientRequest> {
    let Ok::<[Vec<u8>; 2], _>([key, value]) = args.try_into() else {
        return Decoded::Answer(reply::redis_error(
            "ERR syntax error (ringkv's SET takes a key and a value, no options)",
        ));
    };
    let key = match key_of(key) {
        Ok(key) => key,
        Err(answer) => return Decoded::Answer(answer),
    };
    let Ok(value) = String::from_utf8(value) else {
        return Decoded::Answer(error_answer(ErrorCode::Malformed, "the value is not UTF-8"));
    };
    if let Err(code) = check_value(&value) {
        return Decoded::Answer(reply::code_error(code));
    }
    Decoded::One {
        id: None,
        msg: ClientRequest::Put { key, value },
        tag: Shape::Ok as u8,
    }
}

/// INFO: the ring comes from the coordinator (`statusreq`); the server section alone is
/// answered here.
fn info(sections: &[Vec<u8>]) -> Decoded<ClientRequest> {
    let named = |name: &str| {
        sections
            .iter()
            .any(|section| section.eq_ignore_ascii_case(name.as_bytes()))
    };
    let all = sections.is_empty() || named("all") || named("everything") || named("default");
    let shape = if all || (named("server") && named("replication")) {
        Shape::InfoAll
    } else if named("replication") {
        Shape::InfoReplication
    } else {
        let mut out = Vec::new();
        let text = if named("server") {
            reply::info_server()
        } else {
            String::new()
        };
        reply::bulk(&mut out, text.as_bytes());
        return Decoded::Answer(out);
    };
    Decoded::One {
        id: None,
        msg: ClientRequest::Status,
        tag: shape as u8,
    }
}

/// CONFIG GET's settings matching a Redis glob pattern, as a flat name-value array.
pub(crate) fn config_get(patterns: &[Vec<u8>]) -> Vec<u8> {
    let matched: Vec<&(&str, &str)> = CONFIG
        .iter()
        .filter(|(name, _)| {
            patterns
                .iter()
                .any(|pattern| glob_match(&pattern.to_ascii_lowercase(), name.as_bytes()))
        })
        .collect();
    let mut out = Vec::new();
    reply::array_header(&mut out, matched.len() * 2);
    for (name, value) in matched {
        reply::bulk(&mut out, name.as_bytes());
        reply::bulk(&mut out, value.as_bytes());
    }
    out
}

/// Redis's glob: `*` any run, `?` any byte, anything else itself. Iterative, with one
/// backtrack point, so that no pattern costs more than length x length steps.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|&c| c == b'*')
}
