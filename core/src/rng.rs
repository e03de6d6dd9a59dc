//! Seeded randomness for the core: backoff jitter and fault sites.
//!
//! The core never asks the OS for randomness: every role takes a seed in its config (the
//! shells draw it from the OS, the simulator from the run's seed), so the same inputs
//! give the same outputs.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A deterministic random stream, seeded by the caller.
#[derive(Clone, Debug)]
pub struct DetRng(ChaCha8Rng);

impl DetRng {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A number in `lo..=hi` (`lo` if the range is empty).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        self.0.random_range(lo..=hi)
    }

    /// True with chance `percent` in 100.
    pub fn percent(&mut self, percent: u8) -> bool {
        self.0.random_range(0..100u8) < percent
    }

    /// A fresh 64-bit number (to seed a component's own stream).
    pub fn next_u64(&mut self) -> u64 {
        self.0.random::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_decides_the_stream() {
        let draw = |seed| {
            let mut rng = DetRng::new(seed);
            (0..8).map(|_| rng.between(0, 1000)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut rng = DetRng::new(1);
        assert_eq!(rng.between(5, 5), 5);
        assert_eq!(rng.between(9, 3), 9);
        assert!((0..100).all(|_| (10..=20).contains(&rng.between(10, 20))));
    }
}
