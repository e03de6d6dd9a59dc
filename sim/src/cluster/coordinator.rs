//! The strong-mode coordinator as a cluster node: clients and KV servers talk to it, and
//! it keeps, per run, where each server listens and where each answer goes. Its log
//! (members, epochs, commit decisions) lives on its simulated disk, so it crashes and
//! recovers like the KV servers.

use std::collections::{BTreeMap, VecDeque};

use ringkv_core::buggify::BuggifyConfig;
use ringkv_core::cache::CacheConfig;
use ringkv_core::coordinator::record::CoordinatorRecord;
use ringkv_core::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorInput, CoordinatorOutput,
};
use ringkv_core::proto::{
    ClientRequest, ClientResponse, Envelope, ParticipantRequest, ParticipantResponse, Register,
    RegisterResponse, WireMessage,
};
use ringkv_core::replica::PersistToken;
use ringkv_core::{ReplyTo, Role, Ts};

use super::client_port::ClientPort;
use super::outbox::{Outbox, ServedStep};
use super::{compact_log_if_due, Boot, NodeLog};
use crate::check::ClusterSnapshot;
use crate::disk::{Journal, LogCompaction, SimDisk};
use crate::network::{Channel, Endpoint, Message, NodeId};

/// What a coordinator recovered from a log must keep: what recovery reports (members,
/// open commits, staged transactions, epoch) and the records it would compact to (which
/// name them).
type RecoveredView = ((usize, usize, usize), u32, Vec<CoordinatorRecord>);

/// Recovers a coordinator of `config` from `log` and says what it holds.
fn recovered_view(config: CoordinatorConfig, log: &[u8]) -> Result<RecoveredView, String> {
    let (coordinator, report) = Coordinator::recover(config, log).map_err(|e| e.to_string())?;
    let counts = (report.members, report.open_commits, report.staged);
    Ok((counts, report.epoch, coordinator.compaction_records()))
}

/// How to start a coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorSpec {
    /// How many KV servers make the ring complete.
    pub expected_servers: usize,
    /// Phase-1 and read timeout.
    pub timeout_ms: Ts,
    /// Its cache.
    pub cache: CacheConfig,
    /// Until when the core's fault sites may fire, in runs that turn them on.
    pub buggify_until_ms: Option<Ts>,
    /// Past how many bytes it rewrites its log; never when `None`.
    pub log_compact_bytes: Option<usize>,
}

/// A running coordinator.
pub struct CoordinatorNode {
    me: Endpoint,
    coordinator: Coordinator,
    /// What it was started with, for the recoveries that check a compaction.
    config: CoordinatorConfig,
    disk: SimDisk,
    journal: Journal,
    compaction: LogCompaction,
    /// The run of each server at its latest registered address.
    address_book: BTreeMap<u64, u32>,
    /// Where each registration answer goes.
    registrations: BTreeMap<ReplyTo, Endpoint>,
    clients: ClientPort<ClientRequest>,
    next_handle: u64,
}

impl CoordinatorNode {
    /// Recovers the coordinator from what its disk holds, as the real one does: its ring,
    /// its epoch, and the commits whose phase 2 runs again.
    pub fn start(spec: &CoordinatorSpec, boot: &Boot, out: &mut Outbox) -> Self {
        let mut config = CoordinatorConfig::new(spec.expected_servers);
        config.cache = spec.cache;
        config.timeout_ms = spec.timeout_ms;
        config.seed = boot.seed;
        config.buggify = spec.buggify_until_ms.map(|until_ms| BuggifyConfig {
            seed: boot.seed.rotate_left(17),
            until_ms,
        });
        let bytes = boot.disk.contents();
        let (coordinator, report) = match Coordinator::recover(config, &bytes) {
            Ok(recovered) => recovered,
            Err(err) => panic!("simulator built a bad coordinator config: {err}"),
        };
        boot.disk.truncate_and_sync(report.valid_len as usize);
        out.note(format!(
            "coordinator starts (incarnation {}): {} records, {} members, {} open commits, {} staged, epoch {}, log {} of {} bytes valid, {:?}",
            boot.incarnation, report.records, report.members, report.open_commits,
            report.staged, report.epoch, report.valid_len, bytes.len(), report.stop
        ));
        if !report.anomalies.is_empty()
            || report.bad_record.is_some()
            || report.after.is_corruption()
        {
            out.anomaly(format!(
                "coordinator recovery: {:?} {:?} {:?}",
                report.anomalies, report.bad_record, report.after
            ));
        }
        let mut node = Self {
            me: Endpoint::at(NodeId::Coordinator, boot.incarnation),
            coordinator,
            config,
            disk: boot.disk.clone(),
            journal: Journal::default(),
            compaction: LogCompaction::new(spec.log_compact_bytes),
            address_book: BTreeMap::new(),
            registrations: BTreeMap::new(),
            clients: ClientPort::default(),
            next_handle: 0,
        };
        let mut inputs = VecDeque::new();
        while let Some(output) = node.coordinator.poll_output() {
            node.carry_out(boot.now, output, &mut inputs, out);
        }
        out.sync_started |= node.journal.start_sync();
        node
    }

    /// The sync under way completed: what it covered is durable.
    pub fn sync_done(&mut self, now: Ts, out: &mut Outbox) {
        if let Some(token) = self.journal.finish_sync(&self.disk) {
            let token = PersistToken(token);
            self.run(now, CoordinatorInput::Persisted { token }, out);
        }
    }

    fn handle(&mut self) -> ReplyTo {
        self.next_handle += 1;
        ReplyTo(self.next_handle)
    }

    /// Decodes a message on one of the coordinator's ports and hands it to the core.
    pub fn deliver(&mut self, now: Ts, msg: Message, out: &mut Outbox) {
        let line = msg.line.strip_suffix(b"\n").unwrap_or(&msg.line);
        let input = match msg.channel {
            Channel::ClientRequest => match ClientRequest::decode(line) {
                Ok(env) => {
                    let handle = self.handle();
                    let access = env.msg.access().map(|(k, a)| (k.to_owned(), a));
                    let id = env.id.clone();
                    let admitted = self
                        .clients
                        .request(msg.from, handle.0, env.id, access, env.msg);
                    match admitted {
                        Some(_) => out.served.push(ServedStep::Dispatched(id)),
                        None => out.held_requests += 1,
                    }
                    admitted.map(|msg| CoordinatorInput::Client { from: handle, msg })
                }
                Err(err) => return out.anomaly(format!("client request undecodable: {err}")),
            },
            Channel::Register => match Register::decode(line) {
                Ok(env) => {
                    let handle = self.handle();
                    self.registrations.insert(handle, msg.from);
                    Some(CoordinatorInput::Register {
                        from: handle,
                        msg: env.msg,
                    })
                }
                Err(err) => return out.anomaly(format!("registration undecodable: {err}")),
            },
            Channel::ParticipantResponse => match ParticipantResponse::decode(line) {
                Ok(env) => match msg.from.node {
                    NodeId::Node(server) => Some(CoordinatorInput::Server { server, msg: env }),
                    other => return out.anomaly(format!("participant answer from {other:?}")),
                },
                Err(err) => return out.anomaly(format!("participant answer undecodable: {err}")),
            },
            other => return out.anomaly(format!("coordinator got a {other:?} message")),
        };
        if let Some(input) = input {
            self.run(now, input, out);
        }
    }

    /// Time passed.
    pub fn tick(&mut self, now: Ts, out: &mut Outbox) {
        self.run(now, CoordinatorInput::Tick, out);
    }

    /// When the core or a deferred log write wants a tick.
    pub fn poll_timeout(&self) -> Option<Ts> {
        [self.coordinator.poll_timeout(), self.journal.deferred_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Hands `input` to the core, then every request its answers released, as the shell
    /// does in its next turn; then compacts the log if that is due.
    fn run(&mut self, now: Ts, input: CoordinatorInput, out: &mut Outbox) {
        let mut inputs = VecDeque::from([input]);
        self.handle_all(now, &mut inputs, out);
        if let Some(covered) = self.compact_if_due(out) {
            inputs.push_back(CoordinatorInput::Persisted { token: covered });
            self.handle_all(now, &mut inputs, out);
        }
        out.sync_started |= self.journal.start_sync_if_due(now);
    }

    fn handle_all(&mut self, now: Ts, inputs: &mut VecDeque<CoordinatorInput>, out: &mut Outbox) {
        while let Some(input) = inputs.pop_front() {
            let absorbed = self.coordinator.absorbed_updates();
            self.coordinator.handle(now, input);
            self.coordinator.check_invariants();
            out.absorbed_updates += self.coordinator.absorbed_updates() - absorbed;
            while let Some(output) = self.coordinator.poll_output() {
                self.carry_out(now, output, inputs, out);
            }
        }
    }

    /// As the shell does between two syncs: once the log is due, it is rewritten to what
    /// recovery needs (`Coordinator::compaction_log`), durably and at once, as the
    /// shell's write, fsync and rename do, and checked against recovery. Returns the last
    /// write the new log covered that no sync had, which is durable now.
    fn compact_if_due(&mut self, out: &mut Outbox) -> Option<PersistToken> {
        let log = NodeLog {
            compaction: &mut self.compaction,
            journal: &mut self.journal,
            disk: &self.disk,
        };
        let config = self.config;
        let recover = |log: &[u8]| recovered_view(config, log);
        let mut covered = None;
        let install = |_: &mut Coordinator, _, token| covered = token;
        let core = (NodeId::Coordinator, &mut self.coordinator);
        let build = |c: &Coordinator| Ok(c.compaction_log());
        compact_log_if_due(log, core, out, build, Vec::as_slice, recover, install);
        covered
    }

    fn carry_out(
        &mut self,
        now: Ts,
        output: CoordinatorOutput,
        inputs: &mut VecDeque<CoordinatorInput>,
        out: &mut Outbox,
    ) {
        match output {
            CoordinatorOutput::ClientReply { to, msg } => {
                // An answer that may follow a decision leaves: the moment the fault
                // schedule may crash the coordinator at (its answer maybe delivered, the
                // rest of the step's messages and its unsynced writes maybe lost).
                out.decided |= matches!(&msg, ClientResponse::Success | ClientResponse::Error(_));
                let answer = msg.clone();
                let encode = |id| Envelope::with_id(id, msg).encode();
                let Some(answered) = self.clients.answer(to.0, encode) else {
                    return out.anomaly(format!("coordinator answered unknown handle {to:?}"));
                };
                out.served.push(ServedStep::Answered(answered.id, answer));
                for (handle, msg) in answered.released {
                    out.served
                        .push(ServedStep::Dispatched(self.clients.id_of(handle)));
                    let from = ReplyTo(handle);
                    inputs.push_back(CoordinatorInput::Client { from, msg });
                }
                for (to, line) in answered.lines {
                    out.send(self.message(to, Channel::ClientResponse, line));
                }
            }
            CoordinatorOutput::RegisterReply { to, msg } => {
                let Some(server) = self.registrations.remove(&to) else {
                    return out.anomaly(format!("coordinator answered unknown handle {to:?}"));
                };
                let line = Envelope::<RegisterResponse>::bare(msg).encode();
                out.send(self.message(server, Channel::RegisterResponse, line));
            }
            CoordinatorOutput::Send { server, msg } => {
                // Phase 2 of a commit leaves: its decision is durable, and a crash now
                // (some participants told, some not) leaves recovery to finish it.
                out.decided |= matches!(msg.msg, ParticipantRequest::Commit { .. });
                let Some(&incarnation) = self.address_book.get(&server) else {
                    return out.anomaly(format!("coordinator sent to unregistered {server}"));
                };
                let to = Endpoint::at(NodeId::Node(server), incarnation);
                out.send(self.message(to, Channel::ParticipantRequest, msg.encode()));
            }
            CoordinatorOutput::ServerAddr { server, addr } => match parse_sim_addr(&addr) {
                Some((id, incarnation)) if id == server => {
                    self.address_book.insert(server, incarnation);
                }
                _ => out.anomaly(format!("server {server} registered odd address {addr}")),
            },
            CoordinatorOutput::Persist {
                token,
                bytes,
                urgency,
            } => {
                self.journal
                    .write_with(&self.disk, token.0, &bytes, urgency, now);
            }
            CoordinatorOutput::Hasten { .. } => self.journal.hasten(),
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

    /// Adds what the checks need: the transactions still open, and requests still held.
    pub fn snapshot(&self, sink: &mut ClusterSnapshot) {
        sink.open_transactions += self.coordinator.open_transactions();
        sink.held_requests += self.clients.held();
    }
}

/// The address a server registers in a given run: distinct per run, as a restarted
/// process listens on a new port.
pub fn sim_addr(id: u64, incarnation: u32) -> String {
    format!("s{id}-i{incarnation}:7000")
}

fn parse_sim_addr(addr: &str) -> Option<(u64, u32)> {
    let host = addr.strip_suffix(":7000")?.strip_prefix('s')?;
    let (id, incarnation) = host.split_once("-i")?;
    Some((id.parse().ok()?, incarnation.parse().ok()?))
}
