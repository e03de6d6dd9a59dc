//! Reads this node coordinates: `getreq` asks all N replicas and answers once R did,
//! merging what they hold. With read repair, when the answers it used disagree, it first
//! writes the merged state to those replicas and answers once they hold it (so a later
//! read at the same level never goes back in time); then, up to the deadline, it waits
//! for the other replicas and sends the merged state to every one that answered
//! something older or nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::proto::{Consistency, EventualResponse, PeerMessage, StateBytes};
use crate::storage::LogReader;
use crate::ReplyTo;

use super::config::NodeId;
use super::state::KeyState;
use super::{Node, Pending, TimerKind};

/// Where a read stands.
#[derive(Clone, Debug)]
pub(super) enum ReadPhase {
    /// Waiting for R answers.
    Collecting,
    /// Writing the merged state to the answering replicas that lacked it.
    Repairing {
        merged: Option<KeyState>,
        waiting: BTreeSet<NodeId>,
    },
    /// The client has its answer; waiting for the other replicas until the deadline.
    Answered { merged: Option<KeyState> },
}

/// A read in flight.
#[derive(Clone, Debug)]
pub(super) struct PendingRead {
    pub(super) to: ReplyTo,
    pub(super) key: String,
    pub(super) replicas: Vec<NodeId>,
    /// R.
    pub(super) need: usize,
    /// Each replica's answer (`None`: it holds nothing).
    pub(super) answers: BTreeMap<NodeId, Option<KeyState>>,
    pub(super) phase: ReadPhase,
}

/// The join of every answer.
pub(super) fn merge_all<'a>(
    states: impl Iterator<Item = &'a Option<KeyState>>,
) -> (Option<KeyState>, u64) {
    let mut merged: Option<KeyState> = None;
    let mut reused = 0u64;
    for state in states.flatten() {
        match merged.as_mut() {
            None => merged = Some(state.clone()),
            Some(m) => reused += m.merge(state).reused_dots as u64,
        }
    }
    (merged, reused)
}

/// Whether a replica that answered `answer` holds everything of `merged`.
fn holds(answer: &Option<KeyState>, merged: &Option<KeyState>) -> bool {
    match (answer, merged) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(m)) => a.includes(m),
    }
}

impl<R: LogReader> Node<R> {
    pub(super) fn start_read(&mut self, to: ReplyTo, key: String, level: Consistency) {
        let replicas = self.replicas_of(&key);
        let need = match self.admit(level, &replicas) {
            Ok(need) => need,
            Err(code) => return self.reply(to, EventualResponse::error(code)),
        };
        let req = self.new_req();
        let read = PendingRead {
            to,
            key: key.clone(),
            replicas: replicas.clone(),
            need,
            answers: BTreeMap::new(),
            phase: ReadPhase::Collecting,
        };
        self.pending.insert(req, Pending::Read(read));
        self.timers
            .set(TimerKind::Request(req), self.now + self.config.timeout_ms);
        for target in replicas {
            let msg = PeerMessage::Read {
                req,
                key: key.clone(),
            };
            self.send(target, msg);
        }
    }

    /// A replica's state for one of our reads.
    pub(super) fn on_state(&mut self, from: NodeId, req: u64, state: Option<StateBytes>) {
        let state = match state
            .map(|bytes| KeyState::from_bytes(&bytes.0))
            .transpose()
        {
            Ok(state) => state,
            Err(_) => {
                self.stats.bad_states += 1;
                return;
            }
        };
        let Some(Pending::Read(read)) = self.pending.get_mut(&req) else {
            return;
        };
        if !read.replicas.contains(&from) || read.answers.contains_key(&from) {
            return;
        }
        read.answers.insert(from, state);
        let (collecting, all) = (
            matches!(read.phase, ReadPhase::Collecting) && read.answers.len() >= read.need,
            read.answers.len() == read.replicas.len(),
        );
        if collecting {
            self.quorum_reached(req);
        } else if all && matches!(read.phase, ReadPhase::Answered { .. }) {
            self.finish_read(req);
        }
    }

    /// R replicas answered: answer, or first repair the ones that lacked something.
    fn quorum_reached(&mut self, req: u64) {
        let repair = self.config.repair.reads();
        let Some(Pending::Read(read)) = self.pending.get_mut(&req) else {
            return;
        };
        let (merged, reused) = merge_all(read.answers.values());
        let stale: BTreeSet<NodeId> = read
            .answers
            .iter()
            .filter(|(_, answer)| !holds(answer, &merged))
            .map(|(&id, _)| id)
            .collect();
        let key = read.key.clone();
        self.stats.reused_dots += reused;
        if repair && !stale.is_empty() {
            if let (Some(state), Some(Pending::Read(read))) = (&merged, self.pending.get_mut(&req))
            {
                let bytes = state.to_bytes();
                read.phase = ReadPhase::Repairing {
                    merged: merged.clone(),
                    waiting: stale.clone(),
                };
                for target in stale {
                    let state = StateBytes(bytes.clone());
                    self.send(
                        target,
                        PeerMessage::Store {
                            req,
                            key: key.clone(),
                            state,
                        },
                    );
                }
                return;
            }
        }
        self.answer_read(req, merged);
    }

    fn answer_read(&mut self, req: u64, merged: Option<KeyState>) {
        let Some(Pending::Read(read)) = self.pending.get_mut(&req) else {
            return;
        };
        let answer = KeyState::answer(&read.key, merged.as_ref());
        let to = read.to;
        let all = read.answers.len() == read.replicas.len();
        read.phase = ReadPhase::Answered { merged };
        self.reply(to, answer);
        if all {
            self.finish_read(req);
        }
    }

    /// A replica holds the read's merged state durably.
    pub(super) fn repair_acked(&mut self, req: u64, from: NodeId) {
        let Some(Pending::Read(read)) = self.pending.get_mut(&req) else {
            return;
        };
        let ReadPhase::Repairing { merged, waiting } = &mut read.phase else {
            return;
        };
        waiting.remove(&from);
        if waiting.is_empty() {
            let merged = merged.clone();
            self.answer_read(req, merged);
        }
    }

    /// Every replica answered, or the deadline passed after the client's answer.
    fn finish_read(&mut self, req: u64) {
        if let Some(Pending::Read(read)) = self.pending.remove(&req) {
            self.timers.cancel(&TimerKind::Request(req));
            self.maybe_reap(&read);
            self.repair_rest(req, read);
        }
    }

    /// Sends the join of everything the read saw to every replica that answered
    /// something older or nothing; their acknowledgements are not awaited.
    fn repair_rest(&mut self, req: u64, read: PendingRead) {
        if !self.config.repair.reads() {
            return;
        }
        let ReadPhase::Answered { merged } = &read.phase else {
            return;
        };
        let (late, reused) = merge_all(read.answers.values());
        self.stats.reused_dots += reused;
        let mut all = merged.clone();
        if let (Some(a), Some(l)) = (all.as_mut(), late.as_ref()) {
            a.merge(l);
        } else if all.is_none() {
            all = late;
        }
        let Some(state) = all.as_ref() else {
            return;
        };
        let bytes = state.to_bytes();
        for &target in &read.replicas {
            let fresh = read
                .answers
                .get(&target)
                .is_some_and(|answer| holds(answer, &all));
            if !fresh {
                let msg = PeerMessage::Store {
                    req,
                    key: read.key.clone(),
                    state: StateBytes(bytes.clone()),
                };
                self.send(target, msg);
            }
        }
    }

    /// The deadline of a read: `timeout` unless it was answered, and the rest repaired.
    pub(super) fn read_deadline(&mut self, req: u64, read: PendingRead) {
        match read.phase {
            ReadPhase::Answered { .. } => self.repair_rest(req, read),
            ReadPhase::Collecting | ReadPhase::Repairing { .. } => {
                self.reply(read.to, EventualResponse::Timeout);
            }
        }
    }
}
