//! What `ringkv local` does alike for every cluster of nodes (eventual and peer mode):
//! a cluster file of free loopback ports kept under the data directory, one node a
//! thread, the wait until each listens, and serving until a signal or the console ends.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ringkv_core::eventual::{parse_cluster, Cluster};
use ringkv_net::resp::RespListen;
use ringkv_net::{NetError, Shutdown};

use super::roles::{local_server_id, Event, Roles};
use super::{handle_other, resp_line, serve, Stopped};
use crate::addr::resolve_listen;
use crate::args::LocalArgs;
use crate::exit::Exit;
use crate::out;
use crate::signals;

/// How long the nodes get to listen.
const START_WAIT_MS: u64 = 30_000;

/// A cluster of nodes to run: how to start them and how to present them.
pub(super) trait NodesPlan {
    /// Starts every node on a thread of `roles`, each sending [`Event::NodeReady`] once
    /// it listens, the first with a RESP2 port on `resp`; how many were started.
    fn spawn(&self, roles: &mut Roles, resp: RespListen) -> Result<usize, Stopped>;
    /// What to print once every node listens at `addrs` (in node order).
    fn describe(&self, addrs: &[SocketAddr]) -> String;
}

/// Where node `index` listens: its own address in the cluster file.
pub(super) fn listen_of(index: usize, own: &str) -> Result<SocketAddr, Stopped> {
    own.parse::<SocketAddr>()
        .map_err(|err| Stopped::Failed(format!("node {index}: address {own:?}: {err}")))
}

/// Starts node `index` on a thread of `roles`. `run` runs the node's loop until the
/// shutdown, and calls the callback it is given with where the node listens (and its
/// RESP2 port) once it does; that becomes [`Event::NodeReady`].
pub(super) fn spawn_node<R>(roles: &mut Roles, index: usize, run: R) -> Result<(), Stopped>
where
    R: FnOnce(Shutdown, &dyn Fn(SocketAddr, Option<SocketAddr>)) -> Result<(), NetError>
        + Send
        + 'static,
{
    roles
        .spawn(format!("node-{index}"), move |shutdown, events| {
            let ready = |listen, resp| {
                let _ = events.send(Event::NodeReady {
                    index,
                    listen,
                    resp,
                });
            };
            run(shutdown, &ready)
        })
        .map_err(Stopped::Failed)
}

/// Runs the cluster of `plan` until a signal, or until the console is left.
pub(super) fn run_nodes<P: NodesPlan>(args: &LocalArgs, plan: Result<P, String>) -> Exit {
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
    let resp_asked = resolve_listen("--resp-addr", &args.resp_addr);
    let outcome = plan
        .and_then(|plan| resp_asked.map(|asked| (plan, asked)))
        .map_err(Stopped::Failed)
        .and_then(|(plan, asked)| {
            let count = plan.spawn(&mut roles, RespListen::preferring(asked))?;
            let (addrs, resp) = wait_listening(count, &events)?;
            Ok((plan, addrs, resp_line(resp, asked)))
        })
        .map(|(plan, addrs, resp)| {
            out::line_or_warn(&format!("{}\n{resp}", plan.describe(&addrs)));
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

/// The cluster file of an earlier run with as many nodes (so that the nodes keep their
/// addresses and data), or a new one on free loopback ports; `mode` names the cluster in
/// the file's first line.
pub(super) fn cluster_of(
    data_dir: &Path,
    nodes: usize,
    mode: &str,
) -> Result<(Cluster, PathBuf), String> {
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
    let mut text = format!("# ringkv local --mode {mode}: one `ID HOST:PORT` a line\n");
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

/// Waits until `count` nodes said where they listen; their addresses, in order, and the
/// RESP2 port one of them opened.
pub(super) fn wait_listening(
    count: usize,
    events: &Receiver<Event>,
) -> Result<(Vec<SocketAddr>, Option<SocketAddr>), Stopped> {
    let mut addrs: Vec<Option<SocketAddr>> = vec![None; count];
    let mut resp_bound = None;
    let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS);
    while addrs.iter().any(Option::is_none) {
        let wait = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(wait) {
            Ok(Event::NodeReady {
                index,
                listen,
                resp,
            }) => {
                if let Some(slot) = addrs.get_mut(index) {
                    *slot = Some(listen);
                }
                resp_bound = resp_bound.or(resp);
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
    Ok((addrs.into_iter().flatten().collect(), resp_bound))
}
