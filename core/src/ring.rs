//! Consistent-hashing placement: which servers hold a key.
//!
//! Every role computes placement from the same ring membership and the same hash, so
//! coordinator, servers and simulator agree on a key's replicas without talking.
//! Positions and server IDs live on one unsigned 64-bit circle; a key belongs to the
//! first server at or after its position, and the servers after it clockwise keep the
//! other copies (its preference list of N; strong mode keeps two).

use std::collections::BTreeSet;
use std::ops::Bound;

/// A server's identity and, at the same time, its position on the ring.
pub type ServerId = u64;

/// Where a key sits on the ring. Fixed as xxh3-64 with seed 0 so that placement is
/// stable across processes, versions and platforms.
pub fn key_position(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// The two servers that hold a key: writes go to both, reads prefer the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaPair {
    /// The first server at or after the key's position.
    pub primary: ServerId,
    /// The primary's successor, which keeps the second copy.
    pub secondary: ServerId,
}

/// The ring membership. A sorted set, so ring order is ascending ID order and every
/// lookup is a logarithmic range query with deterministic iteration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ring {
    ids: BTreeSet<ServerId>,
}

impl Ring {
    /// An empty ring, which places nothing until servers join.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a server; returns true if it was not already a member, so callers can tell
    /// a join from a duplicate announcement.
    pub fn insert(&mut self, id: ServerId) -> bool {
        self.ids.insert(id)
    }

    /// Removes a server; returns true if it was a member, so callers can tell a real
    /// departure from a stale one.
    pub fn remove(&mut self, id: ServerId) -> bool {
        self.ids.remove(&id)
    }

    /// Whether a server is a member, e.g. to reject requests routed on stale views.
    pub fn contains(&self, id: ServerId) -> bool {
        self.ids.contains(&id)
    }

    /// How many servers are members.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no server is a member (nothing can be placed).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The members in ring order (ascending ID), for status output and rebalancing.
    pub fn ids(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.ids.iter().copied()
    }

    /// The server that owns a position: the smallest ID >= position, wrapping around to
    /// the smallest ID. None when the ring is empty.
    pub fn owner(&self, position: u64) -> Option<ServerId> {
        self.ids
            .range(position..)
            .next()
            .or_else(|| self.ids.first())
            .copied()
    }

    /// The next server clockwise (next larger ID, wrapping). None if `id` is not a member
    /// or is the only member, since a server is never its own replica.
    pub fn successor(&self, id: ServerId) -> Option<ServerId> {
        if self.ids.len() < 2 || !self.contains(id) {
            return None;
        }
        self.ids
            .range((Bound::Excluded(id), Bound::Unbounded))
            .next()
            .or_else(|| self.ids.first())
            .copied()
    }

    /// The next server counter-clockwise (next smaller ID, wrapping). None if `id` is
    /// not a member or is the only member.
    pub fn predecessor(&self, id: ServerId) -> Option<ServerId> {
        if self.ids.len() < 2 || !self.contains(id) {
            return None;
        }
        self.ids
            .range(..id)
            .next_back()
            .or_else(|| self.ids.last())
            .copied()
    }

    /// The first `n` distinct servers met walking clockwise from `position`: the owner,
    /// then its successors. Fewer when the ring has fewer than `n` servers.
    pub fn preference_list_at(&self, position: u64, n: usize) -> Vec<ServerId> {
        let from_position = self.ids.range(position..);
        let wrapped = self.ids.range(..position);
        let list: Vec<ServerId> = from_position.chain(wrapped).take(n).copied().collect();
        debug_assert!(list.len() == n.min(self.ids.len()));
        list
    }

    /// The preference list of N for a key, hashing it with [`key_position`].
    pub fn preference_list(&self, key: &str, n: usize) -> Vec<ServerId> {
        self.preference_list_at(key_position(key), n)
    }

    /// The primary and secondary for a position: the first two of its preference list.
    /// None with fewer than two servers, because a key must never be stored with a
    /// single copy.
    pub fn replicas(&self, position: u64) -> Option<ReplicaPair> {
        match self.preference_list_at(position, 2).as_slice() {
            &[primary, secondary] => Some(ReplicaPair { primary, secondary }),
            _ => None,
        }
    }

    /// The replicas of a key, hashing it with [`key_position`].
    pub fn replicas_for_key(&self, key: &str) -> Option<ReplicaPair> {
        self.replicas(key_position(key))
    }
}

impl FromIterator<ServerId> for Ring {
    /// Builds a ring from a membership list; duplicates collapse into one member.
    fn from_iter<I: IntoIterator<Item = ServerId>>(iter: I) -> Self {
        Self {
            ids: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_position_is_xxh3_with_seed_zero() {
        assert_eq!(key_position(""), xxhash_rust::xxh3::xxh3_64(b""));
        assert_eq!(
            key_position("hello"),
            xxhash_rust::xxh3::xxh3_64_with_seed(b"hello", 0)
        );
        // Pinned so that a change of hash or seed, which would move every key, fails here.
        assert_eq!(key_position("hello"), 0x9555_e855_5c62_dcfd);
    }

    #[test]
    fn empty_and_single_server_rings() {
        let empty = Ring::new();
        assert!(empty.is_empty());
        assert_eq!(empty.owner(0), None);
        assert_eq!(empty.replicas(0), None);
        assert_eq!(empty.successor(0), None);
        assert_eq!(empty.predecessor(0), None);

        let one: Ring = [7].into_iter().collect();
        assert_eq!(one.len(), 1);
        assert_eq!(one.owner(0), Some(7));
        assert_eq!(one.owner(u64::MAX), Some(7));
        assert_eq!(one.successor(7), None);
        assert_eq!(one.predecessor(7), None);
        assert_eq!(one.replicas(3), None);
        assert_eq!(one.replicas_for_key("k"), None);
    }

    #[test]
    fn insert_remove_contains() {
        let mut ring = Ring::new();
        assert!(ring.insert(5));
        assert!(!ring.insert(5));
        assert!(ring.insert(1));
        assert!(ring.contains(5));
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![1, 5]);
        assert!(ring.remove(5));
        assert!(!ring.remove(5));
        assert!(!ring.contains(5));
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn extreme_ids_and_exact_positions() {
        let ring: Ring = [0, 100, u64::MAX].into_iter().collect();
        // A position equal to an ID belongs to that ID.
        assert_eq!(ring.owner(0), Some(0));
        assert_eq!(ring.owner(100), Some(100));
        assert_eq!(ring.owner(u64::MAX), Some(u64::MAX));
        assert_eq!(ring.owner(1), Some(100));
        assert_eq!(ring.owner(101), Some(u64::MAX));
        // u64::MAX's successor wraps to 0, and 0's predecessor wraps to u64::MAX.
        assert_eq!(ring.successor(u64::MAX), Some(0));
        assert_eq!(ring.predecessor(0), Some(u64::MAX));
        assert_eq!(
            ring.replicas(u64::MAX),
            Some(ReplicaPair {
                primary: u64::MAX,
                secondary: 0
            })
        );
        // Non-members have no neighbours.
        assert_eq!(ring.successor(50), None);
        assert_eq!(ring.predecessor(50), None);
    }

    #[test]
    fn position_above_largest_id_wraps() {
        let ring: Ring = [10, 20].into_iter().collect();
        assert_eq!(ring.owner(21), Some(10));
        assert_eq!(ring.owner(u64::MAX), Some(10));
        assert_eq!(
            ring.replicas(21),
            Some(ReplicaPair {
                primary: 10,
                secondary: 20
            })
        );
    }

    #[test]
    fn two_servers_are_each_others_neighbours() {
        let ring: Ring = [10, 20].into_iter().collect();
        assert_eq!(ring.successor(10), Some(20));
        assert_eq!(ring.successor(20), Some(10));
        assert_eq!(ring.predecessor(10), Some(20));
        assert_eq!(ring.predecessor(20), Some(10));
        assert_eq!(
            ring.replicas(15),
            Some(ReplicaPair {
                primary: 20,
                secondary: 10
            })
        );
    }

    #[test]
    fn replicas_for_key_uses_key_position() {
        let ids: [u64; 3] = [1 << 62, 2 << 62, 3 << 62];
        let ring: Ring = ids.into_iter().collect();
        for key in ["", "a", "hello", "user:42"] {
            // Worked out by hand from the (pinned) position: the first ID at or past it,
            // wrapping, then the next one.
            let at = key_position(key);
            let first = ids.iter().position(|&id| id >= at).unwrap_or(0);
            let expected = ReplicaPair {
                primary: ids[first],
                secondary: ids[(first + 1) % ids.len()],
            };
            assert_eq!(
                ring.replicas_for_key(key),
                Some(expected),
                "{key:?} at {at}"
            );
        }
    }

    /// The obvious implementation: a sorted Vec scanned linearly.
    struct Model {
        sorted_ids: Vec<u64>,
    }

    impl Model {
        fn owner(&self, position: u64) -> Option<u64> {
            self.sorted_ids
                .iter()
                .copied()
                .find(|&id| id >= position)
                .or_else(|| self.sorted_ids.first().copied())
        }

        fn index_of(&self, id: u64) -> Option<usize> {
            if self.sorted_ids.len() < 2 {
                return None;
            }
            self.sorted_ids.iter().position(|&x| x == id)
        }

        fn successor(&self, id: u64) -> Option<u64> {
            let n = self.sorted_ids.len();
            self.index_of(id).map(|i| self.sorted_ids[(i + 1) % n])
        }

        fn predecessor(&self, id: u64) -> Option<u64> {
            let n = self.sorted_ids.len();
            self.index_of(id).map(|i| self.sorted_ids[(i + n - 1) % n])
        }
    }

    fn id_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1u64),
            Just(u64::MAX),
            Just(u64::MAX - 1),
            any::<u64>(),
            any::<u64>(),
        ]
    }

    proptest! {
        #[test]
        fn matches_brute_force_model(
            raw_ids in proptest::collection::vec(id_strategy(), 2..8),
            random_positions in proptest::collection::vec(any::<u64>(), 0..4),
        ) {
            let ring: Ring = raw_ids.iter().copied().collect();
            let mut sorted_ids = raw_ids.clone();
            sorted_ids.sort_unstable();
            sorted_ids.dedup();
            let model = Model { sorted_ids };

            prop_assert_eq!(ring.ids().collect::<Vec<_>>(), model.sorted_ids.clone());
            prop_assert_eq!(ring.len(), model.sorted_ids.len());

            let mut probes = random_positions;
            probes.extend([0, 1, u64::MAX - 1, u64::MAX]);
            for &id in &model.sorted_ids {
                probes.extend([id.wrapping_sub(1), id, id.wrapping_add(1)]);
            }
            for position in probes {
                let owner = model.owner(position);
                prop_assert_eq!(ring.owner(position), owner);
                prop_assert_eq!(ring.contains(position), model.sorted_ids.contains(&position));
                prop_assert_eq!(ring.successor(position), model.successor(position));
                prop_assert_eq!(ring.predecessor(position), model.predecessor(position));
                let expected = owner.and_then(|primary| {
                    model
                        .successor(primary)
                        .map(|secondary| ReplicaPair { primary, secondary })
                });
                prop_assert_eq!(ring.replicas(position), expected);
                // The preference list walks owner, successor, successor's successor...
                for n in 0..=model.sorted_ids.len() + 1 {
                    let mut walk: Vec<u64> = Vec::new();
                    let mut at = owner;
                    while let Some(id) = at {
                        if walk.len() == n || walk.contains(&id) {
                            break;
                        }
                        walk.push(id);
                        at = model.successor(id);
                    }
                    prop_assert_eq!(ring.preference_list_at(position, n), walk);
                }
            }
        }
    }

    #[test]
    fn preference_list_wraps_and_never_repeats() {
        let ring: Ring = [10, 20, 30].into_iter().collect();
        assert_eq!(ring.preference_list_at(20, 2), vec![20, 30]);
        assert_eq!(ring.preference_list_at(21, 3), vec![30, 10, 20]);
        assert_eq!(ring.preference_list_at(u64::MAX, 5), vec![10, 20, 30]);
        assert_eq!(ring.preference_list_at(0, 0), Vec::<u64>::new());
        let edges: Ring = [0, u64::MAX].into_iter().collect();
        assert_eq!(edges.preference_list_at(u64::MAX, 2), vec![u64::MAX, 0]);
        assert_eq!(edges.preference_list_at(1, 2), vec![u64::MAX, 0]);
        assert!(Ring::new().preference_list("k", 2).is_empty());
    }
}
