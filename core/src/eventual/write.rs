//! Writes this node coordinates: `putreq` and `delreq` at W replicas.
//!
//! Siblings mode: the write goes first to the key's first replica (this node when it is
//! one, else the first replica of the preference list that is up), which applies it to
//! what it holds (the blind-write rule) and answers the resulting state once durable;
//! that state is then shipped to the other replicas. LWW mode: this node stamps the write
//! and ships the one-version state to every replica. The client gets `Success` once W
//! replicas hold it durably; replicas that have not confirmed by the deadline get a hint.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::buggify::FaultSite;
use crate::proto::{
    Consistency, ErrorCode, ErrorReply, EventualResponse, PeerMessage, StateBytes, WriteOp,
};
use crate::storage::LogReader;
use crate::versions::{decode_context, LwwVersion, Payload, Stamp};
use crate::ReplyTo;

use super::config::{Conflicts, NodeId};
use super::state::KeyState;
use super::{Deferred, Node, Pending, TimerKind};

/// A write in flight.
#[derive(Clone, Debug)]
pub(super) struct PendingWrite {
    pub(super) to: ReplyTo,
    pub(super) key: String,
    /// The key's preference list.
    pub(super) replicas: Vec<NodeId>,
    /// W.
    pub(super) need: usize,
    /// The key's state once the first replica applied the write.
    pub(super) state: Option<Vec<u8>>,
    /// The replica that applies it first, told when it owes nothing.
    pub(super) first: Option<NodeId>,
    /// Whether it was sent to the other replicas (once the first one held it).
    pub(super) spread: bool,
    /// The client's answer once the state is known.
    pub(super) answer: Option<EventualResponse>,
    /// Replicas that hold the write durably.
    pub(super) acked: BTreeSet<NodeId>,
    /// Whether the client was answered.
    pub(super) answered: bool,
}

/// A write's payload.
pub(super) fn payload(op: WriteOp) -> Payload {
    match op {
        WriteOp::Put(value) => Payload::Value(value),
        WriteOp::Del => Payload::Deleted,
    }
}

impl<R: LogReader> Node<R> {
    /// How many replicas a request at `level` needs, or why it is not tried.
    pub(super) fn admit(
        &mut self,
        level: Consistency,
        replicas: &[NodeId],
    ) -> Result<usize, ErrorCode> {
        let need = level.replicas(self.config.replication);
        let up = replicas.iter().filter(|&&id| self.is_up(id)).count();
        if need > replicas.len() || up < need {
            return Err(ErrorCode::Unavailable);
        }
        if self.pending.len() >= self.config.max_pending {
            return Err(ErrorCode::Overloaded);
        }
        Ok(need)
    }

    pub(super) fn start_write(
        &mut self,
        to: ReplyTo,
        key: String,
        op: WriteOp,
        level: Consistency,
        context: Option<String>,
    ) {
        // A bad context is the client's fault whatever the replicas' state: answered
        // before anything is tried. Only siblings mode reads contexts.
        let bad_context = self.config.conflicts == Conflicts::Siblings
            && context
                .as_deref()
                .is_some_and(|c| decode_context(c).is_err());
        if bad_context {
            let reply = ErrorReply::with_message(ErrorCode::Malformed, "not a context");
            return self.reply(to, EventualResponse::Error(reply));
        }
        let replicas = self.replicas_of(&key);
        let need = match self.admit(level, &replicas) {
            Ok(need) => need,
            Err(code) => return self.reply(to, EventualResponse::error(code)),
        };
        if self.buggify.fires(self.now, FaultSite::SpuriousOverloaded) {
            return self.reply(to, EventualResponse::error(ErrorCode::Overloaded));
        }
        let req = self.new_req();
        let write = PendingWrite {
            to,
            key: key.clone(),
            replicas: replicas.clone(),
            need,
            state: None,
            first: None,
            spread: false,
            answer: None,
            acked: BTreeSet::new(),
            answered: false,
        };
        self.pending.insert(req, Pending::Write(write));
        self.timers
            .set(TimerKind::Request(req), self.now + self.config.timeout_ms);
        match self.config.conflicts {
            Conflicts::Siblings => {
                let first = self.first_replica(&replicas);
                let msg = PeerMessage::Write {
                    req,
                    key,
                    op,
                    context,
                };
                self.send(first, msg);
            }
            Conflicts::Lww => self.stamp_and_ship(req, op),
        }
    }

    /// The replica that applies a write first (section 2's blind-write rule): this node
    /// when it is one, else the first replica of the preference list that is up.
    fn first_replica(&self, replicas: &[NodeId]) -> NodeId {
        if replicas.contains(&self.config.id) {
            return self.config.id;
        }
        // admit() saw at least one replica up, so the fallback is never taken.
        replicas
            .iter()
            .copied()
            .find(|&id| self.is_up(id))
            .unwrap_or(self.config.id)
    }

    /// LWW mode: the coordinator's stamp decides, so the state is known at once. It goes
    /// to the key's first replica first (`ev_apply`, which logs what the others are owed),
    /// and to the others once that replica holds it: no replica holds a write that no
    /// durable record owes the rest, whoever crashes.
    fn stamp_and_ship(&mut self, req: u64, op: WriteOp) {
        let stamp = Stamp::next(self.now, self.config.id, self.last_stamp);
        self.last_stamp = Some(stamp);
        let version = LwwVersion {
            stamp,
            payload: payload(op),
        };
        let answer = EventualResponse::Written {
            clock: stamp.clock_json(),
            context: String::new(),
        };
        let state = KeyState::Lww(version).to_bytes();
        let Some(Pending::Write(write)) = self.pending.get_mut(&req) else {
            return;
        };
        let (key, replicas) = (write.key.clone(), write.replicas.clone());
        let first = self.first_replica(&replicas);
        if let Some(Pending::Write(write)) = self.pending.get_mut(&req) {
            write.first = Some(first);
            write.state = Some(state.clone());
            write.answer = Some(answer);
        }
        let state = StateBytes(state);
        self.send(first, PeerMessage::Apply { req, key, state });
    }

    /// The first replica holds the write: send it to every other replica.
    fn spread(&mut self, req: u64) {
        let Some(Pending::Write(write)) = self.pending.get_mut(&req) else {
            return;
        };
        let (Some(first), Some(state), false) = (write.first, write.state.clone(), write.spread)
        else {
            return;
        };
        write.spread = true;
        let (key, need) = (write.key.clone(), write.need);
        let targets: Vec<NodeId> = write
            .replicas
            .iter()
            .copied()
            .filter(|&id| id != first)
            .collect();
        for (i, target) in targets.into_iter().enumerate() {
            // Skipping a replica beyond the ones W needs is what a lost message does; its
            // hint or the first replica's owed record brings the write there.
            if i + 1 >= need && self.buggify.fires(self.now, FaultSite::SkipReplicaSend) {
                continue;
            }
            let state = StateBytes(state.clone());
            self.send(
                target,
                PeerMessage::Store {
                    req,
                    key: key.clone(),
                    state,
                },
            );
        }
    }

    /// The first replica applied the write durably.
    pub(super) fn on_written(
        &mut self,
        from: NodeId,
        req: u64,
        state: StateBytes,
        clock: Value,
        context: String,
    ) {
        let expected = match self.pending.get(&req) {
            Some(Pending::Write(write)) => write.state.is_none() && write.replicas.contains(&from),
            _ => false,
        };
        if !expected {
            return;
        }
        if let Some(Pending::Write(write)) = self.pending.get_mut(&req) {
            write.first = Some(from);
            write.state = Some(state.0);
            write.answer = Some(EventualResponse::Written { clock, context });
        }
        self.write_acked(req, from);
    }

    /// An `ev_stored` from a replica: a write's copy, a read's repair, or a hint.
    pub(super) fn on_stored(&mut self, from: NodeId, req: u64) {
        match self.pending.get(&req) {
            Some(Pending::Write(_)) => self.write_acked(req, from),
            Some(Pending::Read(_)) => self.repair_acked(req, from),
            Some(Pending::Reap(_)) => {}
            None if self.hints.get(req).is_some() => self.hint_delivered(from, req),
            None => self.owed_delivered(from, req),
        }
    }

    /// A replica refused a request of ours (only the first replica of a write, or a
    /// replica without room, does).
    pub(super) fn on_refused(&mut self, from: NodeId, req: u64, error: ErrorReply) {
        let Some(Pending::Write(write)) = self.pending.get(&req) else {
            // A refused read or repair changes nothing: the deadline answers.
            return;
        };
        // Only the first replica's refusal, before it applied the write, ends it: nothing
        // was written anywhere then.
        let before_first = match write.first {
            None => write.state.is_none(),
            Some(first) => first == from && !write.spread,
        };
        if !before_first || !write.replicas.contains(&from) {
            return;
        }
        if let Some(Pending::Write(write)) = self.pending.remove(&req) {
            self.timers.cancel(&TimerKind::Request(req));
            self.reply(write.to, EventualResponse::Error(error));
        }
    }

    fn write_acked(&mut self, req: u64, from: NodeId) {
        let Some(Pending::Write(write)) = self.pending.get_mut(&req) else {
            return;
        };
        if write.state.is_none() || !write.replicas.contains(&from) {
            return;
        }
        write.acked.insert(from);
        if write.first == Some(from) {
            self.spread(req);
        }
        let Some(Pending::Write(write)) = self.pending.get_mut(&req) else {
            return;
        };
        if !write.answered && write.acked.len() >= write.need {
            write.answered = true;
            let (to, answer) = (write.to, write.answer.clone());
            if let Some(answer) = answer {
                self.reply(to, answer);
            }
        }
        let all = match self.pending.get(&req) {
            Some(Pending::Write(write)) => write.acked.len() == write.replicas.len(),
            _ => false,
        };
        if all {
            if let Some(Pending::Write(write)) = self.pending.remove(&req) {
                self.timers.cancel(&TimerKind::Request(req));
                self.settle_first(req, &write);
            }
        }
    }

    /// Tells the write's first replica that it owes nothing for it any more.
    fn settle_first(&mut self, req: u64, write: &PendingWrite) {
        if let Some(first) = write.first {
            self.send(first, PeerMessage::Settled { req });
        }
    }

    /// The deadline passed: `timeout` if W was not reached, and a hint for every replica
    /// that did not confirm (hints never counted towards W).
    pub(super) fn write_deadline(&mut self, req: u64, write: PendingWrite) {
        if !write.answered {
            self.reply(write.to, EventualResponse::Timeout);
        }
        let Some(state) = write.state.clone() else {
            return;
        };
        if !self.config.repair.hints() {
            return;
        }
        let mut all_hinted = true;
        for &target in &write.replicas {
            if !write.acked.contains(&target) && target != self.config.id {
                all_hinted &= self.add_hint(target, &write.key, state.clone());
            }
        }
        // A hint dropped at a bound leaves the first replica's backstop in charge.
        if all_hinted {
            self.settle_first_after_hints(req, &write);
        }
    }

    /// Tells the write's first replica that it owes nothing, once the hints that take
    /// over its debt are durable here: told before, a machine crash of this node could
    /// lose the hints after the first replica dropped its record, and nothing would bring
    /// the write to the replicas that missed it but a read. Without room to wait, the
    /// first replica keeps its debt and ships the write itself.
    fn settle_first_after_hints(&mut self, req: u64, write: &PendingWrite) {
        let Some(first) = write.first else {
            return;
        };
        if self.durability.has_room(1) {
            let token = self.last_token;
            self.defer(token, Deferred::Send(first, PeerMessage::Settled { req }));
        }
    }
}
