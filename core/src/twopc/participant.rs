//! The participant's side of two-phase commit, for any kind of prepared operation `Op`.
//!
//! The rules it owns:
//! - a key is locked by at most one prepared transaction, and every prepared transaction
//!   holds exactly its key's lock;
//! - a vote is given once and stands: a repeated prepare gets the same vote, `ready` only
//!   once the prepare record is durable (the role defers it on the returned token);
//! - a refusal is remembered as the transaction's decision, so a late or repeated
//!   prepare is refused again even if the key changed meanwhile;
//! - the first decision of a prepared transaction stands; a decision of an unknown
//!   transaction is acknowledged (presumed abort), and an abort of one is remembered so
//!   that its prepare, arriving late, is refused;
//! - decisions are remembered for the last `decided_memory` transactions.
//!
//! The role checks its own operation-specific reasons to refuse (limits, a delete of a
//! missing key), writes the log records, and applies what [`Participant::finish`] hands
//! back once the decision is durable.

use std::collections::{BTreeMap, VecDeque};

use crate::proto::{ErrorCode, TxId};
use crate::storage::PersistToken;

use super::Vote;

/// A transaction prepared here and not yet finished.
#[derive(Clone, Debug)]
struct Prepared<Op> {
    key: String,
    op: Op,
    /// The write of its prepare record.
    token: PersistToken,
    /// The decision being made durable, and the write that holds it.
    deciding: Option<(bool, PersistToken)>,
}

/// How a transaction ended here.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    Committed,
    Aborted,
    /// This participant voted to abort, for this reason.
    Refused(ErrorCode, String),
}

/// What a prepare of a transaction meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepareCheck {
    /// Never seen: the role decides the vote.
    New,
    /// Already prepared: `ready` once this write is durable.
    Prepared(PersistToken),
    /// Already decided here: this vote, at once.
    Decided(Vote),
}

/// What a decision of a transaction meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecisionCheck {
    /// Unknown or already finished here: acknowledge at once (presumed abort).
    Unknown,
    /// Prepared and undecided: the role writes the decision record, then calls
    /// [`Participant::deciding`].
    Prepared,
    /// A decision is already being made durable in this write: acknowledge once it is.
    Deciding(PersistToken),
}

/// A transaction whose decision is durable, handed back to be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished<Op> {
    /// The key it held.
    pub key: String,
    /// The operation prepared on it.
    pub op: Op,
    /// Whether it committed.
    pub commit: bool,
}

/// The participant's protocol state.
#[derive(Clone, Debug)]
pub struct Participant<Op> {
    prepared: BTreeMap<TxId, Prepared<Op>>,
    locks: BTreeMap<String, TxId>,
    decided: BTreeMap<TxId, Decision>,
    decided_order: VecDeque<TxId>,
    max_prepared: usize,
    decided_memory: usize,
}

impl<Op: Clone> Participant<Op> {
    /// A participant holding at most `max_prepared` transactions and remembering the
    /// decisions of the last `decided_memory`.
    pub fn new(max_prepared: usize, decided_memory: usize) -> Self {
        assert!(max_prepared > 0 && decided_memory > 0, "participant limits");
        Self {
            prepared: BTreeMap::new(),
            locks: BTreeMap::new(),
            decided: BTreeMap::new(),
            decided_order: VecDeque::new(),
            max_prepared,
            decided_memory,
        }
    }

    /// What a prepare of `txid` meets.
    pub fn check_prepare(&self, txid: TxId) -> PrepareCheck {
        if let Some(prepared) = self.prepared.get(&txid) {
            return PrepareCheck::Prepared(prepared.token);
        }
        match self.decided.get(&txid) {
            None => PrepareCheck::New,
            Some(Decision::Committed) => PrepareCheck::Decided(Vote::Ready),
            Some(Decision::Aborted) => PrepareCheck::Decided(Vote::Refuse(
                ErrorCode::Aborted,
                format!("transaction {txid} was already aborted"),
            )),
            Some(Decision::Refused(code, message)) => {
                PrepareCheck::Decided(Vote::Refuse(*code, message.clone()))
            }
        }
    }

    /// The transaction that holds `key`'s lock, if any.
    pub fn lock_holder(&self, key: &str) -> Option<TxId> {
        self.locks.get(key).copied()
    }

    /// The operation `txid` prepared, while it is prepared here (a peer node keeps the
    /// transaction's participants in it, to ask them the decision when in doubt).
    pub fn prepared_op(&self, txid: TxId) -> Option<&Op> {
        self.prepared.get(&txid).map(|prepared| &prepared.op)
    }

    /// Whether no more transactions may be prepared.
    pub fn is_full(&self) -> bool {
        self.prepared.len() >= self.max_prepared
    }

    /// Remembers a vote to abort a new transaction as its decision.
    pub fn refuse(&mut self, txid: TxId, code: ErrorCode, message: String) {
        assert_eq!(self.check_prepare(txid), PrepareCheck::New, "refused twice");
        self.remember(txid, Decision::Refused(code, message));
    }

    /// A new transaction is prepared: its record is in write `token`; `key` locks.
    pub fn prepare(&mut self, txid: TxId, key: String, op: Op, token: PersistToken) {
        assert_eq!(
            self.check_prepare(txid),
            PrepareCheck::New,
            "prepared twice"
        );
        assert!(self.lock_holder(&key).is_none(), "prepared a locked key");
        assert!(!self.is_full(), "prepared beyond the limit");
        self.hold(txid, key, op, token);
    }

    /// Locks `key` for `txid`, prepared in write `token`.
    fn hold(&mut self, txid: TxId, key: String, op: Op, token: PersistToken) {
        self.locks.insert(key.clone(), txid);
        let prepared = Prepared {
            key,
            op,
            token,
            deciding: None,
        };
        self.prepared.insert(txid, prepared);
    }

    /// What a decision of `txid` meets; an abort of an unknown transaction is remembered
    /// here, so that its prepare arriving late is refused.
    pub fn check_decision(&mut self, txid: TxId, commit: bool) -> DecisionCheck {
        match self.prepared.get(&txid) {
            Some(Prepared {
                deciding: Some((_, token)),
                ..
            }) => DecisionCheck::Deciding(*token),
            Some(_) => DecisionCheck::Prepared,
            None => {
                if !commit && !self.decided.contains_key(&txid) {
                    self.remember(txid, Decision::Aborted);
                }
                DecisionCheck::Unknown
            }
        }
    }

    /// The decision of a prepared transaction is in write `token`.
    pub fn deciding(&mut self, txid: TxId, commit: bool, token: PersistToken) {
        let Some(prepared) = self.prepared.get_mut(&txid) else {
            panic!("decided transaction {txid}, which is not prepared");
        };
        assert!(
            prepared.deciding.is_none(),
            "transaction {txid} decided twice"
        );
        prepared.deciding = Some((commit, token));
    }

    /// The decision of `txid` is durable: release its key and hand back what to apply.
    pub fn finish(&mut self, txid: TxId) -> Finished<Op> {
        let Some(prepared) = self.prepared.remove(&txid) else {
            panic!("finished transaction {txid}, which is not prepared");
        };
        let Some((commit, _)) = prepared.deciding else {
            panic!("finished transaction {txid} without a decision");
        };
        self.release(txid, prepared, commit)
    }

    /// Recovery: a prepare record of the log.
    pub fn replay_prepare(&mut self, txid: TxId, key: String, op: Op) -> Result<(), String> {
        if self.check_prepare(txid) != PrepareCheck::New {
            return Err(format!("transaction {txid} prepared twice"));
        }
        if let Some(holder) = self.lock_holder(&key) {
            return Err(format!(
                "transaction {txid} prepared {key:?}, locked by transaction {holder}"
            ));
        }
        let token = crate::storage::Durability::<()>::recovered_token();
        self.hold(txid, key, op, token);
        Ok(())
    }

    /// Recovery: a decision record of the log; hands back what to apply, or nothing for
    /// a repeat of a decision already replayed.
    pub fn replay_decision(
        &mut self,
        txid: TxId,
        commit: bool,
    ) -> Result<Option<Finished<Op>>, String> {
        if let Some(prepared) = self.prepared.remove(&txid) {
            return Ok(Some(self.release(txid, prepared, commit)));
        }
        match self.decided.get(&txid) {
            Some(Decision::Committed) if commit => Ok(None),
            Some(Decision::Aborted) if !commit => Ok(None),
            Some(_) => Err(format!("transaction {txid} decided both ways")),
            None => Err(format!("decision of transaction {txid}, never prepared")),
        }
    }

    /// Recovery: a commit carried by compaction, whose prepare and decision records are
    /// gone: remembered as committed, nothing to apply (its value is carried apart).
    pub fn replay_remembered_commit(&mut self, txid: TxId) -> Result<(), String> {
        if self.check_prepare(txid) != PrepareCheck::New {
            return Err(format!(
                "transaction {txid} remembered as committed after it was known"
            ));
        }
        self.remember(txid, Decision::Committed);
        Ok(())
    }

    fn release(&mut self, txid: TxId, prepared: Prepared<Op>, commit: bool) -> Finished<Op> {
        let holder = self.locks.remove(&prepared.key);
        assert_eq!(holder, Some(txid), "lock of {:?} lost", prepared.key);
        let decision = if commit {
            Decision::Committed
        } else {
            Decision::Aborted
        };
        self.remember(txid, decision);
        Finished {
            key: prepared.key,
            op: prepared.op,
            commit,
        }
    }

    fn remember(&mut self, txid: TxId, decision: Decision) {
        if self.decided.insert(txid, decision).is_none() {
            self.decided_order.push_back(txid);
        }
        while self.decided_order.len() > self.decided_memory {
            if let Some(oldest) = self.decided_order.pop_front() {
                self.decided.remove(&oldest);
            }
        }
    }

    /// The decision of prepared `txid` being made durable, if one is: a compaction of
    /// the log must keep it with the prepare.
    pub fn deciding_of(&self, txid: TxId) -> Option<bool> {
        self.prepared
            .get(&txid)
            .and_then(|prepared| prepared.deciding)
            .map(|(commit, _)| commit)
    }

    /// Transactions prepared and not yet finished, with their keys and operations, in
    /// order: what a compaction of the log must keep.
    pub fn prepared_ops(&self) -> impl Iterator<Item = (TxId, &str, &Op)> + '_ {
        self.prepared
            .iter()
            .map(|(&txid, prepared)| (txid, prepared.key.as_str(), &prepared.op))
    }

    /// The decisions remembered, oldest first, as `(txid, commit)`: what a compaction of
    /// the log must keep so that the node remembers them after a restart. Refusals are
    /// left out: no log holds them (a restart forgets them, and a repeated prepare is
    /// voted on again: the coordinator aborted if it heard the refusal, and if it did
    /// not, the refusal counted for nothing).
    pub fn remembered_decisions(&self) -> impl Iterator<Item = (TxId, bool)> + '_ {
        self.decided_order
            .iter()
            .filter_map(|txid| match self.decided.get(txid) {
                Some(Decision::Committed) => Some((*txid, true)),
                Some(Decision::Aborted) => Some((*txid, false)),
                Some(Decision::Refused(..)) | None => None,
            })
    }

    /// Changes every prepared operation in place: compaction moved their bytes.
    pub fn relocate_ops(&mut self, mut change: impl FnMut(&mut Op)) {
        for prepared in self.prepared.values_mut() {
            change(&mut prepared.op);
        }
    }

    /// Transactions prepared and not yet finished, in order.
    pub fn in_doubt(&self) -> impl Iterator<Item = TxId> + '_ {
        self.prepared.keys().copied()
    }

    /// How many transactions are prepared.
    pub fn prepared_count(&self) -> usize {
        self.prepared.len()
    }

    /// Locks and prepared transactions correspond one to one; every map within its limit.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.locks.len(),
            self.prepared.len(),
            "locks and prepares differ"
        );
        for (txid, prepared) in &self.prepared {
            assert_eq!(
                self.locks.get(&prepared.key),
                Some(txid),
                "transaction {txid} does not hold its lock"
            );
            assert!(
                !self.decided.contains_key(txid),
                "{txid} prepared and decided"
            );
            if let Some((_, token)) = prepared.deciding {
                assert!(token >= prepared.token, "decided before prepared");
            }
        }
        assert!(
            self.prepared.len() <= self.max_prepared,
            "prepared over the limit"
        );
        assert_eq!(
            self.decided.len(),
            self.decided_order.len(),
            "decision memory"
        );
        assert!(
            self.decided.len() <= self.decided_memory,
            "decisions over the limit"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: PersistToken = PersistToken(1);
    const T2: PersistToken = PersistToken(2);

    #[test]
    fn a_prepare_locks_its_key_until_its_decision_is_finished() {
        let mut p: Participant<&str> = Participant::new(2, 8);
        assert_eq!(p.check_prepare(1), PrepareCheck::New);
        p.prepare(1, "k".into(), "v", T1);
        assert_eq!(p.check_prepare(1), PrepareCheck::Prepared(T1));
        assert_eq!(p.lock_holder("k"), Some(1));
        assert_eq!(p.prepared_op(1), Some(&"v"));
        assert_eq!(p.prepared_op(2), None);
        assert_eq!(p.check_decision(1, true), DecisionCheck::Prepared);
        p.deciding(1, true, T2);
        assert_eq!(p.check_decision(1, false), DecisionCheck::Deciding(T2));
        p.check_invariants();
        let finished = p.finish(1);
        assert_eq!(
            (finished.key.as_str(), finished.op, finished.commit),
            ("k", "v", true)
        );
        assert_eq!(p.lock_holder("k"), None);
        assert_eq!(p.check_prepare(1), PrepareCheck::Decided(Vote::Ready));
        p.check_invariants();
    }

    #[test]
    fn refusals_and_unknown_aborts_are_remembered_within_the_memory() {
        let mut p: Participant<()> = Participant::new(1, 2);
        p.refuse(1, ErrorCode::Locked, "busy".into());
        let refusal = Vote::Refuse(ErrorCode::Locked, "busy".into());
        assert_eq!(p.check_prepare(1), PrepareCheck::Decided(refusal));
        assert_eq!(p.check_decision(2, false), DecisionCheck::Unknown);
        assert!(matches!(
            p.check_prepare(2),
            PrepareCheck::Decided(Vote::Refuse(ErrorCode::Aborted, _))
        ));
        // A commit of an unknown transaction is acknowledged and not remembered.
        assert_eq!(p.check_decision(3, true), DecisionCheck::Unknown);
        assert_eq!(p.check_prepare(3), PrepareCheck::New);
        p.refuse(4, ErrorCode::Overloaded, "full".into());
        assert_eq!(
            p.check_prepare(1),
            PrepareCheck::New,
            "the oldest is forgotten"
        );
        p.check_invariants();
    }

    #[test]
    fn replay_rebuilds_locks_and_rejects_contradictions() {
        let mut p: Participant<()> = Participant::new(4, 8);
        p.replay_prepare(1, "k".into(), ()).unwrap();
        assert!(p.replay_prepare(2, "k".into(), ()).is_err(), "k is locked");
        assert!(p.replay_decision(1, true).unwrap().is_some());
        assert!(p.replay_decision(1, true).unwrap().is_none(), "a repeat");
        assert!(p.replay_decision(1, false).is_err(), "both ways");
        assert!(p.replay_decision(9, true).is_err(), "never prepared");
        p.check_invariants();
    }
}
