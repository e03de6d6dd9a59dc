//! Rebuilding a node from its log bytes alone, as a fold of its records through the
//! shared `replay_log`: every key's last state, the hints still owed, and the floor of
//! its counters. A compacted log (see `compact`) is read the same way: its `Carried`
//! record stands for what the records it dropped said.

use crate::log::StopReason;
use crate::role::Role;
use crate::storage::{replay_log, Durability, LogReader, ValueLoc};

use super::hints::{Admission, Hint};
use super::record::{state_offset_in_payload, Record, RecordError};
use super::state::KeyState;
use super::{Node, NodeConfig, TimerKind};

/// How far past the highest id in the log a recovered node numbers its requests: more
/// than one life of a node could use (2^40 requests), and small enough that a 63-bit
/// counter never wraps across restarts.
const REQ_GAP_AFTER_LOG: u64 = 1 << 40;

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
    /// stopped (a log of a newer version, or a bug).
    pub bad_record: Option<(u64, RecordError)>,
    /// Keys holding a state.
    pub keys: usize,
    /// Hints still owed.
    pub hints: usize,
    /// Records that could not be applied (a state that does not decode), skipped.
    pub anomalies: Vec<String>,
}

impl<R: LogReader> Node<R> {
    /// Rebuilds a node from its log; `reader` must read the same bytes as `log`. A node
    /// whose data directory was empty is started with [`Node::new`] and a fresh
    /// incarnation instead.
    pub fn recover(
        config: NodeConfig,
        log: &[u8],
        reader: R,
    ) -> Result<(Self, RecoveryReport), String> {
        let mut node = Node::blank(config, reader)?;
        let mut highest_id = 0u64;
        let scan = replay_log(log, |record: Record, payload_offset| {
            match &record {
                Record::Hint { id, .. } | Record::Owed { id, .. } => {
                    highest_id = highest_id.max(*id);
                }
                // A compacted log's settled ids are gone; the number the node had
                // reached when compacting stands for them.
                Record::Carried { next_req, .. } => highest_id = highest_id.max(*next_req),
                _ => {}
            }
            node.replay(record, payload_offset)
        });
        node.durability = Durability::new(scan.valid_len, node.config.max_waiting);
        // Hint and owed ids and request numbers share one counter; a new one must not
        // name an old hint or owed key, nor a request of the earlier life made after its
        // last logged id (a first replica that saw it would take the new one for a copy).
        // The earlier life started at a random point too, so past the last logged id
        // by more than any life could number, or at this life's random point if higher.
        let past_logged = highest_id.saturating_add(REQ_GAP_AFTER_LOG);
        node.next_req = node.next_req.max(past_logged);
        // It crashed while catching up: it asks every node again.
        if node.resync.logged {
            node.start_resync();
        }
        node.arm_age_sweep();
        // Every node is taken to be up at start, so what is owed is replayed at once
        // rather than after the next sign of life of each target.
        let targets: Vec<_> = node.hints.targets().collect();
        for target in targets {
            node.wake_hints(target);
        }
        node.rearm_after_recovery = !node.graves.is_empty() || !node.owed.is_empty();
        if node.rearm_after_recovery {
            // Wake at once: the first input sets their times from its `now`.
            node.timers.set(TimerKind::OwedSweep, 0);
        }
        let report = RecoveryReport {
            records: scan.records,
            valid_len: scan.valid_len,
            stop: scan.stop,
            bad_record: scan.bad_record,
            keys: node.store.len(),
            hints: node.hints.len(),
            anomalies: scan.anomalies,
        };
        node.check_invariants();
        Ok((node, report))
    }

    fn replay(&mut self, record: Record, payload_offset: u64) -> Result<(), String> {
        match record {
            Record::State { key, state } => self.replay_state(key, &state, payload_offset)?,
            Record::Hint {
                id,
                target,
                created_ms,
                key,
                state,
            } => {
                // Ids are never reused; a log that repeats one is damaged.
                if self.hints.get(id).is_some() {
                    return Err(format!("hint {id} twice"));
                }
                self.replay_hint(Hint {
                    id,
                    target,
                    key,
                    state,
                    created_ms,
                    sent_ms: None,
                });
            }
            Record::HintDone { id } => {
                self.hints.remove(id);
            }
            Record::Owed {
                id,
                coordinator,
                coordinator_req,
                key,
                targets,
            } => {
                // This node writes a debt only to other nodes, and at least one.
                if targets.is_empty() || targets.contains(&self.config.id) {
                    return Err(format!("debt {id} of {key:?} owed to {targets:?}"));
                }
                let owed = super::owed::Owed {
                    key,
                    targets: targets.into_iter().collect(),
                    coordinator,
                    coordinator_req,
                    due_ms: None,
                };
                // Beyond the limit (settings changed since), the oldest are kept.
                if self.owed.len() < self.config.max_pending {
                    self.owed.insert(id, owed);
                }
            }
            Record::Settled { id } => {
                self.owed.remove(&id);
            }
            Record::Reaped { key, floor } => {
                self.store.remove(&key);
                self.graves.remove(&key);
                self.floor = self.floor.max(floor);
            }
            Record::CatchingUp => self.resync.logged = true,
            Record::CaughtUp => self.resync.logged = false,
            Record::Carried {
                floor,
                next_req: _,
                last_stamp_ms,
            } => {
                self.floor = self.floor.max(floor);
                if let Some(ts_ms) = last_stamp_ms {
                    let stamp = crate::versions::Stamp {
                        ts_ms,
                        node: self.config.id,
                    };
                    self.last_stamp = self.last_stamp.max(Some(stamp));
                }
            }
        }
        Ok(())
    }

    fn replay_state(
        &mut self,
        key: String,
        state: &[u8],
        payload_offset: u64,
    ) -> Result<(), String> {
        let decoded = KeyState::from_bytes(state)?;
        if let KeyState::Lww(version) = &decoded {
            // Stamps of this node stay increasing across restarts, even if the caller's
            // clock went back.
            if version.stamp.node == self.config.id {
                self.last_stamp = self.last_stamp.max(Some(version.stamp));
            }
        }
        let loc = ValueLoc {
            offset: payload_offset + state_offset_in_payload(key.len()) as u64,
            len: u32::try_from(state.len()).map_err(|_| "state too long")?,
        };
        match &decoded {
            KeyState::Siblings(c) if c.is_empty() => {
                self.graves.insert(key.clone(), 0);
            }
            _ => {
                self.graves.remove(&key);
            }
        }
        self.store.put(key, loc, decoded);
        Ok(())
    }

    fn replay_hint(&mut self, hint: Hint) {
        let other_member =
            hint.target != self.config.id && self.config.cluster.nodes.contains_key(&hint.target);
        let fits = self.hints.admit(hint.target, &hint.key, hint.state.len()) == Admission::Fits;
        if other_member && fits {
            self.hints.insert(hint);
        } else {
            // The cluster or the bounds changed since: counted as dropped.
            self.hints.count_dropped();
        }
    }
}
