//! Rebuilding a peer node from its log bytes alone, as a fold of its records through
//! the shared [`replay_log`]: committed values, every transaction in doubt with its lock
//! (it asks for its decision at once), every commit this node decided whose end is not
//! recorded (phase 2 runs again), and the next epoch of transaction IDs.

use std::collections::BTreeMap;

use crate::log::StopReason;
use crate::proto::TxId;
use crate::storage::{replay_log, Durability, RecordError, ValueLoc};
use crate::twopc::PrepareCheck;
use crate::Ts;

use super::record::{carried_value_offset_in_payload, value_offset_in_payload, PeerRecord};
use super::txid;
use super::update::Payload;
use super::{empty, Change, ConfigError, LogReader, Peer, PeerConfig, Prepared, Timer};

/// What recovery found in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecovery {
    /// Records replayed.
    pub records: usize,
    /// Bytes of the log that hold whole, valid records; the caller cuts the rest.
    pub valid_len: u64,
    /// Why decoding stopped where it did.
    pub stop: StopReason,
    /// A frame whose checksum was right but whose payload is no record.
    pub bad_record: Option<(u64, RecordError)>,
    /// Keys with a committed value.
    pub committed_keys: usize,
    /// Transactions prepared here and undecided.
    pub in_doubt: usize,
    /// Commits decided here whose phase 2 runs again.
    pub open_commits: usize,
    /// The epoch this start uses.
    pub epoch: u32,
    /// Records that contradict the protocol, skipped.
    pub anomalies: Vec<String>,
}

/// The coordinator side of the log, folded.
#[derive(Default)]
struct Coordinated {
    epoch: u32,
    commits: BTreeMap<TxId, Vec<u64>>,
}

impl<R: LogReader> Peer<R> {
    /// Rebuilds a node from its log at time `now`; `reader` reads the same bytes as `log`.
    pub fn recover(
        config: PeerConfig,
        now: Ts,
        log: &[u8],
        reader: R,
    ) -> Result<(Self, PeerRecovery), ConfigError> {
        let mut peer = empty(config, reader)?;
        peer.now = now;
        let mut coordinated = Coordinated::default();
        let scan = replay_log(log, |record, payload_offset| {
            peer.replay(record, payload_offset, &mut coordinated)
        });
        let capacity = peer.config.max_waiting + peer.reserved_for_commits();
        peer.durability = Durability::new(scan.valid_len, capacity);
        let mut anomalies = scan.anomalies;
        let open_commits = coordinated.commits.len();
        for (txid, participants) in coordinated.commits {
            if !peer.driver.has_room() {
                anomalies.push(format!("commit {txid} beyond the limit is not resumed"));
                continue;
            }
            peer.commits.insert(txid);
            peer.driver
                .resume_commit(now, txid, participants, Payload::Recovered);
        }
        let in_doubt: Vec<TxId> = peer.participant.in_doubt().collect();
        for &txid in &in_doubt {
            peer.arm_first_query(txid, 0);
        }
        let floor = peer.config.epoch_floor;
        let last_epoch = coordinated.epoch.max(floor);
        if last_epoch >= txid::EPOCH_MAX {
            return Err(ConfigError(format!(
                "the log's epoch {last_epoch} is the last one: this node has no transaction \
                 IDs left to issue"
            )));
        }
        peer.begin_epoch(last_epoch);
        peer.timers.set(Timer::Heartbeat, now);
        peer.drain_driver();
        while let Some(msg) = peer.local.pop_front() {
            peer.on_peer(msg);
        }
        let recovery = PeerRecovery {
            records: scan.records,
            valid_len: scan.valid_len,
            stop: scan.stop,
            bad_record: scan.bad_record,
            committed_keys: peer.store.len(),
            in_doubt: in_doubt.len(),
            open_commits,
            epoch: peer.epoch,
            anomalies,
        };
        peer.check_invariants_impl();
        Ok((peer, recovery))
    }

    fn replay(
        &mut self,
        record: PeerRecord,
        payload_offset: u64,
        coordinated: &mut Coordinated,
    ) -> Result<(), String> {
        let (txid, commit) = match record {
            PeerRecord::PreparePut {
                txid,
                key,
                value,
                participants,
            } => {
                let loc = ValueLoc {
                    offset: payload_offset + value_offset_in_payload(key.len()) as u64,
                    len: value.len() as u32,
                };
                let change = Change::Put { loc, value };
                let prepared = Prepared {
                    change,
                    participants,
                };
                return self.participant.replay_prepare(txid, key, prepared);
            }
            PeerRecord::PrepareDel {
                txid,
                key,
                participants,
            } => {
                let prepared = Prepared {
                    change: Change::Del,
                    participants,
                };
                return self.participant.replay_prepare(txid, key, prepared);
            }
            PeerRecord::Renounce { txid } => {
                if self.participant.check_prepare(txid) != PrepareCheck::New {
                    return Err(format!("transaction {txid} renounced after it was known"));
                }
                let _ = self.participant.check_decision(txid, false);
                return Ok(());
            }
            PeerRecord::Epoch { epoch } => {
                // This version never writes one past the last epoch.
                if epoch > txid::EPOCH_MAX {
                    return Err(format!("epoch {epoch} is past the last one"));
                }
                coordinated.epoch = coordinated.epoch.max(epoch);
                return Ok(());
            }
            PeerRecord::Decided { txid, participants } => {
                // This node wrote it as coordinator: at least one participant, each once.
                let mut distinct = participants.clone();
                distinct.sort_unstable();
                distinct.dedup();
                if participants.is_empty() || distinct.len() != participants.len() {
                    return Err(format!("commit {txid} with participants {participants:?}"));
                }
                if coordinated.commits.insert(txid, participants).is_some() {
                    return Err(format!("transaction {txid} committed twice"));
                }
                return Ok(());
            }
            PeerRecord::Finished { txid } => {
                coordinated.commits.remove(&txid);
                return Ok(());
            }
            PeerRecord::Value { key, value } => {
                return self.replay_value(key, value, payload_offset)
            }
            PeerRecord::Committed { txid } => {
                return self.participant.replay_remembered_commit(txid);
            }
            PeerRecord::Commit { txid } => (txid, true),
            PeerRecord::Abort { txid } => (txid, false),
        };
        if let Some(finished) = self.participant.replay_decision(txid, commit)? {
            if finished.commit {
                self.apply(finished.key, finished.op.change);
            }
        }
        Ok(())
    }
}

impl<R: LogReader> Peer<R> {
    /// A committed value carried by compaction enters the store; a key a transaction
    /// holds here cannot have one carried after its prepare (compaction writes values
    /// first), so that is refused as an anomaly.
    fn replay_value(
        &mut self,
        key: String,
        value: String,
        payload_offset: u64,
    ) -> Result<(), String> {
        if let Some(holder) = self.participant.lock_holder(&key) {
            return Err(format!(
                "a carried value of {key:?}, locked by transaction {holder}"
            ));
        }
        let loc = ValueLoc {
            offset: payload_offset + carried_value_offset_in_payload(key.len()) as u64,
            len: value.len() as u32,
        };
        self.store.put(key, loc, value);
        Ok(())
    }

    /// A node with an empty log, started at time 0.
    pub fn new(config: PeerConfig, reader: R) -> Result<Self, ConfigError> {
        Self::recover(config, 0, &[], reader).map(|(peer, _)| peer)
    }
}
