//! `ringkv local --mode eventual`: a whole eventual-mode cluster in this process, one
//! node a thread, with its cluster file written under the data directory.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ringkv_core::eventual::{parse_cluster, Cluster, Conflicts, NodeConfig, Repair};
use ringkv_net::{run_node, NetLimits, NodeOptions, Shutdown};

use super::roles::{local_server_id, Event, Roles};
use super::{handle_other, serve, Stopped};
use crate::args::LocalArgs;
use crate::exit::Exit;
use crate::out;
use crate::signals;

/// How long the nodes get to listen.
const START_WAIT_MS: u64 = 30_000;

/// Runs the cluster until a signal, or until the console is left.
pub fn run(args: &LocalArgs) -> Exit {
    let console =
        !args.no_console && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (events_tx, events) = mpsc::channel();
    let shutdown = Shutdown::new();
    let on_signal = {
        let shutdown = shutdown.clone();
        let events_tx = events_tx.clone();
        move || {
            let _ = events_tx.send(Event::Signal);
            shutdown.trigger();
        }
    };
    let stop = match signals::on_stop(on_signal, console) {
        Ok(stop) => stop,
        Err(err) => {
            eprintln!("error: cannot handle SIGINT/SIGTERM: {err}");
            return Exit::Failure;
        }
    };
    let mut roles = Roles::new(shutdown, events_tx);
    let outcome = plan(args)
        .map_err(Stopped::Failed)
        .and_then(|plan| start(&plan, &mut roles, &events).map(|addrs| (plan, addrs)))
        .map(|(plan, addrs)| {
            print_cluster(&plan, &addrs);
            let first = addrs.first().map(SocketAddr::to_string).unwrap_or_default();
            serve(&first, &events, &stop, console)
        });
    if let Err(Stopped::Failed(why)) = &outcome {
        eprintln!("error: {why}");
    }
    let problems = roles.stop(&events);
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    match outcome {
        Err(Stopped::Failed(_)) => Exit::Failure,
        _ if !problems.is_empty() => Exit::Failure,
        Ok(exit) => exit,
        Err(Stopped::BySignal) => Exit::Ok,
    }
}

/// Every node's settings, and where the cluster file is.
struct Plan {
    configs: Vec<NodeConfig>,
    data_dir: PathBuf,
    cluster_file: PathBuf,
}

/// The cluster file of an earlier run with as many nodes (so that the nodes keep their
/// addresses and data), or a new one on free loopback ports.
fn cluster_of(data_dir: &Path, nodes: usize) -> Result<(Cluster, PathBuf), String> {
    let ids: Vec<u64> = (0..nodes as u64)
        .map(|i| local_server_id(i, nodes as u64))
        .collect();
    let file = data_dir.join("cluster");
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(cluster) = parse_cluster(&text, ids.first().copied().unwrap_or(0)) {
            if cluster.nodes.keys().copied().eq(ids.iter().copied()) {
                return Ok((cluster, file));
            }
        }
    }
    // Free ports: bound to port 0 together, then released for the nodes to take.
    let listeners = (0..nodes)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("cannot find free loopback ports: {err}"))?;
    let mut text = String::from("# ringkv local --mode eventual: one `ID HOST:PORT` a line\n");
    for (id, listener) in ids.iter().zip(&listeners) {
        let addr = listener
            .local_addr()
            .map_err(|err| format!("cannot read a port: {err}"))?;
        text.push_str(&format!("{id} {addr}\n"));
    }
    drop(listeners);
    std::fs::create_dir_all(data_dir)
        .and_then(|()| std::fs::write(&file, &text))
        .map_err(|err| format!("cannot write {}: {err}", file.display()))?;
    let cluster =
        parse_cluster(&text, ids.first().copied().unwrap_or(0)).map_err(|err| err.to_string())?;
    Ok((cluster, file))
}

fn plan(args: &LocalArgs) -> Result<Plan, String> {
    let nodes = usize::from(args.nodes);
    let (cluster, cluster_file) = cluster_of(&args.data_dir, nodes)?;
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

/// Starts every node and waits until each listens; their addresses, in order.
fn start(
    plan: &Plan,
    roles: &mut Roles,
    events: &Receiver<Event>,
) -> Result<Vec<SocketAddr>, Stopped> {
    for (index, config) in plan.configs.iter().enumerate() {
        let listen_text = config
            .cluster
            .nodes
            .get(&config.id)
            .cloned()
            .unwrap_or_default();
        let listen = listen_text.parse::<SocketAddr>().map_err(|err| {
            Stopped::Failed(format!("node {index}: address {listen_text:?}: {err}"))
        })?;
        let options = NodeOptions {
            config: config.clone(),
            data_dir: plan.data_dir.join(format!("node-{index}")),
            listen,
            limits: NetLimits::default(),
            truncate_corrupt_log: false,
        };
        roles
            .spawn(format!("node-{index}"), move |shutdown, events| {
                run_node(options, shutdown, |info| {
                    let _ = events.send(Event::NodeReady {
                        index,
                        listen: info.listen,
                    });
                })
            })
            .map_err(Stopped::Failed)?;
    }
    let mut addrs: Vec<Option<SocketAddr>> = vec![None; plan.configs.len()];
    let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS);
    while addrs.iter().any(Option::is_none) {
        let wait = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(wait) {
            Ok(Event::NodeReady { index, listen }) => {
                if let Some(slot) = addrs.get_mut(index) {
                    *slot = Some(listen);
                }
            }
            Ok(other) => handle_other(other, false)?,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Stopped::Failed("the nodes did not start in time".into()))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Stopped::Failed("the nodes' threads are gone".into()))
            }
        }
    }
    Ok(addrs.into_iter().flatten().collect())
}

fn print_cluster(plan: &Plan, addrs: &[SocketAddr]) {
    let Some(first) = plan.configs.first() else {
        return;
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
    out::line_or_warn(&text);
}
