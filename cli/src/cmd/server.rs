//! `ringkv server`: one KV server in this process until SIGINT/SIGTERM.

use ringkv_core::replica::ReplicaConfig;
use ringkv_net::{run_server, NetLimits, ServerOptions};

use crate::addr::resolve_listen;
use crate::args::ServerArgs;
use crate::exit::Exit;
use crate::out;

/// Runs the server; prints `listen ADDR` and `id ID` once it listens.
pub fn run(args: &ServerArgs) -> Exit {
    super::run_role(options(args), |options, shutdown| {
        run_server(options, shutdown, |info| {
            out::line_or_warn(&format!("listen {}\nid {}", info.listen, info.id));
        })
    })
}

/// The server's options from the flags, checked before anything is opened.
fn options(args: &ServerArgs) -> Result<ServerOptions, String> {
    if args.max_frame_bytes == 0 {
        return Err("--max-frame-bytes must be at least 1".into());
    }
    // Only the form is checked: the coordinator's name may resolve later, and the
    // server keeps trying to register until it does.
    let port = args
        .coordinator
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    if !matches!(port, Some((host, Ok(_))) if !host.trim().is_empty()) {
        return Err(format!(
            "--coordinator {:?} is not HOST:PORT",
            args.coordinator
        ));
    }
    Ok(ServerOptions {
        id: args.id,
        coordinator: args.coordinator.clone(),
        data_dir: args.data_dir.clone(),
        listen: resolve_listen("--listen", &args.listen)?,
        advertise_host: args.advertise_host.clone(),
        replica: ReplicaConfig::default(),
        truncate_corrupt_log: args.truncate_corrupt_log,
        segment_bytes: args.segment_bytes,
        limits: NetLimits {
            max_frame_bytes: args.max_frame_bytes,
            held_requests: super::coordinator::held_request_budget(args.max_held_request_bytes)?,
            ..NetLimits::default()
        },
    })
}
