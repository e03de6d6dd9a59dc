//! The process's exit codes: scripts tell outcomes apart by them, so each has one meaning
//! across every subcommand.

use std::process::ExitCode;

use ringkv_core::proto::{ClientResponse, ErrorCode};

/// How a subcommand ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It did what was asked (also: a role stopped by SIGINT/SIGTERM, a console left).
    Ok,
    /// `get` or `del` of a key that does not exist.
    NotFound,
    /// Bad usage, no connection, no answer, or a role that could not start or run
    /// (a locked data directory, an ID mismatch, a port in use). Clap's own usage errors
    /// use the same code.
    Failure,
    /// The store answered an error other than `not_found` (`unavailable`, `aborted`, ...).
    StoreError,
    /// A second SIGINT/SIGTERM while stopping: the process quit without a clean stop.
    Forced,
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::NotFound => 1,
            Exit::Failure => 2,
            Exit::StoreError => 3,
            // 128 + SIGINT, as shells report a process killed by Ctrl-C.
            Exit::Forced => 130,
        }
    }

    /// The exit for a store's answer: success, `not_found`, or another error.
    pub fn of_response(response: &ClientResponse) -> Exit {
        match response {
            ClientResponse::Error(reply) if reply.code == ErrorCode::NotFound => Exit::NotFound,
            ClientResponse::Error(_) => Exit::StoreError,
            _ => Exit::Ok,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}
