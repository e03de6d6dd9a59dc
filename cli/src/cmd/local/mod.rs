//! `ringkv local`: a whole cluster in this process, for trying ringkv out and for
//! development: a strong-mode coordinator and N KV servers, each on its own thread (here),
//! or eventual-mode or peer-mode nodes ([`eventual`], [`peer`]).

mod eventual;
mod nodes;
mod peer;
mod roles;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ringkv_core::coordinator::CoordinatorConfig;
use ringkv_core::proto::{ClientRequest, ClientResponse, ServerStatus};
use ringkv_core::replica::ReplicaConfig;
use ringkv_net::resp::RespListen;
use ringkv_net::{
    run_coordinator, run_server, CoordinatorAddrs, CoordinatorOptions, NetLimits, ServerOptions,
    Shutdown,
};

use crate::addr::{dialable, resolve_listen};
use crate::args::{LocalArgs, LocalMode};
use crate::client::{Client, ClientOptions};
use crate::cmd::console;
use crate::exit::Exit;
use crate::signals::{self, StopFlag};
use crate::{out, ring_table};

pub use roles::local_server_id;
use roles::{describe_failure, Event, Roles};

/// How long the servers get to start and register before the ring is printed anyway.
const RING_WAIT_MS: u64 = 30_000;
/// How often the coordinator is asked whether the ring is complete.
const RING_POLL_MS: u64 = 100;

/// Runs the cluster until a signal, or until the console is left.
pub fn run(args: &LocalArgs) -> Exit {
    match args.mode {
        LocalMode::Strong => {}
        LocalMode::Eventual => return eventual::run(args),
        LocalMode::Peer => return peer::run(args),
    }
    let (client_addr, server_addr, resp_addr) = match (
        resolve_listen("--client-addr", &args.client_addr),
        resolve_listen("--server-addr", &args.server_addr),
        resolve_listen("--resp-addr", &args.resp_addr),
    ) {
        (Ok(client), Ok(server), Ok(resp)) => (client, server, resp),
        (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => {
            eprintln!("error: {why}");
            return Exit::Failure;
        }
    };
    // The console needs a terminal both ways: with stdout redirected (`| tee`) the
    // editor could not be woken by a signal, and nobody would see its prompt.
    let console =
        !args.no_console && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (events_tx, events) = mpsc::channel();
    let shutdown = Shutdown::new();
    let on_signal = {
        let shutdown = shutdown.clone();
        let events_tx = events_tx.clone();
        move || {
            // The signal goes first: the roles' clean ends must not look unexpected.
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
    let plan = Plan {
        servers: usize::from(args.servers),
        data_dir: args.data_dir.clone(),
        client_addr,
        server_addr,
        resp_addr,
        timeout_ms: args.timeout_ms,
    };
    let outcome = start(&plan, &mut roles, &events).map(|cluster| {
        print_cluster(&plan, &cluster);
        serve(&cluster.client_dial(), &events, &stop, console)
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

/// What the flags ask for.
struct Plan {
    servers: usize,
    data_dir: PathBuf,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    /// The RESP port asked for (a free one is opened if it is taken).
    resp_addr: SocketAddr,
    timeout_ms: u64,
}

/// How Redis clients reach the RESP2 port `bound` (asked for at `asked`; a free port
/// when that one was taken, by a Redis usually); empty without one.
pub(super) fn resp_line(bound: Option<SocketAddr>, asked: SocketAddr) -> String {
    let Some(resp) = bound.map(dialable) else {
        return String::new();
    };
    let note = if asked.port() != 0 && resp.port() != asked.port() {
        format!(" (port {} was taken)", asked.port())
    } else {
        String::new()
    };
    format!(
        "Redis clients (RESP2) use {resp}{note}: redis-cli -h {} -p {}\n",
        resp.ip(),
        resp.port()
    )
}

/// A started cluster, as it reported itself.
struct Cluster {
    coordinator: CoordinatorAddrs,
    /// Per server index: ID, listen address, keys recovered.
    servers: BTreeMap<usize, (u64, SocketAddr, usize)>,
    ring: Option<(Vec<ServerStatus>, u64)>,
}

impl Cluster {
    /// Where a client on this machine reaches the coordinator.
    fn client_dial(&self) -> String {
        dialable(self.coordinator.client).to_string()
    }
}

/// Why the cluster is not serving.
enum Stopped {
    /// SIGINT or SIGTERM: a clean stop.
    BySignal,
    /// A role failed; the line says which and why.
    Failed(String),
}

/// Starts the coordinator, then the servers, and waits until the ring is complete.
fn start(plan: &Plan, roles: &mut Roles, events: &Receiver<Event>) -> Result<Cluster, Stopped> {
    let mut options = CoordinatorOptions {
        client_addr: plan.client_addr,
        server_addr: plan.server_addr,
        resp_addr: Some(RespListen::preferring(plan.resp_addr)),
        config: CoordinatorConfig::new(plan.servers),
        data_dir: Some(plan.data_dir.join("coordinator")),
        truncate_corrupt_log: false,
        log_compact_bytes: ringkv_net::DEFAULT_LOG_COMPACT_BYTES,
        limits: NetLimits::default(),
    };
    options.config.timeout_ms = plan.timeout_ms;
    roles
        .spawn("coordinator".into(), move |shutdown, events| {
            run_coordinator(options, shutdown, |addrs| {
                let _ = events.send(Event::CoordinatorReady(addrs));
            })
        })
        .map_err(Stopped::Failed)?;
    let coordinator = loop {
        match events.recv() {
            Ok(Event::CoordinatorReady(addrs)) => break addrs,
            Ok(other) => handle_other(other, false)?,
            Err(_) => return Err(Stopped::Failed("the coordinator vanished".into())),
        }
    };
    let register_at = dialable(coordinator.server).to_string();
    for index in 0..plan.servers {
        spawn_server(plan, roles, index, &register_at)?;
    }
    let mut cluster = Cluster {
        coordinator,
        servers: BTreeMap::new(),
        ring: None,
    };
    wait_for_ring(plan, &mut cluster, events)?;
    Ok(cluster)
}

fn spawn_server(
    plan: &Plan,
    roles: &mut Roles,
    index: usize,
    register_at: &str,
) -> Result<(), Stopped> {
    let options = ServerOptions {
        id: Some(local_server_id(index as u64, plan.servers as u64)),
        coordinator: register_at.to_owned(),
        data_dir: server_dir(&plan.data_dir, index),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise_host: None,
        replica: ReplicaConfig::default(),
        limits: NetLimits::default(),
        truncate_corrupt_log: false,
        segment_bytes: ringkv_net::DEFAULT_SEGMENT_BYTES,
    };
    roles
        .spawn(format!("server-{index}"), move |shutdown, events| {
            run_server(options, shutdown, |info| {
                let _ = events.send(Event::ServerReady {
                    index,
                    id: info.id,
                    listen: info.listen,
                    keys: info.recovery.committed_keys,
                });
            })
        })
        .map_err(Stopped::Failed)
}

fn server_dir(data_dir: &Path, index: usize) -> PathBuf {
    data_dir.join(format!("server-{index}"))
}

/// An event that is not the one being waited for: a failure or a signal ends the wait.
/// `stopping`: a stop was asked for, so roles that end cleanly are expected to.
fn handle_other(event: Event, stopping: bool) -> Result<(), Stopped> {
    match event {
        Event::Signal => Err(Stopped::BySignal),
        Event::Ended {
            role,
            result: Err(err),
        } => Err(Stopped::Failed(describe_failure(&role, &err))),
        Event::Ended {
            role,
            result: Ok(()),
        } if !stopping => Err(Stopped::Failed(format!("{role} stopped unexpectedly"))),
        Event::Ended { .. }
        | Event::CoordinatorReady(_)
        | Event::ServerReady { .. }
        | Event::NodeReady { .. } => Ok(()),
    }
}

/// Waits until every server is up and the coordinator lists all of them; after
/// [`RING_WAIT_MS`] goes on with what the coordinator knows, with a warning.
fn wait_for_ring(
    plan: &Plan,
    cluster: &mut Cluster,
    events: &Receiver<Event>,
) -> Result<(), Stopped> {
    let deadline = Instant::now() + Duration::from_millis(RING_WAIT_MS);
    let options = ClientOptions {
        connect_timeout_ms: 1000,
        io_timeout_ms: 1000,
        ..ClientOptions::default()
    };
    loop {
        if cluster.servers.len() == plan.servers {
            let status = Client::connect_with(&cluster.client_dial(), options.clone())
                .and_then(|mut client| client.call(&ClientRequest::Status));
            match status.map(|answer| answer.response) {
                Ok(ClientResponse::Status { servers, expected }) => {
                    let complete = servers.len() as u64 >= expected;
                    cluster.ring = Some((servers, expected));
                    if complete {
                        return Ok(());
                    }
                }
                Ok(other) => tracing::debug!(?other, "unexpected answer to statusreq"),
                Err(err) => tracing::debug!(%err, "statusreq failed; retrying"),
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!("not every server registered in time; printing the ring as it is");
            return Ok(());
        }
        match events.recv_timeout(Duration::from_millis(RING_POLL_MS)) {
            Ok(Event::ServerReady {
                index,
                id,
                listen,
                keys,
            }) => {
                cluster.servers.insert(index, (id, listen, keys));
            }
            Ok(other) => handle_other(other, false)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Stopped::Failed("the roles vanished".into()))
            }
        }
    }
}

/// Prints the ring and how to reach it.
fn print_cluster(plan: &Plan, cluster: &Cluster) {
    let names: BTreeMap<u64, String> = cluster
        .servers
        .iter()
        .map(|(index, (id, _, keys))| {
            let dir = server_dir(&plan.data_dir, *index);
            let unit = if *keys == 1 { "key" } else { "keys" };
            (
                *id,
                format!("server-{index} ({}, {keys} {unit})", dir.display()),
            )
        })
        .collect();
    let table = match &cluster.ring {
        Some((servers, expected)) => {
            ring_table::render(servers, *expected, &|id| names.get(&id).cloned())
        }
        None => "the coordinator did not answer statusreq\n".into(),
    };
    let client = cluster.client_dial();
    let resp = resp_line(cluster.coordinator.resp, plan.resp_addr);
    out::line_or_warn(&format!(
        "ringkv local: a coordinator and {} KV servers, data in {}\n\n{table}\n\
         clients connect to {client} (servers register at {})\n{resp}\
         try: ringkv console --addr {client}\n     ringkv put KEY VALUE --addr {client}\n",
        plan.servers,
        plan.data_dir.display(),
        dialable(cluster.coordinator.server),
    ));
}

/// Serves until the console is left (if there is one) or until a signal or a failure.
fn serve(console_addr: &str, events: &Receiver<Event>, stop: &StopFlag, console: bool) -> Exit {
    if console {
        let exit = console::run(console_addr, Some(stop));
        if let Some(why) = pending_failure(events, stop.is_set()) {
            eprintln!("error: {why}");
            return Exit::Failure;
        }
        return exit;
    }
    out::line_or_warn("stop with Ctrl-C");
    loop {
        match events.recv() {
            Ok(Event::Signal) => return Exit::Ok,
            Ok(other) => {
                if let Err(Stopped::Failed(why)) = handle_other(other, stop.is_set()) {
                    eprintln!("error: {why}");
                    return Exit::Failure;
                }
            }
            Err(_) => return Exit::Failure,
        }
    }
}

/// A role failure that happened while the console was open.
fn pending_failure(events: &Receiver<Event>, stopping: bool) -> Option<String> {
    while let Ok(event) = events.try_recv() {
        if let Err(Stopped::Failed(why)) = handle_other(event, stopping) {
            return Some(why);
        }
    }
    None
}
