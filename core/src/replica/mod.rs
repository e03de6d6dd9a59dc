//! A KV server: a log-structured store with a write-through cache in front, and its part
//! in two-phase commit.
//!
//! The store is Bitcask-shaped: every prepared write is appended to the log, and an
//! in-memory index maps each key to where its committed value lies in the log; values are
//! read back through [`LogReader`]. Durability is an output: the replica emits
//! [`ReplicaOutput::Persist`] and holds every answer that promises durability (`ready`,
//! `ack`) until the caller reports [`ReplicaInput::Persisted`] for that write.
//!
//! Recovery is a function of the log bytes alone ([`Replica::recover`]): committed values,
//! in-doubt transactions and their locks all come back from them.

pub mod record;
mod recovery;
mod store;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use crate::cache::{CacheConfig, CacheConfigError};
use crate::log::{encode_frame, frame_len, FRAME_HEADER_BYTES};
use crate::proto::{
    check_key, check_key_value, ErrorCode, ErrorReply, ParticipantRequest, ParticipantResponse,
    TxId, TxOp,
};
use crate::ReplyTo;

pub use recovery::RecoveryReport;
pub use store::{LogReader, StorageError, ValueLoc};

use record::{value_offset_in_payload, Record};
use store::Store;

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
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            cache: CacheConfig::SERVER_DEFAULT,
            max_prepared: 1024,
            decided_memory: 65_536,
            max_waiting: 8192,
        }
    }
}

/// Which durable write an answer waits for: writes complete in the order they were asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistToken(pub u64);

/// What the replica is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaInput {
    /// A request from the coordinator (or anyone on the server's port).
    Request {
        /// Where the answer goes.
        from: ReplyTo,
        /// The request.
        msg: ParticipantRequest,
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
    },
}

/// The token of records read back at recovery: durable before this replica started.
const RECOVERED: PersistToken = PersistToken(0);

/// An operation prepared and not yet decided.
#[derive(Clone, Debug)]
struct Prepared {
    key: String,
    op: PreparedOp,
    /// The write of its prepare record.
    token: PersistToken,
    /// The decision being made durable, and the write that holds it.
    deciding: Option<(bool, PersistToken)>,
}

#[derive(Clone, Debug)]
enum PreparedOp {
    Put { loc: ValueLoc, value: String },
    Del,
}

/// How a transaction ended here, remembered to answer repeated messages the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    Committed,
    Aborted,
    /// This replica voted to abort, for this reason.
    Refused(ErrorCode, String),
}

impl Decision {
    fn of(commit: bool) -> Self {
        if commit {
            Decision::Committed
        } else {
            Decision::Aborted
        }
    }
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
    store: Store<R>,
    prepared: BTreeMap<TxId, Prepared>,
    locks: BTreeMap<String, TxId>,
    decided: BTreeMap<TxId, Decision>,
    decided_order: VecDeque<TxId>,
    /// Bytes in the log, including those asked for and not yet durable.
    log_len: u64,
    next_token: u64,
    /// Every token below this one is durable.
    durable_below: u64,
    waiting: VecDeque<(PersistToken, Deferred)>,
    outputs: VecDeque<ReplicaOutput>,
}

impl<R: LogReader> Replica<R> {
    /// A replica with an empty log; fails only on a cache of zero sets or ways.
    pub fn new(config: ReplicaConfig, reader: R) -> Result<Self, CacheConfigError> {
        Ok(Self {
            store: Store::new(config.cache, reader)?,
            config,
            prepared: BTreeMap::new(),
            locks: BTreeMap::new(),
            decided: BTreeMap::new(),
            decided_order: VecDeque::new(),
            log_len: 0,
            // Token 0 stands for what was durable before this replica started.
            next_token: 1,
            durable_below: 1,
            waiting: VecDeque::new(),
            outputs: VecDeque::new(),
        })
    }

    /// Handles one input at time `now` (the replica keeps no timers; `now` is for symmetry
    /// with the other roles).
    pub fn handle(&mut self, _now: crate::Ts, input: ReplicaInput) {
        match input {
            ReplicaInput::Request { from, msg } => self.on_request(from, msg),
            ReplicaInput::Persisted { token } => self.on_persisted(token),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<ReplicaOutput> {
        self.outputs.pop_front()
    }

    /// The replica has no timers.
    pub fn poll_timeout(&self) -> Option<crate::Ts> {
        None
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
        self.prepared.keys().copied()
    }

    /// The log's length in bytes, counting writes asked for and not yet durable.
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    fn reply(&mut self, to: ReplyTo, msg: ParticipantResponse) {
        self.outputs.push_back(ReplicaOutput::Reply { to, msg });
    }

    /// Defers `action` until `token` is durable; answers `overloaded` if too much waits.
    fn defer(&mut self, token: PersistToken, action: Deferred) {
        if token.0 < self.durable_below {
            self.run(action);
            return;
        }
        self.waiting.push_back((token, action));
    }

    fn has_room_to_wait(&self, extra: usize) -> bool {
        self.waiting.len() + extra <= self.config.max_waiting
    }

    /// Appends records to the log and returns the token of their write, and the offset in
    /// the log where the first record's payload starts.
    fn append(&mut self, payload: &[u8]) -> (PersistToken, u64) {
        let mut bytes = Vec::with_capacity(frame_len(payload.len()));
        encode_frame(payload, &mut bytes);
        let payload_offset = self.log_len + FRAME_HEADER_BYTES as u64;
        self.log_len += bytes.len() as u64;
        let token = PersistToken(self.next_token);
        self.next_token += 1;
        self.outputs
            .push_back(ReplicaOutput::Persist { token, bytes });
        (token, payload_offset)
    }

    fn on_request(&mut self, from: ReplyTo, msg: ParticipantRequest) {
        match msg {
            ParticipantRequest::Prepare { txid, key, op } => self.on_prepare(from, txid, key, op),
            ParticipantRequest::Commit { txid } => self.on_decision(from, txid, true),
            ParticipantRequest::Abort { txid } => self.on_decision(from, txid, false),
            ParticipantRequest::Get { key } => {
                let answer = self.read(key);
                self.reply(from, answer);
            }
            ParticipantRequest::Ping => self.reply(from, ParticipantResponse::Pong),
        }
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
        let refuse = |code: ErrorCode, message: String| ParticipantResponse::Refuse {
            txid,
            code,
            message,
        };
        if let Some(prepared) = self.prepared.get(&txid) {
            // A repeated prepare: the vote stands once it is durable.
            let token = prepared.token;
            if !self.has_room_to_wait(1) {
                self.reply(from, overloaded());
                return;
            }
            self.defer(
                token,
                Deferred::Reply(from, ParticipantResponse::Ready { txid }),
            );
            return;
        }
        if let Some(decision) = self.decided.get(&txid) {
            let answer = match decision {
                Decision::Committed => ParticipantResponse::Ready { txid },
                Decision::Aborted => refuse(
                    ErrorCode::Aborted,
                    format!("transaction {txid} was already aborted"),
                ),
                Decision::Refused(code, message) => refuse(*code, message.clone()),
            };
            self.reply(from, answer);
            return;
        }
        if let Some((code, message)) = self.refusal(&key, &op) {
            // A vote to abort is this replica's decision: a repeated or late prepare of
            // the transaction gets the same vote, even if the key changed meanwhile.
            self.remember_decision(txid, Decision::Refused(code, message.clone()));
            self.reply(from, refuse(code, message));
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
        let (token, payload_offset) = self.append(&payload);
        let op = match value {
            Some(value) => PreparedOp::Put {
                loc: ValueLoc {
                    offset: payload_offset + value_offset_in_payload(key.len()) as u64,
                    len: value.len() as u32,
                },
                value,
            },
            None => PreparedOp::Del,
        };
        self.locks.insert(key.clone(), txid);
        self.prepared.insert(
            txid,
            Prepared {
                key,
                op,
                token,
                deciding: None,
            },
        );
        self.defer(
            token,
            Deferred::Reply(from, ParticipantResponse::Ready { txid }),
        );
    }

    /// Why this replica votes to abort a prepare, if it does: the protocol's limits, a
    /// key locked by another transaction, a delete of a missing key, or no room.
    fn refusal(&self, key: &str, op: &TxOp) -> Option<(ErrorCode, String)> {
        let value = match op {
            TxOp::Put { value } => Some(value.as_str()),
            TxOp::Del => None,
        };
        if let Err(code) = check_key_value(key, value) {
            return Some((code, code.default_message().to_owned()));
        }
        if let Some(holder) = self.locks.get(key) {
            return Some((
                ErrorCode::Locked,
                format!("key is locked by transaction {holder}"),
            ));
        }
        if matches!(op, TxOp::Del) && !self.store.contains(key) {
            let code = ErrorCode::NotFound;
            return Some((code, code.default_message().to_owned()));
        }
        if self.prepared.len() >= self.config.max_prepared || !self.has_room_to_wait(1) {
            let code = ErrorCode::Overloaded;
            return Some((code, code.default_message().to_owned()));
        }
        None
    }

    fn on_decision(&mut self, from: ReplyTo, txid: TxId, commit: bool) {
        let ack = ParticipantResponse::Ack { txid };
        let Some(prepared) = self.prepared.get_mut(&txid) else {
            // Decided before, or never prepared here: presumed abort. Remember an abort of
            // an unknown transaction so that a prepare arriving late is not taken for new.
            if !commit && !self.decided.contains_key(&txid) {
                self.remember_decision(txid, Decision::Aborted);
            }
            self.reply(from, ack);
            return;
        };
        if let Some((_, token)) = prepared.deciding {
            // The first decision stands; this one is answered once it is durable.
            if !self.has_room_to_wait(1) {
                self.reply(from, overloaded());
                return;
            }
            self.defer(token, Deferred::Reply(from, ack));
            return;
        }
        if !self.has_room_to_wait(2) {
            self.reply(from, overloaded());
            return;
        }
        let record = if commit {
            Record::Commit { txid }
        } else {
            Record::Abort { txid }
        };
        let (token, _) = self.append(&record.encode());
        if let Some(prepared) = self.prepared.get_mut(&txid) {
            prepared.deciding = Some((commit, token));
        }
        self.defer(token, Deferred::Decide(txid));
        self.defer(token, Deferred::Reply(from, ack));
    }

    fn on_persisted(&mut self, token: PersistToken) {
        assert!(
            token.0 >= self.durable_below && token.0 < self.next_token,
            "persisted token {} out of order (durable below {}, next {})",
            token.0,
            self.durable_below,
            self.next_token
        );
        self.durable_below = token.0 + 1;
        while let Some((waiting_for, _)) = self.waiting.front() {
            if waiting_for.0 > token.0 {
                break;
            }
            if let Some((_, action)) = self.waiting.pop_front() {
                self.run(action);
            }
        }
    }

    fn run(&mut self, action: Deferred) {
        match action {
            Deferred::Reply(to, msg) => self.reply(to, msg),
            Deferred::Decide(txid) => self.apply_decision(txid),
        }
    }

    /// The decision record is durable: apply it and release the key.
    fn apply_decision(&mut self, txid: TxId) {
        let Some(prepared) = self.prepared.remove(&txid) else {
            panic!("decision of transaction {txid} applied twice");
        };
        let Some((commit, _)) = prepared.deciding else {
            panic!("transaction {txid} applied without a decision");
        };
        self.finish(txid, prepared, commit);
    }

    /// Ends a prepared transaction whose decision is durable: releases its key, applies
    /// it if committed, and remembers the decision. Shared by the live path and replay.
    fn finish(&mut self, txid: TxId, prepared: Prepared, commit: bool) {
        let holder = self.locks.remove(&prepared.key);
        assert_eq!(holder, Some(txid), "lock of {:?} lost", prepared.key);
        if commit {
            match prepared.op {
                PreparedOp::Put { loc, value } => self.store.put(prepared.key, loc, value),
                PreparedOp::Del => self.store.remove(&prepared.key),
            }
        }
        self.remember_decision(txid, Decision::of(commit));
    }

    fn remember_decision(&mut self, txid: TxId, decision: Decision) {
        if self.decided.insert(txid, decision).is_none() {
            self.decided_order.push_back(txid);
        }
        while self.decided_order.len() > self.config.decided_memory {
            if let Some(oldest) = self.decided_order.pop_front() {
                self.decided.remove(&oldest);
            }
        }
    }
}

fn overloaded() -> ParticipantResponse {
    ParticipantResponse::Error(ErrorReply::new(ErrorCode::Overloaded))
}
