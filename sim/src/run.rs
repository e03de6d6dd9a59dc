//! One seed, start to verdict: build the world, run the safety phase (faults on), the
//! liveness phase (faults off), let it go quiet, then judge what happened.

use std::collections::BTreeMap;

use ringkv_core::ring::Ring;

use crate::check::{check_linearizable, check_no_lost_writes, LinearizabilityConfig};
use crate::config::SimConfig;
use crate::history::{Command, Outcome};
use crate::trace::Trace;
use crate::world::World;

/// The verdict and figures of one run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed that decided the run.
    pub seed: u64,
    /// The hash of the whole trace: the same seed must give the same hash.
    pub trace_hash: u64,
    /// Operations the clients invoked.
    pub operations: usize,
    /// Operations that got an answer.
    pub answered: usize,
    /// Simulated time, in milliseconds.
    pub simulated_ms: u64,
    /// Events processed.
    pub events: u64,
    /// Server crashes.
    pub crashes: u64,
    /// Every check that failed, each a readable report.
    pub failures: Vec<String>,
}

impl RunReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The command that replays a seed with its trace.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run --release -p ringkv-sim -- --seed {seed}")
}

/// Runs one seed and checks it.
pub fn run_seed(seed: u64, trace: Trace) -> RunReport {
    run_config(SimConfig::from_seed(seed), trace)
}

/// Runs one configuration and checks it.
pub fn run_config(config: SimConfig, trace: Trace) -> RunReport {
    let mut world = World::new(config.clone(), trace);
    world.run_until(config.end_at_ms());
    let mut failures: Vec<String> = world
        .anomalies
        .iter()
        .map(|a| format!("anomaly: {a}"))
        .collect();

    check_liveness(&world, &mut failures);
    let final_values = check_replicas(&world, &mut failures);

    // The final state joins the history as reads after everything else.
    let mut history = world.history.clone();
    let end = world.now;
    for (key, value) in &final_values {
        let op = history.invoke(u32::MAX, key, Command::Get, end);
        let outcome = match value {
            Some(v) => Outcome::Found(v.clone()),
            None => Outcome::NotFound,
        };
        history.complete(op, outcome, end);
    }
    if let Err(err) = check_linearizable(&history, &LinearizabilityConfig::default()) {
        failures.push(format!("linearizability: {err}"));
    }
    if let Err(err) = check_no_lost_writes(&world.history, &final_values) {
        failures.push(format!("durability: {err}"));
    }

    let operations = world.history.operations().len();
    let answered = world
        .history
        .operations()
        .iter()
        .filter(|op| op.complete_ms.is_some())
        .count();
    RunReport {
        seed: config.seed,
        trace_hash: world.trace.hash(),
        operations,
        answered,
        simulated_ms: world.now,
        events: world.stats.events,
        crashes: world.stats.crashes,
        failures,
    }
}

/// Once the faults stopped and the cluster settled, every operation must be answered,
/// successfully, within the client's time-out.
fn check_liveness(world: &World, failures: &mut Vec<String>) {
    let config = &world.config;
    let from = config.heal_at_ms() + config.settle_ms;
    let to = config.clients_stop_at_ms();
    let mut late = Vec::new();
    for op in world.history.operations() {
        if op.invoke_ms < from || op.invoke_ms >= to {
            continue;
        }
        let ok = matches!(
            op.outcome,
            Outcome::Found(_) | Outcome::NotFound | Outcome::Done
        );
        if !ok || op.complete_ms.is_none() {
            late.push(format!(
                "op {} (client {}, {:?} {:?}, invoked at {} ms) ended {:?}",
                op.index, op.client, op.command, op.key, op.invoke_ms, op.outcome
            ));
        }
    }
    if !late.is_empty() {
        failures.push(format!(
            "liveness: {} operations after the faults stopped did not succeed in time:\n  {}",
            late.len(),
            late.iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    if world.coordinator.open_transactions() > 0 {
        failures.push(format!(
            "liveness: {} transactions still open when the run ended",
            world.coordinator.open_transactions()
        ));
    }
    let in_doubt = world.in_doubt();
    if !in_doubt.is_empty() {
        failures.push(format!(
            "liveness: transactions still in doubt (server, txid): {in_doubt:?}"
        ));
    }
}

/// Both replicas of every key agree, and no server holds a key it does not replicate.
/// Returns every key's final value.
fn check_replicas(world: &World, failures: &mut Vec<String>) -> BTreeMap<String, Option<String>> {
    let ring: Ring = world.config.server_ids.iter().copied().collect();
    let mut finals = BTreeMap::new();
    for key in &world.config.keys {
        let Some(pair) = ring.replicas_for_key(key) else {
            failures.push("agreement: the ring has fewer than two servers".into());
            return finals;
        };
        let primary = world.replica_value(pair.primary, key);
        let secondary = world.replica_value(pair.secondary, key);
        match (primary, secondary) {
            (Ok(a), Ok(b)) if a == b => {
                finals.insert(key.clone(), a);
            }
            (a, b) => failures.push(format!(
                "agreement: replicas of {key:?} differ: server {} has {a:?}, server {} has {b:?}",
                pair.primary, pair.secondary
            )),
        }
    }
    for (id, keys) in world.server_keys() {
        for key in keys {
            let holds = ring
                .replicas_for_key(&key)
                .is_some_and(|p| p.primary == id || p.secondary == id);
            if !holds {
                failures.push(format!(
                    "placement: server {id} holds {key:?}, which it does not replicate"
                ));
            }
        }
    }
    finals
}
