//! This node as a participant of the updates of the keys it replicates: the shared
//! [`crate::twopc::Participant`] owns the rules (locks, one vote per transaction,
//! remembered decisions, presumed abort); this module adds the node's reasons to refuse,
//! its log records, and what a durable decision changes.

use crate::buggify::FaultSite;
use crate::proto::peer::PeerBody;
use crate::proto::{check_key_value, ErrorCode, TxId, TxOp};
use crate::twopc::{DecisionCheck, PrepareCheck, Vote};

use super::record::{encode_prepare_put, value_offset_in_payload, PeerRecord};
use super::{Change, Deferred, LogReader, Peer, Prepared, Timer};
use crate::storage::ValueLoc;

impl<R: LogReader> Peer<R> {
    pub(super) fn on_prepare(
        &mut self,
        from: u64,
        txid: TxId,
        key: String,
        op: TxOp,
        participants: Vec<u64>,
    ) {
        if self.coordinator_of(txid) != Some(from) || !participants.contains(&self.config.id) {
            // Not this node's business (a stray or misrouted prepare): refused, and not
            // remembered, so it decides nothing about the transaction.
            let message = format!("node {} is no participant of {txid}", self.config.id);
            return self.send(from, refusal(txid, ErrorCode::Refused, message));
        }
        match self.participant.check_prepare(txid) {
            PrepareCheck::New => {}
            PrepareCheck::Prepared(token) => {
                if self.has_room_to_defer(1) {
                    self.defer(token, Deferred::Send(from, PeerBody::Ready { txid }));
                }
                return;
            }
            PrepareCheck::Decided(vote) => return self.send(from, vote_body(txid, vote)),
        }
        if let Some((code, message)) = self.refusal(&key, &op) {
            self.participant.refuse(txid, code, message.clone());
            return self.send(from, refusal(txid, code, message));
        }
        let (payload, value) = match op {
            TxOp::Put { value } => {
                let payload = encode_prepare_put(txid, &key, &value, &participants);
                (payload, Some(value))
            }
            TxOp::Del => {
                let record = PeerRecord::PrepareDel {
                    txid,
                    key: key.clone(),
                    participants: participants.clone(),
                };
                (record.encode(), None)
            }
        };
        let (token, payload_offset) = self.append(&payload);
        let change = match value {
            Some(value) => Change::Put {
                loc: ValueLoc {
                    offset: payload_offset + value_offset_in_payload(key.len()) as u64,
                    len: value.len() as u32,
                },
                value,
            },
            None => Change::Del,
        };
        let prepared = Prepared {
            change,
            participants,
        };
        self.participant.prepare(txid, key, prepared, token);
        self.defer(token, Deferred::Send(from, PeerBody::Ready { txid }));
        self.arm_first_query(txid, self.config.timeout_ms);
    }

    /// Why this node votes to abort a prepare, if it does.
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
            return Some((
                ErrorCode::Locked,
                format!("key is locked by transaction {holder}"),
            ));
        }
        if matches!(op, TxOp::Del) && !self.store.contains(key) {
            return with_default(ErrorCode::NotFound);
        }
        let full = self.participant.is_full() || !self.has_room_to_defer(2);
        if full || self.buggify.fires(self.now, FaultSite::SpuriousRefusal) {
            return with_default(ErrorCode::Overloaded);
        }
        None
    }

    /// A decision of `txid` reached this node: from its coordinator (acknowledged to
    /// `ack_to`) or from a node answering its query.
    pub(super) fn on_decision(&mut self, txid: TxId, commit: bool, ack_to: Option<u64>) {
        let ack = PeerBody::Ack { txid };
        match self.participant.check_decision(txid, commit) {
            DecisionCheck::Unknown => {
                if let Some(to) = ack_to {
                    self.send(to, ack);
                }
            }
            DecisionCheck::Deciding(token) => {
                if let Some(to) = ack_to.filter(|_| self.has_room_to_defer(1)) {
                    self.defer(token, Deferred::Send(to, ack));
                }
            }
            DecisionCheck::Prepared => {
                // Without room the decision waits: its sender resends it.
                if !self.has_room_to_defer(2) {
                    return;
                }
                let record = if commit {
                    PeerRecord::Commit { txid }
                } else {
                    PeerRecord::Abort { txid }
                };
                let (token, _) = self.append(&record.encode());
                self.participant.deciding(txid, commit, token);
                self.defer(token, Deferred::Finish(txid));
                if let Some(to) = ack_to {
                    self.defer(token, Deferred::Send(to, ack));
                }
            }
        }
    }

    /// A decision is durable here: a commit changes the store, the key unlocks, and the
    /// reads that waited for it are answered.
    pub(super) fn finish(&mut self, txid: TxId) {
        let finished = self.participant.finish(txid);
        self.queries.remove(&txid);
        self.timers.cancel(&Timer::Query(txid));
        if finished.commit {
            self.apply(finished.key.clone(), finished.op.change);
        }
        self.wake_reads(&finished.key);
    }

    /// A committed change enters the store; shared by the live path and replay.
    pub(super) fn apply(&mut self, key: String, change: Change) {
        match change {
            Change::Put { loc, value } => self.store.put(key, loc, value),
            Change::Del => self.store.remove(&key),
        }
    }
}

fn refusal(txid: TxId, code: ErrorCode, message: String) -> PeerBody {
    PeerBody::Refuse {
        txid,
        code,
        message,
    }
}

fn vote_body(txid: TxId, vote: Vote) -> PeerBody {
    match vote {
        Vote::Ready => PeerBody::Ready { txid },
        Vote::Refuse(code, message) => refusal(txid, code, message),
    }
}
