//! The simulated network: a path between any two endpoints, each with its own loss,
//! duplication and delay (so messages overtake each other), and faults put on one path at
//! a time: a partition (messages lost, both ways or one way only) or a clog (messages held
//! back), after TigerBeetle's packet simulator.
//!
//! Client connections are TCP streams: what one side sends arrives in order, never twice.
//! The links between nodes may reorder and duplicate, as messages on several connections
//! and resends on new ones do.

use std::collections::BTreeMap;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use ringkv_core::Ts;

use crate::config::NetFaults;

/// Who sends and receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    /// The strong-mode coordinator, which has no place on the ring.
    Coordinator,
    /// A node on the ring, by its ring ID, whatever role it runs.
    Node(u64),
    /// A client, by number.
    Client(u32),
}

impl NodeId {
    /// Whether this is a client (whose links are streams and never duplicate).
    pub fn is_client(self) -> bool {
        matches!(self, NodeId::Client(_))
    }
}

/// One run of a node: a restarted node listens at a new address, so what was sent to an
/// earlier run is lost, as with TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The node.
    pub node: NodeId,
    /// Its run; `None` on a message means "whichever run listens when it arrives": the
    /// sender opens a new connection to a well-known address.
    pub incarnation: Option<u32>,
}

impl Endpoint {
    /// A given run of `node`.
    pub fn at(node: NodeId, incarnation: u32) -> Self {
        Self {
            node,
            incarnation: Some(incarnation),
        }
    }

    /// Whichever run of `node` listens when the message arrives.
    pub fn any(node: NodeId) -> Self {
        Self {
            node,
            incarnation: None,
        }
    }
}

/// Which decoder the receiver uses for a message: a port and a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A client's request to the node serving it.
    ClientRequest,
    /// The answer to a client.
    ClientResponse,
    /// A KV server's registration with the coordinator.
    Register,
    /// The coordinator's answer to a registration.
    RegisterResponse,
    /// The coordinator's request to a KV server.
    ParticipantRequest,
    /// A KV server's answer to the coordinator.
    ParticipantResponse,
    /// A message between peer nodes (either direction, on the node's one port).
    Peer,
    /// A line on an eventual node's one port, from a client or another node (the
    /// message type tells them apart, as in the shell).
    NodePort,
}

/// One message in flight: the protocol's JSON line, decoded by the receiver, so the codec
/// runs as in production.
#[derive(Clone, Debug)]
pub struct Message {
    /// The sender.
    pub from: Endpoint,
    /// The receiver.
    pub to: Endpoint,
    /// How the receiver decodes it.
    pub channel: Channel,
    /// The line, with its `\n`.
    pub line: Vec<u8>,
}

/// The faults of the path between two endpoints.
#[derive(Clone, Debug)]
struct Path {
    loss: f64,
    duplication: f64,
    max_delay_ms: Ts,
    /// Until when each direction is cut: from the smaller end, and from the larger.
    cut_until: [Ts; 2],
    clogged_until: Ts,
}

/// Which entry of [`Path::cut_until`] a message from `from` to `to` meets.
fn direction(from: NodeId, to: NodeId) -> usize {
    usize::from(from > to)
}

/// The network's fault state.
#[derive(Debug)]
pub struct Network {
    faults: NetFaults,
    /// Every path that carried a message, by its ends in order (faults pick among them).
    paths: BTreeMap<(NodeId, NodeId), Path>,
    /// The last arrival on each stream (directed, per run of its ends), so that a stream
    /// never reorders.
    stream_tail: BTreeMap<(Endpoint, Endpoint), Ts>,
}

fn path_key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Network {
    /// A network with these faults.
    pub fn new(faults: NetFaults) -> Self {
        Self {
            faults,
            paths: BTreeMap::new(),
            stream_tail: BTreeMap::new(),
        }
    }

    /// The faults stop: no more loss, duplication, partitions or clogs, and short delays.
    pub fn heal(&mut self) {
        self.faults.loss = 0.0;
        self.faults.duplication = 0.0;
        self.faults.client_loss = 0.0;
        self.faults.max_delay_ms = self.faults.min_delay_ms + 5;
        self.faults.partition_every_ms = 0;
        self.faults.clog_every_ms = 0;
        let max_delay_ms = self.faults.max_delay_ms;
        for path in self.paths.values_mut() {
            *path = Path {
                loss: 0.0,
                duplication: 0.0,
                max_delay_ms,
                cut_until: [0, 0],
                clogged_until: 0,
            };
        }
    }

    /// Cuts the path between `a` and `b` until `until`: both ways, or only messages from
    /// `a` to `b` when `one_way`.
    pub fn partition(&mut self, a: NodeId, b: NodeId, one_way: bool, until: Ts) {
        if let Some(path) = self.paths.get_mut(&path_key(a, b)) {
            path.cut_until[direction(a, b)] = until;
            if !one_way {
                path.cut_until[direction(b, a)] = until;
            }
        }
    }

    /// Holds back the messages between `a` and `b` (both ways) until `until`.
    pub fn clog(&mut self, a: NodeId, b: NodeId, until: Ts) {
        if let Some(path) = self.paths.get_mut(&path_key(a, b)) {
            path.clogged_until = until;
        }
    }

    /// A path that has carried messages, for a fault to hit; `None` before any message.
    pub fn pick_path(&self, rng: &mut ChaCha8Rng) -> Option<(NodeId, NodeId)> {
        if self.paths.is_empty() {
            return None;
        }
        let at = rng.random_range(0..self.paths.len());
        self.paths.keys().nth(at).copied()
    }

    /// The faults in force.
    pub fn faults(&self) -> &NetFaults {
        &self.faults
    }

    /// When each copy of `msg`, sent now, arrives: none if lost, two if duplicated.
    pub fn arrivals(&mut self, rng: &mut ChaCha8Rng, now: Ts, msg: &Message) -> Vec<Ts> {
        let stream = msg.from.node.is_client() || msg.to.node.is_client();
        let min_delay_ms = self.faults.min_delay_ms;
        let path = self.path(rng, msg.from.node, msg.to.node).clone();
        let cut_until = path.cut_until[direction(msg.from.node, msg.to.node)];
        if now < cut_until || (path.loss > 0.0 && rng.random_bool(path.loss)) {
            return Vec::new();
        }
        let copies = if path.duplication > 0.0 && rng.random_bool(path.duplication) {
            2
        } else {
            1
        };
        let mut arrivals: Vec<Ts> = (0..copies)
            .map(|_| {
                let at = now + rng.random_range(min_delay_ms..=path.max_delay_ms);
                at.max(path.clogged_until)
            })
            .collect();
        if stream {
            let tail = self.stream_tail.entry((msg.from, msg.to)).or_insert(0);
            for at in &mut arrivals {
                *at = (*at).max(*tail);
                *tail = *at;
            }
        }
        arrivals
    }

    /// The path between `a` and `b`, drawing its own faults the first time it is used.
    fn path(&mut self, rng: &mut ChaCha8Rng, a: NodeId, b: NodeId) -> &Path {
        let faults = &self.faults;
        self.paths.entry(path_key(a, b)).or_insert_with(|| {
            let client = a.is_client() || b.is_client();
            // Around the swarm's figure: some paths better, some worse.
            let mut around = |typical: f64| {
                if typical > 0.0 {
                    (typical * rng.random_range(0.0..2.0)).min(0.25)
                } else {
                    0.0
                }
            };
            let (loss, duplication) = if client {
                (faults.client_loss, 0.0)
            } else {
                (around(faults.loss), around(faults.duplication))
            };
            let spread = faults.max_delay_ms - faults.min_delay_ms;
            Path {
                loss,
                duplication,
                max_delay_ms: faults.min_delay_ms + rng.random_range(spread / 2..=spread),
                cut_until: [0, 0],
                clogged_until: 0,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn faults(loss: f64, duplication: f64) -> NetFaults {
        NetFaults {
            min_delay_ms: 1,
            max_delay_ms: 100,
            loss,
            duplication,
            client_loss: 0.0,
            partition_every_ms: 0,
            clog_every_ms: 0,
        }
    }

    fn msg(from: NodeId, to: NodeId) -> Message {
        Message {
            from: Endpoint::at(from, 0),
            to: Endpoint::any(to),
            channel: Channel::ParticipantRequest,
            line: b"{}\n".to_vec(),
        }
    }

    const A: NodeId = NodeId::Node(1);
    const B: NodeId = NodeId::Node(2);
    const C: NodeId = NodeId::Coordinator;

    #[test]
    fn a_partition_cuts_one_path_both_ways_until_it_ends() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut net = Network::new(faults(0.0, 0.0));
        for (from, to) in [(A, B), (A, C), (B, C)] {
            assert_eq!(net.arrivals(&mut rng, 0, &msg(from, to)).len(), 1);
        }
        net.partition(B, A, false, 500);
        assert!(net.arrivals(&mut rng, 10, &msg(A, B)).is_empty());
        assert!(net.arrivals(&mut rng, 10, &msg(B, A)).is_empty());
        assert_eq!(net.arrivals(&mut rng, 10, &msg(A, C)).len(), 1);
        assert_eq!(net.arrivals(&mut rng, 10, &msg(C, B)).len(), 1);
        assert_eq!(net.arrivals(&mut rng, 500, &msg(A, B)).len(), 1);
    }

    #[test]
    fn a_one_way_partition_cuts_only_its_direction() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut net = Network::new(faults(0.0, 0.0));
        net.arrivals(&mut rng, 0, &msg(A, C));
        for (from, to) in [(A, C), (C, A)] {
            net.partition(from, to, true, 500);
            assert!(net.arrivals(&mut rng, 10, &msg(from, to)).is_empty());
            assert_eq!(net.arrivals(&mut rng, 10, &msg(to, from)).len(), 1);
            net.heal();
        }
    }

    #[test]
    fn a_clog_holds_messages_back_on_its_path_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut net = Network::new(faults(0.0, 0.0));
        net.arrivals(&mut rng, 0, &msg(A, C));
        net.arrivals(&mut rng, 0, &msg(B, C));
        net.clog(C, A, 2_000);
        for _ in 0..20 {
            assert!(net.arrivals(&mut rng, 10, &msg(C, A))[0] >= 2_000);
            assert!(net.arrivals(&mut rng, 10, &msg(C, B))[0] <= 110);
        }
    }

    #[test]
    fn paths_draw_their_own_loss_and_duplication() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut net = Network::new(faults(0.1, 0.1));
        let nodes: Vec<NodeId> = (0..6).map(NodeId::Node).collect();
        let mut lost = BTreeMap::new();
        let mut doubled = 0;
        for &from in &nodes[1..] {
            for _ in 0..400 {
                let copies = net.arrivals(&mut rng, 0, &msg(nodes[0], from)).len();
                *lost.entry(from).or_insert(0) += usize::from(copies == 0);
                doubled += usize::from(copies == 2);
            }
        }
        assert!(doubled > 0);
        let (least, most) = (lost.values().min(), lost.values().max());
        assert!(most > least, "paths differ: {lost:?}");
        net.heal();
        for &to in &nodes[1..] {
            assert!((0..50).all(|_| net.arrivals(&mut rng, 0, &msg(nodes[0], to)).len() == 1));
        }
    }

    #[test]
    fn a_client_stream_never_reorders_or_duplicates() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut net = Network::new(faults(0.0, 0.5));
        let client = NodeId::Client(0);
        let mut last = 0;
        for now in 0..200 {
            let at = net.arrivals(&mut rng, now, &msg(client, C));
            assert_eq!(at.len(), 1);
            assert!(at[0] >= last, "stream reordered");
            last = at[0];
        }
        let reordered = (0..200)
            .map(|now| net.arrivals(&mut rng, now, &msg(A, C)))
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[1].first() < w[0].first());
        assert!(reordered, "node links may reorder");
    }
}
