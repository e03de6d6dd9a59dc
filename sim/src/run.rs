//! One seed, start to verdict: build the world, run the safety phase (faults on), the
//! liveness phase (faults off), let it go quiet, then judge what happened.

use std::collections::BTreeMap;

use ringkv_core::Ts;

use crate::check::{
    check_agreement, check_linearizable, check_liveness, check_no_lost_writes, check_program_order,
    check_progress, served_history, LinearizabilityConfig,
};
use crate::config::{Mode, SimConfig};
use crate::driver::World;
use crate::history::{stamp_after, Command, History, Outcome};
use crate::trace::Trace;

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
    /// The faults and unusual paths the run met.
    pub faults: FaultCounts,
    /// Every check that failed, each a readable report.
    pub failures: Vec<String>,
}

/// What a run met of the faults and unusual paths the checks are there for: a run, or a
/// sweep, that met none proves little, so the sweeps count them and their tests assert
/// on them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Node crashes.
    pub crashes: u64,
    /// Of those, crashes of a whole machine (the others lost only the process).
    pub machine_crashes: u64,
    /// Of those, crashes of the coordinator.
    pub coordinator_crashes: u64,
    /// Reads of stored data that failed.
    pub failed_reads: u64,
    /// Client requests held behind earlier ones of their connection.
    pub held_requests: u64,
    /// Logs rewritten by compaction (a node's, or strong mode's coordinator's).
    pub log_compactions: u64,
    /// Merges of a KV server's sealed segments installed.
    pub segment_merges: u64,
    /// PUTs absorbed into another PUT of the same key (strong mode's coordinator, or
    /// the peer node a client asked).
    pub absorbed_updates: u64,
    /// Values written that hold the bytes of a log frame (`crate::lookalike`).
    pub lookalike_values: u64,
}

impl FaultCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &FaultCounts) {
        self.crashes += other.crashes;
        self.machine_crashes += other.machine_crashes;
        self.coordinator_crashes += other.coordinator_crashes;
        self.failed_reads += other.failed_reads;
        self.held_requests += other.held_requests;
        self.log_compactions += other.log_compactions;
        self.segment_merges += other.segment_merges;
        self.absorbed_updates += other.absorbed_updates;
        self.lookalike_values += other.lookalike_values;
    }
}

impl RunReport {
    /// The report of a run that panicked.
    fn panicked(seed: u64, text: String) -> Self {
        Self {
            seed,
            trace_hash: 0,
            operations: 0,
            answered: 0,
            simulated_ms: 0,
            events: 0,
            faults: FaultCounts::default(),
            failures: vec![format!("panic: {text}")],
        }
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The command that replays a seed with its trace.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run --release -p ringkv-sim -- --seed {seed}")
}

/// The command that replays a seed of `mode` with its trace.
pub fn replay_command_in(mode: Mode, seed: u64) -> String {
    match mode {
        Mode::Strong => replay_command(seed),
        _ => format!("{} --mode {}", replay_command(seed), mode.as_str()),
    }
}

/// Runs one seed and checks it. A panic inside the run (a broken invariant of the core
/// or of the simulator) is a failure of that seed like any other, reported with its seed,
/// so that a sweep goes on and names every failing seed.
pub fn run_seed(seed: u64, trace: Trace) -> RunReport {
    run_seed_in(Mode::Strong, seed, trace)
}

/// Runs one seed of `mode` and checks it, as [`run_seed`] does.
pub fn run_seed_in(mode: Mode, seed: u64, trace: Trace) -> RunReport {
    let config = SimConfig::for_mode(mode, seed);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_config(config, trace)));
    run.unwrap_or_else(|panic| RunReport::panicked(seed, panic_text(panic.as_ref())))
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// What the runs of a sweep met, summed: a sweep whose worlds met no fault proves little,
/// so the sweep tests assert on these, and the command line prints them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepTotals {
    /// Runs summed.
    pub runs: u64,
    /// Operations the clients invoked.
    pub operations: u64,
    /// Operations that never got an answer.
    pub unanswered: u64,
    /// Simulated time, in milliseconds.
    pub simulated_ms: u64,
    /// The faults the runs met, summed.
    pub faults: FaultCounts,
}

impl SweepTotals {
    /// Adds one run's report.
    pub fn add(&mut self, report: &RunReport) {
        self.runs += 1;
        self.operations += report.operations as u64;
        self.unanswered += report.operations.saturating_sub(report.answered) as u64;
        self.simulated_ms += report.simulated_ms;
        self.faults.add(&report.faults);
    }
}

/// Runs seeds `range` of `mode`; what the runs met, or on failure every failing seed's
/// report and the command that replays it, as one text (what the seed tests panic with).
pub fn sweep_in(mode: Mode, range: std::ops::Range<u64>) -> Result<SweepTotals, String> {
    let mut totals = SweepTotals::default();
    let mut failures: Vec<RunReport> = Vec::new();
    for seed in range {
        let report = run_seed_in(mode, seed, Trace::hashed());
        totals.add(&report);
        if !report.passed() {
            failures.push(report);
        }
    }
    if failures.is_empty() {
        return Ok(totals);
    }
    let mut text = format!("{} {} seeds failed:\n", failures.len(), mode.as_str());
    for report in &failures {
        text.push_str(&format!("seed {} failed:\n", report.seed));
        for failure in &report.failures {
            text.push_str(&format!("  {failure}\n"));
        }
        let replay = replay_command_in(mode, report.seed);
        text.push_str(&format!("  replay: {replay}\n"));
    }
    Err(text)
}

/// Runs one configuration and checks it.
pub fn run_config(config: SimConfig, trace: Trace) -> RunReport {
    let mut world = World::new(config.clone(), trace);
    world.run_until(config.end_at_ms());
    let (failures, operations, answered) = match &world.eventual {
        Some(ev) => {
            let history = &ev.workload.history;
            let answered = history.iter().filter(|op| op.complete_ms.is_some()).count();
            (world.judge_eventual(), history.len(), answered)
        }
        None => {
            let operations = world.history().operations();
            let answered = operations
                .iter()
                .filter(|op| op.complete_ms.is_some())
                .count();
            (judge(&world, &config), operations.len(), answered)
        }
    };
    RunReport {
        seed: config.seed,
        trace_hash: world.trace.hash(),
        operations,
        answered,
        simulated_ms: world.now,
        events: world.stats.events,
        faults: FaultCounts {
            crashes: world.stats.crashes,
            machine_crashes: world.stats.machine_crashes,
            coordinator_crashes: world.stats.coordinator_crashes,
            failed_reads: world.failed_reads(),
            held_requests: world.stats.held_requests,
            log_compactions: world.stats.log_compactions,
            segment_merges: world.stats.segment_merges,
            absorbed_updates: world.stats.absorbed_updates,
            lookalike_values: world.lookalike_values(),
        },
        failures,
    }
}

/// Every check of a finished run; each failure a readable report.
fn judge(world: &World, config: &SimConfig) -> Vec<String> {
    let mut failures: Vec<String> = world
        .anomalies
        .iter()
        .map(|a| format!("anomaly: {a}"))
        .collect();

    let (snapshot, read_errors) = world.snapshot();
    failures.extend(read_errors.into_iter().map(|e| format!("storage: {e}")));
    let settled = config.heal_at_ms() + config.settle_ms;
    let window = settled..config.clients_stop_at_ms();
    // Eventual worlds are judged by their own checks (`judge_eventual`), not here.
    let live = match config.mode {
        Mode::Strong | Mode::Eventual => check_liveness(world.history(), window, &snapshot),
        Mode::Peer => check_progress(world.history(), window, &snapshot),
    };
    if let Err(problems) = live {
        failures.extend(problems.into_iter().map(|p| format!("liveness: {p}")));
    }
    // Without agreement there is no one final state to judge durability by; the
    // disagreement is the failure.
    let final_values = match check_agreement(&snapshot, &config.keys) {
        Ok(finals) => Some(finals),
        Err(problems) => {
            failures.extend(problems.into_iter().map(|p| format!("agreement: {p}")));
            None
        }
    };

    // The final state joins the history as reads after everything else.
    let finals = final_values.as_ref();
    let history = with_final_reads(world.history().clone(), finals, world.now);
    if let Err(err) = check_linearizable(&history, &LinearizabilityConfig::default()) {
        failures.push(format!("linearizability: {err}"));
    }
    if let Err(problems) = check_program_order(world.history(), world.served()) {
        failures.extend(problems.into_iter().map(|p| format!("program order: {p}")));
    }
    let served = served_history(world.history(), world.served());
    let served = with_final_reads(served, finals, stamp_after(world.now));
    if let Err(err) = check_linearizable(&served, &LinearizabilityConfig::default()) {
        failures.push(format!(
            "linearizability as served (times are stamps, ms x 1000): {err}"
        ));
    }
    if let Some(final_values) = &final_values {
        if let Err(err) = check_no_lost_writes(world.history(), final_values) {
            failures.push(format!("durability: {err}"));
        }
    }

    failures
}

/// `history` with a read of every key's final value at `end`, after everything else.
fn with_final_reads(
    mut history: History,
    final_values: Option<&BTreeMap<String, Option<String>>>,
    end: Ts,
) -> History {
    for (key, value) in final_values.into_iter().flatten() {
        let op = history.invoke(u32::MAX, key, Command::Get, end);
        let outcome = match value {
            Some(v) => Outcome::Found(v.clone()),
            None => Outcome::NotFound,
        };
        history.complete(op, outcome, end);
    }
    history
}
