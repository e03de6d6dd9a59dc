//! The shape of one simulated run, drawn from its seed (swarm testing: each seed turns a
//! different set of faults on, at different strengths, so rare combinations get tried).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::buggify::BuggifyConfig;
use ringkv_core::cache::CacheConfig;
use ringkv_core::Ts;

/// How the network misbehaves during the safety phase.
#[derive(Clone, Debug, PartialEq)]
pub struct NetFaults {
    /// The shortest one-way delay of a message.
    pub min_delay_ms: Ts,
    /// The longest one-way delay of a message (messages overtake each other within it).
    pub max_delay_ms: Ts,
    /// Chance that a message between the coordinator and a server is lost.
    pub loss: f64,
    /// Chance that a message between the coordinator and a server arrives twice.
    pub duplication: f64,
    /// Chance that a client's request or answer is lost (the client sees a time-out).
    pub client_loss: f64,
    /// Mean time between two partitions of a server from the coordinator; 0 for none.
    pub partition_every_ms: Ts,
    /// Mean time between two clogged links (messages held back for a while); 0 for none.
    pub clog_every_ms: Ts,
}

/// How KV servers crash during the safety phase.
#[derive(Clone, Debug, PartialEq)]
pub struct CrashFaults {
    /// Mean time between two crashes; 0 for none.
    pub crash_every_ms: Ts,
    /// The longest a crashed server stays down.
    pub max_down_ms: Ts,
    /// How many servers may be down at once: 1 as the mission assumes, or 2, where
    /// safety must still hold though progress may stop.
    pub max_down: usize,
    /// Chance that a crash tears the last unsynced write instead of cutting it cleanly.
    pub tear: f64,
}

/// Everything one run is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// The KV servers' ring IDs.
    pub server_ids: Vec<u64>,
    /// How many clients run operations.
    pub clients: u32,
    /// The keys the clients use: few, so that operations collide.
    pub keys: Vec<String>,
    /// The coordinator's phase-1 and read timeout.
    pub timeout_ms: Ts,
    /// The coordinator's cache.
    pub coordinator_cache: CacheConfig,
    /// Each server's cache.
    pub server_cache: CacheConfig,
    /// The shortest and longest time an fsync takes.
    pub sync_ms: (Ts, Ts),
    /// Network faults of the safety phase.
    pub net: NetFaults,
    /// Crashes of the safety phase.
    pub crashes: CrashFaults,
    /// How long faults are on.
    pub safety_ms: Ts,
    /// After the faults stop, how long before every operation must succeed.
    pub settle_ms: Ts,
    /// How long clients keep going after the faults stop.
    pub liveness_ms: Ts,
    /// How long a client waits for an answer before it gives up (outcome unknown).
    pub client_timeout_ms: Ts,
    /// Whether the core's fault sites may fire (during the safety phase only).
    pub buggify: bool,
}

impl SimConfig {
    /// The run of `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5151_c0f1_9000_0000);
        let server_count = rng.random_range(2..=7usize);
        let mut server_ids: Vec<u64> = Vec::new();
        while server_ids.len() < server_count {
            let id = match rng.random_range(0..6) {
                0 => 0,
                1 => u64::MAX,
                2 => 1,
                3 => u64::MAX - 1,
                _ => rng.random::<u64>(),
            };
            if !server_ids.contains(&id) {
                server_ids.push(id);
            }
        }
        let clients = rng.random_range(1..=8u32);
        let key_count = rng.random_range(1..=6usize);
        let keys = (0..key_count).map(|i| format!("k{i}")).collect();
        let timeout_ms = [1000, 1500, 3000][rng.random_range(0..3usize)];
        let coordinator_cache = pick_cache(&mut rng, CacheConfig::COORDINATOR_DEFAULT);
        let server_cache = pick_cache(&mut rng, CacheConfig::SERVER_DEFAULT);
        let sync_max = rng.random_range(0..=20);
        let min_delay_ms = rng.random_range(0..=5);
        let max_delay_ms = min_delay_ms + [1, 10, 50, 200][rng.random_range(0..4usize)];
        let chance = |rng: &mut ChaCha8Rng, off: f64, max: f64| {
            if rng.random_bool(off) {
                0.0
            } else {
                rng.random_range(0.0..max)
            }
        };
        let net = NetFaults {
            min_delay_ms,
            max_delay_ms,
            loss: chance(&mut rng, 0.4, 0.1),
            duplication: chance(&mut rng, 0.5, 0.1),
            client_loss: chance(&mut rng, 0.7, 0.02),
            partition_every_ms: if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(500..5000)
            },
            clog_every_ms: if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(200..3000)
            },
        };
        let crashes = CrashFaults {
            crash_every_ms: if rng.random_bool(0.25) {
                0
            } else {
                rng.random_range(300..4000)
            },
            max_down_ms: rng.random_range(100..4000),
            max_down: if rng.random_bool(0.2) { 2 } else { 1 },
            tear: rng.random_range(0.0..1.0),
        };
        Self {
            seed,
            server_ids,
            clients,
            keys,
            timeout_ms,
            coordinator_cache,
            server_cache,
            sync_ms: (0, sync_max),
            net,
            crashes,
            safety_ms: 8_000,
            settle_ms: 3 * timeout_ms + 2_000,
            liveness_ms: 3 * timeout_ms + 4_000,
            client_timeout_ms: 3 * timeout_ms + 2 * max_delay_ms + 1_000,
            buggify: rng.random_bool(0.5),
        }
    }

    /// The fault sites of one role, seeded by `seed`, firing until the faults stop; none
    /// in runs that leave them off.
    pub fn buggify(&self, seed: u64) -> Option<BuggifyConfig> {
        self.buggify.then_some(BuggifyConfig {
            seed,
            until_ms: self.heal_at_ms(),
        })
    }

    /// When the faults stop.
    pub fn heal_at_ms(&self) -> Ts {
        self.safety_ms
    }

    /// When clients stop starting operations.
    pub fn clients_stop_at_ms(&self) -> Ts {
        self.safety_ms + self.liveness_ms
    }

    /// When the run ends and the final state is read.
    pub fn end_at_ms(&self) -> Ts {
        self.clients_stop_at_ms() + self.client_timeout_ms + 2_000
    }
}

fn pick_cache(rng: &mut ChaCha8Rng, default: CacheConfig) -> CacheConfig {
    match rng.random_range(0..3) {
        0 => CacheConfig { sets: 1, ways: 1 },
        1 => CacheConfig { sets: 2, ways: 2 },
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_decides_the_shape() {
        assert_eq!(SimConfig::from_seed(7), SimConfig::from_seed(7));
        let shapes: std::collections::BTreeSet<usize> = (0..200)
            .map(|s| SimConfig::from_seed(s).server_ids.len())
            .collect();
        assert_eq!(shapes, (2..=7).collect());
        let with_edges = (0..200)
            .filter(|&s| {
                let ids = SimConfig::from_seed(s).server_ids;
                ids.contains(&0) && ids.contains(&u64::MAX)
            })
            .count();
        assert!(with_edges > 10, "edge IDs are drawn often: {with_edges}");
    }
}
