//! SIGINT and SIGTERM: a clean stop on the first, an immediate exit on the second.
//!
//! Why signal-hook and not ctrlc: ctrlc handles SIGTERM only behind a feature and keeps
//! one global handler; signal-hook's iterator delivers signals to an ordinary thread
//! (through a self-pipe), so the stop work (waking event loops, taking locks) never runs
//! inside a signal handler, and it is small and well kept.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::exit::Exit;

/// How long a console may take to notice a stop before the process exits without it.
const CONSOLE_GRACE_MS: u64 = 5000;

/// Whether a stop signal arrived; cheap to clone and to poll from loops that cannot be
/// woken any other way.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Whether SIGINT or SIGTERM arrived.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Calls `on_stop` (on a dedicated thread) at the first SIGINT or SIGTERM; a second one
/// exits the process at once with [`Exit::Forced`], for when a clean stop hangs.
///
/// `wake_console`: the console's line editor owns the terminal in raw mode and ignores
/// signals other than its own SIGINT, so after a SIGTERM the thread raises a SIGINT
/// that makes the editor return (it is ignored here if the editor was not reading).
pub fn on_stop(on_stop: impl Fn() + Send + 'static, wake_console: bool) -> io::Result<StopFlag> {
    let flag = StopFlag::default();
    let received = flag.clone();
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let own_sigint = AtomicBool::new(false);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGINT && own_sigint.swap(false, Ordering::SeqCst) {
                    continue;
                }
                if received.0.swap(true, Ordering::SeqCst) {
                    eprintln!("second signal: quitting without a clean stop");
                    std::process::exit(i32::from(Exit::Forced.code()));
                }
                tracing::info!(signal, "stop signal received; stopping");
                on_stop();
                if wake_console {
                    if signal != SIGINT {
                        own_sigint.store(true, Ordering::SeqCst);
                        if let Err(err) = signal_hook::low_level::raise(SIGINT) {
                            tracing::warn!(%err, "could not wake the console");
                        }
                    }
                    exit_if_console_hangs();
                }
            }
        })?;
    Ok(flag)
}

/// A line editor that cannot be woken (a terminal it does not drive in raw mode, such as
/// TERM=dumb) stays blocked in `read` until Enter. The roles are already stopping, and
/// everything they acknowledged is durable, so after a grace period the process exits
/// without waiting for the console. A watchdog thread, so that the signal thread stays
/// free for a second signal.
fn exit_if_console_hangs() {
    let spawned = std::thread::Builder::new()
        .name("console-watchdog".into())
        .spawn(|| {
            std::thread::sleep(Duration::from_millis(CONSOLE_GRACE_MS));
            eprintln!("the console did not stop; exiting");
            std::process::exit(i32::from(Exit::Ok.code()));
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "could not start the console watchdog");
    }
}
