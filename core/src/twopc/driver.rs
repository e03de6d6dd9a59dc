//! The driver's side of two-phase commit: transactions over any number of participants.
//!
//! For each transaction it sends the prepare to every participant, tallies the votes,
//! decides when every vote is in or the phase-1 deadline passes (commit only on every
//! vote ready), then sends the decision until every participant that may hold the
//! prepare acknowledged it. Messages still unanswered are resent with growing, jittered
//! waits. A `ready` vote for a transaction that no longer exists (a late or duplicated
//! prepare) is answered with an abort, resent until acknowledged, so that no participant
//! keeps a key locked for a transaction nobody will decide.
//!
//! The driver names what to send and what was decided ([`DriverEvent`]); the role that
//! embeds it builds the messages and answers the clients.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::buggify::{Buggify, FaultSite};
use crate::proto::TxId;
use crate::rng::DetRng;
use crate::time::{Attempts, Backoff, Timers};
use crate::Ts;

use super::{NodeId, Outcome, Vote, VoteTally};

/// The driver's settings and limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// How long phase 1 may take before the transaction aborts.
    pub phase1_timeout_ms: u64,
    /// How unanswered messages are resent.
    pub resend: Backoff,
    /// Transactions under way at once (the role answers `overloaded` beyond).
    pub max_transactions: usize,
    /// Aborts of stray `ready` votes being resent; beyond this the oldest is given up.
    pub max_stray_aborts: usize,
    /// The seed of the resend jitter.
    pub seed: u64,
    /// Whether a commit decision waits for the role to make it durable
    /// ([`Driver::handle_commit_durable`]) before phase 2 (presumed abort: only commits
    /// are forced, so that a restarted role can finish them and abort the rest).
    pub force_commit: bool,
    /// Whether phase 1 ends at the first refusal instead of waiting for every vote: the
    /// outcome is abort either way, and rolling back at once frees the keys the other
    /// participants locked sooner (peer nodes, whose coordinators collide and retry).
    /// The participants that had not voted are counted missing.
    pub decide_on_refusal: bool,
}

/// What the driver asks the role to do or tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum DriverEvent<P> {
    /// Send the prepare of `txid` to `to`.
    SendPrepare {
        /// The participant.
        to: NodeId,
        /// The transaction.
        txid: TxId,
    },
    /// Send the decision of `txid` to `to`.
    SendDecision {
        /// The participant.
        to: NodeId,
        /// The transaction.
        txid: TxId,
        /// Commit or abort.
        commit: bool,
    },
    /// Phase 1 ended. With `force_commit`, a commit is not final until the role made it
    /// durable and called [`Driver::handle_commit_durable`]; an abort always is. The
    /// transaction's payload is still available.
    Decided {
        /// The transaction.
        txid: TxId,
        /// How it ended.
        outcome: Outcome,
    },
    /// Every participant acknowledged the decision: the transaction is gone.
    Finished {
        /// The transaction.
        txid: TxId,
        /// What the role gave at the start.
        payload: P,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Voting,
    /// Decided to commit; phase 2 waits until the role made the decision durable.
    Forcing,
    /// Decided; these participants have not acknowledged the decision yet.
    Deciding {
        commit: bool,
        unacked: BTreeSet<NodeId>,
    },
    /// Finished; removed when the role takes its `Finished` event.
    Done,
}

impl Phase {
    /// Whether the transaction has messages to send (and so a resend timer).
    fn sends(&self) -> bool {
        matches!(self, Phase::Voting | Phase::Deciding { .. })
    }
}

#[derive(Clone, Debug)]
struct Transaction<P> {
    payload: P,
    tally: VoteTally,
    phase: Phase,
    attempts: Attempts,
    /// Whether phase 1 ends at a deadline (every transaction but one resumed voting).
    deadline: bool,
}

/// Why the driver waits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DriverTimer {
    /// Phase 1 of a transaction must be decided by now.
    Phase1(TxId),
    /// Send a transaction's unanswered messages again.
    Resend(TxId),
    /// Send the abort of a stray vote again.
    StrayAbort(TxId, NodeId),
    /// An aborted transaction stops waiting for acknowledgements (a dead participant
    /// must not hold its slot and its key): the aborts left go on as stray aborts.
    ReleaseAbort(TxId),
}

/// Internal events; `Finished` takes the payload out when the role polls it.
#[derive(Clone, Debug)]
enum Pending {
    Prepare(NodeId, TxId),
    Decision(NodeId, TxId, bool),
    Decided(TxId, Outcome),
    Finished(TxId),
}

/// Every transaction a role drives.
pub struct Driver<P> {
    config: DriverConfig,
    now: Ts,
    txs: BTreeMap<TxId, Transaction<P>>,
    strays: BTreeMap<(TxId, NodeId), Attempts>,
    timers: Timers<DriverTimer>,
    events: VecDeque<Pending>,
    rng: DetRng,
    buggify: Buggify,
}

impl<P> Driver<P> {
    /// A driver with no transaction.
    pub fn new(config: DriverConfig, buggify: Buggify) -> Self {
        assert!(config.resend.is_valid(), "driver resend backoff");
        assert!(config.phase1_timeout_ms > 0, "driver phase-1 timeout");
        assert!(config.max_transactions > 0 && config.max_stray_aborts > 0);
        Self {
            rng: DetRng::new(config.seed),
            config,
            now: 0,
            txs: BTreeMap::new(),
            strays: BTreeMap::new(),
            timers: Timers::new(),
            events: VecDeque::new(),
            buggify,
        }
    }

    /// Whether another transaction may begin.
    pub fn has_room(&self) -> bool {
        self.txs.len() < self.config.max_transactions
    }

    /// Starts `txid` over `participants`: prepares go out, phase 1 has one timeout.
    pub fn begin(&mut self, now: Ts, txid: TxId, participants: Vec<NodeId>, payload: P) {
        self.start_voting(now, txid, participants, payload, true);
    }

    /// Recovery: `txid` began before the role restarted and was not decided, but its
    /// client may have been told it committed (parallel commit answers once every vote
    /// is in and the role's record of the transaction is durable). Phase 1 runs again
    /// with no deadline: a participant that cannot answer now may hold one of the
    /// `ready` votes that answer was given on, so only every vote decides. A repeated
    /// prepare is answered with the vote already given.
    pub fn resume_voting(&mut self, now: Ts, txid: TxId, participants: Vec<NodeId>, payload: P) {
        self.start_voting(now, txid, participants, payload, false);
    }

    fn start_voting(
        &mut self,
        now: Ts,
        txid: TxId,
        participants: Vec<NodeId>,
        payload: P,
        deadline: bool,
    ) {
        self.advance(now);
        assert!(self.has_room(), "transaction begun beyond the limit");
        assert!(
            !self.txs.contains_key(&txid),
            "transaction {txid} begun twice"
        );
        let tally = VoteTally::new(participants);
        for &node in tally.participants() {
            self.events.push_back(Pending::Prepare(node, txid));
        }
        let tx = Transaction {
            payload,
            tally,
            phase: Phase::Voting,
            attempts: self.config.resend.begin(),
            deadline,
        };
        self.txs.insert(txid, tx);
        if deadline {
            let at = now.saturating_add(self.config.phase1_timeout_ms);
            self.timers.set(DriverTimer::Phase1(txid), at);
        }
        self.restart_resends(txid);
    }

    /// A participant voted.
    pub fn handle_vote(&mut self, now: Ts, from: NodeId, txid: TxId, vote: Vote) {
        self.advance(now);
        let Some(tx) = self.txs.get_mut(&txid) else {
            if vote == Vote::Ready {
                self.abort_stray(txid, from);
            }
            return;
        };
        let ready = vote == Vote::Ready;
        match &mut tx.phase {
            Phase::Voting => {
                // A resumed transaction refused by one participant cannot have been
                // answered `Success`: its abort need not wait for the others.
                let refused = matches!(vote, Vote::Refuse(..))
                    && (self.config.decide_on_refusal || !tx.deadline);
                let counted = tx.tally.record(from, vote);
                if counted && (tx.tally.complete() || refused) {
                    self.decide(txid);
                }
            }
            // A participant counted as holding nothing (it refused, or acknowledged an
            // abort it did not know) prepared after all: it must hear the abort too.
            Phase::Deciding {
                commit: false,
                unacked,
            } => {
                if ready && tx.tally.includes(from) && unacked.insert(from) {
                    self.events.push_back(Pending::Decision(from, txid, false));
                }
            }
            Phase::Forcing | Phase::Deciding { commit: true, .. } => {}
            Phase::Done => {
                if ready {
                    self.abort_stray(txid, from);
                }
            }
        }
    }

    /// A participant acknowledged a decision.
    pub fn handle_ack(&mut self, now: Ts, from: NodeId, txid: TxId) {
        self.advance(now);
        let Some(tx) = self.txs.get_mut(&txid) else {
            if self.strays.remove(&(txid, from)).is_some() {
                self.timers.cancel(&DriverTimer::StrayAbort(txid, from));
            }
            return;
        };
        if let Phase::Deciding { unacked, .. } = &mut tx.phase {
            if unacked.remove(&from) && unacked.is_empty() {
                self.finish(txid);
            }
        }
    }

    /// Fires every timer due by `now`.
    pub fn handle_timeouts(&mut self, now: Ts) {
        self.advance(now);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                DriverTimer::Phase1(txid) => self.decide(txid),
                DriverTimer::Resend(txid) => self.on_resend(txid),
                DriverTimer::StrayAbort(txid, node) => self.on_stray_abort(txid, node),
                DriverTimer::ReleaseAbort(txid) => self.release_abort(txid),
            }
        }
    }

    /// `node` lost what was in flight to it (it restarted): send it again now.
    pub fn resend_to(&mut self, now: Ts, node: NodeId) {
        self.advance(now);
        let txids: Vec<TxId> = self
            .txs
            .iter()
            .filter(|(_, tx)| tx.tally.includes(node) && tx.phase.sends())
            .map(|(&txid, _)| txid)
            .collect();
        for txid in txids {
            self.resend(txid, Some(node));
            self.restart_resends(txid);
        }
        let strays: Vec<TxId> = self
            .strays
            .keys()
            .filter(|(_, n)| *n == node)
            .map(|(txid, _)| *txid)
            .collect();
        for txid in strays {
            self.strays.insert((txid, node), self.config.resend.begin());
            self.on_stray_abort(txid, node);
        }
    }

    /// Someone waits for `txid` to end (a new update of its key): what it still waits
    /// for is sent now, and its resends start again from the shortest wait.
    pub fn resend_now(&mut self, now: Ts, txid: TxId) {
        self.advance(now);
        if self.txs.get(&txid).is_some_and(|tx| tx.phase.sends()) {
            self.resend(txid, None);
            self.restart_resends(txid);
        }
    }

    /// `node` holds `txid` prepared, which this driver does not run: abort it there until
    /// acknowledged (the transaction ended here, or was never decided before a restart).
    pub fn abort_unknown(&mut self, now: Ts, txid: TxId, node: NodeId) {
        self.advance(now);
        if !self.txs.contains_key(&txid) {
            self.abort_stray(txid, node);
        }
    }

    /// The next thing to do or to know.
    pub fn poll_event(&mut self) -> Option<DriverEvent<P>> {
        let event = self.events.pop_front()?;
        Some(match event {
            Pending::Prepare(to, txid) => DriverEvent::SendPrepare { to, txid },
            Pending::Decision(to, txid, commit) => DriverEvent::SendDecision { to, txid, commit },
            Pending::Decided(txid, outcome) => DriverEvent::Decided { txid, outcome },
            Pending::Finished(txid) => {
                let Some(tx) = self.txs.remove(&txid) else {
                    panic!("finished transaction {txid} is gone");
                };
                assert_eq!(tx.phase, Phase::Done, "transaction {txid} finished early");
                DriverEvent::Finished {
                    txid,
                    payload: tx.payload,
                }
            }
        })
    }

    /// When the next timer fires.
    pub fn poll_timeout(&self) -> Option<Ts> {
        self.timers.next_deadline()
    }

    /// The payload `txid` was begun with, while it is under way.
    pub fn payload(&self, txid: TxId) -> Option<&P> {
        self.txs.get(&txid).map(|tx| &tx.payload)
    }

    /// The payload of `txid`, to change while it is under way.
    pub fn payload_mut(&mut self, txid: TxId) -> Option<&mut P> {
        self.txs.get_mut(&txid).map(|tx| &mut tx.payload)
    }

    /// The participants of `txid`, in the order they were given.
    pub fn participants(&self, txid: TxId) -> Option<&[NodeId]> {
        self.txs.get(&txid).map(|tx| tx.tally.participants())
    }

    /// `Some(commit)` once `txid` is decided.
    pub fn decision(&self, txid: TxId) -> Option<bool> {
        match self.txs.get(&txid)?.phase {
            Phase::Voting | Phase::Forcing => None,
            Phase::Deciding { commit, .. } => Some(commit),
            Phase::Done => None,
        }
    }

    /// The role made the commit of `txid` durable: phase 2 starts.
    pub fn handle_commit_durable(&mut self, now: Ts, txid: TxId) {
        self.advance(now);
        let Some(tx) = self.txs.get_mut(&txid) else {
            panic!("commit of transaction {txid} made durable, but it is gone");
        };
        assert_eq!(
            tx.phase,
            Phase::Forcing,
            "transaction {txid} was not forcing"
        );
        self.start_commit(txid);
    }

    /// Recovery: `txid` was committed before the role restarted; phase 2 runs again to
    /// every participant. No `Decided` event follows: nobody waits for the answer.
    pub fn resume_commit(&mut self, now: Ts, txid: TxId, participants: Vec<NodeId>, payload: P) {
        self.advance(now);
        assert!(self.has_room(), "transaction resumed beyond the limit");
        assert!(
            !self.txs.contains_key(&txid),
            "transaction {txid} resumed twice"
        );
        let mut tally = VoteTally::new(participants);
        for node in tally.participants().to_vec() {
            tally.record(node, Vote::Ready);
        }
        let tx = Transaction {
            payload,
            tally,
            phase: Phase::Forcing,
            attempts: self.config.resend.begin(),
            deadline: false,
        };
        self.txs.insert(txid, tx);
        self.start_commit(txid);
    }

    fn start_commit(&mut self, txid: TxId) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            return;
        };
        let unacked: BTreeSet<NodeId> = tx.tally.participants().iter().copied().collect();
        for node in &unacked {
            self.events.push_back(Pending::Decision(*node, txid, true));
        }
        tx.phase = Phase::Deciding {
            commit: true,
            unacked,
        };
        self.restart_resends(txid);
    }

    /// Transactions under way.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether no transaction is under way.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Transactions under way plus stray aborts not yet acknowledged.
    pub fn open(&self) -> usize {
        self.txs.len() + self.strays.len()
    }

    fn advance(&mut self, now: Ts) {
        assert!(now >= self.now, "time went backwards: {now} < {}", self.now);
        self.now = now;
    }

    /// Ends phase 1 of `txid` if it is still voting.
    fn decide(&mut self, txid: TxId) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            return;
        };
        if tx.phase != Phase::Voting {
            return;
        }
        let outcome = Outcome::of(&tx.tally);
        let commit = outcome.is_commit();
        if commit && self.config.force_commit {
            tx.phase = Phase::Forcing;
            self.timers.cancel(&DriverTimer::Phase1(txid));
            self.timers.cancel(&DriverTimer::Resend(txid));
            self.events.push_back(Pending::Decided(txid, outcome));
            return;
        }
        // A participant that refused holds nothing to abort.
        let unacked: BTreeSet<NodeId> = tx
            .tally
            .participants()
            .iter()
            .copied()
            .filter(|&n| !matches!(tx.tally.vote(n), Some(Vote::Refuse(..))))
            .collect();
        tx.phase = Phase::Deciding {
            commit,
            unacked: unacked.clone(),
        };
        self.timers.cancel(&DriverTimer::Phase1(txid));
        self.events.push_back(Pending::Decided(txid, outcome));
        for node in &unacked {
            self.events
                .push_back(Pending::Decision(*node, txid, commit));
        }
        if unacked.is_empty() {
            self.finish(txid);
            return;
        }
        self.restart_resends(txid);
        if !commit {
            // Normally the aborts are acknowledged at once and the key moves on in order;
            // a participant that stays silent for a whole timeout gets its abort resent
            // on its own, and the transaction ends.
            let at = self.now.saturating_add(self.config.phase1_timeout_ms);
            self.timers.set(DriverTimer::ReleaseAbort(txid), at);
        }
    }

    /// Ends an aborted transaction still waiting for acknowledgements; each abort not yet
    /// acknowledged goes on as a stray abort, on the same series of waits.
    fn release_abort(&mut self, txid: TxId) {
        let Some(tx) = self.txs.get(&txid) else {
            return;
        };
        let Phase::Deciding {
            commit: false,
            unacked,
        } = &tx.phase
        else {
            return;
        };
        let unacked = unacked.clone();
        let attempts = tx.attempts;
        let resend_at = self.timers.deadline(&DriverTimer::Resend(txid));
        self.finish(txid);
        for node in unacked {
            self.make_room_for_stray();
            self.strays.insert((txid, node), attempts);
            let at = resend_at.unwrap_or(self.now);
            self.timers.set(DriverTimer::StrayAbort(txid, node), at);
        }
    }

    fn finish(&mut self, txid: TxId) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            return;
        };
        tx.phase = Phase::Done;
        self.timers.cancel(&DriverTimer::Resend(txid));
        self.timers.cancel(&DriverTimer::Phase1(txid));
        self.timers.cancel(&DriverTimer::ReleaseAbort(txid));
        self.events.push_back(Pending::Finished(txid));
    }

    /// Starts a new series of resends with the shortest wait, replacing the current one.
    fn restart_resends(&mut self, txid: TxId) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            return;
        };
        tx.attempts = self.config.resend.begin();
        self.arm_resend(txid);
    }

    fn arm_resend(&mut self, txid: TxId) {
        let Some(tx) = self.txs.get_mut(&txid) else {
            return;
        };
        let mut wait_ms = self
            .config
            .resend
            .next_wait_ms(&mut tx.attempts, &mut self.rng);
        if self.buggify.fires(self.now, FaultSite::ShortResendWait) {
            wait_ms = self.config.resend.wait_ms_min;
        }
        let at = self.now.saturating_add(wait_ms);
        self.timers.set(DriverTimer::Resend(txid), at);
    }

    fn on_resend(&mut self, txid: TxId) {
        self.resend(txid, None);
        self.arm_resend(txid);
    }

    /// Sends again what `txid` still waits for, from `only` or from every participant.
    fn resend(&mut self, txid: TxId, only: Option<NodeId>) {
        let Some(tx) = self.txs.get(&txid) else {
            return;
        };
        let wanted = |node: &NodeId| only.is_none_or(|o| o == *node);
        match &tx.phase {
            Phase::Voting => {
                for node in tx.tally.missing().into_iter().filter(wanted) {
                    self.events.push_back(Pending::Prepare(node, txid));
                }
            }
            Phase::Deciding { commit, unacked } => {
                for &node in unacked.iter().filter(|n| wanted(n)) {
                    self.events
                        .push_back(Pending::Decision(node, txid, *commit));
                }
            }
            Phase::Forcing | Phase::Done => {}
        }
    }

    /// Aborts a transaction that `node` prepared after it ended, until acknowledged.
    fn abort_stray(&mut self, txid: TxId, node: NodeId) {
        if self.strays.contains_key(&(txid, node)) {
            return;
        }
        self.make_room_for_stray();
        self.strays.insert((txid, node), self.config.resend.begin());
        self.on_stray_abort(txid, node);
    }

    /// Beyond the limit the oldest stray abort is given up: that key stays locked on its
    /// node until the node is asked which transactions it holds in doubt.
    fn make_room_for_stray(&mut self) {
        if self.strays.len() < self.config.max_stray_aborts {
            return;
        }
        if let Some(((old_txid, old_node), _)) = self.strays.pop_first() {
            self.timers
                .cancel(&DriverTimer::StrayAbort(old_txid, old_node));
        }
    }

    fn on_stray_abort(&mut self, txid: TxId, node: NodeId) {
        let Some(attempts) = self.strays.get_mut(&(txid, node)) else {
            return;
        };
        let wait_ms = self.config.resend.next_wait_ms(attempts, &mut self.rng);
        self.events.push_back(Pending::Decision(node, txid, false));
        let at = self.now.saturating_add(wait_ms);
        self.timers.set(DriverTimer::StrayAbort(txid, node), at);
    }

    /// Every transaction is in a consistent phase with the timers it needs; stray aborts
    /// and transactions within their limits.
    pub fn check_invariants(&self) {
        self.timers.check_invariants();
        assert!(
            self.txs.len() <= self.config.max_transactions,
            "txs over limit"
        );
        assert!(
            self.strays.len() <= self.config.max_stray_aborts,
            "strays over limit"
        );
        for (txid, tx) in &self.txs {
            tx.tally.check_invariants();
            let voting = tx.phase == Phase::Voting;
            let phase1 = self.timers.deadline(&DriverTimer::Phase1(*txid)).is_some();
            assert_eq!(
                voting && tx.deadline,
                phase1,
                "transaction {txid}: phase-1 timer"
            );
            let resend = self.timers.deadline(&DriverTimer::Resend(*txid)).is_some();
            assert_eq!(tx.phase.sends(), resend, "transaction {txid}: resend timer");
            if tx.phase == Phase::Forcing {
                assert!(self.config.force_commit, "forcing without force_commit");
                assert!(tx.tally.unanimous_ready(), "forcing a commit without votes");
            }
            let release = self.timers.deadline(&DriverTimer::ReleaseAbort(*txid));
            if let Phase::Deciding { commit, unacked } = &tx.phase {
                assert!(
                    !unacked.is_empty(),
                    "transaction {txid} acknowledged, not done"
                );
                assert!(unacked.iter().all(|n| tx.tally.includes(*n)));
                assert!(
                    !commit || tx.tally.unanimous_ready(),
                    "commit without votes"
                );
                assert_eq!(
                    !commit,
                    release.is_some(),
                    "transaction {txid}: release timer"
                );
            } else {
                assert!(release.is_none(), "transaction {txid}: release timer");
            }
        }
        for timer in self.timers.kinds() {
            match timer {
                DriverTimer::Phase1(txid)
                | DriverTimer::Resend(txid)
                | DriverTimer::ReleaseAbort(txid) => {
                    assert!(self.txs.contains_key(txid), "timer of a gone transaction")
                }
                DriverTimer::StrayAbort(txid, node) => {
                    assert!(self.strays.contains_key(&(*txid, *node)), "stray timer")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ErrorCode;

    fn driver() -> Driver<&'static str> {
        let config = DriverConfig {
            phase1_timeout_ms: 1000,
            resend: Backoff {
                wait_ms_min: 100,
                wait_ms_max: 400,
            },
            max_transactions: 4,
            max_stray_aborts: 2,
            seed: 1,
            force_commit: false,
            decide_on_refusal: false,
        };
        Driver::new(config, Buggify::off())
    }

    fn events(d: &mut Driver<&'static str>) -> Vec<DriverEvent<&'static str>> {
        d.check_invariants();
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    fn decision(to: NodeId, commit: bool) -> DriverEvent<&'static str> {
        DriverEvent::SendDecision {
            to,
            txid: 7,
            commit,
        }
    }

    #[test]
    fn three_participants_commit_only_when_all_are_ready() {
        let mut d = driver();
        d.begin(0, 7, vec![1, 2, 3], "put");
        let prepares = events(&mut d);
        assert_eq!(prepares.len(), 3);
        d.handle_vote(1, 1, 7, Vote::Ready);
        d.handle_vote(2, 2, 7, Vote::Ready);
        assert!(events(&mut d).is_empty());
        assert_eq!(d.decision(7), None);
        d.handle_vote(3, 3, 7, Vote::Ready);
        let got = events(&mut d);
        assert_eq!(
            got[0],
            DriverEvent::Decided {
                txid: 7,
                outcome: Outcome::Committed
            }
        );
        assert_eq!(
            &got[1..],
            &[decision(1, true), decision(2, true), decision(3, true)]
        );
        assert_eq!(d.decision(7), Some(true));
        for node in [1, 2, 3] {
            d.handle_ack(4, node, 7);
        }
        assert_eq!(
            events(&mut d),
            vec![DriverEvent::Finished {
                txid: 7,
                payload: "put"
            }]
        );
        assert!(d.is_empty() && d.poll_timeout().is_none());
    }

    #[test]
    fn a_forced_commit_waits_for_durability_and_a_resumed_one_needs_no_votes() {
        let mut d = driver();
        d.config.force_commit = true;
        d.begin(0, 7, vec![1, 2], "put");
        let _ = events(&mut d);
        d.handle_vote(1, 1, 7, Vote::Ready);
        d.handle_vote(1, 2, 7, Vote::Ready);
        let got = events(&mut d);
        assert!(matches!(got[..], [DriverEvent::Decided { .. }]), "{got:?}");
        assert_eq!(d.decision(7), None, "not final before it is durable");
        assert_eq!(d.poll_timeout(), None, "nothing to resend meanwhile");
        d.handle_commit_durable(5, 7);
        assert_eq!(events(&mut d), vec![decision(1, true), decision(2, true)]);
        assert_eq!(d.decision(7), Some(true));

        let mut d = driver();
        d.resume_commit(0, 7, vec![2, 1], "put");
        assert_eq!(events(&mut d), vec![decision(1, true), decision(2, true)]);
        d.handle_ack(1, 1, 7);
        d.handle_ack(1, 2, 7);
        assert!(matches!(events(&mut d)[..], [DriverEvent::Finished { .. }]));
    }

    #[test]
    fn with_decide_on_refusal_the_first_refusal_rolls_back_everyone_else_at_once() {
        let mut d = driver();
        d.config.decide_on_refusal = true;
        d.begin(0, 7, vec![1, 2, 3], "put");
        let _ = events(&mut d);
        d.handle_vote(1, 1, 7, Vote::Ready);
        assert!(events(&mut d).is_empty());
        d.handle_vote(2, 2, 7, Vote::Refuse(ErrorCode::Locked, "busy".into()));
        let got = events(&mut d);
        let refusals = vec![(2, ErrorCode::Locked, "busy".to_owned())];
        let outcome = Outcome::Aborted {
            missing: vec![3],
            refusals,
        };
        assert_eq!(got[0], DriverEvent::Decided { txid: 7, outcome });
        assert_eq!(&got[1..], &[decision(1, false), decision(3, false)]);
    }

    #[test]
    fn a_silent_participant_aborts_at_the_deadline_after_resends() {
        let mut d = driver();
        d.begin(0, 7, vec![1, 2], "put");
        let _ = events(&mut d);
        d.handle_vote(1, 1, 7, Vote::Ready);
        let mut resent_to_2 = 0;
        while let Some(at) = d.poll_timeout().filter(|&at| at < 1000) {
            d.handle_timeouts(at);
            for event in events(&mut d) {
                assert_eq!(event, DriverEvent::SendPrepare { to: 2, txid: 7 });
                resent_to_2 += 1;
            }
        }
        assert!(resent_to_2 >= 2, "resent {resent_to_2} times");
        d.handle_timeouts(1000);
        let got = events(&mut d);
        let DriverEvent::Decided { outcome, .. } = &got[0] else {
            panic!("{got:?}");
        };
        assert_eq!(
            *outcome,
            Outcome::Aborted {
                missing: vec![2],
                refusals: vec![]
            }
        );
        assert_eq!(&got[1..], &[decision(1, false), decision(2, false)]);
    }

    #[test]
    fn a_refusing_participant_holds_nothing_unless_it_prepares_later() {
        let mut d = driver();
        d.begin(0, 7, vec![1, 2], "put");
        let _ = events(&mut d);
        d.handle_vote(1, 1, 7, Vote::Refuse(ErrorCode::Locked, "busy".into()));
        d.handle_vote(1, 2, 7, Vote::Ready);
        let got = events(&mut d);
        assert_eq!(&got[1..], &[decision(2, false)], "no abort to the refuser");
        // The refuser lost its refusal in a crash and prepared a late copy.
        d.handle_vote(2, 1, 7, Vote::Ready);
        assert_eq!(events(&mut d), vec![decision(1, false)]);
        d.handle_ack(3, 2, 7);
        assert!(events(&mut d).is_empty(), "still waiting for node 1");
        d.handle_ack(3, 1, 7);
        assert!(matches!(events(&mut d)[..], [DriverEvent::Finished { .. }]));
    }

    #[test]
    fn an_abort_a_dead_participant_never_acknowledges_frees_its_slot_after_a_timeout() {
        let mut d = driver();
        d.begin(0, 7, vec![1, 2], "put");
        d.handle_vote(1, 1, 7, Vote::Ready);
        d.handle_timeouts(1000);
        let _ = events(&mut d);
        d.handle_ack(1001, 1, 7);
        assert_eq!(d.len(), 1, "still waiting for node 2");
        d.handle_timeouts(1999);
        assert!(events(&mut d)
            .iter()
            .all(|e| !matches!(e, DriverEvent::Finished { .. })));
        d.handle_timeouts(2000);
        let got = events(&mut d);
        assert!(got.contains(&DriverEvent::Finished {
            txid: 7,
            payload: "put"
        }));
        assert_eq!(
            (d.len(), d.open()),
            (0, 1),
            "the abort goes on as a stray abort"
        );
        let at = d.poll_timeout().unwrap();
        d.handle_timeouts(at);
        assert_eq!(events(&mut d), vec![decision(2, false)]);
        d.handle_ack(5000, 2, 7);
        assert_eq!(d.open(), 0);
    }

    #[test]
    fn resend_now_sends_the_decision_to_the_unacknowledged_at_once_and_restarts_the_waits() {
        let mut d = driver();
        d.begin(0, 7, vec![1, 2], "put");
        d.handle_vote(1, 1, 7, Vote::Ready);
        d.handle_vote(1, 2, 7, Vote::Ready);
        d.handle_ack(2, 1, 7);
        let _ = events(&mut d);
        // Let the resends grow: each wait is at least as long as the first.
        for _ in 0..3 {
            let at = d.poll_timeout().unwrap();
            d.handle_timeouts(at);
            assert_eq!(events(&mut d), vec![decision(2, true)]);
        }
        let now = d.now;
        // The wait has grown to its cap (400 ms) by now.
        let grown = d.poll_timeout().unwrap();
        assert!(grown >= now + 400, "{grown} after {now}");
        d.resend_now(now, 7);
        assert_eq!(
            events(&mut d),
            vec![decision(2, true)],
            "only node 2, at once"
        );
        // And the waits start over: the next resend comes after the first wait again
        // (100 ms, jittered up to 150), not after the grown one.
        let restarted = d.poll_timeout().unwrap();
        assert!(
            (now + 100..=now + 150).contains(&restarted),
            "{restarted} after {now}"
        );
        d.resend_now(now, 99);
        assert!(
            events(&mut d).is_empty(),
            "an unknown transaction sends nothing"
        );
    }

    #[test]
    fn a_stray_ready_is_aborted_until_acknowledged_within_a_limit() {
        let mut d = driver();
        d.handle_vote(0, 5, 99, Vote::Ready);
        let stray = DriverEvent::SendDecision {
            to: 5,
            txid: 99,
            commit: false,
        };
        assert_eq!(events(&mut d), vec![stray.clone()]);
        let at = d.poll_timeout().unwrap();
        d.handle_timeouts(at);
        assert_eq!(events(&mut d), vec![stray]);
        d.handle_ack(at, 5, 99);
        assert_eq!(d.open(), 0);
        assert_eq!(d.poll_timeout(), None);
        for txid in 1..=3 {
            d.handle_vote(at, 5, txid, Vote::Ready);
        }
        assert_eq!(d.open(), 2, "the oldest stray abort is given up");
        d.check_invariants();
    }
}
