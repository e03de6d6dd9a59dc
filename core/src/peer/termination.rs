//! Cooperative termination (Bernstein, Hadzilacos, Goodman): a participant whose
//! transaction stays undecided asks its coordinator and every other participant, again
//! and again with growing waits, until someone tells it the decision.
//!
//! Who answers what:
//! - the coordinator: its decision; nothing while it is still deciding; `abort` for a
//!   transaction it does not run and has no commit record of (presumed abort: it
//!   restarted before deciding, or the abort ended long ago);
//! - a participant that knows the decision: the decision;
//! - a participant that never saw the prepare: it renounces the transaction for good (a
//!   durable record: it will never vote ready), then answers `abort`, which is safe
//!   because the coordinator can no longer commit;
//! - a participant in doubt too: nothing; the asker waits, never deciding alone.

use crate::buggify::FaultSite;
use crate::proto::peer::PeerBody;
use crate::proto::TxId;
use crate::twopc::{PrepareCheck, Vote};

use super::record::PeerRecord;
use super::{Deferred, LogReader, Peer, Timer};

impl<R: LogReader> Peer<R> {
    /// Arms the first query of `txid`, prepared here, after `wait_ms` (by then its
    /// coordinator should have decided).
    pub(super) fn arm_first_query(&mut self, txid: TxId, wait_ms: u64) {
        let wait_ms = if self.buggify.fires(self.now, FaultSite::EarlyInDoubtQuery) {
            0
        } else {
            wait_ms
        };
        self.queries.insert(txid, self.config.query.begin());
        self.timers.set(Timer::Query(txid), self.now + wait_ms);
    }

    /// `txid` is still undecided here: ask everyone who may know, and ask again later.
    pub(super) fn on_query_due(&mut self, txid: TxId) {
        let Some(attempts) = self.queries.get_mut(&txid) else {
            return;
        };
        let wait_ms = self.config.query.next_wait_ms(attempts, &mut self.rng);
        self.timers.set(Timer::Query(txid), self.now + wait_ms);
        let mut asked: Vec<u64> = self.coordinator_of(txid).into_iter().collect();
        if let Some(prepared) = self.participant.prepared_op(txid) {
            asked.extend(prepared.participants.iter().copied());
        }
        asked.sort_unstable();
        asked.dedup();
        for node in asked {
            let is_me = node == self.config.id;
            if !is_me || self.coordinator_of(txid) == Some(node) {
                self.send(node, PeerBody::Query { txid });
            }
        }
    }

    pub(super) fn on_query(&mut self, from: u64, txid: TxId) {
        if self.coordinator_of(txid) == Some(self.config.id) {
            let answer = match self.driver.decision(txid) {
                Some(commit) => Some(commit),
                // Still voting, or forcing its commit: the asker must wait.
                None if self.driver.payload(txid).is_some() => None,
                None => Some(false),
            };
            if let Some(commit) = answer {
                self.send(from, PeerBody::Outcome { txid, commit });
            }
            return;
        }
        match self.participant.check_prepare(txid) {
            PrepareCheck::Prepared(_) => {}
            PrepareCheck::Decided(vote) => {
                let commit = vote == Vote::Ready;
                self.send(from, PeerBody::Outcome { txid, commit });
            }
            PrepareCheck::New => self.renounce(from, txid),
        }
    }

    /// Refuses `txid` for good before saying `abort`: the refusal is remembered at once
    /// (a prepare arriving meanwhile is refused) and durable before anyone hears it.
    fn renounce(&mut self, asker: u64, txid: TxId) {
        if !self.has_room_to_defer(1) {
            return;
        }
        let (token, _) = self.append(&PeerRecord::Renounce { txid }.encode());
        let _ = self.participant.check_decision(txid, false);
        let answer = PeerBody::Outcome {
            txid,
            commit: false,
        };
        self.defer(token, Deferred::Send(asker, answer));
    }

    /// Someone answered a query: only a transaction still undecided here takes it.
    pub(super) fn on_outcome(&mut self, txid: TxId, commit: bool) {
        if matches!(
            self.participant.check_prepare(txid),
            PrepareCheck::Prepared(_)
        ) {
            self.on_decision(txid, commit, None);
        }
    }
}
