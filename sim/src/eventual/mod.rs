//! Eventual-mode worlds (PROTOCOL.md section 2): 3 to 7 peer nodes, each key on N of
//! them, clients coordinating through random nodes at random consistency levels.
//!
//! What the driver does beyond strong mode, kept here:
//! - the failure detector: each node is told `NodeUp`/`NodeDown` from the simulator's own
//!   knowledge of which nodes run, `detect_ms` (a swarm knob, up to 1 s) after a node
//!   stops or starts, read again at that moment, so a node that came back meanwhile is
//!   reported up; a node that starts is told at once which nodes are down (its connects
//!   fail). A partitioned node is not reported down: requests to it time out, as a
//!   detector that only hears of connects and crashes would have it;
//! - lost disks: in some seeds a crashed node's disk is wiped before it restarts (at most
//!   once a run), so it starts a new node under a new incarnation and catches up;
//! - the final reads: in worlds with read repair only, or that lost a disk, every key is
//!   read once at `all` after every client stopped, as section 2 needs for convergence;
//! - a node back on a lost disk is cut off from the other nodes for 1 to 4 s (when that
//!   ends before the faults stop), while half the clients' operations go through it at
//!   `one`: it coordinates and applies writes before it got its keys back, where a
//!   counter of its earlier life would be handed out again (riak_kv issue 679);
//! - a node restarted after a process crash holds the same hints and debts as before
//!   it (every appended record survives such a crash), checked as it starts;
//! - the verdicts of `check::eventual`.

pub mod workload;

use std::collections::BTreeMap;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use ringkv_core::eventual::Repair;
use ringkv_core::proto::Consistency;
use ringkv_core::ring::Ring;
use ringkv_core::Ts;

use crate::check::cluster::replica_set;
use crate::check::eventual::{
    check_convergence, check_eventual_liveness, check_lww_final, check_monotonic_reads,
    check_origins, check_read_after_write, check_set, check_siblings, check_superseded,
    EvNodeSnapshot, EvSnapshot,
};
use crate::cluster::{eventual_node, Cluster, EventualSpec, Outbox, Role, RoleSpec};
use crate::config::{EventualKnobs, SimConfig};
use crate::disk::CrashKind;
use crate::driver::{Event, Shape, World};
use crate::network::NodeId;
use crate::trace::name;

use workload::{EvCommand, EvHistory, EvWorkload};

/// What an eventual world keeps beyond the strong-mode world.
#[derive(Debug)]
pub struct EventualWorld {
    knobs: EventualKnobs,
    /// The clients and their history.
    pub workload: EvWorkload,
    /// When a disk was lost, for the checks.
    pub disks_lost_at: Vec<Ts>,
    /// The node whose disk was lost, until it is cut off as it starts again.
    to_isolate: Option<NodeId>,
    /// What each node down after a process crash held, to be found again as it starts.
    kept: BTreeMap<NodeId, Kept>,
}

/// The work a node holds that its log must bring back after a process crash: hints by
/// target, and how many writes it owes as a first replica.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kept {
    hints: BTreeMap<u64, usize>,
    owed: usize,
}

/// Eventual mode: every node of the ring runs an eventual node; clients talk to any.
pub(crate) fn eventual_mode(config: &SimConfig, rng: &mut ChaCha8Rng) -> (Shape, EventualWorld) {
    let knobs = config
        .eventual
        .clone()
        .unwrap_or_else(|| panic!("an eventual world needs its knobs"));
    let spec = EventualSpec {
        members: eventual_node::members(&config.server_ids),
        replication: knobs.replication,
        timeout_ms: config.timeout_ms,
        conflicts: knobs.conflicts,
        repair: knobs.repair,
        cache: config.server_cache,
        buggify_until_ms: config.buggify_until_ms(),
        log_compact_bytes: config.node_log_compact_bytes,
    };
    let mut cluster = Cluster::default();
    for &id in &config.server_ids {
        cluster.add(
            NodeId::Node(id),
            RoleSpec::Eventual(spec.clone()),
            rng.random(),
        );
    }
    let entries: Vec<NodeId> = config
        .server_ids
        .iter()
        .map(|&id| NodeId::Node(id))
        .collect();
    let nodes = config.server_ids.clone();
    let world = EventualWorld {
        workload: EvWorkload::new(
            config.clients,
            config.keys.clone(),
            nodes,
            config.lookalike_one_in,
        ),
        knobs: knobs.clone(),
        disks_lost_at: Vec::new(),
        to_isolate: None,
        kept: BTreeMap::new(),
    };
    let shape = Shape {
        cluster,
        entries,
        replication: knobs.replication,
    };
    (shape, world)
}

impl World {
    /// The eventual world's clients' history and when disks were lost; `None` in
    /// strong mode.
    pub fn eventual_history(&self) -> Option<(&EvHistory, &[Ts])> {
        let ev = self.eventual.as_ref()?;
        Some((&ev.workload.history, &ev.disks_lost_at))
    }

    /// Schedules what only eventual worlds have: the final reads.
    pub(crate) fn schedule_eventual(&mut self) {
        if self.eventual.is_some() {
            self.schedule(self.config.final_reads_at_ms(), Event::FinalReads);
        }
    }

    /// `node` stopped or started: the others' failure detectors see it after `detect_ms`;
    /// a node that starts learns at once which nodes are down.
    pub(crate) fn node_changed(&mut self, node: NodeId, started: bool) {
        let Some(ev) = &self.eventual else {
            return;
        };
        let at = self.now + ev.knobs.detect_ms;
        self.schedule(at, Event::Detect { node });
        if started {
            self.check_kept(node);
            self.maybe_isolate(node);
            for down in self.cluster.down() {
                if let NodeId::Node(other) = down {
                    let mut out = Outbox::default();
                    if self
                        .cluster
                        .detected(node, other, false, self.now, &mut out)
                    {
                        self.apply(node, out);
                    }
                }
            }
        }
    }

    /// The detectors see whether `node` runs now.
    pub(crate) fn detect(&mut self, node: NodeId) {
        let NodeId::Node(id) = node else {
            return;
        };
        let up = self.cluster.is_up(node);
        for other in self.cluster.ids().collect::<Vec<_>>() {
            if other == node {
                continue;
            }
            let mut out = Outbox::default();
            if self.cluster.detected(other, id, up, self.now, &mut out) {
                self.apply(other, out);
            }
        }
    }

    /// After a crash of `node`: in seeds that lose disks, maybe its disk is lost too.
    pub(crate) fn maybe_lose_disk(&mut self, node: NodeId) {
        let Some(ev) = &self.eventual else {
            return;
        };
        let chance = ev.knobs.disk_loss;
        if chance <= 0.0 || !ev.disks_lost_at.is_empty() || !self.rng.random_bool(chance) {
            return;
        }
        if let Some(disk) = self.cluster.disk(node) {
            disk.wipe();
        }
        let now = self.now;
        if let Some(ev) = &mut self.eventual {
            ev.disks_lost_at.push(now);
            ev.to_isolate = Some(node);
            ev.kept.remove(&node);
        }
        let note = format!("{} loses its disk", name(node));
        self.trace.note(now, &note);
    }

    /// What `node` holds of hints and debts, if it runs an eventual node.
    fn kept_of(&self, node: NodeId) -> Option<Kept> {
        let Some(Role::Eventual(running)) = self.cluster.role(node) else {
            return None;
        };
        let core = running.core();
        let hints = self
            .config
            .server_ids
            .iter()
            .map(|&t| (t, core.hints_for(t)))
            .filter(|&(_, count)| count > 0)
            .collect();
        let owed = core.owed_count();
        Some(Kept { hints, owed })
    }

    /// Before `node` crashes: after a process crash its log must bring back what it
    /// holds now; after a machine crash unsynced records may be gone, so nothing is
    /// expected.
    pub(crate) fn before_crash(&mut self, node: NodeId, kind: CrashKind) {
        let kept = self.kept_of(node);
        let Some(ev) = &mut self.eventual else {
            return;
        };
        match (kind, kept) {
            (CrashKind::Process, Some(kept)) => {
                ev.kept.insert(node, kept);
            }
            _ => {
                ev.kept.remove(&node);
            }
        }
    }

    /// `node` started after a process crash: it must hold what it held before.
    fn check_kept(&mut self, node: NodeId) {
        let Some(before) = self.eventual.as_mut().and_then(|ev| ev.kept.remove(&node)) else {
            return;
        };
        let after = self.kept_of(node);
        if after.as_ref() != Some(&before) {
            let text = format!(
                "{} held {before:?} before a process crash and {after:?} after it",
                name(node)
            );
            self.anomaly(text);
        }
    }

    /// `node` starts on the disk it lost: cut it off from every other node for a while,
    /// and send half the operations through it at `one`, if that all ends before the
    /// faults stop.
    fn maybe_isolate(&mut self, node: NodeId) {
        let Some(ev) = &mut self.eventual else {
            return;
        };
        if ev.to_isolate != Some(node) {
            return;
        }
        ev.to_isolate = None;
        let NodeId::Node(id) = node else {
            return;
        };
        let until = self.now + self.rng.random_range(1000..=4000);
        if self.healed || until >= self.config.heal_at_ms() {
            return;
        }
        for &other in &self.config.server_ids {
            if other != id {
                self.network
                    .partition(node, NodeId::Node(other), false, until);
            }
        }
        if let Some(ev) = &mut self.eventual {
            ev.workload.favor(id, until);
        }
        let note = format!(
            "{} is cut off from the other nodes until {until} ms",
            name(node)
        );
        self.trace.note(self.now, &note);
    }

    /// An eventual client starts its next operation.
    pub(crate) fn eventual_client_next(&mut self, client: u32) {
        if self.now >= self.config.clients_stop_at_ms() {
            return;
        }
        let Some(ev) = &mut self.eventual else {
            return;
        };
        let Some(msg) = ev.workload.invoke(&mut self.rng, self.now, client) else {
            return;
        };
        let op = ev.workload.history.len() - 1;
        self.send(msg);
        let at = self.now + self.config.client_timeout_ms;
        self.schedule(at, Event::ClientTimeout { client, op });
    }

    /// An answer reached an eventual client.
    pub(crate) fn eventual_client_answer(&mut self, client: u32, line: &[u8]) {
        let Some(ev) = &mut self.eventual else {
            return;
        };
        match ev.workload.answer(self.now, client, line) {
            Ok(true) => self.eventual_client_after(client),
            Ok(false) => {}
            Err(text) => self.anomaly(text),
        }
    }

    /// An eventual client stops waiting for `op`.
    pub(crate) fn eventual_give_up(&mut self, client: u32, op: usize) {
        let Some(ev) = &mut self.eventual else {
            return;
        };
        if ev.workload.give_up(client, op) {
            let note = format!("client {client} gives up on operation {op}");
            self.trace.note(self.now, &note);
            self.eventual_client_after(client);
        }
    }

    fn eventual_client_after(&mut self, client: u32) {
        let think_ms = self.rng.random_range(0..20);
        let at = self.now + think_ms;
        self.schedule(at, Event::ClientNext { client });
    }

    /// Every key read once at `all`, where section 2 needs it for convergence: with read
    /// repair only, or after a lost disk (whose hints for others are gone).
    pub(crate) fn final_reads(&mut self) {
        let Some(ev) = &mut self.eventual else {
            return;
        };
        if ev.knobs.repair != Repair::Read && ev.disks_lost_at.is_empty() {
            return;
        }
        let checker = self.config.clients;
        let node = self.config.server_ids[0];
        let mut sends = Vec::new();
        for key in &self.config.keys {
            let level = Consistency::All;
            sends.push(
                ev.workload
                    .issue(self.now, checker, node, key, level, EvCommand::Read),
            );
        }
        for msg in sends {
            self.send(msg);
        }
    }

    /// The end state of every node, for the checks.
    fn eventual_snapshot(&self) -> EvSnapshot {
        let mut snapshot = EvSnapshot::default();
        if let Some(ev) = &self.eventual {
            let ring: Ring = self.config.server_ids.iter().copied().collect();
            for key in &self.config.keys {
                let replicas = replica_set(&ring, key, ev.knobs.replication);
                snapshot.replicas.insert(key.clone(), replicas);
            }
        }
        for id in self.cluster.ids() {
            let NodeId::Node(ring_id) = id else { continue };
            let node = match self.cluster.role(id) {
                Some(Role::Eventual(node)) => node,
                _ => {
                    snapshot.nodes.insert(ring_id, None);
                    continue;
                }
            };
            let core = node.core();
            let hints = self
                .config
                .server_ids
                .iter()
                .map(|&t| (t, core.hints_for(t)))
                .collect();
            let placed = self
                .config
                .keys
                .iter()
                .map(|key| (key.clone(), core.replicas_of(key)));
            snapshot.placed_by.insert(ring_id, placed.collect());
            let node = EvNodeSnapshot {
                states: node.states(),
                hints,
                owed: core.owed_count(),
                catching_up: core.catching_up(),
                reused_dots: core.stats().reused_dots,
            };
            snapshot.nodes.insert(ring_id, Some(node));
        }
        snapshot
    }

    /// Every check of a finished eventual run; each failure a readable report.
    pub(crate) fn judge_eventual(&self) -> Vec<String> {
        let Some(ev) = &self.eventual else {
            return vec!["an eventual run without its world".to_owned()];
        };
        let history: &EvHistory = &ev.workload.history;
        let n = ev.knobs.replication;
        let mut failures: Vec<String> = self
            .anomalies
            .iter()
            .map(|a| format!("anomaly: {a}"))
            .collect();
        let settled = self.config.heal_at_ms() + self.config.settle_ms;
        if let Err(problems) = check_eventual_liveness(history, settled, n) {
            failures.extend(problems.into_iter().map(|p| format!("liveness: {p}")));
        }
        let lww = ev.knobs.conflicts == ringkv_core::eventual::Conflicts::Lww;
        let lost = &ev.disks_lost_at;
        if let Err(problems) = check_read_after_write(history, n, lww, lost) {
            failures.extend(
                problems
                    .into_iter()
                    .map(|p| format!("read after write: {p}")),
            );
        }
        if ev.knobs.repair.reads() {
            if let Err(problems) = check_monotonic_reads(history, n, lww, lost) {
                failures.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("monotonic reads: {p}")),
                );
            }
        }
        let snapshot = self.eventual_snapshot();
        let finals = match check_convergence(&snapshot) {
            Ok(finals) => finals,
            Err(problems) => {
                failures.extend(problems.into_iter().map(|p| format!("convergence: {p}")));
                return failures;
            }
        };
        if let Err(problems) = check_origins(history, &finals) {
            failures.extend(problems.into_iter().map(|p| format!("origin: {p}")));
        }
        let siblings = !lww;
        if let Err(problems) = check_set(history, &finals, siblings, n, lost) {
            failures.extend(problems.into_iter().map(|p| format!("set: {p}")));
        }
        if siblings {
            if let Err(problems) = check_superseded(history, &finals, n, lost) {
                failures.extend(problems.into_iter().map(|p| format!("resurrection: {p}")));
            }
            let replicas = &snapshot.replicas;
            if let Err(problems) = check_siblings(history, &finals, replicas, lost) {
                failures.extend(problems.into_iter().map(|p| format!("siblings: {p}")));
            }
        } else if let Err(problems) = check_lww_final(history, &snapshot, n, lost) {
            failures.extend(
                problems
                    .into_iter()
                    .map(|p| format!("last write wins: {p}")),
            );
        }
        failures
    }
}
