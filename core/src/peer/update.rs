//! The updates this node coordinates: one client update is a series of attempts, each a
//! two-phase commit with a new transaction ID over the key's replicas. An attempt that
//! meets a locked key is rolled back by the driver (every participant that may hold its
//! prepare hears the abort) and the update tries again after a seeded random wait that
//! grows with each attempt (no-wait locking with backoff: nothing waits for a lock, so
//! nothing deadlocks, and the jitter breaks the symmetry of colliding coordinators).
//! Only when its timeout is spent does the client hear `aborted`.
//!
//! PUTs of one key that wait here for the key's attempt are absorbed into the next
//! attempt to start, which carries the last one's value: they were all pending at once,
//! so taking effect at one instant in arrival order, each overwritten at once by the
//! next, is one of their linearizable orders, and each absorbed client hears the
//! update's answer. Without it, clients writing one key through one node ran one
//! two-phase commit after another (the same as in strong mode's coordinator).

use crate::buggify::FaultSite;
use crate::proto::peer::{PeerBody, PeerReply};
use crate::proto::{ClientResponse, ErrorCode, ErrorReply, TxId, TxOp};
use crate::time::Attempts;
use crate::twopc::{DriverEvent, Outcome};
use crate::{ReplyTo, Ts};

use super::record::PeerRecord;
use super::{txid, Deferred, LogReader, Peer, Timer};

/// What a transaction of the driver belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Payload {
    /// An attempt of this client update.
    Client(u64),
    /// A commit recovered from the log: nobody waits for it.
    Recovered,
}

/// A client update under way.
#[derive(Clone, Debug)]
pub(super) struct Update {
    pub(super) from: ReplyTo,
    pub(super) key: String,
    pub(super) op: TxOp,
    pub(super) participants: Vec<u64>,
    /// No new attempt starts after this.
    pub(super) deadline: Ts,
    pub(super) attempts: Attempts,
    /// Attempts that collided so far.
    pub(super) collisions: u32,
    /// The attempt voting now, if one is, and when it began.
    pub(super) txid: Option<TxId>,
    pub(super) attempt_began: Ts,
    /// The clients of later PUTs of the key absorbed into this one: answered as `from`
    /// is, at the same moment.
    pub(super) absorbed: Vec<ReplyTo>,
}

impl<R: LogReader> Peer<R> {
    pub(super) fn on_update(&mut self, from: ReplyTo, key: String, op: TxOp) {
        if self.updates.len() + self.absorbed_waiting >= self.config.max_updates
            || self.buggify.fires(self.now, FaultSite::SpuriousOverloaded)
        {
            return self.reply(
                from,
                PeerReply::Client(ClientResponse::error(ErrorCode::Overloaded)),
            );
        }
        let participants = self.replicas(&key);
        let update = Update {
            from,
            key,
            op,
            participants,
            deadline: self.now + self.config.timeout_ms,
            attempts: self.config.retry.begin(),
            collisions: 0,
            txid: None,
            attempt_began: self.now,
            absorbed: Vec::new(),
        };
        let id = self.next_update;
        self.next_update += 1;
        self.updates.insert(id, update);
        self.start_attempt(id);
    }

    /// Starts the next attempt of update `id`: a new transaction ID, prepares out. One
    /// attempt per key runs from this node at a time (its own clients would only collide
    /// with each other); the others wait for it, at most until their deadline.
    pub(super) fn start_attempt(&mut self, id: u64) {
        let Some(update) = self.updates.get(&id) else {
            return;
        };
        let key = update.key.clone();
        let deadline = update.deadline;
        if self.now >= deadline {
            let answer = self.deadline_answer(&key);
            return self.answer_update(id, answer);
        }
        if self.attempt_on(&key).is_some() || self.settling_on(&key) {
            self.timers.set(Timer::Retry(id), deadline);
            return self.hurry_settling(&key);
        }
        if !self.driver.has_room() {
            return self.answer_update(id, ClientResponse::error(ErrorCode::Overloaded));
        }
        // Before this run's epoch is durable no ID may be used: the update waits for it.
        let Some(txid) = self.next_txid() else {
            return;
        };
        self.timers.cancel(&Timer::Retry(id));
        self.absorb_waiting_puts(id);
        let Some(update) = self.updates.get_mut(&id) else {
            return;
        };
        update.txid = Some(txid);
        update.attempt_began = self.now;
        let participants = update.participants.clone();
        self.driver
            .begin(self.now, txid, participants, Payload::Client(id));
        self.drain_driver();
    }

    /// Folds into update `id`, a PUT whose attempt starts now, the PUTs of its key that
    /// arrived after it and wait for the key, up to the first later update of the key
    /// that is not such a PUT: the attempt carries the last one's value, and their
    /// clients hear its answer (see the module's comment).
    fn absorb_waiting_puts(&mut self, id: u64) {
        let Some(update) = self.updates.get(&id) else {
            return;
        };
        if !matches!(update.op, TxOp::Put { .. }) {
            return;
        }
        let deadline = update.deadline;
        let mut run = Vec::new();
        for (&later, other) in self.updates.range(id + 1..) {
            if other.key != update.key {
                continue;
            }
            let waits_for_key = other.txid.is_none()
                && self.timers.deadline(&Timer::Retry(later)) == Some(other.deadline);
            if !waits_for_key || !matches!(other.op, TxOp::Put { .. }) {
                break;
            }
            run.push(later);
        }
        for later in run {
            let Some(other) = self.updates.remove(&later) else {
                continue;
            };
            self.timers.cancel(&Timer::Retry(later));
            // Later arrivals wait longer, so the carrier's deadline holds for them all.
            assert!(
                other.deadline >= deadline,
                "update {later} absorbed past its deadline"
            );
            // Its own absorbed clients, if it carried some in an earlier attempt, are
            // counted already.
            self.absorbed_waiting += 1;
            self.absorbed_total += 1;
            if let Some(carrier) = self.updates.get_mut(&id) {
                carrier.op = other.op;
                carrier.absorbed.push(other.from);
                carrier.absorbed.extend(other.absorbed);
            }
        }
    }

    /// The answer of an update of `key` whose deadline came before it could succeed.
    fn deadline_answer(&self, key: &str) -> ClientResponse {
        let (code, message) = if self.silent_replica_on(key) {
            // An own earlier transaction waited a whole timeout for a replica's
            // acknowledgement: a prepare would have met the same silent replica.
            let why = "a replica has not acknowledged the key's previous update until the timeout; nothing was changed";
            (ErrorCode::Unavailable, why)
        } else {
            let why = "the key stayed busy until the timeout; nothing was changed";
            (ErrorCode::Aborted, why)
        };
        ClientResponse::Error(ErrorReply::with_message(code, message))
    }

    /// The update of `key` whose attempt runs now, if one does.
    fn attempt_on(&self, key: &str) -> Option<u64> {
        let mut updates = self.updates.iter();
        updates
            .find(|(_, u)| u.txid.is_some() && u.key == key)
            .map(|(id, _)| *id)
    }

    /// An attempt on `key` ended, or its decision was acknowledged everywhere: the
    /// oldest update waiting for the key starts.
    pub(super) fn wake_key(&mut self, key: &str) {
        if self.attempt_on(key).is_some() || self.settling_on(key) {
            return;
        }
        let waiting = self.updates.iter().find(|(id, u)| {
            u.txid.is_none()
                && u.key == key
                && self.timers.deadline(&Timer::Retry(**id)) == Some(u.deadline)
        });
        if let Some((&id, _)) = waiting {
            self.start_attempt(id);
        }
    }

    /// The epoch is durable: every update waiting for an ID starts.
    pub(super) fn start_waiting_updates(&mut self) {
        let waiting: Vec<u64> = self
            .updates
            .iter()
            .filter(|(id, u)| {
                u.txid.is_none() && self.timers.deadline(&Timer::Retry(**id)).is_none()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.start_attempt(id);
        }
    }

    /// The next transaction ID, or `None` while the epoch's record is not yet durable.
    pub(super) fn next_txid(&mut self) -> Option<TxId> {
        if !self.durability.is_durable(self.epoch_token) {
            return None;
        }
        let txid = txid::make(self.epoch, self.index, self.next_seq);
        if self.next_seq >= txid::SEQ_MAX {
            self.begin_epoch(self.epoch);
        } else {
            self.next_seq += 1;
        }
        Some(txid)
    }

    /// Starts epoch `after + 1`: its record is written now, its IDs used once durable.
    pub(super) fn begin_epoch(&mut self, after: u32) {
        let epoch = after.saturating_add(1);
        assert!(epoch <= txid::EPOCH_MAX, "transaction ID epochs exhausted");
        self.epoch = epoch;
        self.next_seq = 1;
        let (token, _) = self.append(&PeerRecord::Epoch { epoch }.encode());
        self.epoch_token = token;
        self.defer(token, Deferred::EpochBegun);
    }

    /// Turns every driver event into messages, records and answers.
    pub(super) fn drain_driver(&mut self) {
        while let Some(event) = self.driver.poll_event() {
            match event {
                DriverEvent::SendPrepare { to, txid } => self.send_prepare(to, txid),
                DriverEvent::SendDecision { to, txid, commit } => {
                    self.send(to, PeerBody::Decide { txid, commit })
                }
                DriverEvent::Decided { txid, outcome } => self.on_decided(txid, outcome),
                DriverEvent::Finished { txid, .. } => {
                    self.end_settling(txid);
                    if self.commits.remove(&txid) {
                        // Not waited for: a lost record only makes recovery resend the
                        // commit, which every participant acknowledges again.
                        let _ = self.append(&PeerRecord::Finished { txid }.encode());
                    }
                }
            }
        }
    }

    fn send_prepare(&mut self, to: u64, txid: TxId) {
        let Some(Payload::Client(id)) = self.driver.payload(txid).copied() else {
            return;
        };
        let Some(update) = self.updates.get(&id) else {
            return;
        };
        let body = PeerBody::Prepare {
            txid,
            key: update.key.clone(),
            op: update.op.clone(),
            participants: update.participants.clone(),
        };
        self.send(to, body);
    }

    fn on_decided(&mut self, txid: TxId, outcome: Outcome) {
        if let Some(Payload::Client(id)) = self.driver.payload(txid).copied() {
            if let Some(update) = self.updates.get(&id) {
                let key = update.key.clone();
                self.begin_settling(txid, key);
            }
        }
        if outcome.is_commit() {
            // Presumed abort: the commit is durable before phase 2 and before `Success`.
            let participants = self.driver.participants(txid).unwrap_or_default().to_vec();
            let (token, _) = self.append(&PeerRecord::Decided { txid, participants }.encode());
            self.commits.insert(txid);
            return self.defer(token, Deferred::Committed(txid));
        }
        let Some(Payload::Client(id)) = self.driver.payload(txid).copied() else {
            return;
        };
        let Some(update) = self.updates.get_mut(&id) else {
            return;
        };
        update.txid = None;
        let key = update.key.clone();
        // Phase 1 ends at the first refusal: the participants that had not voted yet
        // were not given their time, so they make no `unavailable`; the refusals decide
        // the answer (`aborted`, or `not_found` for a DEL of a missing key).
        let answer = match &outcome {
            Outcome::Aborted { refusals, .. } if !refusals.is_empty() => Outcome::Aborted {
                missing: Vec::new(),
                refusals: refusals.clone(),
            }
            .client_answer(),
            _ => outcome.client_answer(),
        };
        let mut retry_at = None;
        if collided(&outcome) {
            // The wait spans the backoff's, or as many of the last attempt's durations
            // as collisions so far (whichever is longer): a span shorter than an attempt
            // would hardly separate the colliding coordinators.
            let retry = self.config.retry;
            let cap = retry.next_wait_ms(&mut update.attempts, &mut self.rng);
            update.collisions = update.collisions.saturating_add(1);
            let attempt_ms = self.now.saturating_sub(update.attempt_began).max(1);
            let grown = attempt_ms.saturating_mul(u64::from(update.collisions.min(16)));
            let wait_ms = self.rng.between(retry.wait_ms_min, cap.max(grown));
            // A wait past the deadline is cut short to leave one attempt's time before
            // it: giving up early leaves the key to newer updates.
            let last_chance = update.deadline.saturating_sub(attempt_ms);
            retry_at = Some((self.now + wait_ms).min(last_chance)).filter(|&at| at > self.now);
        }
        match retry_at {
            Some(at) => self.timers.set(Timer::Retry(id), at),
            None => self.answer_update(id, answer),
        }
        self.wake_key(&key);
    }

    pub(super) fn on_commit_durable(&mut self, txid: TxId) {
        let payload = self.driver.payload(txid).copied();
        self.durable_commits += 1;
        self.driver.handle_commit_durable(self.now, txid);
        if let Some(Payload::Client(id)) = payload {
            self.answer_update(id, ClientResponse::Success);
        }
        self.drain_driver();
    }

    fn answer_update(&mut self, id: u64, answer: ClientResponse) {
        if let Some(update) = self.updates.remove(&id) {
            self.timers.cancel(&Timer::Retry(id));
            self.absorbed_waiting -= update.absorbed.len();
            self.reply(update.from, PeerReply::Client(answer.clone()));
            for absorbed in update.absorbed {
                self.reply(absorbed, PeerReply::Client(answer.clone()));
            }
            if update.txid.is_some() {
                self.wake_key(&update.key);
            }
        }
    }
}

/// Whether an attempt met another transaction holding the key somewhere: a participant
/// refused with `locked` (phase 1 ends at the first refusal, so others may not have
/// voted; a refusal of another kind, a DEL's `not_found` say, may not hold once the
/// other transaction ends, so the next attempt asks again).
fn collided(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Committed => false,
        Outcome::Aborted { refusals, .. } => refusals
            .iter()
            .any(|(_, code, _)| *code == ErrorCode::Locked),
    }
}
