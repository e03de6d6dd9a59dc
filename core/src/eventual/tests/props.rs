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
