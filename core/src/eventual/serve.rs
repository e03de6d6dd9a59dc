//! What this node does as a replica for a coordinator (any node, itself included):
//! applies a client write as the key's first replica, merges shipped states, and shows
//! its state of a key. Every answer that promises durability or shows a state waits for
//! the log write that holds it.

use crate::buggify::FaultSite;
use crate::proto::{ErrorCode, ErrorReply, PeerMessage, StateBytes, WriteOp};
use crate::storage::LogReader;
use crate::versions::{
    clock_json, decode_context, encode_context, Container, VersionVector, WriteError,
};

use super::config::{Conflicts, NodeId};
use super::state::KeyState;
use super::write::payload;
use super::{Deferred, Node, MAX_STATE_BYTES};

impl<R: LogReader> Node<R> {
    fn refuse(&mut self, to: NodeId, req: u64, code: ErrorCode, message: impl Into<String>) {
        let error = ErrorReply::with_message(code, message);
        self.send(to, PeerMessage::Refused { req, error });
    }

    fn refuse_full(&mut self, to: NodeId, req: u64) {
        self.refuse(
            to,
            req,
            ErrorCode::Overloaded,
            "too many answers wait for the log",
        );
    }

    /// What this node holds for `key`, or why it cannot tell.
    fn held(&mut self, key: &str) -> Result<Option<KeyState>, String> {
        self.store
            .get(key)
            .map_err(|err| format!("reading the log failed: {err}"))
    }

    /// `ev_write`: apply a client write as the key's first replica.
    pub(super) fn serve_write(
        &mut self,
        from: NodeId,
        req: u64,
        key: String,
        op: WriteOp,
        context: Option<String>,
    ) {
        if self.config.conflicts == Conflicts::Lww {
            return self.refuse(from, req, ErrorCode::Malformed, "ev_write in lww mode");
        }
        // A duplicate: the first copy was applied (its answer is on its way) or refused
        // (which ended the write at its coordinator); either way nothing more to do.
        let owed = self
            .owed
            .values()
            .any(|o| o.coordinator == from && o.coordinator_req == req);
        if owed || self.recent_writes.contains(from, req) {
            return;
        }
        self.recent_writes.insert(from, req);
        if !self.durability.has_room(1) {
            return self.refuse_full(from, req);
        }
        let context = match context.as_deref().map(decode_context).transpose() {
            Ok(context) => context,
            Err(err) => {
                return self.refuse(from, req, ErrorCode::Malformed, format!("context: {err}"))
            }
        };
        let mut container = match self.held(&key) {
            Ok(None) => Container::new(),
            Ok(Some(KeyState::Siblings(container))) => container,
            Ok(Some(KeyState::Lww(_))) => {
                return self.refuse(from, req, ErrorCode::Internal, "key holds a lww state");
            }
            Err(why) => return self.refuse(from, req, ErrorCode::Internal, why),
        };
        if container.write_exceeds(context.as_ref(), self.config.max_siblings) {
            let message = format!("more than {} siblings", self.config.max_siblings);
            return self.refuse(from, req, ErrorCode::Overloaded, message);
        }
        if self.buggify.fires(self.now, FaultSite::SpuriousRefusal) {
            return self.refuse_full(from, req);
        }
        match self.apply_write(&mut container, context.as_ref(), op) {
            Ok((clock, answer_context)) => {
                let state = KeyState::Siblings(container);
                let bytes = state.to_bytes();
                if bytes.len() > MAX_STATE_BYTES {
                    let message = format!("the key's state would exceed {MAX_STATE_BYTES} bytes");
                    return self.refuse(from, req, ErrorCode::Overloaded, message);
                }
                // The debt is logged before the state, and the answer waits for both: a
                // crash that keeps the write here keeps the debt (a log keeps a prefix),
                // so the write reaches the other replicas even if its coordinator never
                // hears of it.
                self.owe(&key, from, req);
                let token = self.put_state(&key, state);
                let msg = PeerMessage::Written {
                    req,
                    state: StateBytes(bytes),
                    clock,
                    context: answer_context,
                };
                self.defer(token, Deferred::Send(from, msg));
            }
            Err(WriteError::CounterExhausted) => {
                self.refuse(from, req, ErrorCode::Malformed, "context counter too large");
            }
            Err(err) => self.refuse(from, req, ErrorCode::Overloaded, err.to_string()),
        }
    }

    /// Writes at this node's actor, above its floor; the new version's clock and answer
    /// context.
    fn apply_write(
        &mut self,
        container: &mut Container,
        context: Option<&VersionVector>,
        op: WriteOp,
    ) -> Result<(serde_json::Value, String), WriteError> {
        let dot = container.write_above(self.actor, context, payload(op), self.floor)?;
        let version = container.version(dot).ok_or(WriteError::CounterExhausted)?;
        Ok((
            clock_json(&version.clock()),
            encode_context(&version.answer_context()),
        ))
    }

    /// `ev_store`: merge a shipped state (a write's copy, a read repair, a hint). Never
    /// refused by the sibling limit. `ev_apply` (`first`) also logs what the other
    /// replicas are owed.
    pub(super) fn serve_store(
        &mut self,
        from: NodeId,
        req: u64,
        key: String,
        state: StateBytes,
        first: bool,
    ) {
        if !self.durability.has_room(1) {
            return self.refuse_full(from, req);
        }
        let theirs = match KeyState::from_bytes(&state.0) {
            Ok(theirs) => theirs,
            Err(why) => {
                self.stats.bad_states += 1;
                return self.refuse(from, req, ErrorCode::Malformed, why);
            }
        };
        if matches!(theirs, KeyState::Lww(_)) != (self.config.conflicts == Conflicts::Lww) {
            self.stats.bad_states += 1;
            return self.refuse(from, req, ErrorCode::Malformed, "other conflicts mode");
        }
        let held = match self.held(&key) {
            Ok(held) => held,
            Err(why) => return self.refuse(from, req, ErrorCode::Internal, why),
        };
        let mut behind = Vec::new();
        let merged = match held {
            None => Some(theirs),
            Some(mut mine) => {
                let report = mine.merge(&theirs);
                self.stats.reused_dots += report.reused_dots as u64;
                if report.mismatched {
                    self.stats.bad_states += 1;
                    return self.refuse(from, req, ErrorCode::Malformed, "other conflicts mode");
                }
                behind = self.answer_behind_replica(from, &key, &theirs, &mine);
                report.changed.then_some(mine)
            }
        };
        // `ev_apply`: the debt goes first, as for `ev_write`.
        if first {
            self.owe(&key, from, req);
        }
        // Unchanged: this node already holds it, though perhaps not durably yet.
        let token = match merged {
            Some(state) => self.put_state(&key, state),
            None => self.key_token(&key),
        };
        // Only with room for them and the answer below; without, a later read repairs.
        if self.durability.has_room(behind.len().saturating_add(1)) {
            for (to, msg) in behind {
                self.defer(token, Deferred::Send(to, msg));
            }
        }
        self.defer(token, Deferred::Send(from, PeerMessage::Stored { req }));
    }

    /// A shipped state lacks what this replica knows (a deletion reaped here while a
    /// write raced the reap kept it at the write's first replica): the join to ship, once
    /// it is durable, back to the sender if it is a replica, else (a coordinator shipping
    /// its first replica's state, which holds what the sender held) to every other
    /// replica, so that replicas that took different paths converge without a read.
    fn answer_behind_replica(
        &mut self,
        from: NodeId,
        key: &str,
        theirs: &KeyState,
        mine: &KeyState,
    ) -> Vec<(NodeId, PeerMessage)> {
        if from == self.config.id || theirs.includes(mine) {
            return Vec::new();
        }
        let replicas = self.replicas_of(key);
        let targets: Vec<NodeId> = if replicas.contains(&from) {
            vec![from]
        } else {
            let me = self.config.id;
            replicas.into_iter().filter(|&id| id != me).collect()
        };
        let state = mine.to_bytes();
        targets
            .into_iter()
            .map(|to| {
                let msg = PeerMessage::Store {
                    req: self.new_req(),
                    key: key.to_owned(),
                    state: StateBytes(state.clone()),
                };
                (to, msg)
            })
            .collect()
    }

    /// `ev_read`: this node's state of the key, shown once it is durable.
    pub(super) fn serve_read(&mut self, from: NodeId, req: u64, key: String) {
        if !self.durability.has_room(1) {
            return self.refuse_full(from, req);
        }
        match self.held(&key) {
            Ok(state) => {
                let state = state.map(|s| StateBytes(s.to_bytes()));
                let token = self.key_token(&key);
                self.defer(
                    token,
                    Deferred::Send(from, PeerMessage::State { req, state }),
                );
            }
            Err(why) => self.refuse(from, req, ErrorCode::Internal, why),
        }
    }
}
