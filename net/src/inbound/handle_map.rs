//! Maps keyed by reply handles, hashed with one multiplication.
//!
//! A port looks up two maps per request by handle; the standard SipHash, built to resist
//! keys chosen by an attacker, cost about as much as the rest of a cached GET's
//! bookkeeping. Handles are counters the port hands out itself, never input, so a hash
//! that only spreads them is enough.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from reply handles to `V`.
pub(crate) type HandleMap<V> = HashMap<u64, V, BuildHasherDefault<HandleHasher>>;

/// Fibonacci hashing: the product's high bits (which the table's control bytes use) mix
/// every bit of the handle, and its low bits (the bucket) are distinct for consecutive
/// handles.
#[derive(Default)]
pub(crate) struct HandleHasher(u64);

const GOLDEN_RATIO: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for HandleHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(GOLDEN_RATIO);
        }
    }

    fn write_u64(&mut self, handle: u64) {
        self.0 = (self.0 ^ handle).wrapping_mul(GOLDEN_RATIO);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_handles_land_apart_and_are_found() {
        let mut map: HandleMap<u64> = HandleMap::default();
        for handle in 0..10_000 {
            map.insert(handle, handle * 2);
        }
        for handle in (0..10_000).step_by(7) {
            assert_eq!(map.remove(&handle), Some(handle * 2));
        }
        assert_eq!(map.get(&9_999), Some(&19_998));
        assert_eq!(map.get(&7), None);
        let top_bits: std::collections::BTreeSet<u64> = (0..128u64)
            .map(|handle| {
                let mut hasher = HandleHasher::default();
                hasher.write_u64(handle);
                hasher.finish() >> 57
            })
            .collect();
        assert!(
            top_bits.len() > 64,
            "control bytes spread: {}",
            top_bits.len()
        );
    }
}
