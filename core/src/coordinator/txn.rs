//! PUT and DEL: two-phase commit to the key's two replicas, one transaction per key at a
//! time, with later updates of the key queued behind it. The commit protocol itself is
//! the shared [`crate::twopc::Driver`]; this module owns the per-key serialization and
//! turns the driver's events into messages, answers and cache updates.
//!
//! PUTs queued back to back on one key run as one transaction, the last one's: the
//! earlier ones are absorbed into it. They were all waiting at once, so they may take
//! effect at one instant in their queue order, each overwritten by the next at once;
//! no read can fall between them, and only the last value can ever be seen. Each
//! absorbed client hears what the transaction's own client hears, so one error leaves
//! all of them unapplied. Without this, fifty clients writing one key waited for fifty
//! transactions in turn (`redis-benchmark -t set` without `-r` does exactly that).

use std::collections::VecDeque;

use crate::buggify::FaultSite;
use crate::proto::{ClientResponse, ErrorCode, ErrorReply, ParticipantRequest, TxId, TxOp};
use crate::storage::{Durability, PersistToken, SyncUrgency};
use crate::twopc::{DriverEvent, Outcome};
use crate::ReplyTo;

use super::durable::Deferred;
use super::record::{encode_staged, CoordinatorRecord};
use super::{Coordinator, CoordinatorOutput, Timer};

/// How many replicas hold each key in strong mode: the owner and its successor.
pub(super) const REPLICAS_PER_KEY: usize = 2;

/// What the coordinator tracks per key while anything is under way on it.
#[derive(Clone, Debug, Default)]
pub(super) struct KeyState {
    /// The transaction under way (phase 1 or 2).
    pub(super) active: Option<TxId>,
    /// Updates waiting for `active` to finish.
    pub(super) queue: VecDeque<QueuedUpdate>,
    /// Commits decided for the key while this state lived; reads compare it.
    pub(super) generation: u64,
    /// GETs of the key waiting for a replica.
    pub(super) reads: usize,
}

impl KeyState {
    pub(super) fn is_idle(&self) -> bool {
        self.active.is_none() && self.queue.is_empty() && self.reads == 0
    }
}

#[derive(Clone, Debug)]
pub(super) struct QueuedUpdate {
    id: u64,
    client: ReplyTo,
    op: TxOp,
}

impl QueuedUpdate {
    pub(super) fn id(&self) -> u64 {
        self.id
    }
}

/// What a transaction updates, and who waits for the answer.
#[derive(Clone, Debug)]
pub(super) struct Update {
    pub(super) key: String,
    pub(super) op: TxOp,
    /// Who waits for the answer; nobody for a transaction recovered from the log.
    client: Option<ReplyTo>,
    /// The clients of earlier PUTs of the key absorbed into this one: answered as
    /// `client` is, at the same moment. Empty once `client` is answered.
    pub(super) absorbed: Vec<ReplyTo>,
    /// The write of its `Staged` record: `Success` waits for it (and for the votes).
    staged: PersistToken,
    /// The decision, once its record was appended, and the write that holds it. A
    /// compacted log keeps an undecided transaction staged, a committed one until its
    /// end is recorded, and nothing of an aborted one.
    pub(super) decided: Option<(bool, PersistToken)>,
    /// Whether its commit decision is durable: phase 2 runs (and its end is worth
    /// recording).
    committed: bool,
    /// Whether its commit is final (decided, and its `Staged` record durable): GETs of
    /// the key show its value from then on.
    pub(super) visible: bool,
    /// Staged before a restart and not decided: phase 1 runs again, with no deadline.
    /// Its client may have heard `Success`, so GETs of the key cannot show the old value
    /// meanwhile, nor the new one.
    pub(super) resolving: bool,
}

impl Update {
    /// A commit found in the log at recovery.
    pub(super) fn recovered(key: String, op: TxOp) -> Self {
        let durable = Durability::<Deferred>::recovered_token();
        Self {
            key,
            op,
            client: None,
            absorbed: Vec::new(),
            staged: durable,
            decided: Some((true, durable)),
            committed: true,
            visible: true,
            resolving: false,
        }
    }

    /// What the flags must say of each other, in every phase.
    pub(super) fn check_invariants(&self, txid: TxId) {
        let commit = matches!(self.decided, Some((true, _)));
        assert!(!self.visible || commit, "{txid} shown without a commit");
        assert!(
            !self.committed || self.visible,
            "{txid} in phase 2 before final"
        );
        assert!(
            !self.resolving || (self.client.is_none() && self.decided.is_none()),
            "{txid} resolving with a client or a decision"
        );
        assert!(
            self.absorbed.is_empty() || self.client.is_some(),
            "{txid} holds absorbed clients after its own was answered"
        );
        assert!(
            self.absorbed.is_empty() || matches!(self.op, TxOp::Put { .. }),
            "{txid} absorbed updates into a DEL"
        );
        assert!(
            self.decided.is_none() || self.client.is_none() || (commit && !self.visible),
            "{txid} decided with its client still unanswered"
        );
    }

    /// A transaction found staged and undecided in the log at recovery.
    pub(super) fn resolving(key: String, op: TxOp) -> Self {
        Self {
            key,
            op,
            client: None,
            absorbed: Vec::new(),
            staged: Durability::<Deferred>::recovered_token(),
            decided: None,
            committed: false,
            visible: false,
            resolving: true,
        }
    }
}

impl Coordinator {
    pub(super) fn on_update(&mut self, client: ReplyTo, key: String, op: TxOp) {
        // An abort's answer waits for its record after the transaction ended: it holds
        // a place too, which bounds what waits for the log.
        let busy =
            self.driver.len() + self.queued_updates + self.absorbed_waiting + self.answers_waiting;
        let full = busy >= self.config.max_updates;
        if full || self.buggify.fires(self.now, FaultSite::SpuriousOverloaded) {
            self.reply(client, ClientResponse::error(ErrorCode::Overloaded));
            return;
        }
        let state = self.keys.entry(key.clone()).or_default();
        if state.active.is_none() {
            self.start(key, client, op);
            return;
        }
        if state.queue.len() >= self.config.max_queued_per_key {
            self.reply(client, ClientResponse::error(ErrorCode::Overloaded));
            return;
        }
        let id = self.next_update;
        self.next_update += 1;
        let first_waiter = state.queue.is_empty();
        let active = state.active;
        state.queue.push_back(QueuedUpdate { id, client, op });
        self.queued_updates += 1;
        if let Some(txid) = active.filter(|_| first_waiter) {
            self.hasten_phase_two(txid);
        }
        // A queued update waits at most one timeout for its turn: if the update ahead of
        // it cannot finish (a replica is down), it is answered within the timeout.
        let deadline = self.now.saturating_add(self.config.timeout_ms);
        self.timers.set(Timer::Queued { key, update: id }, deadline);
    }

    /// An update now waits for committed `txid` to end: its decision is sent again at
    /// once, which tells each replica still to acknowledge that someone waits (a
    /// replica syncs a decision record lazily otherwise; docs/architecture.md). If the
    /// coordinator's own decision record is still lingering, it is synced at once.
    fn hasten_phase_two(&mut self, txid: TxId) {
        let Some(update) = self.driver.payload(txid) else {
            return;
        };
        match update.decided {
            _ if update.committed => {
                self.driver.resend_now(self.now, txid);
                self.drain_driver();
            }
            Some((true, token)) => {
                self.outputs.push_back(CoordinatorOutput::Hasten { token });
            }
            _ => {}
        }
    }

    /// Starts phase 1, which has one timeout to collect both votes.
    fn start(&mut self, key: String, client: ReplyTo, op: TxOp) {
        self.start_absorbing(key, client, op, Vec::new());
    }

    /// Starts phase 1 of an update that `absorbed` (the clients of earlier PUTs of the
    /// key, counted in `absorbed_waiting`) wait for too.
    fn start_absorbing(&mut self, key: String, client: ReplyTo, op: TxOp, absorbed: Vec<ReplyTo>) {
        let replicas = self.ring.preference_list(&key, REPLICAS_PER_KEY);
        if replicas.len() < REPLICAS_PER_KEY {
            let answer = ClientResponse::error(ErrorCode::Unavailable);
            self.reply_all(client, absorbed, &answer);
            self.forget_key_if_idle(&key);
            return;
        }
        let Some(txid) = self.next_txid() else {
            let message = "Unavailable: the coordinator is starting; nothing was changed";
            let answer =
                ClientResponse::Error(ErrorReply::with_message(ErrorCode::Unavailable, message));
            self.reply_all(client, absorbed, &answer);
            self.forget_key_if_idle(&key);
            return;
        };
        let Some(state) = self.keys.get_mut(&key) else {
            panic!("update of {key:?} started without its key's state");
        };
        assert!(state.active.is_none(), "two transactions on {key:?}");
        state.active = Some(txid);
        // Parallel commit: the record goes to the log as the prepares go out, so that
        // its sync and theirs overlap.
        let staged = self.append_bytes(encode_staged(txid, &key, &op, &replicas), SyncUrgency::Now);
        let update = Update {
            key,
            op,
            client: Some(client),
            absorbed,
            staged,
            decided: None,
            committed: false,
            visible: false,
            resolving: false,
        };
        self.driver.begin(self.now, txid, replicas, update);
        self.drain_driver();
    }

    /// Carries out what the two-phase-commit driver asks for.
    pub(super) fn drain_driver(&mut self) {
        while let Some(event) = self.driver.poll_event() {
            match event {
                DriverEvent::SendPrepare { to, txid } => {
                    let Some(update) = self.driver.payload(txid) else {
                        continue;
                    };
                    let msg = ParticipantRequest::Prepare {
                        txid,
                        key: update.key.clone(),
                        op: update.op.clone(),
                    };
                    self.send(to, None, msg);
                }
                DriverEvent::SendDecision { to, txid, commit } => {
                    let msg = if commit {
                        ParticipantRequest::Commit { txid }
                    } else {
                        ParticipantRequest::Abort { txid }
                    };
                    self.send(to, None, msg);
                }
                DriverEvent::Decided { txid, outcome } => self.on_decided(txid, &outcome),
                DriverEvent::Finished { txid, payload } => self.on_finished(txid, payload),
            }
        }
    }

    /// Phase 1 ended: the decision goes to the log. A commit is answered once the
    /// transaction's `Staged` record is durable too, and its phase 2 starts once the
    /// decision is; an abort is answered once its record is durable, so that recovery
    /// never commits what a client heard fail.
    fn on_decided(&mut self, txid: TxId, outcome: &Outcome) {
        let commit = outcome.is_commit();
        let token = self.append(&CoordinatorRecord::Decided { txid, commit });
        let Some(update) = self.driver.payload_mut(txid) else {
            panic!("decided transaction {txid} has no update");
        };
        assert!(update.decided.is_none(), "transaction {txid} decided twice");
        update.decided = Some((commit, token));
        update.resolving = false;
        let staged = update.staged;
        if commit {
            // An update that queued during phase 1 waits for this phase 2 already.
            if self
                .keys
                .get(&update.key)
                .is_some_and(|state| !state.queue.is_empty())
            {
                self.outputs.push_back(CoordinatorOutput::Hasten { token });
            }
            self.defer(staged, Deferred::Visible(txid));
            self.defer(token, Deferred::Committed(txid));
            return;
        }
        let absorbed = std::mem::take(&mut update.absorbed);
        if let Some(client) = update.client.take() {
            let answer = outcome.client_answer();
            self.absorbed_waiting -= absorbed.len();
            for waiting in absorbed.into_iter().chain([client]) {
                self.answers_waiting += 1;
                self.defer(token, Deferred::Answer(waiting, answer.clone()));
            }
        }
    }

    /// The commit of `txid` is decided and its `Staged` record durable: it is final.
    /// Update the cache and answer. Until now GETs of the key read the old value, which
    /// every replica still holds.
    pub(super) fn on_commit_visible(&mut self, txid: TxId) {
        let Some(update) = self.driver.payload_mut(txid) else {
            panic!("committed transaction {txid} has no update");
        };
        assert!(
            matches!(update.decided, Some((true, _))),
            "transaction {txid} shown before its commit"
        );
        update.visible = true;
        let client = update.client.take();
        let absorbed = std::mem::take(&mut update.absorbed);
        match &update.op {
            TxOp::Put { value } => self.cache.put(&update.key, value.clone()),
            TxOp::Del => {
                self.cache.remove(&update.key);
            }
        }
        if let Some(state) = self.keys.get_mut(&update.key) {
            state.generation += 1;
        }
        if let Some(client) = client {
            self.reply_all(client, absorbed, &ClientResponse::Success);
        }
    }

    /// Gives `answer` to an update's client and to the clients absorbed into it.
    fn reply_all(&mut self, client: ReplyTo, absorbed: Vec<ReplyTo>, answer: &ClientResponse) {
        self.absorbed_waiting -= absorbed.len();
        for waiting in absorbed {
            self.reply(waiting, answer.clone());
        }
        self.reply(client, answer.clone());
    }

    /// The commit decision of `txid` is durable: phase 2 starts.
    pub(super) fn on_commit_durable(&mut self, txid: TxId) {
        let Some(update) = self.driver.payload_mut(txid) else {
            panic!("committed transaction {txid} has no update");
        };
        assert!(
            update.visible,
            "phase 2 of {txid} before its commit was final"
        );
        update.committed = true;
        // An update that queued while the decision was on its way to the disk waits for
        // this phase 2: the decision goes a second time at once, which is how a replica
        // learns to sync its decision record without lingering.
        let waited_for = self
            .keys
            .get(&update.key)
            .is_some_and(|state| !state.queue.is_empty());
        self.driver.handle_commit_durable(self.now, txid);
        if waited_for {
            self.driver.resend_now(self.now, txid);
        }
        self.drain_driver();
    }

    /// Both replicas acknowledged the decision: the key is free for its next update.
    fn on_finished(&mut self, txid: TxId, update: Update) {
        if update.committed {
            // Never waited for (nothing may be deferred on it): a lost record only makes
            // recovery send the commit again.
            let _ = self.append(&CoordinatorRecord::Finished { txid });
        }
        let key = update.key;
        if let Some(state) = self.keys.get_mut(&key) {
            assert_eq!(
                state.active,
                Some(txid),
                "key {key:?} ran another transaction"
            );
            state.active = None;
        }
        self.start_next_queued(&key);
    }

    /// Starts the key's next queued update, absorbing into it the PUTs queued right
    /// behind it if it is a PUT (see the module's comment).
    fn start_next_queued(&mut self, key: &str) {
        let Some(mut next) = self.dequeue(key) else {
            self.forget_key_if_idle(key);
            return;
        };
        let mut absorbed = Vec::new();
        while matches!(next.op, TxOp::Put { .. }) && self.next_queued_is_put(key) {
            let Some(later) = self.dequeue(key) else {
                break;
            };
            absorbed.push(next.client);
            next = later;
        }
        self.absorbed_waiting += absorbed.len();
        self.absorbed_total += absorbed.len() as u64;
        self.start_absorbing(key.to_owned(), next.client, next.op, absorbed);
    }

    /// Whether the key's next queued update is a PUT.
    fn next_queued_is_put(&self, key: &str) -> bool {
        let front = self.keys.get(key).and_then(|state| state.queue.front());
        front.is_some_and(|update| matches!(update.op, TxOp::Put { .. }))
    }

    /// Takes the key's next queued update off its queue and its timer.
    fn dequeue(&mut self, key: &str) -> Option<QueuedUpdate> {
        let update = self.keys.get_mut(key)?.queue.pop_front()?;
        self.queued_updates -= 1;
        self.timers.cancel(&Timer::Queued {
            key: key.to_owned(),
            update: update.id,
        });
        Some(update)
    }

    pub(super) fn on_queued_deadline(&mut self, key: &str, update: u64) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        let Some(at) = state.queue.iter().position(|u| u.id == update) else {
            return;
        };
        let Some(expired) = state.queue.remove(at) else {
            return;
        };
        self.queued_updates -= 1;
        self.reply(
            expired.client,
            ClientResponse::Error(ErrorReply::with_message(
                ErrorCode::Unavailable,
                "Unavailable: an earlier update of the key did not finish in time",
            )),
        );
        self.forget_key_if_idle(key);
    }

    pub(super) fn forget_key_if_idle(&mut self, key: &str) {
        if self.keys.get(key).is_some_and(KeyState::is_idle) {
            self.keys.remove(key);
        }
    }
}
