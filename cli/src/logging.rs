//! Logging setup: quiet by default (warnings only) so that the lines scripts read from
//! stdout and the answers people read are not buried; `-v` or `RUST_LOG` for more.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to stderr. `verbosity` counts `-v` flags:
/// 0 warn, 1 info, 2 debug, 3+ trace. A valid `RUST_LOG` overrides it.
pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|err| {
            eprintln!("warning: ignoring RUST_LOG={spec:?}: {err}");
            EnvFilter::new(level)
        }),
        _ => EnvFilter::new(level),
    };
    // A second init (tests calling into the library) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only where a person reads them, never into log files.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
