//! Clients whose every request is recorded, for the simulator's linearizability checker
//! to judge a run against real processes: each client sends one request at a time on a
//! few keys, and records when it sent it, when the answer came (times in microseconds
//! since the run began) and what it said. A request whose connection broke first (the
//! process serving it was killed) stays open: it may or may not have taken effect, and
//! the client carries on through another connection. A client speaks JSON lines or
//! RESP2: whichever port a request came through, its semantics are the same.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringkv_core::rng::DetRng;
use ringkv_sim::history::{Command, History, Outcome};
use serde_json::Value;

use crate::resp::{Reply, RespClient};
use crate::{del, error_code, get, put, Client};

/// The history of a run, shared by its clients.
pub struct Recorder {
    started: Instant,
    history: Mutex<History>,
}

impl Recorder {
    /// An empty history whose clock starts now.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            started: Instant::now(),
            history: Mutex::new(History::new()),
        })
    }

    /// Microseconds since the run began: the history's clock.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The history recorded so far.
    pub fn history(&self) -> History {
        self.history.lock().expect("no client panicked").clone()
    }

    fn invoke(&self, client: u32, key: &str, command: Command) -> usize {
        let mut history = self.history.lock().expect("no client panicked");
        history.invoke(client, key, command, self.now_us())
    }

    fn complete(&self, index: usize, outcome: Outcome) {
        let mut history = self.history.lock().expect("no client panicked");
        history.complete(index, outcome, self.now_us());
    }
}

/// Which port a client speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// JSON lines (PROTOCOL.md section 1).
    Json,
    /// RESP2: `GET`, `SET`, `DEL`.
    Resp,
}

/// What one client is: its number, the stream its choices come from, the keys it
/// works on, and where it may connect (another one when a connection breaks).
pub struct ClientPlan {
    /// Its number in the history.
    pub id: u32,
    /// Seeds its choice of key, command and pause.
    pub seed: u64,
    /// The keys.
    pub keys: Vec<String>,
    /// Where it connects: one address, or any node's.
    pub targets: Vec<SocketAddr>,
    /// What the targets speak.
    pub port: Port,
    /// The pause between two requests, in milliseconds, drawn from this range.
    pub pause_ms: (u64, u64),
}

/// Runs a client until `stop`; returns how many answers it got.
///
/// # Panics
/// On an answer the protocol does not allow (a malformed reply, an `internal` error,
/// a `Success` for a GET): the run is a failure whatever the checker says.
pub fn run_client(plan: ClientPlan, recorder: &Recorder, stop: &AtomicBool) -> u64 {
    let mut rng = DetRng::new(plan.seed);
    let mut connection: Option<Connection> = None;
    let mut answers = 0;
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let pause = rng.between(plan.pause_ms.0, plan.pause_ms.1);
        std::thread::sleep(Duration::from_millis(pause));
        let target = plan.targets[rng.between(0, plan.targets.len() as u64 - 1) as usize];
        if connection.is_none() {
            connection = Connection::open(plan.port, target);
        }
        let Some(client) = connection.as_mut() else {
            continue;
        };
        let key = &plan.keys[rng.between(0, plan.keys.len() as u64 - 1) as usize];
        let roll = rng.between(0, 99);
        let command = if roll < 50 {
            Command::Get
        } else if roll < 90 {
            written += 1;
            let value = format!("c{}w{written}", plan.id);
            Command::Put { value }
        } else {
            Command::Del
        };
        let index = recorder.invoke(plan.id, key, command.clone());
        let Some(outcome) = client.request(key, &command) else {
            // The process serving it died: the outcome is unknown.
            connection = None;
            continue;
        };
        let outcome = outcome.unwrap_or_else(|err| {
            panic!("client {}: {command:?} {key} -> {err}", plan.id);
        });
        recorder.complete(index, outcome);
        answers += 1;
    }
    answers
}

/// A connection to either port.
enum Connection {
    Json(Client),
    Resp(RespClient),
}

impl Connection {
    /// Connects, or `None` if nothing listens there now (a process being restarted).
    fn open(port: Port, target: SocketAddr) -> Option<Connection> {
        match port {
            Port::Json => Client::try_connect(target).map(Connection::Json),
            Port::Resp => RespClient::try_connect(target).map(Connection::Resp),
        }
    }

    /// Sends `command` on `key`: `None` if the connection broke before the answer, else
    /// what the answer means, or why the protocol does not allow it.
    fn request(&mut self, key: &str, command: &Command) -> Option<Result<Outcome, String>> {
        match self {
            Connection::Json(client) => {
                let line = match command {
                    Command::Get => get(key),
                    Command::Put { value } => put(key, value),
                    Command::Del => del(key),
                };
                let answer = client.try_request(&line)?;
                Some(outcome_of(command, &answer))
            }
            Connection::Resp(client) => {
                let reply = match command {
                    Command::Get => client.try_call(&["GET", key])?,
                    Command::Put { value } => client.try_call(&["SET", key, value])?,
                    Command::Del => client.try_call(&["DEL", key])?,
                };
                Some(resp_outcome_of(command, &reply))
            }
        }
    }
}

/// What a RESP reply means for the checker: errors carry the protocol's code first.
fn resp_outcome_of(command: &Command, reply: &Reply) -> Result<Outcome, String> {
    let unexpected = || Err(format!("a reply the protocol does not allow: {reply:?}"));
    match (reply, command) {
        (Reply::Bulk(Some(value)), Command::Get) => match String::from_utf8(value.clone()) {
            Ok(value) => Ok(Outcome::Found(value)),
            Err(_) => unexpected(),
        },
        (Reply::Bulk(None), Command::Get) => Ok(Outcome::NotFound),
        (Reply::Simple(ok), Command::Put { .. }) if ok == "OK" => Ok(Outcome::Done),
        (Reply::Integer(1), Command::Del) => Ok(Outcome::Done),
        (Reply::Integer(0), Command::Del) => Ok(Outcome::NotFound),
        (Reply::Error(text), _) => match text.split(' ').next().unwrap_or_default() {
            "UNAVAILABLE" | "ABORTED" | "OVERLOADED" => Ok(Outcome::Failed),
            _ => unexpected(),
        },
        _ => unexpected(),
    }
}

/// What an answer means for the checker.
fn outcome_of(command: &Command, answer: &Value) -> Result<Outcome, String> {
    let unexpected = || Err(format!("an answer the protocol does not allow: {answer}"));
    match (error_code(answer), command) {
        (None, Command::Get) => match answer["value"].as_str() {
            Some(value) => Ok(Outcome::Found(value.to_owned())),
            None => unexpected(),
        },
        (None, _) if answer["message"] == "Success" => Ok(Outcome::Done),
        (None, _) => unexpected(),
        (Some("not_found"), Command::Get | Command::Del) => Ok(Outcome::NotFound),
        // Each guarantees that nothing changed.
        (Some("unavailable" | "aborted" | "overloaded"), _) => Ok(Outcome::Failed),
        (Some(_), _) => unexpected(),
    }
}

/// The seed of a nemesis run: `default`, or `RINGKV_NEMESIS_SEED` to explore another
/// schedule of faults and client choices (the timing stays the machine's).
pub fn seed_or(default: u64) -> u64 {
    std::env::var("RINGKV_NEMESIS_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// How long the faults go on: 8 s, or `RINGKV_NEMESIS_SECS` for a longer exploration.
pub fn faults_for() -> Duration {
    let secs = std::env::var("RINGKV_NEMESIS_SECS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}
