//! The coordinator's shell: the client port, the registration port, and two links to
//! every KV server, around [`ringkv_core::coordinator::Coordinator`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::{Registry, Token};
use ringkv_core::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorInput, CoordinatorOutput,
};
use ringkv_core::proto::{
    ClientRequest, ClientResponse, Envelope, ErrorCode, ErrorReply, ParticipantRequest,
    ParticipantResponse, Register, RegisterResponse, WireMessage,
};
use ringkv_core::replica::{PersistToken, SyncUrgency};
use ringkv_core::ring::ServerId;
use ringkv_core::time::Backoff;
use ringkv_core::Role;

use crate::compaction::Compaction;
use crate::datadir::DataDir;
use crate::error::NetError;
use crate::event_loop::{earliest, EventLoop, Readiness};
use crate::inbound::{decoded_line, Port, PortSpec};
use crate::limits::NetLimits;
use crate::log_writes::prealloc_bytes_for;
use crate::logfile::{refuse_damage, remove_stray_replacement, LogFile, Replaced};
use crate::outbound::{Link, LinkConfig, LinkEvent};
use crate::resp::{RespListen, RespParser};
use crate::tokens::{kind_of, Kind, TokenSource};

/// The first wait before connecting again to a server that failed; doubles up to the max.
const SERVER_BACKOFF_MIN_MS: u64 = 50;
/// The longest wait before connecting again to a server: a dead server is tried about
/// once a second, which is also how often it is pinged.
const SERVER_BACKOFF_MAX_MS: u64 = 1_000;
/// Messages waiting for one server connection; beyond it the oldest are dropped and the
/// core's retries send them again.
const SERVER_QUEUE_MSGS: usize = 65_536;

/// Where and how the coordinator runs.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// The client port (8080 by default in the CLI; port 0 picks a free one).
    pub client_addr: SocketAddr,
    /// The registration port KV servers connect to (9090 by default in the CLI).
    pub server_addr: SocketAddr,
    /// The RESP2 port for Redis clients; `None` leaves it closed.
    pub resp_addr: Option<RespListen>,
    /// The protocol's settings. Without a data directory, `epoch_floor` is replaced by
    /// the wall clock's seconds, so that transaction IDs still differ across restarts.
    pub config: CoordinatorConfig,
    /// Where the coordinator keeps its log (members, epochs, commit decisions), so that a
    /// crash loses no acknowledged write and leaves no key locked. Without one the
    /// coordinator keeps everything in memory and a crash of it may do both.
    pub data_dir: Option<PathBuf>,
    /// The limits of both ports.
    pub limits: NetLimits,
    /// Whether to cut a log damaged before its end (losing every record from the damage
    /// on) instead of refusing to start.
    pub truncate_corrupt_log: bool,
    /// Once the log holds this many bytes (and twice what it held after the last
    /// compaction), it is rewritten to what recovery needs: the epoch, the members, the
    /// commits whose end is not recorded.
    pub log_compact_bytes: u64,
}

/// The default of [`CoordinatorOptions::log_compact_bytes`]: 64 MiB.
pub const DEFAULT_LOG_COMPACT_BYTES: u64 = 64 * 1024 * 1024;

/// The addresses the coordinator actually bound (port 0 resolved), so that callers who
/// asked for a free port learn which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinatorAddrs {
    /// The client port.
    pub client: SocketAddr,
    /// The registration port.
    pub server: SocketAddr,
    /// The RESP2 port, if one was asked for.
    pub resp: Option<SocketAddr>,
}

/// Runs the coordinator until `shutdown` is triggered. Calls `on_ready` once both
/// listeners are bound. Returns an error only for what stops the whole role (a port that
/// cannot be bound, a bad setting, a failing poller); a misbehaving peer only loses its
/// connection.
pub fn run_coordinator(
    opts: CoordinatorOptions,
    shutdown: crate::Shutdown,
    on_ready: impl FnOnce(CoordinatorAddrs),
) -> Result<(), NetError> {
    opts.limits.validate().map_err(NetError::Config)?;
    let mut config = opts.config;
    config.seed = crate::seed::seed_from_os();
    let (core, mut log, _dir) =
        recover(config, opts.data_dir.as_deref(), opts.truncate_corrupt_log)?;
    if let CoordinatorLog::File(file) = &mut log {
        file.allocate_ahead_by(prealloc_bytes_for(opts.log_compact_bytes));
    }
    let mut ev = EventLoop::new(shutdown)?;
    let (clients, registrations, resp) = bind_ports(&opts, ev.registry())?;
    let addrs = CoordinatorAddrs {
        client: clients.local_addr()?,
        server: registrations.local_addr()?,
        resp: resp.as_ref().map(Port::local_addr).transpose()?,
    };
    tracing::info!(
        client = %addrs.client,
        server = %addrs.server,
        resp = ?addrs.resp,
        expected_servers = config.expected_servers,
        "coordinator listening"
    );
    on_ready(addrs);
    let mut shell = Shell {
        core,
        log,
        compaction: Compaction::new(opts.log_compact_bytes),
        failure: None,
        clients,
        resp,
        registrations,
        servers: ServerLinks::new(server_link_config(&opts.limits, config.down_after_ms)),
    };
    shell.first_sync(ev.now_ms(), ev.registry())?;
    if let CoordinatorLog::File(file) = &mut shell.log {
        file.start_sync_thread(ev.waker())?;
    }
    shell.run(&mut ev)
}

/// The coordinator's ports: clients' JSON lines, the servers' registrations, and the
/// RESP2 port if asked for.
type Ports = (
    Port<ClientRequest>,
    Port<Register>,
    Option<Port<ClientRequest, RespParser>>,
);

/// Binds the coordinator's ports where `opts` says.
fn bind_ports(opts: &CoordinatorOptions, registry: &Registry) -> Result<Ports, NetError> {
    let limits = &opts.limits;
    let clients = Port::bind(
        opts.client_addr,
        Kind::PortA,
        registry,
        client_spec(),
        limits.clone(),
    )?;
    let registrations = Port::bind(
        opts.server_addr,
        Kind::PortB,
        registry,
        register_spec(),
        limits.clone(),
    )?;
    let resp = opts
        .resp_addr
        .map(|listen| crate::resp::bind_port(listen, registry, crate::resp::spec, limits))
        .transpose()?;
    Ok((clients, registrations, resp))
}

/// The links to the KV servers: queues as large as a client connection's, retries with
/// a backoff, and a new connection for a server silent past the down time, so that
/// resends stop going into a flow that was lost.
fn server_link_config(limits: &NetLimits, down_after_ms: u64) -> LinkConfig {
    LinkConfig {
        max_queued_bytes: limits.max_outbound_bytes_per_connection,
        max_queued_msgs: SERVER_QUEUE_MSGS,
        max_frame_bytes: limits.max_frame_bytes,
        backoff: Some(Backoff {
            wait_ms_min: SERVER_BACKOFF_MIN_MS,
            wait_ms_max: SERVER_BACKOFF_MAX_MS,
        }),
        silent_after_ms: Some(down_after_ms),
    }
}

impl Shell {
    /// The loop: wait for the earliest deadline or readiness, then one turn; until the
    /// shutdown, or a failure of the log.
    fn run(&mut self, ev: &mut EventLoop) -> Result<(), NetError> {
        let mut ready = Vec::new();
        while !ev.stopping() {
            let deadline = earliest([
                self.core.poll_timeout(),
                self.clients.next_deadline_ms(),
                self.resp.as_ref().and_then(Port::next_deadline_ms),
                self.registrations.next_deadline_ms(),
                self.servers.next_deadline_ms(),
            ]);
            let busy = self.clients.has_ready()
                || self.resp.as_ref().is_some_and(Port::has_ready)
                || self.registrations.has_ready()
                || self.servers.has_ready();
            let now_ms = ev.wait(deadline, busy, &mut ready)?;
            self.turn(now_ms, ev.registry(), &ready);
            if let Some(err) = self.failure.take() {
                return Err(err);
            }
        }
        let syncs = match &self.log {
            CoordinatorLog::File(log) => log.syncs(),
            CoordinatorLog::Memory(_) => 0,
        };
        tracing::info!(syncs, "coordinator stopped");
        Ok(())
    }
}

/// Opens the data directory and rebuilds the coordinator from its log, or, without a
/// directory, starts one whose epochs come from the wall clock.
fn recover(
    mut config: CoordinatorConfig,
    data_dir: Option<&std::path::Path>,
    allow_cut: bool,
) -> Result<(Coordinator, CoordinatorLog, Option<DataDir>), NetError> {
    let Some(path) = data_dir else {
        tracing::warn!("no data directory: a crash of the coordinator may lose acknowledged writes and leave keys locked");
        config.epoch_floor = epoch_from_wall_clock();
        let core = Coordinator::new(config).map_err(|err| NetError::Config(err.to_string()))?;
        return Ok((core, CoordinatorLog::Memory(None), None));
    };
    let dir = DataDir::open_unnamed(path)?;
    remove_stray_replacement(dir.path())?;
    let (mut log, bytes) = LogFile::open(dir.path())?;
    let (core, report) =
        Coordinator::recover(config, &bytes).map_err(|err| NetError::Config(err.to_string()))?;
    let bad_record = report.bad_record.map(|(_, err)| err.to_string());
    refuse_damage(&log, report.valid_len, report.after, bad_record, allow_cut)?;
    log.start_appending(report.valid_len, report.after)?;
    tracing::info!(
        records = report.records,
        members = report.members,
        open_commits = report.open_commits,
        staged = report.staged,
        epoch = report.epoch,
        stop = ?report.stop,
        "coordinator log recovered"
    );
    if !report.anomalies.is_empty() || report.bad_record.is_some() {
        tracing::warn!(anomalies = ?report.anomalies, bad_record = ?report.bad_record, "coordinator log anomalies");
    }
    Ok((core, CoordinatorLog::File(Box::new(log)), Some(dir)))
}

/// The wall clock's seconds: the epoch of a coordinator without a log, so that its
/// transaction IDs still differ across restarts unless the clock went back.
fn epoch_from_wall_clock() -> u32 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    u32::try_from(seconds).unwrap_or(u32::MAX - 1)
}

/// Where the coordinator's log goes: a file whose syncs run on a sync thread, one at a
/// time, each covering every write since the last (group commit); or nowhere, each
/// write taken as durable at the end of its iteration.
enum CoordinatorLog {
    File(Box<LogFile>),
    Memory(Option<PersistToken>),
}

impl CoordinatorLog {
    fn append(
        &mut self,
        token: PersistToken,
        bytes: &[u8],
        urgency: SyncUrgency,
    ) -> Result<(), NetError> {
        match self {
            CoordinatorLog::File(log) => log.append(token, bytes, urgency),
            CoordinatorLog::Memory(last) => {
                *last = Some(token);
                Ok(())
            }
        }
    }

    /// Something now waits for deferrable write `token`: sync it soon.
    fn hasten(&mut self, token: PersistToken) -> Result<(), NetError> {
        match self {
            CoordinatorLog::File(log) => log.hasten(token),
            CoordinatorLog::Memory(_) => Ok(()),
        }
    }

    /// The last write made durable since the last call, if any.
    fn finished_sync(&mut self) -> Result<Option<PersistToken>, NetError> {
        match self {
            CoordinatorLog::File(log) => log.finished_sync(),
            CoordinatorLog::Memory(last) => Ok(last.take()),
        }
    }

    /// Hands the writes since the last sync to the sync thread, if it is free.
    fn begin_sync(&mut self) -> Result<(), NetError> {
        match self {
            CoordinatorLog::File(log) => log.begin_sync(),
            CoordinatorLog::Memory(_) => Ok(()),
        }
    }
}

fn client_spec() -> PortSpec<ClientRequest> {
    PortSpec {
        name: "client",
        decode: |line| {
            decoded_line(ClientRequest::decode(&line).map_err(|err| {
                Envelope::with_id(err.id.clone(), ClientResponse::Error(err.reply())).encode()
            }))
        },
        error_line: |code| Envelope::bare(ClientResponse::error(code)).encode(),
        protocol_error: |_| Envelope::bare(ClientResponse::error(ErrorCode::Malformed)).encode(),
        idle_timeout: true,
        access: ClientRequest::access,
        first_handle: 1,
        budgeted: |_| true,
    }
}

fn register_spec() -> PortSpec<Register> {
    PortSpec {
        name: "register",
        decode: |line| {
            decoded_line(
                Register::decode(&line)
                    .map_err(|err| Envelope::bare(RegisterResponse::Error(err.reply())).encode()),
            )
        },
        error_line: |code: ErrorCode| {
            Envelope::bare(RegisterResponse::Error(ErrorReply::new(code))).encode()
        },
        protocol_error: |_| {
            Envelope::bare(RegisterResponse::Error(ErrorReply::new(
                ErrorCode::Malformed,
            )))
            .encode()
        },
        // Servers register again every 2 s, so a live one is never idle; an idle
        // connection is a stray one holding a slot of the port's connection limit.
        idle_timeout: true,
        access: |_| None,
        first_handle: 1,
        // Registrations are the servers' signs of life, and small.
        budgeted: |_| false,
    }
}

/// The coordinator and everything its loop moves bytes for.
struct Shell {
    core: Coordinator,
    log: CoordinatorLog,
    /// When the log is next rewritten to what recovery needs.
    compaction: Compaction,
    /// A failure of the log, which stops the loop.
    failure: Option<NetError>,
    clients: Port<ClientRequest>,
    /// The RESP2 port: the same requests as `clients`, another wire format.
    resp: Option<Port<ClientRequest, RespParser>>,
    registrations: Port<Register>,
    servers: ServerLinks,
}

impl Shell {
    /// One loop iteration's work after the wait.
    fn turn(&mut self, now_ms: u64, registry: &Registry, ready: &[Readiness]) {
        let mut answers = Vec::new();
        for event in ready {
            match kind_of(event.token) {
                Some(Kind::PortA) => self.clients.on_event(now_ms, registry, event),
                Some(Kind::PortC) => {
                    if let Some(resp) = &mut self.resp {
                        resp.on_event(now_ms, registry, event);
                    }
                }
                Some(Kind::PortB) => self.registrations.on_event(now_ms, registry, event),
                Some(Kind::Link) => self.servers.on_event(now_ms, registry, event, &mut answers),
                Some(Kind::Waker) | None => {}
            }
        }
        self.servers.pump(now_ms, registry, &mut answers);
        for (server, line) in answers {
            match ParticipantResponse::decode(&line) {
                Ok(msg) => self.handle(now_ms, registry, CoordinatorInput::Server { server, msg }),
                Err(err) => tracing::warn!(server, %err, "undecodable line from a server dropped"),
            }
        }
        let mut requests = Vec::new();
        self.clients.take_requests(now_ms, registry, &mut requests);
        if let Some(resp) = &mut self.resp {
            resp.take_requests(now_ms, registry, &mut requests);
        }
        for (from, msg) in requests {
            self.handle(now_ms, registry, CoordinatorInput::Client { from, msg });
        }
        let mut registers = Vec::new();
        self.registrations
            .take_requests(now_ms, registry, &mut registers);
        for (from, msg) in registers {
            self.handle(now_ms, registry, CoordinatorInput::Register { from, msg });
        }
        if self.core.poll_timeout().is_some_and(|at| at <= now_ms) {
            self.handle(now_ms, registry, CoordinatorInput::Tick);
        }
        // Group commit: what waited for a finished sync goes out, and every log write
        // since is handed to the sync thread as one fsync, off the loop.
        match self.log.finished_sync() {
            Ok(Some(token)) => self.handle(now_ms, registry, CoordinatorInput::Persisted { token }),
            Ok(None) => {}
            Err(err) => self.fail(err),
        }
        self.compact_if_due(now_ms, registry);
        if let Err(err) = self.log.begin_sync() {
            self.fail(err);
        }
        self.servers.tick(now_ms, registry);
        self.clients.sweep(now_ms, registry);
        self.registrations.sweep(now_ms, registry);
        self.clients.flush(now_ms, registry);
        if let Some(resp) = &mut self.resp {
            resp.sweep(now_ms, registry);
            resp.flush(now_ms, registry);
        }
        self.registrations.flush(now_ms, registry);
        self.servers.flush(now_ms, registry);
    }

    /// Before the loop: what the core asked for while it started (its new epoch's record,
    /// phase 2 of open commits) is carried out, and the records are synced at once, on
    /// this thread, so that updates find the epoch durable from the first request (no
    /// transaction ID of it may be used before), as a restarted coordinator always did.
    fn first_sync(&mut self, now_ms: u64, registry: &Registry) -> Result<(), NetError> {
        self.carry_out(now_ms, registry);
        let synced = match &mut self.log {
            CoordinatorLog::File(log) => log.sync()?,
            CoordinatorLog::Memory(last) => last.take(),
        };
        if let Some(token) = synced {
            self.handle(now_ms, registry, CoordinatorInput::Persisted { token });
        }
        match self.failure.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Feeds one input to the core and carries out everything it asks for.
    fn handle(&mut self, now_ms: u64, registry: &Registry, input: CoordinatorInput) {
        self.core.handle(now_ms, input);
        self.carry_out(now_ms, registry);
    }

    /// Carries out the core's outputs.
    fn carry_out(&mut self, now_ms: u64, registry: &Registry) {
        while let Some(output) = self.core.poll_output() {
            match output {
                CoordinatorOutput::ClientReply { to, msg } => match &mut self.resp {
                    Some(resp) if resp.owns(to) => {
                        resp.reply_into(to, crate::resp::answer_encoder(&msg))
                    }
                    _ => self.clients.reply(to, &msg),
                },
                CoordinatorOutput::RegisterReply { to, msg } => self.registrations.reply(to, &msg),
                CoordinatorOutput::Send { server, msg } => {
                    self.servers.send(now_ms, registry, server, &msg)
                }
                CoordinatorOutput::ServerAddr { server, addr } => {
                    self.servers.set_addr(registry, server, addr)
                }
                CoordinatorOutput::Persist {
                    token,
                    bytes,
                    urgency,
                } => {
                    if let Err(err) = self.log.append(token, &bytes, urgency) {
                        self.fail(err);
                    }
                }
                CoordinatorOutput::Hasten { token } => {
                    if let Err(err) = self.log.hasten(token) {
                        self.fail(err);
                    }
                }
            }
        }
    }

    /// Rewrites the log to what recovery needs once it has grown past the threshold,
    /// between two syncs (the sync thread idle). On the loop: the new log is bounded by
    /// the members and the open commits, not by the history. The new log holds every
    /// record appended so far, so once installed they are all durable.
    fn compact_if_due(&mut self, now_ms: u64, registry: &Registry) {
        let CoordinatorLog::File(log) = &mut self.log else {
            return;
        };
        let len_bytes = log.len_bytes();
        if !self.compaction.is_due(len_bytes) || log.sync_busy() {
            return;
        }
        let started = std::time::Instant::now();
        let bytes = self.core.compaction_log();
        match log.replace(&bytes) {
            Ok(Replaced::Skipped(err)) => {
                // The old log is whole and goes on; tried again once it doubles.
                tracing::warn!(%err, "compacting the coordinator's log failed; it goes on uncompacted");
                self.compaction.done(len_bytes);
            }
            Ok(Replaced::Done(covered)) => {
                tracing::info!(
                    from_bytes = len_bytes,
                    to_bytes = bytes.len(),
                    took_us = started.elapsed().as_micros() as u64,
                    "coordinator log compacted"
                );
                self.compaction.done(bytes.len() as u64);
                if let Some(token) = covered {
                    self.handle(now_ms, registry, CoordinatorInput::Persisted { token });
                }
            }
            Err(err) => self.fail(err),
        }
    }

    /// A write or fsync of the log failed: after a failed fsync the kernel may have
    /// dropped the pages, so nothing written since may ever be acknowledged. The loop
    /// stops after this iteration; a restart recovers from what is durable.
    fn fail(&mut self, err: NetError) {
        tracing::error!(%err, "the coordinator's log failed; stopping");
        self.failure.get_or_insert(err);
    }
}

/// Which of a server's two connections a message takes. Answers on one connection come
/// in request order, so a GET must not wait behind a prepare's fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkUse {
    /// `getreq` and `ping`.
    Reads = 0,
    /// `putreq`/`delreq` with a txid, `commit`, `abort`.
    Txns = 1,
}

impl LinkUse {
    fn of(msg: &ParticipantRequest) -> LinkUse {
        match msg {
            ParticipantRequest::Get { .. }
            | ParticipantRequest::Ping
            | ParticipantRequest::InDoubt => LinkUse::Reads,
            ParticipantRequest::Prepare { .. }
            | ParticipantRequest::Commit { .. }
            | ParticipantRequest::Abort { .. } => LinkUse::Txns,
        }
    }
}

/// The connections to every registered KV server.
struct ServerLinks {
    config: LinkConfig,
    tokens: TokenSource,
    links: BTreeMap<ServerId, [Link; 2]>,
    owners: HashMap<Token, ServerId>,
    events: Vec<LinkEvent>,
    /// The message being encoded.
    encoded: Vec<u8>,
}

impl ServerLinks {
    fn new(config: LinkConfig) -> Self {
        Self {
            config,
            tokens: TokenSource::new(Kind::Link),
            links: BTreeMap::new(),
            owners: HashMap::new(),
            events: Vec::new(),
            encoded: Vec::new(),
        }
    }

    /// Points a server's links at a new address, dropping the old connections.
    fn set_addr(&mut self, registry: &Registry, server: ServerId, addr: String) {
        tracing::info!(server, %addr, "server registered");
        if let Some(old) = self.links.remove(&server) {
            for mut link in old {
                link.close(registry);
                self.owners.remove(&link.token());
            }
        }
        let make = |tokens: &mut TokenSource, use_: LinkUse| {
            let name = format!(
                "server {server} {}",
                if use_ == LinkUse::Reads {
                    "reads"
                } else {
                    "txns"
                }
            );
            Link::new(name, addr.clone(), tokens.next(), self.config)
        };
        let pair = [
            make(&mut self.tokens, LinkUse::Reads),
            make(&mut self.tokens, LinkUse::Txns),
        ];
        for link in &pair {
            self.owners.insert(link.token(), server);
        }
        self.links.insert(server, pair);
    }

    fn send(
        &mut self,
        now_ms: u64,
        registry: &Registry,
        server: ServerId,
        msg: &Envelope<ParticipantRequest>,
    ) {
        let Some(pair) = self.links.get_mut(&server) else {
            tracing::debug!(server, "message for a server with no address dropped");
            return;
        };
        let Some(link) = pair.get_mut(LinkUse::of(&msg.msg) as usize) else {
            return;
        };
        // Encoded into a buffer kept across messages, then copied out at its exact size:
        // growing a fresh buffer step by step cost more than the copy.
        self.encoded.clear();
        msg.encode_into(&mut self.encoded);
        link.send(now_ms, registry, self.encoded.clone(), &mut self.events);
        self.events.clear();
    }

    fn on_event(
        &mut self,
        now_ms: u64,
        registry: &Registry,
        event: &Readiness,
        answers: &mut Vec<(ServerId, Vec<u8>)>,
    ) {
        let Some(&server) = self.owners.get(&event.token) else {
            return;
        };
        let Some(link) = self
            .links
            .get_mut(&server)
            .and_then(|pair| pair.iter_mut().find(|link| link.token() == event.token))
        else {
            return;
        };
        link.on_event(now_ms, registry, event, &mut self.events);
        collect(server, &mut self.events, answers);
    }

    fn has_ready(&self) -> bool {
        self.links.values().flatten().any(Link::wants_pump)
    }

    /// Reads from links that had more than one turn's budget waiting.
    fn pump(&mut self, now_ms: u64, registry: &Registry, answers: &mut Vec<(ServerId, Vec<u8>)>) {
        for (&server, pair) in &mut self.links {
            for link in pair.iter_mut().filter(|link| link.wants_pump()) {
                link.pump(now_ms, registry, &mut self.events);
                collect(server, &mut self.events, answers);
            }
        }
    }

    fn next_deadline_ms(&self) -> Option<u64> {
        earliest(self.links.values().flatten().map(Link::next_deadline_ms))
    }

    fn tick(&mut self, now_ms: u64, registry: &Registry) {
        for link in self.links.values_mut().flatten() {
            link.tick(now_ms, registry, &mut self.events);
        }
        self.events.clear();
    }

    fn flush(&mut self, now_ms: u64, registry: &Registry) {
        for link in self.links.values_mut().flatten() {
            link.flush(now_ms, registry, &mut self.events);
        }
        self.events.clear();
    }
}

/// Keeps a link's lines as answers of `server`; disconnects need no action here (the
/// core times out and sends again, and the next send reconnects).
fn collect(server: ServerId, events: &mut Vec<LinkEvent>, answers: &mut Vec<(ServerId, Vec<u8>)>) {
    for event in events.drain(..) {
        if let LinkEvent::Line(line) = event {
            answers.push((server, line));
        }
    }
}

#[cfg(test)]
mod tests {
    use ringkv_core::coordinator::record::CoordinatorRecord;
    use ringkv_core::log::{encode_frame, AfterPrefix};
    use ringkv_core::proto::TxOp;

    use super::*;
    use crate::logfile::{install_log, INSTALL_STEPS, LOG_FILE, REPLACEMENT_FILE};

    /// A log with history to drop: a server registered at two addresses, commits that
    /// finished and one that did not.
    fn history() -> Vec<u8> {
        let mut records = vec![
            CoordinatorRecord::Epoch {
                epoch: 1,
                expected_servers: 2,
            },
            CoordinatorRecord::Member {
                id: 1,
                addr: "127.0.0.1:7001".into(),
            },
            CoordinatorRecord::Member {
                id: 2,
                addr: "127.0.0.1:7002".into(),
            },
            CoordinatorRecord::Member {
                id: 2,
                addr: "127.0.0.1:7003".into(),
            },
        ];
        for seq in 1..=50u64 {
            let txid = (1 << 32) | seq;
            records.push(CoordinatorRecord::Commit {
                txid,
                key: format!("key{}", seq % 5),
                op: TxOp::Put {
                    value: format!("value {seq}"),
                },
                participants: vec![1, 2],
            });
            if seq != 50 {
                records.push(CoordinatorRecord::Finished { txid });
            }
        }
        let mut log = Vec::new();
        for record in records {
            encode_frame(&record.encode(), &mut log);
        }
        log
    }

    /// Members and open commits: what recovery must rebuild (the epoch moves on at
    /// every start).
    fn state(core: &Coordinator) -> Vec<CoordinatorRecord> {
        core.compaction_records().split_off(1)
    }

    #[test]
    fn a_crash_between_any_two_install_steps_recovers_the_same_state() {
        let old = history();
        let (whole, _) = Coordinator::recover(CoordinatorConfig::new(2), &old).unwrap();
        let compacted = whole.compaction_log();
        assert!(
            compacted.len() * 10 < old.len(),
            "compaction drops the history"
        );
        // Written out, not derived: `state` and the compacted log both come from
        // `compaction_records`, so a recovery wrong in what it keeps would agree with
        // itself below.
        let expected_state = vec![
            CoordinatorRecord::Member {
                id: 1,
                addr: "127.0.0.1:7001".into(),
            },
            CoordinatorRecord::Member {
                id: 2,
                addr: "127.0.0.1:7003".into(),
            },
            CoordinatorRecord::Commit {
                txid: (1 << 32) | 50,
                key: "key0".into(),
                op: TxOp::Put {
                    value: "value 50".into(),
                },
                participants: vec![1, 2],
            },
        ];
        assert_eq!(
            state(&whole),
            expected_state,
            "two members and one open commit"
        );
        for steps in 0..=INSTALL_STEPS {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::write(tmp.path().join(LOG_FILE), &old).unwrap();
            install_log(tmp.path(), &compacted, steps).unwrap();
            // The process dies here; what is on disk is the old log or the new one.
            let on_disk = std::fs::read(tmp.path().join(LOG_FILE)).unwrap();
            let expected = if steps >= 3 { &compacted } else { &old };
            assert_eq!(&on_disk, expected, "after {steps} steps");
            let (core, _, _) = recover(CoordinatorConfig::new(2), Some(tmp.path()), false).unwrap();
            assert_eq!(state(&core), expected_state, "after {steps} steps");
            assert!(
                !tmp.path().join(REPLACEMENT_FILE).exists(),
                "a stray replacement is removed at the start"
            );
        }
    }

    #[test]
    fn a_stray_replacement_cut_short_is_never_read() {
        let old = history();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(LOG_FILE), &old).unwrap();
        std::fs::write(tmp.path().join(REPLACEMENT_FILE), &old[..old.len() / 3]).unwrap();
        let (whole, _) = Coordinator::recover(CoordinatorConfig::new(2), &old).unwrap();
        let (core, _, _) = recover(CoordinatorConfig::new(2), Some(tmp.path()), false).unwrap();
        assert_eq!(state(&core), state(&whole));
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
        out
    }

    fn payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
        let decoded = ringkv_core::log::decode_frames(bytes);
        decoded.frames.iter().map(|f| f.payload.to_vec()).collect()
    }

    fn new_log(dir: &std::path::Path) -> LogFile {
        let (mut log, _) = LogFile::open(dir).unwrap();
        log.start_appending(0, AfterPrefix::Zeros).unwrap();
        log
    }

    #[test]
    fn a_replaced_log_covers_the_unsynced_appends_and_takes_new_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = new_log(tmp.path());
        log.append(PersistToken(1), &frame(b"old"), SyncUrgency::Now)
            .unwrap();
        assert_eq!(log.sync().unwrap(), Some(PersistToken(1)));
        log.append(PersistToken(2), &frame(b"unsynced"), SyncUrgency::Now)
            .unwrap();
        assert_eq!(
            log.len_bytes(),
            (frame(b"old").len() + frame(b"unsynced").len()) as u64
        );
        assert!(matches!(
            log.replace(&frame(b"NEW")).unwrap(),
            Replaced::Done(Some(PersistToken(2)))
        ));
        assert_eq!(log.len_bytes(), frame(b"NEW").len() as u64);
        assert_eq!(log.sync().unwrap(), None, "nothing left to sync");
        log.append(PersistToken(3), &frame(b"XY"), SyncUrgency::Now)
            .unwrap();
        assert_eq!(log.sync().unwrap(), Some(PersistToken(3)));
        drop(log);
        let (_, bytes) = LogFile::open(tmp.path()).unwrap();
        assert_eq!(payloads(&bytes), vec![b"NEW".to_vec(), b"XY".to_vec()]);
    }

    #[test]
    fn a_replacement_that_cannot_be_written_leaves_the_log_going_on() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = new_log(tmp.path());
        log.append(PersistToken(1), &frame(b"old"), SyncUrgency::Now)
            .unwrap();
        // Writing the replacement fails: its name is taken by a directory.
        std::fs::create_dir(tmp.path().join(REPLACEMENT_FILE)).unwrap();
        assert!(matches!(
            log.replace(&frame(b"NEW")).unwrap(),
            Replaced::Skipped(_)
        ));
        assert_eq!(
            log.len_bytes(),
            frame(b"old").len() as u64,
            "the appends are kept"
        );
        assert_eq!(log.sync().unwrap(), Some(PersistToken(1)));
        drop(log);
        std::fs::remove_dir(tmp.path().join(REPLACEMENT_FILE)).unwrap();
        let (_, bytes) = LogFile::open(tmp.path()).unwrap();
        assert_eq!(payloads(&bytes), vec![b"old".to_vec()]);
    }
}
