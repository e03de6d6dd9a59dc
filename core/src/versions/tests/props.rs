//! Property tests: generated histories of reads, writes and merges at several replicas,
//! checked against a model of what each writer had seen, and the encodings.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::versions::{
    container_to_bytes, decode_container, decode_context, decode_lww, encode_context, encode_lww,
    Actor, Container, Dot, Payload, Version, VersionVector,
};

/// One step of a history. Indices are taken modulo the number of clients and replicas.
#[derive(Clone, Debug)]
enum Op {
    /// A client reads one replica and keeps its context.
    Read { client: usize, replica: usize },
    /// A client writes with the context it holds (the empty one if it has none).
    Write {
        client: usize,
        replica: usize,
        deleted: bool,
    },
    /// A client writes without a context.
    Blind {
        client: usize,
        replica: usize,
        deleted: bool,
    },
    /// One replica ships its whole state to another (repair, hint, replication).
    Merge { from: usize, to: usize },
    /// A replica loses its disk and restarts empty under a new incarnation.
    Wipe { replica: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let deleted = (0..5u8).prop_map(|x| x == 0);
    prop_oneof![
        3 => (0..8usize, 0..8usize).prop_map(|(client, replica)| Op::Read { client, replica }),
        3 => (0..8usize, 0..8usize, deleted.clone())
            .prop_map(|(client, replica, deleted)| Op::Write { client, replica, deleted }),
        1 => (0..8usize, 0..8usize, deleted)
            .prop_map(|(client, replica, deleted)| Op::Blind { client, replica, deleted }),
        3 => (0..8usize, 0..8usize).prop_map(|(from, to)| Op::Merge { from, to }),
        1 => (0..8usize).prop_map(|replica| Op::Wipe { replica }),
    ]
}

/// The shape of a generated world: how many replicas and clients, whether each client
/// always uses one replica (as a client of one coordinator does), and whether disks are
/// lost (a client whose replica lost its disk may no longer see its own last write, so it
/// can then make a second sibling of its own, truly concurrent).
#[derive(Clone, Debug)]
struct Shape {
    replicas: usize,
    clients: usize,
    sticky: bool,
    wipes: bool,
}

fn shape() -> impl Strategy<Value = Shape> {
    (1..=4usize, 1..=4usize, any::<bool>(), any::<bool>()).prop_map(
        |(replicas, clients, sticky, wipes)| Shape {
            replicas,
            clients,
            sticky,
            wipes,
        },
    )
}

/// What a client carries between requests: the context it was given, and (the model's
/// truth) every write it had seen when it was given it.
#[derive(Clone, Debug, Default)]
struct Held {
    context: VersionVector,
    seen: BTreeSet<Dot>,
}

/// Replicas as the component keeps them, and beside them the truth of the history.
struct World {
    shape: Shape,
    replicas: Vec<Container>,
    /// Each replica's current incarnation.
    incarnations: Vec<u64>,
    clients: Vec<Held>,
    /// Every write ever made, and every write its writer had seen (transitively).
    seen: BTreeMap<Dot, BTreeSet<Dot>>,
    /// Every write's clock, as answered when it was made.
    clocks: BTreeMap<Dot, VersionVector>,
    /// Writes whose every copy was on a disk that was lost: they may be gone.
    lost_with_a_disk: BTreeSet<Dot>,
    next_value: u64,
}

impl World {
    fn new(shape: Shape) -> Self {
        World {
            replicas: vec![Container::new(); shape.replicas],
            incarnations: vec![0; shape.replicas],
            clients: vec![Held::default(); shape.clients],
            shape,
            seen: BTreeMap::new(),
            clocks: BTreeMap::new(),
            lost_with_a_disk: BTreeSet::new(),
            next_value: 0,
        }
    }

    fn actor_of(&self, replica: usize) -> Actor {
        Actor::new(replica as u64 + 1, self.incarnations[replica])
    }

    fn replica_for(&self, client: usize, replica: usize) -> usize {
        if self.shape.sticky {
            client % self.shape.replicas
        } else {
            replica % self.shape.replicas
        }
    }

    /// The writes a replica's holder has seen: what it holds and all they had seen.
    fn closure(&self, container: &Container) -> BTreeSet<Dot> {
        let mut all = BTreeSet::new();
        for v in container.versions() {
            all.insert(v.dot());
            all.extend(self.seen.get(&v.dot()).into_iter().flatten().copied());
        }
        all
    }

    /// A context covers exactly the writes its holder had seen, and no write never made.
    fn check_context(&self, context: &VersionVector, seen: &BTreeSet<Dot>) {
        for &dot in self.seen.keys() {
            assert_eq!(
                context.has_seen(dot),
                seen.contains(&dot),
                "{dot} in {context:?}"
            );
        }
        let mut covered: Vec<Dot> = context.cloud().collect();
        for (actor, counter) in context.iter() {
            covered.extend((1..=counter).map(|c| Dot::new(actor, c)));
        }
        for dot in covered {
            assert!(self.seen.contains_key(&dot), "{dot} was never written");
        }
        assert_eq!(
            decode_context(&encode_context(context)).as_ref(),
            Ok(context)
        );
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Read { client, replica } => {
                let client = client % self.shape.clients;
                let r = self.replica_for(client, replica);
                let seen = self.closure(&self.replicas[r]);
                let context = self.replicas[r].context().clone();
                self.check_context(&context, &seen);
                self.clients[client] = Held { context, seen };
            }
            Op::Write {
                client,
                replica,
                deleted,
            } => self.write(client, replica, deleted, false),
            Op::Blind {
                client,
                replica,
                deleted,
            } => self.write(client, replica, deleted, true),
            Op::Merge { from, to } => {
                let (from, to) = (from % self.shape.replicas, to % self.shape.replicas);
                let source = self.replicas[from].clone();
                let before = self.replicas[to].clone();
                let report = self.replicas[to].merge(&source);
                assert_eq!(report.changed, before != self.replicas[to]);
                assert_eq!(report.reused_dots, 0);
                // A second merge of the same source is a no-op (`join` is this very clone
                // and merge, so comparing with it would prove nothing).
                let after = self.replicas[to].clone();
                let again = self.replicas[to].merge(&source);
                assert!(
                    !again.changed,
                    "merging {from} into {to} twice changed it again"
                );
                assert_eq!(self.replicas[to], after);
            }
            Op::Wipe { .. } if !self.shape.wipes => {}
            Op::Wipe { replica } => {
                let r = replica % self.shape.replicas;
                self.replicas[r] = Container::new();
                self.incarnations[r] += 1;
                let all = self.join_all();
                let lost: Vec<Dot> = self
                    .clocks
                    .keys()
                    .filter(|&&dot| self.accounted_by(&all, dot).is_none())
                    .copied()
                    .collect();
                self.lost_with_a_disk.extend(lost);
            }
        }
    }

    fn write(&mut self, client: usize, replica: usize, deleted: bool, blind: bool) {
        let client = client % self.shape.clients;
        let r = self.replica_for(client, replica);
        let before = self.replicas[r].clone();
        let held = &self.clients[client];
        let (context, truth) = if blind {
            (None, self.closure(&before))
        } else {
            (Some(held.context.clone()), held.seen.clone())
        };
        self.next_value += 1;
        let payload = if deleted {
            Payload::Deleted
        } else {
            Payload::Value(format!("v{}", self.next_value))
        };
        let predicted = before.siblings_after_write(context.as_ref());
        let actor = self.actor_of(r);
        let dot = match self.replicas[r].write(actor, context.as_ref(), payload) {
            Ok(dot) => dot,
            Err(e) => panic!("write refused: {e}"),
        };
        let after = &self.replicas[r];
        assert_eq!(after.len(), predicted);
        // Exactly the versions its writer had not seen stay, beside the new one.
        let kept: BTreeSet<Dot> = after
            .versions()
            .map(Version::dot)
            .filter(|&d| d != dot)
            .collect();
        let expected: BTreeSet<Dot> = before
            .versions()
            .map(Version::dot)
            .filter(|d| !truth.contains(d))
            .collect();
        assert_eq!(kept, expected);
        assert!(!self.seen.contains_key(&dot), "dot {dot} handed out twice");
        let Some(version) = after.version(dot) else {
            panic!("new version {dot} missing");
        };
        let clock = version.clock();
        for d in &truth {
            if let Some(old) = self.clocks.get(d) {
                assert!(clock.dominates(old), "{clock:?} not above {old:?}");
            }
        }
        let answer = version.answer_context();
        self.seen.insert(dot, truth.clone());
        self.clocks.insert(dot, clock);
        let mut seen = truth;
        seen.insert(dot);
        self.check_context(&answer, &seen);
        self.clients[client] = Held {
            context: answer,
            seen,
        };
    }

    /// Rules that hold after every step.
    fn check(&self) {
        for container in &self.replicas {
            assert_eq!(container.check_invariants(), Ok(()));
            // No false siblings: no held version's writer had seen another held version.
            for v in container.versions() {
                let seen = self.seen.get(&v.dot()).cloned().unwrap_or_default();
                for w in container.versions() {
                    assert!(!seen.contains(&w.dot()), "{} had seen {}", v.dot(), w.dot());
                }
            }
            if self.shape.sticky && !self.shape.wipes {
                assert!(container.len() <= self.shape.clients, "sibling explosion");
            }
        }
    }

    fn join_all(&self) -> Container {
        let mut all = Container::new();
        for container in &self.replicas {
            all.merge(container);
        }
        all
    }

    /// The held version of `all` that accounts for the write `dot`: the write itself, or a
    /// write that had seen it and whose clock is above its clock.
    fn accounted_by<'a>(&self, all: &'a Container, dot: Dot) -> Option<&'a Version> {
        all.version(dot).or_else(|| {
            let clock = self.clocks.get(&dot)?;
            all.versions().find(|h| {
                self.seen.get(&h.dot()).is_some_and(|s| s.contains(&dot))
                    && h.clock().dominates(clock)
            })
        })
    }

    /// Once every state has met, every write is held or superseded by a held write that
    /// had seen it (and whose clock is above its clock), unless every copy of it was on a
    /// disk that was lost.
    fn check_no_dot_lost(&self) -> Container {
        let all = self.join_all();
        for &dot in self.clocks.keys() {
            if !self.lost_with_a_disk.contains(&dot) {
                assert!(self.accounted_by(&all, dot).is_some(), "write {dot} lost");
            }
        }
        all
    }
}

fn run(shape: Shape, ops: &[Op]) -> World {
    let mut world = World::new(shape);
    for op in ops {
        world.apply(op);
        world.check();
    }
    world
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn histories_keep_every_rule(shape in shape(), ops in prop::collection::vec(op(), 0..80)) {
        let world = run(shape, &ops);
        let all = world.check_no_dot_lost();
        // Replicas that received the same writes hold the same state, in any order.
        let mut reversed = Container::new();
        for container in world.replicas.iter().rev() {
            reversed.merge(container);
        }
        prop_assert_eq!(&all, &reversed);
        for container in &world.replicas {
            prop_assert!(all.includes(container));
            let bytes = container_to_bytes(container);
            let decoded = decode_container(&bytes);
            prop_assert_eq!(decoded.as_ref(), Ok(container));
        }
    }

    #[test]
    fn merge_is_a_join(ops in prop::collection::vec(op(), 0..80)) {
        let shape = Shape { replicas: 3, clients: 3, sticky: false, wipes: true };
        let world = run(shape, &ops);
        let [a, b, c] = [&world.replicas[0], &world.replicas[1], &world.replicas[2]];
        prop_assert_eq!(a.join(b), b.join(a));
        prop_assert_eq!(a.join(b).join(c), a.join(&b.join(c)));
        prop_assert_eq!(&a.join(a), a);
        prop_assert_eq!(a.includes(b), &a.join(b) == a);
        prop_assert_eq!(a.join(b).includes(a), true);
    }

    /// Independent histories hand out the same dots for different writes (what a lost
    /// disk without a new incarnation does); merging must still converge, in any order.
    #[test]
    fn merge_is_a_join_even_with_reused_dots(
        x in prop::collection::vec(op(), 0..40),
        y in prop::collection::vec(op(), 0..40),
        z in prop::collection::vec(op(), 0..40),
    ) {
        let shape = Shape { replicas: 2, clients: 2, sticky: false, wipes: true };
        let states: Vec<Container> = [x, y, z]
            .iter()
            .map(|ops| {
                let world = run(shape.clone(), ops);
                world.replicas[0].join(&world.replicas[1])
            })
            .collect();
        let [a, b, c] = [&states[0], &states[1], &states[2]];
        prop_assert_eq!(a.join(b), b.join(a));
        prop_assert_eq!(a.join(b).join(c), a.join(&b.join(c)));
        prop_assert_eq!(&a.join(a), a);
        prop_assert_eq!(a.join(b).check_invariants(), Ok(()));
        prop_assert_eq!(a.includes(b), &a.join(b) == a);
    }

    #[test]
    fn contexts_round_trip(
        entries in prop::collection::vec((0..6u64, 0..3u64, 1..20u64), 0..8),
        cloud in prop::collection::vec((0..6u64, 0..3u64, 1..40u64), 0..8),
    ) {
        let mut vv: VersionVector = entries
            .into_iter()
            .map(|(node, inc, counter)| (Actor::new(node, inc), counter))
            .collect();
        for (node, inc, counter) in cloud {
            vv.insert(Dot::new(Actor::new(node, inc), counter));
        }
        let text = encode_context(&vv);
        prop_assert_eq!(decode_context(&text), Ok(vv));
    }

    #[test]
    fn any_context_string_decodes_or_is_refused(text in "[0-9.:,~]{0,40}|\\PC{0,40}") {
        if let Ok(vv) = decode_context(&text) {
            prop_assert_eq!(encode_context(&vv), text);
        }
    }

    #[test]
    fn any_bytes_decode_or_are_refused(
        tail in prop::collection::vec(any::<u8>(), 0..200),
        tagged in any::<bool>(),
    ) {
        // Most random bytes fail on the format byte; half the cases get past it.
        let bytes: Vec<u8> = if tagged { [1].into_iter().chain(tail).collect() } else { tail };
        if let Ok(container) = decode_container(&bytes) {
            prop_assert_eq!(container.check_invariants(), Ok(()));
            prop_assert_eq!(container_to_bytes(&container), bytes);
        }
    }

    #[test]
    fn any_bytes_decode_as_lww_or_are_refused(
        tail in prop::collection::vec(any::<u8>(), 0..40),
        tagged in any::<bool>(),
    ) {
        // Most random bytes fail on the format byte; half the cases get past it.
        let bytes: Vec<u8> = if tagged { [2].into_iter().chain(tail).collect() } else { tail };
        if let Ok(version) = decode_lww(&bytes) {
            let mut again = Vec::new();
            encode_lww(&version, &mut again);
            prop_assert_eq!(again, bytes);
        }
    }

    #[test]
    fn mutated_encodings_decode_or_are_refused(
        ops in prop::collection::vec(op(), 0..40),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let world = run(Shape { replicas: 2, clients: 3, sticky: false, wipes: true }, &ops);
        let mut bytes = container_to_bytes(&world.replicas[0].join(&world.replicas[1]));
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len().max(1));
            match kind {
                0 => if let Some(b) = bytes.get_mut(i) { *b = byte },
                1 => bytes.truncate(i),
                _ => bytes.insert(i.min(bytes.len()), byte),
            }
        }
        if let Ok(container) = decode_container(&bytes) {
            prop_assert_eq!(container.check_invariants(), Ok(()));
            prop_assert_eq!(container_to_bytes(&container), bytes);
        }
    }
}
