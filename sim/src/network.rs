//! The simulated network: who can talk to whom, and how late, lost or doubled a message
//! arrives. Only the coordinator-to-server links suffer loss, duplication, partitions and
//! clogs; client links can lose messages (the client then sees a time-out) and delay them.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use ringkv_core::Ts;

use crate::config::NetFaults;

/// A node of the simulated cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    /// The coordinator.
    Coordinator,
    /// A KV server, by ring ID.
    Server(u64),
    /// A client, by number.
    Client(u32),
}

/// The network's fault state.
#[derive(Debug)]
pub struct Network {
    faults: NetFaults,
    /// Servers cut off from the coordinator, until when.
    partitioned: BTreeMap<u64, Ts>,
    /// Links whose messages are held back, until when (both directions).
    clogged: BTreeMap<u64, Ts>,
}

impl Network {
    /// A network with these faults.
    pub fn new(faults: NetFaults) -> Self {
        Self {
            faults,
            partitioned: BTreeMap::new(),
            clogged: BTreeMap::new(),
        }
    }

    /// The faults stop: no more loss, duplication, partitions or clogs, and short delays.
    pub fn heal(&mut self) {
        self.faults.loss = 0.0;
        self.faults.duplication = 0.0;
        self.faults.client_loss = 0.0;
        self.faults.max_delay_ms = self.faults.min_delay_ms + 5;
        self.faults.partition_every_ms = 0;
        self.faults.clog_every_ms = 0;
        self.partitioned.clear();
        self.clogged.clear();
    }

    /// Cuts a server off from the coordinator until `until`.
    pub fn partition(&mut self, server: u64, until: Ts) {
        self.partitioned.insert(server, until);
    }

    /// Holds back the messages between the coordinator and a server until `until`.
    pub fn clog(&mut self, server: u64, until: Ts) {
        self.clogged.insert(server, until);
    }

    /// The faults in force.
    pub fn faults(&self) -> &NetFaults {
        &self.faults
    }

    /// When each copy of a message sent now from `from` to `to` arrives: none if lost,
    /// two if duplicated.
    pub fn arrivals(&mut self, rng: &mut ChaCha8Rng, now: Ts, from: NodeId, to: NodeId) -> Vec<Ts> {
        let server = match (from, to) {
            (NodeId::Server(s), _) | (_, NodeId::Server(s)) => Some(s),
            _ => None,
        };
        let (loss, duplication) = match server {
            Some(_) => (self.faults.loss, self.faults.duplication),
            None => (self.faults.client_loss, 0.0),
        };
        if let Some(s) = server {
            if self.partitioned.get(&s).is_some_and(|&until| now < until) {
                return Vec::new();
            }
        }
        if loss > 0.0 && rng.random_bool(loss) {
            return Vec::new();
        }
        let copies = if duplication > 0.0 && rng.random_bool(duplication) {
            2
        } else {
            1
        };
        let held_until = server
            .and_then(|s| self.clogged.get(&s).copied())
            .filter(|&until| now < until);
        (0..copies)
            .map(|_| {
                let delay = rng.random_range(self.faults.min_delay_ms..=self.faults.max_delay_ms);
                let at = now + delay;
                held_until.map_or(at, |until| at.max(until))
            })
            .collect()
    }

    /// Servers partitioned right now (for the trace).
    pub fn partitioned_now(&self, now: Ts) -> BTreeSet<u64> {
        self.partitioned
            .iter()
            .filter(|(_, &until)| now < until)
            .map(|(&s, _)| s)
            .collect()
    }
}
