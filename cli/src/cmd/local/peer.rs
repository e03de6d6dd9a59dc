//! `ringkv local --mode peer`: a whole peer (two-phase commit) cluster in this process,
//! one node a thread, with its cluster file written under the data directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use ringkv_core::peer::PeerConfig;
use ringkv_net::resp::RespListen;
use ringkv_net::{run_peer_node, NetLimits, PeerNodeOptions};

use super::nodes::{cluster_of, listen_of, run_nodes, spawn_node, NodesPlan};
use super::roles::Roles;
use super::Stopped;
use crate::args::LocalArgs;
use crate::exit::Exit;

/// Nodes without `--nodes`: the seed design's five servers.
const DEFAULT_NODES: u16 = 5;

/// Runs the cluster until a signal, or until the console is left.
pub fn run(args: &LocalArgs) -> Exit {
    run_nodes(args, plan(args))
}

/// Every node's settings, and where the cluster file is.
struct Plan {
    configs: Vec<PeerConfig>,
    data_dir: PathBuf,
    cluster_file: PathBuf,
}

fn plan(args: &LocalArgs) -> Result<Plan, String> {
    if args.conflicts != "siblings" || args.repair != "both" {
        return Err("--conflicts and --repair are for --mode eventual".into());
    }
    let nodes = usize::from(args.nodes.unwrap_or(DEFAULT_NODES));
    let (cluster, cluster_file) = cluster_of(&args.data_dir, nodes, "peer")?;
    let members: Vec<(u64, String)> = cluster.nodes.into_iter().collect();
    let replication = args
        .replication
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if replication.is_some_and(|n| n > nodes) {
        return Err(format!(
            "--replication is more than the {nodes} nodes of the cluster"
        ));
    }
    let mut configs = Vec::new();
    for (id, _) in &members {
        let mut config = PeerConfig::new(*id, members.clone());
        config.replication = replication;
        config.timeout_ms = args.timeout_ms;
        config.validate().map_err(|err| err.to_string())?;
        configs.push(config);
    }
    Ok(Plan {
        configs,
        data_dir: args.data_dir.clone(),
        cluster_file,
    })
}

impl NodesPlan for Plan {
    fn spawn(&self, roles: &mut Roles, resp: RespListen) -> Result<usize, Stopped> {
        for (index, config) in self.configs.iter().enumerate() {
            let own = config
                .nodes
                .iter()
                .find(|(id, _)| *id == config.id)
                .map(|(_, addr)| addr.clone())
                .unwrap_or_default();
            let listen = listen_of(index, &own)?;
            let options = PeerNodeOptions {
                config: config.clone(),
                data_dir: self.data_dir.join(format!("node-{index}")),
                listen,
                resp_listen: (index == 0).then_some(resp),
                limits: NetLimits::default(),
                truncate_corrupt_log: false,
                log_compact_bytes: ringkv_net::DEFAULT_LOG_COMPACT_BYTES,
            };
            spawn_node(roles, index, move |shutdown, ready| {
                run_peer_node(options, shutdown, |info| ready(info.listen, info.resp))
            })?;
        }
        Ok(self.configs.len())
    }

    fn describe(&self, addrs: &[SocketAddr]) -> String {
        let Some(first) = self.configs.first() else {
            return String::new();
        };
        let replication = match first.replication {
            Some(n) => n.to_string(),
            None => "every node".to_owned(),
        };
        let mut text = format!(
            "peer-mode cluster (two-phase commit, any node coordinates): {} nodes, \
             replication {replication}, timeout {} ms\n",
            self.configs.len(),
            first.timeout_ms
        );
        for (index, (config, addr)) in self.configs.iter().zip(addrs).enumerate() {
            text.push_str(&format!(
                "  node {:>20}  listen {addr}  data {}\n",
                config.id,
                self.data_dir.join(format!("node-{index}")).display()
            ));
        }
        text.push_str(&format!(
            "cluster file {}; any node serves any key: `ringkv console --addr ADDR`",
            self.cluster_file.display()
        ));
        text
    }
}
