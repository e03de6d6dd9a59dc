//! An eventual-mode node's shell: one port for clients and other nodes, a connection kept
//! to every other node, the write-ahead log with group commit, the incarnation kept in
//! the data directory, and a ping-based failure detector, around
//! [`ringkv_core::eventual::Node`].

mod detector;
mod links;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::Registry;
use ringkv_core::eventual::{Node, NodeConfig, NodeInput, NodeOutput, RecoveryReport};
use ringkv_core::log::after_prefix;
use ringkv_core::Role;

use crate::datadir::{read_number, write_number, DataDir};
use crate::error::NetError;
use crate::event_loop::{earliest, EventLoop, Readiness};
use crate::inbound::Port;
use crate::limits::NetLimits;
use crate::logfile::{refuse_damage, FileLogReader, LogFile};
use crate::tokens::{kind_of, Kind};

use detector::{Change, Detector};
use links::PeerLinks;
use wire::{node_spec, Inbound, PeerEncoder, PONG_LINE};

/// The file that keeps which life of the data directory this is.
const INCARNATION_FILE: &str = "incarnation";

/// Where and how a node runs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The protocol's settings (its `incarnation` and `seed` are the shell's to choose:
    /// whatever they hold is replaced).
    pub config: NodeConfig,
    /// Where the log, the ID, the incarnation and the lock live.
    pub data_dir: PathBuf,
    /// Where to listen: the node's own line of the cluster file, resolved.
    pub listen: SocketAddr,
    /// The port's limits (also the bound on bytes queued to each other node).
    pub limits: NetLimits,
    /// Whether to cut a log damaged before its end (losing every record from the damage
    /// on) instead of refusing to start.
    pub truncate_corrupt_log: bool,
}

/// What a started node tells its caller.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node's ID.
    pub id: u64,
    /// The address actually bound.
    pub listen: SocketAddr,
    /// This life of the data directory: part of every clock entry the node writes.
    pub incarnation: u64,
    /// What recovery found in the log; `None` when the directory was empty and the node
    /// catches up from the others.
    pub recovery: Option<RecoveryReport>,
}

/// Opens the data directory, recovers the node from its log (or starts it on an empty
/// one with a fresh incarnation), listens, and serves until `shutdown` is triggered.
/// Calls `on_ready` once listening. A failed write or fsync of the log stops the node
/// with an error: nothing that is not durable is ever acknowledged.
pub fn run_node(
    opts: NodeOptions,
    shutdown: crate::Shutdown,
    on_ready: impl FnOnce(&NodeInfo),
) -> Result<(), NetError> {
    opts.limits.validate().map_err(NetError::Config)?;
    let id = opts.config.id;
    let dir = DataDir::open(&opts.data_dir, Some(id))?;
    let (node, log, info) = start_node(&opts, &dir)?;
    let mut ev = EventLoop::new(shutdown)?;
    let port = Port::bind(
        opts.listen,
        Kind::PortA,
        ev.registry(),
        node_spec(),
        opts.limits.clone(),
    )?;
    let info = NodeInfo {
        listen: port.local_addr()?,
        ..info
    };
    tracing::info!(id, listen = %info.listen, incarnation = info.incarnation, "node listening");
    on_ready(&info);
    let loop_now = ev.now_ms();
    let others: Vec<u64> = node
        .config()
        .cluster
        .nodes
        .keys()
        .copied()
        .filter(|&n| n != id)
        .collect();
    let mut shell = Shell {
        links: PeerLinks::new(&node.config().cluster, id, &opts.limits),
        detector: Detector::new(others, loop_now),
        encoder: PeerEncoder::new(id),
        node,
        log,
        port,
        clock: WallClock::default(),
        failure: None,
    };
    let mut ready = Vec::new();
    while !ev.stopping() {
        let loop_now = ev.now_ms();
        let deadline = earliest([
            shell.core_deadline(loop_now),
            shell.port.next_deadline_ms(),
            shell.links.next_deadline_ms(),
            Some(shell.detector.next_deadline_ms()),
        ]);
        let busy = shell.port.has_ready() || shell.links.has_ready();
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

/// Recovers the node from its log, or starts it on an empty directory with a fresh
/// incarnation, stored durably before anything is served.
fn start_node(
    opts: &NodeOptions,
    dir: &DataDir,
) -> Result<(Node<FileLogReader>, LogFile, NodeInfo), NetError> {
    let (mut log, bytes) = LogFile::open(dir.path())?;
    let reader = log.reader()?;
    let mut config = opts.config.clone();
    config.seed = crate::seed::seed_from_os();
    let stored = read_number(dir.path(), INCARNATION_FILE, "an incarnation")?;
    let info = |incarnation, recovery| NodeInfo {
        id: opts.config.id,
        listen: opts.listen,
        incarnation,
        recovery,
    };
    if bytes.is_empty() {
        // Nothing of an earlier life survives (a new node, or a lost disk): a fresh
        // incarnation, so that no clock entry this node hands out can be one it handed
        // out before (Riak's kv679).
        config.incarnation = fresh_incarnation(stored);
        write_number(dir.path(), INCARNATION_FILE, config.incarnation)?;
        tracing::info!(
            id = config.id,
            incarnation = config.incarnation,
            "empty data directory: a new incarnation; catching up from the other nodes"
        );
        let node = Node::new(config.clone(), reader).map_err(NetError::Config)?;
        return Ok((node, log, info(config.incarnation, None)));
    }
    let Some(incarnation) = stored else {
        return Err(NetError::Config(format!(
            "{} holds a log but no {INCARNATION_FILE} file: the directory is damaged; restore the file, or empty the directory to start this node afresh",
            dir.path().display()
        )));
    };
    config.incarnation = incarnation;
    let (node, report) = Node::recover(config, &bytes, reader).map_err(NetError::Config)?;
    let bad_record = report.bad_record.as_ref().map(|(_, err)| err.to_string());
    let after = after_prefix(&bytes, report.valid_len);
    refuse_damage(
        &log,
        report.valid_len,
        after,
        bad_record,
        opts.truncate_corrupt_log,
    )?;
    if report.valid_len < bytes.len() as u64 {
        tracing::warn!(
            cut_bytes = bytes.len() as u64 - report.valid_len,
            "the log's torn tail was cut off"
        );
        log.truncate(report.valid_len)?;
    }
    tracing::info!(
        records = report.records,
        keys = report.keys,
        hints = report.hints,
        "log recovered"
    );
    for anomaly in &report.anomalies {
        tracing::warn!(anomaly = %anomaly, "log anomaly skipped");
    }
    Ok((node, log, info(incarnation, Some(report))))
}

/// A new incarnation from OS randomness: at least 1 (0 is the form without one), below
/// 2^31 so clocks stay readable, and never the one stored before.
fn fresh_incarnation(previous: Option<u64>) -> u64 {
    loop {
        let drawn = crate::seed::seed_from_os() % (1 << 31) + 1;
        if Some(drawn) != previous {
            return drawn;
        }
    }
}

/// The node's `now`: wall-clock milliseconds, never going back within a process. The
/// core keeps hint creation times in its log and stamps last-write-wins versions with
/// `now`, so its time must go on across restarts, which a monotonic clock does not.
#[derive(Debug, Default)]
struct WallClock {
    last_ms: u64,
}

impl WallClock {
    fn now_ms(&mut self) -> u64 {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last_ms = self.last_ms.max(wall_ms);
        self.last_ms
    }

    fn peek_ms(&self) -> u64 {
        self.last_ms
    }
}

/// The node and everything its loop moves bytes for.
struct Shell {
    node: Node<FileLogReader>,
    log: LogFile,
    port: Port<Inbound>,
    links: PeerLinks,
    detector: Detector,
    encoder: PeerEncoder,
    clock: WallClock,
    /// A failure of the log, which stops the loop.
    failure: Option<NetError>,
}

impl Shell {
    /// The core's next timer in the loop's time (the core runs on the wall clock).
    fn core_deadline(&self, loop_now_ms: u64) -> Option<u64> {
        let at = self.node.poll_timeout()?;
        Some(loop_now_ms.saturating_add(at.saturating_sub(self.clock.peek_ms())))
    }

    /// One loop iteration's work after the wait. Answers that promise nothing leave
    /// before the group commit; what waited for durability follows it.
    fn turn(&mut self, now_ms: u64, registry: &Registry, ready: &[Readiness]) {
        for event in ready {
            match kind_of(event.token) {
                Some(Kind::PortA) => self.port.on_event(now_ms, registry, event),
                Some(Kind::Link) => self.links.on_event(now_ms, registry, event),
                _ => {}
            }
        }
        self.links.pump(now_ms, registry);
        self.link_news(now_ms, registry);
        self.requests(now_ms, registry);
        if self
            .node
            .poll_timeout()
            .is_some_and(|at| at <= self.clock.now_ms())
        {
            self.handle(registry, now_ms, NodeInput::Tick);
        }
        self.detect(now_ms, registry);
        self.port.flush(now_ms, registry);
        match self.log.sync() {
            Ok(Some(token)) => self.handle(registry, now_ms, NodeInput::Persisted { token }),
            Ok(None) => {}
            Err(err) => self.fail(err),
        }
        self.port.sweep(now_ms, registry);
        self.port.flush(now_ms, registry);
        self.links.tick(now_ms, registry);
        self.link_news(now_ms, registry);
        self.links.flush(now_ms, registry);
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
                    self.handle(registry, now_ms, NodeInput::Client { from, msg })
                }
                Inbound::Peer(node, msg) => {
                    // A node's message gets no answer on this connection: its slot is
                    // freed at once, and answers travel on this node's own connection.
                    self.port.reply_with(from, |_, _| Vec::new());
                    let change = self.detector.heard(node, now_ms);
                    self.changed(registry, now_ms, change);
                    self.handle(registry, now_ms, NodeInput::Peer { from: node, msg });
                }
                Inbound::Ping(node) => {
                    self.port.reply_with(from, |_, _| PONG_LINE.to_vec());
                    let change = self.detector.heard(node, now_ms);
                    self.changed(registry, now_ms, change);
                }
            }
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
                NodeInput::NodeUp(node)
            }
            Some(Change::Down(node)) => {
                tracing::info!(node, "node down");
                self.links.discard(node);
                NodeInput::NodeDown(node)
            }
            None => return,
        };
        self.handle(registry, now_ms, input);
    }

    /// Feeds one input to the core, on the wall clock, and carries out what it asks for.
    fn handle(&mut self, registry: &Registry, now_ms: u64, input: NodeInput) {
        let node_now = self.clock.now_ms();
        self.node.handle(node_now, input);
        while let Some(output) = self.node.poll_output() {
            match output {
                NodeOutput::Reply { to, msg } => self.port.reply(to, &msg),
                // A message for a node known down is dropped, as the core allows: its
                // request has a deadline, and hints carry writes over. Queued, it would
                // arrive as a stale burst when the node comes back.
                NodeOutput::Send { to, msg } if self.detector.is_up(to) => {
                    let line = self.encoder.encode(msg);
                    self.links.send(now_ms, registry, to, line);
                }
                NodeOutput::Send { to, .. } => {
                    tracing::trace!(node = to, "message for a node down dropped")
                }
                NodeOutput::Persist { token, bytes } => {
                    if let Err(err) = self.log.append(token, &bytes) {
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

    fn stored_incarnation(dir: &std::path::Path) -> Option<u64> {
        read_number(dir, INCARNATION_FILE, "an incarnation")
            .ok()
            .flatten()
    }

    #[test]
    fn a_fresh_incarnation_is_never_zero_nor_the_previous_one() {
        for _ in 0..100 {
            let drawn = fresh_incarnation(Some(5));
            assert!((1..=1 << 31).contains(&drawn) && drawn != 5);
        }
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(stored_incarnation(tmp.path()), None);
        write_number(tmp.path(), INCARNATION_FILE, 9).unwrap();
        assert_eq!(stored_incarnation(tmp.path()), Some(9));
    }

    #[test]
    fn the_wall_clock_never_goes_back() {
        let mut clock = WallClock {
            last_ms: u64::MAX - 1,
        };
        assert_eq!(clock.now_ms(), u64::MAX - 1);
        assert_eq!(clock.peek_ms(), u64::MAX - 1);
    }
}
