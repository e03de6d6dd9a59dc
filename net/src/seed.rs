//! Seeds for the core's randomness (retry jitter). The core never asks the OS for
//! randomness; the shell does, once per role, and passes the seed in its config.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A seed drawn from the OS: the standard library keys every `RandomState` from the OS's
/// random source, so hashing a fixed input with a fresh one gives an unpredictable value.
pub(crate) fn seed_from_os() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    hasher.finish()
}
