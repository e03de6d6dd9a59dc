//! The eventual-mode node (PROTOCOL.md section 2, after Dynamo and Cassandra): every node
//! coordinates any client request and holds the replicas of the keys the ring gives it.
//!
//! It is a thin composition of shared components: the ring's preference lists, the
//! versions component's containers (or last-write-wins stamps), a [`Store`] of key states
//! in the log, the [`Durability`] pipeline that holds every answer promising durability
//! until its write is synced, [`replay_log`](crate::storage::replay_log) at restart, a
//! [`Timers`] table, and fault sites. Its own parts, one idea each:
//! - [`config`]: settings and the cluster file;
//! - [`state`]: a key's state, its encoding, merge and client answer;
//! - [`record`]: the write-ahead log's records;
//! - [`hints`]: hinted handoff's bounded store;
//! - `write`, `read`: requests this node coordinates (quorum writes, quorum reads with
//!   read repair);
//! - `serve`: what this node does as a replica for a coordinator (itself included);
//! - `handoff`: making, replaying and ageing hints;
//! - `reap`: tombstones to graves, graves removed for good;
//! - `owed`: the first replica's backstop for hints its write's coordinator never made;
//! - `resync`: a node on an empty data directory catching up from the others;
//! - [`compact`]: the log rewritten to what recovery needs;
//! - `recovery`, `invariants`.
//!
//! Messages to itself (this node as a replica of a key it coordinates) go through the
//! same path as any other node's: they are queued and handled before `handle` returns.

pub mod compact;
pub mod config;
pub mod hints;
pub mod record;
pub mod state;

mod dedup;
mod handoff;
mod invariants;
mod key_writes;
mod owed;
mod read;
mod reap;
mod recovery;
mod resync;
mod serve;
mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use crate::buggify::Buggify;
use crate::cache::CacheConfigError;
use crate::proto::{EventualRequest, EventualResponse, NodeStatus, PeerMessage};
use crate::ring::Ring;
use crate::rng::DetRng;
use crate::role::Role;
use crate::storage::{Durability, LogReader, PersistToken, Store, ValueLoc};
use crate::time::Timers;
use crate::versions::{Actor, Stamp};
use crate::{ReplyTo, Ts};

pub use compact::CompactedLog;
pub use config::{
    is_host_port, parse_cluster, Cluster, ClusterError, Conflicts, HintBounds, NodeConfig, NodeId,
    Repair,
};
pub use recovery::RecoveryReport;
pub use state::KeyState;

use hints::Hints;
use read::PendingRead;
use reap::PendingReap;
use record::{state_offset_in_payload, Record};
use write::PendingWrite;

/// The largest state of one key that a client write may leave, in bytes: its hex form
/// must fit in one 2 MiB line with room to spare. A write beyond it is `overloaded`.
pub const MAX_STATE_BYTES: usize = 768 * 1024;

/// What the node is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeInput {
    /// A client's request (decoded and checked against the limits).
    Client {
        /// Where the answer goes.
        from: ReplyTo,
        /// The request.
        msg: EventualRequest,
    },
    /// A message from another node (it is then known up).
    Peer {
        /// The sending node's ID.
        from: NodeId,
        /// The message.
        msg: PeerMessage,
    },
    /// The caller's failure detector saw `node` alive: hints owed to it are replayed, and
    /// a node catching up after an empty data directory asks it for its keys.
    NodeUp(NodeId),
    /// The caller's failure detector lost `node`: requests needing more replicas than are
    /// up are answered `unavailable` without being tried.
    NodeDown(NodeId),
    /// The write of `token`, and of every token before it, is durable.
    Persisted {
        /// The last durable write.
        token: PersistToken,
    },
    /// Nothing arrived; time passed (`poll_timeout` was reached).
    Tick,
}

/// What the node asks its caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeOutput {
    /// Answer a client.
    Reply {
        /// Where the answer goes.
        to: ReplyTo,
        /// The answer.
        msg: EventualResponse,
    },
    /// Send a message to another node (dropping it when the node is unreachable is
    /// fine: every request has a deadline).
    Send {
        /// The node.
        to: NodeId,
        /// The message.
        msg: PeerMessage,
    },
    /// Append `bytes` to the log, make them durable, then report `Persisted { token }`.
    /// Appends must happen in the order they are asked for.
    Persist {
        /// Names this write.
        token: PersistToken,
        /// Whole log frames to append.
        bytes: Vec<u8>,
    },
}

/// What waits for a write to be durable.
#[derive(Clone, Debug)]
enum Deferred {
    /// A message that promises durability (`ev_written`, `ev_stored`) or shows a state
    /// (`ev_state`), which must never show what a crash could take back.
    Send(NodeId, PeerMessage),
}

/// What a timer is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The deadline of a request this node coordinates.
    Request(u64),
    /// The next replay round of the hints owed to a node.
    HintReplay(NodeId),
    /// The next sweep of hints past their age.
    HintAge,
    /// The earliest grave's removal.
    GraveSweep,
    /// The earliest owed key to ship.
    OwedSweep,
    /// Asking the other nodes again for the keys of an empty data directory.
    ResyncAsk,
    /// The next round of a stream of keys to a node that asked for them.
    Resync(NodeId),
}

/// A request this node coordinates.
#[derive(Clone, Debug)]
enum Pending {
    Write(PendingWrite),
    Read(PendingRead),
    Reap(PendingReap),
}

/// Counters for operators and checkers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Dots found handed out twice by merges (a lost disk without a new incarnation).
    pub reused_dots: u64,
    /// States received that did not decode, or were of the other conflicts mode.
    pub bad_states: u64,
    /// Hints delivered and confirmed.
    pub hints_delivered: u64,
}

/// An eventual-mode node's protocol state.
pub struct Node<R> {
    config: NodeConfig,
    actor: Actor,
    ring: Ring,
    up: BTreeMap<NodeId, bool>,
    store: Store<KeyState, R>,
    durability: Durability<Deferred>,
    /// The token of the last append: what a message about the whole log (hints taking
    /// over a debt) must wait for.
    last_token: PersistToken,
    /// Each key's last write not yet durable: what a state shown to others waits for.
    key_writes: key_writes::KeyWrites,
    timers: Timers<TimerKind>,
    pending: BTreeMap<u64, Pending>,
    hints: Hints,
    /// Keys held as graves (knowledge without versions) and when each is removed for
    /// good. At most one per key held, so bounded by the store.
    graves: BTreeMap<String, Ts>,
    /// What this node, as a write's first replica, owes other replicas, by id. At most
    /// `max_pending` entries; beyond that the coordinator's hints alone cover a write.
    owed: BTreeMap<u64, owed::Owed>,
    /// Client writes applied here as first replica, so a duplicated `ev_write` is
    /// applied once; bounded by [`dedup::MAX_RECENT_WRITES`].
    recent_writes: dedup::RecentWrites,
    /// Catching up after an empty data directory, and streams to nodes that are.
    resync: resync::Resync,
    /// Set by recovery: grave and owed times restart from the first input's `now`, since
    /// the caller's clock of an earlier life is not this one's.
    rearm_after_recovery: bool,
    /// Counters of this node's actor stay above this after a key was reaped.
    floor: u64,
    last_stamp: Option<Stamp>,
    next_req: u64,
    buggify: Buggify,
    stats: NodeStats,
    now: Ts,
    inbox: VecDeque<PeerMessage>,
    outputs: VecDeque<NodeOutput>,
}

impl<R: LogReader> Node<R> {
    /// A node on an empty data directory (a new node, or one whose disk was lost, with a
    /// new incarnation): it asks the other nodes for the keys it is a replica of. Fails
    /// on settings that cannot work.
    pub fn new(config: NodeConfig, reader: R) -> Result<Self, String> {
        let mut node = Self::blank(config, reader)?;
        node.start_resync();
        Ok(node)
    }

    /// A node holding nothing yet, before recovery or resync.
    fn blank(config: NodeConfig, reader: R) -> Result<Self, String> {
        config.validate()?;
        let store =
            Store::new(config.cache, reader).map_err(|e: CacheConfigError| e.to_string())?;
        let mut rng = DetRng::new(config.seed);
        Ok(Self {
            actor: Actor::new(config.id, config.incarnation),
            ring: config
                .cluster
                .nodes
                .keys()
                .fold(Ring::new(), |mut ring, &id| {
                    ring.insert(id);
                    ring
                }),
            // Every node is taken to be up until the failure detector says otherwise, so
            // a node that starts with the cluster can serve at once.
            up: config.cluster.nodes.keys().map(|&id| (id, true)).collect(),
            store,
            durability: Durability::new(0, config.max_waiting),
            last_token: Durability::<Deferred>::recovered_token(),
            key_writes: key_writes::KeyWrites::default(),
            timers: Timers::new(),
            pending: BTreeMap::new(),
            hints: Hints::new(config.hints),
            graves: BTreeMap::new(),
            owed: BTreeMap::new(),
            recent_writes: dedup::RecentWrites::default(),
            resync: resync::Resync::default(),
            rearm_after_recovery: false,
            floor: 0,
            last_stamp: None,
            // Request numbers start at a point drawn from the seed (63 bits, so they never
            // wrap), so answers to an earlier life's requests are not taken for this one's.
            next_req: rng.next_u64() >> 1,
            buggify: Buggify::new(config.buggify),
            stats: NodeStats::default(),
            now: 0,
            inbox: VecDeque::new(),
            outputs: VecDeque::new(),
            config,
        })
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// Hints dropped at a bound.
    pub fn hints_dropped(&self) -> u64 {
        self.hints.dropped()
    }

    /// Writes this node applied first and still owes to another replica (for checkers:
    /// zero once every write settled).
    pub fn owed_count(&self) -> usize {
        self.owed.len()
    }

    /// Whether this node, started on an empty data directory, still waits for some node
    /// to stream it its keys (for checkers and operators).
    pub fn catching_up(&self) -> bool {
        !self.resync.waiting.is_empty()
    }

    /// Hints held for `target`.
    pub fn hints_for(&self, target: NodeId) -> usize {
        self.hints.count(target)
    }

    /// This node's state of `key`, read without touching the cache (for checkers).
    pub fn local_state(&self, key: &str) -> Option<KeyState> {
        self.store.peek(key).ok().flatten()
    }

    /// Every key this node holds something for, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.store.keys()
    }

    /// The log's length in bytes, counting writes asked for and not yet durable.
    pub fn log_len(&self) -> u64 {
        self.durability.log_len()
    }

    /// The key's preference list: its N replicas.
    pub fn replicas_of(&self, key: &str) -> Vec<NodeId> {
        self.ring.preference_list(key, self.config.replication)
    }

    fn is_up(&self, node: NodeId) -> bool {
        node == self.config.id || self.up.get(&node).copied().unwrap_or(false)
    }

    fn new_req(&mut self) -> u64 {
        let req = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        req
    }

    fn reply(&mut self, to: ReplyTo, msg: EventualResponse) {
        self.outputs.push_back(NodeOutput::Reply { to, msg });
    }

    fn send(&mut self, to: NodeId, msg: PeerMessage) {
        if to == self.config.id {
            self.inbox.push_back(msg);
        } else {
            self.outputs.push_back(NodeOutput::Send { to, msg });
        }
    }

    /// Appends one record; returns its write's token and where its payload starts. The
    /// first record of a node still catching up is preceded by `CatchingUp`.
    fn append(&mut self, record: &Record) -> (PersistToken, u64) {
        if !self.resync.waiting.is_empty() && !self.resync.logged {
            self.resync.logged = true;
            self.append_raw(&Record::CatchingUp);
        }
        self.append_raw(record)
    }

    fn append_raw(&mut self, record: &Record) -> (PersistToken, u64) {
        let appended = self.durability.append(&record.encode());
        let token = appended.persist.token;
        self.last_token = token;
        self.outputs.push_back(NodeOutput::Persist {
            token,
            bytes: appended.persist.bytes,
        });
        (token, appended.payload_offset)
    }

    /// Logs `key`'s new state and keeps it in the store; the token of its write.
    fn put_state(&mut self, key: &str, state: KeyState) -> PersistToken {
        let bytes = state.to_bytes();
        let len = bytes.len();
        let record = Record::State {
            key: key.to_owned(),
            state: bytes,
        };
        let (token, payload_offset) = self.append(&record);
        self.key_writes.note(key, token);
        let loc = ValueLoc {
            offset: payload_offset + state_offset_in_payload(key.len()) as u64,
            len: u32::try_from(len).unwrap_or(u32::MAX),
        };
        self.track_grave(key, &state);
        self.store.put(key.to_owned(), loc, state);
        token
    }

    /// Runs `action` once `token` is durable (at once if it already is).
    fn defer(&mut self, token: PersistToken, action: Deferred) {
        if let Some(action) = self.durability.defer(token, action) {
            self.run(action);
        }
    }

    fn run(&mut self, action: Deferred) {
        match action {
            Deferred::Send(to, msg) => self.send(to, msg),
        }
    }

    /// The write `key`'s state waits for before this node shows it: its own last one,
    /// or, when that is durable, none (the recovered token).
    fn key_token(&self, key: &str) -> PersistToken {
        self.key_writes
            .pending(key)
            .unwrap_or_else(Durability::<Deferred>::recovered_token)
    }

    fn on_persisted(&mut self, token: PersistToken) {
        self.durability.persisted(token);
        self.key_writes.persisted(token);
        while let Some(action) = self.durability.pop_ready() {
            self.run(action);
        }
    }

    fn on_client(&mut self, from: ReplyTo, msg: EventualRequest) {
        match msg {
            EventualRequest::Get { key, consistency } => self.start_read(from, key, consistency),
            EventualRequest::Write {
                key,
                op,
                consistency,
                context,
            } => self.start_write(from, key, op, consistency, context),
            EventualRequest::Local { key } => {
                let answer = self.local_answer(&key);
                self.reply(from, answer);
            }
            EventualRequest::Status => {
                let answer = self.status();
                self.reply(from, answer);
            }
        }
    }

    fn local_answer(&mut self, key: &str) -> EventualResponse {
        if !self.replicas_of(key).contains(&self.config.id) {
            return EventualResponse::error(crate::proto::ErrorCode::Unavailable);
        }
        match self.store.get(key) {
            Ok(state) => KeyState::answer(key, state.as_ref()),
            Err(err) => EventualResponse::Error(crate::proto::ErrorReply::with_message(
                crate::proto::ErrorCode::Internal,
                format!("reading the log failed: {err}"),
            )),
        }
    }

    fn status(&self) -> EventualResponse {
        let nodes = self
            .config
            .cluster
            .nodes
            .iter()
            .map(|(&id, addr)| NodeStatus {
                id,
                addr: addr.clone(),
                up: self.is_up(id),
                hints: self.hints.count(id) as u64,
            })
            .collect();
        EventualResponse::Status {
            node: self.config.id,
            replication: self.config.replication as u64,
            conflicts: self.config.conflicts.as_str().to_owned(),
            repair: self.config.repair.as_str().to_owned(),
            nodes,
            hints_dropped: self.hints.dropped(),
            catching_up: self.catching_up(),
        }
    }

    fn on_peer(&mut self, from: NodeId, msg: PeerMessage) {
        if from != self.config.id {
            self.mark_up(from);
        }
        match msg {
            PeerMessage::Write {
                req,
                key,
                op,
                context,
            } => self.serve_write(from, req, key, op, context),
            PeerMessage::Store { req, key, state } => {
                self.serve_store(from, req, key, state, false)
            }
            PeerMessage::Apply { req, key, state } => self.serve_store(from, req, key, state, true),
            PeerMessage::Reap {
                req,
                key,
                state,
                commit,
            } => self.serve_reap(from, req, key, state, commit),
            PeerMessage::ReapOk { req } => self.on_reap_ok(from, req),
            PeerMessage::Settled { req } => self.on_settled(from, req),
            PeerMessage::Sync { req } => self.serve_sync(from, req),
            PeerMessage::SyncDone { req } => self.on_sync_done(from, req),
            PeerMessage::Read { req, key } => self.serve_read(from, req, key),
            PeerMessage::Written {
                req,
                state,
                clock,
                context,
            } => self.on_written(from, req, state, clock, context),
            PeerMessage::Stored { req } => self.on_stored(from, req),
            PeerMessage::State { req, state } => self.on_state(from, req, state),
            PeerMessage::Refused { req, error } => self.on_refused(from, req, error),
        }
    }

    fn mark_up(&mut self, node: NodeId) {
        let Some(up) = self.up.get_mut(&node) else {
            return;
        };
        let was_down = !*up;
        *up = true;
        if was_down {
            // What was sent while it was down is lost: replay everything owed, now.
            self.hints.unsend(node);
            self.timers.cancel(&TimerKind::HintReplay(node));
        }
        self.wake_hints(node);
    }

    fn on_tick(&mut self) {
        while let Some(kind) = self.timers.pop_due(self.now) {
            match kind {
                TimerKind::Request(req) => self.on_deadline(req),
                TimerKind::HintReplay(target) => self.replay_hints(target),
                TimerKind::HintAge => self.expire_hints(),
                TimerKind::GraveSweep => self.sweep_graves(),
                TimerKind::OwedSweep => self.sweep_owed(),
                TimerKind::ResyncAsk => self.ask_resync(),
                TimerKind::Resync(target) => self.stream_round(target),
            }
        }
    }

    fn on_deadline(&mut self, req: u64) {
        match self.pending.remove(&req) {
            Some(Pending::Write(write)) => self.write_deadline(req, write),
            Some(Pending::Read(read)) => self.read_deadline(req, read),
            // Not every replica would reap in time: the tombstones stay.
            Some(Pending::Reap(_)) | None => {}
        }
    }
}

impl<R: LogReader> Role for Node<R> {
    type Input = NodeInput;
    type Output = NodeOutput;

    fn handle(&mut self, now: Ts, input: NodeInput) {
        assert!(now >= self.now, "time went backwards: {now} < {}", self.now);
        self.now = now;
        if self.rearm_after_recovery {
            self.rearm_after_recovery = false;
            let at = now.saturating_add(self.grave_ms());
            self.graves.values_mut().for_each(|deadline| *deadline = at);
            self.arm_grave_sweep();
            let owed_at = now.saturating_add(self.config.timeout_ms.saturating_mul(2));
            self.owed
                .values_mut()
                .for_each(|o| o.due_ms = Some(owed_at));
            self.arm_owed_sweep();
        }
        match input {
            NodeInput::Client { from, msg } => self.on_client(from, msg),
            NodeInput::Peer { from, msg } => {
                if self.config.cluster.nodes.contains_key(&from) {
                    self.on_peer(from, msg);
                }
            }
            NodeInput::NodeUp(node) => {
                if self.config.cluster.nodes.contains_key(&node) && node != self.config.id {
                    self.mark_up(node);
                    self.resync_node_up(node);
                }
            }
            NodeInput::NodeDown(node) => {
                if node != self.config.id {
                    if let Some(up) = self.up.get_mut(&node) {
                        *up = false;
                    }
                }
            }
            NodeInput::Persisted { token } => self.on_persisted(token),
            NodeInput::Tick => self.on_tick(),
        }
        // This node's messages to itself, and what they cause, before the caller looks.
        while let Some(msg) = self.inbox.pop_front() {
            self.on_peer(self.config.id, msg);
        }
    }

    fn poll_output(&mut self) -> Option<NodeOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Ts> {
        self.timers.next_deadline()
    }

    fn check_invariants(&self) {
        self.check_node_invariants();
    }
}
