//! `ringkv get|put|del|status`: one request, one answer, an exit code that tells the
//! outcome (see [`Exit`]).

use std::io::ErrorKind;

use ringkv_core::proto::{ClientRequest, ClientResponse};

use crate::args::{DelArgs, GetArgs, PutArgs, StatusArgs};
use crate::client::{Client, ClientOptions};
use crate::exit::Exit;
use crate::{out, ring_table};

/// `ringkv get KEY`: prints the value alone.
pub fn get(args: &GetArgs) -> Exit {
    let request = ClientRequest::Get {
        key: args.key.clone(),
    };
    run(&args.client.addr, &request, args.output.json)
}

/// `ringkv put KEY VALUE`.
pub fn put(args: &PutArgs) -> Exit {
    let request = ClientRequest::Put {
        key: args.key.clone(),
        value: args.value.clone(),
    };
    run(&args.client.addr, &request, args.output.json)
}

/// `ringkv del KEY`.
pub fn del(args: &DelArgs) -> Exit {
    let request = ClientRequest::Del {
        key: args.key.clone(),
    };
    run(&args.client.addr, &request, args.output.json)
}

/// `ringkv status`: the ring as a table.
pub fn status(args: &StatusArgs) -> Exit {
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
