//! The coordinator: registration of KV servers, routing of client requests on the ring,
//! the two-phase-commit driver, and a write-through cache of committed values.
//!
//! Linearizability rests on three rules:
//! - updates of one key run one at a time, each to the end of its phase 2, so a replica
//!   never sees a key's transactions out of order;
//! - from the moment a commit is decided until both replicas acknowledged it, GETs of the
//!   key are answered from the transaction itself, never from a replica that may still
//!   trail;
//! - the cache changes only when a commit is decided, and a value read from a replica is
//!   cached only if no commit of its key was decided while the read was out.
//!
//! GETs never wait for an update: before a decision the committed value is still the
//! current one, and after it the transaction answers.

mod compact;
mod durable;
mod invariants;
mod membership;
mod read;
pub mod record;
mod txn;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use crate::buggify::{Buggify, BuggifyConfig};
use crate::cache::{CacheConfig, CacheConfigError, SetAssociativeCache};
use crate::proto::{
    ClientRequest, ClientResponse, Envelope, ErrorCode, ParticipantRequest, ParticipantResponse,
    Register, RegisterResponse,
};
use crate::ring::{Ring, ServerId};
use crate::rng::DetRng;
use crate::role::Role;
use crate::storage::{Durability, PersistToken, SyncUrgency};
use crate::time::{Backoff, Timers};
use crate::twopc::{Driver, DriverConfig, Vote};
use crate::{ReplyTo, Ts};

pub use durable::CoordinatorRecovery;
use durable::Deferred;
use membership::ServerState;
use read::Read;
use txn::{KeyState, Update};

/// The coordinator's settings and limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// How many KV servers make the ring complete (at least 2).
    pub expected_servers: usize,
    /// The write-through cache of committed values.
    pub cache: CacheConfig,
    /// How long phase 1 may take, how long an update may wait for an earlier update of
    /// its key to finish, and how long one replica may take to answer a GET. An update is
    /// thus answered within two timeouts, and within one when a replica of its key is
    /// down (the update ahead of it cannot finish, so it never starts).
    pub timeout_ms: u64,
    /// How a transaction's unanswered messages are resent: doubling, jittered waits.
    pub resend: Backoff,
    /// How often every server is pinged, so that `up` in `statusreq` stays true.
    pub heartbeat_interval_ms: u64,
    /// A server that sent nothing for this long is reported down and read from last.
    pub down_after_ms: u64,
    /// The lowest epoch to start in (transaction IDs are `epoch << 32 | sequence`, and
    /// a start takes the epoch after the highest in the log). A coordinator with a log
    /// passes 0; one without a log passes the wall clock's seconds, so that its IDs still
    /// differ across restarts.
    pub epoch_floor: u32,
    /// Updates in the system at once (in two-phase commit or queued behind another update
    /// of the same key); beyond this an update is answered `overloaded`. Also the limit
    /// of aborts of stray votes being resent.
    pub max_updates: usize,
    /// Updates queued behind one key's transaction; beyond this `overloaded`.
    pub max_queued_per_key: usize,
    /// GETs waiting for a replica at once; beyond this `overloaded`.
    pub max_reads: usize,
    /// The seed of the coordinator's randomness (resend jitter).
    pub seed: u64,
    /// Fault sites, turned on only by the simulator.
    pub buggify: Option<BuggifyConfig>,
}

impl CoordinatorConfig {
    /// The defaults, expecting `expected_servers` servers.
    pub fn new(expected_servers: usize) -> Self {
        Self {
            expected_servers,
            cache: CacheConfig::COORDINATOR_DEFAULT,
            timeout_ms: 3000,
            resend: Backoff {
                wait_ms_min: 100,
                wait_ms_max: 1000,
            },
            heartbeat_interval_ms: 1000,
            down_after_ms: 5000,
            epoch_floor: 0,
            max_updates: 4096,
            max_queued_per_key: 64,
            max_reads: 4096,
            seed: 0,
            buggify: None,
        }
    }

    /// Checks the settings, naming the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.expected_servers < 2 {
            return Err(ConfigError("expected servers must be at least 2".into()));
        }
        if self.timeout_ms == 0 || self.timeout_ms > crate::limits::MAX_TIMEOUT_MS {
            return Err(ConfigError(format!(
                "timeout must be 1 to {} ms",
                crate::limits::MAX_TIMEOUT_MS
            )));
        }
        if !self.resend.is_valid() {
            return Err(ConfigError(
                "resend waits must be at least 1 ms, the longest no shorter than the first".into(),
            ));
        }
        if self.heartbeat_interval_ms == 0 || self.down_after_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError(
                "the down time must be longer than the heartbeat interval".into(),
            ));
        }
        if self.max_updates == 0 || self.max_reads == 0 {
            return Err(ConfigError("in-flight limits must be at least 1".into()));
        }
        SetAssociativeCache::<String>::new(self.cache)
            .map(|_| ())
            .map_err(|err| ConfigError(format!("cache: {err}")))
    }

    fn driver(&self) -> DriverConfig {
        DriverConfig {
            phase1_timeout_ms: self.timeout_ms,
            resend: self.resend,
            max_transactions: self.max_updates,
            max_stray_aborts: self.max_updates,
            seed: self.seed,
            force_commit: true,
            decide_on_refusal: false,
        }
    }
}

/// A setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<CacheConfigError> for ConfigError {
    fn from(err: CacheConfigError) -> Self {
        ConfigError(format!("cache: {err}"))
    }
}

/// What the coordinator is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorInput {
    /// A client's request (already decoded and checked against the limits).
    Client {
        /// Where the answer goes.
        from: ReplyTo,
        /// The request.
        msg: ClientRequest,
    },
    /// A KV server's registration.
    Register {
        /// Where the answer goes.
        from: ReplyTo,
        /// The registration.
        msg: Register,
    },
    /// An answer from a KV server, on a connection the coordinator opened to it.
    Server {
        /// The server that answered.
        server: ServerId,
        /// The answer, with the id of the request it answers, if any.
        msg: Envelope<ParticipantResponse>,
    },
    /// The write of `token`, and of every token before it, is durable.
    Persisted {
        /// The last durable write.
        token: PersistToken,
    },
    /// Nothing arrived; time passed (`poll_timeout` was reached).
    Tick,
}

/// What the coordinator asks its caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorOutput {
    /// Answer a client.
    ClientReply {
        /// Where the answer goes.
        to: ReplyTo,
        /// The answer.
        msg: ClientResponse,
    },
    /// Answer a registration.
    RegisterReply {
        /// Where the answer goes.
        to: ReplyTo,
        /// The answer.
        msg: RegisterResponse,
    },
    /// Send a request to a KV server (at its latest registered address).
    Send {
        /// The server.
        server: ServerId,
        /// The request.
        msg: Envelope<ParticipantRequest>,
    },
    /// A server registered, or registered again at a new address: connect there from now
    /// on (and drop connections to its old address).
    ServerAddr {
        /// The server.
        server: ServerId,
        /// Where it listens.
        addr: String,
    },
    /// Append `bytes` to the coordinator's log, make them durable, then report
    /// `Persisted { token }`. Appends must happen in the order they are asked for.
    Persist {
        /// Names this write.
        token: PersistToken,
        /// Whole log frames to append.
        bytes: Vec<u8>,
        /// Whether an answer waits for it, or it may ride with a later sync.
        urgency: SyncUrgency,
    },
    /// Something now waits for write `token`, asked for earlier as deferrable (an update
    /// of the key waits for the commit decision's phase 2): sync it without waiting for
    /// a later urgent write.
    Hasten {
        /// The write.
        token: PersistToken,
    },
}

/// What the coordinator itself waits for (the driver keeps the transactions' timers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A queued update must have started by now.
    Queued { key: String, update: u64 },
    /// The replica asked for a GET did not answer in time.
    Read(u64),
    /// Ping every server.
    Heartbeat,
}

/// The coordinator's protocol state.
pub struct Coordinator {
    config: CoordinatorConfig,
    now: Ts,
    ring: Ring,
    servers: BTreeMap<ServerId, ServerState>,
    cache: SetAssociativeCache<String>,
    keys: BTreeMap<String, KeyState>,
    /// Two-phase commit of every update under way.
    driver: Driver<Update>,
    /// Updates queued behind another update of the same key, over all keys.
    queued_updates: usize,
    /// Clients of PUTs absorbed into a later PUT's transaction, waiting for its answer.
    absorbed_waiting: usize,
    /// PUTs absorbed since the start: how often several updates of a key shared one
    /// transaction.
    absorbed_total: u64,
    /// Aborts' answers waiting for their decision records.
    answers_waiting: usize,
    reads: BTreeMap<u64, Read>,
    timers: Timers<Timer>,
    /// The coordinator's log: epochs, members, commits.
    durability: Durability<Deferred>,
    /// The epoch of the transaction IDs issued now, and the write that records it: no ID
    /// of the epoch is used before that write is durable.
    epoch: u32,
    epoch_token: PersistToken,
    /// The low half of the next transaction ID.
    next_seq: u32,
    next_read: u64,
    next_update: u64,
    buggify: Buggify,
    outputs: VecDeque<CoordinatorOutput>,
}

impl Coordinator {
    /// A coordinator with an empty log: no servers registered yet.
    pub fn new(config: CoordinatorConfig) -> Result<Self, ConfigError> {
        Self::recover(config, &[]).map(|(coordinator, _)| coordinator)
    }

    /// A coordinator with nothing recovered yet, before its first epoch.
    fn empty(config: CoordinatorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        // The driver's and the coordinator's fault sites draw from separate streams.
        let mut seeds = config.buggify.map(|b| DetRng::new(b.seed));
        let mut buggify_for = |config: &CoordinatorConfig| {
            Buggify::new(config.buggify.map(|b| BuggifyConfig {
                seed: seeds.as_mut().map_or(0, DetRng::next_u64),
                until_ms: b.until_ms,
            }))
        };
        let driver = Driver::new(config.driver(), buggify_for(&config));
        let buggify = buggify_for(&config);
        Ok(Self {
            cache: SetAssociativeCache::new(config.cache)?,
            durability: Durability::new(0, durable::deferred_limit(&config)),
            epoch: 0,
            epoch_token: Durability::<Deferred>::recovered_token(),
            next_seq: 1,
            config,
            now: 0,
            ring: Ring::new(),
            servers: BTreeMap::new(),
            keys: BTreeMap::new(),
            driver,
            queued_updates: 0,
            absorbed_waiting: 0,
            absorbed_total: 0,
            answers_waiting: 0,
            reads: BTreeMap::new(),
            timers: Timers::new(),
            next_read: 1,
            next_update: 1,
            buggify,
            outputs: VecDeque::new(),
        })
    }

    /// Whether every expected server has registered.
    pub fn ring_complete(&self) -> bool {
        self.ring.len() >= self.config.expected_servers
    }

    /// The ring of registered servers.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Transactions not yet acknowledged by both replicas, and aborts of stray prepares
    /// not yet acknowledged.
    pub fn open_transactions(&self) -> usize {
        self.driver.open()
    }

    /// PUTs absorbed into a later PUT of the same key since the start: the simulator
    /// asks, so that a sweep can show the path ran.
    pub fn absorbed_updates(&self) -> u64 {
        self.absorbed_total
    }

    fn fire_timers(&mut self) {
        while let Some(timer) = self.timers.pop_due(self.now) {
            match timer {
                Timer::Queued { key, update } => self.on_queued_deadline(&key, update),
                Timer::Read(read) => self.on_read_deadline(read),
                Timer::Heartbeat => self.on_heartbeat(),
            }
        }
        self.driver.handle_timeouts(self.now);
        self.drain_driver();
    }

    fn reply(&mut self, to: ReplyTo, msg: ClientResponse) {
        self.outputs
            .push_back(CoordinatorOutput::ClientReply { to, msg });
    }

    fn send(&mut self, server: ServerId, id: Option<u64>, msg: ParticipantRequest) {
        let id = id.map(crate::proto::RequestId::Unsigned);
        self.outputs.push_back(CoordinatorOutput::Send {
            server,
            msg: Envelope::to_server(server, id, msg),
        });
    }

    fn on_client(&mut self, from: ReplyTo, msg: ClientRequest) {
        match msg {
            ClientRequest::Status => {
                let status = self.status();
                self.reply(from, status);
            }
            _ if !self.ring_complete() => self.reply(
                from,
                ClientResponse::Error(crate::proto::ErrorReply::with_message(
                    ErrorCode::Unavailable,
                    format!(
                        "Unavailable: {} of {} servers registered",
                        self.ring.len(),
                        self.config.expected_servers
                    ),
                )),
            ),
            ClientRequest::Get { key } => self.on_get(from, key),
            ClientRequest::Put { key, value } => {
                self.on_update(from, key, crate::proto::TxOp::Put { value })
            }
            ClientRequest::Del { key } => self.on_update(from, key, crate::proto::TxOp::Del),
        }
    }

    fn on_server(&mut self, server: ServerId, envelope: Envelope<ParticipantResponse>) {
        if !self.servers.contains_key(&server) {
            return;
        }
        let misaddressed = matches!(
            &envelope.msg,
            ParticipantResponse::Error(e) if e.code == ErrorCode::Refused
        );
        // Another process at the server's old address is no sign of the server's life.
        if !misaddressed {
            self.heard_from(server);
        }
        let now = self.now;
        match envelope.msg {
            ParticipantResponse::Ready { txid } => {
                self.driver.handle_vote(now, server, txid, Vote::Ready)
            }
            ParticipantResponse::Refuse {
                txid,
                code,
                message,
            } => self
                .driver
                .handle_vote(now, server, txid, Vote::Refuse(code, message)),
            ParticipantResponse::Ack { txid } => self.driver.handle_ack(now, server, txid),
            ParticipantResponse::Value { key, value } => {
                self.on_read_answer(server, envelope.id, Ok((key, value)))
            }
            ParticipantResponse::Error(reply) => {
                self.on_read_answer(server, envelope.id, Err(reply))
            }
            ParticipantResponse::Pong => {}
            ParticipantResponse::InDoubt { txids } => self.on_in_doubt(server, &txids),
        }
        self.drain_driver();
    }
}

impl Role for Coordinator {
    type Input = CoordinatorInput;
    type Output = CoordinatorOutput;

    /// Handles one input at time `now`; timers due by `now` fire first.
    fn handle(&mut self, now: Ts, input: CoordinatorInput) {
        assert!(now >= self.now, "time went backwards: {now} < {}", self.now);
        self.now = now;
        self.fire_timers();
        match input {
            CoordinatorInput::Client { from, msg } => self.on_client(from, msg),
            CoordinatorInput::Register { from, msg } => self.on_register(from, msg),
            CoordinatorInput::Server { server, msg } => self.on_server(server, msg),
            CoordinatorInput::Persisted { token } => self.on_persisted(token),
            CoordinatorInput::Tick => {}
        }
    }

    fn poll_output(&mut self) -> Option<CoordinatorOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Ts> {
        let own = self.timers.next_deadline();
        let driver = self.driver.poll_timeout();
        own.into_iter().chain(driver).min()
    }

    fn check_invariants(&self) {
        self.check_invariants_impl();
    }
}
