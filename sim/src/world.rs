//! The simulated world: one coordinator, its KV servers and clients, a network and disks,
//! driven by one event queue in simulated time. Every message crosses the network as the
//! protocol's JSON line, so the codec is exercised as in production.

use std::collections::{BTreeMap, VecDeque};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorInput, CoordinatorOutput,
};
use ringkv_core::proto::{
    ClientRequest, ClientResponse, Envelope, ErrorCode, ParticipantRequest, ParticipantResponse,
    Register, RegisterResponse, RequestId, WireMessage,
};
use ringkv_core::registration::{
    Registrar, RegistrationConfig, RegistrationInput, RegistrationOutput,
};
use ringkv_core::replica::{Replica, ReplicaConfig, ReplicaInput, ReplicaOutput};
use ringkv_core::{ReplyTo, Role, Ts};

use crate::check::{ClusterSnapshot, ServerSnapshot};
use crate::config::SimConfig;
use crate::disk::SimDisk;
use crate::history::{Command, History, Outcome};
use crate::network::{Network, NodeId};
use crate::trace::Trace;

/// Which decoder the receiver uses for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    ClientRequest,
    ClientResponse,
    Register,
    RegisterResponse,
    ParticipantRequest,
    ParticipantResponse,
}

#[derive(Clone, Debug)]
struct Message {
    from: NodeId,
    to: NodeId,
    /// The sender's incarnation (servers restart as new incarnations).
    from_incarnation: u32,
    /// The incarnation the message is addressed to: a restarted server listens on a new
    /// address, so what was sent to the old one is lost.
    to_incarnation: u32,
    channel: Channel,
    line: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Event {
    Deliver(Message),
    CoordinatorTimer,
    ServerTimer { id: u64, incarnation: u32 },
    SyncDone { id: u64, incarnation: u32 },
    CrashTick,
    Restart { id: u64 },
    PartitionTick,
    ClogTick,
    Heal,
    ClientNext { client: u32 },
    ClientTimeout { client: u32, op: usize },
}

/// A fault of the link between the coordinator and one server.
#[derive(Clone, Copy, Debug)]
enum LinkFault {
    /// Messages are lost.
    Partition,
    /// Messages are held back.
    Clog,
}

/// A KV server while it runs.
struct LiveServer {
    replica: Replica<SimDisk>,
    registrar: Registrar,
    /// The id each request carried, by the handle given to the replica.
    request_ids: BTreeMap<ReplyTo, Option<RequestId>>,
    next_handle: u64,
    /// Tokens written and not yet covered by a sync, with the log length after each.
    unsynced: VecDeque<(ringkv_core::replica::PersistToken, usize)>,
    /// The sync under way: the last token and log length it covers.
    syncing: Option<(ringkv_core::replica::PersistToken, usize)>,
    timer_at: Option<Ts>,
}

/// A KV server across its crashes.
struct ServerNode {
    id: u64,
    incarnation: u32,
    disk: SimDisk,
    live: Option<LiveServer>,
}

struct ClientNode {
    /// The operation in flight: its index in the history.
    current: Option<usize>,
    writes: u64,
}

/// Counters of what happened, for the summary.
#[derive(Clone, Debug, Default)]
pub struct WorldStats {
    /// Messages handed to the network.
    pub messages_sent: u64,
    /// Messages lost (loss, partition, or addressed to a crashed incarnation).
    pub messages_lost: u64,
    /// Server crashes.
    pub crashes: u64,
    /// Unsynced bytes that survived crashes.
    pub torn_or_kept_bytes: u64,
    /// Events processed.
    pub events: u64,
}

/// The whole simulated cluster.
pub struct World {
    pub(crate) config: SimConfig,
    pub(crate) now: Ts,
    rng: ChaCha8Rng,
    events: BTreeMap<(Ts, u64), Event>,
    next_event: u64,
    network: Network,
    pub(crate) coordinator: Coordinator,
    coordinator_timer_at: Option<Ts>,
    /// Where the coordinator thinks each server is: the incarnation of its latest
    /// registered address.
    address_book: BTreeMap<u64, u32>,
    /// Where each coordinator answer goes.
    reply_routes: BTreeMap<ReplyTo, (NodeId, u32, Option<RequestId>)>,
    next_route: u64,
    servers: BTreeMap<u64, ServerNode>,
    clients: Vec<ClientNode>,
    pub(crate) history: History,
    pub(crate) trace: Trace,
    healed: bool,
    pub(crate) stats: WorldStats,
    /// Bugs the world itself noticed (undecodable lines, refusals).
    pub(crate) anomalies: Vec<String>,
}

impl World {
    /// The world of `config`, with every server started and every client about to begin.
    pub fn new(config: SimConfig, trace: Trace) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut coordinator_config = CoordinatorConfig::new(config.server_ids.len());
        coordinator_config.cache = config.coordinator_cache;
        coordinator_config.timeout_ms = config.timeout_ms;
        coordinator_config.first_txid = Some(rng.random_range(1..1 << 40));
        coordinator_config.seed = rng.random();
        coordinator_config.buggify = config.buggify(rng.random());
        let coordinator = match Coordinator::new(coordinator_config) {
            Ok(c) => c,
            Err(err) => panic!("simulator built a bad coordinator config: {err}"),
        };
        let network = Network::new(config.net.clone());
        let mut world = Self {
            now: 0,
            rng,
            events: BTreeMap::new(),
            next_event: 0,
            network,
            coordinator,
            coordinator_timer_at: None,
            address_book: BTreeMap::new(),
            reply_routes: BTreeMap::new(),
            next_route: 0,
            servers: BTreeMap::new(),
            clients: (0..config.clients)
                .map(|_| ClientNode {
                    current: None,
                    writes: 0,
                })
                .collect(),
            history: History::new(),
            trace,
            healed: false,
            stats: WorldStats::default(),
            anomalies: Vec::new(),
            config,
        };
        for id in world.config.server_ids.clone() {
            world.servers.insert(
                id,
                ServerNode {
                    id,
                    incarnation: 0,
                    disk: SimDisk::new(),
                    live: None,
                },
            );
            let start = world.rng.random_range(0..50);
            world.schedule(start, Event::Restart { id });
        }
        for client in 0..world.config.clients {
            let start = world.rng.random_range(0..100);
            world.schedule(start, Event::ClientNext { client });
        }
        let heal_at = world.config.heal_at_ms();
        world.schedule(heal_at, Event::Heal);
        if world.config.crashes.crash_every_ms > 0 {
            let at = world.config.crashes.crash_every_ms;
            world.schedule(at, Event::CrashTick);
        }
        if world.config.net.partition_every_ms > 0 {
            let at = world.config.net.partition_every_ms;
            world.schedule(at, Event::PartitionTick);
        }
        if world.config.net.clog_every_ms > 0 {
            let at = world.config.net.clog_every_ms;
            world.schedule(at, Event::ClogTick);
        }
        world
    }

    fn schedule(&mut self, at: Ts, event: Event) {
        self.events.insert((at, self.next_event), event);
        self.next_event += 1;
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
        match event {
            Event::Deliver(msg) => self.deliver(msg),
            Event::CoordinatorTimer => {
                if self.coordinator_timer_at == Some(self.now) {
                    self.coordinator_timer_at = None;
                    self.coordinator_input(CoordinatorInput::Tick);
                }
            }
            Event::ServerTimer { id, incarnation } => self.server_timer(id, incarnation),
            Event::SyncDone { id, incarnation } => self.sync_done(id, incarnation),
            Event::CrashTick => self.crash_tick(),
            Event::Restart { id } => self.restart(id),
            Event::PartitionTick => self.link_fault_tick(LinkFault::Partition),
            Event::ClogTick => self.link_fault_tick(LinkFault::Clog),
            Event::Heal => self.heal(),
            Event::ClientNext { client } => self.client_next(client),
            Event::ClientTimeout { client, op } => self.client_timeout(client, op),
        }
    }

    // ----- network -----

    fn send(&mut self, msg: Message) {
        self.stats.messages_sent += 1;
        let arrivals = self
            .network
            .arrivals(&mut self.rng, self.now, msg.from, msg.to);
        if arrivals.is_empty() {
            self.stats.messages_lost += 1;
            self.trace.lost(self.now, msg.from, msg.to, &msg.line);
        }
        for at in arrivals {
            self.schedule(at, Event::Deliver(msg.clone()));
        }
    }

    fn deliver(&mut self, msg: Message) {
        let line = msg.line.strip_suffix(b"\n").unwrap_or(&msg.line);
        if let NodeId::Server(id) = msg.to {
            let reachable = self
                .servers
                .get(&id)
                .is_some_and(|s| s.incarnation == msg.to_incarnation && s.live.is_some());
            if !reachable {
                self.stats.messages_lost += 1;
                self.trace.lost(self.now, msg.from, msg.to, line);
                return;
            }
        }
        self.trace.deliver(self.now, msg.from, msg.to, line);
        match msg.channel {
            Channel::ClientRequest => match ClientRequest::decode(line) {
                Ok(env) => {
                    let NodeId::Client(client) = msg.from else {
                        return;
                    };
                    let route = self.route(NodeId::Client(client), 0, env.id);
                    self.coordinator_input(CoordinatorInput::Client {
                        from: route,
                        msg: env.msg,
                    });
                }
                Err(err) => self.anomaly(format!("client request undecodable: {err}")),
            },
            Channel::Register => match Register::decode(line) {
                Ok(env) => {
                    let route = self.route(msg.from, msg.from_incarnation, None);
                    self.coordinator_input(CoordinatorInput::Register {
                        from: route,
                        msg: env.msg,
                    });
                }
                Err(err) => self.anomaly(format!("registration undecodable: {err}")),
            },
            Channel::ParticipantResponse => match ParticipantResponse::decode(line) {
                Ok(env) => {
                    let NodeId::Server(server) = msg.from else {
                        return;
                    };
                    self.coordinator_input(CoordinatorInput::Server { server, msg: env });
                }
                Err(err) => self.anomaly(format!("participant answer undecodable: {err}")),
            },
            Channel::ParticipantRequest => {
                let NodeId::Server(id) = msg.to else {
                    return;
                };
                match ParticipantRequest::decode(line) {
                    Ok(env) => self.server_request(id, env),
                    Err(err) => self.anomaly(format!("participant request undecodable: {err}")),
                }
            }
            Channel::RegisterResponse => {
                let NodeId::Server(id) = msg.to else {
                    return;
                };
                match RegisterResponse::decode(line) {
                    Ok(env) => self.registrar_input(id, RegistrationInput::Answer(env.msg)),
                    Err(err) => self.anomaly(format!("registration answer undecodable: {err}")),
                }
            }
            Channel::ClientResponse => {
                let NodeId::Client(client) = msg.to else {
                    return;
                };
                match ClientResponse::decode(line) {
                    Ok(env) => self.client_answer(client, env),
                    Err(err) => self.anomaly(format!("client answer undecodable: {err}")),
                }
            }
        }
    }

    fn anomaly(&mut self, text: String) {
        self.trace.note(self.now, &text);
        self.anomalies.push(format!("at {} ms: {text}", self.now));
    }

    fn route(&mut self, node: NodeId, incarnation: u32, id: Option<RequestId>) -> ReplyTo {
        let handle = ReplyTo(self.next_route);
        self.next_route += 1;
        self.reply_routes.insert(handle, (node, incarnation, id));
        handle
    }

    // ----- coordinator -----

    fn coordinator_input(&mut self, input: CoordinatorInput) {
        self.coordinator.handle(self.now, input);
        self.coordinator.check_invariants();
        while let Some(out) = self.coordinator.poll_output() {
            match out {
                CoordinatorOutput::ClientReply { to, msg } => {
                    let Some((node, incarnation, id)) = self.reply_routes.remove(&to) else {
                        self.anomaly(format!("coordinator answered unknown handle {to:?}"));
                        continue;
                    };
                    let line = Envelope::with_id(id, msg).encode();
                    self.send(Message {
                        from: NodeId::Coordinator,
                        to: node,
                        from_incarnation: 0,
                        to_incarnation: incarnation,
                        channel: Channel::ClientResponse,
                        line,
                    });
                }
                CoordinatorOutput::RegisterReply { to, msg } => {
                    let Some((node, incarnation, _)) = self.reply_routes.remove(&to) else {
                        self.anomaly(format!("coordinator answered unknown handle {to:?}"));
                        continue;
                    };
                    let line = Envelope::bare(msg).encode();
                    self.send(Message {
                        from: NodeId::Coordinator,
                        to: node,
                        from_incarnation: 0,
                        to_incarnation: incarnation,
                        channel: Channel::RegisterResponse,
                        line,
                    });
                }
                CoordinatorOutput::Send { server, msg } => {
                    let Some(&incarnation) = self.address_book.get(&server) else {
                        self.anomaly(format!("coordinator sent to unregistered server {server}"));
                        continue;
                    };
                    self.send(Message {
                        from: NodeId::Coordinator,
                        to: NodeId::Server(server),
                        from_incarnation: 0,
                        to_incarnation: incarnation,
                        channel: Channel::ParticipantRequest,
                        line: msg.encode(),
                    });
                }
                CoordinatorOutput::ServerAddr { server, addr } => match parse_sim_addr(&addr) {
                    Some((id, incarnation)) if id == server => {
                        self.address_book.insert(server, incarnation);
                    }
                    _ => self.anomaly(format!("server {server} registered odd address {addr}")),
                },
            }
        }
        if let Some(at) = self.coordinator.poll_timeout() {
            if self.coordinator_timer_at.is_none_or(|t| at < t) {
                self.coordinator_timer_at = Some(at);
                self.schedule(at.max(self.now), Event::CoordinatorTimer);
            }
        }
    }

    // ----- servers -----

    fn restart(&mut self, id: u64) {
        let now = self.now;
        let Some(node) = self.servers.get_mut(&id) else {
            return;
        };
        if node.live.is_some() {
            return;
        }
        let bytes = node.disk.contents();
        let buggify_seed = self.rng.random();
        let config = ReplicaConfig {
            cache: self.config.server_cache,
            buggify: self.config.buggify(buggify_seed),
            ..ReplicaConfig::default()
        };
        let (replica, report) = match Replica::recover(config, &bytes, node.disk.clone()) {
            Ok(recovered) => recovered,
            Err(err) => panic!("simulator built a bad replica config: {err}"),
        };
        node.disk.truncate_and_sync(report.valid_len as usize);
        let addr = sim_addr(id, node.incarnation);
        let registrar = Registrar::new(now, Register { id, addr }, RegistrationConfig::default());
        node.live = Some(LiveServer {
            replica,
            registrar,
            request_ids: BTreeMap::new(),
            next_handle: 0,
            unsynced: VecDeque::new(),
            syncing: None,
            timer_at: None,
        });
        let incarnation = node.incarnation;
        self.trace.note(
            now,
            &format!(
                "server {id} starts (incarnation {incarnation}): {} records, {} keys, {} in doubt, log {} of {} bytes valid, {:?}",
                report.records, report.committed_keys, report.in_doubt, report.valid_len, bytes.len(), report.stop
            ),
        );
        if !report.anomalies.is_empty() || report.bad_record.is_some() {
            self.anomaly(format!(
                "server {id} recovery: {:?} {:?}",
                report.anomalies, report.bad_record
            ));
        }
        self.drain_server(id);
    }

    fn crash(&mut self, id: u64) {
        let Some(node) = self.servers.get_mut(&id) else {
            return;
        };
        if node.live.take().is_none() {
            return;
        }
        node.incarnation += 1;
        let kept = node.disk.crash(&mut self.rng, self.config.crashes.tear);
        self.stats.crashes += 1;
        self.stats.torn_or_kept_bytes += kept as u64;
        self.trace.note(
            self.now,
            &format!("server {id} crashes ({kept} unsynced bytes survive)"),
        );
    }

    fn server_request(&mut self, id: u64, env: Envelope<ParticipantRequest>) {
        let now = self.now;
        let Some(live) = self.servers.get_mut(&id).and_then(|n| n.live.as_mut()) else {
            return;
        };
        let handle = ReplyTo(live.next_handle);
        live.next_handle += 1;
        live.request_ids.insert(handle, env.id);
        live.replica.handle(
            now,
            ReplicaInput::Request {
                from: handle,
                msg: env.msg,
            },
        );
        self.drain_server(id);
    }

    fn registrar_input(&mut self, id: u64, input: RegistrationInput) {
        let now = self.now;
        let Some(live) = self.servers.get_mut(&id).and_then(|n| n.live.as_mut()) else {
            return;
        };
        live.registrar.handle(now, input);
        self.drain_server(id);
    }

    /// The server `id` if it is still running as `incarnation`: events scheduled for an
    /// earlier run of a server die with that run.
    fn running(&mut self, id: u64, incarnation: u32) -> Option<&mut ServerNode> {
        self.servers
            .get_mut(&id)
            .filter(|node| node.incarnation == incarnation && node.live.is_some())
    }

    fn server_timer(&mut self, id: u64, incarnation: u32) {
        let now = self.now;
        let Some(live) = self.running(id, incarnation).and_then(|n| n.live.as_mut()) else {
            return;
        };
        if live.timer_at != Some(now) {
            return;
        }
        live.timer_at = None;
        live.registrar.handle(now, RegistrationInput::Tick);
        self.drain_server(id);
    }

    fn sync_done(&mut self, id: u64, incarnation: u32) {
        let now = self.now;
        let Some(node) = self.running(id, incarnation) else {
            return;
        };
        let Some(live) = node.live.as_mut() else {
            return;
        };
        let Some((token, len)) = live.syncing.take() else {
            return;
        };
        node.disk.sync_to(len);
        live.replica.handle(now, ReplicaInput::Persisted { token });
        self.drain_server(id);
    }

    /// Carries out what a server's replica and registrar ask for.
    fn drain_server(&mut self, id: u64) {
        let now = self.now;
        let mut sends: Vec<Message> = Vec::new();
        let mut start_sync = None;
        let mut timer = None;
        let mut refused = None;
        {
            let Some(node) = self.servers.get_mut(&id) else {
                return;
            };
            let incarnation = node.incarnation;
            let Some(live) = node.live.as_mut() else {
                return;
            };
            live.replica.check_invariants();
            live.registrar.check_invariants();
            while let Some(out) = live.replica.poll_output() {
                match out {
                    ReplicaOutput::Reply { to, msg } => {
                        let request_id = live.request_ids.remove(&to).flatten();
                        sends.push(Message {
                            from: NodeId::Server(id),
                            to: NodeId::Coordinator,
                            from_incarnation: incarnation,
                            to_incarnation: 0,
                            channel: Channel::ParticipantResponse,
                            line: Envelope::with_id(request_id, msg).encode(),
                        });
                    }
                    ReplicaOutput::Persist { token, bytes } => {
                        let len = node.disk.write(&bytes);
                        live.unsynced.push_back((token, len));
                    }
                }
            }
            while let Some(out) = live.registrar.poll_output() {
                match out {
                    RegistrationOutput::Send(register) => sends.push(Message {
                        from: NodeId::Server(id),
                        to: NodeId::Coordinator,
                        from_incarnation: incarnation,
                        to_incarnation: 0,
                        channel: Channel::Register,
                        line: Envelope::bare(register).encode(),
                    }),
                    RegistrationOutput::Registered => {}
                    RegistrationOutput::Refused(why) => refused = Some(why),
                }
            }
            // Group commit: one sync covers everything written before it starts.
            if live.syncing.is_none() {
                if let Some(&last) = live.unsynced.back() {
                    live.unsynced.clear();
                    live.syncing = Some(last);
                    start_sync = Some(incarnation);
                }
            }
            if let Some(at) = live.registrar.poll_timeout() {
                if live.timer_at.is_none_or(|t| at < t) {
                    live.timer_at = Some(at);
                    timer = Some((at, incarnation));
                }
            }
        }
        if let Some(why) = refused {
            self.anomaly(format!("server {id} registration refused: {why}"));
        }
        if let Some(incarnation) = start_sync {
            let (lo, hi) = self.config.sync_ms;
            let at = now + self.rng.random_range(lo..=hi);
            self.schedule(at, Event::SyncDone { id, incarnation });
        }
        if let Some((at, incarnation)) = timer {
            self.schedule(at.max(now), Event::ServerTimer { id, incarnation });
        }
        for msg in sends {
            self.send(msg);
        }
    }

    // ----- faults -----

    fn down_count(&self) -> usize {
        self.servers.values().filter(|s| s.live.is_none()).count()
    }

    fn crash_tick(&mut self) {
        if self.healed {
            return;
        }
        let faults = self.config.crashes.clone();
        if self.down_count() < faults.max_down {
            let up: Vec<u64> = self
                .servers
                .values()
                .filter(|s| s.live.is_some())
                .map(|s| s.id)
                .collect();
            if !up.is_empty() {
                let id = up[self.rng.random_range(0..up.len())];
                self.crash(id);
                let down_ms = self.rng.random_range(1..=faults.max_down_ms);
                self.schedule(self.now + down_ms, Event::Restart { id });
            }
        }
        let next = self
            .rng
            .random_range(faults.crash_every_ms / 2..=faults.crash_every_ms * 3 / 2);
        self.schedule(self.now + next.max(1), Event::CrashTick);
    }

    /// Cuts or clogs the link between the coordinator and a random server for a while,
    /// and schedules the next such fault.
    fn link_fault_tick(&mut self, fault: LinkFault) {
        if self.healed {
            return;
        }
        let ids = &self.config.server_ids;
        let id = ids[self.rng.random_range(0..ids.len())];
        let (lasts_ms, every_ms) = match fault {
            LinkFault::Partition => (100..3000, self.config.net.partition_every_ms),
            LinkFault::Clog => (50..2000, self.config.net.clog_every_ms),
        };
        let until = self.now + self.rng.random_range(lasts_ms);
        let (note, next_event) = match fault {
            LinkFault::Partition => {
                self.network.partition(id, until);
                (
                    format!("server {id} partitioned until {until} ms"),
                    Event::PartitionTick,
                )
            }
            LinkFault::Clog => {
                self.network.clog(id, until);
                (
                    format!("link to server {id} clogged until {until} ms"),
                    Event::ClogTick,
                )
            }
        };
        self.trace.note(self.now, &note);
        let next = self.rng.random_range(every_ms / 2..=every_ms * 3 / 2);
        self.schedule(self.now + next.max(1), next_event);
    }

    fn heal(&mut self) {
        self.healed = true;
        self.network.heal();
        self.trace.note(self.now, "faults stop");
        let down: Vec<u64> = self
            .servers
            .values()
            .filter(|s| s.live.is_none())
            .map(|s| s.id)
            .collect();
        for id in down {
            self.restart(id);
        }
    }

    // ----- clients -----

    fn client_next(&mut self, client: u32) {
        if self.now >= self.config.clients_stop_at_ms() {
            return;
        }
        let key = self.config.keys[self.rng.random_range(0..self.config.keys.len())].clone();
        let roll = self.rng.random_range(0..100);
        let (command, request) = if roll < 50 {
            (Command::Get, ClientRequest::Get { key: key.clone() })
        } else if roll < 85 {
            let node = &mut self.clients[client as usize];
            node.writes += 1;
            let value = format!("c{client}w{}", node.writes);
            (
                Command::Put {
                    value: value.clone(),
                },
                ClientRequest::Put {
                    key: key.clone(),
                    value,
                },
            )
        } else {
            (Command::Del, ClientRequest::Del { key: key.clone() })
        };
        let op = self.history.invoke(client, &key, command, self.now);
        self.clients[client as usize].current = Some(op);
        let line = Envelope::with_id(Some(RequestId::Unsigned(op as u64)), request).encode();
        self.send(Message {
            from: NodeId::Client(client),
            to: NodeId::Coordinator,
            from_incarnation: 0,
            to_incarnation: 0,
            channel: Channel::ClientRequest,
            line,
        });
        let at = self.now + self.config.client_timeout_ms;
        self.schedule(at, Event::ClientTimeout { client, op });
    }

    fn client_answer(&mut self, client: u32, env: Envelope<ClientResponse>) {
        let Some(RequestId::Unsigned(op)) = env.id else {
            self.anomaly(format!("client {client} got an answer without its id"));
            return;
        };
        let op = op as usize;
        if self.clients[client as usize].current != Some(op) {
            // The answer to an operation the client already gave up on.
            return;
        }
        let command = self.history.operations()[op].command.clone();
        let outcome = match (&command, env.msg) {
            (Command::Get, ClientResponse::Value { value, .. }) => Outcome::Found(value),
            (Command::Get | Command::Del, ClientResponse::Error(reply))
                if reply.code == ErrorCode::NotFound =>
            {
                Outcome::NotFound
            }
            (Command::Put { .. } | Command::Del, ClientResponse::Success) => Outcome::Done,
            (_, ClientResponse::Error(_)) => Outcome::Failed,
            (command, other) => {
                self.anomaly(format!("answer {other:?} does not fit {command:?}"));
                return;
            }
        };
        self.history.complete(op, outcome, self.now);
        self.clients[client as usize].current = None;
        let think = self.rng.random_range(0..20);
        self.schedule(self.now + think, Event::ClientNext { client });
    }

    fn client_timeout(&mut self, client: u32, op: usize) {
        if self.clients[client as usize].current != Some(op) {
            return;
        }
        self.clients[client as usize].current = None;
        self.trace.note(
            self.now,
            &format!("client {client} gives up on operation {op}"),
        );
        self.schedule(self.now, Event::ClientNext { client });
    }

    // ----- inspection for the checkers -----

    /// The cluster as it is now, for the final checks, and any value that could not be
    /// read back from a server's log.
    pub(crate) fn snapshot(&self) -> (ClusterSnapshot, Vec<String>) {
        let mut errors = Vec::new();
        let mut servers = BTreeMap::new();
        for (&id, node) in &self.servers {
            let snapshot = node.live.as_ref().map(|live| {
                let mut values = BTreeMap::new();
                for key in live.replica.committed_keys() {
                    match live.replica.committed_value(key) {
                        Ok(Some(value)) => {
                            values.insert(key.to_owned(), value);
                        }
                        Ok(None) => {
                            errors.push(format!("server {id} lists {key:?} without a value"))
                        }
                        Err(err) => errors.push(format!("server {id} cannot read {key:?}: {err}")),
                    }
                }
                ServerSnapshot {
                    values,
                    in_doubt: live.replica.in_doubt().collect(),
                }
            });
            servers.insert(id, snapshot);
        }
        let snapshot = ClusterSnapshot {
            servers,
            open_transactions: self.coordinator.open_transactions(),
        };
        (snapshot, errors)
    }
}

fn sim_addr(id: u64, incarnation: u32) -> String {
    format!("s{id}-i{incarnation}:7000")
}

fn parse_sim_addr(addr: &str) -> Option<(u64, u32)> {
    let host = addr.strip_suffix(":7000")?.strip_prefix('s')?;
    let (id, incarnation) = host.split_once("-i")?;
    Some((id.parse().ok()?, incarnation.parse().ok()?))
}
