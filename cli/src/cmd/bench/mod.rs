//! `ringkv bench`: a closed-loop load generator. C connections, all on one event-driven
//! thread, keep up to Q requests in flight each; at most C*Q requests are ever
//! outstanding. Besides latency and throughput it reports the CPU time the cluster's
//! processes spent per operation, which stays comparable on a shared machine.

mod cpu;
mod driver;
mod report;
mod rng;

use std::io::IsTerminal;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use ringkv_core::proto::ClientRequest;

use crate::args::{BenchArgs, ValueChars};
use crate::exit::Exit;
use crate::out;
use crate::signals::{self, StopFlag};
use driver::Driver;
use report::{CpuUse, OpKind, Report, Tally, CONNECTION_ERROR};
use rng::SplitMix64;

/// Bytes of PUT values one connection may have in flight. A full pipeline of large
/// requests and large answers must fit the store's send buffer for a connection
/// (16 MiB), or both sides would wait on each other until the timeout.
const MAX_VALUE_BYTES_IN_FLIGHT: u64 = 8 * 1024 * 1024;

/// What one run does, from the flags.
struct Plan {
    addr: String,
    connections: u64,
    pipeline: usize,
    keys: u64,
    get_percent: u64,
    value: String,
    limit: Limit,
    /// The processes whose CPU time is measured; empty: none found or given.
    pids: Vec<u32>,
}

/// When the measured phase ends.
#[derive(Clone, Copy)]
enum Limit {
    Duration(Duration),
    Ops(u64),
}

/// Runs the benchmark and prints its report.
pub fn run(args: &BenchArgs) -> Exit {
    let plan = match plan(args) {
        Ok(plan) => plan,
        Err(why) => {
            eprintln!("error: {why}");
            return Exit::Failure;
        }
    };
    let connections = usize::try_from(plan.connections).unwrap_or(usize::MAX);
    let level = args
        .consistency
        .as_deref()
        .and_then(ringkv_core::proto::Consistency::parse);
    if level.is_some()
        && crate::cmd::console::probe(&plan.addr).is_some_and(|s| crate::cmd::console::is_peer(&s))
    {
        eprintln!(
            "error: --consistency: {}",
            crate::cmd::console::PEER_REFUSES_LEVELS
        );
        return Exit::Failure;
    }
    let mut driver = match Driver::connect(&plan.addr, connections, level) {
        Ok(driver) => driver,
        Err(why) => {
            eprintln!("error: {why}");
            return Exit::Failure;
        }
    };
    // Ctrl-C ends the measured phase early; the report still comes.
    let stop = match signals::on_stop(|| {}, false) {
        Ok(stop) => stop,
        Err(err) => {
            eprintln!("error: cannot handle SIGINT/SIGTERM: {err}");
            return Exit::Failure;
        }
    };
    if args.preload {
        if let Err(why) = preload(&plan, &mut driver) {
            eprintln!("error: preload: {why}");
            return Exit::Failure;
        }
    }
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let measured = match measure(&plan, &mut driver, &stop, show_progress) {
        Ok(measured) => measured,
        Err(why) => {
            eprintln!("error: {why}");
            return Exit::Failure;
        }
    };
    report(args, &plan, &measured)
}

/// Prints the report; the exit code says whether connections were lost.
fn report(args: &BenchArgs, plan: &Plan, measured: &Measured) -> Exit {
    let report = Report {
        tally: &measured.tally,
        duration: measured.duration,
        connections: plan.connections,
        pipeline: plan.pipeline as u64,
        cpu: measured.cpu.as_ref(),
    };
    let printed = if args.json {
        out::line(&report.json())
    } else {
        out::print(&report.text())
    };
    if let Err(err) = printed {
        eprintln!("error: cannot write the report: {err}");
        return Exit::Failure;
    }
    if let Some(why) = &measured.failure {
        eprintln!("error: the run stopped early: {why}");
        return Exit::Failure;
    }
    if measured.tally.errors().contains_key(CONNECTION_ERROR) {
        eprintln!("error: connections were lost during the run");
        return Exit::Failure;
    }
    Exit::Ok
}

fn plan(args: &BenchArgs) -> Result<Plan, String> {
    let value_bytes =
        usize::try_from(args.value_bytes).map_err(|_| "--value-bytes is too large")?;
    let value = make_value(args.value_chars, value_bytes);
    // On the wire a value is a JSON string: escapes make it longer than its bytes.
    let wire_bytes = serde_json::to_string(&value)
        .map_err(|err| format!("encoding a value: {err}"))?
        .len()
        .saturating_sub(2) as u64;
    let in_flight_bytes = wire_bytes.saturating_mul(args.pipeline);
    if in_flight_bytes > MAX_VALUE_BYTES_IN_FLIGHT {
        return Err(format!(
            "--pipeline {} with --value-bytes {} ({wire_bytes} bytes escaped) puts \
             {in_flight_bytes} bytes of values in flight per connection; keep it at most \
             {MAX_VALUE_BYTES_IN_FLIGHT}",
            args.pipeline, args.value_bytes
        ));
    }
    let pipeline = usize::try_from(args.pipeline).map_err(|_| "--pipeline is too large")?;
    Ok(Plan {
        addr: args.client.addr.clone(),
        connections: args.connections,
        pipeline,
        keys: args.keys,
        get_percent: u64::from(args.get_percent),
        value,
        limit: match args.ops {
            Some(ops) => Limit::Ops(ops),
            None => Limit::Duration(Duration::from_secs(args.duration_s)),
        },
        pids: cluster_pids(args),
    })
}

/// The seed of `--value-chars printable`: every run writes the same value.
const PRINTABLE_VALUE_SEED: u64 = 0x7661_6C75_6573;

/// A PUT's value of `bytes` bytes made of `chars`, the same on every run.
fn make_value(chars: ValueChars, bytes: usize) -> String {
    match chars {
        ValueChars::Letters => (b'a'..=b'z').cycle().take(bytes).map(char::from).collect(),
        ValueChars::Printable => {
            let mut rng = SplitMix64::new(PRINTABLE_VALUE_SEED);
            // The 95 characters from space to tilde.
            (0..bytes)
                .map(|_| char::from(b' ' + rng.below(95) as u8))
                .collect()
        }
    }
}

/// The PIDs given with --pids, or else the processes listening on --addr's port.
fn cluster_pids(args: &BenchArgs) -> Vec<u32> {
    if !args.pids.is_empty() {
        return args.pids.clone();
    }
    let Some(addr) = args
        .client
        .addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
    else {
        return Vec::new();
    };
    cpu::listeners_of(addr)
}

/// PUTs every key once, spread over the connections, so that GETs find their keys.
fn preload(plan: &Plan, driver: &mut Driver) -> Result<(), String> {
    let mut tally = Tally::new()?;
    let mut next_key = 0u64;
    let mut source = |_conn: usize| {
        (next_key < plan.keys).then(|| {
            let request = ClientRequest::Put {
                key: format!("k{next_key}"),
                value: plan.value.clone(),
            };
            next_key += 1;
            (OpKind::Put, request)
        })
    };
    driver.run(plan.pipeline, &mut source, &mut tally, |_| {})?;
    if tally.error_count() > 0 {
        let list: Vec<String> = tally
            .errors()
            .iter()
            .map(|(code, count)| format!("{code} {count}"))
            .collect();
        eprintln!(
            "warning: preload: {} of {} PUTs failed ({}); some GETs will miss",
            tally.error_count(),
            plan.keys,
            list.join(", ")
        );
    }
    Ok(())
}

/// What the measured phase gave.
struct Measured {
    tally: Tally,
    duration: Duration,
    cpu: Option<CpuUse>,
    /// Why the run stopped before its limit, if it did.
    failure: Option<String>,
}

/// The measured phase: the random mix until the limit.
fn measure(
    plan: &Plan,
    driver: &mut Driver,
    stop: &StopFlag,
    show_progress: bool,
) -> Result<Measured, String> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos() as u64)
        .unwrap_or(0x5EED);
    let mut rng = SplitMix64::new(seed);
    let mut issued = 0u64;
    let started = Instant::now();
    let mut source = |_conn: usize| {
        let more = match plan.limit {
            Limit::Ops(max) => issued < max,
            Limit::Duration(duration) => started.elapsed() < duration,
        };
        if !more || stop.is_set() {
            return None;
        }
        issued += 1;
        let key = format!("k{}", rng.below(plan.keys));
        Some(if rng.below(100) < plan.get_percent {
            (OpKind::Get, ClientRequest::Get { key })
        } else {
            let value = plan.value.clone();
            (OpKind::Put, ClientRequest::Put { key, value })
        })
    };
    let progress = progress_bar(plan.limit, show_progress);
    let mut tally = Tally::new()?;
    let cluster_before = cpu::sample(&plan.pids);
    let bench_before = cpu::sample(&[std::process::id()]);
    let outcome = driver.run(plan.pipeline, &mut source, &mut tally, |done| {
        update_progress(&progress, plan.limit, started, done)
    });
    let cluster_after = cpu::sample(&plan.pids);
    let bench_after = cpu::sample(&[std::process::id()]);
    progress.finish_and_clear();
    let finished_at = tally.finished_at().unwrap_or_else(Instant::now);
    let cpu = (!plan.pids.is_empty()).then(|| CpuUse {
        pids: plan.pids.clone(),
        cluster_us: cluster_after.since_us(cluster_before),
        bench_us: bench_after.since_us(bench_before),
    });
    Ok(Measured {
        tally,
        duration: finished_at.saturating_duration_since(started),
        cpu,
        failure: outcome.err(),
    })
}

fn progress_bar(limit: Limit, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let (len, template) = match limit {
        Limit::Ops(ops) => (ops, "{bar:40} {pos}/{len} ops {msg}"),
        Limit::Duration(duration) => (
            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            "{bar:40} {elapsed} {msg}",
        ),
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn update_progress(bar: &ProgressBar, limit: Limit, started: Instant, done: u64) {
    let elapsed = started.elapsed();
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    match limit {
        Limit::Ops(_) => {
            bar.set_position(done);
            bar.set_message(format!("{rate:.0} ops/s"));
        }
        Limit::Duration(_) => {
            bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            bar.set_message(format!("{done} ops, {rate:.0} ops/s"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn bench_args(flags: &[&str]) -> BenchArgs {
        let argv = ["ringkv", "bench", "--addr", "127.0.0.1:1", "--pids", "1"];
        let cli = Cli::try_parse_from(argv.iter().chain(flags)).expect("valid flags");
        let Command::Bench(args) = cli.command else {
            panic!("not bench")
        };
        args
    }

    #[test]
    fn letter_values_have_nothing_to_escape() {
        let value = make_value(ValueChars::Letters, 100);
        assert_eq!(value.len(), 100);
        assert!(value.bytes().all(|b| b.is_ascii_lowercase()), "{value}");
        assert!(value.starts_with("abcdefghijklmnopqrstuvwxyzabc"));
    }

    #[test]
    fn printable_values_hold_quotes_and_backslashes_and_repeat() {
        let value = make_value(ValueChars::Printable, 1000);
        assert_eq!(value.len(), 1000);
        assert!(value.bytes().all(|b| (b' '..=b'~').contains(&b)), "{value}");
        assert!(value.contains('"') && value.contains('\\'), "{value}");
        assert_eq!(value, make_value(ValueChars::Printable, 1000));
        let escaped = serde_json::to_string(&value).unwrap();
        assert!(escaped.len() > value.len() + 2, "JSON escapes some of it");
    }

    #[test]
    fn the_in_flight_limit_counts_a_value_as_escaped() {
        // 256 KiB values, 32 in flight: 8 MiB, the limit, as letters; over it, escaped.
        let flags = ["--value-bytes", "262144", "--pipeline", "32"];
        let letters = plan(&bench_args(&flags)).map(|plan| plan.value.len());
        assert_eq!(letters, Ok(262_144));
        let printable = [&flags[..], &["--value-chars", "printable"]].concat();
        let refused = plan(&bench_args(&printable))
            .err()
            .expect("over the limit escaped");
        assert!(refused.contains("bytes escaped"), "{refused}");
    }
}
