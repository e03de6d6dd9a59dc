//! An eventual-mode node as a cluster node: the core's `eventual::Node` over a simulated
//! log. Clients and the other nodes share its one port, told apart by the message type,
//! as in the shells. Its data directory holds the log and an incarnation file: a run
//! recovers from the log under the kept incarnation, and a run on a lost (wiped) disk
//! starts a new node with a fresh incarnation, which then catches up from the others.

use std::collections::BTreeMap;

use ringkv_core::buggify::BuggifyConfig;
use ringkv_core::cache::CacheConfig;
use ringkv_core::eventual::{
    self, Cluster as Members, Conflicts, KeyState, Node, NodeConfig, NodeInput, NodeOutput, Repair,
};
use ringkv_core::log::after_prefix;
use ringkv_core::proto::{Envelope, EventualRequest, EventualResponse, NodeMessage};
use ringkv_core::storage::PersistToken;
use ringkv_core::{ReplyTo, Role, Ts};

use super::client_port::ClientPort;
use super::outbox::Outbox;
use super::{compact_log_if_due, Boot, LogBytes, NodeLog};
use crate::disk::{Journal, LogCompaction, SimDisk};
use crate::network::{Channel, Endpoint, Message, NodeId};

/// What a node recovered from `log` holds that recovery must keep: every key's state,
/// the hints for each node, the debts owed and whether it still catches up.
type RecoveredView = (Vec<(String, Option<KeyState>)>, Vec<usize>, usize, bool);

/// Recovers a node of `config` from `log`, read without faults, and says what it holds.
fn view(config: &NodeConfig, log: &[u8]) -> Result<RecoveredView, String> {
    let (node, _) = Node::recover(config.clone(), log, LogBytes(log.to_vec()))?;
    let states = node
        .keys()
        .map(|key| (key.to_owned(), node.local_state(key)))
        .collect();
    let hints = config
        .cluster
        .nodes
        .keys()
        .map(|&id| node.hints_for(id))
        .collect();
    Ok((states, hints, node.owed_count(), node.catching_up()))
}

/// How to start an eventual node; every node of a world gets the same settings.
#[derive(Clone, Debug)]
pub struct EventualSpec {
    /// The static membership (the cluster file).
    pub members: Members,
    /// N.
    pub replication: usize,
    /// How long a request waits for its replicas.
    pub timeout_ms: Ts,
    /// Siblings or last write wins.
    pub conflicts: Conflicts,
    /// Which repairs run.
    pub repair: Repair,
    /// The cache in front of the log.
    pub cache: CacheConfig,
    /// Until when the core's fault sites may fire, in runs that turn them on.
    pub buggify_until_ms: Option<Ts>,
    /// When the node rewrites its log ([`LogCompaction`]); `None`: never.
    pub log_compact_bytes: Option<usize>,
}

/// A running eventual node.
pub struct EventualNode {
    id: u64,
    me: Endpoint,
    disk: SimDisk,
    journal: Journal,
    node: Node<SimDisk>,
    clients: ClientPort<EventualRequest>,
    compaction: LogCompaction,
    next_handle: u64,
    /// The time of the last input: a deadline the core set in the past (0 means "at
    /// once") is due now, and the cluster schedules ticks at their exact time.
    now: Ts,
}

impl EventualNode {
    /// Recovers the node from its log under the incarnation its data directory keeps, or
    /// starts a new one (with a fresh incarnation, kept from now on) on an empty directory.
    pub fn start(spec: &EventualSpec, boot: &Boot, out: &mut Outbox) -> Self {
        let NodeId::Node(id) = boot.id else {
            panic!("an eventual node needs a ring ID, not {:?}", boot.id);
        };
        let mut config = NodeConfig::new(id, spec.members.clone(), 0, boot.seed);
        config.replication = spec.replication;
        config.timeout_ms = spec.timeout_ms;
        config.conflicts = spec.conflicts;
        config.repair = spec.repair;
        config.cache = spec.cache;
        config.buggify = spec.buggify_until_ms.map(|until_ms| BuggifyConfig {
            seed: boot.seed.rotate_left(23),
            until_ms,
        });
        let bytes = boot.disk.contents();
        let node = match boot.disk.incarnation() {
            Some(incarnation) => {
                config.incarnation = incarnation;
                let recovered = Node::recover(config, &bytes, boot.disk.clone());
                let (node, report) =
                    recovered.unwrap_or_else(|e| panic!("simulator built a bad config: {e}"));
                boot.disk.truncate_and_sync(report.valid_len as usize);
                out.note(format!(
                    "node {id} starts (run {}, incarnation {incarnation}): {} records, {} keys, {} hints, log {} of {} bytes valid, {:?}",
                    boot.incarnation, report.records, report.keys, report.hints,
                    report.valid_len, bytes.len(), report.stop
                ));
                // The shell judges what follows the valid prefix itself, as here: a valid
                // frame after a bad one is corruption, which it refuses to cut.
                let after = after_prefix(&bytes, report.valid_len);
                if !report.anomalies.is_empty()
                    || report.bad_record.is_some()
                    || after.is_corruption()
                {
                    out.anomaly(format!(
                        "node {id} recovery: {:?} {:?} {after:?}",
                        report.anomalies, report.bad_record
                    ));
                }
                node
            }
            None => {
                // As the shell does on an empty directory: a fresh incarnation, written
                // before anything else, so no dot of an earlier life is handed out again.
                let incarnation = boot.seed.rotate_left(41) | 1;
                boot.disk.truncate_and_sync(0);
                boot.disk.set_incarnation(incarnation);
                config.incarnation = incarnation;
                out.note(format!(
                    "node {id} starts on an empty disk (run {}, incarnation {incarnation})",
                    boot.incarnation
                ));
                Node::new(config, boot.disk.clone())
                    .unwrap_or_else(|e| panic!("simulator built a bad config: {e}"))
            }
        };
        let mut me = Self {
            id,
            me: Endpoint::at(boot.id, boot.incarnation),
            disk: boot.disk.clone(),
            journal: Journal::default(),
            node,
            clients: ClientPort::default(),
            compaction: LogCompaction::new(spec.log_compact_bytes),
            next_handle: 0,
            now: boot.now,
        };
        me.drain(out);
        me
    }

    /// Decodes a line on the node's port and hands it to the core.
    pub fn deliver(&mut self, now: Ts, msg: Message, out: &mut Outbox) {
        let line = msg.line.strip_suffix(b"\n").unwrap_or(&msg.line);
        if msg.channel != Channel::NodePort {
            return out.anomaly(format!("node {} got a {:?} message", self.id, msg.channel));
        }
        let env = match Envelope::<NodeMessage>::decode(line) {
            Ok(env) => env,
            Err(err) => return out.anomaly(format!("node {} port: undecodable {err}", self.id)),
        };
        let input = match (env.msg, msg.from.node) {
            (NodeMessage::Client(request), NodeId::Client(_)) => {
                self.next_handle += 1;
                let handle = self.next_handle;
                let admitted = self
                    .clients
                    .request(msg.from, handle, env.id, None, request);
                match admitted {
                    Some(request) => NodeInput::Client {
                        from: ReplyTo(handle),
                        msg: request,
                    },
                    None => return out.anomaly("a request without a key was held".to_owned()),
                }
            }
            (NodeMessage::Peer(peer), NodeId::Node(from)) => NodeInput::Peer { from, msg: peer },
            (other, from) => {
                return out.anomaly(format!("node {} got {other:?} from {from:?}", self.id))
            }
        };
        self.now = now;
        self.node.handle(now, input);
        self.drain(out);
    }

    /// The failure detector's verdict on another node.
    pub fn detected(&mut self, now: Ts, node: u64, up: bool, out: &mut Outbox) {
        let input = if up {
            NodeInput::NodeUp(node)
        } else {
            NodeInput::NodeDown(node)
        };
        self.now = now;
        self.node.handle(now, input);
        self.drain(out);
    }

    /// Time passed.
    pub fn tick(&mut self, now: Ts, out: &mut Outbox) {
        self.now = now;
        self.node.handle(now, NodeInput::Tick);
        self.drain(out);
    }

    /// The sync under way completed: what it covered is durable.
    pub fn sync_done(&mut self, now: Ts, out: &mut Outbox) {
        if let Some(token) = self.journal.finish_sync(&self.disk) {
            let token = PersistToken(token);
            self.now = now;
            self.node.handle(now, NodeInput::Persisted { token });
        }
        self.drain(out);
    }

    /// When the core wants a tick.
    pub fn poll_timeout(&self) -> Option<Ts> {
        self.node.poll_timeout().map(|at| at.max(self.now))
    }

    /// Carries out what the core asks for, and compacts the log when it is due.
    fn drain(&mut self, out: &mut Outbox) {
        self.carry_out(out);
        if self.compact_if_due(out) {
            self.carry_out(out);
        }
        out.sync_started |= self.journal.start_sync();
    }

    /// As the shells do between two syncs: the log is rewritten to what recovery needs,
    /// covering the writes not yet synced. True if it was.
    fn compact_if_due(&mut self, out: &mut Outbox) -> bool {
        let log = NodeLog {
            compaction: &mut self.compaction,
            journal: &mut self.journal,
            disk: &self.disk,
        };
        let config = self.node.config().clone();
        let build = |node: &Node<SimDisk>| node.compaction_log();
        let recover = |log: &[u8]| view(&config, log);
        let install = |node: &mut Node<SimDisk>, compacted, covered| {
            node.install_compaction(compacted, covered)
        };
        let core = (NodeId::Node(self.id), &mut self.node);
        compact_log_if_due(log, core, out, build, |c| &c.bytes, recover, install)
    }

    fn carry_out(&mut self, out: &mut Outbox) {
        self.node.check_invariants();
        while let Some(output) = self.node.poll_output() {
            match output {
                NodeOutput::Reply { to, msg } => self.reply(to, msg, out),
                NodeOutput::Send { to, msg } => {
                    let line = Envelope::bare(NodeMessage::Peer(msg)).encode();
                    let to = Endpoint::any(NodeId::Node(to));
                    out.send(self.message(to, Channel::NodePort, line));
                }
                NodeOutput::Persist { token, bytes } => {
                    self.journal.write(&self.disk, token.0, &bytes);
                }
            }
        }
    }

    fn reply(&mut self, to: ReplyTo, msg: EventualResponse, out: &mut Outbox) {
        let encode = |id| Envelope::with_id(id, msg).encode();
        let Some(answered) = self.clients.answer(to.0, encode) else {
            return out.anomaly(format!("node {} answered unknown handle {to:?}", self.id));
        };
        for (to, line) in answered.lines {
            out.send(self.message(to, Channel::ClientResponse, line));
        }
    }

    fn message(&self, to: Endpoint, channel: Channel, line: Vec<u8>) -> Message {
        Message {
            from: self.me,
            to,
            channel,
            line,
        }
    }

    /// The core node, for the checks (its states, hints, what it still owes).
    pub fn core(&self) -> &Node<SimDisk> {
        &self.node
    }

    /// This node's state of every key it holds, for the checks.
    pub fn states(&self) -> BTreeMap<String, KeyState> {
        let keys: Vec<String> = self.node.keys().map(str::to_owned).collect();
        keys.into_iter()
            .filter_map(|k| Some((k.clone(), self.node.local_state(&k)?)))
            .collect()
    }
}

/// The cluster file of a world whose nodes have `ids`, as the core reads it.
pub fn members(ids: &[u64]) -> Members {
    let text: String = ids.iter().map(|id| format!("{id} n{id}:7000\n")).collect();
    let own = ids.first().copied().unwrap_or(0);
    eventual::parse_cluster(&text, own).unwrap_or_else(|e| panic!("bad simulated cluster: {e}"))
}
