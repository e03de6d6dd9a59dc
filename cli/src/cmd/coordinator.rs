//! `ringkv coordinator`: one coordinator in this process until SIGINT/SIGTERM.

use ringkv_core::cache::CacheConfig;
use ringkv_core::coordinator::CoordinatorConfig;
use ringkv_net::resp::RespListen;
use ringkv_net::{run_coordinator, CoordinatorOptions, HeldRequestBudget, NetLimits};

use crate::addr::resolve_listen;
use crate::args::CoordinatorArgs;
use crate::exit::Exit;
use crate::out;

/// Runs the coordinator; prints `client ADDR`, `server ADDR` (and `resp ADDR`) once its
/// ports listen.
pub fn run(args: &CoordinatorArgs) -> Exit {
    super::run_role(options(args), |options, shutdown| {
        run_coordinator(options, shutdown, |addrs| {
            let mut lines = format!("client {}\nserver {}", addrs.client, addrs.server);
            if let Some(resp) = addrs.resp {
                lines.push_str(&format!("\nresp {resp}"));
            }
            out::line_or_warn(&lines);
        })
    })
}

/// The coordinator's options from the flags, checked before anything listens.
fn options(args: &CoordinatorArgs) -> Result<CoordinatorOptions, String> {
    let expected_servers = usize::try_from(args.servers)
        .map_err(|_| format!("--servers {} is too large", args.servers))?;
    let mut config = CoordinatorConfig::new(expected_servers);
    config.cache = CacheConfig {
        sets: args.cache_sets,
        ways: args.cache_ways,
    };
    config.timeout_ms = args.timeout_ms;
    config.validate().map_err(|err| err.to_string())?;
    let limits = NetLimits {
        max_frame_bytes: args.max_frame_bytes,
        max_connections_per_port: usize::try_from(args.max_connections)
            .map_err(|_| "--max-connections is too large for this machine".to_string())?,
        held_requests: held_request_budget(args.max_held_request_bytes)?,
        ..NetLimits::default()
    };
    if limits.max_frame_bytes == 0 {
        return Err("--max-frame-bytes must be at least 1".into());
    }
    Ok(CoordinatorOptions {
        client_addr: resolve_listen("--client-addr", &args.client_addr)?,
        server_addr: resolve_listen("--server-addr", &args.server_addr)?,
        resp_addr: args
            .resp_addr
            .as_deref()
            .map(|addr| resolve_listen("--resp-addr", addr).map(RespListen::exactly))
            .transpose()?,
        config,
        data_dir: args.data_dir.clone(),
        truncate_corrupt_log: args.truncate_corrupt_log,
        log_compact_bytes: args.log_compact_bytes,
        limits,
    })
}

/// The process's budget of held request bytes (`--max-held-request-bytes`): this
/// process runs one role, so the budget is that role's.
pub(super) fn held_request_budget(max_bytes: u64) -> Result<HeldRequestBudget, String> {
    usize::try_from(max_bytes)
        .map(HeldRequestBudget::new)
        .map_err(|_| "--max-held-request-bytes is too large for this machine".to_string())
}
