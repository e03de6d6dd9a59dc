//! The driver: one event queue in simulated time, ordered by (time, sequence), and the
//! phases of a run. During the safety phase the faults are on; at the heal every fault
//! stops and every down node restarts; in the liveness phase clients go on and must
//! succeed; then clients stop and the run goes quiet before the final state is read.

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::Ts;

use crate::check::ClusterSnapshot;
use crate::cluster::{Cluster, CoordinatorSpec, KvServerSpec, Outbox, PeerSpec, RoleSpec};
use crate::config::{Mode, SimConfig};
use crate::eventual::{eventual_mode, EventualWorld};
use crate::faults::PathFault;
use crate::history::{Command, History, ServedLog};
use crate::network::{Message, Network, NodeId};
use crate::trace::Trace;
use crate::workload::{Next, Workload};

/// Something due at a moment of simulated time.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    /// A message arrives.
    Deliver(Message),
    /// A node's role asked to be called at this time (in this run of it).
    Tick { node: NodeId, incarnation: u32 },
    /// A sync a node started completes (in this run of it).
    SyncDone { node: NodeId, incarnation: u32 },
    /// A node starts, or restarts after a crash.
    Start { node: NodeId },
    /// Maybe crash a node, and schedule the next such moment.
    CrashTick,
    /// Crash a node's machine while a sync of its log is under way (in this run of it).
    CrashInSync { node: NodeId, incarnation: u32 },
    /// Put a fault on one path, and schedule the next.
    PathFaultTick(PathFault),
    /// The faults stop.
    Heal,
    /// A client starts its next operation.
    ClientNext { client: u32 },
    /// A client stops waiting for an operation.
    ClientTimeout { client: u32, op: usize },
    /// The failure detectors see whether a node runs (eventual worlds).
    Detect { node: NodeId },
    /// Every client stopped: read every key at `all` where repair needs it (eventual
    /// worlds).
    FinalReads,
}

/// Counters of what happened, for the summary.
#[derive(Clone, Debug, Default)]
pub struct WorldStats {
    /// Messages handed to the network.
    pub messages_sent: u64,
    /// Messages lost (loss, partition, or addressed to a crashed run).
    pub messages_lost: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Of those, crashes of a whole machine.
    pub machine_crashes: u64,
    /// Of those, crashes of the coordinator.
    pub coordinator_crashes: u64,
    /// Unsynced bytes that survived crashes.
    pub torn_or_kept_bytes: u64,
    /// Client requests held behind earlier ones of their connection.
    pub held_requests: u64,
    /// Node logs rewritten by compaction.
    pub log_compactions: u64,
    /// KV servers' sealed segments merged.
    pub segment_merges: u64,
    /// PUTs absorbed into another PUT of the same key.
    pub absorbed_updates: u64,
    /// Events processed.
    pub events: u64,
}

/// The whole simulated run.
pub struct World {
    pub(crate) config: SimConfig,
    pub(crate) now: Ts,
    pub(crate) rng: ChaCha8Rng,
    events: BTreeMap<(Ts, u64), Event>,
    next_event: u64,
    pub(crate) network: Network,
    pub(crate) cluster: Cluster,
    /// How many nodes hold each key, for the checks.
    replication: usize,
    pub(crate) workload: Workload,
    pub(crate) trace: Trace,
    pub(crate) healed: bool,
    pub(crate) stats: WorldStats,
    /// Bugs the world itself noticed (undecodable lines, refusals).
    pub(crate) anomalies: Vec<String>,
    /// Served steps stamped in the current millisecond, to order them within it.
    stamps_this_ms: (Ts, Ts),
    /// The eventual world's clients and what it tracks; `None` in strong mode.
    pub(crate) eventual: Option<EventualWorld>,
}

impl World {
    /// The world of `config`: its cluster about to start, and every client about to begin.
    pub fn new(config: SimConfig, trace: Trace) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let (shape, eventual) = match config.mode() {
            Mode::Strong => (strong_mode(&config, &mut rng), None),
            Mode::Peer => (peer_mode(&config, &mut rng), None),
            Mode::Eventual => {
                let (shape, world) = eventual_mode(&config, &mut rng);
                (shape, Some(world))
            }
        };
        let workload = Workload::new(
            config.clients,
            config.keys.clone(),
            shape.entries,
            config.lookalike_one_in,
        );
        let mut world = Self {
            now: 0,
            rng,
            events: BTreeMap::new(),
            next_event: 0,
            network: Network::new(config.net.clone()),
            cluster: shape.cluster,
            replication: shape.replication,
            workload,
            trace,
            healed: false,
            stats: WorldStats::default(),
            anomalies: Vec::new(),
            stamps_this_ms: (0, 0),
            eventual,
            config,
        };
        world.schedule_start();
        world
    }

    /// The first events: nodes start, clients begin, the heal and the fault schedule.
    fn schedule_start(&mut self) {
        self.schedule(
            0,
            Event::Start {
                node: NodeId::Coordinator,
            },
        );
        for node in self.cluster.ids().collect::<Vec<_>>() {
            if node != NodeId::Coordinator {
                let at = self.rng.random_range(0..50);
                self.schedule(at, Event::Start { node });
            }
        }
        for client in 0..self.config.clients {
            for _ in 0..self.config.pipeline {
                let at = self.rng.random_range(0..100);
                self.schedule(at, Event::ClientNext { client });
            }
        }
        self.schedule(self.config.heal_at_ms(), Event::Heal);
        self.schedule_faults();
        self.schedule_eventual();
        for disk in self.cluster.disks() {
            disk.set_read_failure(self.config.disk.read_failure);
        }
    }

    pub(crate) fn schedule(&mut self, at: Ts, event: Event) {
        self.events.insert((at, self.next_event), event);
        self.next_event += 1;
    }

    /// The time now.
    pub fn now(&self) -> Ts {
        self.now
    }

    /// The nodes, e.g. to see which run of a node is current.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// What happened so far.
    pub fn stats(&self) -> &WorldStats {
        &self.stats
    }

    /// Runs every event up to `end_ms`.
    pub fn run_until(&mut self, end_ms: Ts) {
        while let Some(entry) = self.events.first_entry() {
            let at = entry.key().0;
            if at > end_ms {
                break;
            }
            let event = entry.remove();
            self.now = at;
            self.stats.events += 1;
            self.dispatch(event);
        }
        self.now = end_ms;
    }

    fn dispatch(&mut self, event: Event) {
        let now = self.now;
        let mut out = Outbox::default();
        match event {
            Event::Deliver(msg) => self.deliver(msg),
            Event::Tick { node, incarnation } => {
                self.cluster.tick(node, incarnation, now, &mut out);
                self.apply(node, out);
            }
            Event::SyncDone { node, incarnation } => {
                self.cluster.sync_done(node, incarnation, now, &mut out);
                self.apply(node, out);
            }
            Event::Start { node } => self.start(node),
            Event::CrashTick => self.crash_tick(),
            Event::CrashInSync { node, incarnation } => self.crash_in_sync(node, incarnation),
            Event::PathFaultTick(fault) => self.path_fault_tick(fault),
            Event::Heal => self.heal(),
            Event::ClientNext { client } if self.eventual.is_some() => {
                self.eventual_client_next(client)
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::ClientTimeout { client, op } if self.eventual.is_some() => {
                self.eventual_give_up(client, op)
            }
            Event::Detect { node } => self.detect(node),
            Event::FinalReads => self.final_reads(),
            Event::ClientTimeout { client, op } => {
                if let Some(next) = self.workload.give_up(client, op) {
                    let note = format!("client {client} gives up on operation {op}");
                    self.trace.note(now, &note);
                    self.after(next);
                }
            }
        }
    }

    /// Starts a down node and carries out what its first step asks.
    pub fn start(&mut self, node: NodeId) {
        let mut out = Outbox::default();
        let seed = self.rng.random();
        if self.cluster.start(node, self.now, seed, &mut out) {
            self.apply(node, out);
            self.node_changed(node, true);
        }
    }

    /// Carries out what one step of `node` asked for.
    pub(crate) fn apply(&mut self, node: NodeId, out: Outbox) {
        for note in out.notes {
            self.trace.note(self.now, &note);
        }
        self.stats.held_requests += out.held_requests;
        self.stats.log_compactions += out.log_compactions;
        self.stats.segment_merges += out.segment_merges;
        self.stats.absorbed_updates += out.absorbed_updates;
        for step in out.served {
            let stamp = self.stamp();
            if let Err(text) = self.workload.served(stamp, step) {
                self.anomaly(text);
            }
        }
        for text in out.anomalies {
            self.anomaly(text);
        }
        let mut sends = out.sends;
        if out.decided && self.crash_after_decision(node) {
            // The process died while sending what the step asked for: a random prefix
            // left (phase 2 reached some participants, maybe the client its answer).
            let left = self.rng.random_range(0..=sends.len());
            sends.truncate(left);
            for msg in sends {
                self.send(msg);
            }
            return;
        }
        if out.sync_started {
            if let Some(incarnation) = self.cluster.incarnation(node) {
                let (lo, hi) = self.config.disk.sync_ms;
                let at = self.now + self.rng.random_range(lo..=hi);
                // Scheduled first, so that at the same moment the crash wins the race.
                if !self.healed && self.rng.random_bool(self.config.crashes.in_sync) {
                    let crash_at = self.rng.random_range(self.now..=at);
                    self.schedule(crash_at, Event::CrashInSync { node, incarnation });
                }
                self.schedule(at, Event::SyncDone { node, incarnation });
            }
        }
        if let Some((at, incarnation)) = self.cluster.next_tick(node, self.now) {
            self.schedule(at, Event::Tick { node, incarnation });
        }
        for msg in sends {
            self.send(msg);
        }
    }

    /// Maybe crashes `node`, whose commit just became durable, as the swarm knob says;
    /// it restarts after a drawn downtime. Whether it crashed.
    fn crash_after_decision(&mut self, node: NodeId) -> bool {
        let faults = self.config.crashes.clone();
        let room = self.cluster.down().len() < faults.max_down;
        if self.healed || !room || !self.rng.random_bool(faults.after_decision) {
            return false;
        }
        let kind = if self.rng.random_bool(faults.machine) {
            crate::disk::CrashKind::Machine
        } else {
            crate::disk::CrashKind::Process
        };
        self.crash(node, kind);
        self.trace
            .note(self.now, "the crash follows a commit decision");
        let down_ms = self.rng.random_range(1..=faults.max_down_ms);
        self.schedule(self.now + down_ms, Event::Start { node });
        true
    }

    /// A time stamp for a served step: the millisecond times 1000 plus the step's order
    /// within it (past 998 steps in one millisecond, the rest share a stamp, which only
    /// makes them concurrent to the checks).
    fn stamp(&mut self) -> Ts {
        let (ms, count) = &mut self.stamps_this_ms;
        if *ms != self.now {
            *ms = self.now;
            *count = 0;
        }
        *count = (*count + 1).min(998);
        self.now * 1000 + *count
    }

    pub(crate) fn send(&mut self, msg: Message) {
        self.stats.messages_sent += 1;
        let arrivals = self.network.arrivals(&mut self.rng, self.now, &msg);
        if arrivals.is_empty() {
            self.stats.messages_lost += 1;
            self.trace
                .lost(self.now, msg.from.node, msg.to.node, &msg.line);
        }
        for at in arrivals {
            self.schedule(at, Event::Deliver(msg.clone()));
        }
    }

    fn deliver(&mut self, msg: Message) {
        let (from, to) = (msg.from.node, msg.to.node);
        let line = msg.line.strip_suffix(b"\n").unwrap_or(&msg.line).to_vec();
        if let NodeId::Client(client) = to {
            self.trace.deliver(self.now, from, to, &line);
            if self.eventual.is_some() {
                return self.eventual_client_answer(client, &line);
            }
            return self.client_answer(client, &line);
        }
        let mut out = Outbox::default();
        if self.cluster.deliver(self.now, msg, &mut out) {
            self.trace.deliver(self.now, from, to, &line);
            self.apply(to, out);
        } else {
            self.stats.messages_lost += 1;
            self.trace.lost(self.now, from, to, &line);
        }
    }

    pub(crate) fn anomaly(&mut self, text: String) {
        self.trace.note(self.now, &text);
        self.anomalies.push(format!("at {} ms: {text}", self.now));
    }

    fn client_next(&mut self, client: u32) {
        if self.now >= self.config.clients_stop_at_ms() {
            return;
        }
        let (msg, op) = self.workload.invoke(&mut self.rng, self.now, client);
        self.sent_by_client(client, msg, op);
    }

    /// Sends `command` on `key` from `client` now, besides its random operations (for
    /// scenarios that need a precise order); returns the operation's index.
    pub fn issue(&mut self, client: u32, key: &str, command: Command) -> usize {
        let (msg, op) = self.workload.issue(self.now, client, key, command);
        self.sent_by_client(client, msg, op);
        op
    }

    fn sent_by_client(&mut self, client: u32, msg: Message, op: usize) {
        self.send(msg);
        let at = self.now + self.config.client_timeout_ms;
        self.schedule(at, Event::ClientTimeout { client, op });
    }

    fn client_answer(&mut self, client: u32, line: &[u8]) {
        match self.workload.answer(&mut self.rng, self.now, client, line) {
            Ok(Some(next)) => self.after(next),
            Ok(None) => {}
            Err(text) => self.anomaly(text),
        }
    }

    fn after(&mut self, next: Next) {
        let at = self.now + next.think_ms;
        self.schedule(
            at,
            Event::ClientNext {
                client: next.client,
            },
        );
    }

    /// The faults stop: the network heals, reads stop failing, every down node restarts.
    fn heal(&mut self) {
        self.healed = true;
        self.network.heal();
        for disk in self.cluster.disks() {
            disk.set_read_failure(0.0);
        }
        self.trace.note(self.now, "faults stop");
        for node in self.cluster.down() {
            self.start(node);
        }
    }

    /// What the clients recorded.
    pub fn history(&self) -> &History {
        &self.workload.history
    }

    /// What the serving nodes saw of each operation.
    pub fn served(&self) -> &ServedLog {
        &self.workload.served
    }

    /// Reads that failed on any disk.
    pub fn failed_reads(&self) -> u64 {
        self.cluster.disks().map(|d| d.failed_reads()).sum()
    }

    /// Values written that hold a log frame lookalike, by either mode's clients.
    pub fn lookalike_values(&self) -> u64 {
        let eventual = self
            .eventual
            .as_ref()
            .map_or(0, |e| e.workload.lookalike_values);
        self.workload.lookalike_values + eventual
    }

    /// The cluster as it is now, for the final checks, and any value that could not be
    /// read back from a node's disk.
    pub(crate) fn snapshot(&self) -> (ClusterSnapshot, Vec<String>) {
        self.cluster.snapshot(self.replication)
    }
}

/// What a mode builds: its nodes, where clients connect, how many nodes hold a key.
pub(crate) struct Shape {
    pub(crate) cluster: Cluster,
    /// The nodes clients connect to (client `c` to entry `c` modulo their number).
    pub(crate) entries: Vec<NodeId>,
    pub(crate) replication: usize,
}

/// Strong mode: one coordinator that every client talks to, and the KV servers on the
/// ring, each key on its primary and the primary's successor.
fn strong_mode(config: &SimConfig, rng: &mut ChaCha8Rng) -> Shape {
    let mut cluster = Cluster::default();
    let coordinator = RoleSpec::Coordinator(CoordinatorSpec {
        expected_servers: config.server_ids.len(),
        timeout_ms: config.timeout_ms,
        cache: config.coordinator_cache,
        buggify_until_ms: config.buggify_until_ms(),
        log_compact_bytes: config.coordinator_log_compact_bytes,
    });
    cluster.add(NodeId::Coordinator, coordinator, rng.random());
    for &id in &config.server_ids {
        let server = RoleSpec::KvServer(KvServerSpec {
            cache: config.server_cache,
            buggify_until_ms: config.buggify_until_ms(),
            segment_bytes: config.server_segment_bytes,
        });
        cluster.add(NodeId::Node(id), server, rng.random());
    }
    Shape {
        cluster,
        entries: vec![NodeId::Coordinator],
        replication: 2,
    }
}

/// Peer mode: every node serves clients and coordinates their updates over the key's
/// replicas (every node, or the preference list of the configured replication); clients
/// connect to nodes drawn at random, so coordinators of one key collide.
fn peer_mode(config: &SimConfig, rng: &mut ChaCha8Rng) -> Shape {
    let mut cluster = Cluster::default();
    let spec = PeerSpec {
        nodes: config.server_ids.clone(),
        replication: config.replication,
        timeout_ms: config.timeout_ms,
        cache: config.server_cache,
        buggify_until_ms: config.buggify_until_ms(),
        log_compact_bytes: config.node_log_compact_bytes,
    };
    for &id in &config.server_ids {
        cluster.add(NodeId::Node(id), RoleSpec::Peer(spec.clone()), rng.random());
    }
    let entries = (0..config.clients.max(1))
        .map(|_| {
            let at = rng.random_range(0..config.server_ids.len());
            NodeId::Node(config.server_ids[at])
        })
        .collect();
    Shape {
        cluster,
        entries,
        replication: config.replication.unwrap_or(config.server_ids.len()),
    }
}
