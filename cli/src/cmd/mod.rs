//! The subcommands, one module each; [`run`] picks one.

pub mod bench;
pub mod console;
pub mod coordinator;
pub mod local;
pub mod oneshot;
pub mod probe;
pub mod server;

use crate::args::Command;
use crate::exit::Exit;

/// Runs one subcommand to its end.
pub fn run(command: &Command) -> Exit {
    match command {
        Command::Local(args) => local::run(args),
        Command::Coordinator(args) => coordinator::run(args),
        Command::Server(args) => server::run(args),
        Command::Console(args) => console::run(&args.client.addr, None),
        Command::Get(args) => oneshot::get(args),
        Command::Put(args) => oneshot::put(args),
        Command::Del(args) => oneshot::del(args),
        Command::Status(args) => oneshot::status(args),
        Command::Bench(args) => bench::run(args),
        Command::Probe(args) => probe::run(args),
    }
}
