//! Eventual mode's clients, after Jepsen's set test: each client reads a key at a random
//! consistency level through a random node, merges the siblings it got by union, adds a
//! unique element and writes the union back with the read's context; on odd keys it also
//! deletes (with the context), so that resurrection has something to show, and a quarter
//! of its writes there go blind (without the context), so that the blind-write rule and
//! dots after a lost disk are exercised where the set test does not hold. Every
//! operation is recorded with what it saw, for the checks of `check::eventual`.

use std::collections::BTreeSet;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use ringkv_core::proto::{
    Consistency, Envelope, EventualRequest, EventualResponse, NodeMessage, RequestId, WriteOp,
};
use ringkv_core::Ts;
use serde_json::Value;

use crate::lookalike;
use crate::network::{Channel, Endpoint, Message, NodeId};

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvCommand {
    /// Read the key.
    Read,
    /// Add `element` to the key's set: write `value`, the union of what read `read`
    /// showed plus the element, with that read's context.
    Add {
        /// The element added, unique in the run.
        element: String,
        /// The whole set written, elements joined by spaces.
        value: String,
        /// The read whose context the write carries.
        read: usize,
        /// Whether the write goes without the context (a blind write).
        blind: bool,
    },
    /// Delete the key with the context of read `read`.
    Delete {
        /// The read whose context the write carries.
        read: usize,
        /// Whether the delete goes without the context (a blind write).
        blind: bool,
    },
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvOutcome {
    /// A read found versions: each a value, or `None` for a deletion among siblings.
    Found {
        /// The versions' values.
        values: Vec<Option<String>>,
        /// The context a write after this read carries.
        context: String,
        /// The versions' CLOCK objects, in the order of `values`.
        clocks: Vec<Value>,
    },
    /// A read found nothing (or only deletions, then with their context).
    NotFound {
        /// The deletions' context, if any.
        context: Option<String>,
    },
    /// A write is held durably by W replicas.
    Written {
        /// The new version's CLOCK object (a stamp under last write wins).
        clock: Value,
        /// The context the answer gave, covering the new version.
        context: String,
    },
    /// An error answer (its code): `unavailable`, `overloaded`, ...
    Failed(String),
    /// `timeout`: tried, not confirmed in time; a write may exist somewhere.
    Timeout,
    /// No answer arrived.
    Unknown,
}

impl EvOutcome {
    /// Whether the operation succeeded.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            EvOutcome::Found { .. } | EvOutcome::NotFound { .. } | EvOutcome::Written { .. }
        )
    }
}

/// One operation of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvOp {
    /// Its index in the history.
    pub index: usize,
    /// Who invoked it.
    pub client: u32,
    /// The node that coordinated it.
    pub node: u64,
    /// The key.
    pub key: String,
    /// R or W as a level.
    pub level: Consistency,
    /// What it asked for.
    pub command: EvCommand,
    /// When it was invoked.
    pub invoke_ms: Ts,
    /// When its answer arrived, if it did.
    pub complete_ms: Option<Ts>,
    /// How it ended.
    pub outcome: EvOutcome,
}

/// Every operation of an eventual run, in order of invocation.
pub type EvHistory = Vec<EvOp>;

/// Whether clients add to a key's set only (even key numbers) or also delete it.
pub fn is_set_key(key: &str) -> bool {
    key.trim_start_matches('k')
        .parse::<u32>()
        .is_ok_and(|n| n % 2 == 0)
}

/// One client: at most one operation in flight.
#[derive(Debug, Default)]
struct EvClient {
    in_flight: Option<usize>,
    /// A read that succeeded, whose write comes next.
    read: Option<usize>,
    /// Elements added so far, to make each unique.
    elements: u64,
}

/// The clients of an eventual world and their history.
#[derive(Debug)]
pub struct EvWorkload {
    clients: Vec<EvClient>,
    keys: Vec<String>,
    nodes: Vec<u64>,
    /// A node that half the operations go through, at `one`, until a time.
    favored: Option<(u64, Ts)>,
    /// One added element in this many holds a log frame lookalike; `None`: none does.
    lookalike_one_in: Option<u32>,
    /// Elements added that hold a log frame lookalike.
    pub lookalike_values: u64,
    /// Every operation.
    pub history: EvHistory,
}

/// The levels clients draw from; `quorum` twice as often.
const LEVELS: [Consistency; 6] = [
    Consistency::One,
    Consistency::Two,
    Consistency::Three,
    Consistency::Quorum,
    Consistency::Quorum,
    Consistency::All,
];

impl EvWorkload {
    /// `clients` clients on `keys`, coordinating through any of `nodes`. Client number
    /// `clients` is the checker's own, which reads every key at `all` at the end. One
    /// added element in `lookalike_one_in` holds a log frame lookalike.
    pub fn new(
        clients: u32,
        keys: Vec<String>,
        nodes: Vec<u64>,
        lookalike_one_in: Option<u32>,
    ) -> Self {
        assert!(!nodes.is_empty(), "clients need a node to talk to");
        Self {
            clients: (0..=clients).map(|_| EvClient::default()).collect(),
            keys,
            nodes,
            favored: None,
            lookalike_one_in,
            lookalike_values: 0,
            history: Vec::new(),
        }
    }

    /// Sends half the operations through `node` at `one` until `until_ms`.
    pub fn favor(&mut self, node: u64, until_ms: Ts) {
        self.favored = Some((node, until_ms));
    }

    /// Starts `client`'s next operation: the write after a successful read, else a read
    /// of a random key.
    pub fn invoke(&mut self, rng: &mut ChaCha8Rng, now: Ts, client: u32) -> Option<Message> {
        let me = &mut self.clients[client as usize];
        if me.in_flight.is_some() {
            return None;
        }
        let mut level = LEVELS[rng.random_range(0..LEVELS.len())];
        let mut node = self.nodes[rng.random_range(0..self.nodes.len())];
        if let Some((favored, until_ms)) = self.favored {
            if now >= until_ms {
                self.favored = None;
            } else if rng.random_bool(0.5) {
                (node, level) = (favored, Consistency::One);
            }
        }
        let (key, command) = match me.read.take() {
            Some(read) => {
                let key = self.history[read].key.clone();
                let churn = !is_set_key(&key);
                let delete = churn && rng.random_bool(0.25);
                let blind = churn && rng.random_bool(0.25);
                let command = if delete {
                    EvCommand::Delete { read, blind }
                } else {
                    me.elements += 1;
                    let mut element = format!("c{client}e{}", me.elements);
                    // Only where deletes keep the set small: every later value of a
                    // set key carries each element written to it.
                    if churn && lookalike::chosen(rng, self.lookalike_one_in) {
                        element = lookalike::lookalike_text(&element);
                        self.lookalike_values += 1;
                    }
                    let value = set_after(&self.history[read].outcome, &element);
                    EvCommand::Add {
                        element,
                        value,
                        read,
                        blind,
                    }
                };
                (key, command)
            }
            None => {
                let key = self.keys[rng.random_range(0..self.keys.len())].clone();
                (key, EvCommand::Read)
            }
        };
        Some(self.issue(now, client, node, &key, level, command))
    }

    /// Sends `command` on `key` from `client` through `node` at `level`, now.
    pub fn issue(
        &mut self,
        now: Ts,
        client: u32,
        node: u64,
        key: &str,
        level: Consistency,
        command: EvCommand,
    ) -> Message {
        let context = |read: usize, blind: bool| match &self.history[read].outcome {
            _ if blind => None,
            EvOutcome::Found { context, .. } => Some(context.clone()),
            // A read that found nothing wrote with an empty context: it saw nothing, so
            // it supersedes nothing (a blind write could supersede unseen adds).
            EvOutcome::NotFound { context } => Some(context.clone().unwrap_or_default()),
            _ => None,
        };
        let key_owned = key.to_owned();
        let request = match &command {
            EvCommand::Read => EventualRequest::Get {
                key: key_owned,
                consistency: level,
            },
            EvCommand::Add {
                value, read, blind, ..
            } => EventualRequest::Write {
                key: key_owned,
                op: WriteOp::Put(value.clone()),
                consistency: level,
                context: context(*read, *blind),
            },
            EvCommand::Delete { read, blind } => EventualRequest::Write {
                key: key_owned,
                op: WriteOp::Del,
                consistency: level,
                context: context(*read, *blind),
            },
        };
        let index = self.history.len();
        self.history.push(EvOp {
            index,
            client,
            node,
            key: key.to_owned(),
            level,
            command,
            invoke_ms: now,
            complete_ms: None,
            outcome: EvOutcome::Unknown,
        });
        self.clients[client as usize].in_flight = Some(index);
        let id = Some(RequestId::Unsigned(index as u64));
        Message {
            from: Endpoint::at(NodeId::Client(client), 0),
            to: Endpoint::any(NodeId::Node(node)),
            channel: Channel::NodePort,
            line: Envelope::with_id(id, NodeMessage::Client(request)).encode(),
        }
    }

    /// An answer reached `client`: completes its operation. `Ok(true)` when the client
    /// goes on with its next operation; `Err` for an answer that makes no sense.
    pub fn answer(&mut self, now: Ts, client: u32, line: &[u8]) -> Result<bool, String> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let env = Envelope::<EventualResponse>::decode(line)
            .map_err(|e| format!("client answer undecodable: {e}"))?;
        let Some(RequestId::Unsigned(index)) = env.id else {
            return Err(format!("client {client} got an answer without its id"));
        };
        let index = index as usize;
        let me = &mut self.clients[client as usize];
        let Some(op) = self.history.get_mut(index) else {
            return Err(format!("client {client} got an answer to unknown {index}"));
        };
        if op.client != client {
            return Err(format!(
                "client {client} got the answer of operation {index}"
            ));
        }
        if op.complete_ms.is_some() {
            return Err(format!("operation {index} answered twice"));
        }
        op.outcome = outcome(&op.command, env.msg)?;
        op.complete_ms = Some(now);
        let is_read = op.command == EvCommand::Read;
        if me.in_flight != Some(index) {
            // Given up on already: the answer still tells what happened.
            return Ok(false);
        }
        me.in_flight = None;
        me.read = (is_read && op.outcome.is_success()).then_some(index);
        Ok(true)
    }

    /// `client` stops waiting for `op` (its outcome stays unknown unless an answer still
    /// comes); whether the client goes on.
    pub fn give_up(&mut self, client: u32, op: usize) -> bool {
        let me = &mut self.clients[client as usize];
        if me.in_flight != Some(op) {
            return false;
        }
        me.in_flight = None;
        true
    }
}

/// The elements of a set value.
pub fn elements(value: &str) -> impl Iterator<Item = &str> {
    value.split(' ').filter(|e| !e.is_empty())
}

/// The union of every value a read showed, plus `element`, as a value.
fn set_after(read: &EvOutcome, element: &str) -> String {
    let mut set: BTreeSet<&str> = BTreeSet::from([element]);
    if let EvOutcome::Found { values, .. } = read {
        for value in values.iter().flatten() {
            set.extend(elements(value));
        }
    }
    set.into_iter().collect::<Vec<_>>().join(" ")
}

/// The values of a read answer's VERSION objects (`None` for a deletion).
pub fn version_values(versions: &[Value]) -> Result<Vec<Option<String>>, String> {
    versions
        .iter()
        .map(|v| match (v.get("value"), v.get("deleted")) {
            (Some(Value::String(value)), None) => Ok(Some(value.clone())),
            (None, Some(Value::Bool(true))) => Ok(None),
            _ => Err(format!("a version without a value or deletion: {v}")),
        })
        .collect()
}

/// What an answer means for the history.
fn outcome(command: &EvCommand, answer: EventualResponse) -> Result<EvOutcome, String> {
    Ok(match (command, answer) {
        (
            EvCommand::Read,
            EventualResponse::Read {
                versions, context, ..
            },
        ) => EvOutcome::Found {
            values: version_values(&versions)?,
            context,
            clocks: versions
                .iter()
                .map(|v| v.get("clock").cloned().unwrap_or(Value::Null))
                .collect(),
        },
        (EvCommand::Read, EventualResponse::NotFound { context }) => {
            EvOutcome::NotFound { context }
        }
        (
            EvCommand::Add { .. } | EvCommand::Delete { .. },
            EventualResponse::Written { clock, context },
        ) => EvOutcome::Written { clock, context },
        (_, EventualResponse::Timeout) => EvOutcome::Timeout,
        (_, EventualResponse::Error(reply)) => EvOutcome::Failed(reply.code.as_str().to_owned()),
        (command, other) => return Err(format!("answer {other:?} does not fit {command:?}")),
    })
}
