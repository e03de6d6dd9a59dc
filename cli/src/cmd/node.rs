//! `ringkv node`: one node of an eventual-mode or peer (two-phase commit) cluster in
//! this process until SIGINT/SIGTERM.

use std::net::SocketAddr;

use ringkv_core::eventual::{parse_cluster, Cluster, Conflicts, NodeConfig, Repair};
use ringkv_core::peer::PeerConfig;
use ringkv_net::resp::RespListen;
use ringkv_net::{run_node, run_peer_node, NetLimits, NodeOptions, PeerNodeOptions};

use crate::addr::resolve_listen;
use crate::args::{NodeArgs, NodeMode};
use crate::exit::Exit;
use crate::out;

/// The longest cluster file read: thousands of lines of `ID HOST:PORT` fit many times.
const MAX_CLUSTER_FILE_BYTES: u64 = 1024 * 1024;

/// Runs the node; prints `listen ADDR` (and `resp ADDR`) and `id ID` once it listens.
pub fn run(args: &NodeArgs) -> Exit {
    if args.mode == NodeMode::Peer {
        return super::run_role(peer_options(args), |options, shutdown| {
            run_peer_node(options, shutdown, |info| {
                out::line_or_warn(&ready_lines(info.listen, info.resp, info.id));
            })
        });
    }
    super::run_role(options(args), |options, shutdown| {
        run_node(options, shutdown, |info| {
            out::line_or_warn(&ready_lines(info.listen, info.resp, info.id));
        })
    })
}

/// The lines PROTOCOL.md section 4 says a node prints once it listens.
fn ready_lines(listen: SocketAddr, resp: Option<SocketAddr>, id: u64) -> String {
    match resp {
        Some(resp) => format!("listen {listen}\nresp {resp}\nid {id}"),
        None => format!("listen {listen}\nid {id}"),
    }
}

/// `--resp-addr`, resolved; `None` when not given.
fn resp_listen(args: &NodeArgs) -> Result<Option<RespListen>, String> {
    args.resp_addr
        .as_deref()
        .map(|addr| resolve_listen("--resp-addr", addr).map(RespListen::exactly))
        .transpose()
}

/// Reads the cluster file, refusing one that is too large or not UTF-8.
fn read_cluster_file(args: &NodeArgs) -> Result<String, String> {
    use std::io::Read;
    let path = &args.cluster;
    let file = std::fs::File::open(path)
        .map_err(|err| format!("cannot open the cluster file {}: {err}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_CLUSTER_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read the cluster file {}: {err}", path.display()))?;
    if bytes.len() as u64 > MAX_CLUSTER_FILE_BYTES {
        return Err(format!(
            "the cluster file {} is over {MAX_CLUSTER_FILE_BYTES} bytes",
            path.display()
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| format!("the cluster file {} is not UTF-8 text", path.display()))
}

/// The cluster file, this node's own address in it, and `--replication` checked
/// against its size.
fn cluster_and_replication(args: &NodeArgs) -> Result<(Cluster, String, Option<usize>), String> {
    if args.max_frame_bytes == 0 {
        return Err("--max-frame-bytes must be at least 1".into());
    }
    let text = read_cluster_file(args)?;
    let cluster = parse_cluster(&text, args.id)
        .map_err(|err| format!("{}: {err}", args.cluster.display()))?;
    let own = cluster
        .nodes
        .get(&args.id)
        .cloned()
        .ok_or_else(|| format!("node {} is not in the cluster file", args.id))?;
    let nodes = cluster.nodes.len();
    let replication = args
        .replication
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if let Some(n) = replication.filter(|&n| n > nodes) {
        return Err(format!(
            "--replication {n} is more than the {nodes} nodes of the cluster file"
        ));
    }
    Ok((cluster, own, replication))
}

fn limits(args: &NodeArgs) -> NetLimits {
    NetLimits {
        max_frame_bytes: args.max_frame_bytes,
        max_connections_per_port: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        ..NetLimits::default()
    }
}

/// A peer node's options: every node of the cluster file holds every key unless
/// `--replication` says otherwise. The eventual-mode flags are refused, not ignored.
pub fn peer_options(args: &NodeArgs) -> Result<PeerNodeOptions, String> {
    let eventual_only = [
        (args.conflicts != "siblings", "--conflicts"),
        (args.repair != "both", "--repair"),
        (
            args.max_siblings != ringkv_core::versions::DEFAULT_MAX_SIBLINGS,
            "--max-siblings",
        ),
    ];
    if let Some((_, flag)) = eventual_only.iter().find(|(given, _)| *given) {
        return Err(format!(
            "{flag} is for --mode eventual; a peer node keeps one committed value a key"
        ));
    }
    let (cluster, own, replication) = cluster_and_replication(args)?;
    let mut config = PeerConfig::new(args.id, cluster.nodes.into_iter().collect());
    config.replication = replication;
    config.timeout_ms = args.timeout_ms;
    config.validate().map_err(|err| err.to_string())?;
    Ok(PeerNodeOptions {
        config,
        data_dir: args.data_dir.clone(),
        listen: resolve_listen("the cluster file's address of this node", &own)?,
        resp_listen: resp_listen(args)?,
        limits: limits(args),
        truncate_corrupt_log: args.truncate_corrupt_log,
        log_compact_bytes: args.log_compact_bytes,
    })
}

/// The node's options from the flags and the cluster file, checked before anything is
/// opened.
pub fn options(args: &NodeArgs) -> Result<NodeOptions, String> {
    let (cluster, own, replication) = cluster_and_replication(args)?;
    let mut config = NodeConfig::new(args.id, cluster, 0, 0);
    if let Some(n) = replication {
        config.replication = n;
    }
    config.timeout_ms = args.timeout_ms;
    config.conflicts = Conflicts::parse(&args.conflicts)
        .ok_or_else(|| format!("--conflicts {:?} is not siblings or lww", args.conflicts))?;
    config.repair = Repair::parse(&args.repair).ok_or_else(|| {
        format!(
            "--repair {:?} is not read, hints, both or none",
            args.repair
        )
    })?;
    config.max_siblings = args.max_siblings;
    config.validate()?;
    Ok(NodeOptions {
        config,
        data_dir: args.data_dir.clone(),
        listen: resolve_listen("the cluster file's address of this node", &own)?,
        resp_listen: resp_listen(args)?,
        limits: limits(args),
        truncate_corrupt_log: args.truncate_corrupt_log,
        log_compact_bytes: args.log_compact_bytes,
    })
}
