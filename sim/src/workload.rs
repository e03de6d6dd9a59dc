//! The clients: each keeps up to `pipeline` requests in flight on its one connection,
//! picks keys from a small set so that operations collide, and records every operation in
//! the history: invoked when sent, completed when its answer arrives, left open (unknown)
//! when it gives up waiting.

use std::collections::BTreeSet;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use ringkv_core::proto::{
    ClientRequest, ClientResponse, Envelope, ErrorCode, RequestId, WireMessage,
};
use ringkv_core::Ts;

use crate::cluster::ServedStep;
use crate::history::{Command, History, Outcome, Served, ServedLog};
use crate::lookalike;
use crate::network::{Channel, Endpoint, Message, NodeId};

/// One client and its connection.
#[derive(Debug, Default)]
struct Client {
    /// Operations sent and not yet answered or given up, by history index.
    in_flight: BTreeSet<usize>,
    /// Writes so far, to make every written value unique.
    writes: u64,
}

/// Every client, and the history they record.
#[derive(Debug)]
pub struct Workload {
    clients: Vec<Client>,
    keys: Vec<String>,
    /// The nodes clients connect to: client `c` to entry `c` modulo their number.
    entries: Vec<NodeId>,
    /// One write in this many holds a log frame lookalike; `None`: none does.
    lookalike_one_in: Option<u32>,
    /// Values written that hold a log frame lookalike.
    pub lookalike_values: u64,
    /// The history of every operation.
    pub history: History,
    /// What the serving side saw of each operation.
    pub served: ServedLog,
}

/// What a client does after an answer or a give-up: start its next operation after
/// `think_ms`.
pub struct Next {
    /// The client.
    pub client: u32,
    /// Its pause before the next operation.
    pub think_ms: Ts,
}

impl Workload {
    /// `clients` clients using `keys`, spread over the nodes of `entries`; one write in
    /// `lookalike_one_in` holds a log frame lookalike.
    ///
    /// # Panics
    /// If `entries` is empty: clients need a node to talk to.
    pub fn new(
        clients: u32,
        keys: Vec<String>,
        entries: Vec<NodeId>,
        lookalike_one_in: Option<u32>,
    ) -> Self {
        assert!(!entries.is_empty(), "clients need a node to talk to");
        Self {
            clients: (0..clients).map(|_| Client::default()).collect(),
            keys,
            entries,
            lookalike_one_in,
            lookalike_values: 0,
            history: History::new(),
            served: ServedLog::new(),
        }
    }

    /// Starts a random operation of `client`: records it and returns its request and its
    /// index. A client runs as many of these chains as its pipeline is deep, so it never
    /// has more in flight.
    pub fn invoke(&mut self, rng: &mut ChaCha8Rng, now: Ts, client: u32) -> (Message, usize) {
        let key = self.keys[rng.random_range(0..self.keys.len())].clone();
        let roll = rng.random_range(0..100);
        let command = if roll < 50 {
            Command::Get
        } else if roll < 85 {
            let me = &mut self.clients[client as usize];
            me.writes += 1;
            let mut value = format!("c{client}w{}", me.writes);
            if lookalike::chosen(rng, self.lookalike_one_in) {
                value = lookalike::lookalike_text(&value);
                self.lookalike_values += 1;
            }
            Command::Put { value }
        } else {
            Command::Del
        };
        self.issue(now, client, &key, command)
    }

    /// Starts the operation `command` on `key` for `client`, on its one connection.
    /// Written values must be unique across the run (the checks trace values to writes).
    pub fn issue(&mut self, now: Ts, client: u32, key: &str, command: Command) -> (Message, usize) {
        let request = match &command {
            Command::Get => ClientRequest::Get {
                key: key.to_owned(),
            },
            Command::Put { value } => ClientRequest::Put {
                key: key.to_owned(),
                value: value.clone(),
            },
            Command::Del => ClientRequest::Del {
                key: key.to_owned(),
            },
        };
        let op = self.history.invoke(client, key, command, now);
        self.clients[client as usize].in_flight.insert(op);
        let line = Envelope::with_id(Some(RequestId::Unsigned(op as u64)), request).encode();
        let msg = Message {
            from: Endpoint::at(NodeId::Client(client), 0),
            to: Endpoint::any(self.entries[client as usize % self.entries.len()]),
            channel: Channel::ClientRequest,
            line,
        };
        (msg, op)
    }

    /// An answer reached `client`: completes its operation. `Ok(None)` for the answer of
    /// an operation the client gave up on; `Err` for an answer that makes no sense.
    pub fn answer(
        &mut self,
        rng: &mut ChaCha8Rng,
        now: Ts,
        client: u32,
        line: &[u8],
    ) -> Result<Option<Next>, String> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let env =
            ClientResponse::decode(line).map_err(|e| format!("client answer undecodable: {e}"))?;
        let Some(RequestId::Unsigned(op)) = env.id else {
            return Err(format!("client {client} got an answer without its id"));
        };
        let op = op as usize;
        if !self.clients[client as usize].in_flight.contains(&op) {
            return Ok(None);
        }
        let aborted = matches!(&env.msg, ClientResponse::Error(e) if e.code == ErrorCode::Aborted);
        let outcome = outcome(&self.history.operations()[op].command, env.msg)?;
        self.history.complete(op, outcome, now);
        if aborted {
            self.history.mark_aborted(op);
        }
        self.clients[client as usize].in_flight.remove(&op);
        Ok(Some(Next {
            client,
            think_ms: rng.random_range(0..20),
        }))
    }

    /// `client` waited too long for `op`: leaves it open (its effect unknown) and returns
    /// what to do next, or `None` if it was answered meanwhile.
    pub fn give_up(&mut self, client: u32, op: usize) -> Option<Next> {
        if !self.clients[client as usize].in_flight.remove(&op) {
            return None;
        }
        Some(Next {
            client,
            think_ms: 0,
        })
    }
}

impl Workload {
    /// Records a step of a request at the node serving it, at `stamp`.
    pub fn served(&mut self, stamp: Ts, step: ServedStep) -> Result<(), String> {
        let (id, answer) = match step {
            ServedStep::Dispatched(id) => (id, None),
            ServedStep::Answered(id, answer) => (id, Some(answer)),
        };
        let op = match id {
            Some(RequestId::Unsigned(op)) if (op as usize) < self.history.operations().len() => {
                op as usize
            }
            other => return Err(format!("a served request carries an unknown id {other:?}")),
        };
        match answer {
            None => {
                let served = Served {
                    dispatched: stamp,
                    answered: None,
                };
                if self.served.insert(op, served).is_some() {
                    return Err(format!("operation {op} was handed to a core twice"));
                }
            }
            Some(answer) => {
                let outcome = outcome(&self.history.operations()[op].command, answer)?;
                let Some(served) = self.served.get_mut(&op).filter(|s| s.answered.is_none()) else {
                    return Err(format!("operation {op} answered without being served"));
                };
                served.answered = Some((stamp, outcome));
            }
        }
        Ok(())
    }
}

/// What an answer means for the history.
fn outcome(command: &Command, answer: ClientResponse) -> Result<Outcome, String> {
    Ok(match (command, answer) {
        (Command::Get, ClientResponse::Value { value, .. }) => Outcome::Found(value),
        (Command::Get | Command::Del, ClientResponse::Error(reply))
            if reply.code == ErrorCode::NotFound =>
        {
            Outcome::NotFound
        }
        (Command::Put { .. } | Command::Del, ClientResponse::Success) => Outcome::Done,
        (_, ClientResponse::Error(_)) => Outcome::Failed,
        (command, other) => return Err(format!("answer {other:?} does not fit {command:?}")),
    })
}
