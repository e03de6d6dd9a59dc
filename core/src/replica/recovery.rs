//! Rebuilding a KV server from its log bytes alone, as a fold of its records through
//! the shared [`replay_log`].

use crate::cache::CacheConfigError;
use crate::log::{AfterPrefix, StopReason};
use crate::role::Role;
use crate::storage::{replay_log, Durability};

use super::record::{value_offset_in_payload, Record, RecordError};
use super::{LogReader, PreparedOp, Replica, ReplicaConfig, ValueLoc};

/// What recovery found in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records replayed.
    pub records: usize,
    /// Bytes of the log that hold whole, valid records. The caller must cut the log to
    /// this length before appending: what follows is a torn or corrupt tail.
    pub valid_len: u64,
    /// Why decoding stopped where it did.
    pub stop: StopReason,
    /// What lies after the valid prefix: a torn tail, or corruption the caller must not
    /// cut without an operator's word.
    pub after: AfterPrefix,
    /// A frame whose checksum was right but whose payload is no record, where replay
    /// stopped (a log written by a newer version, or a bug).
    pub bad_record: Option<(u64, RecordError)>,
    /// Keys with a committed value.
    pub committed_keys: usize,
    /// Transactions prepared and not decided: they keep their keys locked until the
    /// coordinator resends the decision.
    pub in_doubt: usize,
    /// Records that contradict the protocol's rules and were skipped.
    pub anomalies: Vec<String>,
}

impl<R: LogReader> Replica<R> {
    /// Rebuilds a replica from its log: committed values, and every in-doubt transaction
    /// with its lock. `reader` must read the same bytes as `log`.
    pub fn recover(
        config: ReplicaConfig,
        log: &[u8],
        reader: R,
    ) -> Result<(Self, RecoveryReport), CacheConfigError> {
        let mut replica = Replica::new(config, reader)?;
        let scan = replay_log(log, |record, payload_offset| {
            replica.replay(record, payload_offset)
        });
        // Appends continue after the valid bytes; what follows them is cut by the caller.
        replica.durability = Durability::new(scan.valid_len, config.max_waiting);
        let report = RecoveryReport {
            records: scan.records,
            valid_len: scan.valid_len,
            stop: scan.stop,
            after: scan.after,
            bad_record: scan.bad_record,
            committed_keys: replica.store.len(),
            in_doubt: replica.participant.prepared_count(),
            anomalies: scan.anomalies,
        };
        replica.check_invariants();
        Ok((replica, report))
    }

    fn replay(&mut self, record: Record, payload_offset: u64) -> Result<(), String> {
        let (txid, commit) = match record {
            Record::PreparePut { txid, key, value } => {
                let loc = ValueLoc {
                    offset: payload_offset + value_offset_in_payload(key.len()) as u64,
                    len: value.len() as u32,
                };
                let op = PreparedOp::Put { loc, value };
                return self.participant.replay_prepare(txid, key, op);
            }
            Record::PrepareDel { txid, key } => {
                return self.participant.replay_prepare(txid, key, PreparedOp::Del);
            }
            Record::Commit { txid } => (txid, true),
            Record::Abort { txid } => (txid, false),
        };
        if let Some(finished) = self.participant.replay_decision(txid, commit)? {
            self.apply(finished.key, finished.op, finished.commit);
        }
        Ok(())
    }
}
