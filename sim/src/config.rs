//! The shape of one simulated run, drawn from its seed (swarm testing: each seed turns a
//! different set of faults on, at different strengths, so rare combinations get tried).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::cache::CacheConfig;
use ringkv_core::eventual::{Conflicts, Repair};
use ringkv_core::ring::key_position;
use ringkv_core::Ts;

/// How the network misbehaves during the safety phase.
#[derive(Clone, Debug, PartialEq)]
pub struct NetFaults {
    /// The shortest one-way delay of a message.
    pub min_delay_ms: Ts,
    /// The longest one-way delay of a message (messages overtake each other within it).
    pub max_delay_ms: Ts,
    /// Typical chance that a message between two nodes is lost; each path draws its own
    /// chance around it, so that some links are worse than others.
    pub loss: f64,
    /// Typical chance that a message between two nodes arrives twice (per path, as loss).
    pub duplication: f64,
    /// Chance that a client's request or answer is lost (the client sees a time-out).
    pub client_loss: f64,
    /// Mean time between two partitions of a path (both directions); 0 for none.
    pub partition_every_ms: Ts,
    /// Mean time between two clogged paths (messages held back for a while); 0 for none.
    pub clog_every_ms: Ts,
}

/// How nodes crash during the safety phase.
#[derive(Clone, Debug, PartialEq)]
pub struct CrashFaults {
    /// Mean time between two crashes; 0 for none.
    pub crash_every_ms: Ts,
    /// The longest a crashed node stays down.
    pub max_down_ms: Ts,
    /// How many nodes may be down at once: 1 as the mission assumes, or 2, where
    /// safety must still hold though progress may stop.
    pub max_down: usize,
    /// Chance that a crash takes the whole machine (its page cache too) rather than only
    /// the process, whose unsynced writes the OS still holds.
    pub machine: f64,
    /// Chance that a machine crash tears the last unsynced write kept instead of cutting
    /// it cleanly.
    pub tear: f64,
    /// Chance that a crash picks the coordinator, when it runs, rather than a node drawn
    /// evenly: some runs crash it often, so that crashes between a commit decision and
    /// its phase 2 happen.
    pub coordinator: f64,
    /// Chance that a sync, once started, is cut short by a crash of its node's machine:
    /// crashes then land exactly where a write is on its way to durability.
    pub in_sync: f64,
    /// Chance that a node crashes in a step in which a commit it coordinates became
    /// final, while sending that step's messages: a peer node whose commit became
    /// durable, or strong mode's coordinator answering `Success`.
    pub after_decision: f64,
}

/// How disks misbehave during the safety phase.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskFaults {
    /// The shortest and longest time an fsync takes.
    pub sync_ms: (Ts, Ts),
    /// Chance that one read of stored data fails (an I/O error); often 0.
    pub read_failure: f64,
}

/// Everything one run is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// The kind of cluster.
    pub mode: Mode,
    /// Peer mode: how many nodes hold each key (`None`: every node).
    pub replication: Option<usize>,
    /// The KV servers' ring IDs.
    pub server_ids: Vec<u64>,
    /// How many clients run operations.
    pub clients: u32,
    /// How many requests one client keeps in flight on its connection at most (1: one
    /// at a time; more: pipelined, ordered per key by the serving side).
    pub pipeline: usize,
    /// The keys the clients use: few, so that operations collide.
    pub keys: Vec<String>,
    /// The coordinator's phase-1 and read timeout.
    pub timeout_ms: Ts,
    /// The coordinator's cache.
    pub coordinator_cache: CacheConfig,
    /// Each server's cache.
    pub server_cache: CacheConfig,
    /// Disk faults and latency.
    pub disk: DiskFaults,
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
    /// The eventual-mode world's own knobs; `None` in strong mode.
    pub eventual: Option<EventualKnobs>,
    /// Eventual and peer nodes: the log length past which a node rewrites its log to
    /// what recovery needs (and twice what the last rewrite left), as the shells'
    /// `--log-compact-bytes`; `None`: never (and always in strong mode).
    pub node_log_compact_bytes: Option<usize>,
    /// Strong mode's coordinator: the log length past which it rewrites its log to what
    /// recovery needs (and twice what the last rewrite left), as the shell's
    /// `--log-compact-bytes`; `None`: never.
    pub coordinator_log_compact_bytes: Option<usize>,
    /// Strong mode's KV servers: the size at which a server seals its active log
    /// segment (and merges the sealed ones, as the shell's `--segment-bytes`); `None`:
    /// one file that is never sealed.
    pub server_segment_bytes: Option<usize>,
    /// One write in this many carries a value made to look like a log frame
    /// ([`crate::lookalike`]); `None`: none does.
    pub lookalike_one_in: Option<u32>,
}

/// One of `choices` in half the worlds, `None` in the others: a knob that some worlds
/// turn on, so that the others keep running as they did without it.
fn in_half_the_worlds<T: Copy>(rng: &mut ChaCha8Rng, choices: &[T]) -> Option<T> {
    if rng.random_bool(0.5) {
        choices.get(rng.random_range(0..choices.len())).copied()
    } else {
        None
    }
}

/// Half the node worlds compact their logs, past a small threshold so that a run
/// compacts many times, under every fault; drawn last from the mode's own stream, so
/// that its other knobs stay as they were.
fn node_log_compact_bytes(rng: &mut ChaCha8Rng) -> Option<usize> {
    in_half_the_worlds(rng, &[1024, 4096, 16384])
}

/// Half the strong worlds compact the coordinator's log past a small threshold, so that
/// a run compacts many times, under every fault (crashes of the coordinator too); drawn
/// from a stream of its own, so that the other knobs of every seed stay as they were.
fn coordinator_log_compact_bytes(seed: u64) -> Option<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc0c0_1a57_0000_0005);
    in_half_the_worlds(&mut rng, &[1024, 4096, 16384])
}

/// Half the strong worlds seal their KV servers' log segments at a small size, so that
/// a run seals and merges many times, under every fault; drawn from a stream of its
/// own, so that the other knobs of every seed stay as they were.
fn server_segment_bytes(seed: u64) -> Option<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5e65_0000_0000_0007);
    in_half_the_worlds(&mut rng, &[512, 2048, 8192])
}

/// Half the worlds of every mode write some values made to look like log frames, one
/// write in two or in eight, so that machine crashes leave them in torn stretches; drawn
/// from a stream of its own, so that the other knobs of every seed stay as they were.
fn lookalike_one_in(seed: u64) -> Option<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x100c_a11c_0000_0006);
    in_half_the_worlds(&mut rng, &[2, 8])
}

/// Which kind of cluster a run builds: the runner's `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// One coordinator, KV servers, 2PC (PROTOCOL.md section 1).
    #[default]
    Strong,
    /// Peer nodes with quorums, versions and repair (PROTOCOL.md section 2).
    Eventual,
    /// Peer two-phase-commit nodes, every one a coordinator (PROTOCOL.md section 3).
    Peer,
}

impl Mode {
    /// As `--mode` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strong => "strong",
            Mode::Eventual => "eventual",
            Mode::Peer => "peer",
        }
    }

    /// Reads `--mode`.
    pub fn parse(text: &str) -> Option<Mode> {
        [Mode::Strong, Mode::Eventual, Mode::Peer]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// What an eventual-mode world draws beyond the shared knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct EventualKnobs {
    /// N: how many nodes hold a key, 1 to the node count.
    pub replication: usize,
    /// Siblings (most seeds) or last write wins.
    pub conflicts: Conflicts,
    /// Hints, read repair or both.
    pub repair: Repair,
    /// Chance that a crashed node's disk is lost before it restarts (at most one loss a
    /// run); 0 in most seeds.
    pub disk_loss: f64,
    /// How long the failure detector takes to see a node stop or start.
    pub detect_ms: Ts,
}

impl SimConfig {
    /// The run of `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5151_c0f1_9000_0000);
        let key_count = rng.random_range(1..=6usize);
        let keys: Vec<String> = (0..key_count).map(|i| format!("k{i}")).collect();
        let server_count = rng.random_range(2..=7usize);
        let server_ids = pick_ids(&mut rng, server_count, &keys);
        let pipeline = if rng.random_bool(0.5) {
            1
        } else {
            rng.random_range(2..=4usize)
        };
        // At most 8 operations in flight in all, as with 8 clients one at a time: the
        // linearizability search grows exponentially with the operations open at once.
        let clients = rng.random_range(1..=(8 / pipeline) as u32);
        let timeout_ms = [1000, 1500, 3000][rng.random_range(0..3usize)];
        let mut coordinator_cache = pick_cache(&mut rng, CacheConfig::COORDINATOR_DEFAULT);
        let mut server_cache = pick_cache(&mut rng, CacheConfig::SERVER_DEFAULT);
        let sync_max = rng.random_range(0..=20);
        let net = draw_net(&mut rng);
        let crashes = draw_crashes(&mut rng);
        let disk = DiskFaults {
            sync_ms: (0, sync_max),
            read_failure: chance(&mut rng, 0.6, 0.5),
        };
        if disk.read_failure > 0.0 {
            // A server reads its disk only on a miss of its cache, and is asked only on a
            // miss of the coordinator's: a failing disk behind caches that hold every key
            // would hardly ever be read.
            server_cache = CacheConfig { sets: 1, ways: 1 };
            coordinator_cache = CacheConfig { sets: 1, ways: 1 };
        }
        let max_delay_ms = net.max_delay_ms;
        let buggify = rng.random_bool(0.5);
        let mut crashes = crashes;
        // Crashes of the coordinator as it answers an update: what it answered on must
        // be durable by then. In a third of the runs, and rarely enough per answer that
        // the coordinator is up most of the time: while it is down nothing else runs.
        crashes.after_decision = chance(&mut rng, 0.5, 0.2);
        Self {
            seed,
            mode: Mode::Strong,
            replication: None,
            server_ids,
            clients,
            pipeline,
            keys,
            timeout_ms,
            coordinator_cache,
            server_cache,
            disk,
            net,
            crashes,
            safety_ms: 8_000,
            settle_ms: 3 * timeout_ms + 2_000,
            liveness_ms: 3 * timeout_ms + 4_000,
            client_timeout_ms: 3 * timeout_ms + 2 * max_delay_ms + 1_000,
            buggify,
            eventual: None,
            node_log_compact_bytes: None,
            coordinator_log_compact_bytes: coordinator_log_compact_bytes(seed),
            server_segment_bytes: server_segment_bytes(seed),
            lookalike_one_in: lookalike_one_in(seed),
        }
    }

    /// The run of `seed` in `mode`. Strong mode's runs are exactly
    /// [`SimConfig::from_seed`]'s, so its seeds keep their results.
    pub fn for_mode(mode: Mode, seed: u64) -> Self {
        match mode {
            Mode::Strong => Self::from_seed(seed),
            Mode::Eventual => Self::eventual_from_seed(seed),
            Mode::Peer => Self::peer_from_seed(seed),
        }
    }

    /// The eventual-mode run of `seed`: the shared knobs of [`SimConfig::from_seed`],
    /// then 3 to 7 nodes and the eventual knobs from a stream of their own.
    pub fn eventual_from_seed(seed: u64) -> Self {
        let mut config = Self::from_seed(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0e7e_e7a1_0000_0000);
        let nodes = rng.random_range(3..=7usize);
        config.server_ids = pick_ids(&mut rng, nodes, &config.keys);
        // One request at a time per client: each client runs read-modify-write cycles.
        config.pipeline = 1;
        config.clients = rng.random_range(1..=6);
        let conflicts = if rng.random_bool(0.8) {
            Conflicts::Siblings
        } else {
            Conflicts::Lww
        };
        let repair = [Repair::Both, Repair::Hints, Repair::Read][rng.random_range(0..3usize)];
        config.eventual = Some(EventualKnobs {
            replication: rng.random_range(1..=nodes),
            conflicts,
            repair,
            disk_loss: chance(&mut rng, 0.6, 0.5),
            detect_ms: rng.random_range(0..=1000),
        });
        config.node_log_compact_bytes = node_log_compact_bytes(&mut rng);
        // Eventual nodes coordinate no commits.
        config.crashes.after_decision = 0.0;
        config.mode = Mode::Eventual;
        config
    }

    /// Which mode the run is in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A peer world of `seed`: the swarm knobs of [`SimConfig::from_seed`], then 3 to 7
    /// nodes, every one serving clients, on one to four shared keys (so coordinators
    /// collide), with full replication or (one seed in three) a preference list of 2 to
    /// the number of nodes. Its own stream, so that strong-mode seeds stay as they were.
    pub fn peer_from_seed(seed: u64) -> Self {
        let mut config = Self::from_seed(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9ee2_7a3c_0000_0004);
        let key_count = rng.random_range(1..=4usize);
        config.keys = (0..key_count).map(|i| format!("k{i}")).collect();
        let count = rng.random_range(3..=7usize);
        config.server_ids = pick_ids(&mut rng, count, &config.keys);
        config.replication = if rng.random_bool(1.0 / 3.0) {
            Some(rng.random_range(2..=count))
        } else {
            None
        };
        // Crashes right after a commit became durable, midway through its phase 2: the
        // moment recovery of decisions and cooperative termination are about.
        config.crashes.after_decision = chance(&mut rng, 0.3, 0.5);
        config.node_log_compact_bytes = node_log_compact_bytes(&mut rng);
        config.mode = Mode::Peer;
        config
    }

    /// Until when the core's fault sites may fire: when the faults stop, in runs that
    /// turn them on; never in the others.
    pub fn buggify_until_ms(&self) -> Option<Ts> {
        self.buggify.then_some(self.heal_at_ms())
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
        self.final_reads_at_ms()
            + 2_000
            + self.eventual.as_ref().map_or(0, |_| {
                // Eventual worlds then read every key at `all` (repair) and give the repairs
                // and hint replays their bounded time to land.
                3 * self.timeout_ms + 2 * self.net.max_delay_ms
            })
    }

    /// When every client operation has ended: answered, or given up on.
    pub fn final_reads_at_ms(&self) -> Ts {
        self.clients_stop_at_ms() + self.client_timeout_ms
    }
}

/// Zero with chance `off`, else a chance drawn below `max`: many seeds leave a fault off.
fn chance(rng: &mut ChaCha8Rng, off: f64, max: f64) -> f64 {
    if rng.random_bool(off) {
        0.0
    } else {
        rng.random_range(0.0..max)
    }
}

/// Zero with chance `off` (the fault is off), else a mean interval drawn from `range`.
fn every(rng: &mut ChaCha8Rng, off: f64, range: std::ops::Range<Ts>) -> Ts {
    if rng.random_bool(off) {
        0
    } else {
        rng.random_range(range)
    }
}

fn draw_net(rng: &mut ChaCha8Rng) -> NetFaults {
    let min_delay_ms = rng.random_range(0..=5);
    let max_delay_ms = min_delay_ms + [1, 10, 50, 200][rng.random_range(0..4usize)];
    NetFaults {
        min_delay_ms,
        max_delay_ms,
        loss: chance(rng, 0.4, 0.1),
        duplication: chance(rng, 0.5, 0.1),
        client_loss: chance(rng, 0.7, 0.02),
        partition_every_ms: every(rng, 0.5, 500..5000),
        clog_every_ms: every(rng, 0.5, 200..3000),
    }
}

fn draw_crashes(rng: &mut ChaCha8Rng) -> CrashFaults {
    CrashFaults {
        crash_every_ms: every(rng, 0.25, 300..4000),
        max_down_ms: rng.random_range(100..4000),
        max_down: if rng.random_bool(0.2) { 2 } else { 1 },
        machine: rng.random_range(0.0..1.0),
        tear: rng.random_range(0.0..1.0),
        coordinator: chance(rng, 0.5, 0.6),
        in_sync: chance(rng, 0.6, 0.02),
        after_decision: 0.0,
    }
}

/// Ring IDs, drawn so that edges happen often: 0 and 2^64-1 (and their neighbours), and
/// IDs exactly at a workload key's position or one below it, so that a key lands on a
/// node whose ID equals its position, or just misses one and walks on (maybe wrapping
/// past the largest ID).
fn pick_ids(rng: &mut ChaCha8Rng, count: usize, keys: &[String]) -> Vec<u64> {
    let at_keys = rng.random_bool(0.3);
    let mut ids: Vec<u64> = Vec::new();
    while ids.len() < count {
        let key = &keys[rng.random_range(0..keys.len())];
        let id = match rng.random_range(0..8) {
            0 => 0,
            1 => u64::MAX,
            2 => 1,
            3 => u64::MAX - 1,
            4 | 5 if at_keys => key_position(key),
            6 if at_keys => key_position(key).wrapping_sub(1),
            _ => rng.random::<u64>(),
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
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

    #[test]
    fn some_worlds_place_ids_at_key_positions() {
        let at_key = |s: u64| {
            let config = SimConfig::from_seed(s);
            config
                .keys
                .iter()
                .any(|k| config.server_ids.contains(&key_position(k)))
        };
        let below_key = |s: u64| {
            let config = SimConfig::from_seed(s);
            config
                .keys
                .iter()
                .any(|k| config.server_ids.contains(&key_position(k).wrapping_sub(1)))
        };
        let exact = (0..300).filter(|&s| at_key(s)).count();
        let below = (0..300).filter(|&s| below_key(s)).count();
        assert!(exact > 30, "IDs at key positions: {exact} of 300");
        assert!(below > 20, "IDs just below key positions: {below} of 300");
    }

    #[test]
    fn knobs_vary_across_seeds() {
        let configs: Vec<SimConfig> = (0..200).map(SimConfig::from_seed).collect();
        let pipelined = configs.iter().filter(|c| c.pipeline > 1).count();
        let failing_reads = configs.iter().filter(|c| c.disk.read_failure > 0.0).count();
        assert!((50..150).contains(&pipelined), "pipelined: {pipelined}");
        assert!(
            (40..120).contains(&failing_reads),
            "failing reads: {failing_reads}"
        );
    }
}
