//! An eventual-mode node's settings, and the cluster file of PROTOCOL.md section 2 read
//! as a pure function of its text, so that the shells, the command line and the
//! simulator all accept and refuse the same files.

use std::collections::BTreeMap;
use std::fmt;

use crate::buggify::BuggifyConfig;
use crate::cache::CacheConfig;
use crate::versions::DEFAULT_MAX_SIBLINGS;

/// A node's ID from the cluster file.
pub type NodeId = u64;

/// The static membership: every node's ID and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Address of each node, by ascending ID (ring order).
    pub nodes: BTreeMap<NodeId, String>,
}

/// Why a cluster file was refused; `line` is 1-based, 0 for the file as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterError {
    /// The offending line, or 0.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "cluster file: {}", self.message)
        } else {
            write!(f, "cluster file line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for ClusterError {}

/// Whether `addr` looks like `host:port` (a non-empty host without spaces, a port in
/// 0..=65535).
pub fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.chars().any(char::is_whitespace)
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// Reads a cluster file: one `ID HOST:PORT` a line, blank lines and `#` comments (whole
/// lines, or after the address) ignored. Refuses a malformed line, a repeated ID or
/// address, an empty file, and a file without `own_id`, naming the line.
pub fn parse_cluster(text: &str, own_id: NodeId) -> Result<Cluster, ClusterError> {
    let mut nodes: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut lines_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut line_of_id: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let error = |message: String| ClusterError { line, message };
        let mut words = content.split_whitespace();
        let (Some(id_text), Some(addr), None) = (words.next(), words.next(), words.next()) else {
            return Err(error(format!("expected `ID HOST:PORT`, got `{content}`")));
        };
        let id: NodeId = id_text
            .parse()
            .map_err(|_| error(format!("`{id_text}` is not an unsigned 64-bit ID")))?;
        if !is_host_port(addr) {
            return Err(error(format!("`{addr}` is not HOST:PORT")));
        }
        if let Some(first) = line_of_id.insert(id, line) {
            return Err(error(format!("ID {id} repeats line {first}")));
        }
        if let Some(first) = lines_of.insert(addr.to_owned(), line) {
            return Err(error(format!("address {addr} repeats line {first}")));
        }
        nodes.insert(id, addr.to_owned());
    }
    if nodes.is_empty() {
        return Err(ClusterError {
            line: 0,
            message: "no nodes".to_owned(),
        });
    }
    if !nodes.contains_key(&own_id) {
        return Err(ClusterError {
            line: 0,
            message: format!("this node's ID {own_id} is not in the file"),
        });
    }
    Ok(Cluster { nodes })
}

/// How concurrent writes are kept (`--conflicts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflicts {
    /// Dotted version vectors: concurrent writes become siblings (the default).
    Siblings,
    /// Last write wins by the coordinator's stamp; concurrent writes lose all but one.
    Lww,
}

impl Conflicts {
    /// As `statusreq` and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Conflicts::Siblings => "siblings",
            Conflicts::Lww => "lww",
        }
    }

    /// Reads `--conflicts`.
    pub fn parse(text: &str) -> Option<Conflicts> {
        [Conflicts::Siblings, Conflicts::Lww]
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

/// Which repair mechanisms run (`--repair`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Read repair only.
    Read,
    /// Hinted handoff only.
    Hints,
    /// Both (the default).
    Both,
    /// Neither.
    None,
}

impl Repair {
    /// As `statusreq` and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Repair::Read => "read",
            Repair::Hints => "hints",
            Repair::Both => "both",
            Repair::None => "none",
        }
    }

    /// Reads `--repair`.
    pub fn parse(text: &str) -> Option<Repair> {
        [Repair::Read, Repair::Hints, Repair::Both, Repair::None]
            .into_iter()
            .find(|r| r.as_str() == text)
    }

    /// Whether reads repair the replicas they saw disagree.
    pub fn reads(self) -> bool {
        matches!(self, Repair::Read | Repair::Both)
    }

    /// Whether writes that miss a replica leave a hint for it.
    pub fn hints(self) -> bool {
        matches!(self, Repair::Hints | Repair::Both)
    }
}

/// Bounds on the hints a node holds, per target node; a hint beyond one is dropped and
/// counted (its state then spreads by read repair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintBounds {
    /// Hints held for one target.
    pub max_count: usize,
    /// Bytes of key states held for one target.
    pub max_bytes: usize,
    /// Age after which a hint is dropped (default 3 h).
    pub max_age_ms: u64,
    /// Hints sent to one target per replay round, so a node that comes back is not
    /// flooded.
    pub replay_batch: usize,
    /// The wait between replay rounds of one target.
    pub replay_interval_ms: u64,
}

impl Default for HintBounds {
    fn default() -> Self {
        Self {
            max_count: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_age_ms: 3 * 60 * 60 * 1000,
            replay_batch: 32,
            replay_interval_ms: 200,
        }
    }
}

/// Everything an eventual-mode node is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's ID; must be in `cluster`.
    pub id: NodeId,
    /// The static membership.
    pub cluster: Cluster,
    /// N, from 1 to the number of nodes.
    pub replication: usize,
    /// How long a request waits for its replicas (default 3000 ms).
    pub timeout_ms: u64,
    /// Siblings or last write wins.
    pub conflicts: Conflicts,
    /// Which repairs run.
    pub repair: Repair,
    /// The most versions a client write may leave on a key (default 64).
    pub max_siblings: usize,
    /// Which life of the data directory this is: chosen by the shell from OS randomness
    /// when the directory was empty, read back from it otherwise. Part of every dot this
    /// node hands out, so a node that lost its disk never reuses one.
    pub incarnation: u64,
    /// Bounds on hints.
    pub hints: HintBounds,
    /// Requests this node coordinates at once (reads and writes each); beyond it a new
    /// one is answered `overloaded`.
    pub max_pending: usize,
    /// Answers that may wait for durability at once; beyond it a request is refused
    /// `overloaded`.
    pub max_waiting: usize,
    /// The cache of decoded key states in front of the log.
    pub cache: CacheConfig,
    /// The node's own random stream: where its request numbers start. It must differ
    /// from one start of the node to the next (the shells draw it from the OS, the
    /// simulator from its run's stream), so that answers still in flight to an earlier
    /// life are not matched with this one's requests.
    pub seed: u64,
    /// Fault sites, turned on only by the simulator.
    pub buggify: Option<BuggifyConfig>,
}

impl NodeConfig {
    /// The defaults of PROTOCOL.md section 2 for node `id` of `cluster`: N = 3 capped at
    /// the number of nodes, 3000 ms, siblings, both repairs, 64 siblings.
    pub fn new(id: NodeId, cluster: Cluster, incarnation: u64, seed: u64) -> Self {
        let replication = cluster.nodes.len().clamp(1, 3);
        Self {
            id,
            cluster,
            replication,
            timeout_ms: 3000,
            conflicts: Conflicts::Siblings,
            repair: Repair::Both,
            max_siblings: DEFAULT_MAX_SIBLINGS,
            incarnation,
            hints: HintBounds::default(),
            max_pending: 4096,
            max_waiting: 8192,
            cache: CacheConfig::SERVER_DEFAULT,
            seed,
            buggify: None,
        }
    }

    /// Why the settings cannot work, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        let nodes = self.cluster.nodes.len();
        if !self.cluster.nodes.contains_key(&self.id) {
            return Err(format!("node {} is not in the cluster", self.id));
        }
        if !(1..=nodes).contains(&self.replication) {
            return Err(format!("replication must be 1 to {nodes}"));
        }
        if self.timeout_ms == 0 || self.max_siblings == 0 {
            return Err("timeout_ms and max_siblings must be at least 1".to_owned());
        }
        let h = &self.hints;
        if h.max_count == 0 || h.replay_batch == 0 || h.replay_interval_ms == 0 {
            return Err("hint count, replay batch and interval must be at least 1".to_owned());
        }
        if self.max_pending == 0 || self.max_waiting == 0 {
            return Err("max_pending and max_waiting must be at least 1".to_owned());
        }
        Ok(())
    }
}
