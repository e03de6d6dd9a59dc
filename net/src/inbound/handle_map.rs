//! Maps keyed by reply handles or connection tokens, hashed with one multiplication.
//!
//! A port looks up two maps per request by handle; the standard SipHash, built to resist
//! keys chosen by an attacker, cost about as much as the rest of a cached GET's
//! bookkeeping. Handles and tokens are counters the port hands out itself, never input,
//! so a hash that only spreads them is enough.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use mio::Token;

/// A map from reply handles to `V`.
pub(crate) type HandleMap<V> = HashMap<u64, V, BuildHasherDefault<HandleHasher>>;

/// A map from connection tokens to `V`: tokens too are counters a port hands out, and a
/// port looks its connection up by token several times per request.
pub(crate) type TokenMap<V> = HashMap<Token, V, BuildHasherDefault<HandleHasher>>;

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

    fn write_usize(&mut self, token: usize) {
        // A `Token` hashes as its usize; no supported target has a wider one.
        self.write_u64(token as u64);
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

    #[test]
    fn tokens_are_found_by_their_own_hash() {
        let mut map: TokenMap<usize> = TokenMap::default();
        for n in 0..2_000 {
            map.insert(Token(n), n + 1);
        }
        for n in (0..2_000).step_by(3) {
            assert_eq!(map.remove(&Token(n)), Some(n + 1));
        }
        assert_eq!(map.get(&Token(1_999)), Some(&2_000));
        assert_eq!(map.get(&Token(3)), None);
        let mut by_usize = HandleHasher::default();
        by_usize.write_usize(42);
        let mut by_u64 = HandleHasher::default();
        by_u64.write_u64(42);
        assert_eq!(by_usize.finish(), by_u64.finish());
    }
}
