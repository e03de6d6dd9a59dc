//! The seed runner: sweeps seeds and summarises, or replays one seed with its trace.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ringkv_sim::config::{Mode, SimConfig};
use ringkv_sim::trace::Trace;
use ringkv_sim::{replay_command_in, run_seed_in, SweepTotals};

/// Runs ringkv's deterministic simulator.
///
/// Each seed decides a whole run: the cluster's shape, the faults (message loss,
/// duplication, delay, partitions, clogged paths, process and machine crashes, torn
/// writes, failing reads) and the workload (pipelined or not). Every run is checked for
/// linearizability, per-connection program order, lost writes, replica agreement and
/// liveness once the faults stop. Eventual mode (`--mode eventual`) runs peer nodes with
/// quorums, siblings or last-write-wins, read repair and hints, lost disks, and checks
/// convergence, Jepsen's set test, no resurrection, liveness, no false siblings, reads
/// after writes, monotonic reads and last write wins.
#[derive(Parser, Debug)]
#[command(name = "ringkv-sim", version)]
struct Args {
    /// Sweep seeds START..START+N and print a summary.
    #[arg(long, value_name = "N", conflicts_with = "seed")]
    seeds: Option<u64>,
    /// The first seed of a sweep.
    #[arg(long, value_name = "START", default_value_t = 0)]
    start: u64,
    /// Replay one seed, printing its trace.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Which cluster the seeds build: strong (a coordinator and KV servers, section 1),
    /// eventual (peer nodes with quorums and versions, section 2) or peer (peer
    /// two-phase-commit nodes, every one a coordinator, section 3).
    #[arg(long, value_name = "MODE", default_value = "strong", value_parser = parse_mode)]
    mode: Mode,
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    Mode::parse(text).ok_or_else(|| format!("unknown mode `{text}` (strong, eventual or peer)"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match (args.seed, args.seeds) {
        (Some(seed), _) => replay(args.mode, seed),
        (None, Some(count)) => sweep(args.mode, args.start, count),
        (None, None) => sweep(args.mode, args.start, 100),
    }
}

fn replay(mode: Mode, seed: u64) -> ExitCode {
    println!("{:#?}", SimConfig::for_mode(mode, seed));
    let report = run_seed_in(mode, seed, Trace::printed(Box::new(std::io::stdout())));
    println!(
        "seed {seed}: {} operations ({} answered), {} crashes, {} simulated ms, trace hash {:016x}",
        report.operations,
        report.answered,
        report.faults.crashes,
        report.simulated_ms,
        report.trace_hash
    );
    if report.passed() {
        println!("seed {seed}: all checks passed");
        ExitCode::SUCCESS
    } else {
        for failure in &report.failures {
            println!("FAILED {failure}");
        }
        println!(
            "seed {seed} failed; replay: {}",
            replay_command_in(mode, seed)
        );
        ExitCode::FAILURE
    }
}

fn sweep(mode: Mode, start: u64, count: u64) -> ExitCode {
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} seeds, {msg} [{elapsed_precise} < {eta}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut failed: Vec<u64> = Vec::new();
    let mut totals = SweepTotals::default();
    for seed in start..start + count {
        let report = run_seed_in(mode, seed, Trace::hashed());
        totals.add(&report);
        if !report.passed() {
            bar.suspend(|| {
                eprintln!("seed {seed} FAILED:");
                for failure in &report.failures {
                    eprintln!("  {failure}");
                }
                eprintln!("  replay: {}", replay_command_in(mode, seed));
            });
            failed.push(seed);
        }
        bar.inc(1);
        bar.set_message(format!("{} failed", failed.len()));
    }
    bar.finish_and_clear();
    let wall_s = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{} seeds {start}..{}: {count} run, {} failed, {:.0} simulated ops/s, {:.0} simulated s per wall s",
        mode.as_str(),
        start + count,
        failed.len(),
        totals.operations as f64 / wall_s,
        totals.simulated_ms as f64 / 1000.0 / wall_s
    );
    println!(
        "faults: {} crashes ({} of a machine, {} of the coordinator), {} failed reads; {} \
         pipelined requests held for program order; {} log compactions; {} segment merges; \
         {} PUTs absorbed into another of their key; {} values that look like log frames",
        totals.faults.crashes,
        totals.faults.machine_crashes,
        totals.faults.coordinator_crashes,
        totals.faults.failed_reads,
        totals.faults.held_requests,
        totals.faults.log_compactions,
        totals.faults.segment_merges,
        totals.faults.absorbed_updates,
        totals.faults.lookalike_values
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failed:?}");
        ExitCode::FAILURE
    }
}
