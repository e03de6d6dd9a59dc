//! Compaction of the coordinator's log: the records recovery needs, and nothing else.
//!
//! Recovery folds the log into the current epoch, the members, the commits whose end is
//! not recorded and the transactions staged and not decided (see `durable`). Those are
//! all in the coordinator's memory, so a compacted log is a pure function of its state:
//! one `Epoch` record, one `Member` per server, one `Commit` per transaction whose commit
//! decision was appended and whose `Finished` was not, one `Staged` per transaction with
//! no decision appended. Its size is bounded by the members and the transactions under
//! way (at most `max_updates`), not by the history, so the caller may write it on its
//! loop.
//!
//! The state it describes includes records appended and not yet durable: once the
//! compacted log is durable, so is everything appended before it was taken.

use crate::log::encode_frame;
use crate::proto::TxId;

use super::record::CoordinatorRecord;
use super::Coordinator;

impl Coordinator {
    /// The records that recover this coordinator's state (its epoch, members and open
    /// commits), in a fixed order: members by ID, commits by transaction ID.
    pub fn compaction_records(&self) -> Vec<CoordinatorRecord> {
        let mut records = vec![CoordinatorRecord::Epoch {
            epoch: self.epoch,
            expected_servers: self.config.expected_servers as u32,
        }];
        records.extend(
            self.servers
                .iter()
                .map(|(&id, state)| CoordinatorRecord::Member {
                    id,
                    addr: state.addr.clone(),
                }),
        );
        let mut open: Vec<(TxId, CoordinatorRecord)> = self
            .keys
            .values()
            .filter_map(|state| state.active)
            .filter_map(|txid| Some((txid, self.open_record(txid)?)))
            .collect();
        open.sort_by_key(|(txid, _)| *txid);
        records.extend(open.into_iter().map(|(_, record)| record));
        records
    }

    /// [`Coordinator::compaction_records`] framed as a whole log, ready to replace the
    /// file.
    pub fn compaction_log(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for record in self.compaction_records() {
            encode_frame(&record.encode(), &mut out);
        }
        out
    }

    /// What recovery must know of `txid`: a commit whose end was not appended, or a
    /// transaction staged and not decided. An abort leaves nothing (presumed abort).
    fn open_record(&self, txid: TxId) -> Option<CoordinatorRecord> {
        let update = self.driver.payload(txid)?;
        let participants = self.driver.participants(txid)?.to_vec();
        let (key, op) = (update.key.clone(), update.op.clone());
        match update.decided {
            Some((true, _)) => Some(CoordinatorRecord::Commit {
                txid,
                key,
                op,
                participants,
            }),
            None => Some(CoordinatorRecord::Staged {
                txid,
                key,
                op,
                participants,
            }),
            Some((false, _)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::coordinator::{CoordinatorConfig, CoordinatorOutput};
    use crate::proto::TxOp;
    use crate::role::Role;

    const SERVERS: usize = 3;

    /// One step of a history the coordinator could have written.
    #[derive(Clone, Debug)]
    enum Step {
        Register {
            id: u64,
            addr: u8,
        },
        /// A commit, written whole (`staged: false`) or staged then decided.
        Commit {
            key: u8,
            put: bool,
            staged: bool,
        },
        /// A transaction staged and left undecided.
        Stage {
            key: u8,
            put: bool,
        },
        /// A decision of an undecided staged transaction.
        Decide {
            pick: usize,
            commit: bool,
        },
        Finish {
            pick: usize,
        },
        Restart,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u64..=SERVERS as u64, 0u8..4).prop_map(|(id, addr)| Step::Register { id, addr }),
            (0u8..6, any::<bool>(), any::<bool>()).prop_map(|(key, put, staged)| Step::Commit {
                key,
                put,
                staged
            }),
            (0u8..6, any::<bool>()).prop_map(|(key, put)| Step::Stage { key, put }),
            (any::<usize>(), any::<bool>())
                .prop_map(|(pick, commit)| Step::Decide { pick, commit }),
            any::<usize>().prop_map(|pick| Step::Finish { pick }),
            Just(Step::Restart),
        ]
    }

    /// Turns steps into the records a coordinator would have written for them: commits
    /// only name registered servers, and a key has one open commit at a time.
    fn history(steps: &[Step]) -> Vec<CoordinatorRecord> {
        let mut records = vec![epoch(1)];
        let mut members = BTreeMap::new();
        let mut open: BTreeMap<u64, String> = BTreeMap::new();
        let mut undecided: BTreeMap<u64, String> = BTreeMap::new();
        let (mut epoch_now, mut seq) = (1u32, 0u32);
        for step in steps {
            match step {
                Step::Register { id, addr } => {
                    let addr = format!("10.0.0.{addr}:7000");
                    members.insert(*id, addr.clone());
                    records.push(CoordinatorRecord::Member { id: *id, addr });
                }
                Step::Commit { key, put, .. } | Step::Stage { key, put } => {
                    let key = format!("k{key}");
                    let busy = open.values().chain(undecided.values()).any(|k| *k == key);
                    if members.len() < 2 || busy {
                        continue;
                    }
                    seq += 1;
                    let txid = (u64::from(epoch_now) << 32) | u64::from(seq);
                    let op = if *put {
                        TxOp::Put {
                            value: format!("v{txid}"),
                        }
                    } else {
                        TxOp::Del
                    };
                    let participants: Vec<u64> = members.keys().take(2).copied().collect();
                    match step {
                        Step::Commit { staged: false, .. } => {
                            open.insert(txid, key.clone());
                            records.push(CoordinatorRecord::Commit {
                                txid,
                                key,
                                op,
                                participants,
                            });
                        }
                        Step::Commit { .. } => {
                            open.insert(txid, key.clone());
                            records.push(CoordinatorRecord::Staged {
                                txid,
                                key,
                                op,
                                participants,
                            });
                            records.push(CoordinatorRecord::Decided { txid, commit: true });
                        }
                        _ => {
                            undecided.insert(txid, key.clone());
                            records.push(CoordinatorRecord::Staged {
                                txid,
                                key,
                                op,
                                participants,
                            });
                        }
                    }
                }
                Step::Decide { pick, commit } => {
                    if undecided.is_empty() {
                        continue;
                    }
                    let txid = *undecided.keys().nth(pick % undecided.len()).unwrap();
                    let key = undecided.remove(&txid).unwrap();
                    if *commit {
                        open.insert(txid, key);
                    }
                    records.push(CoordinatorRecord::Decided {
                        txid,
                        commit: *commit,
                    });
                }
                Step::Finish { pick } => {
                    if open.is_empty() {
                        continue;
                    }
                    let txid = *open.keys().nth(pick % open.len()).unwrap();
                    open.remove(&txid);
                    records.push(CoordinatorRecord::Finished { txid });
                }
                Step::Restart => {
                    epoch_now += 1;
                    seq = 0;
                    records.push(epoch(epoch_now));
                }
            }
        }
        records
    }

    /// What recovery must keep of `records`, worked out plainly: every member's last
    /// address (by ID), then every transaction neither aborted nor finished (by txid),
    /// as a commit once decided, else as staged.
    fn kept_by(records: &[CoordinatorRecord]) -> Vec<CoordinatorRecord> {
        let mut members = BTreeMap::new();
        let mut kept: BTreeMap<TxId, CoordinatorRecord> = BTreeMap::new();
        for record in records {
            match record.clone() {
                CoordinatorRecord::Member { id, addr } => {
                    members.insert(id, addr);
                }
                commit @ CoordinatorRecord::Commit { txid, .. } => {
                    kept.insert(txid, commit);
                }
                staged @ CoordinatorRecord::Staged { txid, .. } => {
                    kept.insert(txid, staged);
                }
                CoordinatorRecord::Decided { txid, commit } => {
                    let decided = kept.remove(&txid);
                    if let (
                        true,
                        Some(CoordinatorRecord::Staged {
                            key,
                            op,
                            participants,
                            ..
                        }),
                    ) = (commit, decided)
                    {
                        let commit = CoordinatorRecord::Commit {
                            txid,
                            key,
                            op,
                            participants,
                        };
                        kept.insert(txid, commit);
                    }
                }
                CoordinatorRecord::Finished { txid } => {
                    kept.remove(&txid);
                }
                CoordinatorRecord::Epoch { .. } => {}
            }
        }
        let members = members
            .into_iter()
            .map(|(id, addr)| CoordinatorRecord::Member { id, addr });
        members.chain(kept.into_values()).collect()
    }

    fn epoch(epoch: u32) -> CoordinatorRecord {
        CoordinatorRecord::Epoch {
            epoch,
            expected_servers: SERVERS as u32,
        }
    }

    fn frames(records: &[CoordinatorRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            encode_frame(&record.encode(), &mut out);
        }
        out
    }

    /// Recovers from `log`, and returns the coordinator with the bytes it appended while
    /// starting (its epoch's record), which belong to its log.
    fn recover(log: &[u8]) -> (Coordinator, Vec<u8>) {
        let (mut coordinator, _) =
            Coordinator::recover(CoordinatorConfig::new(SERVERS), log).unwrap();
        let mut appended = Vec::new();
        while let Some(output) = coordinator.poll_output() {
            if let CoordinatorOutput::Persist { bytes, .. } = output {
                appended.extend_from_slice(&bytes);
            }
        }
        (coordinator, appended)
    }

    proptest! {
        #[test]
        fn a_log_compacted_anywhere_recovers_as_the_whole_log(
            steps in prop::collection::vec(step(), 0..60),
            cut in any::<prop::sample::Index>(),
        ) {
            let records = history(&steps);
            let at = cut.index(records.len() + 1);
            let (prefix, rest) = records.split_at(at);
            // The coordinator that ran on the prefix compacts its log; the rest was
            // written after.
            let (running, started) = recover(&frames(prefix));
            let mut whole = frames(prefix);
            whole.extend_from_slice(&started);
            whole.extend_from_slice(&frames(rest));
            let mut compacted = running.compaction_log();
            compacted.extend_from_slice(&frames(rest));

            let (from_whole, _) = recover(&whole);
            let (from_compacted, _) = recover(&compacted);
            prop_assert_eq!(from_whole.compaction_records(), from_compacted.compaction_records());
            prop_assert_eq!(from_whole.open_transactions(), from_compacted.open_transactions());
            // What recovery keeps, against a plain fold of the history (not a second
            // projection through `compaction_records`, which a bug would share).
            prop_assert_eq!(&from_compacted.compaction_records()[1..], &kept_by(&records)[..]);
            // A compaction never grows the log it replaces.
            prop_assert!(running.compaction_log().len() <= frames(prefix).len() + started.len());
            // Compacting what was compacted changes nothing.
            let (again, _) = recover(&from_compacted.compaction_log());
            prop_assert_eq!(again.compaction_records(), from_compacted.compaction_records()[..].iter().map(|r| match r {
                CoordinatorRecord::Epoch { epoch, expected_servers } => CoordinatorRecord::Epoch { epoch: epoch + 1, expected_servers: *expected_servers },
                other => other.clone(),
            }).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_compacted_log_keeps_only_what_recovery_needs() {
        let steps = [
            Step::Register { id: 1, addr: 0 },
            Step::Register { id: 2, addr: 1 },
            Step::Register { id: 2, addr: 2 },
            Step::Commit {
                key: 0,
                put: true,
                staged: false,
            },
            Step::Commit {
                key: 1,
                put: false,
                staged: true,
            },
            Step::Finish { pick: 0 },
            Step::Restart,
        ];
        let (running, _) = recover(&frames(&history(&steps)));
        let records = running.compaction_records();
        assert_eq!(
            records[0],
            epoch(3),
            "the epoch the running coordinator uses"
        );
        assert_eq!(
            records[1..3],
            [
                CoordinatorRecord::Member {
                    id: 1,
                    addr: "10.0.0.0:7000".into()
                },
                CoordinatorRecord::Member {
                    id: 2,
                    addr: "10.0.0.2:7000".into()
                },
            ],
            "each member once, at its last address"
        );
        assert_eq!(records.len(), 4, "one open commit: {records:?}");
        assert!(
            matches!(&records[3], CoordinatorRecord::Commit { key, op: TxOp::Del, .. } if key == "k1"),
            "the finished commit is gone, the open one stays: {records:?}"
        );
    }
}
