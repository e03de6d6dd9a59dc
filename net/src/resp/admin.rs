//! The commands the RESP port answers itself: they concern the connection or describe the
//! port, never the data.

use super::command::{config_get, CommandSpec, COMMANDS};
use super::reply;

/// The answer to `name` (a known command, arity checked) with its arguments `args`.
pub(crate) fn answer(name: &str, args: &[Vec<u8>]) -> Vec<u8> {
    match name {
        "ping" => match args.first() {
            Some(message) => bulk(message),
            None => reply::simple("PONG"),
        },
        "echo" => args.first().map_or_else(Vec::new, |message| bulk(message)),
        "select" => select(args),
        "command" => command(args),
        "config" => config(args),
        "hello" => hello(args),
        "client" => client(args),
        _ => reply::redis_error(&format!("ERR unknown command '{name}'")),
    }
}

fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    reply::bulk(&mut out, bytes);
    out
}

fn select(args: &[Vec<u8>]) -> Vec<u8> {
    let index = args
        .first()
        .and_then(|arg| std::str::from_utf8(arg).ok())
        .and_then(|text| text.parse::<i64>().ok());
    match index {
        Some(0) => reply::simple("OK"),
        Some(_) => reply::redis_error("ERR DB index is out of range"),
        None => reply::redis_error("ERR value is not an integer or out of range"),
    }
}

fn unknown_subcommand(sub: &[u8], command: &str) -> Vec<u8> {
    reply::redis_error(&format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(sub)
    ))
}

fn command(args: &[Vec<u8>]) -> Vec<u8> {
    let Some(sub) = args.first() else {
        return command_infos(COMMANDS.iter().map(Some));
    };
    let wanted = || {
        args.iter()
            .skip(1)
            .map(|name| find(name))
            .collect::<Vec<_>>()
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"count" => {
            let mut out = Vec::new();
            reply::integer(&mut out, i64::try_from(COMMANDS.len()).unwrap_or(0));
            out
        }
        b"info" => command_infos(wanted().into_iter()),
        b"docs" if args.len() == 1 => command_docs(COMMANDS.iter()),
        b"docs" => command_docs(wanted().into_iter().flatten()),
        b"list" => {
            let mut out = Vec::new();
            reply::array_header(&mut out, COMMANDS.len());
            for spec in COMMANDS {
                reply::bulk(&mut out, spec.name.as_bytes());
            }
            out
        }
        _ => unknown_subcommand(sub, "COMMAND"),
    }
}

fn find(name: &[u8]) -> Option<&'static CommandSpec> {
    let lower = name.to_ascii_lowercase();
    COMMANDS.iter().find(|spec| spec.name.as_bytes() == lower)
}

/// COMMAND / COMMAND INFO: Redis 7's ten fields per command (nil for unknown names).
fn command_infos<'a>(specs: impl ExactSizeIterator<Item = Option<&'a CommandSpec>>) -> Vec<u8> {
    let mut out = Vec::new();
    reply::array_header(&mut out, specs.len());
    for spec in specs {
        let Some(spec) = spec else {
            out.extend_from_slice(b"*-1\r\n");
            continue;
        };
        reply::array_header(&mut out, 10);
        reply::bulk(&mut out, spec.name.as_bytes());
        reply::integer(&mut out, spec.arity);
        reply::array_header(&mut out, spec.flags.len());
        for flag in spec.flags {
            out.extend_from_slice(&reply::simple(flag));
        }
        reply::integer(&mut out, spec.keys.0);
        reply::integer(&mut out, spec.keys.1);
        reply::integer(&mut out, spec.keys.2);
        // ACL categories, tips, key specs, subcommands: none.
        out.extend_from_slice(b"*0\r\n*0\r\n*0\r\n*0\r\n");
    }
    out
}

/// COMMAND DOCS: name, then a flat map of summary, since, group and arguments, which
/// redis-cli turns into its help and its hints.
fn command_docs<'a>(specs: impl Iterator<Item = &'a CommandSpec>) -> Vec<u8> {
    let specs: Vec<&CommandSpec> = specs.collect();
    let mut out = Vec::new();
    reply::array_header(&mut out, specs.len() * 2);
    for spec in specs {
        reply::bulk(&mut out, spec.name.as_bytes());
        let has_args = !spec.args.is_empty();
        reply::array_header(&mut out, if has_args { 8 } else { 6 });
        for (field, value) in [
            ("summary", spec.summary),
            ("since", "1.0.0"),
            ("group", spec.group),
        ] {
            reply::bulk(&mut out, field.as_bytes());
            reply::bulk(&mut out, value.as_bytes());
        }
        if has_args {
            reply::bulk(&mut out, b"arguments");
            reply::array_header(&mut out, spec.args.len());
            for (name, kind, flag) in spec.args {
                argument_doc(&mut out, name, kind, flag);
            }
        }
    }
    out
}

fn argument_doc(out: &mut Vec<u8>, name: &str, kind: &str, flag: &str) {
    let fields = if flag.is_empty() { 6 } else { 8 };
    reply::array_header(out, fields);
    for (field, value) in [("name", name), ("type", kind), ("display_text", name)] {
        reply::bulk(out, field.as_bytes());
        reply::bulk(out, value.as_bytes());
    }
    if !flag.is_empty() {
        reply::bulk(out, b"flags");
        reply::array_header(out, 1);
        out.extend_from_slice(&reply::simple(flag));
    }
}

fn config(args: &[Vec<u8>]) -> Vec<u8> {
    let Some(sub) = args.first() else {
        return reply::redis_error("ERR wrong number of arguments for 'config' command");
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"get" if args.len() >= 2 => config_get(args.get(1..).unwrap_or_default()),
        b"get" => reply::redis_error("ERR wrong number of arguments for 'config|get' command"),
        b"set" | b"resetstat" | b"rewrite" => reply::redis_error(
            "ERR ringkv's settings are its command-line flags; CONFIG only answers GET",
        ),
        _ => unknown_subcommand(sub, "CONFIG"),
    }
}

/// HELLO: version 2 (or none) gets Redis's handshake map as a flat array; any other
/// version gets `NOPROTO`, on which RESP3 clients fall back to RESP2.
fn hello(args: &[Vec<u8>]) -> Vec<u8> {
    if let Some(version) = args.first() {
        match std::str::from_utf8(version)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            Some(2) => {}
            Some(_) => return reply::redis_error("NOPROTO unsupported protocol version"),
            None => {
                return reply::redis_error("ERR Protocol version is not an integer or out of range")
            }
        }
        if args.len() > 1 {
            return reply::redis_error("ERR ringkv's HELLO takes no AUTH or SETNAME");
        }
    }
    let mut out = Vec::new();
    reply::array_header(&mut out, 14);
    for (field, value) in [
        ("server", "ringkv"),
        ("version", reply::REDIS_COMPAT_VERSION),
    ] {
        reply::bulk(&mut out, field.as_bytes());
        reply::bulk(&mut out, value.as_bytes());
    }
    reply::bulk(&mut out, b"proto");
    reply::integer(&mut out, 2);
    reply::bulk(&mut out, b"id");
    reply::integer(&mut out, 0);
    for (field, value) in [("mode", "standalone"), ("role", "master")] {
        reply::bulk(&mut out, field.as_bytes());
        reply::bulk(&mut out, value.as_bytes());
    }
    reply::bulk(&mut out, b"modules");
    reply::array_header(&mut out, 0);
    out
}

fn client(args: &[Vec<u8>]) -> Vec<u8> {
    let Some(sub) = args.first() else {
        return reply::redis_error("ERR wrong number of arguments for 'client' command");
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"setname" | b"setinfo" => reply::simple("OK"),
        b"getname" => b"$-1\r\n".to_vec(),
        b"id" => b":0\r\n".to_vec(),
        _ => unknown_subcommand(sub, "CLIENT"),
    }
}
