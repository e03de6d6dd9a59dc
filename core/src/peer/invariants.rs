//! What must hold between any two inputs of a peer node.

use crate::proto::TxOp;
use crate::twopc::PrepareCheck;

use super::{LogReader, Peer, Timer};

impl<R: LogReader> Peer<R> {
    /// Panics if the node's state breaks one of its rules.
    pub(super) fn check_invariants_impl(&self) {
        self.participant.check_invariants();
        self.durability.check_invariants();
        self.driver.check_invariants();
        self.timers.check_invariants();
        assert!(self.local.is_empty(), "a message to itself left unhandled");
        assert!(
            self.updates.len() + self.absorbed_waiting <= self.config.max_updates,
            "updates over the limit"
        );
        let absorbed: usize = self.updates.values().map(|u| u.absorbed.len()).sum();
        assert_eq!(
            absorbed, self.absorbed_waiting,
            "absorbed updates miscounted"
        );
        for (id, update) in &self.updates {
            assert!(
                update.absorbed.is_empty() || matches!(update.op, TxOp::Put { .. }),
                "update {id} absorbed PUTs into a DEL"
            );
        }
        assert!(
            self.reads.len() <= self.config.max_reads,
            "reads over the limit"
        );
        assert!(self.epoch >= 1 && self.next_seq >= 1, "no epoch began");
        for (id, update) in &self.updates {
            let retrying = self.timers.deadline(&Timer::Retry(*id)).is_some();
            match update.txid {
                // An attempt votes; the update waits for nothing else.
                Some(txid) => {
                    assert!(!retrying, "update {id} votes and waits to retry");
                    assert!(
                        self.driver.payload(txid).is_some(),
                        "update {id}: attempt gone"
                    );
                }
                // Between attempts it waits for its retry, or for the epoch's record.
                None => assert!(
                    retrying || !self.durability.is_durable(self.epoch_token),
                    "update {id} waits for nothing"
                ),
            }
        }
        // Every transaction in doubt here asks for its decision until it learns it.
        for txid in self.participant.in_doubt() {
            assert!(
                self.queries.contains_key(&txid),
                "{txid} in doubt, never asks"
            );
            let timer = self.timers.deadline(&Timer::Query(txid));
            assert!(timer.is_some(), "{txid} in doubt without a query timer");
        }
        for txid in self.queries.keys() {
            let prepared = matches!(
                self.participant.check_prepare(*txid),
                PrepareCheck::Prepared(_)
            );
            assert!(prepared, "query series of {txid}, which is not in doubt");
        }
        for (id, read) in &self.reads {
            assert!(
                self.timers.deadline(&Timer::Read(*id)).is_some(),
                "read {id} waits forever"
            );
            if read.remote.is_none() {
                assert!(
                    self.participant.lock_holder(&read.key).is_some(),
                    "read {id} waits for no lock"
                );
            }
        }
        for timer in self.timers.kinds() {
            match timer {
                Timer::Retry(id) => {
                    assert!(self.updates.contains_key(id), "retry of a gone update")
                }
                Timer::Read(id) => assert!(self.reads.contains_key(id), "timer of a gone read"),
                Timer::Query(txid) => assert!(self.queries.contains_key(txid), "stray query timer"),
                Timer::Heartbeat => {}
            }
        }
        self.check_settling();
        for txid in &self.commits {
            assert!(
                self.driver.payload(*txid).is_some(),
                "commit {txid} left the driver unrecorded"
            );
        }
    }
}
