//! Retry waits that grow: each wait doubles from `wait_ms_min` up to `wait_ms_max`, and
//! is stretched by a seeded jitter of up to half, so that many retries started together
//! (a restarted server, colliding coordinators) spread out instead of arriving in step.

use crate::rng::DetRng;

/// How a series of retries waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The base of the first wait.
    pub wait_ms_min: u64,
    /// The longest wait, jitter included.
    pub wait_ms_max: u64,
}

/// Where one series of retries stands: the base of its next wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts {
    base_ms: u64,
}

impl Backoff {
    /// Whether the waits can work: at least 1 ms, the longest no shorter than the first.
    pub fn is_valid(&self) -> bool {
        self.wait_ms_min >= 1 && self.wait_ms_max >= self.wait_ms_min
    }

    /// A new series, whose first wait has the shortest base.
    pub fn begin(&self) -> Attempts {
        assert!(self.is_valid(), "backoff {self:?} cannot work");
        Attempts {
            base_ms: self.wait_ms_min,
        }
    }

    /// The next wait of `attempts`, jittered in `base..=min(1.5 * base, max)`; the base
    /// then doubles. Waits never shrink: the next base is at least the longest wait the
    /// jitter could have given.
    pub fn next_wait_ms(&self, attempts: &mut Attempts, rng: &mut DetRng) -> u64 {
        let base_ms = attempts.base_ms;
        assert!(
            (self.wait_ms_min..=self.wait_ms_max).contains(&base_ms),
            "backoff base {base_ms} outside {self:?}"
        );
        let hi = base_ms.saturating_add(base_ms / 2).min(self.wait_ms_max);
        let wait_ms = rng.between(base_ms, hi);
        attempts.base_ms = base_ms.saturating_mul(2).min(self.wait_ms_max);
        wait_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_jitter_and_never_shrink() {
        let backoff = Backoff {
            wait_ms_min: 100,
            wait_ms_max: 1000,
        };
        let mut rng = DetRng::new(3);
        for _ in 0..50 {
            let mut attempts = backoff.begin();
            let waits: Vec<u64> = (0..8)
                .map(|_| backoff.next_wait_ms(&mut attempts, &mut rng))
                .collect();
            assert!((100..=150).contains(&waits[0]), "{waits:?}");
            assert!((200..=300).contains(&waits[1]), "{waits:?}");
            assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
            assert_eq!(waits[7], 1000, "{waits:?}");
        }
        let spread: std::collections::BTreeSet<u64> = (0..50)
            .map(|_| backoff.next_wait_ms(&mut backoff.begin(), &mut rng))
            .collect();
        assert!(spread.len() > 10, "jitter spreads first waits: {spread:?}");
    }

    #[test]
    fn a_wait_of_one_millisecond_works() {
        let backoff = Backoff {
            wait_ms_min: 1,
            wait_ms_max: 1,
        };
        let mut rng = DetRng::new(0);
        let mut attempts = backoff.begin();
        assert_eq!(backoff.next_wait_ms(&mut attempts, &mut rng), 1);
        assert_eq!(backoff.next_wait_ms(&mut attempts, &mut rng), 1);
        assert!(!Backoff {
            wait_ms_min: 0,
            wait_ms_max: 5
        }
        .is_valid());
    }
}
