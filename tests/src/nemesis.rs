//! Clients whose every request is recorded, for the simulator's linearizability checker
//! to judge a run against real processes: each client sends one request at a time on a
//! few keys, and records when it sent it, when the answer came (times in microseconds
//! since the run began) and what it said. A request whose connection broke first (the
//! process serving it was killed) stays open: it may or may not have taken effect, and
//! the client carries on through another connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringkv_core::rng::DetRng;
use ringkv_sim::history::{Command, History, Outcome};
use serde_json::Value;

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
    let mut connection: Option<Client> = None;
    let mut answers = 0;
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let pause = rng.between(plan.pause_ms.0, plan.pause_ms.1);
        std::thread::sleep(Duration::from_millis(pause));
        let Some(client) = connected(&mut connection, &plan.targets, &mut rng) else {
            continue;
        };
        let key = &plan.keys[rng.between(0, plan.keys.len() as u64 - 1) as usize];
        let roll = rng.between(0, 99);
        let (command, line) = if roll < 50 {
            (Command::Get, get(key))
        } else if roll < 90 {
            written += 1;
            let value = format!("c{}w{written}", plan.id);
            (
                Command::Put {
                    value: value.clone(),
                },
                put(key, &value),
            )
        } else {
            (Command::Del, del(key))
        };
        let index = recorder.invoke(plan.id, key, command.clone());
        let Some(answer) = client.try_request(&line) else {
            // The process serving it died: the outcome is unknown.
            connection = None;
            continue;
        };
        let outcome = outcome_of(&command, &answer)
            .unwrap_or_else(|err| panic!("client {}: {line} -> {err}", plan.id));
        recorder.complete(index, outcome);
        answers += 1;
    }
    answers
}

/// The open connection, or a new one to a target drawn at random; `None` if nothing
/// listens there now (a process being restarted).
fn connected<'a>(
    connection: &'a mut Option<Client>,
    targets: &[SocketAddr],
    rng: &mut DetRng,
) -> Option<&'a mut Client> {
    if connection.is_none() {
        let target = targets[rng.between(0, targets.len() as u64 - 1) as usize];
        *connection = Client::try_connect(target);
    }
    connection.as_mut()
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
