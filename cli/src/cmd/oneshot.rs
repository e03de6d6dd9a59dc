//! `ringkv get|put|del|status`: one request, one answer, an exit code that tells the
//! outcome (see [`Exit`]).

use std::io::ErrorKind;

use ringkv_core::proto::{ClientRequest, ClientResponse};

use crate::args::{DelArgs, GetArgs, PutArgs, StatusArgs};
use crate::client::{Client, ClientOptions};
use crate::cmd::console;
use crate::exit::Exit;
use crate::{out, ring_table};

/// `ringkv get KEY`: prints the value alone (on a node, every sibling with its clock).
pub fn get(args: &GetArgs) -> Exit {
    if let Some(exit) = on_node(&args.client.addr, args.output.json, || {
        node_request("getreq", &args.key, None, args.consistency.as_deref(), None)
    }) {
        return exit;
    }
    if args.consistency.is_some() {
        return strong_refuses_levels();
    }
    let request = ClientRequest::Get {
        key: args.key.clone(),
    };
    run(&args.client.addr, &request, args.output.json)
}

/// `ringkv put KEY VALUE`.
pub fn put(args: &PutArgs) -> Exit {
    if let Some(exit) = on_node(&args.client.addr, args.output.json, || {
        let (level, context) = (args.consistency.as_deref(), args.context.as_deref());
        node_request("putreq", &args.key, Some(&args.value), level, context)
    }) {
        return exit;
    }
    if args.consistency.is_some() || args.context.is_some() {
        return strong_refuses_levels();
    }
    let request = ClientRequest::Put {
        key: args.key.clone(),
        value: args.value.clone(),
    };
    run(&args.client.addr, &request, args.output.json)
}

/// `ringkv del KEY`.
pub fn del(args: &DelArgs) -> Exit {
    if let Some(exit) = on_node(&args.client.addr, args.output.json, || {
        let (level, context) = (args.consistency.as_deref(), args.context.as_deref());
        node_request("delreq", &args.key, None, level, context)
    }) {
        return exit;
    }
    if args.consistency.is_some() || args.context.is_some() {
        return strong_refuses_levels();
    }
    let request = ClientRequest::Del {
        key: args.key.clone(),
    };
    run(&args.client.addr, &request, args.output.json)
}

/// `ringkv status`: the ring as a table (on a node, every node with `up` and hints).
pub fn status(args: &StatusArgs) -> Exit {
    if let Some(exit) = on_node(
        &args.client.addr,
        args.output.json,
        || serde_json::json!({"type": "statusreq"}),
    ) {
        return exit;
    }
    run(&args.client.addr, &ClientRequest::Status, args.output.json)
}

fn is_update(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::Put { .. } | ClientRequest::Del { .. }
    )
}

fn run(addr: &str, request: &ClientRequest, json: bool) -> Exit {
    // Untagged, so that `--json` shows the answer exactly as any client would get it.
    let options = ClientOptions {
        tag_requests: false,
        ..ClientOptions::default()
    };
    let answer = Client::connect_with(addr, options).and_then(|mut client| client.call(request));
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!("error: {err}");
            if is_update(request) && err.may_have_reached_the_store() {
                // The store may have taken the write and its answer been lost: say so,
                // rather than let a script take a committed write for a failed one.
                eprintln!("the write may or may not have taken effect: read the key to know");
            }
            return Exit::Failure;
        }
    };
    let exit = Exit::of_response(&answer.response);
    let printed = if json {
        out::line(&answer.raw)
    } else {
        match &answer.response {
            ClientResponse::Value { value, .. } => out::line(value),
            ClientResponse::Success => out::line("OK"),
            ClientResponse::Status { servers, expected } => {
                out::print(&ring_table::render(servers, *expected, &|_| None))
            }
            ClientResponse::Error(reply) => {
                eprintln!("error {}: {}", reply.code, reply.message);
                Ok(())
            }
        }
    };
    match printed {
        Ok(()) => exit,
        // A reader that stopped reading (`| head -c0`) is not our failure.
        Err(err) if err.kind() == ErrorKind::BrokenPipe => exit,
        Err(err) => {
            eprintln!("error: cannot write to stdout: {err}");
            Exit::Failure
        }
    }
}

fn strong_refuses_levels() -> Exit {
    eprintln!(
        "error: --consistency and --context are for eventual-mode nodes; this address is a \
         strong-mode coordinator (or did not answer)"
    );
    Exit::Failure
}

/// A node's request line.
fn node_request(
    kind: &str,
    key: &str,
    value: Option<&str>,
    level: Option<&str>,
    context: Option<&str>,
) -> serde_json::Value {
    let mut msg = serde_json::json!({"type": kind, "key": key});
    if let Some(value) = value {
        msg["value"] = value.into();
    }
    if let Some(level) = level {
        msg["consistency"] = level.into();
    }
    if let Some(context) = context {
        msg["context"] = context.into();
    }
    msg
}

/// Sends the request of `make` when `addr` is a node (eventual or peer mode), and prints
/// its answer; `None` when it is not one (the strong-mode path then runs).
fn on_node(addr: &str, json: bool, make: impl FnOnce() -> serde_json::Value) -> Option<Exit> {
    let status = console::probe(addr)?;
    let msg = make();
    if console::is_peer(&status)
        && (msg.get("consistency").is_some() || msg.get("context").is_some())
    {
        eprintln!(
            "error: --consistency and --context: {}",
            console::PEER_REFUSES_LEVELS
        );
        return Some(Exit::Failure);
    }
    let answer = match console::node_call(addr, &msg) {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!("error: {err}");
            if msg["type"] != "getreq" && msg["type"] != "statusreq" {
                eprintln!("the write may or may not have taken effect: read the key to know");
            }
            return Some(Exit::Failure);
        }
    };
    let exit = match answer["error"].as_str() {
        None => Exit::Ok,
        Some("not_found") => Exit::NotFound,
        Some(_) => Exit::StoreError,
    };
    let text = if json {
        answer.to_string()
    } else if let Some(code) = answer["error"].as_str() {
        eprintln!("error {code}: {}", answer["message"].as_str().unwrap_or(""));
        return Some(exit);
    } else {
        match msg["type"].as_str() {
            Some("getreq") => console::describe_read(msg["key"].as_str().unwrap_or(""), &answer),
            Some("statusreq") => console::describe_status(&answer),
            _ => "OK".to_owned(),
        }
    };
    Some(match out::line(&text) {
        Ok(()) => exit,
        Err(err) if err.kind() == ErrorKind::BrokenPipe => exit,
        Err(err) => {
            eprintln!("error: cannot write to stdout: {err}");
            Exit::Failure
        }
    })
}
