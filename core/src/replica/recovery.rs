//! Rebuilding a KV server from its log bytes alone, as a fold of its records through
//! the shared [`LogStream`], whole or chunk by chunk.

use crate::cache::CacheConfigError;
use crate::log::{after_prefix, AfterPrefix, PrefixEnd, StopReason};
use crate::role::Role;
use crate::storage::{Durability, LogStream};

use super::record::{
    carried_value_offset_in_payload, value_offset_in_payload, Record, RecordError,
};
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
        let mut recovery = ReplicaRecovery::start(config, reader)?;
        recovery.feed(log, true);
        let after = after_prefix(log, recovery.decoded_to());
        Ok(recovery.finish(after))
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
                let op = PreparedOp::Del { at: payload_offset };
                return self.participant.replay_prepare(txid, key, op);
            }
            Record::Commit { txid } => (txid, true),
            Record::Abort { txid } => (txid, false),
            Record::Value { key, value } => {
                let loc = ValueLoc {
                    offset: payload_offset + carried_value_offset_in_payload(key.len()) as u64,
                    len: value.len() as u32,
                };
                if let Some(holder) = self.participant.lock_holder(&key) {
                    return Err(format!(
                        "a carried value of {key:?}, locked by transaction {holder}"
                    ));
                }
                self.store.put(key, loc, value);
                return Ok(());
            }
        };
        if let Some(finished) = self.participant.replay_decision(txid, commit)? {
            self.apply(finished.key, finished.op, finished.commit);
        }
        Ok(())
    }
}

/// A replica being rebuilt from its log fed in chunks ([`LogStream`]), so that a large
/// log is never held in memory whole.
pub struct ReplicaRecovery<R> {
    replica: Replica<R>,
    stream: LogStream<RecordError>,
}

impl<R: LogReader> ReplicaRecovery<R> {
    /// An empty replica, about to replay its log from the start. `reader` must read the
    /// log's bytes.
    pub fn start(config: ReplicaConfig, reader: R) -> Result<Self, CacheConfigError> {
        Ok(Self {
            replica: Replica::new(config, reader)?,
            stream: LogStream::new(),
        })
    }

    /// Replays the whole records at the start of `chunk` (the log from
    /// [`ReplicaRecovery::decoded_to`] on; `at_end` if nothing follows) and returns the
    /// bytes they took; see [`LogStream::feed`].
    pub fn feed(&mut self, chunk: &[u8], at_end: bool) -> usize {
        let replica = &mut self.replica;
        self.stream.feed(chunk, at_end, |record, payload_offset| {
            replica.replay(record, payload_offset)
        })
    }

    /// Whether the log has ended for replay.
    pub fn is_done(&self) -> bool {
        self.stream.is_done()
    }

    /// The log goes on at `offset`, past the gap a compacted segment leaves
    /// ([`LogStream::skip_to`]).
    pub fn skip_to(&mut self, offset: u64) {
        self.stream.skip_to(offset);
    }

    /// Where the next chunk starts; once done, where the bytes after the frames begin.
    pub fn decoded_to(&self) -> u64 {
        self.stream.decoded_to()
    }

    /// Which version wrote the last frame decoded ([`LogStream::prefix_end`]).
    pub fn prefix_end(&self) -> PrefixEnd {
        self.stream.prefix_end()
    }

    /// The rebuilt replica and the report, given what follows the decoded frames.
    pub fn finish(self, after: AfterPrefix) -> (Replica<R>, RecoveryReport) {
        let mut replica = self.replica;
        let scan = self.stream.finish(after);
        // Appends continue after the valid bytes; what follows them is cut by the caller.
        replica.durability = Durability::new(scan.valid_len, replica.config.max_waiting);
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
        (replica, report)
    }
}
