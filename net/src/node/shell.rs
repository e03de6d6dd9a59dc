//! The node loop both peer-to-peer modes share: one port for clients and other nodes
//! (and, when asked for, a RESP2 port for Redis clients beside it), a connection kept to
//! every other node, the shell's failure detector, the log with group
//! commit and the wall clock, around a core that says what its lines mean
//! ([`NodeCore`]). An eventual-mode node and a peer (two-phase commit) node differ only
//! in their core and in how they start from their data directory.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::Registry;
use ringkv_core::eventual::{Cluster, NodeId};
use ringkv_core::proto::{Envelope, ErrorCode, WireMessage};
use ringkv_core::session::Access;
use ringkv_core::storage::{PersistToken, SyncUrgency};
use ringkv_core::ReplyTo;

use crate::compaction::Compaction;
use crate::error::NetError;
use crate::event_loop::{earliest, EventLoop, Readiness};
use crate::inbound::{decoded_line, Decoded, Port, PortSpec};
use crate::limits::NetLimits;
use crate::logfile::{LogFile, Replaced};
use crate::resp::{node_spec, RespAnswer, RespListen, RespParser, RespRequest};
use crate::tokens::{kind_of, Kind};

use super::detector::{Change, Detector};
use super::links::PeerLinks;
use super::wire::{ping_of, Inbound, PeerEncoder, PONG_LINE};

/// One line of the port as a core decodes it: the request, or the answer to send back.
pub(crate) type DecodedLine<C> =
    Result<Envelope<Inbound<<C as NodeCore>::Request, <C as NodeCore>::Message>>, Vec<u8>>;

/// What the shell tells a core.
#[derive(Debug)]
pub(crate) enum CoreInput<Q, M> {
    /// A client's request.
    Client { from: ReplyTo, msg: Q },
    /// Another node's message, from the node its line names.
    Peer { from: NodeId, msg: M },
    /// The failure detector heard from a node after it was down.
    NodeUp(NodeId),
    /// The failure detector lost a node.
    NodeDown(NodeId),
    /// The log is durable up to `token`.
    Persisted { token: PersistToken },
    /// The core's timer is due.
    Tick,
}

/// What a core asks the shell to do.
#[derive(Debug)]
pub(crate) enum CoreOutput<R, M> {
    /// Answer a client.
    Reply { to: ReplyTo, msg: R },
    /// Send a message to another node.
    Send { to: NodeId, msg: M },
    /// Append to the log, then report it durable.
    Persist { token: PersistToken, bytes: Vec<u8> },
}

/// A node's protocol core as the shared loop drives it: how its port's lines decode and
/// its messages encode, and the core's inputs and outputs in the shell's terms.
pub(crate) trait NodeCore {
    /// A client's request; RESP commands become one too.
    type Request: RespRequest;
    /// A message between nodes.
    type Message: std::fmt::Debug;
    /// An answer to a client, on either port.
    type Reply: WireMessage + RespAnswer;

    /// Decodes one line that is not a ping: a request, or the error answer to send back.
    fn decode(line: &[u8]) -> DecodedLine<Self>;
    /// The key a client request touches, so one connection's requests keep their order.
    fn access(request: &Self::Request) -> Option<(&str, Access)>;
    /// An error answer without id.
    fn error_line(code: ErrorCode) -> Vec<u8>;
    /// Feeds one input at time `now_ms` (the wall clock, never going back).
    fn handle(&mut self, now_ms: u64, input: CoreInput<Self::Request, Self::Message>);
    /// The next thing to carry out.
    fn poll_output(&mut self) -> Option<CoreOutput<Self::Reply, Self::Message>>;
    /// When the core next wants a `Tick`, on the wall clock.
    fn poll_timeout(&self) -> Option<u64>;
    /// The line that carries `msg` to another node.
    fn encode(&mut self, encoder: &mut PeerEncoder, msg: Self::Message) -> Vec<u8>;

    /// A log holding the effect of every write so far and nothing else, to replace the
    /// whole log with once it grew past `--log-compact-bytes`; `None` for a core that
    /// does not compact its log (the default). An error (a state that could not be read
    /// back) leaves the log as it is.
    fn compact_log(&mut self) -> Option<Result<Compacted<'_>, String>> {
        None
    }

    /// The log was replaced by the last [`NodeCore::compact_log`]'s bytes, durably;
    /// `covered` is the last write of the old log not yet reported durable, durable now.
    fn install_compacted(&mut self, _covered: Option<PersistToken>) {}

    /// The last [`NodeCore::compact_log`]'s bytes were not installed: forget them.
    fn drop_compacted(&mut self) {}
}

/// A compacted log a core built, for the shell to install.
pub(crate) struct Compacted<'a> {
    /// The whole new log.
    pub(crate) bytes: &'a [u8],
    /// Keys it holds, for the log line.
    pub(crate) keys: usize,
}

fn decode<C: NodeCore>(line: Vec<u8>) -> Decoded<Inbound<C::Request, C::Message>> {
    if let Some(from) = ping_of(&line) {
        return decoded_line(Ok(Envelope::bare(Inbound::Ping(from))));
    }
    decoded_line(C::decode(&line))
}

/// Client requests of one connection take effect in the order sent, key by key, as on
/// every other port; nodes' messages need no such order (every one is idempotent).
fn access<C: NodeCore>(msg: &Inbound<C::Request, C::Message>) -> Option<(&str, Access)> {
    match msg {
        Inbound::Client(request) => C::access(request),
        Inbound::Peer(..) | Inbound::Ping(_) => None,
    }
}

/// Only clients' requests count against the held-request budget: other nodes' messages
/// (acknowledgements among them) are never held back by it.
fn budgeted<C: NodeCore>(msg: &Inbound<C::Request, C::Message>) -> bool {
    matches!(msg, Inbound::Client(_))
}

fn protocol_error<C: NodeCore>(_: &str) -> Vec<u8> {
    C::error_line(ErrorCode::Malformed)
}

/// The node port of core `C`: clients and nodes.
fn port_spec<C: NodeCore>() -> PortSpec<Inbound<C::Request, C::Message>> {
    PortSpec {
        name: "node",
        decode: decode::<C>,
        error_line: C::error_line,
        protocol_error: protocol_error::<C>,
        // Nodes ping each other every few hundred milliseconds, so a live node's
        // connection is never idle.
        idle_timeout: true,
        access: access::<C>,
        first_handle: 1,
        budgeted: budgeted::<C>,
    }
}

/// The RESP2 port, if an address was given for it.
fn bind_resp<C: NodeCore>(
    listen: Option<RespListen>,
    registry: &Registry,
    limits: &NetLimits,
) -> Result<Option<Port<C::Request, RespParser>>, NetError> {
    listen
        .map(|listen| {
            let spec = node_spec::<C::Request>;
            crate::resp::bind_port(listen, registry, spec, limits)
        })
        .transpose()
}

/// A started core and what the loop needs around it.
pub(crate) struct Started<C> {
    /// The core, recovered or new.
    pub(crate) core: C,
    /// Its log, opened.
    pub(crate) log: LogFile,
    /// This node.
    pub(crate) id: NodeId,
    /// Every node of the cluster file.
    pub(crate) cluster: Cluster,
    /// The wall-clock time the core was started at: the node's time never goes below it.
    pub(crate) started_ms: u64,
    /// When the log is compacted (if the core compacts it).
    pub(crate) compaction: Compaction,
}

/// Where a node is asked to listen.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked {
    /// The node port: its own line of the cluster file.
    pub(crate) listen: SocketAddr,
    /// The RESP2 port, if one is asked for.
    pub(crate) resp: Option<RespListen>,
}

/// Where a node's ports listen: the node port, and the RESP2 port if asked for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addrs {
    /// The node port (clients' JSON lines and the other nodes').
    pub(crate) listen: SocketAddr,
    /// The RESP2 port.
    pub(crate) resp: Option<SocketAddr>,
}

/// Binds the node's ports and serves until `shutdown`; calls `on_ready` with the
/// addresses bound. A failed write or fsync of the log stops the node with an error.
pub(crate) fn serve<C: NodeCore>(
    started: Started<C>,
    asked: Asked,
    limits: &NetLimits,
    shutdown: crate::Shutdown,
    on_ready: impl FnOnce(Addrs),
) -> Result<(), NetError> {
    let Started {
        core,
        mut log,
        id,
        cluster,
        started_ms,
        compaction,
    } = started;
    let mut ev = EventLoop::new(shutdown)?;
    // The fsync runs on the sync thread, so reads, pings and the failure detector's
    // traffic never wait for the disk.
    log.start_sync_thread(ev.waker())?;
    let port = Port::bind(
        asked.listen,
        Kind::PortA,
        ev.registry(),
        port_spec::<C>(),
        limits.clone(),
    )?;
    let resp = bind_resp::<C>(asked.resp, ev.registry(), limits)?;
    on_ready(Addrs {
        listen: port.local_addr()?,
        resp: resp.as_ref().map(Port::local_addr).transpose()?,
    });
    let loop_now = ev.now_ms();
    let others = cluster.nodes.keys().copied().filter(|&n| n != id);
    let mut shell = Shell {
        links: PeerLinks::new(&cluster, id, limits),
        detector: Detector::new(others, loop_now),
        encoder: PeerEncoder::new(id),
        core,
        log,
        port,
        resp,
        clock: WallClock {
            last_ms: started_ms,
        },
        compaction,
        failure: None,
    };
    let mut ready = Vec::new();
    while !ev.stopping() {
        let loop_now = ev.now_ms();
        let deadline = earliest([
            shell.core_deadline(loop_now),
            shell.port.next_deadline_ms(),
            shell.resp.as_ref().and_then(Port::next_deadline_ms),
            shell.links.next_deadline_ms(),
            Some(shell.detector.next_deadline_ms()),
        ]);
        let busy = shell.port.has_ready()
            || shell.resp.as_ref().is_some_and(Port::has_ready)
            || shell.links.has_ready();
        let now_ms = ev.wait(deadline, busy, &mut ready)?;
        shell.turn(now_ms, ev.registry(), &ready);
        if let Some(err) = shell.failure.take() {
            tracing::error!(id, %err, "node stopped");
            return Err(err);
        }
    }
    tracing::info!(id, syncs = shell.log.syncs(), "node stopped");
    Ok(())
}

/// The node's `now`: wall-clock milliseconds, never going back within a process. An
/// eventual core keeps hint creation times in its log and stamps last-write-wins versions
/// with `now`, so its time must go on across restarts, which a monotonic clock does not.
#[derive(Debug, Default)]
pub(crate) struct WallClock {
    last_ms: u64,
}

impl WallClock {
    /// The time now, never before the last reading.
    pub(crate) fn now_ms(&mut self) -> u64 {
        self.last_ms = self.last_ms.max(wall_ms());
        self.last_ms
    }

    fn peek_ms(&self) -> u64 {
        self.last_ms
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The core and everything its loop moves bytes for.
struct Shell<C: NodeCore> {
    core: C,
    log: LogFile,
    port: Port<Inbound<C::Request, C::Message>>,
    /// The RESP2 port: the same client requests as `port`, another wire format.
    resp: Option<Port<C::Request, RespParser>>,
    links: PeerLinks,
    detector: Detector,
    encoder: PeerEncoder,
    clock: WallClock,
    compaction: Compaction,
    /// A failure of the log, which stops the loop.
    failure: Option<NetError>,
}

impl<C: NodeCore> Shell<C> {
    /// The core's next timer in the loop's time (the core runs on the wall clock).
    fn core_deadline(&self, loop_now_ms: u64) -> Option<u64> {
        let at = self.core.poll_timeout()?;
        Some(loop_now_ms.saturating_add(at.saturating_sub(self.clock.peek_ms())))
    }

    /// One loop iteration's work after the wait. Answers that promise nothing leave
    /// before the group commit; what waited for durability follows it.
    fn turn(&mut self, now_ms: u64, registry: &Registry, ready: &[Readiness]) {
        for event in ready {
            match kind_of(event.token) {
                Some(Kind::PortA) => self.port.on_event(now_ms, registry, event),
                Some(Kind::PortC) => {
                    if let Some(resp) = &mut self.resp {
                        resp.on_event(now_ms, registry, event);
                    }
                }
                Some(Kind::Link) => self.links.on_event(now_ms, registry, event),
                _ => {}
            }
        }
        self.links.pump(now_ms, registry);
        self.link_news(now_ms, registry);
        self.requests(now_ms, registry);
        if self
            .core
            .poll_timeout()
            .is_some_and(|at| at <= self.clock.now_ms())
        {
            self.handle(registry, now_ms, CoreInput::Tick);
        }
        self.detect(now_ms, registry);
        self.flush_ports(now_ms, registry);
        // Group commit: what waited for the sync that finished goes out, and the writes
        // since are handed to the sync thread as one.
        match self.log.finished_sync() {
            Ok(Some(token)) => self.handle(registry, now_ms, CoreInput::Persisted { token }),
            Ok(None) => {}
            Err(err) => self.fail(err),
        }
        self.compact_if_due(registry, now_ms);
        if let Err(err) = self.log.begin_sync() {
            self.fail(err);
        }
        self.port.sweep(now_ms, registry);
        if let Some(resp) = &mut self.resp {
            resp.sweep(now_ms, registry);
        }
        self.flush_ports(now_ms, registry);
        self.links.tick(now_ms, registry);
        self.link_news(now_ms, registry);
        self.links.flush(now_ms, registry);
    }

    fn flush_ports(&mut self, now_ms: u64, registry: &Registry) {
        self.port.flush(now_ms, registry);
        if let Some(resp) = &mut self.resp {
            resp.flush(now_ms, registry);
        }
    }

    /// What the links reported: any line back is a sign of life, a failed connection a
    /// loss.
    fn link_news(&mut self, now_ms: u64, registry: &Registry) {
        for (node, alive) in self.links.take_news() {
            let change = if alive {
                self.detector.heard(node, now_ms)
            } else {
                self.detector.lost(node)
            };
            self.changed(registry, now_ms, change);
        }
    }

    fn requests(&mut self, now_ms: u64, registry: &Registry) {
        let mut requests = Vec::new();
        self.port.take_requests(now_ms, registry, &mut requests);
        for (from, request) in requests {
            match request {
                Inbound::Client(msg) => {
                    self.handle(registry, now_ms, CoreInput::Client { from, msg })
                }
                Inbound::Peer(node, msg) => {
                    // A node's message gets no answer on this connection: its slot is
                    // freed at once, and answers travel on this node's own connection.
                    self.port.reply_with(from, |_, _| Vec::new());
                    let change = self.detector.heard(node, now_ms);
                    self.changed(registry, now_ms, change);
                    self.handle(registry, now_ms, CoreInput::Peer { from: node, msg });
                }
                Inbound::Ping(node) => {
                    self.port.reply_with(from, |_, _| PONG_LINE.to_vec());
                    let change = self.detector.heard(node, now_ms);
                    self.changed(registry, now_ms, change);
                }
            }
        }
        let mut commands = Vec::new();
        if let Some(resp) = &mut self.resp {
            resp.take_requests(now_ms, registry, &mut commands);
        }
        for (from, msg) in commands {
            self.handle(registry, now_ms, CoreInput::Client { from, msg });
        }
    }

    /// Expires silent nodes and pings every other node when a round is due.
    fn detect(&mut self, now_ms: u64, registry: &Registry) {
        if !self.detector.ping_due(now_ms) {
            return;
        }
        let mut changes = Vec::new();
        self.detector.expire(now_ms, &mut changes);
        for change in changes {
            self.changed(registry, now_ms, Some(change));
        }
        let ping = self.encoder.ping();
        self.links.send_all(now_ms, registry, &ping);
    }

    fn changed(&mut self, registry: &Registry, now_ms: u64, change: Option<Change>) {
        let input = match change {
            Some(Change::Up(node)) => {
                tracing::info!(node, "node up");
                CoreInput::NodeUp(node)
            }
            Some(Change::Down(node)) => {
                tracing::info!(node, "node down");
                self.links.discard(node);
                CoreInput::NodeDown(node)
            }
            None => return,
        };
        self.handle(registry, now_ms, input);
    }

    /// Feeds one input to the core, on the wall clock, and carries out what it asks for.
    fn handle(
        &mut self,
        registry: &Registry,
        now_ms: u64,
        input: CoreInput<C::Request, C::Message>,
    ) {
        let node_now = self.clock.now_ms();
        self.core.handle(node_now, input);
        self.carry_out(registry, now_ms);
    }

    /// Rewrites the log to what the core's recovery needs once it has grown past the
    /// threshold (and twice what the last rewrite left), between two syncs (the sync
    /// thread idle, every write it took reported). On the loop, as the coordinator does:
    /// the new log is bounded by the store, the hints and the debts, not by the history.
    /// The new log holds every write appended so far, so once installed they are all
    /// durable.
    fn compact_if_due(&mut self, registry: &Registry, now_ms: u64) {
        let from_bytes = self.log.len_bytes();
        if !self.compaction.is_due(from_bytes) || self.log.sync_busy() {
            return;
        }
        let started = std::time::Instant::now();
        let compacted = match self.core.compact_log() {
            None => return,
            Some(Ok(compacted)) => compacted,
            Some(Err(err)) => {
                tracing::warn!(%err, "compacting the node's log failed; it goes on uncompacted");
                self.compaction.done(from_bytes);
                return;
            }
        };
        let (to_bytes, keys) = (compacted.bytes.len() as u64, compacted.keys);
        match self.log.replace(compacted.bytes) {
            Ok(Replaced::Done(covered)) => {
                self.compaction.done(to_bytes);
                self.core.install_compacted(covered);
                self.carry_out(registry, now_ms);
                tracing::info!(
                    from_bytes,
                    to_bytes,
                    keys,
                    took_us = started.elapsed().as_micros() as u64,
                    "node log compacted"
                );
            }
            Ok(Replaced::Skipped(err)) => {
                // The old log is whole and goes on; tried again once it doubles.
                tracing::warn!(%err, "compacting the node's log failed; it goes on uncompacted");
                self.core.drop_compacted();
                self.compaction.done(from_bytes);
            }
            Err(err) => self.fail(err),
        }
    }

    /// Carries out what the core asked for.
    fn carry_out(&mut self, registry: &Registry, now_ms: u64) {
        while let Some(output) = self.core.poll_output() {
            match output {
                CoreOutput::Reply { to, msg } => match &mut self.resp {
                    Some(resp) if resp.owns(to) => {
                        resp.reply_with(to, |_, tag| msg.encode_resp(tag))
                    }
                    _ => self.port.reply(to, &msg),
                },
                // A message for a node known down is dropped: every core resends what
                // matters on its own timers, and queued it would arrive as a stale burst
                // when the node comes back.
                CoreOutput::Send { to, msg } if self.detector.is_up(to) => {
                    let line = self.core.encode(&mut self.encoder, msg);
                    self.links.send(now_ms, registry, to, line);
                }
                CoreOutput::Send { to, .. } => {
                    tracing::trace!(node = to, "message for a node down dropped")
                }
                CoreOutput::Persist { token, bytes } => {
                    // The node syncs in its loop, every turn: no write is deferred.
                    if let Err(err) = self.log.append(token, &bytes, SyncUrgency::Now) {
                        self.fail(err);
                    }
                }
            }
        }
    }

    /// A write or fsync of the log failed: after a failed fsync the kernel may have
    /// dropped the pages, so nothing written since may ever be acknowledged. The loop
    /// stops after this iteration; a restart recovers from what is durable.
    fn fail(&mut self, err: NetError) {
        tracing::error!(%err, "the node's log failed; stopping");
        self.failure.get_or_insert(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_never_goes_back() {
        let mut clock = WallClock {
            last_ms: u64::MAX - 1,
        };
        assert_eq!(clock.now_ms(), u64::MAX - 1);
        assert_eq!(clock.peek_ms(), u64::MAX - 1);
    }
}

/// The port's decoder, for the cores' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// Decodes `line` as node `C`'s port does.
    pub(crate) fn decode_line<C: NodeCore>(
        line: Vec<u8>,
    ) -> Decoded<Inbound<C::Request, C::Message>> {
        decode::<C>(line)
    }
}
