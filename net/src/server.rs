//! A KV server's shell: the data directory and its log file, the participant port, and
//! the registration link to the coordinator, around [`ringkv_core::replica::Replica`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use mio::Registry;
use ringkv_core::log::StopReason;
use ringkv_core::proto::{
    Envelope, ErrorCode, ErrorReply, ParticipantRequest, ParticipantResponse, Register,
    RegisterResponse, WireMessage,
};
use ringkv_core::registration::{
    Registrar, RegistrationConfig, RegistrationInput, RegistrationOutput,
};
use ringkv_core::replica::{
    RecoveryReport, Replica, ReplicaConfig, ReplicaInput, ReplicaOutput, ReplicaRecovery,
};
use ringkv_core::Role;

use crate::datadir::DataDir;
use crate::error::NetError;
use crate::event_loop::{earliest, EventLoop, Readiness};
use crate::inbound::{decoded_line, Port, PortSpec};
use crate::limits::NetLimits;
use crate::logfile::{refuse_damage_in, refuse_missing};
use crate::outbound::{Link, LinkConfig, LinkEvent};
use crate::segments::{plan_bytes, SegmentReader, SegmentedLog};
use crate::tokens::{kind_of, Kind, TokenSource};

/// Bytes of registrations waiting for the coordinator connection: one registration is
/// far smaller, and only the latest one matters.
const REGISTER_QUEUE_BYTES: usize = 64 * 1024;

/// Where and how a KV server runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The server's ring ID; `None` uses the ID the data directory remembers (an error if
    /// it has none).
    pub id: Option<u64>,
    /// The coordinator's registration port, as `host:port`.
    pub coordinator: String,
    /// Where the log, the ID and the lock live.
    pub data_dir: PathBuf,
    /// Where to listen for the coordinator's requests; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The host to register; by default the listen IP, or 127.0.0.1 if that is
    /// unspecified (0.0.0.0 or ::).
    pub advertise_host: Option<String>,
    /// The replica's limits and sizes.
    pub replica: ReplicaConfig,
    /// The participant port's limits.
    pub limits: NetLimits,
    /// Whether to cut a log damaged before its end (losing every record from the damage
    /// on) instead of refusing to start.
    pub truncate_corrupt_log: bool,
    /// The size at which a segment of the log is sealed and a new one begun; sealed
    /// segments are merged when they hold more than twice the live data.
    pub segment_bytes: u64,
}

/// What a started server tells its caller: who it is, where it listens, and what it
/// found in its log.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// The server's ring ID (given or remembered).
    pub id: u64,
    /// The address actually bound.
    pub listen: SocketAddr,
    /// What recovery found in the log.
    pub recovery: RecoveryReport,
}

/// Opens the data directory, recovers from the log, listens, and registers with the
/// coordinator; then serves until `shutdown` is triggered. Calls `on_ready` once
/// listening. A failed write or fsync of the log stops the server with an error: nothing
/// that is not durable is ever acknowledged.
pub fn run_server(
    opts: ServerOptions,
    shutdown: crate::Shutdown,
    on_ready: impl FnOnce(&ServerInfo),
) -> Result<(), NetError> {
    check_options(&opts)?;
    let dir = DataDir::open(&opts.data_dir, opts.id)?;
    let started = std::time::Instant::now();
    let (replica, mut log, report) = recover(&opts, &dir)?;
    log_recovery(dir.id(), &report, started.elapsed());

    let mut ev = EventLoop::new(shutdown)?;
    log.start_sync_thread(ev.waker())?;
    let port = Port::bind(
        opts.listen,
        Kind::PortA,
        ev.registry(),
        participant_spec(),
        opts.limits.clone(),
    )?;
    let listen = port.local_addr()?;
    let advertised = advertise_addr(opts.advertise_host.as_deref(), listen);
    let info = ServerInfo {
        id: dir.id(),
        listen,
        recovery: report,
    };
    tracing::info!(id = info.id, %listen, %advertised, coordinator = %opts.coordinator, "server listening");
    on_ready(&info);

    let register = Register {
        id: info.id,
        addr: advertised,
    };
    let mut shell = Shell {
        replica,
        log,
        port,
        registrar: registrar(ev.now_ms(), register),
        coordinator: coordinator_link(&opts),
        link_events: Vec::new(),
        appends: 0,
        unregistered_since_ms: Some(0),
        coordinator_addr: opts.coordinator.clone(),
    };
    let result = shell.serve(&mut ev);
    match &result {
        Ok(()) => tracing::info!(
            id = info.id,
            appends = shell.appends,
            syncs = shell.log.syncs(),
            "server stopped"
        ),
        Err(err) => tracing::error!(id = info.id, %err, "server stopped"),
    }
    result
}

/// Refuses options no server can run with: bad limits, an empty coordinator address or
/// advertised host.
fn check_options(opts: &ServerOptions) -> Result<(), NetError> {
    opts.limits.validate().map_err(NetError::Config)?;
    if opts.coordinator.trim().is_empty() {
        return Err(NetError::Config("the coordinator address is empty".into()));
    }
    let empty_host = opts
        .advertise_host
        .as_deref()
        .is_some_and(|host| host.trim().is_empty());
    if empty_host {
        return Err(NetError::Config("the advertised host is empty".into()));
    }
    Ok(())
}

/// Keeps the coordinator told where this run listens, with retries jittered from the
/// OS's randomness (so that servers restarted together do not retry in step).
fn registrar(now_ms: u64, register: Register) -> Registrar {
    let config = RegistrationConfig {
        seed: crate::seed::seed_from_os(),
        ..RegistrationConfig::default()
    };
    Registrar::new(now_ms, register, config)
}

/// The link registrations go out on: one message queued at most (the registrar resends
/// the latest), and no backoff of its own (the registrar paces its retries).
fn coordinator_link(opts: &ServerOptions) -> Link {
    let mut tokens = TokenSource::new(Kind::Link);
    Link::new(
        "coordinator".into(),
        opts.coordinator.clone(),
        tokens.next(),
        LinkConfig {
            max_queued_bytes: REGISTER_QUEUE_BYTES,
            max_queued_msgs: 1,
            max_frame_bytes: opts.limits.max_frame_bytes,
            backoff: None,
            silent_after_ms: None,
        },
    )
}

/// Rebuilds the replica from the log's segments, streamed, and refuses a log damaged
/// before its end unless the operator allowed cutting it.
fn recover(
    opts: &ServerOptions,
    dir: &DataDir,
) -> Result<(Replica<SegmentReader>, SegmentedLog, RecoveryReport), NetError> {
    let mut log = SegmentedLog::open(dir.path(), opts.segment_bytes)?;
    let replica_config = ReplicaConfig {
        id: Some(dir.id()),
        ..opts.replica
    };
    let mut recovery = ReplicaRecovery::start(replica_config, log.reader())
        .map_err(|err| NetError::Config(format!("replica cache: {err}")))?;
    let replayed = log.replay_into(&mut recovery)?;
    let (replica, report) = recovery.finish(replayed.after);
    if let Some(next) = replayed.missing_before {
        refuse_missing(
            &replayed.file,
            report.valid_len,
            next,
            opts.truncate_corrupt_log,
        )?;
    }
    let bad_record = report.bad_record.map(|(_, err)| err.to_string());
    refuse_damage_in(
        &replayed.file,
        report.valid_len,
        report.after,
        bad_record,
        opts.truncate_corrupt_log,
    )?;
    log.start_appending(report.valid_len)?;
    Ok((replica, log, report))
}

/// A request with the server it is addressed to, as the replica takes it.
struct Addressed {
    msg: ParticipantRequest,
    to: Option<u64>,
}

fn participant_spec() -> PortSpec<Addressed> {
    PortSpec {
        name: "participant",
        decode: |line| {
            let decoded = match Envelope::<ParticipantRequest>::decode(&line) {
                Ok(envelope) => {
                    let msg = Addressed {
                        msg: envelope.msg,
                        to: envelope.server,
                    };
                    Ok(Envelope::with_id(envelope.id, msg))
                }
                Err(err) => Err(Envelope::with_id(
                    err.id.clone(),
                    ParticipantResponse::Error(err.reply()),
                )
                .encode()),
            };
            decoded_line(decoded)
        },
        error_line: |code| {
            Envelope::bare(ParticipantResponse::Error(ErrorReply::new(code))).encode()
        },
        protocol_error: |_| {
            Envelope::bare(ParticipantResponse::Error(ErrorReply::new(
                ErrorCode::Malformed,
            )))
            .encode()
        },
        idle_timeout: true,
        access: |_| None,
        first_handle: 1,
        // The coordinator's two-phase commit and pings keep keys moving and the server
        // up: its connections are never held back by the budget.
        budgeted: |request| {
            !matches!(
                request.msg,
                ParticipantRequest::Prepare { .. }
                    | ParticipantRequest::Commit { .. }
                    | ParticipantRequest::Abort { .. }
                    | ParticipantRequest::Ping
            )
        },
    }
}

/// The address to register: the coordinator connects there.
fn advertise_addr(host: Option<&str>, listen: SocketAddr) -> String {
    let port = listen.port();
    match host {
        Some(host) if host.parse::<Ipv6Addr>().is_ok() => format!("[{host}]:{port}"),
        Some(host) => format!("{host}:{port}"),
        None => {
            let ip = if listen.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                listen.ip()
            };
            SocketAddr::new(ip, port).to_string()
        }
    }
}

fn log_recovery(id: u64, report: &RecoveryReport, took: std::time::Duration) {
    tracing::info!(
        id,
        records = report.records,
        keys = report.committed_keys,
        in_doubt = report.in_doubt,
        bytes = report.valid_len,
        took_ms = took.as_millis() as u64,
        "log recovered"
    );
    if !matches!(report.stop, StopReason::End | StopReason::Zeros) {
        tracing::warn!(id, stop = ?report.stop, "log decoding stopped early");
    }
    if let Some((offset, err)) = &report.bad_record {
        tracing::warn!(id, offset, err = ?err, "a record with a good checksum could not be read; replay stopped there");
    }
    for anomaly in &report.anomalies {
        tracing::warn!(id, anomaly = %anomaly, "log anomaly skipped");
    }
}

/// How long a server may stay unregistered before it warns.
const UNREGISTERED_WARN_MS: u64 = 5000;

/// The replica and everything its loop moves bytes for.
struct Shell {
    replica: Replica<SegmentReader>,
    log: SegmentedLog,
    port: Port<Addressed>,
    registrar: Registrar,
    coordinator: Link,
    link_events: Vec<LinkEvent>,
    /// Log writes done, for the statistics at shutdown.
    appends: u64,
    /// Since when the server has not been registered, until it is warned about; a server
    /// that cannot reach its coordinator would otherwise look healthy.
    unregistered_since_ms: Option<u64>,
    /// Where the coordinator is, for that warning.
    coordinator_addr: String,
}

impl Shell {
    /// Turns the loop until the shell is stopped or a turn fails.
    fn serve(&mut self, ev: &mut EventLoop) -> Result<(), NetError> {
        let mut ready = Vec::new();
        loop {
            if ev.stopping() {
                return Ok(());
            }
            let deadline = earliest([
                self.registrar.poll_timeout(),
                self.port.next_deadline_ms(),
                self.coordinator.next_deadline_ms(),
            ]);
            let busy = self.port.has_ready()
                || self.coordinator.wants_pump()
                || !self.link_events.is_empty();
            let now_ms = ev.wait(deadline, busy, &mut ready)?;
            self.turn(now_ms, ev.registry(), &ready)?;
        }
    }

    /// One loop iteration's work after the wait. Ends with the group commit: the answers
    /// that waited for a sync the sync thread finished go out, and every log write since
    /// the last sync is handed to it as one (if it is free; else they wait for it).
    fn turn(
        &mut self,
        now_ms: u64,
        registry: &Registry,
        ready: &[Readiness],
    ) -> Result<(), NetError> {
        for event in ready {
            match kind_of(event.token) {
                Some(Kind::PortA) => self.port.on_event(now_ms, registry, event),
                Some(Kind::Link) if event.token == self.coordinator.token() => {
                    self.coordinator
                        .on_event(now_ms, registry, event, &mut self.link_events);
                }
                _ => {}
            }
        }
        if self.coordinator.wants_pump() {
            self.coordinator
                .pump(now_ms, registry, &mut self.link_events);
        }
        self.coordinator
            .tick(now_ms, registry, &mut self.link_events);
        self.registration_events(now_ms, registry)?;
        if self.registrar.poll_timeout().is_some_and(|at| at <= now_ms) {
            self.registrar.handle(now_ms, RegistrationInput::Tick);
        }
        self.registration_outputs(now_ms, registry)?;
        self.warn_if_unregistered(now_ms);

        let mut requests = Vec::new();
        self.port.take_requests(now_ms, registry, &mut requests);
        for (from, Addressed { msg, to }) in requests {
            self.handle(now_ms, ReplicaInput::Request { from, msg, to })?;
        }
        // The fsync runs on the sync thread, so reads and pings never wait for it.
        if let Some(token) = self.log.finished_sync()? {
            self.handle(now_ms, ReplicaInput::Persisted { token })?;
        }
        self.log.begin_sync()?;
        self.compact()?;
        self.port.sweep(now_ms, registry);
        self.port.flush(now_ms, registry);
        self.coordinator
            .flush(now_ms, registry, &mut self.link_events);
        // A failed write shows up as a disconnect, handled in the next iteration (which
        // then does not sleep).
        Ok(())
    }

    /// Moves the values a finished merge rewrote, and starts the next merge when one is
    /// due: after a seal, every write before it is durable and applied, so the replica's
    /// plan covers the sealed part whole.
    fn compact(&mut self) -> Result<(), NetError> {
        if let Some(done) = self.log.finished_compaction() {
            self.replica.relocate(done.start, done.end, &done.moves);
        }
        if let Some(end) = self.log.compaction_due() {
            let plan = self.replica.compaction_plan(end);
            tracing::debug!(end, live_bytes = plan_bytes(&plan), "a merge is due");
            self.log.start_compaction(plan)?;
        }
        Ok(())
    }

    /// Feeds one input to the replica and carries out what it asks for: answers go to
    /// their slots, log writes to the file (synced at the end of the iteration).
    fn handle(&mut self, now_ms: u64, input: ReplicaInput) -> Result<(), NetError> {
        self.replica.handle(now_ms, input);
        while let Some(output) = self.replica.poll_output() {
            match output {
                ReplicaOutput::Reply { to, msg } => self.port.reply(to, &msg),
                ReplicaOutput::Persist {
                    token,
                    bytes,
                    urgency,
                } => {
                    self.log.append(token, &bytes, urgency);
                    self.appends += 1;
                }
                ReplicaOutput::Hasten { token } => self.log.hasten(token)?,
            }
        }
        Ok(())
    }

    /// Warns once when the server stayed unregistered for [`UNREGISTERED_WARN_MS`].
    fn warn_if_unregistered(&mut self, now_ms: u64) {
        if self.registrar.is_registered() {
            self.unregistered_since_ms = Some(now_ms);
            return;
        }
        let Some(since_ms) = self.unregistered_since_ms else {
            return;
        };
        if now_ms.saturating_sub(since_ms) >= UNREGISTERED_WARN_MS {
            tracing::warn!(
                coordinator = %self.coordinator_addr,
                "not registered with the coordinator after {} s; still trying",
                UNREGISTERED_WARN_MS / 1000
            );
            self.unregistered_since_ms = None;
        }
    }

    /// Turns what the coordinator link reported into registrar inputs.
    fn registration_events(&mut self, now_ms: u64, registry: &Registry) -> Result<(), NetError> {
        for event in std::mem::take(&mut self.link_events) {
            let input = match event {
                LinkEvent::Line(line) => match RegisterResponse::decode(&line) {
                    Ok(answer) => RegistrationInput::Answer(answer.msg),
                    Err(err) => {
                        tracing::warn!(%err, "undecodable line from the coordinator dropped");
                        continue;
                    }
                },
                LinkEvent::Disconnected => RegistrationInput::Disconnected,
            };
            self.registrar.handle(now_ms, input);
            self.registration_outputs(now_ms, registry)?;
        }
        Ok(())
    }

    fn registration_outputs(&mut self, now_ms: u64, registry: &Registry) -> Result<(), NetError> {
        while let Some(output) = self.registrar.poll_output() {
            match output {
                RegistrationOutput::Send(register) => {
                    tracing::debug!(id = register.id, addr = %register.addr, "registering");
                    self.coordinator.send(
                        now_ms,
                        registry,
                        Envelope::bare(register).encode(),
                        &mut self.link_events,
                    );
                }
                RegistrationOutput::Registered => {
                    tracing::info!(
                        id = self.registrar.registration().id,
                        "registered with the coordinator"
                    );
                }
                RegistrationOutput::Refused(reason) => return Err(NetError::Refused(reason)),
            }
        }
        Ok(())
    }
}
