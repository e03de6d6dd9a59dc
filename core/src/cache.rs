//! A set-associative, write-through cache with second-chance replacement, as CS162
//! defines it.
//!
//! The coordinator and every KV server keep one to answer repeated reads without a
//! round trip or a log scan. Being write-through, it never holds the only copy of a
//! value, so eviction is always safe. The policy is specified exactly (not "some LRU
//! approximation") so that the simulator's model and the real code evict the same
//! entries.

use std::collections::VecDeque;
use std::fmt;

/// Seed for choosing a key's set. Deliberately not the ring's seed 0, so that the keys
/// one server owns do not all crowd into the same few sets of the coordinator's cache.
const CACHE_SET_SEED: u64 = 0x5eed_cace;

/// The largest `sets * ways` accepted, so a typo in a config cannot reserve the machine.
const MAX_CAPACITY_ENTRIES: usize = 1 << 24;

/// The shape of a cache: how many sets, and how many entries (ways) each set holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Number of sets; a key's set is fixed by its hash.
    pub sets: usize,
    /// Entries per set; a full set must evict before it accepts a new key.
    pub ways: usize,
}

impl CacheConfig {
    /// The coordinator's cache, as the assignment specifies it.
    pub const COORDINATOR_DEFAULT: CacheConfig = CacheConfig {
        sets: 100,
        ways: 10,
    };
    /// A KV server's cache: smaller, since each server sees only its share of keys.
    pub const SERVER_DEFAULT: CacheConfig = CacheConfig { sets: 16, ways: 8 };
}

/// Why a [`CacheConfig`] was rejected, so that a bad configuration fails at startup
/// rather than as a division by zero or an allocation failure later.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheConfigError {
    /// `sets` was zero: no key would have a set to live in.
    ZeroSets,
    /// `ways` was zero: no set could hold an entry.
    ZeroWays,
    /// `sets * ways` overflowed or exceeded 2^24 entries.
    TooLarge,
}

impl fmt::Display for CacheConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheConfigError::ZeroSets => f.write_str("cache needs at least one set"),
            CacheConfigError::ZeroWays => f.write_str("cache needs at least one way per set"),
            CacheConfigError::TooLarge => write!(
                f,
                "cache sets * ways must not exceed {MAX_CAPACITY_ENTRIES} entries"
            ),
        }
    }
}

impl std::error::Error for CacheConfigError {}

/// One cached key. The reference bit records a use since the eviction scan last passed,
/// which is what buys the entry its second chance.
#[derive(Clone, Debug)]
struct Entry<V> {
    key: String,
    value: V,
    referenced: bool,
}

/// The cache itself. Each set is a queue from head (next eviction candidate) to tail
/// (most recently admitted or spared).
#[derive(Clone, Debug)]
pub struct SetAssociativeCache<V> {
    config: CacheConfig,
    sets: Vec<VecDeque<Entry<V>>>,
    len: usize,
}

impl<V> SetAssociativeCache<V> {
    /// An empty cache of the given shape; rejects shapes that hold nothing or too much.
    pub fn new(config: CacheConfig) -> Result<Self, CacheConfigError> {
        if config.sets == 0 {
            return Err(CacheConfigError::ZeroSets);
        }
        if config.ways == 0 {
            return Err(CacheConfigError::ZeroWays);
        }
        match config.sets.checked_mul(config.ways) {
            Some(capacity) if capacity <= MAX_CAPACITY_ENTRIES => {}
            _ => return Err(CacheConfigError::TooLarge),
        }
        let sets = (0..config.sets).map(|_| VecDeque::new()).collect();
        Ok(Self {
            config,
            sets,
            len: 0,
        })
    }

    /// The shape this cache was built with, for status output.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// The set a key lives in; public so status output and tests can predict conflicts.
    pub fn set_of(&self, key: &str) -> usize {
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), CACHE_SET_SEED);
        // `sets.len()` is at most 2^24, so both conversions are lossless, and indexing
        // `self.sets` with the result can never go out of bounds.
        (hash % self.sets.len() as u64) as usize
    }

    /// Looks a key up and, on a hit, sets its reference bit so the next eviction scan
    /// spares it once.
    pub fn get(&mut self, key: &str) -> Option<&V> {
        let set_index = self.set_of(key);
        let entry = self.sets[set_index].iter_mut().find(|e| e.key == key)?;
        entry.referenced = true;
        Some(&entry.value)
    }

    /// Looks a key up without counting it as a use, so that status queries and tests
    /// do not perturb replacement.
    pub fn peek(&self, key: &str) -> Option<&V> {
        self.sets[self.set_of(key)]
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// Stores a value. A present key keeps its place, takes the new value and has its
    /// bit set (a write is a use). A new key enters at the tail with its bit clear,
    /// evicting by second chance first if its set is full.
    pub fn put(&mut self, key: &str, value: V) {
        let ways = self.config.ways;
        let set_index = self.set_of(key);
        let set = &mut self.sets[set_index];
        if let Some(entry) = set.iter_mut().find(|e| e.key == key) {
            entry.value = value;
            entry.referenced = true;
            return;
        }
        if set.len() >= ways {
            // Terminates within one lap plus one: every spared entry loses its bit, so
            // by the time the scan comes round again it finds a clear one.
            while let Some(mut head) = set.pop_front() {
                if !head.referenced {
                    self.len -= 1;
                    break;
                }
                head.referenced = false;
                set.push_back(head);
            }
        }
        set.push_back(Entry {
            key: key.to_owned(),
            value,
            referenced: false,
        });
        self.len += 1;
        assert!(set.len() <= ways, "a cache set outgrew its ways");
    }

    /// Drops a key, e.g. when a write fails or a key moves away; the other entries of
    /// its set keep their order and bits.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let set_index = self.set_of(key);
        let set = &mut self.sets[set_index];
        let position = set.iter().position(|e| e.key == key)?;
        let entry = set.remove(position)?;
        self.len -= 1;
        Some(entry.value)
    }

    /// How many entries are cached across all sets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most entries the cache can hold (`sets * ways`).
    pub fn capacity(&self) -> usize {
        self.config.sets * self.config.ways
    }

    /// Every set's entries from head to tail as (key, value, reference bit), so tests
    /// can compare the whole replacement state with a model.
    #[cfg(test)]
    fn snapshot(&self) -> Vec<Vec<(String, V, bool)>>
    where
        V: Clone,
    {
        self.sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|e| (e.key.clone(), e.value.clone(), e.referenced))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one_set(ways: usize) -> SetAssociativeCache<u32> {
        SetAssociativeCache::new(CacheConfig { sets: 1, ways }).unwrap()
    }

    fn keys_in_order(cache: &SetAssociativeCache<u32>) -> Vec<(String, bool)> {
        cache.snapshot()[0]
            .iter()
            .map(|(k, _, bit)| (k.clone(), *bit))
            .collect()
    }

    fn owned(entries: &[(&str, bool)]) -> Vec<(String, bool)> {
        entries.iter().map(|&(k, b)| (k.to_owned(), b)).collect()
    }

    #[test]
    fn config_validation() {
        let err = |sets, ways| SetAssociativeCache::<u32>::new(CacheConfig { sets, ways }).err();
        assert_eq!(err(0, 1), Some(CacheConfigError::ZeroSets));
        assert_eq!(err(1, 0), Some(CacheConfigError::ZeroWays));
        assert_eq!(err(usize::MAX, 2), Some(CacheConfigError::TooLarge));
        assert_eq!(err((1 << 24) + 1, 1), Some(CacheConfigError::TooLarge));
        assert_eq!(err(1 << 12, 1 << 12), None);
        for config in [
            CacheConfig::COORDINATOR_DEFAULT,
            CacheConfig::SERVER_DEFAULT,
        ] {
            let cache = SetAssociativeCache::<u32>::new(config).unwrap();
            assert_eq!(cache.config(), config);
            assert_eq!(cache.capacity(), config.sets * config.ways);
            assert!(cache.is_empty());
        }
        assert_eq!(CacheConfig::COORDINATOR_DEFAULT.sets, 100);
        assert_eq!(CacheConfig::COORDINATOR_DEFAULT.ways, 10);
        assert!(!CacheConfigError::TooLarge.to_string().is_empty());
    }

    #[test]
    fn set_of_uses_the_cache_seed() {
        let cache = SetAssociativeCache::<u32>::new(CacheConfig::COORDINATOR_DEFAULT).unwrap();
        for key in ["", "a", "hello"] {
            let hash = xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), 0x5eed_cace);
            assert_eq!(cache.set_of(key), (hash % 100) as usize);
        }
    }

    #[test]
    fn new_entries_enter_at_tail_with_bit_clear() {
        let mut cache = one_set(3);
        cache.put("a", 1);
        cache.put("b", 2);
        assert_eq!(keys_in_order(&cache), owned(&[("a", false), ("b", false)]));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn full_set_without_hits_evicts_the_head() {
        let mut cache = one_set(2);
        cache.put("a", 1);
        cache.put("b", 2);
        cache.put("c", 3);
        assert_eq!(cache.peek("a"), None);
        assert_eq!(keys_in_order(&cache), owned(&[("b", false), ("c", false)]));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_hit_saves_an_entry_from_eviction_once() {
        let mut cache = one_set(2);
        cache.put("a", 1);
        cache.put("b", 2);
        assert_eq!(cache.get("a"), Some(&1));
        assert_eq!(keys_in_order(&cache), owned(&[("a", true), ("b", false)]));
        // "a" is spared (bit cleared, moved to tail); "b" goes.
        cache.put("c", 3);
        assert_eq!(keys_in_order(&cache), owned(&[("a", false), ("c", false)]));
        // No second hit, so "a" is not spared again.
        cache.put("d", 4);
        assert_eq!(keys_in_order(&cache), owned(&[("c", false), ("d", false)]));
    }

    #[test]
    fn all_bits_set_evicts_the_original_head_after_a_full_lap() {
        let mut cache = one_set(3);
        for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
            cache.put(k, v);
            cache.get(k);
        }
        cache.put("d", 4);
        assert_eq!(
            keys_in_order(&cache),
            owned(&[("b", false), ("c", false), ("d", false)])
        );
    }

    #[test]
    fn replacing_a_value_sets_the_bit_in_place() {
        let mut cache = one_set(2);
        cache.put("a", 1);
        cache.put("b", 2);
        cache.put("a", 10);
        assert_eq!(keys_in_order(&cache), owned(&[("a", true), ("b", false)]));
        assert_eq!(cache.peek("a"), Some(&10));
        assert_eq!(cache.len(), 2);
        cache.put("c", 3);
        assert_eq!(keys_in_order(&cache), owned(&[("a", false), ("c", false)]));
    }

    #[test]
    fn peek_does_not_set_the_bit() {
        let mut cache = one_set(2);
        cache.put("a", 1);
        assert_eq!(cache.peek("a"), Some(&1));
        assert_eq!(cache.peek("zz"), None);
        assert_eq!(cache.get("zz"), None);
        assert_eq!(keys_in_order(&cache), owned(&[("a", false)]));
    }

    #[test]
    fn remove_then_insert() {
        let mut cache = one_set(3);
        cache.put("a", 1);
        cache.put("b", 2);
        cache.put("c", 3);
        cache.get("c");
        assert_eq!(cache.remove("b"), Some(2));
        assert_eq!(cache.remove("b"), None);
        assert_eq!(cache.len(), 2);
        assert_eq!(keys_in_order(&cache), owned(&[("a", false), ("c", true)]));
        // There is room again, so no eviction: "b" re-enters at the tail.
        cache.put("b", 20);
        assert_eq!(
            keys_in_order(&cache),
            owned(&[("a", false), ("c", true), ("b", false)])
        );
        assert_eq!(cache.peek("b"), Some(&20));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Get(usize),
        Put(usize, u32),
        Remove(usize),
    }

    const KEY_SPACE: usize = 12;

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..KEY_SPACE).prop_map(Op::Get),
            (0..KEY_SPACE, any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)),
            (0..KEY_SPACE).prop_map(Op::Remove),
        ]
    }

    /// The policy written out plainly: per set, a Vec of (key, value, bit) from head
    /// to tail.
    struct Model {
        ways: usize,
        sets: Vec<Vec<(String, u32, bool)>>,
    }

    impl Model {
        fn set_of(&self, key: &str) -> usize {
            let hash = xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), 0x5eed_cace);
            (hash % self.sets.len() as u64) as usize
        }

        fn get(&mut self, key: &str) -> Option<u32> {
            let s = self.set_of(key);
            let entry = self.sets[s].iter_mut().find(|e| e.0 == key)?;
            entry.2 = true;
            Some(entry.1)
        }

        fn put(&mut self, key: &str, value: u32) {
            let s = self.set_of(key);
            let ways = self.ways;
            let set = &mut self.sets[s];
            if let Some(entry) = set.iter_mut().find(|e| e.0 == key) {
                entry.1 = value;
                entry.2 = true;
                return;
            }
            if set.len() == ways {
                loop {
                    let mut head = set.remove(0);
                    if head.2 {
                        head.2 = false;
                        set.push(head);
                    } else {
                        break;
                    }
                }
            }
            set.push((key.to_owned(), value, false));
        }

        fn remove(&mut self, key: &str) -> Option<u32> {
            let s = self.set_of(key);
            let i = self.sets[s].iter().position(|e| e.0 == key)?;
            Some(self.sets[s].remove(i).1)
        }
    }

    proptest! {
        #[test]
        fn matches_second_chance_model(
            sets in 1usize..4,
            ways in 1usize..4,
            ops in proptest::collection::vec(op_strategy(), 0..200),
        ) {
            let mut cache = SetAssociativeCache::new(CacheConfig { sets, ways }).unwrap();
            let mut model = Model { ways, sets: vec![Vec::new(); sets] };
            let key = |k: usize| format!("key{k}");
            for op in ops {
                match op {
                    Op::Get(k) => {
                        let got = cache.get(&key(k)).copied();
                        prop_assert_eq!(got, model.get(&key(k)));
                    }
                    Op::Put(k, v) => {
                        cache.put(&key(k), v);
                        model.put(&key(k), v);
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(cache.remove(&key(k)), model.remove(&key(k)));
                    }
                }
                prop_assert_eq!(&cache.snapshot(), &model.sets);
                let model_len: usize = model.sets.iter().map(Vec::len).sum();
                prop_assert_eq!(cache.len(), model_len);
                prop_assert!(cache.len() <= cache.capacity());
            }
        }
    }
}
