//! PUT and DEL: two-phase commit to the key's two replicas, one transaction per key at a
//! time, with later updates of the key queued behind it.

use std::collections::VecDeque;

use crate::proto::{ClientResponse, ErrorCode, ErrorReply, ParticipantRequest, TxId, TxOp};
use crate::ring::ServerId;
use crate::ReplyTo;

use super::{Coordinator, Timer};

/// What the coordinator tracks per key while anything is under way on it.
#[derive(Clone, Debug, Default)]
pub(super) struct KeyState {
    /// The transaction under way (phase 1 or 2).
    pub(super) active: Option<TxId>,
    /// Updates waiting for `active` to finish.
    queue: VecDeque<QueuedUpdate>,
    /// Commits decided for the key while this state lived; reads compare it.
    pub(super) generation: u64,
    /// GETs of the key waiting for a replica.
    pub(super) reads: usize,
}

impl KeyState {
    fn is_idle(&self) -> bool {
        self.active.is_none() && self.queue.is_empty() && self.reads == 0
    }
}

#[derive(Clone, Debug)]
struct QueuedUpdate {
    id: u64,
    client: ReplyTo,
    op: TxOp,
}

/// A replica's phase-1 vote.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Vote {
    Pending,
    Ready,
    Refused(ErrorCode, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Voting,
    /// The decision is made and answered; phase 2 runs until both replicas acknowledge.
    Deciding {
        commit: bool,
        acked: [bool; 2],
    },
}

/// A transaction under way.
#[derive(Clone, Debug)]
pub(super) struct Tx {
    key: String,
    pub(super) op: TxOp,
    client: ReplyTo,
    replicas: [ServerId; 2],
    votes: [Vote; 2],
    phase: Phase,
    /// The wait before the next resend.
    retry_ms: u64,
    /// Which retry timer is current: each phase starts a new round.
    retry_round: u32,
}

impl Tx {
    /// `Some(commit)` once decided.
    pub(super) fn committed(&self) -> Option<bool> {
        match self.phase {
            Phase::Voting => None,
            Phase::Deciding { commit, .. } => Some(commit),
        }
    }

    fn slot(&self, server: ServerId) -> Option<usize> {
        self.replicas.iter().position(|&s| s == server)
    }
}

impl Coordinator {
    pub(super) fn on_update(&mut self, client: ReplyTo, key: String, op: TxOp) {
        if self.txs.len() + self.queued_updates >= self.config.max_updates {
            self.reply(client, ClientResponse::error(ErrorCode::Overloaded));
            return;
        }
        let state = self.keys.entry(key.clone()).or_default();
        if state.active.is_none() {
            self.start(key, client, op);
            return;
        }
        // A queued update waits at most one timeout for its turn: if the update ahead of
        // it cannot finish (a replica is down), it is answered within the timeout.
        let deadline = self.now + self.config.timeout_ms;
        if state.queue.len() >= self.config.max_queued_per_key {
            self.reply(client, ClientResponse::error(ErrorCode::Overloaded));
            return;
        }
        let id = self.next_update;
        self.next_update += 1;
        state.queue.push_back(QueuedUpdate { id, client, op });
        self.queued_updates += 1;
        self.set_timer(deadline, Timer::QueuedDeadline { key, update: id });
    }

    /// Starts phase 1, which has one timeout to collect both votes.
    fn start(&mut self, key: String, client: ReplyTo, op: TxOp) {
        let Some(pair) = self.ring.replicas_for_key(&key) else {
            self.reply(client, ClientResponse::error(ErrorCode::Unavailable));
            self.forget_key_if_idle(&key);
            return;
        };
        let txid = self.next_txid;
        self.next_txid += 1;
        let state = self.keys.entry(key.clone()).or_default();
        assert!(state.active.is_none(), "two transactions on {key:?}");
        state.active = Some(txid);
        let tx = Tx {
            key,
            op,
            client,
            replicas: [pair.primary, pair.secondary],
            votes: [Vote::Pending, Vote::Pending],
            phase: Phase::Voting,
            retry_ms: self.config.retry_min_ms,
            retry_round: 0,
        };
        self.txs.insert(txid, tx);
        for server in [pair.primary, pair.secondary] {
            self.send_prepare(txid, server);
        }
        let deadline = self.now + self.config.timeout_ms;
        self.set_timer(deadline, Timer::Phase1Deadline(txid));
        self.restart_retries(txid);
    }

    fn send_prepare(&mut self, txid: TxId, server: ServerId) {
        let Some(tx) = self.txs.get(&txid) else {
            return;
        };
        let msg = ParticipantRequest::Prepare {
            txid,
            key: tx.key.clone(),
            op: tx.op.clone(),
        };
        self.send(server, None, msg);
    }

    fn send_decision(&mut self, txid: TxId, server: ServerId, commit: bool) {
        let msg = if commit {
            ParticipantRequest::Commit { txid }
        } else {
            ParticipantRequest::Abort { txid }
        };
        self.send(server, None, msg);
    }

    pub(super) fn on_vote(
        &mut self,
        server: ServerId,
        txid: TxId,
        refusal: Option<(ErrorCode, String)>,
    ) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            // A vote for a transaction already finished: a late or repeated prepare. If it
            // was a vote to commit, make sure the replica does not keep its key locked.
            if refusal.is_none() {
                self.abort_orphan(txid, server);
            }
            return;
        };
        let Some(slot) = tx.slot(server) else {
            return;
        };
        if tx.phase != Phase::Voting {
            return;
        }
        tx.votes[slot] = match refusal {
            None => Vote::Ready,
            Some((code, message)) => Vote::Refused(code, message),
        };
        if tx.votes.iter().all(|v| *v != Vote::Pending) {
            self.decide(txid);
        }
    }

    pub(super) fn on_phase1_deadline(&mut self, txid: TxId) {
        if self
            .txs
            .get(&txid)
            .is_some_and(|tx| tx.phase == Phase::Voting)
        {
            self.decide(txid);
        }
    }

    /// Ends phase 1: commit only if both voted ready; answer the client; start phase 2.
    fn decide(&mut self, txid: TxId) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            return;
        };
        let commit = tx.votes.iter().all(|v| *v == Vote::Ready);
        let answer = if commit {
            ClientResponse::Success
        } else {
            abort_answer(&tx.replicas, &tx.votes)
        };
        // A replica that refused holds nothing to abort.
        let acked = [0, 1].map(|i| matches!(tx.votes[i], Vote::Refused(..)));
        tx.phase = Phase::Deciding { commit, acked };
        let client = tx.client;
        let replicas = tx.replicas;
        if commit {
            let key = tx.key.clone();
            match &tx.op {
                TxOp::Put { value } => self.cache.put(&key, value.clone()),
                TxOp::Del => {
                    self.cache.remove(&key);
                }
            }
            if let Some(state) = self.keys.get_mut(&key) {
                state.generation += 1;
            }
        }
        self.reply(client, answer);
        for (i, server) in replicas.into_iter().enumerate() {
            if !acked[i] {
                self.send_decision(txid, server, commit);
            }
        }
        self.restart_retries(txid);
        self.finish_if_acked(txid);
    }

    pub(super) fn on_ack(&mut self, server: ServerId, txid: TxId) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            self.orphans.remove(&(txid, server));
            return;
        };
        let Some(slot) = tx.slot(server) else {
            return;
        };
        if let Phase::Deciding { acked, .. } = &mut tx.phase {
            acked[slot] = true;
        }
        self.finish_if_acked(txid);
    }

    /// Starts a new round of resends with the shortest wait, replacing the current one.
    fn restart_retries(&mut self, txid: TxId) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            return;
        };
        tx.retry_round += 1;
        tx.retry_ms = self.config.retry_min_ms;
        let round = tx.retry_round;
        let at = self.now + self.config.retry_min_ms;
        self.set_timer(at, Timer::Retry { txid, round });
    }

    /// Sends again what a transaction still waits for, with doubling waits.
    pub(super) fn on_retry(&mut self, txid: TxId, round: u32) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            return;
        };
        if tx.retry_round != round {
            return;
        }
        tx.retry_ms = (tx.retry_ms * 2).min(self.config.retry_max_ms);
        let at = self.now + tx.retry_ms;
        self.set_timer(at, Timer::Retry { txid, round });
        self.resend(txid, None);
    }

    /// Sends again what a transaction waits for from `only` (or from any replica).
    fn resend(&mut self, txid: TxId, only: Option<ServerId>) {
        let Some(tx) = self.txs.get(&txid) else {
            return;
        };
        let wanted = |server: ServerId| only.is_none_or(|o| o == server);
        let mut prepares = Vec::new();
        let mut decisions = Vec::new();
        match &tx.phase {
            Phase::Voting => {
                for (i, vote) in tx.votes.iter().enumerate() {
                    if *vote == Vote::Pending && wanted(tx.replicas[i]) {
                        prepares.push(tx.replicas[i]);
                    }
                }
            }
            Phase::Deciding { commit, acked } => {
                for (i, done) in acked.iter().enumerate() {
                    if !done && wanted(tx.replicas[i]) {
                        decisions.push((tx.replicas[i], *commit));
                    }
                }
            }
        }
        for server in prepares {
            self.send_prepare(txid, server);
        }
        for (server, commit) in decisions {
            self.send_decision(txid, server, commit);
        }
    }

    /// A server registered again: everything in flight to it was lost.
    pub(super) fn resend_to(&mut self, server: ServerId) {
        let txids: Vec<TxId> = self.txs.keys().copied().collect();
        for txid in txids {
            if self
                .txs
                .get(&txid)
                .is_some_and(|tx| tx.slot(server).is_some())
            {
                self.resend(txid, Some(server));
                self.restart_retries(txid);
            }
        }
    }

    /// Ends a transaction once both replicas acknowledged its decision, and starts the
    /// next update queued on its key.
    fn finish_if_acked(&mut self, txid: TxId) {
        let done = self.txs.get(&txid).is_some_and(
            |tx| matches!(tx.phase, Phase::Deciding { acked, .. } if acked.iter().all(|a| *a)),
        );
        if !done {
            return;
        }
        let Some(tx) = self.txs.remove(&txid) else {
            return;
        };
        let key = tx.key;
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

    fn start_next_queued(&mut self, key: &str) {
        let next = self
            .keys
            .get_mut(key)
            .and_then(|state| state.queue.pop_front());
        match next {
            Some(update) => {
                self.queued_updates -= 1;
                self.start(key.to_owned(), update.client, update.op);
            }
            None => self.forget_key_if_idle(key),
        }
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

    /// Aborts a transaction that a server prepared after it ended, until acknowledged.
    /// Beyond `max_updates` such aborts, the oldest is given up (its key stays locked on
    /// that server until a later stray vote for it).
    fn abort_orphan(&mut self, txid: TxId, server: ServerId) {
        if self.orphans.contains_key(&(txid, server)) {
            return;
        }
        if self.orphans.len() >= self.config.max_updates {
            self.orphans.pop_first();
        }
        self.orphans
            .insert((txid, server), self.config.retry_min_ms);
        self.send_decision(txid, server, false);
        let at = self.now + self.config.retry_min_ms;
        self.set_timer(at, Timer::OrphanRetry { txid, server });
    }

    pub(super) fn on_orphan_retry(&mut self, txid: TxId, server: ServerId) {
        let Some(wait_ms) = self.orphans.get_mut(&(txid, server)) else {
            return;
        };
        *wait_ms = (*wait_ms * 2).min(self.config.retry_max_ms);
        let at = self.now + *wait_ms;
        self.send_decision(txid, server, false);
        self.set_timer(at, Timer::OrphanRetry { txid, server });
    }

    pub(super) fn forget_key_if_idle(&mut self, key: &str) {
        if self.keys.get(key).is_some_and(KeyState::is_idle) {
            self.keys.remove(key);
        }
    }
}

/// The client's answer when phase 1 did not end in two ready votes, by the protocol's
/// precedence: `unavailable`, then `aborted`, then `not_found`.
fn abort_answer(replicas: &[ServerId; 2], votes: &[Vote; 2]) -> ClientResponse {
    if votes.contains(&Vote::Pending) {
        return ClientResponse::Error(ErrorReply::with_message(
            ErrorCode::Unavailable,
            "Unavailable: a replica did not answer in time; nothing was changed",
        ));
    }
    let only_not_found = votes
        .iter()
        .all(|v| matches!(v, Vote::Refused(ErrorCode::NotFound, _) | Vote::Ready));
    if only_not_found {
        return ClientResponse::error(ErrorCode::NotFound);
    }
    let refusals: Vec<String> = replicas
        .iter()
        .zip(votes)
        .filter_map(|(server, vote)| match vote {
            Vote::Refused(_, message) => Some(format!("@{server}:={message}")),
            _ => None,
        })
        .collect();
    {
        ClientResponse::Error(ErrorReply::with_message(
            ErrorCode::Aborted,
            refusals.join("\n"),
        ))
    }
}
