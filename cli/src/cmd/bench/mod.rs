//! `ringkv bench`: a closed-loop load generator. C connections, one thread each, keep up
//! to Q requests in flight each; at most C*Q requests are ever outstanding.

mod report;
mod rng;
mod worker;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use ringkv_core::proto::ClientRequest;

use crate::args::BenchArgs;
use crate::client::Client;
use crate::exit::Exit;
use crate::out;
use crate::signals::{self, StopFlag};
use report::{OpKind, Report, Tally, CONNECTION_ERROR};
use rng::SplitMix64;

/// Bytes of PUT values one connection may have in flight. A full pipeline of large
/// requests and large answers must fit the store's send buffer for a connection
/// (16 MiB), or both sides would wait on each other until the timeout.
const MAX_VALUE_BYTES_IN_FLIGHT: u64 = 8 * 1024 * 1024;
/// How often the progress bar is redrawn.
const PROGRESS_TICK_MS: u64 = 100;

/// What one run does, from the flags.
struct Plan {
    addr: String,
    connections: u64,
    pipeline: usize,
    keys: u64,
    get_percent: u64,
    value: String,
    limit: Limit,
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
    let mut clients = Vec::new();
    for _ in 0..plan.connections {
        match Client::connect(&plan.addr) {
            Ok(client) => clients.push(client),
            Err(err) => {
                eprintln!("error: {err}");
                return Exit::Failure;
            }
        }
    }
    // Ctrl-C ends the measured phase early; the report still comes.
    let stop = match signals::on_stop(|| {}, false) {
        Ok(stop) => stop,
        Err(err) => {
            eprintln!("error: cannot handle SIGINT/SIGTERM: {err}");
            return Exit::Failure;
        }
    };
    if args.preload {
        if let Err(why) = preload(&plan, &mut clients) {
            eprintln!("error: preload: {why}");
            return Exit::Failure;
        }
    }
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let (outcome, duration) = match measure(&plan, clients, &stop, show_progress) {
        Ok(measured) => measured,
        Err(why) => {
            eprintln!("error: {why}");
            return Exit::Failure;
        }
    };
    let report = Report {
        tally: &outcome.tally,
        duration,
        connections: plan.connections,
        pipeline: plan.pipeline as u64,
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
    if let Some(why) = &outcome.failure {
        eprintln!("error: a connection stopped early: {why}");
        return Exit::Failure;
    }
    if outcome.tally.errors().contains_key(CONNECTION_ERROR) {
        eprintln!("error: connections were lost during the run");
        return Exit::Failure;
    }
    Exit::Ok
}

fn plan(args: &BenchArgs) -> Result<Plan, String> {
    let in_flight_bytes = args.value_bytes.saturating_mul(args.pipeline);
    if in_flight_bytes > MAX_VALUE_BYTES_IN_FLIGHT {
        return Err(format!(
            "--pipeline {} with --value-bytes {} puts {in_flight_bytes} bytes of values in \
             flight per connection; keep it at most {MAX_VALUE_BYTES_IN_FLIGHT}",
            args.pipeline, args.value_bytes
        ));
    }
    let value_bytes =
        usize::try_from(args.value_bytes).map_err(|_| "--value-bytes is too large")?;
    let pipeline = usize::try_from(args.pipeline).map_err(|_| "--pipeline is too large")?;
    Ok(Plan {
        addr: args.client.addr.clone(),
        connections: args.connections,
        pipeline,
        keys: args.keys,
        get_percent: u64::from(args.get_percent),
        // Letters only: the value's length on the wire is its length in bytes.
        value: (b'a'..=b'z')
            .cycle()
            .take(value_bytes)
            .map(char::from)
            .collect(),
        limit: match args.ops {
            Some(ops) => Limit::Ops(ops),
            None => Limit::Duration(Duration::from_secs(args.duration_s)),
        },
    })
}

/// PUTs every key once, spread over the connections, so that GETs find their keys.
fn preload(plan: &Plan, clients: &mut [Client]) -> Result<(), String> {
    let done = AtomicU64::new(0);
    let step = clients.len() as u64;
    let outcome = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (first, client) in (0u64..).zip(clients.iter_mut()) {
            let done = &done;
            let handle = std::thread::Builder::new()
                .name(format!("preload-{first}"))
                .spawn_scoped(scope, move || {
                    let mut tally = Tally::new()?;
                    let mut keys = (first..plan.keys).step_by(step.max(1) as usize);
                    let next_op = || {
                        keys.next().map(|n| {
                            let request = ClientRequest::Put {
                                key: format!("k{n}"),
                                value: plan.value.clone(),
                            };
                            (OpKind::Put, request)
                        })
                    };
                    let failure = worker::drive(client, plan.pipeline, next_op, &mut tally, done)
                        .err()
                        .map(|err| err.to_string());
                    Ok(Outcome { tally, failure })
                })
                .map_err(|err| format!("cannot start a thread: {err}"))?;
            handles.push(handle);
        }
        collect(handles)
    })?;
    if let Some(why) = outcome.failure {
        return Err(why);
    }
    let tally = outcome.tally;
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

/// The measured phase: every connection on its own thread until the limit.
fn measure(
    plan: &Plan,
    clients: Vec<Client>,
    stop: &StopFlag,
    show_progress: bool,
) -> Result<(Outcome, Duration), String> {
    let issued = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let seed_base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos() as u64)
        .unwrap_or(0x5EED);
    let started = Instant::now();
    let deadline = match plan.limit {
        Limit::Duration(duration) => Some(started + duration),
        Limit::Ops(_) => None,
    };
    let may_send = || -> bool {
        if stop.is_set() {
            return false;
        }
        match (plan.limit, deadline) {
            (Limit::Ops(max), _) => issued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok(),
            (Limit::Duration(_), Some(deadline)) => Instant::now() < deadline,
            (Limit::Duration(_), None) => false,
        }
    };
    let progress = progress_bar(plan.limit, show_progress);
    let outcome = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (index, mut client) in (0u64..).zip(clients) {
            let done = &done;
            let may_send = &may_send;
            let handle = std::thread::Builder::new()
                .name(format!("bench-{index}"))
                .spawn_scoped(scope, move || {
                    let mut tally = Tally::new()?;
                    let mut rng =
                        SplitMix64::new(seed_base ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let next_op = || {
                        if !may_send() {
                            return None;
                        }
                        let key = format!("k{}", rng.below(plan.keys));
                        Some(if rng.below(100) < plan.get_percent {
                            (OpKind::Get, ClientRequest::Get { key })
                        } else {
                            let value = plan.value.clone();
                            (OpKind::Put, ClientRequest::Put { key, value })
                        })
                    };
                    let failure =
                        worker::drive(&mut client, plan.pipeline, next_op, &mut tally, done)
                            .err()
                            .map(|err| err.to_string());
                    Ok(Outcome { tally, failure })
                })
                .map_err(|err| format!("cannot start a thread: {err}"))?;
            handles.push(handle);
        }
        while !handles.iter().all(ScopedJoinHandle::is_finished) {
            std::thread::sleep(Duration::from_millis(PROGRESS_TICK_MS));
            update_progress(&progress, plan.limit, started, done.load(Ordering::Relaxed));
        }
        collect(handles)
    });
    progress.finish_and_clear();
    let outcome = outcome?;
    let finished_at = outcome.tally.finished_at().unwrap_or_else(Instant::now);
    Ok((outcome, finished_at.saturating_duration_since(started)))
}

/// What the connections measured together, and the first reason one of them stopped
/// early (its connection lost and not made again).
struct Outcome {
    tally: Tally,
    failure: Option<String>,
}

/// Joins the workers and merges what they measured; the first failure is kept.
fn collect(handles: Vec<ScopedJoinHandle<'_, Result<Outcome, String>>>) -> Result<Outcome, String> {
    let mut total = Outcome {
        tally: Tally::new()?,
        failure: None,
    };
    for handle in handles {
        let failure = match handle.join() {
            Ok(Ok(outcome)) => {
                total.tally.merge(&outcome.tally)?;
                outcome.failure
            }
            Ok(Err(why)) => Some(why),
            Err(_) => Some("a worker thread panicked".into()),
        };
        if total.failure.is_none() {
            total.failure = failure;
        }
    }
    Ok(total)
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
