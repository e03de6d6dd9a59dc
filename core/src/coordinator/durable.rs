//! What makes the coordinator survive its own crash: its log, its epochs, and recovery.
//!
//! Parallel commit over presumed abort (Mohan, Lindsay, Obermarck): a transaction's
//! `Staged` record is written as its prepares go out, and the client hears `Success`
//! once every vote is `ready` and that record is durable. Its decision is written next;
//! phase 2 waits for a commit's, the client's error for an abort's. After a restart the
//! coordinator finishes phase 2 of every commit it has a record of, runs phase 1 again
//! for every transaction staged and undecided (with no deadline: each participant
//! answers the vote it made durable, so it commits exactly if every one holds it
//! prepared, which a `Success` answer needed), and asks every server which
//! transactions it holds in doubt (`indoubt`, with every heartbeat): one the
//! coordinator has no record of and is not running is aborted there.
//!
//! Membership is in the log too, so a restarted coordinator knows its ring before any
//! server registers again, and a stray new ID cannot take a slot. Transaction IDs are
//! `epoch << 32 | sequence`; every start writes the next epoch and uses none of its IDs
//! before that record is durable.

use std::collections::BTreeMap;

use crate::log::{AfterPrefix, StopReason};
use crate::proto::{ClientResponse, RegisterResponse, TxId, TxOp};
use crate::ring::ServerId;
use crate::storage::{replay_log, Durability, PersistToken, RecordError, SyncUrgency};
use crate::ReplyTo;

use super::membership::ServerState;
use super::record::CoordinatorRecord;
use super::txn::{Update, REPLICAS_PER_KEY};
use super::{ConfigError, Coordinator, CoordinatorConfig, CoordinatorOutput, Timer};

/// Registrations waiting for their record beyond the updates in flight; more are answered
/// `overloaded`.
const MAX_PENDING_REGISTRATIONS: usize = 1024;

/// What waits for a write of the coordinator's log.
#[derive(Clone, Debug)]
pub(super) enum Deferred {
    /// Acknowledge a registration whose member record is durable.
    RegisterAck(ReplyTo),
    /// A committed transaction's `Staged` record is durable: answer `Success`.
    Visible(TxId),
    /// A commit decision is durable: start phase 2.
    Committed(TxId),
    /// An abort decision is durable: give the client its error.
    Answer(ReplyTo, ClientResponse),
}

/// What recovery found in the coordinator's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorRecovery {
    /// Records replayed.
    pub records: usize,
    /// Bytes of the log that hold whole, valid records; the caller cuts the rest.
    pub valid_len: u64,
    /// Why decoding stopped where it did.
    pub stop: StopReason,
    /// What lies after the valid prefix: a torn tail, or corruption the caller must not
    /// cut without an operator's word.
    pub after: AfterPrefix,
    /// A frame whose checksum was right but whose payload is no record.
    pub bad_record: Option<(u64, RecordError)>,
    /// Servers known.
    pub members: usize,
    /// Commits whose phase 2 runs again.
    pub open_commits: usize,
    /// Transactions staged and not decided: their participants vote again, and each
    /// commits only if every one holds it prepared.
    pub staged: usize,
    /// The epoch this start uses.
    pub epoch: u32,
    /// Records that contradict each other, skipped.
    pub anomalies: Vec<String>,
}

/// A transaction as the log names it: its key, operation and participants.
type Logged = (String, TxOp, Vec<ServerId>);

/// The state a log folds into.
#[derive(Default)]
struct Folded {
    epoch: u32,
    expected_servers: Option<u32>,
    members: BTreeMap<ServerId, String>,
    /// Committed, and their end not recorded: phase 2 runs again.
    commits: BTreeMap<TxId, Logged>,
    /// Staged and not decided: phase 1 runs again.
    staged: BTreeMap<TxId, Logged>,
}

impl Folded {
    fn step(&mut self, record: CoordinatorRecord) -> Result<(), String> {
        match record {
            CoordinatorRecord::Epoch {
                epoch,
                expected_servers,
            } => {
                self.epoch = self.epoch.max(epoch);
                self.expected_servers = Some(expected_servers);
            }
            CoordinatorRecord::Member { id, addr } => {
                self.members.insert(id, addr);
            }
            CoordinatorRecord::Commit {
                txid,
                key,
                op,
                participants,
            } => {
                if self.staged.contains_key(&txid)
                    || self.commits.insert(txid, (key, op, participants)).is_some()
                {
                    return Err(format!("transaction {txid} committed twice"));
                }
            }
            CoordinatorRecord::Staged {
                txid,
                key,
                op,
                participants,
            } => {
                if self.commits.contains_key(&txid)
                    || self.staged.insert(txid, (key, op, participants)).is_some()
                {
                    return Err(format!("transaction {txid} staged twice"));
                }
            }
            CoordinatorRecord::Decided { txid, commit } => {
                let Some(logged) = self.staged.remove(&txid) else {
                    return Err(format!("decision of {txid}, which is not staged"));
                };
                if commit {
                    self.commits.insert(txid, logged);
                }
            }
            CoordinatorRecord::Finished { txid } => {
                self.commits.remove(&txid);
            }
        }
        Ok(())
    }
}

impl Folded {
    /// Keeps the members a ring of `expected_servers` holds (the lowest IDs, as this
    /// version never writes more) and the commits it can finish: two distinct kept
    /// servers, at most one per key. This version writes nothing else; a log that says
    /// otherwise is damaged, and what contradicts it is skipped, never trusted.
    fn keep_usable(&mut self, expected_servers: usize) -> Vec<String> {
        let mut anomalies = Vec::new();
        let extra: Vec<ServerId> = self
            .members
            .keys()
            .copied()
            .skip(expected_servers)
            .collect();
        for id in extra {
            self.members.remove(&id);
            anomalies.push(format!("member {id} beyond a ring of {expected_servers}"));
        }
        let mut keys = std::collections::BTreeSet::new();
        let members = &self.members;
        let mut usable = |kind: &str, txid: &TxId, (key, _, participants): &Logged| {
            let mut distinct = participants.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let known = participants.iter().all(|p| members.contains_key(p));
            let usable = known
                && participants.len() == REPLICAS_PER_KEY
                && distinct.len() == participants.len()
                && keys.insert(key.clone());
            if !usable {
                anomalies.push(format!(
                    "{kind} {txid} of {key:?} on {participants:?} skipped"
                ));
            }
            usable
        };
        self.commits
            .retain(|txid, logged| usable("commit", txid, logged));
        self.staged
            .retain(|txid, logged| usable("staged transaction", txid, logged));
        anomalies
    }
}

impl Coordinator {
    /// Rebuilds a coordinator from its log: its ring, and every commit whose phase 2 may
    /// not have reached both replicas, which runs again at once. Fails on a log written
    /// for another number of servers.
    pub fn recover(
        config: CoordinatorConfig,
        log: &[u8],
    ) -> Result<(Self, CoordinatorRecovery), ConfigError> {
        let mut coordinator = Self::empty(config)?;
        let mut folded = Folded::default();
        let scan = replay_log(log, |record, _| folded.step(record));
        if let Some(expected) = folded.expected_servers {
            if expected as usize != config.expected_servers {
                return Err(ConfigError(format!(
                    "the data directory belongs to a ring of {expected} servers, not {}",
                    config.expected_servers
                )));
            }
        }
        let last_epoch = folded.epoch.max(config.epoch_floor);
        if last_epoch == u32::MAX {
            return Err(ConfigError(format!(
                "the log's epoch {last_epoch} is the last one: no transaction IDs are left"
            )));
        }
        let mut anomalies = scan.anomalies;
        anomalies.extend(folded.keep_usable(config.expected_servers));
        coordinator.durability = Durability::new(scan.valid_len, deferred_limit(&config));
        let open_commits = folded.commits.len();
        let staged = folded.staged.len();
        if open_commits + staged > config.max_updates {
            // Each must run again, and none may be dropped: a commit dropped would be
            // lost, a staged transaction dropped might have been answered `Success`.
            return Err(ConfigError(format!(
                "the log holds {} transactions under way, more than the {} updates this \
                 coordinator runs at once",
                open_commits + staged,
                config.max_updates
            )));
        }
        let members = folded.members.len();
        coordinator.restore(folded.members, folded.commits, folded.staged);
        coordinator.begin_epoch(last_epoch);
        let recovery = CoordinatorRecovery {
            records: scan.records,
            valid_len: scan.valid_len,
            stop: scan.stop,
            after: scan.after,
            bad_record: scan.bad_record,
            members,
            open_commits,
            staged,
            epoch: coordinator.epoch,
            anomalies,
        };
        Ok((coordinator, recovery))
    }

    /// Puts the recovered members on the ring, runs phase 2 of the recovered commits and
    /// phase 1 of the staged transactions again.
    fn restore(
        &mut self,
        members: BTreeMap<ServerId, String>,
        commits: BTreeMap<TxId, Logged>,
        staged: BTreeMap<TxId, Logged>,
    ) {
        for (id, addr) in members.into_iter().take(self.config.expected_servers) {
            self.ring.insert(id);
            let state = ServerState {
                addr: addr.clone(),
                last_heard: self.now,
            };
            self.servers.insert(id, state);
            self.outputs
                .push_back(CoordinatorOutput::ServerAddr { server: id, addr });
        }
        if !self.servers.is_empty() {
            let at = self.now + self.config.heartbeat_interval_ms;
            self.timers.set(Timer::Heartbeat, at);
        }
        for (txid, logged) in commits {
            self.resume(txid, logged, true);
        }
        for (txid, logged) in staged {
            self.resume(txid, logged, false);
        }
        self.drain_driver();
    }

    /// Runs a recovered transaction again: phase 2 of a commit, or phase 1 of one
    /// staged and not decided. A participant holding the ready vote an answer was given
    /// on may be down now: a staged transaction waits for every vote, however long.
    fn resume(&mut self, txid: TxId, (key, op, participants): Logged, committed: bool) {
        if !participants.iter().all(|p| self.servers.contains_key(p)) {
            // Cannot happen: members are written before any transaction that uses them,
            // and recovery skips what names others.
            panic!("recovered transaction {txid} names a server the log does not know");
        }
        let state = self.keys.entry(key.clone()).or_default();
        assert!(
            state.active.is_none(),
            "two recovered transactions on {key:?}"
        );
        state.active = Some(txid);
        if committed {
            let update = Update::recovered(key, op);
            self.driver
                .resume_commit(self.now, txid, participants, update);
        } else {
            let update = Update::resolving(key, op);
            self.driver
                .resume_voting(self.now, txid, participants, update);
        }
    }

    /// Starts epoch `after + 1`: its record is written now, and its IDs are used once it
    /// is durable.
    fn begin_epoch(&mut self, after: u32) {
        let Some(epoch) = after.checked_add(1) else {
            panic!("transaction ID epochs exhausted");
        };
        self.epoch = epoch;
        self.next_seq = 1;
        let record = CoordinatorRecord::Epoch {
            epoch,
            expected_servers: self.config.expected_servers as u32,
        };
        self.epoch_token = self.append(&record);
    }

    /// The next transaction ID, or `None` while the epoch's record is not yet durable.
    pub(super) fn next_txid(&mut self) -> Option<TxId> {
        if !self.durability.is_durable(self.epoch_token) {
            return None;
        }
        let txid = (u64::from(self.epoch) << 32) | u64::from(self.next_seq);
        match self.next_seq.checked_add(1) {
            Some(next) => self.next_seq = next,
            None => self.begin_epoch(self.epoch),
        }
        Some(txid)
    }

    /// Appends a record to the log; the caller defers what must wait for it.
    pub(super) fn append(&mut self, record: &CoordinatorRecord) -> PersistToken {
        self.append_bytes(record.encode(), record.urgency())
    }

    /// Appends an encoded record's payload, synced as `urgency` says.
    pub(super) fn append_bytes(&mut self, payload: Vec<u8>, urgency: SyncUrgency) -> PersistToken {
        let appended = self.durability.append(&payload);
        let token = appended.persist.token;
        self.outputs.push_back(CoordinatorOutput::Persist {
            token,
            bytes: appended.persist.bytes,
            urgency,
        });
        token
    }

    /// Whether `extra` more actions may wait for the log.
    pub(super) fn has_room_to_defer(&self, extra: usize) -> bool {
        self.durability.has_room(extra)
    }

    /// Runs `action` once `token` is durable (at once if it already is).
    pub(super) fn defer(&mut self, token: PersistToken, action: Deferred) {
        if let Some(now) = self.durability.defer(token, action) {
            self.run(now);
        }
    }

    pub(super) fn on_persisted(&mut self, token: PersistToken) {
        self.durability.persisted(token);
        while let Some(action) = self.durability.pop_ready() {
            self.run(action);
        }
    }

    fn run(&mut self, action: Deferred) {
        match action {
            Deferred::RegisterAck(to) => self.outputs.push_back(CoordinatorOutput::RegisterReply {
                to,
                msg: RegisterResponse::Ack,
            }),
            Deferred::Visible(txid) => self.on_commit_visible(txid),
            Deferred::Committed(txid) => self.on_commit_durable(txid),
            Deferred::Answer(to, answer) => {
                assert!(self.answers_waiting > 0, "an answer nobody counted");
                self.answers_waiting -= 1;
                self.reply(to, answer);
            }
        }
    }

    /// A server listed what it holds in doubt: abort what is neither running here nor
    /// committed (presumed abort).
    pub(super) fn on_in_doubt(&mut self, server: ServerId, txids: &[TxId]) {
        for &txid in txids {
            if self.driver.payload(txid).is_none() {
                self.driver.abort_unknown(self.now, txid, server);
            }
        }
    }

    pub(super) fn check_durability(&self) {
        self.durability.check_invariants();
        assert!(self.epoch >= 1, "no epoch began");
        assert!(self.next_seq >= 1, "transaction ID sequence at 0");
    }
}

/// How many actions may wait for the coordinator's log: a transaction's answer and its
/// phase 2, or an abort's answer after its transaction ended (which counts against
/// `max_updates` until it is given), and the registrations.
pub(super) fn deferred_limit(config: &CoordinatorConfig) -> usize {
    2 * config.max_updates + MAX_PENDING_REGISTRATIONS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::encode_frame;

    fn log_of(records: &[CoordinatorRecord]) -> Vec<u8> {
        let mut log = Vec::new();
        for record in records {
            encode_frame(&record.encode(), &mut log);
        }
        log
    }

    fn member(id: ServerId) -> CoordinatorRecord {
        CoordinatorRecord::Member {
            id,
            addr: format!("127.0.0.1:{}", 7000 + id),
        }
    }

    fn commit(txid: TxId, key: &str, participants: Vec<ServerId>) -> CoordinatorRecord {
        CoordinatorRecord::Commit {
            txid,
            key: key.to_owned(),
            op: TxOp::Del,
            participants,
        }
    }

    #[test]
    fn commits_a_ring_cannot_finish_are_skipped_as_anomalies() {
        let epoch = CoordinatorRecord::Epoch {
            epoch: 1,
            expected_servers: 2,
        };
        let log = log_of(&[
            epoch,
            member(1),
            member(2),
            member(3),
            commit(10, "a", vec![1, 2]),
            commit(11, "b", vec![]),
            commit(12, "c", vec![1, 1]),
            commit(13, "d", vec![1, 3]),
            commit(14, "e", vec![1, 9]),
            commit(15, "a", vec![2, 1]),
        ]);
        let (_, report) = Coordinator::recover(CoordinatorConfig::new(2), &log).expect("recovers");
        assert_eq!(report.members, 2, "the ring holds two");
        assert_eq!(report.open_commits, 1, "only the commit of a on 1 and 2");
        assert_eq!(report.anomalies.len(), 6, "{:?}", report.anomalies);
    }

    #[test]
    fn a_log_with_more_transactions_under_way_than_max_updates_is_refused() {
        let mut records = vec![
            CoordinatorRecord::Epoch {
                epoch: 1,
                expected_servers: 2,
            },
            member(1),
            member(2),
            commit(10, "a", vec![1, 2]),
        ];
        records.push(CoordinatorRecord::Staged {
            txid: 11,
            key: "b".into(),
            op: TxOp::Del,
            participants: vec![2, 1],
        });
        let log = log_of(&records);
        let mut config = CoordinatorConfig::new(2);
        config.max_updates = 1;
        let err = Coordinator::recover(config, &log)
            .err()
            .expect("two transactions do not fit in one slot");
        assert!(
            err.0
                .contains("holds 2 transactions under way, more than the 1"),
            "{err}"
        );
        config.max_updates = 2;
        let (_, report) = Coordinator::recover(config, &log).expect("they fit in two");
        assert_eq!((report.open_commits, report.staged), (1, 1));
    }

    #[test]
    fn a_log_at_the_last_epoch_is_refused_with_an_error() {
        let log = log_of(&[CoordinatorRecord::Epoch {
            epoch: u32::MAX,
            expected_servers: 2,
        }]);
        let err = Coordinator::recover(CoordinatorConfig::new(2), &log)
            .err()
            .expect("no epoch is left");
        assert!(err.0.contains("no transaction IDs are left"), "{err}");
    }
}
