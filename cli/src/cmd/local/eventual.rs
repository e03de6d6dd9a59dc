//! `ringkv local --mode eventual`: a whole eventual-mode cluster in this process, one
//! node a thread, with its cluster file written under the data directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use ringkv_core::eventual::{Conflicts, NodeConfig, Repair};
use ringkv_net::resp::RespListen;
use ringkv_net::{run_node, NetLimits, NodeOptions};

use super::nodes::{cluster_of, listen_of, run_nodes, spawn_node, NodesPlan};
use super::roles::Roles;
use super::Stopped;
use crate::args::LocalArgs;
use crate::exit::Exit;

/// Nodes without `--nodes`.
const DEFAULT_NODES: u16 = 4;

/// Runs the cluster until a signal, or until the console is left.
pub fn run(args: &LocalArgs) -> Exit {
    run_nodes(args, plan(args))
}

/// Every node's settings, and where the cluster file is.
struct Plan {
    configs: Vec<NodeConfig>,
    data_dir: PathBuf,
    cluster_file: PathBuf,
}

fn plan(args: &LocalArgs) -> Result<Plan, String> {
    let nodes = usize::from(args.nodes.unwrap_or(DEFAULT_NODES));
    let (cluster, cluster_file) = cluster_of(&args.data_dir, nodes, "eventual")?;
    let conflicts = Conflicts::parse(&args.conflicts).ok_or("--conflicts is siblings or lww")?;
    let repair = Repair::parse(&args.repair).ok_or("--repair is read, hints, both or none")?;
    let mut configs = Vec::new();
    for &id in cluster.nodes.keys() {
        let mut config = NodeConfig::new(id, cluster.clone(), 0, 0);
        if let Some(n) = args.replication {
            config.replication = usize::try_from(n).unwrap_or(usize::MAX).min(nodes);
        }
        config.timeout_ms = args.timeout_ms;
        config.conflicts = conflicts;
        config.repair = repair;
        config.validate()?;
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
            let listen_text = config
                .cluster
                .nodes
                .get(&config.id)
                .cloned()
                .unwrap_or_default();
            let listen = listen_of(index, &listen_text)?;
            let options = NodeOptions {
                config: config.clone(),
                data_dir: self.data_dir.join(format!("node-{index}")),
                listen,
                resp_listen: (index == 0).then_some(resp),
                limits: NetLimits::default(),
                truncate_corrupt_log: false,
                // What the coordinator of a local strong-mode cluster gets.
                log_compact_bytes: ringkv_net::DEFAULT_LOG_COMPACT_BYTES,
            };
            spawn_node(roles, index, move |shutdown, ready| {
                run_node(options, shutdown, |info| ready(info.listen, info.resp))
            })?;
        }
        Ok(self.configs.len())
    }

    fn describe(&self, addrs: &[SocketAddr]) -> String {
        let plan = self;
        let Some(first) = plan.configs.first() else {
            return String::new();
        };
        let mut text = format!(
        "eventual-mode cluster: {} nodes, replication {}, conflicts {}, repair {}, timeout {} ms\n",
        plan.configs.len(),
        first.replication,
        first.conflicts.as_str(),
        first.repair.as_str(),
        first.timeout_ms
    );
        for (index, (config, addr)) in plan.configs.iter().zip(addrs).enumerate() {
            text.push_str(&format!(
                "  node {:>20}  listen {addr}  data {}\n",
                config.id,
                plan.data_dir.join(format!("node-{index}")).display()
            ));
        }
        text.push_str(&format!(
            "cluster file {}; any node serves any key: `ringkv console --addr ADDR`",
            plan.cluster_file.display()
        ));
        text
    }
}
