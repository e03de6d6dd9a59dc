//! What happened in a run: hashed always (two runs of a seed must hash the same), printed
//! as readable lines when a seed is replayed.

use std::io::Write;

use ringkv_core::Ts;
use xxhash_rust::xxh3::Xxh3;

use crate::network::NodeId;

/// The trace of one run.
pub struct Trace {
    hasher: Xxh3,
    out: Option<Box<dyn Write>>,
}

impl Trace {
    /// A trace that is only hashed.
    pub fn hashed() -> Self {
        Self {
            hasher: Xxh3::new(),
            out: None,
        }
    }

    /// A trace that is hashed and written, a line per event, to `out`.
    pub fn printed(out: Box<dyn Write>) -> Self {
        Self {
            hasher: Xxh3::new(),
            out: Some(out),
        }
    }

    /// The hash of everything traced so far.
    pub fn hash(&self) -> u64 {
        self.hasher.digest()
    }

    fn record(&mut self, now: Ts, tag: &[u8], parts: &[&[u8]], text: impl FnOnce() -> String) {
        self.hasher.update(&now.to_le_bytes());
        self.hasher.update(tag);
        for part in parts {
            self.hasher.update(&(part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
        if let Some(out) = self.out.as_mut() {
            // A trace that cannot be printed is not worth stopping the run for.
            let _ = writeln!(out, "{now:>9} ms  {}", text());
        }
    }

    /// A message arrived.
    pub fn deliver(&mut self, now: Ts, from: NodeId, to: NodeId, line: &[u8]) {
        let ends = node_bytes(from, to);
        self.record(now, b"deliver", &[&ends, line], || {
            format!(
                "{} -> {}: {}",
                name(from),
                name(to),
                String::from_utf8_lossy(line).trim_end()
            )
        });
    }

    /// A message was lost.
    pub fn lost(&mut self, now: Ts, from: NodeId, to: NodeId, line: &[u8]) {
        let ends = node_bytes(from, to);
        self.record(now, b"lost", &[&ends, line], || {
            format!(
                "{} -> {}: LOST {}",
                name(from),
                name(to),
                String::from_utf8_lossy(line).trim_end()
            )
        });
    }

    /// Something happened to the world (a crash, a partition, ...).
    pub fn note(&mut self, now: Ts, text: &str) {
        self.record(now, b"note", &[text.as_bytes()], || format!("** {text}"));
    }
}

fn node_bytes(from: NodeId, to: NodeId) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(26);
    for node in [from, to] {
        let (tag, n): (u8, u64) = match node {
            NodeId::Coordinator => (0, 0),
            NodeId::Node(id) => (1, id),
            NodeId::Client(c) => (2, u64::from(c)),
        };
        bytes.push(tag);
        bytes.extend_from_slice(&n.to_le_bytes());
    }
    bytes
}

/// How the trace names a node.
pub(crate) fn name(node: NodeId) -> String {
    match node {
        NodeId::Coordinator => "coordinator".into(),
        NodeId::Node(id) => format!("node {id}"),
        NodeId::Client(c) => format!("client {c}"),
    }
}
