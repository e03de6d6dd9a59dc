//! What the simulated clients did and saw: the input of every checker.
//!
//! A client records an operation when it invokes it and completes it when an answer
//! arrives. An operation that never got an answer stays open and is closed as
//! [`Outcome::Unknown`]: it may or may not have taken effect.

use std::collections::{BTreeMap, BTreeSet};

use ringkv_core::Ts;

/// A simulated client's number.
pub type ClientId = u32;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Read the key.
    Get,
    /// Write `value` to the key. The workload makes every written value unique.
    Put {
        /// The value written.
        value: String,
    },
    /// Delete the key.
    Del,
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A GET answered with this value.
    Found(String),
    /// A GET or DEL answered `not_found`: the key was absent; nothing changed.
    NotFound,
    /// A PUT or DEL answered `Success`.
    Done,
    /// An error answer that guarantees nothing changed (`unavailable`, `aborted`,
    /// `overloaded`, ...).
    Failed,
    /// No answer arrived: an update may or may not have taken effect.
    Unknown,
}

/// One operation of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Its index in [`History::operations`].
    pub index: usize,
    /// Who invoked it.
    pub client: ClientId,
    /// The key it touched.
    pub key: String,
    /// What it asked for.
    pub command: Command,
    /// When it was invoked.
    pub invoke_ms: Ts,
    /// When its answer arrived; `None` while open and for [`Outcome::Unknown`].
    pub complete_ms: Option<Ts>,
    /// How it ended; `Unknown` while open.
    pub outcome: Outcome,
}

/// Every operation of a run, in order of invocation.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<Operation>,
    /// Operations answered `aborted`: updates that met other updates of their key until
    /// their timeout was spent (legal under contention in peer mode).
    aborted: BTreeSet<usize>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an invocation and returns the operation's index.
    pub fn invoke(&mut self, client: ClientId, key: &str, command: Command, now: Ts) -> usize {
        let index = self.operations.len();
        self.operations.push(Operation {
            index,
            client,
            key: key.to_owned(),
            command,
            invoke_ms: now,
            complete_ms: None,
            outcome: Outcome::Unknown,
        });
        index
    }

    /// Records the answer of an open operation.
    ///
    /// # Panics
    /// If the operation does not exist or was already completed: a bug in the workload.
    pub fn complete(&mut self, index: usize, outcome: Outcome, now: Ts) {
        let op = &mut self.operations[index];
        assert!(
            op.complete_ms.is_none(),
            "operation {index} completed twice"
        );
        assert!(
            now >= op.invoke_ms,
            "operation {index} completed before it was invoked"
        );
        assert!(outcome != Outcome::Unknown, "an answer cannot be Unknown");
        op.complete_ms = Some(now);
        op.outcome = outcome;
    }

    /// Records that the operation at `index` was answered `aborted`.
    pub fn mark_aborted(&mut self, index: usize) {
        self.aborted.insert(index);
    }

    /// Whether the operation at `index` was answered `aborted`.
    pub fn was_aborted(&self, index: usize) -> bool {
        self.aborted.contains(&index)
    }

    /// Every operation, in order of invocation.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Whether the operation at `index` is still waiting for an answer.
    pub fn is_open(&self, index: usize) -> bool {
        self.operations[index].complete_ms.is_none()
    }
}

/// One client operation as the node serving it saw it: when its request was handed to the
/// role's core (after the connection's earlier requests it must follow), and when and how
/// the core answered it. Times are stamps: milliseconds times 1000 plus the order within
/// the millisecond, so that a request released by an answer comes strictly after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// When the core got the request.
    pub dispatched: Ts,
    /// When the core answered it, and what the answer means; `None` if it never did.
    pub answered: Option<(Ts, Outcome)>,
}

/// What the serving side saw of each operation, by its index in the history; operations
/// whose request never reached a core are absent.
pub type ServedLog = BTreeMap<usize, Served>;

/// The stamp of the end of time `ms`: after everything stamped within it.
pub fn stamp_after(ms: Ts) -> Ts {
    ms * 1000 + 999
}
