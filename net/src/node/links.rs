//! The connections a node keeps to every other node of its cluster, one each, opened to
//! the address of the cluster file and opened again with the core's backoff when lost.
//! They carry this node's messages one way; what comes back on them is pongs (and error
//! answers), which only tell that the other node is alive.

use std::collections::{BTreeMap, HashMap};

use mio::{Registry, Token};
use ringkv_core::eventual::{Cluster, NodeId};
use ringkv_core::time::Backoff;

use crate::event_loop::{earliest, Readiness};
use crate::limits::NetLimits;
use crate::outbound::{Link, LinkConfig, LinkEvent};
use crate::tokens::{Kind, TokenSource};

use super::detector::DOWN_AFTER_MS;

/// The first wait before connecting again to a node that failed; doubles up to the max.
const BACKOFF_MIN_MS: u64 = 50;
/// The longest wait before connecting again: a dead node is tried about once a second.
const BACKOFF_MAX_MS: u64 = 1_000;
/// Messages waiting for one node's connection; beyond it the oldest are dropped (every
/// request has a deadline, and hints and repair cover what a dropped message carried).
const QUEUE_MSGS: usize = 65_536;

/// Every other node's link.
pub(crate) struct PeerLinks {
    links: BTreeMap<NodeId, Link>,
    owners: HashMap<Token, NodeId>,
    events: Vec<LinkEvent>,
    /// Signs of life (`true`) and losses (`false`) seen since the last [`Self::take_news`].
    news: Vec<(NodeId, bool)>,
}

impl PeerLinks {
    /// A link to every node of `cluster` but `me`; none connects before its first send.
    pub(crate) fn new(cluster: &Cluster, me: NodeId, limits: &NetLimits) -> Self {
        let config = LinkConfig {
            max_queued_bytes: limits.max_outbound_bytes_per_connection,
            max_queued_msgs: QUEUE_MSGS,
            max_frame_bytes: limits.max_frame_bytes,
            backoff: Some(Backoff {
                wait_ms_min: BACKOFF_MIN_MS,
                wait_ms_max: BACKOFF_MAX_MS,
            }),
            // Pings are answered, so a connection silent this long after a write lost
            // its flow or its peer hangs: it is replaced.
            silent_after_ms: Some(DOWN_AFTER_MS),
        };
        let mut tokens = TokenSource::new(Kind::Link);
        let mut links = BTreeMap::new();
        let mut owners = HashMap::new();
        for (&id, addr) in cluster.nodes.iter().filter(|(&id, _)| id != me) {
            let token = tokens.next();
            owners.insert(token, id);
            links.insert(
                id,
                Link::new(format!("node {id}"), addr.clone(), token, config),
            );
        }
        Self {
            links,
            owners,
            events: Vec::new(),
            news: Vec::new(),
        }
    }

    /// Queues `line` for `node`; a line for an unknown node is dropped.
    pub(crate) fn send(&mut self, now_ms: u64, registry: &Registry, node: NodeId, line: Vec<u8>) {
        if let Some(link) = self.links.get_mut(&node) {
            link.send(now_ms, registry, line, &mut self.events);
            collect(node, &mut self.events, &mut self.news);
        }
    }

    /// Drops what waits for `node`, found down.
    pub(crate) fn discard(&mut self, node: NodeId) {
        if let Some(link) = self.links.get_mut(&node) {
            link.discard_queued();
        }
    }

    /// Queues `line` for every other node.
    pub(crate) fn send_all(&mut self, now_ms: u64, registry: &Registry, line: &[u8]) {
        for (&node, link) in &mut self.links {
            link.send(now_ms, registry, line.to_vec(), &mut self.events);
            collect(node, &mut self.events, &mut self.news);
        }
    }

    /// Handles an event of one link's socket.
    pub(crate) fn on_event(&mut self, now_ms: u64, registry: &Registry, event: &Readiness) {
        let Some(&node) = self.owners.get(&event.token) else {
            return;
        };
        if let Some(link) = self.links.get_mut(&node) {
            link.on_event(now_ms, registry, event, &mut self.events);
            collect(node, &mut self.events, &mut self.news);
        }
    }

    /// Whether some link has more to read, or news to report, without waiting.
    pub(crate) fn has_ready(&self) -> bool {
        self.links.values().any(Link::wants_pump) || !self.news.is_empty()
    }

    /// Reads from links that had more than one turn's budget waiting.
    pub(crate) fn pump(&mut self, now_ms: u64, registry: &Registry) {
        for (&node, link) in &mut self.links {
            if link.wants_pump() {
                link.pump(now_ms, registry, &mut self.events);
                collect(node, &mut self.events, &mut self.news);
            }
        }
    }

    /// When some link next has a connect to give up or a wait to end.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        earliest(self.links.values().map(Link::next_deadline_ms))
    }

    /// Gives up slow connects and silent connections, and connects again after waits.
    pub(crate) fn tick(&mut self, now_ms: u64, registry: &Registry) {
        for (&node, link) in &mut self.links {
            link.tick(now_ms, registry, &mut self.events);
            collect(node, &mut self.events, &mut self.news);
        }
    }

    /// Writes what every link has queued, as far as the sockets take it.
    pub(crate) fn flush(&mut self, now_ms: u64, registry: &Registry) {
        for (&node, link) in &mut self.links {
            link.flush(now_ms, registry, &mut self.events);
            collect(node, &mut self.events, &mut self.news);
        }
    }

    /// What the links saw since the last call, in order.
    pub(crate) fn take_news(&mut self) -> Vec<(NodeId, bool)> {
        std::mem::take(&mut self.news)
    }
}

fn collect(node: NodeId, events: &mut Vec<LinkEvent>, news: &mut Vec<(NodeId, bool)>) {
    for event in events.drain(..) {
        match event {
            LinkEvent::Line(line) => {
                if !line.starts_with(b"{\"type\":\"ev_pong\"") {
                    tracing::debug!(node, line = %String::from_utf8_lossy(&line), "an answer on a node link");
                }
                news.push((node, true));
            }
            LinkEvent::Disconnected => news.push((node, false)),
        }
    }
}
