//! Rebuilding a KV server from its log bytes alone.

use crate::cache::CacheConfigError;
use crate::log::{decode_frames, StopReason};

use super::record::{value_offset_in_payload, Record, RecordError};
use super::{Decision, LogReader, Prepared, PreparedOp, Replica, ReplicaConfig, ValueLoc};

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
        let decoded = decode_frames(log);
        let mut report = RecoveryReport {
            records: 0,
            valid_len: decoded.valid_len,
            stop: decoded.stop,
            bad_record: None,
            committed_keys: 0,
            in_doubt: 0,
            anomalies: Vec::new(),
        };
        for frame in &decoded.frames {
            let record = match Record::decode(frame.payload) {
                Ok(record) => record,
                Err(err) => {
                    report.bad_record = Some((frame.offset, err));
                    report.valid_len = frame.offset;
                    break;
                }
            };
            report.records += 1;
            if let Err(anomaly) = replica.replay(record, frame.payload_offset) {
                report
                    .anomalies
                    .push(format!("at offset {}: {anomaly}", frame.offset));
            }
        }
        replica.log_len = report.valid_len;
        report.committed_keys = replica.store.len();
        report.in_doubt = replica.prepared.len();
        Ok((replica, report))
    }

    fn replay(&mut self, record: Record, payload_offset: u64) -> Result<(), String> {
        match record {
            Record::PreparePut { txid, key, value } => {
                let loc = ValueLoc {
                    offset: payload_offset + value_offset_in_payload(key.len()) as u64,
                    len: value.len() as u32,
                };
                self.replay_prepare(txid, key, PreparedOp::Put { loc, value })
            }
            Record::PrepareDel { txid, key } => self.replay_prepare(txid, key, PreparedOp::Del),
            Record::Commit { txid } => self.replay_decision(txid, true),
            Record::Abort { txid } => self.replay_decision(txid, false),
        }
    }

    fn replay_prepare(&mut self, txid: u64, key: String, op: PreparedOp) -> Result<(), String> {
        if self.prepared.contains_key(&txid) || self.decided.contains_key(&txid) {
            return Err(format!("transaction {txid} prepared twice"));
        }
        if let Some(holder) = self.locks.get(&key) {
            return Err(format!(
                "transaction {txid} prepared {key:?}, locked by transaction {holder}"
            ));
        }
        self.locks.insert(key.clone(), txid);
        self.prepared.insert(
            txid,
            Prepared {
                key,
                op,
                token: super::RECOVERED,
                deciding: None,
            },
        );
        Ok(())
    }

    fn replay_decision(&mut self, txid: u64, commit: bool) -> Result<(), String> {
        let Some(prepared) = self.prepared.remove(&txid) else {
            return match self.decided.get(&txid) {
                Some(earlier) if *earlier == Decision::of(commit) => Ok(()),
                Some(_) => Err(format!("transaction {txid} decided both ways")),
                None => Err(format!("decision of transaction {txid}, never prepared")),
            };
        };
        self.finish(txid, prepared, commit);
        Ok(())
    }
}
