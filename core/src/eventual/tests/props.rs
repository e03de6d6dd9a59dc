//! Property tests: replication, repair and hints are one merge, so delivering the same
//! states in any order, any number of times, leaves replicas equal.

use proptest::prelude::*;

use crate::proto::{PeerMessage, StateBytes};
use crate::role::Role;
use crate::versions::{Actor, Container, LwwVersion, Payload, Stamp};

use super::super::{parse_cluster, Conflicts, KeyState, Node, NodeConfig, NodeInput, NodeOutput};
use super::harness::MemLog;

/// One replica fed `states` in the order given, each write synced before the next.
fn replica_after(states: &[KeyState], order: &[usize]) -> (Option<KeyState>, Vec<u8>) {
    let config = |seed| {
        let cluster = parse_cluster("1 a:1\n2 b:2\n", 1).expect("cluster");
        let mut config = NodeConfig::new(1, cluster, 0, seed);
        if matches!(states.first(), Some(KeyState::Lww(_))) {
            config.conflicts = Conflicts::Lww;
        }
        config
    };
    let log = MemLog::default();
    let mut node = Node::new(config(5), log.clone()).expect("node");
    let mut acks = Vec::new();
    for (req, &i) in order.iter().enumerate() {
        let Some(state) = states.get(i) else { continue };
        let msg = PeerMessage::Store {
            req: req as u64,
            key: "k".to_owned(),
            state: StateBytes(state.to_bytes()),
        };
        node.handle(req as u64, NodeInput::Peer { from: 2, msg });
        let mut token = None;
        while let Some(output) = node.poll_output() {
            match output {
                NodeOutput::Persist { token: t, bytes } => {
                    log.0.borrow_mut().extend_from_slice(&bytes);
                    token = Some(t);
                }
                NodeOutput::Send {
                    msg: PeerMessage::Stored { req },
                    ..
                } => acks.push(req),
                // The join shipped back to a replica whose state lacked part of it.
                NodeOutput::Send {
                    to: 2,
                    msg: PeerMessage::Store { .. },
                } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        if let Some(token) = token {
            node.handle(req as u64, NodeInput::Persisted { token });
            while let Some(output) = node.poll_output() {
                if let NodeOutput::Send {
                    msg: PeerMessage::Stored { req },
                    ..
                } = output
                {
                    acks.push(req);
                }
            }
        }
        node.check_invariants();
    }
    assert_eq!(
        acks.len(),
        order.len(),
        "every delivery is acknowledged once durable"
    );
    // What the log holds is what the node holds.
    let bytes = log.0.borrow().clone();
    let (recovered, _) = Node::recover(config(6), &bytes, log.clone()).expect("recovers");
    assert_eq!(recovered.local_state("k"), node.local_state("k"));
    (node.local_state("k"), bytes)
}

/// States of one key made by writes at three actors, each on top of an earlier state
/// (or none), with or without that state's context.
fn histories() -> impl Strategy<Value = Vec<KeyState>> {
    prop::collection::vec(
        (
            0u64..3,
            any::<prop::sample::Index>(),
            any::<bool>(),
            any::<bool>(),
        ),
        1..8,
    )
    .prop_map(|steps| {
        let mut states: Vec<Container> = Vec::new();
        for (i, (actor, base, with_context, delete)) in steps.into_iter().enumerate() {
            let mut next = if states.is_empty() {
                Container::new()
            } else {
                states[base.index(states.len())].clone()
            };
            let context = with_context.then(|| next.context().clone());
            let payload = if delete {
                Payload::Deleted
            } else {
                Payload::Value(format!("v{i}"))
            };
            // Each actor's writes go through the states it made before, so no dot is
            // handed out twice.
            if let Some(mine) = states
                .iter()
                .rev()
                .find(|c| c.context().top(Actor::new(actor, 0)) > 0)
            {
                next.merge(mine);
            }
            if next
                .write(Actor::new(actor, 0), context.as_ref(), payload)
                .is_ok()
            {
                states.push(next);
            }
        }
        states.into_iter().map(KeyState::Siblings).collect()
    })
}

fn lww_histories() -> impl Strategy<Value = Vec<KeyState>> {
    prop::collection::vec((0u64..50, 0u64..3, any::<bool>()), 1..8).prop_map(|steps| {
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (ts_ms, node, delete))| {
                KeyState::Lww(LwwVersion {
                    stamp: Stamp { ts_ms, node },
                    payload: if delete {
                        Payload::Deleted
                    } else {
                        Payload::Value(format!("v{i}"))
                    },
                })
            })
            .collect()
    })
}

fn orders(len: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    let one = prop::collection::vec(0..len, len..len * 3)
        .prop_map(move |mut order| {
            // Every state at least once, then any repeats, shuffled by the draw.
            order.extend(0..len);
            order
        })
        .prop_shuffle();
    (one.clone(), one)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_order_and_duplication_of_deliveries_leaves_replicas_equal(
        (states, (a, b)) in histories().prop_flat_map(|s| { let n = s.len(); (Just(s), orders(n)) })
    ) {
        let (left, _) = replica_after(&states, &a);
        let (right, _) = replica_after(&states, &b);
        prop_assert_eq!(&left, &right);
        let mut joined = states[0].clone();
        for state in &states[1..] {
            joined.merge(state);
        }
        prop_assert_eq!(left, Some(joined));
    }

    #[test]
    fn lww_replicas_keep_the_highest_stamp_whatever_the_order(
        (states, (a, b)) in lww_histories().prop_flat_map(|s| { let n = s.len(); (Just(s), orders(n)) })
    ) {
        let (left, _) = replica_after(&states, &a);
        let (right, _) = replica_after(&states, &b);
        prop_assert_eq!(&left, &right);
        let highest = states.iter().filter_map(|s| match s {
            KeyState::Lww(v) => Some(v.clone()),
            KeyState::Siblings(_) => None,
        }).max();
        prop_assert_eq!(left, highest.map(KeyState::Lww));
    }
}

/// One step of a random run of a small world.
#[derive(Clone, Debug)]
enum Step {
    Put {
        node: usize,
        key: usize,
        level: usize,
        read_first: bool,
    },
    Del {
        node: usize,
        key: usize,
        level: usize,
    },
    Cut {
        a: usize,
        b: usize,
    },
    HealAll,
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    /// The node's disk is lost; it restarts empty, with a new incarnation.
    Wipe {
        node: usize,
    },
    Advance {
        ms: u64,
    },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (0..5usize, 0..2usize, 0..5usize, any::<bool>()).prop_map(|(node, key, level, read_first)| Step::Put { node, key, level, read_first }),
        1 => (0..5usize, 0..2usize, 0..5usize).prop_map(|(node, key, level)| Step::Del { node, key, level }),
        1 => (0..5usize, 0..5usize).prop_map(|(a, b)| Step::Cut { a, b }),
        1 => Just(Step::HealAll),
        1 => (0..5usize).prop_map(|node| Step::Crash { node }),
        1 => (0..5usize).prop_map(|node| Step::Restart { node }),
        1 => (0..5usize).prop_map(|node| Step::Wipe { node }),
        2 => (1u64..4000).prop_map(|ms| Step::Advance { ms }),
    ];
    prop::collection::vec(step, 1..40)
}

const LEVELS: [crate::proto::Consistency; 5] = [
    crate::proto::Consistency::One,
    crate::proto::Consistency::Two,
    crate::proto::Consistency::Three,
    crate::proto::Consistency::Quorum,
    crate::proto::Consistency::All,
];

fn run_steps(w: &mut super::harness::World, ids: &[u64], steps: &[Step]) {
    use crate::proto::EventualResponse;
    let up = |w: &super::harness::World, id: u64| w.slots[&id].node.is_some();
    // Steps name nodes 0..5; a smaller world takes them modulo its size.
    let ids: Vec<u64> = (0..5).map(|i| ids[i % ids.len()]).collect();
    for step in steps {
        match *step {
            Step::Put {
                node,
                key,
                level,
                read_first,
            } => {
                let (id, key) = (ids[node], format!("k{key}"));
                if !up(w, id) {
                    continue;
                }
                let mut context = None;
                if read_first {
                    let get = w.get(id, &key, LEVELS[level]);
                    if let Some(EventualResponse::Read { context: c, .. })
                    | Some(EventualResponse::NotFound { context: Some(c) }) = w.answer(get)
                    {
                        context = Some(c.clone());
                    }
                }
                w.put(id, &key, "v", LEVELS[level], context.as_deref());
            }
            Step::Del { node, key, level } => {
                let id = ids[node];
                if up(w, id) {
                    w.del(id, &format!("k{key}"), LEVELS[level], None);
                }
            }
            Step::Cut { a, b } => w.partition(ids[a], ids[b], true),
            Step::HealAll => w.cut.clear(),
            Step::Crash { node } => {
                if up(w, ids[node]) {
                    w.crash(ids[node]);
                }
            }
            Step::Restart { node } => {
                if !up(w, ids[node]) {
                    w.restart(ids[node]);
                }
            }
            Step::Wipe { node } => {
                if up(w, ids[node]) {
                    w.crash(ids[node]);
                }
                let incarnation = w.slots[&ids[node]].incarnation + 1;
                w.wipe_and_restart(ids[node], incarnation);
            }
            Step::Advance { ms } => w.advance(ms),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// After any run of writes, deletes, partitions, crashes and restarts, once the faults
    /// stop, hints alone, or else one read at `all` of each key, leave every replica
    /// holding the same state (the world checks every node's invariants after every
    /// input).
    #[test]
    fn replicas_converge_once_faults_stop(
        steps in steps(),
        hints in any::<bool>(),
        lww in any::<bool>(),
        nodes in 3..=5u64,
    ) {
        use super::super::Repair;
        // IDs spread over the ring, so keys land on every node and, with more than three
        // nodes, some requests are coordinated by a node that is not a replica.
        let spacing = u64::MAX / nodes;
        let ids: Vec<u64> = (1..=nodes).map(|i| i * spacing).collect();
        let mut w = super::harness::World::new(&ids, |c| {
            c.repair = if hints { Repair::Both } else { Repair::Read };
            if lww {
                c.conflicts = super::super::Conflicts::Lww;
            }
        });
        run_steps(&mut w, &ids, &steps);
        w.cut.clear();
        for &id in &ids {
            if w.slots[&id].node.is_none() {
                w.restart(id);
            }
            w.announce(id, true);
        }
        w.advance(10_000);
        // With hints, replicas converge without any read (section 2); with read repair
        // only, after one read at `all`. A lost disk can take with it the only record
        // that a replica missed a write (its coordinator's, before the deadline made a
        // hint); with no anti-entropy yet, a read at `all` then brings the replica up to
        // date, so runs with a lost disk read too.
        let wiped = steps.iter().any(|s| matches!(s, Step::Wipe { .. }));
        if !hints || wiped {
            for key in ["k0", "k1"] {
                let get = w.get(ids[0], key, crate::proto::Consistency::All);
                prop_assert!(w.answer(get).is_some(), "a read at all is answered once faults stop");
            }
        }
        w.advance(10_000);
        for key in ["k0", "k1"] {
            let replicas = w.node(ids[0]).replicas_of(key);
            let states: Vec<_> = replicas.iter().map(|&id| w.state(id, key)).collect();
            prop_assert!(states.windows(2).all(|p| p[0] == p[1]), "{key}: {states:?}");
            for &id in ids.iter().filter(|id| !replicas.contains(id)) {
                prop_assert_eq!(w.state(id, key), None, "a node that is not a replica holds nothing");
            }
        }
    }
}
