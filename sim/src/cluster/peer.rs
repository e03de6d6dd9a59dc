//! A peer two-phase-commit node as a cluster node: the core's peer node over a simulated
//! log, serving clients on its port and talking to the other nodes on the same port, as
//! the net shell runs it. Its log lives on its simulated disk, so it crashes (between a
//! decision and its phase 2 included) and recovers like any other node.

use std::collections::VecDeque;

use ringkv_core::buggify::BuggifyConfig;
use ringkv_core::cache::CacheConfig;
use ringkv_core::log::after_prefix;
use ringkv_core::peer::{Peer, PeerConfig, PeerInput, PeerOutput};
use ringkv_core::proto::peer::{PeerClientRequest, PeerMessage, PeerReply};
use ringkv_core::proto::{Envelope, TxId, WireMessage};
use ringkv_core::storage::PersistToken;
use ringkv_core::{ReplyTo, Role, Ts};

use super::client_port::ClientPort;
use super::outbox::{Outbox, ServedStep};
use super::{compact_log_if_due, Boot, LogBytes, NodeLog};
use crate::check::{ClusterSnapshot, ServerSnapshot};
use crate::disk::{Journal, LogCompaction, SimDisk};
use crate::network::{Channel, Endpoint, Message, NodeId};

/// What a peer node recovered from a log holds that recovery must keep: every committed
/// value, the transactions in doubt, and the work it resumes (commits whose phase 2 runs
/// again).
type RecoveredView = (Vec<(String, Option<String>)>, Vec<TxId>, usize);

/// Recovers a peer node of `config` from `log`, read without faults, and says what it
/// holds.
fn view(config: &PeerConfig, log: &[u8]) -> Result<RecoveredView, String> {
    let recovered = Peer::recover(config.clone(), 0, log, LogBytes(log.to_vec()));
    let (peer, _) = recovered.map_err(|err| format!("{err:?}"))?;
    let values = peer
        .committed_keys()
        .map(|key| (key.to_owned(), peer.committed_value(key).ok().flatten()))
        .collect();
    Ok((values, peer.in_doubt().collect(), peer.open_work()))
}

/// How to start a peer node.
#[derive(Clone, Debug)]
pub struct PeerSpec {
    /// Every node of the cluster.
    pub nodes: Vec<u64>,
    /// How many nodes hold each key; `None`: every node.
    pub replication: Option<usize>,
    /// Phase-1, retry and read timeout.
    pub timeout_ms: Ts,
    /// The store's cache.
    pub cache: CacheConfig,
    /// Until when the core's fault sites may fire, in runs that turn them on.
    pub buggify_until_ms: Option<Ts>,
    /// When the node rewrites its log ([`LogCompaction`]); `None`: never.
    pub log_compact_bytes: Option<usize>,
}

/// A running peer node.
pub struct PeerNode {
    id: u64,
    me: Endpoint,
    peer: Peer<SimDisk>,
    disk: SimDisk,
    journal: Journal,
    clients: ClientPort<PeerClientRequest>,
    compaction: LogCompaction,
    next_handle: u64,
}

impl PeerNode {
    /// Recovers the node from what its disk holds, as the real one does.
    pub fn start(spec: &PeerSpec, boot: &Boot, out: &mut Outbox) -> Self {
        let NodeId::Node(id) = boot.id else {
            panic!("a peer node needs a ring ID, not {:?}", boot.id);
        };
        let nodes = spec
            .nodes
            .iter()
            .map(|&n| (n, format!("n{n}:7000")))
            .collect();
        let mut config = PeerConfig::new(id, nodes);
        config.replication = spec.replication;
        config.timeout_ms = spec.timeout_ms;
        config.cache = spec.cache;
        config.seed = boot.seed;
        config.buggify = spec.buggify_until_ms.map(|until_ms| BuggifyConfig {
            seed: boot.seed.rotate_left(23),
            until_ms,
        });
        let bytes = boot.disk.contents();
        let recovered = Peer::recover(config, boot.now, &bytes, boot.disk.clone());
        let (peer, report) = match recovered {
            Ok(recovered) => recovered,
            Err(err) => panic!("simulator built a bad peer config: {err}"),
        };
        boot.disk.truncate_and_sync(report.valid_len as usize);
        out.note(format!(
            "node {id} starts (incarnation {}): {} records, {} keys, {} in doubt, {} open commits, epoch {}, log {} of {} bytes valid, {:?}",
            boot.incarnation, report.records, report.committed_keys, report.in_doubt,
            report.open_commits, report.epoch, report.valid_len, bytes.len(), report.stop
        ));
        // The shell judges what follows the valid prefix itself, as here: a valid frame
        // after a bad one is corruption, which it refuses to cut.
        let after = after_prefix(&bytes, report.valid_len);
        if !report.anomalies.is_empty() || report.bad_record.is_some() || after.is_corruption() {
            out.anomaly(format!(
                "node {id} recovery: {:?} {:?} {after:?}",
                report.anomalies, report.bad_record
            ));
        }
        let mut node = Self {
            id,
            me: Endpoint::at(boot.id, boot.incarnation),
            peer,
            disk: boot.disk.clone(),
            journal: Journal::default(),
            clients: ClientPort::default(),
            compaction: LogCompaction::new(spec.log_compact_bytes),
            next_handle: 0,
        };
        node.drain(&mut VecDeque::new(), out);
        out.sync_started |= node.journal.start_sync();
        node
    }

    /// Decodes a message on the node's port and hands it to the core.
    pub fn deliver(&mut self, now: Ts, msg: Message, out: &mut Outbox) {
        let line = msg.line.strip_suffix(b"\n").unwrap_or(&msg.line);
        let input = match msg.channel {
            Channel::ClientRequest => match PeerClientRequest::decode(line) {
                Ok(env) => {
                    self.next_handle += 1;
                    let handle = self.next_handle;
                    let access = env.msg.access().map(|(k, a)| (k.to_owned(), a));
                    let id = env.id.clone();
                    match self
                        .clients
                        .request(msg.from, handle, env.id, access, env.msg)
                    {
                        Some(msg) => {
                            out.served.push(ServedStep::Dispatched(id));
                            PeerInput::Client {
                                from: ReplyTo(handle),
                                msg,
                            }
                        }
                        None => {
                            out.held_requests += 1;
                            return;
                        }
                    }
                }
                Err(err) => return out.anomaly(format!("client request undecodable: {err}")),
            },
            Channel::Peer => match PeerMessage::decode(line) {
                Ok(env) if NodeId::Node(env.msg.from) == msg.from.node => PeerInput::Peer(env.msg),
                Ok(env) => {
                    return out.anomaly(format!("{:?} claims to be {}", msg.from, env.msg.from))
                }
                Err(err) => return out.anomaly(format!("peer message undecodable: {err}")),
            },
            other => return out.anomaly(format!("node {} got a {other:?} message", self.id)),
        };
        self.run(now, input, out);
    }

    /// Time passed.
    pub fn tick(&mut self, now: Ts, out: &mut Outbox) {
        self.run(now, PeerInput::Tick, out);
    }

    /// The sync under way completed: what it covered is durable.
    pub fn sync_done(&mut self, now: Ts, out: &mut Outbox) {
        if let Some(token) = self.journal.finish_sync(&self.disk) {
            let token = PersistToken(token);
            self.run(now, PeerInput::Persisted { token }, out);
        } else {
            out.sync_started |= self.journal.start_sync();
        }
    }

    /// When the core wants a tick.
    pub fn poll_timeout(&self) -> Option<Ts> {
        self.peer.poll_timeout()
    }

    /// Hands `input` to the core, then every request its answers released; then
    /// compacts the log if that is due.
    fn run(&mut self, now: Ts, input: PeerInput, out: &mut Outbox) {
        let commits = self.peer.durable_commits();
        let absorbed = self.peer.absorbed_updates();
        let mut inputs = VecDeque::from([input]);
        self.handle_all(now, &mut inputs, out);
        if self.compact_if_due(out) {
            self.drain(&mut inputs, out);
            self.handle_all(now, &mut inputs, out);
        }
        out.decided |= self.peer.durable_commits() > commits;
        out.absorbed_updates += self.peer.absorbed_updates() - absorbed;
        out.sync_started |= self.journal.start_sync();
    }

    fn handle_all(&mut self, now: Ts, inputs: &mut VecDeque<PeerInput>, out: &mut Outbox) {
        while let Some(input) = inputs.pop_front() {
            self.peer.handle(now, input);
            self.drain(inputs, out);
        }
    }

    /// As the shells do between two syncs: the log is rewritten to what recovery needs,
    /// covering the writes not yet synced. True if it was.
    fn compact_if_due(&mut self, out: &mut Outbox) -> bool {
        let log = NodeLog {
            compaction: &mut self.compaction,
            journal: &mut self.journal,
            disk: &self.disk,
        };
        let config = self.peer.config().clone();
        let build = |peer: &Peer<SimDisk>| peer.compacted_log().map_err(|err| err.to_string());
        let recover = |log: &[u8]| view(&config, log);
        let install = |peer: &mut Peer<SimDisk>, compaction, covered| {
            peer.install_compaction(&compaction, covered)
        };
        let core = (NodeId::Node(self.id), &mut self.peer);
        compact_log_if_due(log, core, out, build, |c| &c.bytes, recover, install)
    }

    fn drain(&mut self, inputs: &mut VecDeque<PeerInput>, out: &mut Outbox) {
        self.peer.check_invariants();
        while let Some(output) = self.peer.poll_output() {
            match output {
                PeerOutput::Send { to, msg } => {
                    let to = Endpoint::any(NodeId::Node(to));
                    out.send(self.message(to, Channel::Peer, msg.encode()));
                }
                PeerOutput::Reply { to, msg } => self.answer_client(to, msg, inputs, out),
                PeerOutput::Persist { token, bytes } => {
                    self.journal.write(&self.disk, token.0, &bytes);
                }
            }
        }
    }

    fn answer_client(
        &mut self,
        to: ReplyTo,
        msg: PeerReply,
        inputs: &mut VecDeque<PeerInput>,
        out: &mut Outbox,
    ) {
        let answer = match &msg {
            PeerReply::Client(answer) => Some(answer.clone()),
            PeerReply::Status { .. } => None,
        };
        let encode = |id| Envelope::with_id(id, msg).encode();
        let Some(answered) = self.clients.answer(to.0, encode) else {
            return out.anomaly(format!("node {} answered unknown handle {to:?}", self.id));
        };
        if let Some(answer) = answer {
            out.served.push(ServedStep::Answered(answered.id, answer));
        }
        for (handle, msg) in answered.released {
            out.served
                .push(ServedStep::Dispatched(self.clients.id_of(handle)));
            let from = ReplyTo(handle);
            inputs.push_back(PeerInput::Client { from, msg });
        }
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

    /// Adds this node's committed keys, what it holds in doubt, and its open work.
    pub fn snapshot(&self, snapshot: &mut ClusterSnapshot, errors: &mut Vec<String>) {
        let id = self.id;
        let mut values = std::collections::BTreeMap::new();
        for key in self.peer.committed_keys() {
            match self.peer.committed_value(key) {
                Ok(Some(value)) => {
                    values.insert(key.to_owned(), value);
                }
                Ok(None) => errors.push(format!("node {id} lists {key:?} without a value")),
                Err(err) => errors.push(format!("node {id} cannot read {key:?}: {err}")),
            }
        }
        let server = ServerSnapshot {
            values,
            in_doubt: self.peer.in_doubt().collect(),
        };
        snapshot.servers.insert(id, Some(server));
        snapshot.open_transactions += self.peer.open_work();
        snapshot.held_requests += self.clients.held();
    }
}
