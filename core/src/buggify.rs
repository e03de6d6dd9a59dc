//! Fault sites: places in the core where an unusual but legal path exists (a retry sent
//! sooner, the other replica asked first, a spurious `overloaded`), which production
//! never takes and the simulator turns on from the run's seed, so that rare paths are
//! exercised under faults and not only when the real world happens to produce them.
//!
//! As in FoundationDB's `BUGGIFY`: each site is switched on or off for the whole run the
//! first time it is reached (half of them on), and a switched-on site then fires a quarter
//! of the times it is reached. Sites fire only before `until_ms`, so that a run's
//! liveness phase sees the normal paths.

use std::collections::BTreeMap;

use crate::rng::DetRng;
use crate::Ts;

/// Every fault site of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultSite {
    /// A two-phase-commit driver resends after the shortest wait instead of its backoff.
    ShortResendWait,
    /// The coordinator asks a key's secondary first for a GET.
    SecondaryFirst,
    /// The coordinator answers an update `overloaded` without trying it.
    SpuriousOverloaded,
    /// A participant votes to abort a prepare with `overloaded`.
    SpuriousRefusal,
    /// An eventual-mode coordinator does not ship a write to a replica beyond the W it
    /// needs, as if the message were lost (its hint or a read repair brings it there).
    SkipReplicaSend,
    /// A peer node's participant in doubt asks for the decision at once instead of after
    /// the timeout (other participants that have not voted yet then renounce it).
    EarlyInDoubtQuery,
}

/// Turns fault sites on in a simulated run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuggifyConfig {
    /// The stream that decides which sites are on and when they fire.
    pub seed: u64,
    /// No site fires at or after this time.
    pub until_ms: Ts,
}

/// The fault sites of one role: off in production.
#[derive(Clone, Debug)]
pub struct Buggify {
    state: Option<State>,
}

#[derive(Clone, Debug)]
struct State {
    rng: DetRng,
    until_ms: Ts,
    /// Whether each site reached so far is on for this run.
    switched: BTreeMap<FaultSite, bool>,
}

impl Buggify {
    /// No site ever fires.
    pub fn off() -> Self {
        Self { state: None }
    }

    /// Sites fire as `config` decides, or never without one.
    pub fn new(config: Option<BuggifyConfig>) -> Self {
        Self {
            state: config.map(|c| State {
                rng: DetRng::new(c.seed),
                until_ms: c.until_ms,
                switched: BTreeMap::new(),
            }),
        }
    }

    /// Whether the unusual path of `site` is taken now.
    pub fn fires(&mut self, now: Ts, site: FaultSite) -> bool {
        let Some(state) = self.state.as_mut() else {
            return false;
        };
        if now >= state.until_ms {
            return false;
        }
        let rng = &mut state.rng;
        let on = *state
            .switched
            .entry(site)
            .or_insert_with(|| rng.percent(50));
        on && state.rng.percent(25)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_never_fires_and_on_fires_only_before_its_end() {
        let mut off = Buggify::off();
        assert!((0..1000).all(|t| !off.fires(t, FaultSite::SecondaryFirst)));
        let sites = [
            FaultSite::ShortResendWait,
            FaultSite::SecondaryFirst,
            FaultSite::SpuriousOverloaded,
            FaultSite::SpuriousRefusal,
        ];
        let mut fired_somewhere = 0;
        for seed in 0..20 {
            let mut b = Buggify::new(Some(BuggifyConfig {
                seed,
                until_ms: 100,
            }));
            for site in sites {
                let fired = (0..100).filter(|&t| b.fires(t, site)).count();
                fired_somewhere += usize::from(fired > 0);
                assert!(fired < 60, "a site fires about a quarter of the time");
                assert!((100..200).all(|t| !b.fires(t, site)));
            }
        }
        assert!(
            (20..=60).contains(&fired_somewhere),
            "about half the sites are on: {fired_somewhere} of 80"
        );
    }
}
