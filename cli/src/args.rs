//! The command line: every subcommand, its flags and their defaults, as `--help` shows
//! them. Kept apart from what the commands do so that the interface reads in one place.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use ringkv_core::cache::CacheConfig;
use ringkv_core::limits::{DEFAULT_MAX_FRAME_BYTES, MAX_VALUE_BYTES};

/// The default client port of the coordinator, as the protocol names it.
pub const DEFAULT_CLIENT_ADDR: &str = "127.0.0.1:8080";
/// The default registration port of the coordinator, as the protocol names it.
pub const DEFAULT_SERVER_ADDR: &str = "127.0.0.1:9090";
/// Where `ringkv local` opens its RESP2 port: Redis's port, so that redis-cli works
/// without flags.
pub const DEFAULT_LOCAL_RESP_ADDR: &str = "127.0.0.1:6379";
/// The phase-1 timeout of two-phase commit, as the protocol sets it.
pub const DEFAULT_TIMEOUT_MS: u64 = 3000;

/// ringkv: a replicated key-value store.
#[derive(Debug, Parser)]
#[command(
    name = "ringkv",
    version,
    about = "ringkv: a replicated key-value store (strong mode: coordinator + KV servers, two-phase commit; eventual mode: peer nodes with quorums and siblings; peer mode: nodes that each coordinate two-phase commits)",
    long_about = "ringkv: a replicated key-value store. In strong mode every key lives on two \
                  KV servers of a hash ring and a coordinator writes both with two-phase \
                  commit; in eventual mode peer nodes hold each key N times and answer at the \
                  consistency level each request asks for, keeping concurrent writes as \
                  siblings; in peer mode every node holds every key (or N of them) and the \
                  node a client asks coordinates a two-phase commit over the key's \
                  replicas, rolling back and retrying when two updates collide.\n\n\
                  Start a whole cluster on this machine with `ringkv local` (`--mode \
                  eventual` or `--mode peer` for nodes), or one role per process with `ringkv \
                  coordinator` and `ringkv server`, or `ringkv node`. Talk to it with \
                  `ringkv console`, `ringkv get|put|del|status`, and measure it with \
                  `ringkv bench`.\n\n\
                  Exit codes: 0 success, 1 key not found, 2 usage, connection or startup \
                  error, 3 any other error answer from the store, 130 forced stop (a second \
                  Ctrl-C)."
)]
pub struct Cli {
    /// Log more on stderr: -v info, -vv debug, -vvv trace (default: warnings only).
    /// RUST_LOG, when set, overrides it (e.g. RUST_LOG=ringkv_net=debug).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole cluster in this process: a coordinator and N KV servers, or with
    /// --mode eventual or peer N nodes.
    #[command(
        long_about = "Run a whole strong-mode cluster in this process: one coordinator and N KV \
                      servers, each on its own thread. Server i keeps its data in \
                      <DATA_DIR>/server-<i> under a fixed ID (i * ((2^64-1) / N), evenly spaced on \
                      the ring), so running `ringkv local` again on the same data directory with \
                      the same --servers brings the same servers and data back. Servers listen \
                      on free loopback ports. The coordinator also speaks RESP2 on --resp-addr \
                      (127.0.0.1:6379 by default, a free port if that one is taken), so that \
                      redis-cli and redis-benchmark work against the cluster.\n\n\
                      Prints the ring once every server registered. If stdin and stdout are terminals, \
                      opens the console against the cluster; leaving it (exit, quit, Ctrl-D, \
                      Ctrl-C) stops the cluster. Otherwise runs until SIGINT or SIGTERM. A \
                      second signal quits at once (exit 130).\n\n\
                      With --mode eventual: --nodes peer nodes (4 by default), each on its own \
                      thread and a free loopback port, with IDs evenly spaced on the ring; the \
                      cluster file is written to <DATA_DIR>/cluster and each node keeps its \
                      data in <DATA_DIR>/node-<i>. The console speaks to the first node; \
                      `ringkv console --addr ADDR` reaches any of them.\n\n\
                      With --mode peer: the same layout with 5 nodes by default, each holding \
                      every key (or --replication N of them); any node coordinates the \
                      updates it is sent as two-phase commits."
    )]
    Local(LocalArgs),
    /// Run one coordinator until SIGINT/SIGTERM.
    #[command(
        long_about = "Run one coordinator until SIGINT or SIGTERM. As soon as its ports listen, \
                      prints `client HOST:PORT` and `server HOST:PORT` on stdout (and `resp \
                      HOST:PORT` with --resp-addr; port 0 resolved to the port actually bound), \
                      so that scripts can read them. Exits 2 if it cannot start (a port in use, \
                      a bad setting)."
    )]
    Coordinator(CoordinatorArgs),
    /// Run one KV server until SIGINT/SIGTERM.
    #[command(
        long_about = "Run one KV server until SIGINT or SIGTERM: recover from the data \
                      directory's log, listen, and register with the coordinator. Once \
                      listening, prints `listen HOST:PORT` and `id ID` on stdout. Exits 2 with \
                      one line on stderr if it cannot start or run: the data directory is \
                      locked by another server, belongs to another ID, has no ID and none was \
                      given, or the coordinator refused the registration."
    )]
    Server(ServerArgs),
    /// Run one node of an eventual-mode or peer-mode cluster until SIGINT/SIGTERM.
    #[command(
        long_about = "Run one node of a cluster without a coordinator until SIGINT or SIGTERM. \
                      Every node is started with the same cluster file (one `ID HOST:PORT` a \
                      line, blank lines and # comments ignored) and the same settings, and \
                      listens on its own line's address for clients and other nodes alike. \
                      Once listening, prints `listen HOST:PORT` (and `resp HOST:PORT` with \
                      --resp-addr, a RESP2 port for Redis clients) and `id ID` on stdout.\n\n\
                      --mode eventual (Dynamo-style): any node coordinates any request; a key \
                      lives on the N nodes that follow its position on the ring; reads and \
                      writes wait for as many replicas as the request's consistency level asks \
                      (one, two, three, quorum, all); concurrent writes are kept as siblings \
                      (or the latest stamp wins with --conflicts lww) and replicas converge by \
                      read repair and hinted handoff. A node on an empty data directory draws \
                      a new incarnation and catches up from the others; one on its old \
                      directory replays its log.\n\n\
                      --mode peer (two-phase commit, no master): every node holds every key \
                      (or the N nodes of its preference list with --replication N); the node a \
                      client asks coordinates each PUT or DEL as a two-phase commit over the \
                      key's replicas, and answers Success only once every replica voted ready \
                      and its decision is durable. Two updates of one key collide: the loser \
                      rolls back and tries again after a random, growing wait, and answers \
                      `aborted` only when --timeout-ms is spent. A replica that is down makes \
                      the updates of its keys answer `unavailable`; GETs are linearizable. Any \
                      node may crash: on restart it finishes the commits it decided and asks \
                      for the outcome of what it holds in doubt. A node on a lost data \
                      directory has no catch-up: restore the directory.\n\n\
                      Exits 2 with one line on stderr if it cannot start: a cluster file that \
                      is malformed, lacks --id, or repeats an ID or address (the line is \
                      named), a locked data directory or one of another ID, a damaged log."
    )]
    Node(NodeArgs),
    /// Interactive console: get, put, del, status, with line editing and history.
    #[command(
        long_about = "Interactive console with line editing and history (kept in \
                      $HOME/.ringkv_history), against a strong-mode coordinator or any \
                      eventual-mode or peer-mode node (it asks the address which it is). Commands: `get \
                      KEY`, `put KEY VALUE` (VALUE is the rest of the line, spaces included, or \
                      one quoted argument: `put \"a b\" \"c d\"`), `del KEY`, `status`, \
                      `help`, `exit`/`quit` (or Ctrl-D, Ctrl-C). On a node, get/put/del take \
                      `--consistency LEVEL`, a get lists every sibling with its clock, a put or \
                      del after a get of the same key sends that read's context (`put!`/`del!` \
                      do not), and the lines `get,KEY,LEVEL` and `put,KEY,VALUE,LEVEL` work \
                      too. A peer-mode node keeps one committed value a key: no levels, \
                      siblings or contexts. Values are printed plainly, errors as `error CODE: \
                      MESSAGE`. A dropped connection is re-established at the next command."
    )]
    Console(ConsoleArgs),
    /// Print a key's value (exit 1 if it does not exist).
    #[command(
        long_about = "Print a key's value followed by a newline. Exits 0 if found, 1 if the key \
                      does not exist, 2 if the store cannot be reached, 3 on another error \
                      answer (printed as `error CODE: MESSAGE` on stderr)."
    )]
    Get(GetArgs),
    /// Write a key (prints OK).
    #[command(
        long_about = "Write a key on both of its replicas (two-phase commit) and print OK. \
                      Exits 0 on success, 2 if the store cannot be reached, 3 on an error answer \
                      (printed as `error CODE: MESSAGE` on stderr)."
    )]
    Put(PutArgs),
    /// Delete a key (prints OK; exit 1 if it does not exist).
    #[command(
        long_about = "Delete a key from both of its replicas and print OK. Exits 0 on success, \
                      1 if the key does not exist, 2 if the store cannot be reached, 3 on another \
                      error answer."
    )]
    Del(DelArgs),
    /// Print the ring: every registered server, in ring order.
    #[command(
        long_about = "Print the ring as a table: every registered server in ring order with its \
                      ID, address, whether it answers, and the share of keys it is the primary \
                      replica of. With --json, the raw answer line instead."
    )]
    Status(StatusArgs),
    /// Closed-loop load generator: ops/s and latency percentiles.
    #[command(
        long_about = "Closed-loop load generator. C connections, all driven by one event-driven \
                      thread, keep up to Q requests in flight each (pipelined), on random keys \
                      k0..k{K-1}, GET with the given percentage and PUT of B-byte values \
                      otherwise. Runs for --duration-s seconds or until --ops operations \
                      completed (Ctrl-C stops early and still reports). Prints ops/s, \
                      p50/p99/p99.9/max latency in microseconds per operation kind, GET misses \
                      (not_found: not an error), error answers by code, and the CPU time \
                      (user + system, from /proc/PID/stat) the cluster's processes and the \
                      bench itself spent per operation during the measured phase: on a shared \
                      machine that figure stays comparable where ops/s does not. The cluster's \
                      processes are those given with --pids, or else the processes of this \
                      machine listening on --addr's port (for `ringkv local`, the whole \
                      cluster; for separate processes, only the coordinator: name them all \
                      with --pids). --json prints one JSON line instead. Exits 2 if it cannot \
                      connect or a connection is lost; error answers are reported, not fatal."
    )]
    Bench(BenchArgs),
    /// Measure this machine's floor under a PUT: fsync latency and loopback round trip.
    #[command(
        long_about = "Measure the two costs no PUT can avoid on this machine: the latency of \
                      writing a small record into space allocated ahead, as the logs do, and \
                      fdatasync-ing it in --dir (use the \
                      filesystem the data directories live on), and the round trip of a small \
                      line over loopback TCP. A PUT needs at least two round trips and one \
                      fsync (the replicas' and the coordinator's records sync side by side), \
                      so the sum is its latency floor. Prints \
                      percentiles in microseconds; --json prints one JSON line."
    )]
    Probe(ProbeArgs),
    /// Narrated demonstrations of how ringkv behaves.
    #[command(
        long_about = "Narrated demonstrations. `ringkv demo conflicts` starts five \
                      eventual-mode nodes (N = 3) as processes on free loopback ports, in a \
                      temporary directory, and walks through what happens to one key: a \
                      replica goes offline, an update lands on the others, the replica comes \
                      back and merges without conflict; then two clients update the key at \
                      the same time through different replicas, a read returns both versions \
                      with their clocks, and a write with the read's context resolves them. \
                      Clocks are printed at every step. The nodes are stopped at the end."
    )]
    Demo(DemoArgs),
}

/// `ringkv local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// How many KV servers (2 to 64).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=64))]
    pub servers: u16,
    /// Where the servers keep their data: one directory per server inside it.
    #[arg(long, default_value = "./ringkv-data")]
    pub data_dir: PathBuf,
    /// The coordinator's client port (HOST:PORT; port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_CLIENT_ADDR)]
    pub client_addr: String,
    /// The coordinator's registration port for KV servers (HOST:PORT; port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_SERVER_ADDR)]
    pub server_addr: String,
    /// The RESP2 port for Redis clients (redis-cli, redis-benchmark): the coordinator's,
    /// or the first node's with --mode eventual or peer. If this port is taken, a free
    /// port on the same host is used instead and printed.
    #[arg(long, default_value = DEFAULT_LOCAL_RESP_ADDR)]
    pub resp_addr: String,
    /// Phase-1 timeout of two-phase commit, in milliseconds (1 to 3600000).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=ringkv_core::limits::MAX_TIMEOUT_MS))]
    pub timeout_ms: u64,
    /// Do not open the console even if stdin is a terminal; run until SIGINT/SIGTERM.
    #[arg(long)]
    pub no_console: bool,
    /// strong: a coordinator and KV servers with two-phase commit. eventual: peer nodes
    /// with quorums and siblings (Dynamo-style). peer: nodes that each coordinate
    /// two-phase commits over every replica of a key.
    #[arg(long, value_enum, default_value = "strong")]
    pub mode: LocalMode,
    /// Eventual and peer mode: how many nodes (1 to 64; 4 in eventual mode, 5 in peer
    /// mode by default). They listen on free loopback ports, written to
    /// <DATA_DIR>/cluster, and keep their data in <DATA_DIR>/node-<i>.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: Option<u16>,
    /// Eventual and peer mode: N, how many nodes hold each key (eventual: default 3,
    /// capped at --nodes; peer: default every node).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub replication: Option<u64>,
    /// Eventual mode: concurrent writes kept as siblings, or the latest stamp wins (lww).
    #[arg(long, default_value = "siblings", value_parser = ["siblings", "lww"])]
    pub conflicts: String,
    /// Eventual mode: which repairs run.
    #[arg(long, default_value = "both", value_parser = ["read", "hints", "both", "none"])]
    pub repair: String,
}

/// `ringkv local --mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LocalMode {
    /// Coordinator and KV servers, two-phase commit (the default).
    Strong,
    /// Peer nodes with quorums, siblings, read repair and hinted handoff.
    Eventual,
    /// Nodes that each coordinate two-phase commits over a key's replicas.
    Peer,
}

/// `ringkv coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// The client port (HOST:PORT; port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_CLIENT_ADDR)]
    pub client_addr: String,
    /// The registration port for KV servers (HOST:PORT; port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_SERVER_ADDR)]
    pub server_addr: String,
    /// Also listen for Redis clients here (RESP2: GET, SET, DEL, EXISTS, MGET, INFO, ...;
    /// HOST:PORT, port 0 picks a free one). Off unless given.
    #[arg(long)]
    pub resp_addr: Option<String>,
    /// How many KV servers make the ring complete (at least 2). Until that many
    /// registered, GET/PUT/DEL answer `unavailable`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=65_536))]
    pub servers: u64,
    /// Sets of the coordinator's write-through cache.
    #[arg(long, default_value_t = CacheConfig::COORDINATOR_DEFAULT.sets)]
    pub cache_sets: usize,
    /// Entries per set of the coordinator's write-through cache.
    #[arg(long, default_value_t = CacheConfig::COORDINATOR_DEFAULT.ways)]
    pub cache_ways: usize,
    /// Phase-1 timeout of two-phase commit, in milliseconds (1 to 3600000).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=ringkv_core::limits::MAX_TIMEOUT_MS))]
    pub timeout_ms: u64,
    /// The longest request line accepted, in bytes (line end not counted).
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Connections each port serves at once; one more is answered `overloaded` and closed.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: u64,
    /// The data directory (created if missing): the coordinator's log of members, epochs
    /// and commit decisions, so that its crash loses no acknowledged write and leaves no
    /// key locked. Without it the coordinator keeps all that in memory only.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Cut a log that is damaged before its end (a valid record after a bad one, or a
    /// record this version cannot read) instead of refusing to start. Every record from
    /// the damage on is lost: restore from a copy if you have one.
    #[arg(long)]
    pub truncate_corrupt_log: bool,
    /// The size of the coordinator's log, in bytes (at least 4096), at which it is
    /// rewritten to what recovery needs: the epoch, the members and the commits whose end
    /// is not recorded. It is rewritten again only once it doubles what the last rewrite
    /// left. The file also holds space allocated ahead of its writes: a quarter of this
    /// size, at least 64 KiB and at most 4 MiB.
    #[arg(long, default_value_t = ringkv_net::DEFAULT_LOG_COMPACT_BYTES, value_parser = clap::value_parser!(u64).range(4096..))]
    pub log_compact_bytes: u64,
    /// Bytes of requests read from clients and not yet answered, over all connections
    /// of this process. When they are spent, connections are not read until answers
    /// free bytes, in turn; the coordinator's and other nodes' traffic is never held.
    #[arg(long, default_value_t = ringkv_net::DEFAULT_MAX_HELD_REQUEST_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_held_request_bytes: u64,
}

/// `ringkv server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's ID on the ring (0 to 2^64-1). May be omitted when the data directory
    /// remembers one from an earlier start.
    #[arg(long)]
    pub id: Option<u64>,
    /// The coordinator's registration port (HOST:PORT).
    #[arg(long, default_value = DEFAULT_SERVER_ADDR)]
    pub coordinator: String,
    /// The data directory (created if missing): log, server ID, lock.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Where to listen for the coordinator (HOST:PORT; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The host to register with the coordinator, when it must dial another name than
    /// the listen IP (default: the listen IP, or 127.0.0.1 if that is 0.0.0.0 or ::).
    #[arg(long)]
    pub advertise_host: Option<String>,
    /// Cut a log that is damaged before its end (a valid record after a bad one, a
    /// record this version cannot read, or a segment cut short or missing) instead of
    /// refusing to start. Every record from the damage on is lost: restore from a copy
    /// if you have one.
    #[arg(long)]
    pub truncate_corrupt_log: bool,
    /// The longest request line accepted, in bytes (line end not counted).
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Bytes of requests read from clients and not yet answered, over all connections
    /// of this process. When they are spent, connections are not read until answers
    /// free bytes, in turn; the coordinator's and other nodes' traffic is never held.
    #[arg(long, default_value_t = ringkv_net::DEFAULT_MAX_HELD_REQUEST_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_held_request_bytes: u64,
    /// The size at which a segment of the log is sealed and a new one begun, in bytes
    /// (at least 4096). Sealed segments are merged in the background once they hold more
    /// than twice the live data, so the log takes about twice the live data plus one
    /// segment on disk.
    #[arg(long, default_value_t = ringkv_net::DEFAULT_SEGMENT_BYTES, value_parser = clap::value_parser!(u64).range(4096..))]
    pub segment_bytes: u64,
}

/// `ringkv node`'s mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeMode {
    /// Quorum reads and writes, siblings or last write wins, read repair, hints.
    Eventual,
    /// Two-phase commit coordinated by any node, over every replica of the key.
    Peer,
}

/// `ringkv node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// How the cluster keeps its replicas.
    #[arg(long, value_enum)]
    pub mode: NodeMode,
    /// This node's ID: one of the cluster file's IDs.
    #[arg(long)]
    pub id: u64,
    /// The cluster file: one `ID HOST:PORT` a line; every node gets the same one.
    #[arg(long)]
    pub cluster: PathBuf,
    /// The data directory (created if missing): log, ID, incarnation, lock.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// N: how many nodes hold each key (1 to the number of nodes; eventual mode: default
    /// 3, capped at the number of nodes; peer mode: default every node). The same on
    /// every node.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub replication: Option<u64>,
    /// How long a request waits for its replicas, in milliseconds (peer mode: also how
    /// long an update keeps retrying after collisions, and a GET waits for a decision).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=ringkv_core::limits::MAX_TIMEOUT_MS))]
    pub timeout_ms: u64,
    /// Concurrent writes: kept as siblings (dotted version vectors), or the latest stamp
    /// wins (lww).
    #[arg(long, default_value = "siblings", value_parser = ["siblings", "lww"])]
    pub conflicts: String,
    /// Which repairs run: read repair, hinted handoff, both, or none.
    #[arg(long, default_value = "both", value_parser = ["read", "hints", "both", "none"])]
    pub repair: String,
    /// The most versions a client write may leave on a key; a write beyond it is
    /// answered `overloaded`.
    #[arg(long, default_value_t = ringkv_core::versions::DEFAULT_MAX_SIBLINGS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    pub max_siblings: usize,
    /// Cut a log that is damaged before its end instead of refusing to start. Every
    /// record from the damage on is lost.
    #[arg(long)]
    pub truncate_corrupt_log: bool,
    /// The size of the node's log, in bytes (at least 4096), at which it is rewritten to
    /// what recovery needs. Eventual mode: every key's current state, the hints and
    /// debts still held, and the counters' floor. Peer mode: the epoch, the decisions
    /// remembered (the last 65,536 commits, about 2 MB once that many were made), every
    /// committed value, the transactions in doubt and the commits not finished. It is
    /// rewritten again only once it doubles what the last rewrite left.
    /// The file also holds space allocated ahead of its writes: a quarter of this size,
    /// at least 64 KiB and at most 4 MiB.
    #[arg(long, default_value_t = ringkv_net::DEFAULT_LOG_COMPACT_BYTES, value_parser = clap::value_parser!(u64).range(4096..))]
    pub log_compact_bytes: u64,
    /// The longest request line accepted, in bytes (line end not counted).
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Connections served at once on the node's port; one more is answered
    /// `overloaded` and closed.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: u64,
    /// Also listen for Redis clients here (RESP2: GET, SET, DEL, EXISTS, MGET, INFO, ...;
    /// HOST:PORT, port 0 picks a free one). Eventual mode reads and writes at quorum
    /// through it. Off unless given.
    #[arg(long)]
    pub resp_addr: Option<String>,
}

/// Where a client connects.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The coordinator's client port, or any eventual-mode node's port (HOST:PORT).
    #[arg(long, default_value = DEFAULT_CLIENT_ADDR)]
    pub addr: String,
    /// How long to wait for the store to take a request or to answer it, in
    /// milliseconds, before counting it failed. Keep it above twice the coordinator's
    /// --timeout-ms: an update may wait that long, and a write given up on earlier may
    /// still commit.
    #[arg(long, default_value_t = crate::client::DEFAULT_IO_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=ringkv_core::limits::MAX_TIMEOUT_MS))]
    pub io_timeout_ms: u64,
}

/// How a one-shot command prints its answer.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print the store's raw answer line (JSON) on stdout instead, errors included.
    #[arg(long)]
    pub json: bool,
}

/// `ringkv console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where to connect.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `ringkv get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key (1 to 256 bytes of UTF-8).
    #[arg(allow_hyphen_values = true)]
    pub key: String,
    /// On an eventual-mode node: how many replicas must answer (one, two, three,
    /// quorum, all; the node's default is quorum).
    #[arg(long, value_parser = ["one", "two", "three", "quorum", "all"])]
    pub consistency: Option<String>,
    /// Where to connect.
    #[command(flatten)]
    pub client: ClientArgs,
    /// How to print the answer.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `ringkv put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key (1 to 256 bytes of UTF-8).
    #[arg(allow_hyphen_values = true)]
    pub key: String,
    /// The value (up to 256 KiB of UTF-8; quote it if it has spaces).
    #[arg(allow_hyphen_values = true)]
    pub value: String,
    /// On an eventual-mode node: how many replicas must answer (one, two, three,
    /// quorum, all; the node's default is quorum).
    #[arg(long, value_parser = ["one", "two", "three", "quorum", "all"])]
    pub consistency: Option<String>,
    /// On an eventual-mode node: the context of an earlier read (`ringkv get KEY --json`
    /// shows it), so that this write replaces exactly the versions that read showed.
    #[arg(long)]
    pub context: Option<String>,
    /// Where to connect.
    #[command(flatten)]
    pub client: ClientArgs,
    /// How to print the answer.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `ringkv del`.
#[derive(Debug, Args)]
pub struct DelArgs {
    /// The key (1 to 256 bytes of UTF-8).
    #[arg(allow_hyphen_values = true)]
    pub key: String,
    /// On an eventual-mode node: how many replicas must answer (one, two, three,
    /// quorum, all; the node's default is quorum).
    #[arg(long, value_parser = ["one", "two", "three", "quorum", "all"])]
    pub consistency: Option<String>,
    /// On an eventual-mode node: the context of an earlier read (`ringkv get KEY --json`
    /// shows it), so that this write replaces exactly the versions that read showed.
    #[arg(long)]
    pub context: Option<String>,
    /// Where to connect.
    #[command(flatten)]
    pub client: ClientArgs,
    /// How to print the answer.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `ringkv status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where to connect.
    #[command(flatten)]
    pub client: ClientArgs,
    /// How to print the answer.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `ringkv bench --value-chars`: what a PUT's value is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ValueChars {
    /// The letters a to z, repeated: a value's JSON string is its bytes.
    Letters,
    /// Printable ASCII (space to tilde) drawn from a fixed seed: about one byte in 47 is a
    /// quote or a backslash, which JSON escapes.
    Printable,
}

/// `ringkv bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Where to connect.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Connections, all on one thread (1 to 1024: a port serves 1024 connections at most).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub connections: u64,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10, conflicts_with = "ops", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_s: u64,
    /// Stop after this many operations instead of after --duration-s.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,
    /// How many distinct keys (k0, k1, ...) to pick from at random.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Bytes of each PUT's value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=MAX_VALUE_BYTES as u64))]
    pub value_bytes: u64,
    /// What each PUT's value is made of. `letters` have nothing to escape; `printable`
    /// values are random printable ASCII, quotes and backslashes included, as
    /// redis-benchmark's are, so the JSON port's escaping is measured too.
    #[arg(long, value_enum, default_value_t = ValueChars::Letters)]
    pub value_chars: ValueChars,
    /// Percentage of GETs; the rest are PUTs.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub get_percent: u8,
    /// Against an eventual-mode node: the consistency level of every GET and PUT (one,
    /// two, three, quorum, all). Without it the requests are strong mode's, which a
    /// peer-mode node takes as they are (it refuses a level).
    #[arg(long, value_parser = ["one", "two", "three", "quorum", "all"])]
    pub consistency: Option<String>,
    /// Requests in flight per connection (1 to 1024; answers come in order).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pipeline: u64,
    /// Print one JSON line instead of a table: ops, duration_s, ops_per_s, errors (code ->
    /// count), get and put (count, p50_us, p99_us, p999_us, max_us; get also misses).
    #[arg(long)]
    pub json: bool,
    /// PUT every key once before measuring, so that GETs find their keys.
    #[arg(long)]
    pub preload: bool,
    /// The cluster's processes whose CPU time is reported per operation, comma-separated
    /// (default: the processes on this machine listening on --addr's port).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn put_takes_values_that_look_like_flags() {
        let cli = Cli::try_parse_from(["ringkv", "put", "k", "-5"]).unwrap();
        let Command::Put(put) = cli.command else {
            panic!("not put")
        };
        assert_eq!(put.value, "-5");
    }

    #[test]
    fn both_node_modes_compact_their_log_past_the_option() {
        let node = |mode: &str, extra: &[&str]| {
            let base = ["ringkv", "node", "--mode", mode, "--id", "1"];
            let paths = [
                "--cluster",
                "/nonexistent/cluster",
                "--data-dir",
                "/nonexistent",
            ];
            let args = base.iter().chain(&paths).chain(extra).copied();
            match Cli::try_parse_from(args) {
                Ok(Cli {
                    command: Command::Node(args),
                    ..
                }) => Ok(args),
                Ok(_) => panic!("not node"),
                Err(err) => Err(err.to_string()),
            }
        };
        let default = node("eventual", &[]).unwrap();
        assert_eq!(
            default.log_compact_bytes,
            ringkv_net::DEFAULT_LOG_COMPACT_BYTES
        );
        let given = node("eventual", &["--log-compact-bytes", "8192"]).unwrap();
        assert_eq!(given.log_compact_bytes, 8192);
        assert!(node("eventual", &["--log-compact-bytes", "4095"]).is_err());
        let peer = node("peer", &["--log-compact-bytes", "8192"]).unwrap();
        assert_eq!(peer.log_compact_bytes, 8192);
        assert!(node("peer", &["--log-compact-bytes", "4095"]).is_err());
    }

    #[test]
    fn bench_duration_and_ops_exclude_each_other() {
        assert!(
            Cli::try_parse_from(["ringkv", "bench", "--ops", "5", "--duration-s", "2"]).is_err()
        );
        assert!(Cli::try_parse_from(["ringkv", "bench", "--ops", "5"]).is_ok());
    }
}

/// `ringkv demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which demonstration.
    #[arg(value_enum)]
    pub which: DemoKind,
}

/// The demonstrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoKind {
    /// Eventual mode: an offline replica merging without conflict, concurrent updates
    /// becoming siblings, and a context write resolving them.
    Conflicts,
}

/// `ringkv probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The directory to measure fsync in (a scratch file is created and removed).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// How many fsyncs and round trips to time.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub samples: u64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}
