//! `ringkv console`: an interactive client with line editing and history.

mod eventual;
mod parse;

use std::path::PathBuf;

use ringkv_core::proto::{ClientRequest, ClientResponse};
use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use crate::client::{Answer, Client, ClientError};
use crate::exit::Exit;
use crate::out;
use crate::ring_table;
use crate::signals::StopFlag;

pub use eventual::{
    describe_read, describe_status, is_peer, node_call, probe, EvSession, PEER_REFUSES_LEVELS,
};
pub use parse::{parse, Command, HELP, LEVELS};

/// Lines of history kept in the history file.
const HISTORY_LINES: usize = 1000;
/// The history file's name, in `$HOME`.
const HISTORY_FILE: &str = ".ringkv_history";

/// Runs the console against the client port at `addr` until the user leaves, or until
/// `stop` is set (a local cluster stopping under a signal).
pub fn run(addr: &str, stop: Option<&StopFlag>) -> Exit {
    let config = Config::builder()
        .max_history_size(HISTORY_LINES)
        .map(|builder| builder.auto_add_history(true).build());
    let editor = config.and_then(DefaultEditor::with_config);
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(err) => {
            eprintln!("error: cannot start the console: {err}");
            return Exit::Failure;
        }
    };
    let history = history_path();
    if let Some(path) = &history {
        if let Err(err) = editor.load_history(path) {
            tracing::debug!(path = %path.display(), %err, "no history loaded");
        }
    }
    // The editor watches its signal pipe only while an external printer exists; without
    // it a SIGTERM could not make a pending `readline` return. Not a terminal: no need.
    let _printer = stop.and_then(|_| editor.create_external_printer().ok());
    let mut session = match probe(addr) {
        Some(status) => AnySession::Eventual(EvSession::new(addr, is_peer(&status))),
        None => AnySession::Strong(Session::new(addr)),
    };
    let exit = if out::line(&session.greeting()).is_ok() {
        read_eval_print(&mut editor, &mut session, stop)
    } else {
        Exit::Failure
    };
    save_history(&mut editor, history.as_ref());
    exit
}

/// Reads commands and prints their outcome until the user leaves or `stop` is set.
fn read_eval_print(
    editor: &mut DefaultEditor,
    session: &mut AnySession,
    stop: Option<&StopFlag>,
) -> Exit {
    loop {
        if stop.is_some_and(StopFlag::is_set) {
            return Exit::Ok;
        }
        let line = match editor.readline("ringkv> ") {
            Ok(line) => line,
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => return Exit::Ok,
            Err(err) => {
                eprintln!("error: cannot read the console's input: {err}");
                return Exit::Failure;
            }
        };
        let text = match parse(&line) {
            Ok(Command::Exit) => return Exit::Ok,
            Ok(Command::Nothing) => continue,
            Ok(Command::Help) => HELP.to_owned(),
            Ok(command) => session.execute(command),
            Err(usage) => usage,
        };
        if out::line(&text).is_err() {
            // Nobody reads the answers any more (a closed pipe): stop asking.
            return Exit::Failure;
        }
    }
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(HISTORY_FILE))
}

fn save_history(editor: &mut DefaultEditor, path: Option<&PathBuf>) {
    if let Some(path) = path {
        if let Err(err) = editor.save_history(path) {
            tracing::debug!(path = %path.display(), %err, "history not saved");
        }
    }
}

/// The session of the mode the console found at its address.
enum AnySession {
    /// A strong-mode coordinator (or nothing answered yet).
    Strong(Session),
    /// An eventual-mode or peer-mode node.
    Eventual(EvSession),
}

impl AnySession {
    fn greeting(&mut self) -> String {
        match self {
            AnySession::Strong(session) => session.greeting(),
            AnySession::Eventual(session) => format!(
                "connected to the {}-mode node at {}; type help for commands",
                if session.is_peer() {
                    "peer"
                } else {
                    "eventual"
                },
                session_addr(session)
            ),
        }
    }

    fn execute(&mut self, command: Command) -> String {
        // Nothing answered at start: the address may be a node that was not up yet.
        if let AnySession::Strong(session) = self {
            if session.client.is_none() {
                if let Some(status) = probe(&session.addr) {
                    *self = AnySession::Eventual(EvSession::new(&session.addr, is_peer(&status)));
                }
            }
        }
        match self {
            AnySession::Strong(session) => session.execute(command),
            AnySession::Eventual(session) => session.execute(command),
        }
    }
}

fn session_addr(session: &EvSession) -> &str {
    session.addr()
}

/// The console's connection, made lazily and made again after it dropped.
struct Session {
    addr: String,
    client: Option<Client>,
}

impl Session {
    fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            client: None,
        }
    }

    /// Connects at start, so that a wrong address shows before the first command.
    fn greeting(&mut self) -> String {
        match self.connected() {
            Ok(_) => format!("connected to {}; type help for commands", self.addr),
            Err(err) => format!("{err}; will try again at each command; type help for commands"),
        }
    }

    /// Carries out one command and says what came of it.
    fn execute(&mut self, command: Command) -> String {
        let level = match &command {
            Command::Get { level, .. }
            | Command::Put { level, .. }
            | Command::Del { level, .. } => level.as_ref(),
            _ => None,
        };
        if level.is_some() {
            return "consistency levels are for eventual-mode nodes; this is a strong-mode \
                    coordinator, where every read and write involves both replicas"
                .into();
        }
        let (request, safe_to_repeat) = match command {
            Command::Get { key, .. } => (ClientRequest::Get { key }, true),
            Command::Put { key, value, .. } => (ClientRequest::Put { key, value }, false),
            Command::Del { key, .. } => (ClientRequest::Del { key }, false),
            Command::Status => (ClientRequest::Status, true),
            Command::Help | Command::Exit | Command::Nothing => return String::new(),
        };
        match self.request(&request, safe_to_repeat) {
            Ok(answer) => describe(&answer.response),
            Err(err) => format!("error connection: {err}"),
        }
    }

    /// Sends a request on a live connection. A read is sent once more on a new
    /// connection if the old one died under it; an update is not, since it may have
    /// been applied.
    fn request(
        &mut self,
        request: &ClientRequest,
        safe_to_repeat: bool,
    ) -> Result<Answer, ClientError> {
        let first = self.connected()?.call(request);
        match first {
            Ok(answer) => Ok(answer),
            Err(err) => {
                self.client = None;
                let dropped = matches!(
                    err,
                    ClientError::Closed { .. }
                        | ClientError::Io { .. }
                        | ClientError::Broken { .. }
                );
                if safe_to_repeat && dropped {
                    tracing::debug!(%err, "connection dropped; sending the read again");
                    let again = self.connected()?.call(request);
                    if again.is_err() {
                        self.client = None;
                    }
                    again
                } else {
                    Err(err)
                }
            }
        }
    }

    fn connected(&mut self) -> Result<&mut Client, ClientError> {
        let usable = self.client.as_mut().is_some_and(Client::is_usable);
        if !usable {
            if self.client.take().is_some() {
                tracing::debug!(addr = %self.addr, "connection closed; reconnecting");
            }
            self.client = Some(Client::connect(&self.addr)?);
        }
        self.client.as_mut().ok_or(ClientError::Broken {
            addr: self.addr.clone(),
        })
    }
}

/// An answer as the console shows it: values plainly, errors as `error CODE: MESSAGE`.
pub fn describe(response: &ClientResponse) -> String {
    match response {
        ClientResponse::Value { value, .. } => value.clone(),
        ClientResponse::Success => "OK".into(),
        ClientResponse::Status { servers, expected } => {
            ring_table::render(servers, *expected, &|_| None)
                .trim_end()
                .to_owned()
        }
        ClientResponse::Error(reply) => format!("error {}: {}", reply.code, reply.message),
    }
}
