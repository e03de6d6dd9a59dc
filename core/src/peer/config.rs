//! A peer node's settings and limits, each with the answer given when it is reached.

use crate::buggify::BuggifyConfig;
use crate::cache::{CacheConfig, SetAssociativeCache};
use crate::proto::peer::MAX_PEER_PARTICIPANTS;
use crate::time::Backoff;
use crate::twopc::DriverConfig;
use crate::Ts;

use super::txid::EPOCH_MAX;

/// A peer node's settings. Every node of a cluster is given the same `nodes`,
/// `replication` and `timeout_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// This node's ID; it must be one of `nodes`.
    pub id: u64,
    /// Every node of the cluster file: its ID and address (1 to 64 nodes, no ID twice).
    pub nodes: Vec<(u64, String)>,
    /// How many nodes hold each key (its preference list); `None`: every node.
    pub replication: Option<usize>,
    /// How long phase 1 may take; how long an update may keep retrying after collisions;
    /// how long a GET waits for a prepared key's decision.
    pub timeout_ms: Ts,
    /// How a transaction's unanswered messages are resent.
    pub resend: Backoff,
    /// How long an update waits before trying again after a collision: a seeded random
    /// time up to this backoff's wait, which grows with every attempt.
    pub retry: Backoff,
    /// How often a participant in doubt asks for the decision again.
    pub query: Backoff,
    /// How often every other node is pinged (`statusreq` reports it up).
    pub heartbeat_interval_ms: Ts,
    /// A node silent this long is reported down.
    pub down_after_ms: Ts,
    /// The lowest epoch to start in (epochs are 24 bits: below 2^24 - 1). A node with a
    /// log passes 0: the log's epochs keep its transaction IDs unique across restarts. A
    /// node without one has no such guarantee; it may pass a number that grows between
    /// its runs and fits, such as minutes since a recent date.
    pub epoch_floor: u32,
    /// Client updates under way at once; beyond this `overloaded`.
    pub max_updates: usize,
    /// GETs waiting at once (for a decision or another replica); beyond this
    /// `overloaded`, or no answer to another node's read (it asks elsewhere).
    pub max_reads: usize,
    /// Transactions prepared here at once; a prepare beyond votes `overloaded`.
    pub max_prepared: usize,
    /// Decisions remembered, so a late prepare of a decided transaction is refused.
    pub decided_memory: usize,
    /// Participant answers waiting for durability at once; beyond, the message is
    /// dropped and its sender resends.
    pub max_waiting: usize,
    /// The store's cache.
    pub cache: CacheConfig,
    /// The seed of the node's randomness (resend and retry jitter).
    pub seed: u64,
    /// Fault sites, turned on only by the simulator.
    pub buggify: Option<BuggifyConfig>,
}

/// A setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl PeerConfig {
    /// The defaults for node `id` of the cluster `nodes`.
    pub fn new(id: u64, nodes: Vec<(u64, String)>) -> Self {
        Self {
            id,
            nodes,
            replication: None,
            timeout_ms: 3000,
            resend: Backoff {
                wait_ms_min: 100,
                wait_ms_max: 1000,
            },
            retry: Backoff {
                wait_ms_min: 10,
                wait_ms_max: 1000,
            },
            query: Backoff {
                wait_ms_min: 100,
                wait_ms_max: 2000,
            },
            heartbeat_interval_ms: 1000,
            down_after_ms: 5000,
            epoch_floor: 0,
            max_updates: 4096,
            max_reads: 4096,
            max_prepared: 1024,
            decided_memory: 65_536,
            max_waiting: 8192,
            cache: CacheConfig::SERVER_DEFAULT,
            seed: 0,
            buggify: None,
        }
    }

    /// Checks the settings, naming the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |why: &str| Err(ConfigError(why.to_owned()));
        let mut ids: Vec<u64> = self.nodes.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.nodes.len() || ids.is_empty() || ids.len() > MAX_PEER_PARTICIPANTS {
            return fail("the cluster needs 1 to 64 nodes, no ID twice");
        }
        if !ids.contains(&self.id) {
            return fail("this node's ID is not in the cluster");
        }
        if self.replication.is_some_and(|n| n == 0 || n > ids.len()) {
            return fail("replication must be 1 to the number of nodes");
        }
        if self.timeout_ms == 0 || self.heartbeat_interval_ms == 0 {
            return fail("timeouts must be at least 1 ms");
        }
        if self.down_after_ms <= self.heartbeat_interval_ms {
            return fail("the down time must be longer than the heartbeat interval");
        }
        if !(self.resend.is_valid() && self.retry.is_valid() && self.query.is_valid()) {
            return fail("waits must be at least 1 ms, the longest no shorter than the first");
        }
        let limits = [self.max_updates, self.max_reads, self.max_prepared];
        if limits.contains(&0) || self.decided_memory == 0 || self.max_waiting == 0 {
            return fail("limits must be at least 1");
        }
        if self.epoch_floor >= EPOCH_MAX {
            return fail("the epoch floor leaves no epoch");
        }
        SetAssociativeCache::<String>::new(self.cache)
            .map(|_| ())
            .map_err(|err| ConfigError(format!("cache: {err}")))
    }

    /// The driver of the updates this node coordinates: commits are forced (presumed
    /// abort), the first refusal rolls back at once, and an update's old attempt may
    /// still be rolling back beside its new one.
    pub(super) fn driver(&self) -> DriverConfig {
        DriverConfig {
            phase1_timeout_ms: self.timeout_ms,
            resend: self.resend,
            max_transactions: 2 * self.max_updates,
            max_stray_aborts: self.max_updates,
            seed: self.seed,
            force_commit: true,
            decide_on_refusal: true,
        }
    }
}
