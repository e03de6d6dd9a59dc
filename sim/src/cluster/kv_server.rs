//! A strong-mode KV server as a cluster node: the core's replica over a simulated log,
//! and its registrar, which keeps the coordinator told where this run listens.

use std::collections::BTreeMap;

use ringkv_core::buggify::BuggifyConfig;
use ringkv_core::cache::CacheConfig;
use ringkv_core::proto::{Envelope, ParticipantRequest, Register, RegisterResponse, RequestId};
use ringkv_core::registration::{
    Registrar, RegistrationConfig, RegistrationInput, RegistrationOutput,
};
use ringkv_core::replica::{PersistToken, Replica, ReplicaConfig, ReplicaInput, ReplicaOutput};
use ringkv_core::{ReplyTo, Role, Ts};

use super::coordinator::sim_addr;
use super::kv_segments::{self, Segments};
use super::outbox::Outbox;
use super::Boot;
use crate::check::{ClusterSnapshot, ServerSnapshot};
use crate::disk::{Journal, SimDisk};
use crate::network::{Channel, Endpoint, Message, NodeId};

/// How to start a KV server.
#[derive(Clone, Debug)]
pub struct KvServerSpec {
    /// Its cache.
    pub cache: CacheConfig,
    /// Until when the core's fault sites may fire, in runs that turn them on.
    pub buggify_until_ms: Option<Ts>,
    /// The size at which the active log segment is sealed, and the sealed ones merged;
    /// `None`: the log is one file, never sealed.
    pub segment_bytes: Option<usize>,
}

/// A running KV server.
pub struct KvServerNode {
    id: u64,
    me: Endpoint,
    disk: SimDisk,
    journal: Journal,
    replica: Replica<SimDisk>,
    /// Seals and merges, when the log is kept in segments.
    segments: Option<Segments>,
    registrar: Registrar,
    /// Who asked each request the replica holds, and the id it carried.
    requests: BTreeMap<ReplyTo, (Endpoint, Option<RequestId>)>,
    next_handle: u64,
}

impl KvServerNode {
    /// Recovers the replica from what the disk holds, as the real server does, and
    /// starts registering at this run's address.
    pub fn start(spec: &KvServerSpec, boot: &Boot, out: &mut Outbox) -> Self {
        let NodeId::Node(id) = boot.id else {
            panic!("a KV server needs a ring ID, not {:?}", boot.id);
        };
        let config = ReplicaConfig {
            id: Some(id),
            cache: spec.cache,
            buggify: spec.buggify_until_ms.map(|until_ms| BuggifyConfig {
                seed: boot.seed.rotate_left(29),
                until_ms,
            }),
            ..ReplicaConfig::default()
        };
        let (replica, report) = match kv_segments::recover(config, &boot.disk) {
            Ok(recovered) => recovered,
            Err(err) => panic!("the simulator's KV server log broke its model: {err}"),
        };
        boot.disk.truncate_and_sync(report.valid_len as usize);
        let addr = sim_addr(id, boot.incarnation);
        let registration = RegistrationConfig {
            seed: boot.seed,
            ..RegistrationConfig::default()
        };
        let registrar = Registrar::new(boot.now, Register { id, addr }, registration);
        out.note(format!(
            "server {id} starts (incarnation {}): {} records, {} keys, {} in doubt, log {} of {} bytes valid, {:?}",
            boot.incarnation, report.records, report.committed_keys, report.in_doubt,
            report.valid_len, boot.disk.len(), report.stop
        ));
        if !report.anomalies.is_empty()
            || report.bad_record.is_some()
            || report.after.is_corruption()
        {
            out.anomaly(format!(
                "server {id} recovery: {:?} {:?} {:?}",
                report.anomalies, report.bad_record, report.after
            ));
        }
        let mut node = Self {
            id,
            me: Endpoint::at(boot.id, boot.incarnation),
            disk: boot.disk.clone(),
            journal: Journal::default(),
            replica,
            segments: spec
                .segment_bytes
                .map(|bytes| Segments::new(bytes, boot.seed.rotate_left(17))),
            registrar,
            requests: BTreeMap::new(),
            next_handle: 0,
        };
        node.drain(boot.now, out);
        node
    }

    /// Decodes a message on the server's ports and hands it to the replica or registrar.
    pub fn deliver(&mut self, now: Ts, msg: Message, out: &mut Outbox) {
        let line = msg.line.strip_suffix(b"\n").unwrap_or(&msg.line);
        match msg.channel {
            Channel::ParticipantRequest => match Envelope::<ParticipantRequest>::decode(line) {
                Ok(env) => {
                    self.next_handle += 1;
                    let from = ReplyTo(self.next_handle);
                    self.requests.insert(from, (msg.from, env.id));
                    let input = ReplicaInput::Request {
                        from,
                        msg: env.msg,
                        to: env.server,
                    };
                    self.replica.handle(now, input);
                }
                Err(err) => out.anomaly(format!("participant request undecodable: {err}")),
            },
            Channel::RegisterResponse => match Envelope::<RegisterResponse>::decode(line) {
                Ok(env) => self
                    .registrar
                    .handle(now, RegistrationInput::Answer(env.msg)),
                Err(err) => out.anomaly(format!("registration answer undecodable: {err}")),
            },
            other => out.anomaly(format!("server {} got a {other:?} message", self.id)),
        }
        self.drain(now, out);
    }

    /// Time passed: the registrar may refresh.
    pub fn tick(&mut self, now: Ts, out: &mut Outbox) {
        if let Some(segments) = &mut self.segments {
            segments.install_if_due(now, &self.disk, &mut self.replica, out);
        }
        self.registrar.handle(now, RegistrationInput::Tick);
        self.drain(now, out);
    }

    /// The sync under way completed: what it covered is durable.
    pub fn sync_done(&mut self, now: Ts, out: &mut Outbox) {
        if let Some(token) = self.journal.finish_sync(&self.disk) {
            let token = PersistToken(token);
            self.replica.handle(now, ReplicaInput::Persisted { token });
        }
        self.drain(now, out);
    }

    /// When the registrar, the replica or a deferred log write wants a tick.
    pub fn poll_timeout(&self) -> Option<Ts> {
        [
            self.registrar.poll_timeout(),
            self.replica.poll_timeout(),
            self.journal.deferred_due(),
            self.segments.as_ref().and_then(Segments::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Carries out what the replica and the registrar ask for.
    fn drain(&mut self, now: Ts, out: &mut Outbox) {
        self.replica.check_invariants();
        self.registrar.check_invariants();
        while let Some(output) = self.replica.poll_output() {
            match output {
                ReplicaOutput::Reply { to, msg } => {
                    let Some((asker, id)) = self.requests.remove(&to) else {
                        out.anomaly(format!("server {} answered unknown {to:?}", self.id));
                        continue;
                    };
                    let line = Envelope::with_id(id, msg).encode();
                    out.send(self.message(asker, Channel::ParticipantResponse, line));
                }
                ReplicaOutput::Persist {
                    token,
                    bytes,
                    urgency,
                } => {
                    self.journal
                        .write_with(&self.disk, token.0, &bytes, urgency, now);
                }
                ReplicaOutput::Hasten { .. } => self.journal.hasten(),
            }
        }
        while let Some(output) = self.registrar.poll_output() {
            match output {
                RegistrationOutput::Send(register) => {
                    let to = Endpoint::any(NodeId::Coordinator);
                    let line = Envelope::bare(register).encode();
                    out.send(self.message(to, Channel::Register, line));
                }
                RegistrationOutput::Registered => {}
                RegistrationOutput::Refused(why) => {
                    out.anomaly(format!("server {} registration refused: {why}", self.id))
                }
            }
        }
        out.sync_started |= self.journal.start_sync_if_due(now);
        if let Some(segments) = &mut self.segments {
            let log = (&self.journal, &self.disk);
            segments.after_turn(now, log, &self.replica, out);
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

    /// Adds this server's committed keys and in-doubt transactions; a value that cannot
    /// be read back is a storage error.
    pub fn snapshot(&self, snapshot: &mut ClusterSnapshot, errors: &mut Vec<String>) {
        let id = self.id;
        let mut values = BTreeMap::new();
        for key in self.replica.committed_keys() {
            match self.replica.committed_value(key) {
                Ok(Some(value)) => {
                    values.insert(key.to_owned(), value);
                }
                Ok(None) => errors.push(format!("server {id} lists {key:?} without a value")),
                Err(err) => errors.push(format!("server {id} cannot read {key:?}: {err}")),
            }
        }
        let server = ServerSnapshot {
            values,
            in_doubt: self.replica.in_doubt().collect(),
        };
        snapshot.servers.insert(id, Some(server));
    }
}
