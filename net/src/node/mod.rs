//! The node shells of the two peer-to-peer modes: one port for clients and other nodes,
//! a connection kept to every other node, the log with group commit, a ping-based
//! failure detector, and the wall clock, in one loop ([`shell`]) around either core:
//! [`ringkv_core::eventual::Node`] ([`run_node`]) or [`ringkv_core::peer::Peer`]
//! ([`run_peer_node`]).

mod detector;
mod eventual;
mod links;
mod peer;
mod shell;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;

use ringkv_core::eventual::{Cluster, NodeConfig, RecoveryReport};
use ringkv_core::peer::{PeerConfig, PeerRecovery};

use crate::compaction::Compaction;
use crate::datadir::DataDir;
use crate::error::NetError;
use crate::limits::NetLimits;
use crate::log_writes::prealloc_bytes_for;
use crate::resp::RespListen;

use shell::{serve, wall_ms, Asked, Started};

/// Where and how a node runs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The protocol's settings (its `incarnation` and `seed` are the shell's to choose:
    /// whatever they hold is replaced).
    pub config: NodeConfig,
    /// Where the log, the ID, the incarnation and the lock live.
    pub data_dir: PathBuf,
    /// Where to listen: the node's own line of the cluster file, resolved.
    pub listen: SocketAddr,
    /// Where to speak RESP2 to Redis clients; `None` for no RESP port.
    pub resp_listen: Option<RespListen>,
    /// The port's limits (also the bound on bytes queued to each other node).
    pub limits: NetLimits,
    /// Whether to cut a log damaged before its end (losing every record from the damage
    /// on) instead of refusing to start.
    pub truncate_corrupt_log: bool,
    /// Once the log holds this many bytes (and twice what it held after the last
    /// compaction), it is rewritten to what recovery needs: every key's state, the hints
    /// and debts still held, the counters' floor and request numbers.
    /// [`crate::DEFAULT_LOG_COMPACT_BYTES`] by default.
    pub log_compact_bytes: u64,
}

/// What a started node tells its caller.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node's ID.
    pub id: u64,
    /// The address actually bound.
    pub listen: SocketAddr,
    /// The RESP2 port's address actually bound, if there is one.
    pub resp: Option<SocketAddr>,
    /// This life of the data directory: part of every clock entry the node writes.
    pub incarnation: u64,
    /// What recovery found in the log; `None` when the directory was empty and the node
    /// catches up from the others.
    pub recovery: Option<RecoveryReport>,
}

/// Opens the data directory, recovers the node from its log (or starts it on an empty
/// one with a fresh incarnation), listens, and serves until `shutdown` is triggered.
/// Calls `on_ready` once listening. A failed write or fsync of the log stops the node
/// with an error: nothing that is not durable is ever acknowledged.
pub fn run_node(
    opts: NodeOptions,
    shutdown: crate::Shutdown,
    on_ready: impl FnOnce(&NodeInfo),
) -> Result<(), NetError> {
    opts.limits.validate().map_err(NetError::Config)?;
    let id = opts.config.id;
    let dir = DataDir::open(&opts.data_dir, Some(id))?;
    let (node, mut log, info) = eventual::start_node(&opts, &dir)?;
    log.allocate_ahead_by(prealloc_bytes_for(opts.log_compact_bytes));
    let started = Started {
        cluster: node.config().cluster.clone(),
        core: eventual::EventualCore::new(node),
        log,
        id,
        started_ms: 0,
        compaction: Compaction::new(opts.log_compact_bytes),
    };
    let asked = Asked {
        listen: opts.listen,
        resp: opts.resp_listen,
    };
    serve(started, asked, &opts.limits, shutdown, |bound| {
        let info = NodeInfo {
            listen: bound.listen,
            resp: bound.resp,
            ..info
        };
        tracing::info!(id, listen = %info.listen, resp = ?info.resp, incarnation = info.incarnation, "node listening");
        on_ready(&info);
    })
}

/// Where and how a peer (two-phase commit) node runs.
#[derive(Clone, Debug)]
pub struct PeerNodeOptions {
    /// The protocol's settings (its `seed` is the shell's to choose, and its
    /// `epoch_floor` is raised to the wall clock's minutes since 2025).
    pub config: PeerConfig,
    /// Where the log, the ID and the lock live.
    pub data_dir: PathBuf,
    /// Where to listen: the node's own line of the cluster file, resolved.
    pub listen: SocketAddr,
    /// Where to speak RESP2 to Redis clients; `None` for no RESP port.
    pub resp_listen: Option<RespListen>,
    /// The port's limits (also the bound on bytes queued to each other node).
    pub limits: NetLimits,
    /// Whether to cut a log damaged before its end (losing every record from the damage
    /// on) instead of refusing to start.
    pub truncate_corrupt_log: bool,
    /// Once the log holds this many bytes (and twice what it held after the last
    /// compaction), it is rewritten to what recovery needs: the epoch, the decisions
    /// remembered, every committed value, the transactions in doubt and the commits not
    /// finished.
    /// [`crate::DEFAULT_LOG_COMPACT_BYTES`] by default.
    pub log_compact_bytes: u64,
}

/// What a started peer node tells its caller.
#[derive(Clone, Debug)]
pub struct PeerNodeInfo {
    /// The node's ID.
    pub id: u64,
    /// The address actually bound.
    pub listen: SocketAddr,
    /// The RESP2 port's address actually bound, if there is one.
    pub resp: Option<SocketAddr>,
    /// What recovery found in the log (all zero for a new node).
    pub recovery: PeerRecovery,
}

/// Opens the data directory, recovers the peer node from its log (finishing the commits
/// it decided, asking about the transactions it holds in doubt), listens, and serves
/// until `shutdown`. Calls `on_ready` once listening. A failed write or fsync of the log
/// stops the node with an error: nothing that is not durable is ever acknowledged.
pub fn run_peer_node(
    opts: PeerNodeOptions,
    shutdown: crate::Shutdown,
    on_ready: impl FnOnce(&PeerNodeInfo),
) -> Result<(), NetError> {
    opts.limits.validate().map_err(NetError::Config)?;
    let id = opts.config.id;
    let dir = DataDir::open(&opts.data_dir, Some(id))?;
    let started_ms = wall_ms();
    let (node, mut log, recovery) = peer::start_peer(&opts, &dir, started_ms)?;
    log.allocate_ahead_by(prealloc_bytes_for(opts.log_compact_bytes));
    let cluster = Cluster {
        nodes: opts.config.nodes.iter().cloned().collect(),
    };
    let started = Started {
        core: peer::PeerCore::new(node),
        log,
        id,
        cluster,
        started_ms,
        compaction: Compaction::new(opts.log_compact_bytes),
    };
    let asked = Asked {
        listen: opts.listen,
        resp: opts.resp_listen,
    };
    serve(started, asked, &opts.limits, shutdown, |bound| {
        let info = PeerNodeInfo {
            id,
            listen: bound.listen,
            resp: bound.resp,
            recovery,
        };
        tracing::info!(id, listen = %info.listen, resp = ?info.resp, epoch = info.recovery.epoch, "peer node listening");
        on_ready(&info);
    })
}
