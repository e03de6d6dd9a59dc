//! The subcommands, one module each; [`run`] picks one.

pub mod bench;
pub mod console;
pub mod coordinator;
pub mod demo;
pub mod local;
pub mod node;
pub mod oneshot;
pub mod probe;
pub mod server;

use std::fmt::Display;

use ringkv_net::Shutdown;

use crate::args::{ClientArgs, Command};
use crate::exit::Exit;
use crate::signals;

/// Runs one subcommand to its end.
pub fn run(command: &Command) -> Exit {
    if let Some(client) = client_args(command) {
        crate::client::set_io_timeout_ms(client.io_timeout_ms);
    }
    match command {
        Command::Local(args) => local::run(args),
        Command::Coordinator(args) => coordinator::run(args),
        Command::Server(args) => server::run(args),
        Command::Node(args) => node::run(args),
        Command::Console(args) => console::run(&args.client.addr, None),
        Command::Get(args) => oneshot::get(args),
        Command::Put(args) => oneshot::put(args),
        Command::Del(args) => oneshot::del(args),
        Command::Status(args) => oneshot::status(args),
        Command::Bench(args) => bench::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Demo(args) => demo::run(args),
    }
}

/// The connection flags of the commands that talk to a running store.
fn client_args(command: &Command) -> Option<&ClientArgs> {
    match command {
        Command::Console(args) => Some(&args.client),
        Command::Get(args) => Some(&args.client),
        Command::Put(args) => Some(&args.client),
        Command::Del(args) => Some(&args.client),
        Command::Status(args) => Some(&args.client),
        Command::Bench(args) => Some(&args.client),
        _ => None,
    }
}

/// Runs one role (`coordinator`, `server`) in this process until SIGINT/SIGTERM: bad
/// options, a role that cannot start, and one that fails are one line on stderr and
/// exit 2; a stop by signal is exit 0.
fn run_role<O, E: Display>(
    options: Result<O, String>,
    run: impl FnOnce(O, Shutdown) -> Result<(), E>,
) -> Exit {
    let options = match options {
        Ok(options) => options,
        Err(why) => {
            eprintln!("error: {why}");
            return Exit::Failure;
        }
    };
    let shutdown = Shutdown::new();
    let stopper = shutdown.clone();
    if let Err(err) = signals::on_stop(move || stopper.trigger(), false) {
        eprintln!("error: cannot handle SIGINT/SIGTERM: {err}");
        return Exit::Failure;
    }
    match run(options, shutdown) {
        Ok(()) => Exit::Ok,
        Err(err) => {
            eprintln!("error: {err}");
            Exit::Failure
        }
    }
}
