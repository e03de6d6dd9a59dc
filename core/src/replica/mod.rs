//! A KV server: a two-phase-commit participant over a log-structured store, with a
//! write-through cache in front.
//!
//! It is a thin composition of components: the [`Participant`] owns the commit rules
//! (locks, votes, remembered decisions), the [`Durability`] pipeline holds every answer
//! that promises durability (`ready`, `ack`) until the caller reports its write durable,
//! and the [`Store`] keeps the committed values, Bitcask-shaped: every prepared write is
//! appended to the log, and an in-memory index maps each key to where its committed value
//! lies; values are read back through [`LogReader`].
//!
//! Recovery is a function of the log bytes alone ([`Replica::recover`]): committed values,
//! in-doubt transactions and their locks all come back from them.

pub mod compaction;
pub mod record;
mod recovery;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::buggify::{Buggify, BuggifyConfig, FaultSite};
use crate::cache::{CacheConfig, CacheConfigError};
use crate::proto::{
    check_key, check_key_value, ErrorCode, ErrorReply, ParticipantRequest, ParticipantResponse,
    TxId, TxOp,
};
use crate::role::Role;
use crate::storage::{Durability, Store};
use crate::twopc::{DecisionCheck, Participant, PrepareCheck, Vote};
use crate::{ReplyTo, Ts};

pub use crate::storage::{LogReader, PersistToken, StorageError, SyncUrgency, ValueLoc};
pub use recovery::{RecoveryReport, ReplicaRecovery};

use record::{value_offset_in_payload, Record};

/// The limits and sizes of a KV server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The write-through cache in front of the log.
    pub cache: CacheConfig,
    /// How many transactions may be prepared and undecided at once; a prepare beyond this
    /// votes abort with `overloaded`.
    pub max_prepared: usize,
    /// How many decided transactions are remembered, so that a late or repeated prepare
    /// of a decided transaction is not taken for a new one.
    pub decided_memory: usize,
    /// How many answers may wait for durability at once; beyond this a request is
    /// answered `overloaded`.
    pub max_waiting: usize,
    /// Fault sites, turned on only by the simulator.
    pub buggify: Option<BuggifyConfig>,
    /// This server's ID: a request addressed to another server is refused. `None`
    /// accepts every request (a replica used alone, in tests).
    pub id: Option<u64>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            id: None,
            cache: CacheConfig::SERVER_DEFAULT,
            max_prepared: 1024,
            decided_memory: 65_536,
            max_waiting: 8192,
            buggify: None,
        }
    }
}

/// What the replica is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaInput {
    /// A request from the coordinator (or anyone on the server's port).
    Request {
        /// Where the answer goes.
        from: ReplyTo,
        /// The request.
        msg: ParticipantRequest,
        /// The server the request is addressed to, if it names one.
        to: Option<u64>,
    },
    /// The write of `token`, and of every token before it, is durable.
    Persisted {
        /// The last durable write.
        token: PersistToken,
    },
}

/// What the replica asks its caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaOutput {
    /// Send an answer.
    Reply {
        /// Where it goes.
        to: ReplyTo,
        /// The answer.
        msg: ParticipantResponse,
    },
    /// Append `bytes` to the log, make them durable, then report `Persisted { token }`.
    /// Appends must happen in the order they are asked for.
    Persist {
        /// Names this write.
        token: PersistToken,
        /// Whole log frames to append.
        bytes: Vec<u8>,
        /// Whether a vote waits for it (a prepare) or only an acknowledgement of a
        /// decision the coordinator already holds durably (may ride with a later sync).
        urgency: SyncUrgency,
    },
    /// An answer now waits for write `token`, asked for earlier as deferrable (the
    /// coordinator repeated the decision: an update of the key waits behind it): sync
    /// it without waiting for a later urgent write.
    Hasten {
        /// The write.
        token: PersistToken,
    },
}

/// What a prepared transaction does if it commits.
#[derive(Clone, Debug)]
enum PreparedOp {
    /// Write `value`, whose bytes lie at `loc` in the log.
    Put { loc: ValueLoc, value: String },
    /// Delete the key; its prepare record's payload starts at `at` (what compaction
    /// looks at to tell whether the record is in the part it rewrites).
    Del { at: u64 },
}

/// What to do once a write is durable.
#[derive(Clone, Debug)]
enum Deferred {
    Reply(ReplyTo, ParticipantResponse),
    Decide(TxId),
}

/// A KV server's protocol state.
pub struct Replica<R> {
    config: ReplicaConfig,
    store: Store<String, R>,
    participant: Participant<PreparedOp>,
    durability: Durability<Deferred>,
    buggify: Buggify,
    now: Ts,
    outputs: VecDeque<ReplicaOutput>,
}

impl<R: LogReader> Replica<R> {
    /// A replica with an empty log; fails only on a cache of zero sets or ways.
    pub fn new(config: ReplicaConfig, reader: R) -> Result<Self, CacheConfigError> {
        Ok(Self {
            store: Store::new(config.cache, reader)?,
            participant: Participant::new(config.max_prepared, config.decided_memory),
            durability: Durability::new(0, config.max_waiting),
            buggify: Buggify::new(config.buggify),
            config,
            now: 0,
            outputs: VecDeque::new(),
        })
    }

    /// The committed value of a key, read without touching the cache (for checks).
    pub fn committed_value(&self, key: &str) -> Result<Option<String>, StorageError> {
        self.store.peek(key)
    }

    /// Every key with a committed value, in order.
    pub fn committed_keys(&self) -> impl Iterator<Item = &str> {
        self.store.keys()
    }

    /// The transactions prepared and not yet decided durably, in order.
    pub fn in_doubt(&self) -> impl Iterator<Item = TxId> + '_ {
        self.participant.in_doubt()
    }

    /// The log's length in bytes, counting writes asked for and not yet durable.
    pub fn log_len(&self) -> u64 {
        self.durability.log_len()
    }

    /// The replica's settings.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    fn reply(&mut self, to: ReplyTo, msg: ParticipantResponse) {
        self.outputs.push_back(ReplicaOutput::Reply { to, msg });
    }

    /// Appends one record; returns its write's token and where its payload starts.
    fn append(&mut self, payload: &[u8], urgency: SyncUrgency) -> (PersistToken, u64) {
        let appended = self.durability.append(payload);
        let token = appended.persist.token;
        self.outputs.push_back(ReplicaOutput::Persist {
            token,
            bytes: appended.persist.bytes,
            urgency,
        });
        (token, appended.payload_offset)
    }

    /// Runs `action` once `token` is durable (at once if it already is).
    fn defer(&mut self, token: PersistToken, action: Deferred) {
        if let Some(now) = self.durability.defer(token, action) {
            self.run(now);
        }
    }

    fn on_request(&mut self, from: ReplyTo, msg: ParticipantRequest, to: Option<u64>) {
        if let Some(refusal) = self.misaddressed(&msg, to) {
            // Work meant for another server changes nothing here.
            self.reply(from, refusal);
            return;
        }
        match msg {
            ParticipantRequest::Prepare { txid, key, op } => self.on_prepare(from, txid, key, op),
            ParticipantRequest::Commit { txid } => self.on_decision(from, txid, true),
            ParticipantRequest::Abort { txid } => self.on_decision(from, txid, false),
            ParticipantRequest::Get { key } => {
                let answer = self.read(key);
                self.reply(from, answer);
            }
            ParticipantRequest::Ping => self.reply(from, ParticipantResponse::Pong),
            ParticipantRequest::InDoubt => {
                let txids = self.participant.in_doubt().collect();
                self.reply(from, ParticipantResponse::InDoubt { txids });
            }
        }
    }

    /// The answer to a request addressed to another server, if it is one: a prepare gets
    /// a vote to abort (not remembered: the transaction is not this server's), anything
    /// else an error, never an `ack` or a value.
    fn misaddressed(
        &self,
        msg: &ParticipantRequest,
        to: Option<u64>,
    ) -> Option<ParticipantResponse> {
        let (Some(own), Some(to)) = (self.config.id, to) else {
            return None;
        };
        if own == to {
            return None;
        }
        let message = format!("this is server {own}, not server {to}");
        Some(match msg {
            ParticipantRequest::Prepare { txid, .. } => ParticipantResponse::Refuse {
                txid: *txid,
                code: ErrorCode::Refused,
                message,
            },
            _ => ParticipantResponse::Error(ErrorReply::with_message(ErrorCode::Refused, message)),
        })
    }

    fn read(&mut self, key: String) -> ParticipantResponse {
        if let Err(code) = check_key(&key) {
            return ParticipantResponse::Error(ErrorReply::new(code));
        }
        match self.store.get(&key) {
            Ok(Some(value)) => ParticipantResponse::Value { key, value },
            Ok(None) => ParticipantResponse::Error(ErrorReply::new(ErrorCode::NotFound)),
            Err(err) => ParticipantResponse::Error(ErrorReply::with_message(
                ErrorCode::Internal,
                format!("reading the log failed: {err}"),
            )),
        }
    }

    fn on_prepare(&mut self, from: ReplyTo, txid: TxId, key: String, op: TxOp) {
        match self.participant.check_prepare(txid) {
            PrepareCheck::New => {}
            // A repeated prepare: the vote stands once it is durable.
            PrepareCheck::Prepared(token) => {
                if self.durability.has_room(1) {
                    self.defer(token, Deferred::Reply(from, ready(txid)));
                } else {
                    self.reply(from, overloaded());
                }
                return;
            }
            PrepareCheck::Decided(vote) => {
                self.reply(from, vote_answer(txid, vote));
                return;
            }
        }
        if let Some((code, message)) = self.refusal(&key, &op) {
            // A vote to abort is this replica's decision: a repeated or late prepare of
            // the transaction gets the same vote, even if the key changed meanwhile.
            self.participant.refuse(txid, code, message.clone());
            self.reply(from, vote_answer(txid, Vote::Refuse(code, message)));
            return;
        }
        let (payload, value) = match op {
            TxOp::Put { value } => (record::encode_prepare_put(txid, &key, &value), Some(value)),
            TxOp::Del => {
                let payload = Record::PrepareDel {
                    txid,
                    key: key.clone(),
                }
                .encode();
                (payload, None)
            }
        };
        // The vote waits for this record, and the client's answer for the vote.
        let (token, payload_offset) = self.append(&payload, SyncUrgency::Now);
        let op = match value {
            Some(value) => PreparedOp::Put {
                loc: ValueLoc {
                    offset: payload_offset + value_offset_in_payload(key.len()) as u64,
                    len: value.len() as u32,
                },
                value,
            },
            None => PreparedOp::Del { at: payload_offset },
        };
        self.participant.prepare(txid, key, op, token);
        self.defer(token, Deferred::Reply(from, ready(txid)));
    }

    /// Why this replica votes to abort a prepare, if it does: the protocol's limits, a
    /// key locked by another transaction, a delete of a missing key, or no room.
    fn refusal(&mut self, key: &str, op: &TxOp) -> Option<(ErrorCode, String)> {
        let value = match op {
            TxOp::Put { value } => Some(value.as_str()),
            TxOp::Del => None,
        };
        let with_default = |code: ErrorCode| Some((code, code.default_message().to_owned()));
        if let Err(code) = check_key_value(key, value) {
            return with_default(code);
        }
        if let Some(holder) = self.participant.lock_holder(key) {
            let message = format!("key is locked by transaction {holder}");
            return Some((ErrorCode::Locked, message));
        }
        if matches!(op, TxOp::Del) && !self.store.contains(key) {
            return with_default(ErrorCode::NotFound);
        }
        let full = self.participant.is_full() || !self.durability.has_room(1);
        if full || self.buggify.fires(self.now, FaultSite::SpuriousRefusal) {
            return with_default(ErrorCode::Overloaded);
        }
        None
    }

    fn on_decision(&mut self, from: ReplyTo, txid: TxId, commit: bool) {
        let ack = ParticipantResponse::Ack { txid };
        match self.participant.check_decision(txid, commit) {
            // Decided before, or never prepared here: presumed abort.
            DecisionCheck::Unknown => self.reply(from, ack),
            // The first decision stands; this one is answered once it is durable.
            DecisionCheck::Deciding(token) => {
                if self.durability.has_room(1) {
                    if !self.durability.is_durable(token) {
                        self.outputs.push_back(ReplicaOutput::Hasten { token });
                    }
                    self.defer(token, Deferred::Reply(from, ack));
                } else {
                    self.reply(from, overloaded());
                }
            }
            DecisionCheck::Prepared => {
                if !self.durability.has_room(2) {
                    self.reply(from, overloaded());
                    return;
                }
                let record = if commit {
                    Record::Commit { txid }
                } else {
                    Record::Abort { txid }
                };
                // The coordinator holds the decision durably until this replica
                // acknowledges it, and the client has its answer: only the key's next
                // update waits for this record, so it may ride with a later sync.
                let (token, _) = self.append(&record.encode(), SyncUrgency::Deferrable);
                self.participant.deciding(txid, commit, token);
                self.defer(token, Deferred::Decide(txid));
                self.defer(token, Deferred::Reply(from, ack));
            }
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
            Deferred::Reply(to, msg) => self.reply(to, msg),
            Deferred::Decide(txid) => {
                let finished = self.participant.finish(txid);
                self.apply(finished.key, finished.op, finished.commit);
            }
        }
    }

    /// A decision is durable: a commit changes the store. Shared by the live path and
    /// replay.
    fn apply(&mut self, key: String, op: PreparedOp, commit: bool) {
        if !commit {
            return;
        }
        match op {
            PreparedOp::Put { loc, value } => self.store.put(key, loc, value),
            PreparedOp::Del { .. } => self.store.remove(&key),
        }
    }
}

impl<R: LogReader> Role for Replica<R> {
    type Input = ReplicaInput;
    type Output = ReplicaOutput;

    /// Handles one input at time `now` (the replica keeps no timers; `now` decides only
    /// whether fault sites may fire).
    fn handle(&mut self, now: Ts, input: ReplicaInput) {
        assert!(now >= self.now, "time went backwards: {now} < {}", self.now);
        self.now = now;
        match input {
            ReplicaInput::Request { from, msg, to } => self.on_request(from, msg, to),
            ReplicaInput::Persisted { token } => self.on_persisted(token),
        }
    }

    fn poll_output(&mut self) -> Option<ReplicaOutput> {
        self.outputs.pop_front()
    }

    /// The replica has no timers.
    fn poll_timeout(&self) -> Option<Ts> {
        None
    }

    fn check_invariants(&self) {
        self.participant.check_invariants();
        self.durability.check_invariants();
        assert!(self.participant.prepared_count() <= self.config.max_prepared);
    }
}

fn ready(txid: TxId) -> ParticipantResponse {
    ParticipantResponse::Ready { txid }
}

fn vote_answer(txid: TxId, vote: Vote) -> ParticipantResponse {
    match vote {
        Vote::Ready => ready(txid),
        Vote::Refuse(code, message) => ParticipantResponse::Refuse {
            txid,
            code,
            message,
        },
    }
}

fn overloaded() -> ParticipantResponse {
    ParticipantResponse::Error(ErrorReply::new(ErrorCode::Overloaded))
}
