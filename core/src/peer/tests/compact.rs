//! Compaction of a node's log in the hand-wired world: what a compacted log recovers,
//! compared with what the whole log recovers, and the live node going on after it.

use super::*;
use crate::peer::record::PeerRecord;
use crate::peer::PeerCompaction;

/// What recovery must rebuild the same from a compacted log and from the whole log.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    committed: BTreeMap<String, String>,
    /// Transactions in doubt: key, the value of a PUT, participants.
    in_doubt: BTreeMap<TxId, (String, Option<String>, Vec<u64>)>,
    /// Commits coordinated here whose phase 2 runs again, with their participants.
    open_commits: BTreeMap<TxId, Vec<u64>>,
    epoch: u32,
}

fn summary(peer: &Peer<MemLog>) -> Summary {
    let committed = peer
        .committed_keys()
        .map(|key| {
            let value = peer.committed_value(key).unwrap().unwrap();
            (key.to_owned(), value)
        })
        .collect();
    let in_doubt = peer
        .participant
        .prepared_ops()
        .map(|(txid, key, prepared)| {
            let put = match &prepared.change {
                Change::Put { value, .. } => Some(value.clone()),
                Change::Del => None,
            };
            (txid, (key.to_owned(), put, prepared.participants.clone()))
        })
        .collect();
    let open_commits = peer
        .commits
        .iter()
        .map(|&txid| (txid, peer.driver.participants(txid).unwrap().to_vec()))
        .collect();
    Summary {
        committed,
        in_doubt,
        open_commits,
        epoch: peer.epoch,
    }
}

fn remembered(peer: &Peer<MemLog>) -> Vec<(TxId, bool)> {
    peer.participant.remembered_decisions().collect()
}

/// Every value the node points to reads back, through its reader, as what it holds.
fn assert_readable(peer: &Peer<MemLog>) {
    let reader = peer.store.reader();
    for (key, loc) in peer.store.entries() {
        let bytes = reader.read_at(loc.offset, loc.len as usize).unwrap();
        let held = peer.committed_value(key).unwrap().unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), held, "value of {key:?}");
    }
    for (txid, _, prepared) in peer.participant.prepared_ops() {
        if let Change::Put { loc, value } = &prepared.change {
            let bytes = reader.read_at(loc.offset, loc.len as usize).unwrap();
            assert_eq!(&String::from_utf8(bytes).unwrap(), value, "prepare {txid}");
        }
    }
}

/// A fresh node `id` recovered from `bytes` alone.
fn recover(id: u64, now: Ts, bytes: &[u8]) -> Peer<MemLog> {
    let log = MemLog(Rc::new(RefCell::new(bytes.to_vec())));
    let (peer, report) = Peer::recover(config(id), now, bytes, log).unwrap();
    assert!(report.anomalies.is_empty(), "{report:?}");
    assert_eq!(report.valid_len, bytes.len() as u64, "{report:?}");
    peer
}

impl World {
    fn peer(&self, id: u64) -> &Peer<MemLog> {
        self.nodes[&id].as_ref().expect("node is up")
    }

    fn log_bytes(&self, id: u64) -> Vec<u8> {
        self.logs[&id].0.borrow().clone()
    }

    /// Compacts node `id`'s log as a shell would: the bytes take the log's place, then
    /// the node is told.
    fn compact(&mut self, id: u64) -> PeerCompaction {
        let compaction = self.peer(id).compacted_log().unwrap();
        *self.logs[&id].0.borrow_mut() = compaction.bytes.clone();
        if let Some(Some(peer)) = self.nodes.get_mut(&id) {
            peer.install_compaction(&compaction, None);
            peer.check_invariants();
        }
        compaction
    }

    /// As the shell does while writes of node `id` are not yet durable: its log is
    /// replaced by the compacted one, which covers them, and what waited runs.
    fn compact_unsynced(&mut self, id: u64) -> PeerCompaction {
        let covered = self.unsynced.remove(&id);
        let compaction = self.peer(id).compacted_log().unwrap();
        *self.logs[&id].0.borrow_mut() = compaction.bytes.clone();
        if let Some(Some(peer)) = self.nodes.get_mut(&id) {
            peer.install_compaction(&compaction, covered);
        }
        // What the installation released goes out with the next turn's outputs.
        self.handle(id, PeerInput::Tick);
        compaction
    }

    fn del(&mut self, id: u64, key: &str) -> (u64, ReplyTo) {
        let msg = ClientRequest::Del { key: key.into() };
        self.client(id, PeerClientRequest::Client(msg))
    }
}

fn val(key: &str, v: &str) -> ClientResponse {
    ClientResponse::Value {
        key: key.into(),
        value: v.into(),
    }
}

/// A cluster driven through writes, deletes, a transaction renounced, a commit of node
/// 10 decided and not yet finished (its phase-2 messages are handed back, held), and a
/// DEL left in doubt at nodes 10 and 20 by its coordinator 30, which crashed.
fn scenario() -> (World, VecDeque<(u64, PeerMessage)>) {
    let mut w = World::new();
    for (id, key, v) in [
        (10, "a", "1"),
        (20, "b", "2"),
        (30, "c", "3"),
        (30, "a", "1b"),
    ] {
        let put = w.put(id, key, v);
        w.run_for(100);
        assert_eq!(w.answer(put), Some(ClientResponse::Success), "{key}={v}");
    }
    let del = w.del(20, "b");
    w.run_for(100);
    assert_eq!(w.answer(del), Some(ClientResponse::Success));
    // Node 20 gets its prepare of "r"; the coordinator dies before node 30 gets its own:
    // node 30 renounces, node 20 aborts.
    let _ = w.put(10, "r", "x");
    w.queue.retain(|(to, _)| *to == 20);
    w.deliver_one();
    w.crash(10);
    w.queue.clear();
    w.run_for(3000);
    assert_eq!(w.in_doubt(20), 0);
    w.start(10);
    w.run_for(3000);
    assert_eq!(w.in_doubt(10), 0);
    // A commit of node 10 whose phase 2 has not begun anywhere else.
    let open = w.put(10, "c", "3b");
    step_until_answered(&mut w, open);
    assert_eq!(w.answer(open), Some(ClientResponse::Success));
    let held = std::mem::take(&mut w.queue);
    // A DEL prepared at 10 and 20; its coordinator dies.
    let _ = w.del(30, "a");
    while w.in_doubt(20) < 2 || w.in_doubt(10) < 1 {
        assert!(w.deliver_one(), "the DEL never prepared");
    }
    w.crash(30);
    w.queue.clear();
    (w, held)
}

#[test]
fn a_compacted_log_recovers_what_the_whole_log_recovers() {
    let (w, _) = scenario();
    for id in [10, 20] {
        let live = w.peer(id);
        let full = w.log_bytes(id);
        let compaction = live.compacted_log().unwrap();
        assert!(
            compaction.bytes.len() < full.len(),
            "node {id}: {} bytes compacted from {}",
            compaction.bytes.len(),
            full.len()
        );
        let from_full = recover(id, w.now, &full);
        let from_compacted = recover(id, w.now, &compaction.bytes);
        let expected = summary(&from_full);
        assert_eq!(summary(&from_compacted), expected, "node {id}");
        let mut live_summary = summary(live);
        live_summary.epoch += 1;
        assert_eq!(live_summary, expected, "node {id}: the live node");
        // Every decision the whole log makes remembered is remembered, in order.
        let carried = remembered(&from_compacted);
        let mut rest = carried.iter();
        for decision in remembered(&from_full) {
            assert!(rest.any(|d| *d == decision), "node {id}: {decision:?} lost");
        }
        assert_readable(&from_compacted);
    }
    // What the scenario was meant to leave behind.
    let at_20 = summary(w.peer(20));
    let committed = [("a", "1b"), ("c", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(at_20.committed, BTreeMap::from(committed));
    let changes: Vec<_> = at_20.in_doubt.values().map(|(k, v, _)| (k, v)).collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes.contains(&(&"a".to_owned(), &None)), "the DEL");
    assert!(changes.contains(&(&"c".to_owned(), &Some("3b".to_owned()))));
    assert_eq!(summary(w.peer(10)).open_commits.len(), 1);
    assert!(remembered(w.peer(20)).iter().any(|(_, commit)| !commit));
    assert!(remembered(w.peer(20)).iter().any(|(_, commit)| *commit));
}

#[test]
fn a_compaction_covers_writes_not_yet_durable_and_releases_what_waited() {
    let mut w = World::new();
    w.held.insert(20);
    let put = w.put(10, "k", "v");
    w.run_for(100);
    // 20's vote waits for its prepare to be durable.
    assert_eq!(w.answer(put), None);
    w.compact_unsynced(20);
    w.run_for(100);
    assert_eq!(w.answer(put), Some(ClientResponse::Success));
    // The commit reached 20, which wrote it: its acknowledgement and its store wait for
    // that write, which the next compaction covers, the decision carried with the
    // prepare.
    let compaction = w.compact_unsynced(20);
    let records: Vec<PeerRecord> = crate::log::decode_frames(&compaction.bytes)
        .frames
        .iter()
        .map(|frame| PeerRecord::decode(frame.payload).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| matches!(r, PeerRecord::Commit { .. })),
        "{records:?}"
    );
    w.held.remove(&20);
    w.run_for(100);
    assert_eq!(w.local(20, "k"), value("v"));
    // A restart of 20 from the compacted log holds the commit without asking anyone.
    w.crash(20);
    w.start(20);
    assert_eq!(w.local(20, "k"), value("v"));
    assert_eq!(w.in_doubt(20), 0);
}

#[test]
fn the_live_node_goes_on_after_compaction_and_keeps_every_confirmed_write() {
    let (mut w, held) = scenario();
    let full_20 = w.log_bytes(20);
    for id in [10, 20] {
        w.compact(id);
        assert_readable(w.peer(id));
    }
    let compacted_20 = w.log_bytes(20);
    // Phase 2 of the open commit goes on; the DEL's coordinator comes back and, having
    // no record of it, aborts it when asked.
    w.queue.extend(held);
    w.start(30);
    w.run_for(3000);
    let put = w.put(20, "d", "4");
    w.run_for(100);
    assert_eq!(w.answer(put), Some(ClientResponse::Success));
    let put = w.put(10, "a", "1c");
    w.run_for(100);
    assert_eq!(w.answer(put), Some(ClientResponse::Success));
    let expected = [
        ("a", Some("1c")),
        ("b", None),
        ("c", Some("3b")),
        ("d", Some("4")),
    ];
    let check = |w: &mut World, id: u64| {
        for (key, v) in expected {
            let answer = w.local(id, key);
            match v {
                Some(v) => assert_eq!(answer, val(key, v), "node {id}"),
                None => assert_eq!(code(Some(answer)), Some(ErrorCode::NotFound)),
            }
        }
        assert_eq!(w.in_doubt(id), 0, "node {id}");
    };
    for id in IDS {
        check(&mut w, id);
    }
    assert_readable(w.peer(20));
    // A restart from the compacted log and what was appended after it.
    let appended = w.log_bytes(20)[compacted_20.len()..].to_vec();
    assert!(!appended.is_empty());
    w.crash(20);
    w.start(20);
    check(&mut w, 20);
    assert_readable(w.peer(20));
    // The same as a restart from the whole log and the same appends.
    let mut whole = full_20;
    whole.extend_from_slice(&appended);
    let from_whole = recover(20, w.now, &whole);
    let mut from_compacted = compacted_20;
    from_compacted.extend_from_slice(&appended);
    let from_compacted = recover(20, w.now, &from_compacted);
    assert_eq!(summary(&from_compacted), summary(&from_whole));
}

#[test]
fn a_compacted_participant_still_tells_one_in_doubt_that_its_transaction_committed() {
    let mut w = World::new();
    let put = w.put(10, "k", "v1");
    step_until_answered(&mut w, put);
    // Only node 20 hears the commit before the coordinator dies for good.
    w.crash(10);
    w.queue.retain(|(to, msg)| msg.from != 10 || *to == 20);
    while w.in_doubt(20) > 0 {
        assert!(w.deliver_one(), "node 20 never heard the commit");
    }
    assert_eq!(w.in_doubt(30), 1);
    w.compact(20);
    w.crash(20);
    w.start(20);
    w.run_for(3000);
    assert_eq!(
        w.local(30, "k"),
        value("v1"),
        "node 20 remembered the commit"
    );
    assert_eq!(w.in_doubt(30), 0);
}

#[test]
fn a_compacted_participant_still_refuses_a_late_prepare_it_renounced() {
    let mut w = World::new();
    let _ = w.put(10, "k", "v1");
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
    w.run_for(3000);
    assert_eq!(w.in_doubt(20), 0, "node 30 renounced, so node 20 aborted");
    w.compact(30);
    w.crash(30);
    w.start(30);
    let prepare_30 = to_30
        .iter()
        .filter(|(_, m)| matches!(m.body, PeerBody::Prepare { .. }));
    assert_eq!(prepare_30.count(), 1);
    w.queue.extend(to_30);
    while w.deliver_one() {}
    assert_eq!(w.in_doubt(30), 0, "the late prepare was refused");
}

#[test]
fn a_carried_value_of_a_key_a_transaction_holds_is_an_anomaly() {
    let mut log = Vec::new();
    let records = [
        PeerRecord::Epoch { epoch: 1 },
        PeerRecord::PrepareDel {
            txid: 7,
            key: "k".into(),
            participants: IDS.to_vec(),
        },
        PeerRecord::Value {
            key: "k".into(),
            value: "v".into(),
        },
    ];
    for record in &records {
        crate::log::encode_frame(&record.encode(), &mut log);
    }
    let reader = MemLog(Rc::new(RefCell::new(log.clone())));
    let (peer, report) = Peer::recover(config(10), 0, &log, reader).unwrap();
    assert_eq!(report.anomalies.len(), 1, "{report:?}");
    assert!(report.anomalies[0].contains("locked by transaction 7"));
    assert_eq!(peer.committed_keys().count(), 0, "the value was not taken");
    assert_eq!(peer.in_doubt().collect::<Vec<_>>(), [7]);
}

/// One step of a random history of the hand-wired world.
#[derive(Clone, Debug)]
enum Step {
    Put {
        node: usize,
        key: u8,
        value: u8,
    },
    Del {
        node: usize,
        key: u8,
    },
    /// Delivers this many queued messages.
    Deliver(u8),
    Run(Ts),
    Crash(usize),
    Start(usize),
    Compact(usize),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let node = 0..IDS.len();
    prop_oneof![
        3 => (node.clone(), 0u8..3, any::<u8>()).prop_map(|(node, key, value)| Step::Put { node, key, value }),
        1 => (node.clone(), 0u8..3).prop_map(|(node, key)| Step::Del { node, key }),
        3 => (1u8..12).prop_map(Step::Deliver),
        2 => (1 as Ts..1500).prop_map(Step::Run),
        1 => node.clone().prop_map(Step::Crash),
        1 => node.clone().prop_map(Step::Start),
        2 => node.prop_map(Step::Compact),
    ]
}

/// Runs `steps`, compacting where they say if `compact`; when compacting, checks that the
/// compacted log recovers what the whole log recovers. Then every node comes back and
/// the world runs until it is quiet. Returns the world and each node's whole log (as if
/// it had never been compacted).
fn run_steps(steps: &[Step], compact: bool) -> (World, BTreeMap<u64, Vec<u8>>) {
    let mut w = World::new();
    // Each node's log before its last compaction, and where the compacted one began.
    let mut whole: BTreeMap<u64, (Vec<u8>, usize)> =
        IDS.iter().map(|&id| (id, (Vec::new(), 0))).collect();
    for step in steps {
        match *step {
            Step::Put { node, key, value } => {
                let _ = w.put(IDS[node], &format!("k{key}"), &format!("v{value}"));
            }
            Step::Del { node, key } => {
                let _ = w.del(IDS[node], &format!("k{key}"));
            }
            Step::Deliver(n) => {
                for _ in 0..n {
                    w.deliver_one();
                }
            }
            Step::Run(ms) => w.run_for(ms),
            Step::Crash(node) => w.crash(IDS[node]),
            Step::Start(node) if w.nodes[&IDS[node]].is_none() => w.start(IDS[node]),
            Step::Start(_) => {}
            Step::Compact(node) if compact && w.nodes[&IDS[node]].is_some() => {
                let id = IDS[node];
                let (old, began) = whole.get_mut(&id).unwrap();
                let log = w.log_bytes(id);
                old.extend_from_slice(&log[*began..]);
                let compaction = w.peer(id).compacted_log().unwrap();
                let from_whole = recover(id, w.now, old);
                let from_compacted = recover(id, w.now, &compaction.bytes);
                assert_eq!(summary(&from_compacted), summary(&from_whole), "node {id}");
                let mut live = summary(w.peer(id));
                live.epoch += 1;
                assert_eq!(live, summary(&from_whole), "node {id}: the live node");
                w.compact(id);
                assert_readable(w.peer(id));
                *began = compaction.bytes.len();
            }
            Step::Compact(_) => {}
        }
    }
    for id in IDS {
        if w.nodes[&id].is_none() {
            w.start(id);
        }
    }
    w.run_for(20_000);
    let logs = whole
        .into_iter()
        .map(|(id, (mut old, began))| {
            old.extend_from_slice(&w.log_bytes(id)[began..]);
            (id, old)
        })
        .collect();
    (w, logs)
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(64))]

    #[test]
    fn compaction_anywhere_changes_nothing_a_client_or_a_restart_sees(
        steps in proptest::collection::vec(step(), 0..40),
    ) {
        let (mut compacted, logs) = run_steps(&steps, true);
        let (plain, _) = run_steps(&steps, false);
        proptest::prop_assert_eq!(&compacted.replies, &plain.replies);
        for id in IDS {
            let state = summary(compacted.peer(id));
            proptest::prop_assert_eq!(&state, &summary(plain.peer(id)), "node {}", id);
            proptest::prop_assert!(state.in_doubt.is_empty(), "node {} in doubt", id);
            assert_readable(compacted.peer(id));
            // A restart from the compacted log and what followed it, and one from the
            // whole log, rebuild what the node held.
            let from_whole = recover(id, compacted.now, &logs[&id]);
            compacted.crash(id);
            compacted.start(id);
            let restarted = summary(compacted.peer(id));
            proptest::prop_assert_eq!(&restarted.committed, &state.committed);
            proptest::prop_assert_eq!(&restarted, &summary(&from_whole));
        }
    }
}

#[test]
fn a_value_that_cannot_be_read_back_fails_the_compaction_and_changes_nothing() {
    let mut log = Vec::new();
    crate::log::encode_frame(&PeerRecord::Epoch { epoch: 1 }.encode(), &mut log);
    for key in ["a", "b", "c"] {
        let record = PeerRecord::Value {
            key: key.into(),
            value: format!("value of {key}"),
        };
        crate::log::encode_frame(&record.encode(), &mut log);
    }
    let reader = MemLog(Rc::new(RefCell::new(log.clone())));
    let mut config = config(10);
    // One cached value: the others must be read back from the log.
    config.cache = crate::cache::CacheConfig { sets: 1, ways: 1 };
    let (mut peer, report) = Peer::recover(config, 0, &log, reader.clone()).unwrap();
    assert!(report.anomalies.is_empty(), "{report:?}");
    // The new epoch's record is written and made durable.
    let mut last = None;
    while let Some(output) = peer.poll_output() {
        if let PeerOutput::Persist { token, bytes } = output {
            reader.0.borrow_mut().extend_from_slice(&bytes);
            last = Some(token);
        }
    }
    peer.handle(
        0,
        PeerInput::Persisted {
            token: last.unwrap(),
        },
    );
    let whole = reader.0.replace(Vec::new());
    assert!(matches!(
        peer.compacted_log(),
        Err(crate::peer::PeerCompactError::Read(_))
    ));
    *reader.0.borrow_mut() = whole;
    let compaction = peer.compacted_log().unwrap();
    assert_eq!(compaction.moves.len(), 3);
    let from_compacted = recover(10, 0, &compaction.bytes);
    assert_eq!(summary(&from_compacted).committed, summary(&peer).committed);
}
