//! A coordinator never collides with itself: a new update of a key waits while this
//! node's own earlier transaction on that key is decided but not yet acknowledged by
//! every replica. Each replica applies a decision only once it is durable there, so a
//! prepare sent right after the decision would meet the key still locked, be refused
//! (`locked`), roll back and back off: the node's own phase 2 would cost a random wait.
//! An acknowledgement is sent only once the decision is applied, so once every replica
//! acknowledged, the next prepare finds the key free (whatever order the network keeps).
//!
//! The wait is bounded: it counts against the waiting update's own timeout (at the
//! deadline the client hears `unavailable` if a decision waited a whole timeout, a
//! replica being silent, `aborted` otherwise, the key being busy), and every
//! waiting update counts against `max_updates` (beyond, `overloaded`). It is volatile:
//! after a restart the recovered commits go on without it (a collision with one of them
//! is handled as any collision); nothing about durability changes.

use crate::proto::TxId;
use crate::Ts;

use super::{LogReader, Peer};

/// An own transaction waiting for the acknowledgements of its decision.
#[derive(Clone, Debug)]
pub(super) struct Settling {
    key: String,
    /// When it was decided.
    decided_at: Ts,
    /// When it was decided, or last asked to resend.
    since: Ts,
}

impl<R: LogReader> Peer<R> {
    /// Whether an own transaction on `key` awaits acknowledgements of its decision.
    pub(super) fn settling_on(&self, key: &str) -> bool {
        self.settling.values().any(|s| s.key == key)
    }

    /// Whether a decision on `key` has waited a whole timeout for an acknowledgement: a
    /// replica is silent (a decision only just made is contention, not silence).
    pub(super) fn silent_replica_on(&self, key: &str) -> bool {
        let timeout_ms = self.config.timeout_ms;
        let now = self.now;
        let mut on_key = self.settling.values().filter(|s| s.key == key);
        on_key.any(|s| now >= s.decided_at.saturating_add(timeout_ms))
    }

    /// `txid`, an attempt on `key`, is decided: updates of `key` wait until it ends.
    pub(super) fn begin_settling(&mut self, txid: TxId, key: String) {
        let since = self.now;
        let settling = Settling {
            key,
            decided_at: since,
            since,
        };
        self.settling.insert(txid, settling);
    }

    /// An update of `key` waits: a decision of `key` unacknowledged for a while (its
    /// resends grown long, say after a partition or a restart) is sent again at once,
    /// so the wait ends as soon as the replica can answer, not at its next resend.
    pub(super) fn hurry_settling(&mut self, key: &str) {
        let after_ms = self.config.resend.wait_ms_min;
        let now = self.now;
        let due: Vec<TxId> = self
            .settling
            .iter_mut()
            .filter(|(_, s)| s.key == key && now >= s.since.saturating_add(after_ms))
            .map(|(txid, s)| {
                s.since = now;
                *txid
            })
            .collect();
        for txid in due {
            self.driver.resend_now(now, txid);
        }
        self.drain_driver();
    }

    /// `txid` ended (every replica acknowledged, or its abort was released): the oldest
    /// update waiting for its key starts at once.
    pub(super) fn end_settling(&mut self, txid: TxId) {
        if let Some(settling) = self.settling.remove(&txid) {
            self.wake_key(&settling.key);
        }
    }

    /// Every settling transaction is still driven here (its end removes it).
    pub(super) fn check_settling(&self) {
        for txid in self.settling.keys() {
            assert!(
                self.driver.payload(*txid).is_some(),
                "settling {txid} left the driver"
            );
        }
    }
}
