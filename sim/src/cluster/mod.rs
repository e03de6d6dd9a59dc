//! The cluster: nodes with IDs, each running one role, each with its own disk, each able to
//! crash and restart. A role is one variant of [`RoleSpec`] (how to start it) and of
//! [`Role`] (it running); the cluster dispatches to it and knows nothing else about it.
//!
//! To host a new role: add its node module (a struct with `start`, `deliver`, `tick`,
//! `sync_done`, `poll_timeout` and `snapshot`, filling an [`Outbox`]), one variant in
//! each enum, and one arm in each dispatch below. The driver, the network, the disks and
//! the fault schedule stay as they are.

pub mod client_port;
pub mod coordinator;
pub mod eventual_node;
mod kv_segments;
pub mod kv_server;
pub mod outbox;
pub mod peer;

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use ringkv_core::storage::{LogReader, PersistToken, StorageError};
use ringkv_core::Ts;

pub use coordinator::{CoordinatorNode, CoordinatorSpec};
pub use eventual_node::{EventualNode, EventualSpec};
pub use kv_server::{KvServerNode, KvServerSpec};
pub use outbox::{Outbox, ServedStep};
pub use peer::{PeerNode, PeerSpec};

use crate::check::ClusterSnapshot;
use crate::disk::{CrashKind, Journal, LogCompaction, SimDisk};
use crate::network::{Message, NodeId};

/// What a role gets when a run of its node starts.
pub struct Boot {
    /// When.
    pub now: Ts,
    /// Which node.
    pub id: NodeId,
    /// Which run of it (0 first, one more after each crash).
    pub incarnation: u32,
    /// The node's disk, as the last run (and its crash) left it.
    pub disk: SimDisk,
    /// A number drawn for this run, for whatever the role must pick at random.
    pub seed: u64,
}

/// How to start a node's role.
#[derive(Clone, Debug)]
pub enum RoleSpec {
    /// The strong-mode coordinator.
    Coordinator(CoordinatorSpec),
    /// A strong-mode KV server.
    KvServer(KvServerSpec),
    /// A peer two-phase-commit node.
    Peer(PeerSpec),
    /// An eventual-mode node.
    Eventual(EventualSpec),
}

impl RoleSpec {
    /// Whether the fault schedule may crash this role: every role keeps a log and
    /// recovers from it.
    pub fn crashable(&self) -> bool {
        match self {
            RoleSpec::Coordinator(_)
            | RoleSpec::KvServer(_)
            | RoleSpec::Peer(_)
            | RoleSpec::Eventual(_) => true,
        }
    }
}

/// A role while its node runs.
pub enum Role {
    /// The strong-mode coordinator.
    Coordinator(Box<CoordinatorNode>),
    /// A strong-mode KV server.
    KvServer(Box<KvServerNode>),
    /// A peer two-phase-commit node.
    Peer(Box<PeerNode>),
    /// An eventual-mode node.
    Eventual(Box<EventualNode>),
}

impl Role {
    fn start(spec: &RoleSpec, boot: &Boot, out: &mut Outbox) -> Self {
        match spec {
            RoleSpec::Coordinator(spec) => {
                Role::Coordinator(Box::new(CoordinatorNode::start(spec, boot, out)))
            }
            RoleSpec::KvServer(spec) => {
                Role::KvServer(Box::new(KvServerNode::start(spec, boot, out)))
            }
            RoleSpec::Peer(spec) => Role::Peer(Box::new(PeerNode::start(spec, boot, out))),
            RoleSpec::Eventual(spec) => {
                Role::Eventual(Box::new(EventualNode::start(spec, boot, out)))
            }
        }
    }

    fn deliver(&mut self, now: Ts, msg: Message, out: &mut Outbox) {
        match self {
            Role::Coordinator(node) => node.deliver(now, msg, out),
            Role::KvServer(node) => node.deliver(now, msg, out),
            Role::Peer(node) => node.deliver(now, msg, out),
            Role::Eventual(node) => node.deliver(now, msg, out),
        }
    }

    fn tick(&mut self, now: Ts, out: &mut Outbox) {
        match self {
            Role::Coordinator(node) => node.tick(now, out),
            Role::KvServer(node) => node.tick(now, out),
            Role::Peer(node) => node.tick(now, out),
            Role::Eventual(node) => node.tick(now, out),
        }
    }

    fn sync_done(&mut self, now: Ts, out: &mut Outbox) {
        match self {
            Role::Coordinator(node) => node.sync_done(now, out),
            Role::KvServer(node) => node.sync_done(now, out),
            Role::Peer(node) => node.sync_done(now, out),
            Role::Eventual(node) => node.sync_done(now, out),
        }
    }

    fn poll_timeout(&self) -> Option<Ts> {
        match self {
            Role::Coordinator(node) => node.poll_timeout(),
            Role::KvServer(node) => node.poll_timeout(),
            Role::Peer(node) => node.poll_timeout(),
            Role::Eventual(node) => node.poll_timeout(),
        }
    }

    fn snapshot(&self, snapshot: &mut ClusterSnapshot, errors: &mut Vec<String>) {
        match self {
            Role::Coordinator(node) => node.snapshot(snapshot),
            Role::KvServer(node) => node.snapshot(snapshot, errors),
            Role::Peer(node) => node.snapshot(snapshot, errors),
            // Eventual worlds are judged from their own snapshot (`check::eventual`).
            Role::Eventual(_) => {}
        }
    }
}

/// One node across its runs.
pub struct Node {
    spec: RoleSpec,
    incarnation: u32,
    disk: SimDisk,
    /// The role while the node runs; `None` while it is down.
    role: Option<Role>,
    /// The tick already scheduled for this run, so that one is not scheduled twice.
    timer_at: Option<Ts>,
}

/// Every node of the simulated cluster, by ID.
#[derive(Default)]
pub struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
}

impl Cluster {
    /// Adds a node, down, on an empty disk whose read faults are drawn from `disk_seed`.
    pub fn add(&mut self, id: NodeId, spec: RoleSpec, disk_seed: u64) {
        let node = Node {
            spec,
            incarnation: 0,
            disk: SimDisk::new(disk_seed),
            role: None,
            timer_at: None,
        };
        self.nodes.insert(id, node);
    }

    /// Every node's ID, in order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.keys().copied()
    }

    /// Whether `id` runs now.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.role.is_some())
    }

    /// The nodes the fault schedule may crash that run now.
    pub fn crashable_up(&self) -> Vec<NodeId> {
        let nodes = self.nodes.iter();
        nodes
            .filter(|(_, n)| n.spec.crashable() && n.role.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// The nodes that are down.
    pub fn down(&self) -> Vec<NodeId> {
        let nodes = self.nodes.iter();
        nodes
            .filter(|(_, n)| n.role.is_none())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Every node's disk, e.g. to stop its faults.
    pub fn disks(&self) -> impl Iterator<Item = &SimDisk> + '_ {
        self.nodes.values().map(|n| &n.disk)
    }

    /// The disk of `id`, e.g. to give one node failing reads.
    pub fn disk(&self, id: NodeId) -> Option<&SimDisk> {
        self.nodes.get(&id).map(|n| &n.disk)
    }

    /// The current run of `id`.
    pub fn incarnation(&self, id: NodeId) -> Option<u32> {
        self.nodes.get(&id).map(|n| n.incarnation)
    }

    /// Starts a down node from what its disk holds; false if it runs already.
    pub fn start(&mut self, id: NodeId, now: Ts, seed: u64, out: &mut Outbox) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        if node.role.is_some() {
            return false;
        }
        let boot = Boot {
            now,
            id,
            incarnation: node.incarnation,
            disk: node.disk.clone(),
            seed,
        };
        node.role = Some(Role::start(&node.spec, &boot, out));
        node.timer_at = None;
        true
    }

    /// Crashes a running node: its role's memory is gone, its disk keeps what `kind`
    /// lets it keep, and its next run is a new incarnation. Returns the unsynced bytes
    /// that survived, or `None` if the node was not running.
    pub fn crash(
        &mut self,
        id: NodeId,
        kind: CrashKind,
        rng: &mut ChaCha8Rng,
        tear: f64,
    ) -> Option<usize> {
        let node = self.nodes.get_mut(&id)?;
        node.role.take()?;
        node.incarnation += 1;
        node.timer_at = None;
        Some(node.disk.crash(kind, rng, tear))
    }

    /// Hands a message to its receiver; false if no run of it is there to take it (it is
    /// down, or the message was for an earlier run).
    pub fn deliver(&mut self, now: Ts, msg: Message, out: &mut Outbox) -> bool {
        let to = msg.to;
        let Some(node) = self.nodes.get_mut(&to.node) else {
            return false;
        };
        if to.incarnation.is_some_and(|i| i != node.incarnation) {
            return false;
        }
        let Some(role) = node.role.as_mut() else {
            return false;
        };
        role.deliver(now, msg, out);
        true
    }

    /// A tick scheduled for `incarnation` of `id` is due: runs it if that run still
    /// runs and still wants it.
    pub fn tick(&mut self, id: NodeId, incarnation: u32, now: Ts, out: &mut Outbox) {
        let Some(node) = self.running(id, incarnation) else {
            return;
        };
        if node.timer_at != Some(now) {
            return;
        }
        node.timer_at = None;
        if let Some(role) = node.role.as_mut() {
            role.tick(now, out);
        }
    }

    /// A sync started by `incarnation` of `id` completed (unless that run is gone).
    pub fn sync_done(&mut self, id: NodeId, incarnation: u32, now: Ts, out: &mut Outbox) {
        if let Some(role) = self.running(id, incarnation).and_then(|n| n.role.as_mut()) {
            role.sync_done(now, out);
        }
    }

    /// After a step of `id` at `now`: the tick to schedule, if its role wants one earlier
    /// than the one already scheduled, with the run it is for. A deadline already past
    /// (a restarted role's clock starts at 0) is due now: kept as it was, the tick
    /// scheduled for now would never match it, and the role would never tick again.
    pub fn next_tick(&mut self, id: NodeId, now: Ts) -> Option<(Ts, u32)> {
        let node = self.nodes.get_mut(&id)?;
        let at = node.role.as_ref()?.poll_timeout()?.max(now);
        if node.timer_at.is_some_and(|t| t <= at) {
            return None;
        }
        node.timer_at = Some(at);
        Some((at, node.incarnation))
    }

    /// The role `id` runs now, if it runs (for checks that need more than a snapshot).
    pub fn role(&self, id: NodeId) -> Option<&Role> {
        self.nodes.get(&id)?.role.as_ref()
    }

    /// Tells a running eventual node what its failure detector saw of `other`; false if
    /// it does not run or is of another kind.
    pub fn detected(
        &mut self,
        id: NodeId,
        other: u64,
        up: bool,
        now: Ts,
        out: &mut Outbox,
    ) -> bool {
        match self.nodes.get_mut(&id).and_then(|n| n.role.as_mut()) {
            Some(Role::Eventual(node)) => {
                node.detected(now, other, up, out);
                true
            }
            _ => false,
        }
    }

    fn running(&mut self, id: NodeId, incarnation: u32) -> Option<&mut Node> {
        self.nodes
            .get_mut(&id)
            .filter(|n| n.incarnation == incarnation && n.role.is_some())
    }

    /// The cluster as it is now, for the final checks, and any value that could not be
    /// read back from a node's disk.
    pub fn snapshot(&self, replication: usize) -> (ClusterSnapshot, Vec<String>) {
        let mut snapshot = ClusterSnapshot {
            replication,
            ..ClusterSnapshot::default()
        };
        let mut errors = Vec::new();
        for (&id, node) in &self.nodes {
            match (&node.role, id) {
                (Some(role), _) => role.snapshot(&mut snapshot, &mut errors),
                (None, NodeId::Node(ring_id)) => {
                    snapshot.servers.insert(ring_id, None);
                }
                (None, other) => snapshot.stopped.push(format!("{other:?}")),
            }
        }
        (snapshot, errors)
    }
}

/// What a node compacts its log with: when it is due, the journal of its run, its disk.
pub(crate) struct NodeLog<'a> {
    pub(crate) compaction: &'a mut LogCompaction,
    pub(crate) journal: &'a mut Journal,
    pub(crate) disk: &'a SimDisk,
}

/// A log's bytes held in memory and read without faults: what the compaction checks
/// recover nodes from (the simulated disk may fail a read on purpose).
pub(crate) struct LogBytes(pub(crate) Vec<u8>);

impl LogReader for LogBytes {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StorageError(format!("{offset}+{len} is past the log")))
    }
}

/// As the shells do between two syncs, for every role with a log: when the log is due
/// and no sync is under way, `build` makes `core`'s compacted log (a failed read of a
/// value skips it until the log doubles), the journal puts `bytes_of` it durably in the
/// place of the whole log, and `install` hands it to the core with the last write it
/// covered. True if the log was replaced.
///
/// Each compaction is checked against recovery: `recover` makes what a role recovered
/// from a log must keep, and that from the compacted log must equal that from the whole
/// log as written so far (every append is in the page cache, and the compaction makes
/// them all durable). A difference is an anomaly.
pub(crate) fn compact_log_if_due<N, C, V: PartialEq + std::fmt::Debug>(
    log: NodeLog<'_>,
    (who, core): (NodeId, &mut N),
    out: &mut Outbox,
    build: impl FnOnce(&N) -> Result<C, String>,
    bytes_of: impl Fn(&C) -> &[u8],
    recover: impl Fn(&[u8]) -> Result<V, String>,
    install: impl FnOnce(&mut N, C, Option<PersistToken>),
) -> bool {
    if log.journal.is_syncing() || !log.compaction.is_due(log.disk.len()) {
        return false;
    }
    let compacted = match build(core) {
        Ok(compacted) => compacted,
        Err(err) => {
            out.note(format!("{who:?} log compaction failed: {err}"));
            log.compaction.done(log.disk.len());
            return false;
        }
    };
    let bytes = bytes_of(&compacted);
    let (whole, from_compacted) = (recover(&log.disk.contents()), recover(bytes));
    if whole != from_compacted {
        out.anomaly(format!(
            "{who:?}: the compacted log recovers to {from_compacted:?}, the whole log to \
             {whole:?}"
        ));
    }
    let covered = log.journal.replace(log.disk, bytes);
    log.compaction.done(bytes.len());
    out.log_compactions += 1;
    out.note(format!("{who:?} log compacted to {} bytes", bytes.len()));
    install(core, compacted, covered.map(PersistToken));
    true
}
