//! ringkv's command-line program as a library, so that end-to-end tests (and other tools)
//! reuse its client and its pieces instead of speaking the protocol by hand.
//!
//! The binary (`src/main.rs`) only parses the command line, sets up logging and calls
//! [`cmd::run`].

#![warn(missing_docs)]

pub mod addr;
pub mod args;
pub mod client;
pub mod cmd;
pub mod exit;
pub mod logging;
pub mod out;
pub mod ring_table;
pub mod signals;

pub use client::{Answer, Client, ClientError, ClientOptions};
pub use exit::Exit;
