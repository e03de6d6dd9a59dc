//! Catching up a node that starts on an empty data directory. Hints and owed keys cover
//! writes a node missed while it was away, but not what it held before its disk was
//! lost, and section 2 wants replicas to converge without reads when hints are on. So a
//! node started on an empty directory asks every other node for the keys it is a
//! replica of (`ev_sync`, again every two timeouts and whenever the failure detector
//! reports one up, until each answered `ev_sync_done`);
//! each streams them as ordinary `ev_store` merges, a batch per hint replay round,
//! walking its store in key order.

use std::collections::{BTreeMap, BTreeSet};

use crate::proto::{PeerMessage, StateBytes};
use crate::storage::LogReader;

use super::config::NodeId;
use super::record::Record;
use super::{Node, TimerKind};

/// Keys of the store looked at per round, at most, for each stream: a node that holds
/// few keys of the asker does not walk its whole store at once.
const SCAN_PER_BATCH: usize = 64;

/// A stream of keys to a node that asked for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Stream {
    /// The asker's request, echoed by `ev_sync_done`.
    pub(super) req: u64,
    /// The last key looked at.
    pub(super) cursor: Option<String>,
}

/// Both sides of catching up: whom this node still waits for, and whom it streams to.
#[derive(Clone, Debug, Default)]
pub(super) struct Resync {
    /// Nodes this node asked and that have not finished (empty once caught up).
    pub(super) waiting: BTreeSet<NodeId>,
    /// The request of this node's asks.
    pub(super) req: u64,
    /// Streams to nodes that asked, at most one per node.
    pub(super) streams: BTreeMap<NodeId, Stream>,
    /// Whether the log says this node is catching up (a `CatchingUp` record not yet
    /// followed by `CaughtUp`), so that a crash before it caught up does not make it
    /// forget: a log that is not empty is recovered, not started over.
    pub(super) logged: bool,
}

impl<R: LogReader> Node<R> {
    /// Called for a node started on an empty data directory: ask every other node.
    pub(super) fn start_resync(&mut self) {
        self.resync.req = self.new_req();
        self.resync.waiting = self
            .config
            .cluster
            .nodes
            .keys()
            .copied()
            .filter(|&id| id != self.config.id)
            .collect();
        if !self.resync.waiting.is_empty() {
            self.timers.set(TimerKind::ResyncAsk, 0);
        }
    }

    /// Asks every node not yet finished (and believed up) again.
    pub(super) fn ask_resync(&mut self) {
        let req = self.resync.req;
        let asked: Vec<NodeId> = self
            .resync
            .waiting
            .iter()
            .copied()
            .filter(|&n| self.is_up(n))
            .collect();
        for node in asked {
            self.send(node, PeerMessage::Sync { req });
        }
        if !self.resync.waiting.is_empty() {
            let at = self.now + self.config.timeout_ms.saturating_mul(2);
            self.timers.set(TimerKind::ResyncAsk, at);
        }
    }

    /// The failure detector reports `node` up: ask it now if it has not streamed yet.
    pub(super) fn resync_node_up(&mut self, node: NodeId) {
        if self.resync.waiting.contains(&node) {
            let req = self.resync.req;
            self.send(node, PeerMessage::Sync { req });
        }
    }

    /// `ev_sync_done` from a node this node asked.
    pub(super) fn on_sync_done(&mut self, from: NodeId, req: u64) {
        if req == self.resync.req
            && self.resync.waiting.remove(&from)
            && self.resync.waiting.is_empty()
        {
            self.timers.cancel(&TimerKind::ResyncAsk);
            if self.resync.logged {
                self.resync.logged = false;
                self.append(&Record::CaughtUp);
            }
        }
    }

    /// `ev_sync`: start streaming to `from`, unless a stream to it already runs.
    pub(super) fn serve_sync(&mut self, from: NodeId, req: u64) {
        let stream = self
            .resync
            .streams
            .entry(from)
            .or_insert(Stream { req, cursor: None });
        // A new life of the asker asks with a new request: start over for it.
        if stream.req != req {
            *stream = Stream { req, cursor: None };
        }
        let kind = TimerKind::Resync(from);
        if self.timers.deadline(&kind).is_none() {
            self.timers.set(kind, self.now);
        }
    }

    /// One round of the stream to `target`: a batch of its keys, or the end.
    pub(super) fn stream_round(&mut self, target: NodeId) {
        let Some(stream) = self.resync.streams.get(&target).cloned() else {
            return;
        };
        let next_round = self.now + self.config.hints.replay_interval_ms;
        if !self.is_up(target) {
            // Paused, not dropped: the asker is back up soon, or asks again.
            self.timers.set(TimerKind::Resync(target), next_round);
            return;
        }
        let n = self.config.replication;
        let mut cursor = stream.cursor.clone();
        let mut batch = Vec::new();
        let mut scanned = 0;
        let keys: Vec<String> = self
            .store
            .keys_after(stream.cursor.as_deref())
            .take(SCAN_PER_BATCH.saturating_mul(self.config.hints.replay_batch))
            .map(str::to_owned)
            .collect();
        for key in keys {
            scanned += 1;
            cursor = Some(key.clone());
            if self.ring.preference_list(&key, n).contains(&target) {
                batch.push(key);
                if batch.len() >= self.config.hints.replay_batch {
                    break;
                }
            }
        }
        let mut sent = stream.cursor.clone();
        for key in batch {
            let state = match self.store.get(&key) {
                Ok(Some(state)) => StateBytes(state.to_bytes()),
                Ok(None) => continue,
                // A failed read of the log: the next round starts again at this key,
                // so the asker never misses it.
                Err(_) => {
                    cursor = sent;
                    break;
                }
            };
            sent = Some(key.clone());
            let msg = PeerMessage::Store {
                req: stream.req,
                key,
                state,
            };
            self.send(target, msg);
        }
        if scanned == 0 {
            self.resync.streams.remove(&target);
            self.send(target, PeerMessage::SyncDone { req: stream.req });
            return;
        }
        if let Some(s) = self.resync.streams.get_mut(&target) {
            s.cursor = cursor;
        }
        self.timers.set(TimerKind::Resync(target), next_round);
    }
}
