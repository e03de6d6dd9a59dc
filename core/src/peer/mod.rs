//! The peer node of PROTOCOL.md section 3: every node coordinates the updates its
//! clients send (a 2PC [`Driver`] with forced commits) and takes part in every update of
//! the keys it replicates (a 2PC [`Participant`] over a [`Store`]), with one log for both.
//!
//! It is a thin composition of the shared components; what is its own:
//! - collisions: a participant refuses a locked key (`locked`, no-wait); the coordinator
//!   rolls back (the driver aborts every participant that may hold the prepare), waits a
//!   seeded random, growing time and tries again with a new transaction ID until the
//!   timeout is spent ([`update`]);
//! - termination: a participant in doubt asks the coordinator and the other participants
//!   ([`termination`]); one that never voted ready refuses for good, so the asker may
//!   abort; nobody decides alone after voting ready;
//! - reads: a replica answers from its committed copy, waiting while the key is prepared
//!   (at most the timeout); another node asks a replica ([`read`]);
//! - recovery from the log alone ([`recovery`]): commits decided and not acknowledged by
//!   every participant run phase 2 again; everything else this node coordinated is
//!   aborted when asked (presumed abort); IDs come from a new durable epoch;
//! - compaction (`compact`): the whole log rewritten as the records recovery needs.

mod compact;
mod config;
mod invariants;
mod participate;
mod read;
pub mod record;
mod recovery;
mod settle;
mod termination;
#[cfg(test)]
mod tests;
mod txid;
mod update;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::buggify::{Buggify, BuggifyConfig};
use crate::proto::peer::{PeerBody, PeerClientRequest, PeerMessage, PeerNodeStatus, PeerReply};
use crate::proto::{ClientRequest, TxId, TxOp};
use crate::ring::Ring;
use crate::rng::DetRng;
use crate::role::Role;
use crate::storage::{Durability, PersistToken, Store, ValueLoc};
use crate::time::{Attempts, Timers};
use crate::twopc::{Driver, Participant};
use crate::{ReplyTo, Ts};

pub use crate::storage::LogReader;
pub use compact::{PeerCompactError, PeerCompaction};
pub use config::{ConfigError, PeerConfig};
pub use recovery::PeerRecovery;

use read::Read;
use update::{Payload, Update};

/// What a peer node is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerInput {
    /// A client's request (decoded and checked against the limits).
    Client {
        /// Where the answer goes.
        from: ReplyTo,
        /// The request.
        msg: PeerClientRequest,
    },
    /// A message from another node (or a stray one of this node's earlier run).
    Peer(PeerMessage),
    /// The write of `token`, and of every token before it, is durable.
    Persisted {
        /// The last durable write.
        token: PersistToken,
    },
    /// Nothing arrived; `poll_timeout` was reached.
    Tick,
}

/// What a peer node asks its caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "an output nobody carries out is a message lost or a write never durable"]
pub enum PeerOutput {
    /// Send a message to another node (at its address in the cluster file).
    Send {
        /// The node.
        to: u64,
        /// The message.
        msg: PeerMessage,
    },
    /// Answer a client.
    Reply {
        /// Where the answer goes.
        to: ReplyTo,
        /// The answer.
        msg: PeerReply,
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

/// What a prepared transaction does if it commits.
#[derive(Clone, Debug)]
enum Change {
    /// Write `value`, whose bytes lie at `loc` in the log.
    Put {
        loc: ValueLoc,
        value: String,
    },
    Del,
}

/// A transaction prepared here, with everyone to ask if it stays in doubt.
#[derive(Clone, Debug)]
struct Prepared {
    change: Change,
    participants: Vec<u64>,
}

/// What waits for a write of the log.
#[derive(Clone, Debug)]
enum Deferred {
    /// A message that promises durability (`ready`, `ack`, a renouncing outcome).
    Send(u64, PeerBody),
    /// A participant's decision is durable: apply it.
    Finish(TxId),
    /// A commit this node coordinates is durable: answer, then phase 2.
    Committed(TxId),
    /// The epoch's record is durable: its transaction IDs may be used.
    EpochBegun,
}

/// What the node waits for itself (the driver keeps the transactions' timers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// An update that met a locked key tries again.
    Retry(u64),
    /// A read gives up, or asks the next replica.
    Read(u64),
    /// A transaction in doubt here asks for its decision again.
    Query(TxId),
    /// Ping every other node.
    Heartbeat,
}

/// A peer node's protocol state.
pub struct Peer<R> {
    config: PeerConfig,
    /// This node's place in the sorted cluster: the middle of its transaction IDs.
    index: u16,
    ring: Ring,
    now: Ts,
    store: Store<String, R>,
    participant: Participant<Prepared>,
    durability: Durability<Deferred>,
    driver: Driver<Payload>,
    updates: BTreeMap<u64, Update>,
    /// Clients of PUTs absorbed into another update of their key, waiting for its answer.
    absorbed_waiting: usize,
    /// PUTs absorbed since the start, for the simulator's counters.
    absorbed_total: u64,
    next_update: u64,
    /// Commits decided here whose end is not yet recorded.
    commits: BTreeSet<TxId>,
    /// Attempts coordinated here, decided and not yet acknowledged by every replica,
    /// with their key: new updates of the key wait for them ([`settle`]).
    settling: BTreeMap<TxId, settle::Settling>,
    /// Commits decided here that became durable in this run.
    durable_commits: u64,
    reads: BTreeMap<u64, Read>,
    next_read: u64,
    /// The query series of each transaction in doubt here.
    queries: BTreeMap<TxId, Attempts>,
    last_heard: BTreeMap<u64, Ts>,
    timers: Timers<Timer>,
    rng: DetRng,
    buggify: Buggify,
    epoch: u32,
    epoch_token: PersistToken,
    next_seq: u32,
    /// Messages to this node itself, handled before the input's turn ends.
    local: VecDeque<PeerMessage>,
    outputs: VecDeque<PeerOutput>,
}

impl<R: LogReader> Peer<R> {
    /// The replicas of `key`, in preference-list order.
    fn replicas(&self, key: &str) -> Vec<u64> {
        let n = self.config.replication.unwrap_or(self.ring.len());
        self.ring.preference_list(key, n)
    }

    fn is_replica(&self, key: &str) -> bool {
        self.replicas(key).contains(&self.config.id)
    }

    /// The node that coordinates `txid`.
    fn coordinator_of(&self, txid: TxId) -> Option<u64> {
        self.ring.ids().nth(txid::index_of(txid))
    }

    fn send(&mut self, to: u64, body: PeerBody) {
        let msg = PeerMessage {
            from: self.config.id,
            body,
        };
        if to == self.config.id {
            self.local.push_back(msg);
        } else {
            self.outputs.push_back(PeerOutput::Send { to, msg });
        }
    }

    fn reply(&mut self, to: ReplyTo, msg: PeerReply) {
        self.outputs.push_back(PeerOutput::Reply { to, msg });
    }

    /// Appends one record; returns its write's token and where its payload starts.
    fn append(&mut self, payload: &[u8]) -> (PersistToken, u64) {
        let appended = self.durability.append(payload);
        let token = appended.persist.token;
        self.outputs.push_back(PeerOutput::Persist {
            token,
            bytes: appended.persist.bytes,
        });
        (token, appended.payload_offset)
    }

    /// Whether a participant's `extra` actions may wait for the log; room for the
    /// coordinator's commits is kept apart, so that a busy participant never blocks one.
    fn has_room_to_defer(&self, extra: usize) -> bool {
        self.durability
            .has_room(extra + self.reserved_for_commits())
    }

    fn reserved_for_commits(&self) -> usize {
        2 * self.config.max_updates + 1
    }

    /// Runs `action` once `token` is durable (at once if it already is).
    fn defer(&mut self, token: PersistToken, action: Deferred) {
        if let Some(now) = self.durability.defer(token, action) {
            self.run(now);
        }
    }

    fn on_persisted(&mut self, token: PersistToken) {
        self.durability.persisted(token);
        while let Some(action) = self.durability.pop_ready() {
            self.run(action);
        }
    }

    fn run(&mut self, action: Deferred) {
        match action {
            Deferred::Send(to, body) => self.send(to, body),
            Deferred::Finish(txid) => self.finish(txid),
            Deferred::Committed(txid) => self.on_commit_durable(txid),
            Deferred::EpochBegun => self.start_waiting_updates(),
        }
    }

    fn on_client(&mut self, from: ReplyTo, msg: PeerClientRequest) {
        match msg {
            PeerClientRequest::Local { key } => {
                let answer = self.local_copy(&key);
                self.reply(from, PeerReply::Client(answer));
            }
            PeerClientRequest::Client(ClientRequest::Status) => {
                let status = self.status();
                self.reply(from, status);
            }
            PeerClientRequest::Client(ClientRequest::Get { key }) => self.on_get(from, key),
            PeerClientRequest::Client(ClientRequest::Put { key, value }) => {
                self.on_update(from, key, TxOp::Put { value })
            }
            PeerClientRequest::Client(ClientRequest::Del { key }) => {
                self.on_update(from, key, TxOp::Del)
            }
        }
    }

    fn on_peer(&mut self, msg: PeerMessage) {
        let from = msg.from;
        if from != self.config.id && !self.ring.contains(from) {
            // A node outside the cluster file takes no part in anything.
            return;
        }
        self.last_heard.insert(from, self.now);
        let now = self.now;
        match msg.body {
            PeerBody::Prepare {
                txid,
                key,
                op,
                participants,
            } => self.on_prepare(from, txid, key, op, participants),
            PeerBody::Ready { txid } => {
                self.driver
                    .handle_vote(now, from, txid, crate::twopc::Vote::Ready)
            }
            PeerBody::Refuse {
                txid,
                code,
                message,
            } => {
                let vote = crate::twopc::Vote::Refuse(code, message);
                self.driver.handle_vote(now, from, txid, vote)
            }
            PeerBody::Decide { txid, commit } => self.on_decision(txid, commit, Some(from)),
            PeerBody::Ack { txid } => self.driver.handle_ack(now, from, txid),
            PeerBody::Query { txid } => self.on_query(from, txid),
            PeerBody::Outcome { txid, commit } => self.on_outcome(txid, commit),
            PeerBody::Read { rid, key } => self.on_peer_read(from, rid, key),
            PeerBody::ReadAnswer { rid, result } => self.on_read_answer(from, rid, result),
            PeerBody::Ping => self.send(from, PeerBody::Pong),
            PeerBody::Pong => {}
        }
        self.drain_driver();
    }

    fn fire_timers(&mut self) {
        while let Some(timer) = self.timers.pop_due(self.now) {
            match timer {
                Timer::Retry(update) => self.start_attempt(update),
                Timer::Read(read) => self.on_read_deadline(read),
                Timer::Query(txid) => self.on_query_due(txid),
                Timer::Heartbeat => self.on_heartbeat(),
            }
        }
        self.driver.handle_timeouts(self.now);
        self.drain_driver();
    }

    fn on_heartbeat(&mut self) {
        let others: Vec<u64> = self.ring.ids().filter(|&id| id != self.config.id).collect();
        for node in others {
            self.send(node, PeerBody::Ping);
        }
        let at = self.now + self.config.heartbeat_interval_ms;
        self.timers.set(Timer::Heartbeat, at);
    }

    /// Every node in ring order, `up` if heard from recently.
    fn status(&self) -> PeerReply {
        let nodes = self
            .config
            .nodes
            .iter()
            .map(|(id, addr)| {
                let heard = self.last_heard.get(id).copied();
                let recent = heard.is_some_and(|at| self.now < at + self.config.down_after_ms);
                PeerNodeStatus {
                    id: *id,
                    addr: addr.clone(),
                    up: *id == self.config.id || recent,
                }
            })
            .collect();
        PeerReply::Status {
            node: self.config.id,
            replication: self.config.replication.unwrap_or(self.ring.len()) as u64,
            nodes,
        }
    }

    /// The node's settings.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// The committed value of a key, read without touching the cache (for checks).
    pub fn committed_value(
        &self,
        key: &str,
    ) -> Result<Option<String>, crate::storage::StorageError> {
        self.store.peek(key)
    }

    /// Every key with a committed value here, in order.
    pub fn committed_keys(&self) -> impl Iterator<Item = &str> {
        self.store.keys()
    }

    /// The transactions prepared here and not yet decided durably (their keys locked).
    pub fn in_doubt(&self) -> impl Iterator<Item = TxId> + '_ {
        self.participant.in_doubt()
    }

    /// Work still under way: transactions coordinated here (stray aborts included),
    /// client updates not yet answered, reads waiting.
    pub fn open_work(&self) -> usize {
        self.driver.open() + self.updates.len() + self.absorbed_waiting + self.reads.len()
    }

    /// PUTs absorbed into another update of the same key since the start: the simulator
    /// asks, so that a sweep can show the path ran.
    pub fn absorbed_updates(&self) -> u64 {
        self.absorbed_total
    }

    /// How many commits this node coordinated became durable in this run: the moment
    /// each grows, phase 2 of a decided commit starts, a moment the simulator crashes
    /// nodes at.
    pub fn durable_commits(&self) -> u64 {
        self.durable_commits
    }

    /// The log's length in bytes, counting writes asked for and not yet durable.
    pub fn log_len(&self) -> u64 {
        self.durability.log_len()
    }
}

impl<R: LogReader> Role for Peer<R> {
    type Input = PeerInput;
    type Output = PeerOutput;

    /// Handles one input at time `now`; timers due by `now` fire first, and messages
    /// this node sends itself are handled before the call returns.
    fn handle(&mut self, now: Ts, input: PeerInput) {
        assert!(now >= self.now, "time went backwards: {now} < {}", self.now);
        self.now = now;
        self.fire_timers();
        match input {
            PeerInput::Client { from, msg } => self.on_client(from, msg),
            PeerInput::Peer(msg) => self.on_peer(msg),
            PeerInput::Persisted { token } => self.on_persisted(token),
            PeerInput::Tick => {}
        }
        while let Some(msg) = self.local.pop_front() {
            self.on_peer(msg);
        }
        self.drain_driver();
    }

    fn poll_output(&mut self) -> Option<PeerOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Ts> {
        let own = self.timers.next_deadline();
        own.into_iter().chain(self.driver.poll_timeout()).min()
    }

    fn check_invariants(&self) {
        self.check_invariants_impl();
    }
}

/// Builds what every start shares: the components, with no data yet.
fn empty<R: LogReader>(config: PeerConfig, reader: R) -> Result<Peer<R>, ConfigError> {
    config.validate()?;
    let ring: Ring = config.nodes.iter().map(|(id, _)| *id).collect();
    let index = ring.ids().position(|id| id == config.id).unwrap_or(0) as u16;
    let mut seeds = DetRng::new(config.seed);
    let buggify_for = |config: &PeerConfig, seeds: &mut DetRng| {
        Buggify::new(config.buggify.map(|b| BuggifyConfig {
            seed: b.seed ^ seeds.next_u64(),
            until_ms: b.until_ms,
        }))
    };
    let driver = Driver::new(config.driver(), buggify_for(&config, &mut seeds));
    let buggify = buggify_for(&config, &mut seeds);
    let store = Store::new(config.cache, reader).map_err(|e| ConfigError(format!("cache: {e}")))?;
    let capacity = config.max_waiting + 2 * config.max_updates + 1;
    Ok(Peer {
        index,
        ring,
        now: 0,
        store,
        participant: Participant::new(config.max_prepared, config.decided_memory),
        durability: Durability::new(0, capacity),
        driver,
        updates: BTreeMap::new(),
        absorbed_waiting: 0,
        absorbed_total: 0,
        next_update: 1,
        commits: BTreeSet::new(),
        settling: BTreeMap::new(),
        durable_commits: 0,
        reads: BTreeMap::new(),
        next_read: 1,
        queries: BTreeMap::new(),
        last_heard: BTreeMap::new(),
        timers: Timers::new(),
        rng: DetRng::new(seeds.next_u64()),
        buggify,
        epoch: 0,
        epoch_token: Durability::<Deferred>::recovered_token(),
        next_seq: 1,
        local: VecDeque::new(),
        outputs: VecDeque::new(),
        config,
    })
}
