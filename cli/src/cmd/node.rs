//! `ringkv node`: one node of a peer cluster in this process until SIGINT/SIGTERM.

use ringkv_core::eventual::{parse_cluster, Conflicts, NodeConfig, Repair};
use ringkv_net::{run_node, NetLimits, NodeOptions};

use crate::addr::resolve_listen;
use crate::args::{NodeArgs, NodeMode};
use crate::exit::Exit;
use crate::out;

/// The longest cluster file read: thousands of lines of `ID HOST:PORT` fit many times.
const MAX_CLUSTER_FILE_BYTES: u64 = 1024 * 1024;

/// Runs the node; prints `listen ADDR` and `id ID` once it listens.
pub fn run(args: &NodeArgs) -> Exit {
    if args.mode == NodeMode::Peer {
        eprintln!(
            "error: --mode peer (two-phase commit coordinated by every node) is not built yet; \
             use --mode eventual, or `ringkv coordinator` and `ringkv server` for strong mode"
        );
        return Exit::Failure;
    }
    super::run_role(options(args), |options, shutdown| {
        run_node(options, shutdown, |info| {
            out::line_or_warn(&format!("listen {}\nid {}", info.listen, info.id));
        })
    })
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

/// The node's options from the flags and the cluster file, checked before anything is
/// opened.
pub fn options(args: &NodeArgs) -> Result<NodeOptions, String> {
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
    let mut config = NodeConfig::new(args.id, cluster, 0, 0);
    if let Some(n) = args.replication {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > nodes {
            return Err(format!(
                "--replication {n} is more than the {nodes} nodes of the cluster file"
            ));
        }
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
        limits: NetLimits {
            max_frame_bytes: args.max_frame_bytes,
            max_connections_per_port: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            ..NetLimits::default()
        },
        truncate_corrupt_log: args.truncate_corrupt_log,
    })
}
