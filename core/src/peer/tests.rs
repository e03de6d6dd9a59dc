//! A few nodes wired by hand: messages go through a queue the test steps, every write is
//! synced at once, and a crash rebuilds a node from its log.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use super::*;
use crate::proto::peer::PeerReply;
use crate::proto::{ClientResponse, ErrorCode};
use crate::storage::StorageError;

#[derive(Clone, Default)]
struct MemLog(Rc<RefCell<Vec<u8>>>);

impl LogReader for MemLog {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let log = self.0.borrow();
        let start = offset as usize;
        log.get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StorageError("out of range".into()))
    }
}

const IDS: [u64; 3] = [10, 20, 30];

struct World {
    nodes: BTreeMap<u64, Option<Peer<MemLog>>>,
    logs: BTreeMap<u64, MemLog>,
    queue: VecDeque<(u64, PeerMessage)>,
    replies: BTreeMap<(u64, ReplyTo), PeerReply>,
    now: Ts,
    next_client: u64,
    /// `locked` refusals sent between nodes, and the prepares of each transaction.
    locked_refusals: usize,
    prepared_txids: std::collections::BTreeSet<TxId>,
    /// Nodes whose writes are not reported durable (a sync that does not end), with the
    /// last write each has not had reported.
    held: std::collections::BTreeSet<u64>,
    unsynced: BTreeMap<u64, PersistToken>,
}

fn config(id: u64) -> PeerConfig {
    let nodes = IDS.iter().map(|&n| (n, format!("h{n}:1"))).collect();
    let mut config = PeerConfig::new(id, nodes);
    config.timeout_ms = 1000;
    config.seed = id;
    config
}

impl World {
    fn new() -> Self {
        let mut world = Self {
            nodes: BTreeMap::new(),
            logs: BTreeMap::new(),
            queue: VecDeque::new(),
            replies: BTreeMap::new(),
            now: 0,
            next_client: 0,
            locked_refusals: 0,
            prepared_txids: Default::default(),
            held: Default::default(),
            unsynced: BTreeMap::new(),
        };
        for id in IDS {
            world.logs.insert(id, MemLog::default());
            world.start(id);
        }
        world.run_for(10);
        world
    }

    fn start(&mut self, id: u64) {
        let log = self.logs[&id].clone();
        let bytes = log.0.borrow().clone();
        let (peer, report) = Peer::recover(config(id), self.now, &bytes, log.clone()).unwrap();
        assert!(report.anomalies.is_empty(), "{report:?}");
        self.nodes.insert(id, Some(peer));
        self.handle(id, PeerInput::Tick);
    }

    /// The node's memory is gone; its log stays (every write was synced).
    fn crash(&mut self, id: u64) {
        self.nodes.insert(id, None);
    }

    fn handle(&mut self, id: u64, input: PeerInput) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let Some(Some(peer)) = self.nodes.get_mut(&id) else {
                return;
            };
            peer.handle(self.now, input);
            peer.check_invariants();
            let mut last = None;
            while let Some(output) = peer.poll_output() {
                match output {
                    PeerOutput::Send { to, msg } => {
                        match &msg.body {
                            PeerBody::Refuse { code, .. } if *code == ErrorCode::Locked => {
                                self.locked_refusals += 1
                            }
                            PeerBody::Prepare { txid, .. } => {
                                self.prepared_txids.insert(*txid);
                            }
                            _ => {}
                        }
                        self.queue.push_back((to, msg))
                    }
                    PeerOutput::Reply { to, msg } => {
                        self.replies.insert((id, to), msg);
                    }
                    PeerOutput::Persist { token, bytes } => {
                        self.logs[&id].0.borrow_mut().extend_from_slice(&bytes);
                        last = Some(token);
                    }
                }
            }
            match last {
                Some(token) if self.held.contains(&id) => {
                    self.unsynced.insert(id, token);
                }
                Some(token) => inputs.push_back(PeerInput::Persisted { token }),
                None => {}
            }
        }
    }

    fn client(&mut self, id: u64, msg: PeerClientRequest) -> (u64, ReplyTo) {
        self.next_client += 1;
        let from = ReplyTo(self.next_client);
        self.handle(id, PeerInput::Client { from, msg });
        (id, from)
    }

    fn put(&mut self, id: u64, key: &str, value: &str) -> (u64, ReplyTo) {
        let msg = ClientRequest::Put {
            key: key.into(),
            value: value.into(),
        };
        self.client(id, PeerClientRequest::Client(msg))
    }

    fn get(&mut self, id: u64, key: &str) -> (u64, ReplyTo) {
        let msg = ClientRequest::Get { key: key.into() };
        self.client(id, PeerClientRequest::Client(msg))
    }

    fn local(&mut self, id: u64, key: &str) -> ClientResponse {
        let asked = self.client(id, PeerClientRequest::Local { key: key.into() });
        match self.replies.remove(&asked) {
            Some(PeerReply::Client(answer)) => answer,
            other => panic!("localreq answered {other:?}"),
        }
    }

    /// Delivers one queued message (to a running node; others lose it).
    fn deliver_one(&mut self) -> bool {
        let Some((to, msg)) = self.queue.pop_front() else {
            return false;
        };
        self.handle(to, PeerInput::Peer(msg));
        true
    }

    /// Runs `ms` milliseconds: messages arrive at once, timers fire on time.
    fn run_for(&mut self, ms: Ts) {
        let end = self.now + ms;
        loop {
            while self.deliver_one() {}
            let next = self
                .nodes
                .values()
                .flatten()
                .filter_map(|p| p.poll_timeout())
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    for id in IDS {
                        let due = self.nodes[&id].as_ref().and_then(|p| p.poll_timeout());
                        if due.is_some_and(|at| at <= self.now) {
                            self.handle(id, PeerInput::Tick);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn answer(&self, asked: (u64, ReplyTo)) -> Option<ClientResponse> {
        match self.replies.get(&asked) {
            Some(PeerReply::Client(answer)) => Some(answer.clone()),
            Some(other) => panic!("{other:?}"),
            None => None,
        }
    }

    fn in_doubt(&self, id: u64) -> usize {
        self.nodes[&id].as_ref().map_or(0, |p| p.in_doubt().count())
    }
}

fn value(v: &str) -> ClientResponse {
    ClientResponse::Value {
        key: "k".into(),
        value: v.into(),
    }
}

fn code(answer: Option<ClientResponse>) -> Option<ErrorCode> {
    match answer {
        Some(ClientResponse::Error(e)) => Some(e.code),
        _ => None,
    }
}

#[test]
fn an_update_commits_on_every_replica_and_every_node_reads_it() {
    let mut w = World::new();
    let put = w.put(20, "k", "v1");
    w.run_for(100);
    assert_eq!(w.answer(put), Some(ClientResponse::Success));
    for id in IDS {
        assert_eq!(w.local(id, "k"), value("v1"), "node {id}");
        let get = w.get(id, "k");
        assert_eq!(w.answer(get), Some(value("v1")));
        assert_eq!(w.in_doubt(id), 0);
    }
    let statuses = w.client(10, PeerClientRequest::Client(ClientRequest::Status));
    let Some(PeerReply::Status {
        nodes, replication, ..
    }) = w.replies.get(&statuses)
    else {
        panic!("no status");
    };
    assert_eq!(*replication, 3);
    assert!(nodes.iter().all(|n| n.up), "{nodes:?}");
}

#[test]
fn colliding_coordinators_roll_back_retry_and_all_succeed() {
    let mut w = World::new();
    // Three updates of one key at the same instant: every replica locks for whichever
    // prepare it meets first, so the first attempts collide.
    let puts: Vec<_> = IDS
        .iter()
        .map(|&id| w.put(id, "k", &format!("v{id}")))
        .collect();
    w.run_for(1500);
    for put in &puts {
        assert_eq!(w.answer(*put), Some(ClientResponse::Success), "{put:?}");
    }
    // They did collide: a replica refused a locked key, and more transactions than the
    // three updates were prepared (the retries).
    assert!(w.locked_refusals > 0, "the first attempts collided");
    assert!(w.prepared_txids.len() > IDS.len(), "{:?}", w.prepared_txids);
    let last = w.local(10, "k");
    let written: Vec<String> = IDS.iter().map(|id| format!("v{id}")).collect();
    assert!(
        matches!(&last, ClientResponse::Value { value, .. } if written.contains(value)),
        "the key holds one of the three values: {last:?}"
    );
    for id in IDS {
        assert_eq!(w.local(id, "k"), last, "replicas agree");
        assert_eq!(w.in_doubt(id), 0, "no key left locked");
    }
}

#[test]
fn a_down_replica_makes_updates_unavailable_and_changes_nothing_while_gets_go_on() {
    let mut w = World::new();
    let put = w.put(10, "k", "v1");
    w.run_for(100);
    assert_eq!(w.answer(put), Some(ClientResponse::Success));
    w.crash(30);
    let put = w.put(10, "k", "v2");
    let get = w.get(20, "k");
    w.run_for(2000);
    assert_eq!(code(w.answer(put)), Some(ErrorCode::Unavailable));
    assert_eq!(w.answer(get), Some(value("v1")));
    for id in [10, 20] {
        assert_eq!(w.local(id, "k"), value("v1"));
        assert_eq!(w.in_doubt(id), 0, "rolled back on node {id}");
    }
}

/// Steps messages until `node` answered `asked`; the rest stay queued.
fn step_until_answered(w: &mut World, asked: (u64, ReplyTo)) {
    while w.answer(asked).is_none() {
        assert!(w.deliver_one(), "ran out of messages");
    }
}

#[test]
fn a_coordinator_restarted_between_its_decision_and_phase_2_finishes_phase_2() {
    let mut w = World::new();
    let put = w.put(10, "k", "v1");
    step_until_answered(&mut w, put);
    assert_eq!(w.answer(put), Some(ClientResponse::Success));
    // The commit is durable, the phase-2 messages to 20 and 30 are lost with the crash.
    w.crash(10);
    w.queue.retain(|(_, msg)| msg.from != 10);
    assert_eq!(w.in_doubt(20) + w.in_doubt(30), 2);
    w.start(10);
    w.run_for(100);
    for id in IDS {
        assert_eq!(w.local(id, "k"), value("v1"), "node {id}");
        assert_eq!(w.in_doubt(id), 0);
    }
}

#[test]
fn an_in_doubt_participant_learns_the_decision_from_another_while_the_coordinator_is_down() {
    let mut w = World::new();
    let put = w.put(10, "k", "v1");
    step_until_answered(&mut w, put);
    // Only node 20 hears the commit before the coordinator dies for good.
    w.crash(10);
    w.queue.retain(|(to, msg)| msg.from != 10 || *to == 20);
    w.run_for(3000);
    assert_eq!(w.local(30, "k"), value("v1"));
    assert_eq!(w.in_doubt(30), 0, "it asked node 20");
}

#[test]
fn a_participant_that_never_voted_renounces_and_the_one_in_doubt_aborts() {
    let mut w = World::new();
    let put = w.put(10, "k", "v1");
    // Node 20 gets its prepare; the coordinator dies before node 30 gets its own.
    let to_30: Vec<(u64, PeerMessage)> = w
        .queue
        .iter()
        .filter(|(to, _)| *to == 30)
        .cloned()
        .collect();
    w.queue.retain(|(to, _)| *to == 20);
    w.deliver_one();
    w.crash(10);
    w.queue.clear();
    assert_eq!(w.in_doubt(20), 1);
    w.run_for(3000);
    assert_eq!(w.in_doubt(20), 0, "node 30 renounced, so node 20 aborted");
    assert_eq!(code(Some(w.local(20, "k"))), Some(ErrorCode::NotFound));
    // The late prepare is refused: node 30 will never vote ready.
    w.queue.extend(to_30);
    w.deliver_one();
    assert_eq!(w.in_doubt(30), 0);
    w.start(10);
    w.run_for(3000);
    assert!(
        w.answer(put).is_none(),
        "the client's connection died with the node"
    );
    for id in IDS {
        assert_eq!(code(Some(w.local(id, "k"))), Some(ErrorCode::NotFound));
        assert_eq!(w.in_doubt(id), 0);
    }
}

#[test]
fn a_get_of_a_prepared_key_waits_for_the_decision_then_for_at_most_the_timeout() {
    let mut w = World::new();
    let put = w.put(10, "k", "v1");
    // Deliver until node 20 has prepared, then read there.
    while w.in_doubt(20) == 0 {
        assert!(w.deliver_one());
    }
    let get = w.get(20, "k");
    assert_eq!(w.answer(get), None, "waits while the key is prepared");
    w.run_for(100);
    assert_eq!(w.answer(put), Some(ClientResponse::Success));
    assert_eq!(w.answer(get), Some(value("v1")));
    // With the decision lost (the coordinator crashed with it), a GET gives up in time.
    let put = w.put(10, "k", "v2");
    while w.in_doubt(30) == 0 {
        assert!(w.deliver_one());
    }
    w.crash(10);
    w.queue.clear();
    w.crash(20);
    let get = w.get(30, "k");
    w.run_for(999);
    assert_eq!(w.answer(get), None);
    w.run_for(1);
    assert_eq!(code(w.answer(get)), Some(ErrorCode::Unavailable));
    assert!(w.answer(put).is_none());
}

/// Whether a prepare from `from` waits in the queue.
fn prepare_queued(w: &World, from: u64) -> bool {
    w.queue
        .iter()
        .any(|(_, m)| m.from == from && matches!(m.body, PeerBody::Prepare { .. }))
}

#[test]
fn a_new_update_of_a_key_waits_for_its_own_phase_2_instead_of_colliding_with_it() {
    let mut w = World::new();
    let first = w.put(10, "k", "v1");
    step_until_answered(&mut w, first);
    assert_eq!(w.answer(first), Some(ClientResponse::Success));
    // The commit is decided; its phase 2 has not reached the other replicas, which
    // still hold the key locked: a prepare now would be refused.
    assert_eq!(w.in_doubt(20) + w.in_doubt(30), 2);
    let second = w.put(10, "k", "v2");
    assert!(
        !prepare_queued(&w, 10),
        "the second update waits for phase 2"
    );
    assert_eq!(w.answer(second), None);
    // Only the decisions go out, then the acknowledgements come back; the second
    // update starts on the last one.
    while !prepare_queued(&w, 10) {
        assert!(w.deliver_one(), "the second update never started");
    }
    assert_eq!(w.in_doubt(20) + w.in_doubt(30), 0, "phase 2 was done first");
    w.run_for(100);
    assert_eq!(w.answer(second), Some(ClientResponse::Success));
    assert_eq!(w.locked_refusals, 0, "no collision with itself");
    assert_eq!(w.prepared_txids.len(), 2, "one attempt each");
    for id in IDS {
        assert_eq!(w.local(id, "k"), value("v2"), "node {id}");
    }
}

#[test]
fn an_update_held_for_a_replica_that_never_acknowledges_answers_within_its_timeout() {
    let mut w = World::new();
    let first = w.put(10, "k", "v1");
    step_until_answered(&mut w, first);
    // Node 30 dies before it hears the commit: it never acknowledges it.
    w.crash(30);
    w.queue.retain(|(to, _)| *to != 30);
    let second = w.put(10, "k", "v2");
    w.run_for(999);
    assert_eq!(w.answer(second), None, "held, within its timeout");
    assert_eq!(
        w.prepared_txids.len(),
        1,
        "the second update never prepared"
    );
    w.run_for(1);
    assert_eq!(code(w.answer(second)), Some(ErrorCode::Unavailable));
    for id in [10, 20] {
        assert_eq!(w.local(id, "k"), value("v1"), "nothing changed on {id}");
        assert_eq!(w.in_doubt(id), 0);
    }
    // Back, node 30 gets the commit resent, acknowledges it, and the key moves on.
    w.start(30);
    w.run_for(1500);
    assert_eq!(w.in_doubt(30), 0);
    let third = w.put(10, "k", "v3");
    w.run_for(100);
    assert_eq!(w.answer(third), Some(ClientResponse::Success));
    assert_eq!(w.locked_refusals, 0);
}

#[test]
fn held_updates_count_against_the_update_limit_and_start_in_order() {
    let mut w = World::new();
    if let Some(Some(peer)) = w.nodes.get_mut(&10) {
        peer.config.max_updates = 2;
    }
    let first = w.put(10, "k", "v1");
    step_until_answered(&mut w, first);
    let second = w.put(10, "k", "v2");
    let third = w.put(10, "k", "v3");
    let fourth = w.put(10, "k", "v4");
    assert_eq!(code(w.answer(fourth)), Some(ErrorCode::Overloaded));
    w.run_for(200);
    assert_eq!(w.answer(second), Some(ClientResponse::Success));
    assert_eq!(w.answer(third), Some(ClientResponse::Success));
    assert_eq!(w.locked_refusals, 0);
    for id in IDS {
        assert_eq!(w.local(id, "k"), value("v3"), "node {id}");
    }
}

fn epoch_log(epochs: &[u32]) -> Vec<u8> {
    let mut log = Vec::new();
    for &epoch in epochs {
        crate::log::encode_frame(&record::PeerRecord::Epoch { epoch }.encode(), &mut log);
    }
    log
}

#[test]
fn a_log_at_the_last_epoch_is_refused_with_an_error_not_a_panic() {
    let log = epoch_log(&[3, txid::EPOCH_MAX]);
    let reader = MemLog(Rc::new(RefCell::new(log.clone())));
    let err = Peer::recover(config(10), 0, &log, reader)
        .err()
        .expect("no epoch is left to start");
    assert!(err.0.contains("no transaction IDs left"), "{err}");
}

#[test]
fn an_epoch_past_the_last_is_an_anomaly_and_the_rest_recovers() {
    let log = epoch_log(&[3, txid::EPOCH_MAX + 1]);
    let reader = MemLog(Rc::new(RefCell::new(log.clone())));
    let (peer, report) = Peer::recover(config(10), 0, &log, reader).expect("recovers");
    assert_eq!(report.anomalies.len(), 1, "{:?}", report.anomalies);
    assert_eq!(peer.epoch, 4, "the epoch after the last one written");
}

#[test]
fn a_commit_record_without_participants_or_with_one_twice_is_an_anomaly() {
    for participants in [vec![], vec![10, 20, 10]] {
        let mut log = epoch_log(&[3]);
        let decided = record::PeerRecord::Decided {
            txid: 77,
            participants,
        };
        crate::log::encode_frame(&decided.encode(), &mut log);
        let reader = MemLog(Rc::new(RefCell::new(log.clone())));
        let (_, report) = Peer::recover(config(10), 0, &log, reader).expect("recovers");
        assert_eq!(report.anomalies.len(), 1, "{:?}", report.anomalies);
        assert_eq!(report.open_commits, 0);
    }
}

mod compact;

#[test]
fn puts_waiting_for_their_key_share_the_next_attempt_with_the_last_value() {
    let mut w = World::new();
    let first = w.put(10, "k", "v1");
    step_until_answered(&mut w, first);
    // Phase 2 of the first is still out: these wait for the key.
    let waiting: Vec<_> = ["v2", "v3", "v4"]
        .iter()
        .map(|v| w.put(10, "k", v))
        .collect();
    w.run_for(200);
    for put in &waiting {
        assert_eq!(w.answer(*put), Some(ClientResponse::Success), "{put:?}");
    }
    assert_eq!(w.prepared_txids.len(), 2, "one attempt for the three");
    assert_eq!(w.nodes[&10].as_ref().map(Peer::absorbed_updates), Some(2));
    for id in IDS {
        assert_eq!(w.local(id, "k"), value("v4"), "node {id}");
    }
}

#[test]
fn a_del_waiting_for_its_key_ends_the_run_of_absorbed_puts() {
    let mut w = World::new();
    let first = w.put(10, "k", "v1");
    step_until_answered(&mut w, first);
    let second = w.put(10, "k", "v2");
    let del = w.client(
        10,
        PeerClientRequest::Client(ClientRequest::Del { key: "k".into() }),
    );
    let fourth = w.put(10, "k", "v4");
    w.run_for(300);
    for asked in [second, del, fourth] {
        assert_eq!(w.answer(asked), Some(ClientResponse::Success), "{asked:?}");
    }
    assert_eq!(w.prepared_txids.len(), 4, "one attempt each");
    assert_eq!(w.nodes[&10].as_ref().map(Peer::absorbed_updates), Some(0));
    for id in IDS {
        assert_eq!(w.local(id, "k"), value("v4"), "node {id}");
    }
}

#[test]
fn absorbed_puts_hear_their_attempts_error_and_none_is_applied() {
    let mut w = World::new();
    let first = w.put(10, "k", "v1");
    step_until_answered(&mut w, first);
    let second = w.put(10, "k", "v2");
    let third = w.put(10, "k", "v3");
    while !prepare_queued(&w, 10) {
        assert!(w.deliver_one(), "the waiting updates never started");
    }
    assert_eq!(w.nodes[&10].as_ref().map(Peer::absorbed_updates), Some(1));
    // Node 30 dies before the shared attempt's prepare reaches it: no vote, and the
    // attempt fails at its timeout.
    w.crash(30);
    w.queue.retain(|(to, _)| *to != 30);
    w.run_for(1500);
    let answers = [w.answer(second), w.answer(third)];
    assert_eq!(code(answers[0].clone()), Some(ErrorCode::Unavailable));
    assert_eq!(
        answers[0], answers[1],
        "the absorbed PUT hears its carrier's answer"
    );
    for id in [10, 20] {
        assert_eq!(w.local(id, "k"), value("v1"), "nothing changed on {id}");
    }
}
