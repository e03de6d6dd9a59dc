//! A small in-test world of several nodes: each node's log is a byte vector with a
//! synced prefix, messages cross as encoded lines and are decoded by the receiver, links
//! can be cut, nodes crash (losing what was not synced), restart from their log, or lose
//! their disk. `check_invariants` runs after every input.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use crate::proto::{
    Consistency, Envelope, EventualRequest, EventualResponse, NodeMessage, PeerMessage, WriteOp,
};
use crate::role::Role;
use crate::storage::{LogReader, PersistToken, StorageError};
use crate::{ReplyTo, Ts};

use super::super::{
    parse_cluster, CompactedLog, KeyState, Node, NodeConfig, NodeId, NodeInput, NodeOutput,
};

/// A log in memory, shared between the world (which appends) and the node (which reads).
#[derive(Clone, Default)]
pub struct MemLog(pub Rc<RefCell<Vec<u8>>>);

impl LogReader for MemLog {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let log = self.0.borrow();
        let start = usize::try_from(offset).map_err(|_| StorageError("offset".into()))?;
        log.get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StorageError("read past the end".into()))
    }
}

/// One node's place in the world.
pub struct Slot {
    pub node: Option<Node<MemLog>>,
    pub log: MemLog,
    /// Bytes of the log that are synced.
    pub synced: usize,
    /// Tokens written and not yet synced, with the log length after each.
    pub unsynced: Vec<(PersistToken, usize)>,
    /// Whether the world syncs this node's writes by itself.
    pub auto_sync: bool,
    pub incarnation: u64,
    pub config: NodeConfig,
    /// After a compaction: the log as it was without compactions up to the last one, and
    /// the length of the compacted log that stands for it at the start of `log`.
    pub replaced: Option<(Vec<u8>, usize)>,
}

impl Slot {
    /// The log as it would be had it never been compacted: what the compactions replaced,
    /// then what was appended since.
    pub fn full_log(&self) -> Vec<u8> {
        self.full_log_of(&self.log.0.borrow())
    }

    fn full_log_of(&self, log: &[u8]) -> Vec<u8> {
        match &self.replaced {
            None => log.to_vec(),
            Some((full, compacted_len)) => {
                let mut out = full.clone();
                out.extend_from_slice(&log[*compacted_len..]);
                out
            }
        }
    }
}

/// Several nodes and the network between them.
pub struct World {
    pub now: Ts,
    pub slots: BTreeMap<NodeId, Slot>,
    net: VecDeque<(NodeId, NodeId, Vec<u8>)>,
    /// Links (from, to) that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub replies: BTreeMap<u64, EventualResponse>,
    next_client: u64,
    restarts: u64,
}

impl World {
    /// `ids.len()` nodes, each configured by `tweak` after the defaults.
    pub fn new(ids: &[NodeId], tweak: impl Fn(&mut NodeConfig)) -> World {
        let text: String = ids
            .iter()
            .map(|id| format!("{id} 127.0.0.1:{}\n", 7000 + id % 1000))
            .collect();
        let mut slots = BTreeMap::new();
        for &id in ids {
            let cluster = parse_cluster(&text, id).expect("test cluster");
            let mut config = NodeConfig::new(id, cluster, 0, id.wrapping_mul(31));
            tweak(&mut config);
            let log = MemLog::default();
            let node = Node::new(config.clone(), log.clone()).expect("config");
            slots.insert(
                id,
                Slot {
                    node: Some(node),
                    log,
                    synced: 0,
                    unsynced: Vec::new(),
                    auto_sync: true,
                    incarnation: 0,
                    config,
                    replaced: None,
                },
            );
        }
        World {
            now: 0,
            slots,
            net: VecDeque::new(),
            cut: BTreeSet::new(),
            replies: BTreeMap::new(),
            next_client: 1,
            restarts: 0,
        }
    }

    pub fn node(&self, id: NodeId) -> &Node<MemLog> {
        self.slots[&id].node.as_ref().expect("node is up")
    }

    fn input(&mut self, id: NodeId, input: NodeInput) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        node.handle(now, input);
        node.check_invariants();
        self.drain(id);
    }

    /// Carries out what node `id` asked for.
    fn drain(&mut self, id: NodeId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        while let Some(output) = node.poll_output() {
            match output {
                NodeOutput::Reply { to, msg } => {
                    // A line crosses the wire and must decode to the same answer.
                    let line = Envelope::bare(msg.clone()).encode();
                    let back = Envelope::<EventualResponse>::decode(&line[..line.len() - 1])
                        .expect("answers decode");
                    assert_eq!(back.msg, msg, "answer round trip");
                    assert!(self.replies.insert(to.0, msg).is_none(), "answered twice");
                }
                NodeOutput::Send { to, msg } => {
                    assert_ne!(to, id, "a node never sends to itself");
                    let line = Envelope::bare(NodeMessage::Peer(msg)).encode();
                    self.net.push_back((id, to, line));
                }
                NodeOutput::Persist { token, bytes } => {
                    let mut log = slot.log.0.borrow_mut();
                    log.extend_from_slice(&bytes);
                    slot.unsynced.push((token, log.len()));
                }
            }
        }
    }

    /// Syncs every auto-syncing node's writes and delivers the network until quiet.
    pub fn run(&mut self) {
        for _ in 0..100_000 {
            let ids: Vec<NodeId> = self.slots.keys().copied().collect();
            let mut progress = false;
            for id in ids {
                if self.slots[&id].auto_sync && !self.slots[&id].unsynced.is_empty() {
                    self.sync(id);
                    progress = true;
                }
            }
            if let Some((from, to, line)) = self.net.pop_front() {
                progress = true;
                self.deliver(from, to, &line);
            }
            if !progress {
                return;
            }
        }
        panic!("the world never went quiet");
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, line: &[u8]) {
        let up = |w: &World, id: NodeId| w.slots.get(&id).is_some_and(|s| s.node.is_some());
        if self.cut.contains(&(from, to)) || !up(self, from) || !up(self, to) {
            return;
        }
        let msg = match Envelope::<NodeMessage>::decode(&line[..line.len() - 1]) {
            Ok(Envelope {
                msg: NodeMessage::Peer(msg),
                ..
            }) => msg,
            other => panic!("a node's message did not decode: {other:?}"),
        };
        self.input(to, NodeInput::Peer { from, msg });
    }

    /// Delivers `msg` from `from` to `to` as if it had been delayed in the network.
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: PeerMessage) {
        let line = Envelope::bare(NodeMessage::Peer(msg)).encode();
        self.deliver(from, to, &line);
        self.run();
    }

    /// Syncs node `id`'s log and reports it durable.
    pub fn sync(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("node");
        let Some(&(token, len)) = slot.unsynced.last() else {
            return;
        };
        slot.unsynced.clear();
        slot.synced = len;
        self.input(id, NodeInput::Persisted { token });
    }

    /// Makes all of node `id`'s writes reach its disk without telling the node (the
    /// machine crashes right after the sync, before the node hears it finished).
    pub fn sync_unreported(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("node");
        if let Some(&(_, len)) = slot.unsynced.last() {
            slot.unsynced.clear();
            slot.synced = len;
        }
    }

    /// Syncs only the first of node `id`'s unsynced writes (a machine crash then keeps
    /// that prefix of the log) and reports it durable.
    pub fn sync_first(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("node");
        if slot.unsynced.is_empty() {
            return;
        }
        let (token, len) = slot.unsynced.remove(0);
        slot.synced = len;
        self.input(id, NodeInput::Persisted { token });
    }

    /// A client request to node `id`; the handle of its answer.
    pub fn request(&mut self, id: NodeId, msg: EventualRequest) -> u64 {
        let handle = self.next_client;
        self.next_client += 1;
        // Clients' lines cross the wire too.
        let line = Envelope::bare(NodeMessage::Client(msg.clone())).encode();
        let decoded = Envelope::<NodeMessage>::decode(&line[..line.len() - 1]).expect("decodes");
        assert_eq!(decoded.msg, NodeMessage::Client(msg.clone()));
        self.input(
            id,
            NodeInput::Client {
                from: ReplyTo(handle),
                msg,
            },
        );
        self.run();
        handle
    }

    pub fn answer(&self, handle: u64) -> Option<&EventualResponse> {
        self.replies.get(&handle)
    }

    pub fn put(
        &mut self,
        id: NodeId,
        key: &str,
        value: &str,
        level: Consistency,
        context: Option<&str>,
    ) -> u64 {
        self.request(
            id,
            EventualRequest::Write {
                key: key.to_owned(),
                op: WriteOp::Put(value.to_owned()),
                consistency: level,
                context: context.map(str::to_owned),
            },
        )
    }

    pub fn del(&mut self, id: NodeId, key: &str, level: Consistency, context: Option<&str>) -> u64 {
        self.request(
            id,
            EventualRequest::Write {
                key: key.to_owned(),
                op: WriteOp::Del,
                consistency: level,
                context: context.map(str::to_owned),
            },
        )
    }

    pub fn get(&mut self, id: NodeId, key: &str, level: Consistency) -> u64 {
        self.request(
            id,
            EventualRequest::Get {
                key: key.to_owned(),
                consistency: level,
            },
        )
    }

    /// Moves time to `until`, ticking every node whose timer is due on the way.
    pub fn advance_to(&mut self, until: Ts) {
        loop {
            let next = self
                .slots
                .iter()
                .filter_map(|(&id, s)| Some((s.node.as_ref()?.poll_timeout()?, id)))
                .min();
            match next {
                Some((at, id)) if at <= until => {
                    self.now = self.now.max(at);
                    self.input(id, NodeInput::Tick);
                    self.run();
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    pub fn advance(&mut self, ms: u64) {
        self.advance_to(self.now + ms);
    }

    /// Tells every other node that `id` is down or up, as a failure detector would.
    pub fn announce(&mut self, id: NodeId, up: bool) {
        let others: Vec<NodeId> = self.slots.keys().copied().filter(|&o| o != id).collect();
        for other in others {
            let input = if up {
                NodeInput::NodeUp(id)
            } else {
                NodeInput::NodeDown(id)
            };
            self.input(other, input);
        }
        self.run();
    }

    /// Compacts node `id`'s log as a shell does: the log is replaced by the compacted
    /// one, durably, which covers every write not yet synced; the node is told so. The
    /// bytes replaced are kept, so [`Slot::full_log`] still gives the log as it would be
    /// without compactions.
    pub fn compact(&mut self, id: NodeId) -> CompactedLog {
        let slot = self.slots.get_mut(&id).expect("node");
        let compacted = slot
            .node
            .as_ref()
            .expect("node is up")
            .compaction_log()
            .expect("the states read back");
        let covered = slot.unsynced.last().map(|&(token, _)| token);
        let old = std::mem::replace(&mut *slot.log.0.borrow_mut(), compacted.bytes.clone());
        let full = slot.full_log_of(&old);
        slot.replaced = Some((full, compacted.bytes.len()));
        slot.synced = compacted.bytes.len();
        slot.unsynced.clear();
        let node = slot.node.as_mut().expect("node is up");
        node.install_compaction(compacted.clone(), covered);
        node.check_invariants();
        // Every key's location now points at its state in the new log (not the cache).
        for (key, loc) in node.store.entries() {
            let bytes = slot
                .log
                .read_at(loc.offset, loc.len as usize)
                .expect("in the log");
            let state = KeyState::from_bytes(&bytes).expect("a state");
            assert_eq!(Some(state), node.local_state(key), "{key} relocated");
        }
        self.drain(id);
        self.run();
        compacted
    }

    /// Node `id` stops; its unsynced writes are lost.
    pub fn crash(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("node");
        slot.node = None;
        slot.log.0.borrow_mut().truncate(slot.synced);
        slot.unsynced.clear();
    }

    /// Node `id` restarts from its synced log.
    pub fn restart(&mut self, id: NodeId) {
        self.restarts += 1;
        let restarts = self.restarts;
        let slot = self.slots.get_mut(&id).expect("node");
        let mut config = slot.config.clone();
        config.seed = config.seed.wrapping_add(restarts.wrapping_mul(0x9e37_79b9));
        config.incarnation = slot.incarnation;
        let bytes = slot.log.0.borrow().clone();
        // As a shell does: an empty data directory starts a new node, which catches up
        // from the others; anything else is recovered.
        if bytes.is_empty() {
            slot.node = Some(Node::new(config, slot.log.clone()).expect("config"));
            return;
        }
        let (node, report) = Node::recover(config, &bytes, slot.log.clone()).expect("recovers");
        assert_eq!(
            report.valid_len as usize,
            bytes.len(),
            "the synced log is whole"
        );
        slot.node = Some(node);
    }

    /// Node `id` restarts on an empty disk, with a new incarnation.
    pub fn wipe_and_restart(&mut self, id: NodeId, incarnation: u64) {
        let slot = self.slots.get_mut(&id).expect("node");
        slot.log.0.borrow_mut().clear();
        slot.synced = 0;
        slot.replaced = None;
        slot.incarnation = incarnation;
        self.restart(id);
    }

    /// Node `id`'s own state of `key`.
    pub fn state(&self, id: NodeId, key: &str) -> Option<KeyState> {
        self.node(id).local_state(key)
    }

    /// Cuts (or heals) both directions between `a` and `b`.
    pub fn partition(&mut self, a: NodeId, b: NodeId, cut: bool) {
        for link in [(a, b), (b, a)] {
            if cut {
                self.cut.insert(link);
            } else {
                self.cut.remove(&link);
            }
        }
    }

    /// A key whose preference list (of `n` over the world's IDs) starts with `first`,
    /// so tests can pick where a key lives.
    pub fn key_owned_by(&self, first: NodeId, n: usize) -> String {
        (0..10_000)
            .map(|i| format!("key{i}"))
            .find(|key| {
                self.node(first).replicas_of(key).first() == Some(&first)
                    && self.node(first).replicas_of(key).len() == n
            })
            .expect("some key lands there")
    }
}
