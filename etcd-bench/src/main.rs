//! A load generator for etcd: the counterpart of `ringkv bench` in the side-by-side runs of
//! `scripts/perf-etcd.sh`. CONNECTIONS clients, each on a gRPC connection of its own with
//! one request in flight (as each of `ringkv bench`'s connections has), PUT or GET keys
//! `key:NNNNNNNNNNNN` drawn from KEYS with values of VALUE_BYTES bytes, for DURATION_S
//! seconds; prints one JSON object: throughput, latency percentiles, and this client's own
//! CPU per operation. The servers' CPU is read from /proc by the script, as for ringkv and
//! Redis, so that the three are measured the same way.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, GetOptions};
use hdrhistogram::Histogram;

/// What to run, from the command line.
#[derive(Parser, Clone)]
#[command(about = "Load an etcd cluster with PUTs or GETs and print one JSON report")]
struct Args {
    /// etcd client URLs, comma-separated; connection i goes to endpoint i mod their count.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Clients, each with one request in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// gRPC connections the clients share (HTTP/2 carries several requests at once on one);
    /// by default one per client, as each of `ringkv bench`'s clients has its own.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    grpc_connections: Option<u32>,
    /// How long to load, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    duration_s: u64,
    /// How many distinct keys the operations pick from, uniformly.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Bytes in each PUT's value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    value_bytes: u32,
    /// Percent of operations that are GETs; the rest are PUTs.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    get_percent: u8,
    /// Write every key once before the measured run, so that GETs find them.
    #[arg(long)]
    preload: bool,
    /// GETs answered from the member's own state (etcd's serializable reads) instead of
    /// linearizable ones, which confirm the leader's term with a quorum first.
    #[arg(long)]
    serializable: bool,
}

/// One client's measurements.
struct Tally {
    latency_us: Histogram<u64>,
}

/// A small deterministic generator, so that each client's key sequence is reproducible.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform below `bound` (a bias of at most bound / 2^64, nothing for a benchmark).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

fn key_name(index: u64) -> String {
    format!("key:{index:012}")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the runtime: {err}")),
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("etcd-bench: {why}");
    ExitCode::FAILURE
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let channels = args
        .grpc_connections
        .unwrap_or(args.connections)
        .min(args.connections);
    let mut shared = Vec::new();
    for index in 0..channels as usize {
        let endpoint = &args.endpoints[index % args.endpoints.len()];
        let client = Client::connect([endpoint.as_str()], None)
            .await
            .map_err(|err| format!("cannot connect to {endpoint}: {err}"))?;
        shared.push(client);
    }
    let mut clients: Vec<Client> = (0..args.connections as usize)
        .map(|index| shared[index % shared.len()].clone())
        .collect();
    if args.preload {
        preload(&mut clients, &args).await?;
    }
    let cpu_before = own_cpu_us()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_s);
    let mut tasks = Vec::new();
    for (index, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(load(
            client,
            args.clone(),
            index as u64,
            deadline,
        )));
    }
    let mut all = Histogram::<u64>::new(3).map_err(|err| err.to_string())?;
    for task in tasks {
        let tally = task
            .await
            .map_err(|err| format!("a client failed: {err}"))??;
        all.add(&tally.latency_us).map_err(|err| err.to_string())?;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu_us = own_cpu_us()?.saturating_sub(cpu_before);
    let ops = all.len();
    Ok(serde_json::json!({
        "ops": ops,
        "duration_s": elapsed_s,
        "ops_per_s": ops as f64 / elapsed_s,
        "p50_us": all.value_at_quantile(0.5),
        "p99_us": all.value_at_quantile(0.99),
        "p999_us": all.value_at_quantile(0.999),
        "max_us": all.max(),
        "bench_us_per_op": cpu_us as f64 / ops.max(1) as f64,
    }))
}

/// Writes every key once, spread over the clients, all of them in flight together.
async fn preload(clients: &mut [Client], args: &Args) -> Result<(), String> {
    let value = vec![b'x'; args.value_bytes as usize];
    let count = clients.len() as u64;
    let mut tasks = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let (mut client, value) = (client.clone(), value.clone());
        let keys: Vec<u64> = (index as u64..args.keys).step_by(count as usize).collect();
        tasks.push(tokio::spawn(async move {
            for key in keys {
                client.put(key_name(key), value.clone(), None).await?;
            }
            Ok::<(), etcd_client::Error>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|err| format!("a client failed: {err}"))?
            .map_err(|err| format!("preloading failed: {err}"))?;
    }
    Ok(())
}

/// One client's loop: one request in flight until the deadline. Any failed request fails
/// the run: a benchmark that counted errors as operations would report a faster store.
async fn load(
    mut client: Client,
    args: Args,
    index: u64,
    deadline: Instant,
) -> Result<Tally, String> {
    let mut rng = SplitMix64(index.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED);
    let value = vec![b'x'; args.value_bytes as usize];
    let get_options = || {
        args.serializable
            .then(|| GetOptions::new().with_serializable())
    };
    let mut tally = Tally {
        latency_us: Histogram::new(3).map_err(|err| err.to_string())?,
    };
    while Instant::now() < deadline {
        let key = key_name(rng.below(args.keys));
        let is_get = rng.below(100) < u64::from(args.get_percent);
        let started = Instant::now();
        if is_get {
            let found = client
                .get(key.as_str(), get_options())
                .await
                .map_err(|err| format!("GET {key}: {err}"))?;
            if found.kvs().is_empty() {
                return Err(format!("GET {key} found nothing (run with --preload)"));
            }
        } else {
            client
                .put(key.as_str(), value.clone(), None)
                .await
                .map_err(|err| format!("PUT {key}: {err}"))?;
        }
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally
            .latency_us
            .record(latency_us.max(1))
            .map_err(|err| err.to_string())?;
    }
    Ok(tally)
}

/// This process's user + system CPU so far, in microseconds, from /proc/self/stat.
fn own_cpu_us() -> Result<u64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|err| format!("/proc/self/stat: {err}"))?;
    // Fields after the command name, which ends at the last ')' and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("/proc/self/stat: no ')'")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or("/proc/self/stat: bad field")
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let total_ticks = ticks(11)? + ticks(12)?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Ok(total_ticks * 10_000)
}
