//! The coordinator's shell: the client port, the registration port, and two links to
//! every KV server, around [`ringkv_core::coordinator::Coordinator`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::{Registry, Token};
use ringkv_core::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorInput, CoordinatorOutput,
};
use ringkv_core::proto::{
    ClientRequest, ClientResponse, Envelope, ErrorCode, ErrorReply, ParticipantRequest,
    ParticipantResponse, Register, RegisterResponse, WireMessage,
};
use ringkv_core::ring::ServerId;

use crate::error::NetError;
use crate::event_loop::{earliest, EventLoop, Readiness};
use crate::inbound::{decoded_line, Port, PortSpec};
use crate::limits::NetLimits;
use crate::outbound::{Link, LinkConfig, LinkEvent};
use crate::resp::RespParser;
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
    pub resp_addr: Option<SocketAddr>,
    /// The protocol's settings. `first_txid` left at `None` is replaced by one derived
    /// from the wall clock, so that transaction IDs stay unique across restarts.
    pub config: CoordinatorConfig,
    /// The limits of both ports.
    pub limits: NetLimits,
}

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
    if config.first_txid.is_none() {
        config.first_txid = Some(txid_base_from_wall_clock());
    }
    let core = Coordinator::new(config).map_err(|err| NetError::Config(err.to_string()))?;
    let mut ev = EventLoop::new(shutdown)?;
    let registry = ev.registry();
    let clients = Port::bind(
        opts.client_addr,
        Kind::PortA,
        registry,
        client_spec(),
        opts.limits.clone(),
    )?;
    let registrations = Port::bind(
        opts.server_addr,
        Kind::PortB,
        registry,
        register_spec(),
        opts.limits.clone(),
    )?;
    let resp = match opts.resp_addr {
        Some(addr) => Some(Port::bind(
            addr,
            Kind::PortC,
            registry,
            crate::resp::spec(),
            opts.limits.clone(),
        )?),
        None => None,
    };
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
        first_txid = config.first_txid,
        "coordinator listening"
    );
    on_ready(addrs);
    let mut shell = Shell {
        core,
        clients,
        resp,
        registrations,
        servers: ServerLinks::new(LinkConfig {
            max_queued_bytes: opts.limits.max_outbound_bytes_per_connection,
            max_queued_msgs: SERVER_QUEUE_MSGS,
            max_frame_bytes: opts.limits.max_frame_bytes,
            backoff_min_ms: SERVER_BACKOFF_MIN_MS,
            backoff_max_ms: SERVER_BACKOFF_MAX_MS,
        }),
    };
    let mut ready = Vec::new();
    while !ev.stopping() {
        let deadline = earliest([
            shell.core.poll_timeout(),
            shell.clients.next_deadline_ms(),
            shell.resp.as_ref().and_then(Port::next_deadline_ms),
            shell.registrations.next_deadline_ms(),
            shell.servers.next_deadline_ms(),
        ]);
        let busy = shell.clients.has_ready()
            || shell.resp.as_ref().is_some_and(Port::has_ready)
            || shell.registrations.has_ready()
            || shell.servers.has_ready();
        let now_ms = ev.wait(deadline, busy, &mut ready)?;
        shell.turn(now_ms, ev.registry(), &ready);
    }
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Transaction IDs start at the wall clock in milliseconds times 2^20: a restarted
/// coordinator starts above every ID the previous one could have used, unless it handed
/// out over a million IDs per millisecond or the wall clock went back.
fn txid_base_from_wall_clock() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or(0);
    let base = u64::try_from(ms)
        .ok()
        .and_then(|ms| ms.checked_mul(1 << 20));
    match base {
        Some(base) if base > 0 => base,
        _ => {
            tracing::warn!("the wall clock is unusable; transaction IDs start at 1 and may repeat after a restart");
            1
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
        idle_timeout: false,
        access: |_| None,
        first_handle: 1,
    }
}

/// The coordinator and everything its loop moves bytes for.
struct Shell {
    core: Coordinator,
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

    /// Feeds one input to the core and carries out everything it asks for.
    fn handle(&mut self, now_ms: u64, registry: &Registry, input: CoordinatorInput) {
        self.core.handle(now_ms, input);
        while let Some(output) = self.core.poll_output() {
            match output {
                CoordinatorOutput::ClientReply { to, msg } => match &mut self.resp {
                    Some(resp) if resp.owns(to) => {
                        resp.reply_with(to, crate::resp::answer_encoder(&msg))
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
            }
        }
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
            ParticipantRequest::Get { .. } | ParticipantRequest::Ping => LinkUse::Reads,
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
