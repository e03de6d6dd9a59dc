//! The roles of a local cluster, each on its own thread, reporting to one channel so that
//! the main thread waits for "ready", "failed" and "signal" in one place.

use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use ringkv_net::{CoordinatorAddrs, NetError, Shutdown};

/// What the roles (and the signal thread) tell the main thread.
#[derive(Debug)]
pub enum Event {
    /// The coordinator listens on these addresses.
    CoordinatorReady(CoordinatorAddrs),
    /// Server `index` listens.
    ServerReady {
        /// Its position among the local servers.
        index: usize,
        /// Its ring ID.
        id: u64,
        /// Where it listens.
        listen: SocketAddr,
        /// Keys found in its log.
        keys: usize,
    },
    /// Eventual-mode node `index` listens.
    NodeReady {
        /// Its position among the local nodes.
        index: usize,
        /// Where it listens.
        listen: SocketAddr,
        /// Where it speaks RESP2, if it does.
        resp: Option<SocketAddr>,
    },
    /// A role's thread ended, with why.
    Ended {
        /// The role's name (`coordinator`, `server-1`).
        role: String,
        /// How its loop ended.
        result: Result<(), NetError>,
    },
    /// SIGINT or SIGTERM arrived; the shutdown is already triggered.
    Signal,
}

/// The running roles, stopped together through one [`Shutdown`].
pub struct Roles {
    shutdown: Shutdown,
    events: Sender<Event>,
    threads: Vec<(String, JoinHandle<()>)>,
}

impl Roles {
    /// No roles yet; they will report on `events` and stop with `shutdown`.
    pub fn new(shutdown: Shutdown, events: Sender<Event>) -> Self {
        Self {
            shutdown,
            events,
            threads: Vec::new(),
        }
    }

    /// Runs `body` on a thread named `role`; when it returns, an [`Event::Ended`] is sent.
    /// `body` gets the shutdown to run under and a sender for its ready event.
    pub fn spawn(
        &mut self,
        role: String,
        body: impl FnOnce(Shutdown, &Sender<Event>) -> Result<(), NetError> + Send + 'static,
    ) -> Result<(), String> {
        let shutdown = self.shutdown.clone();
        let events = self.events.clone();
        let name = role.clone();
        let thread = std::thread::Builder::new()
            .name(role.clone())
            .spawn(move || {
                let result = body(shutdown, &events);
                // The receiver lives as long as the main thread waits; nothing to do if not.
                let _ = events.send(Event::Ended { role: name, result });
            })
            .map_err(|err| format!("cannot start a thread for {role}: {err}"))?;
        self.threads.push((role, thread));
        Ok(())
    }

    /// Stops every role, waits for their threads, and returns what went wrong (role
    /// errors still queued on `events`, and panics), one line each.
    pub fn stop(self, events: &Receiver<Event>) -> Vec<String> {
        self.shutdown.trigger();
        let mut problems = Vec::new();
        for (role, thread) in self.threads {
            if thread.join().is_err() {
                problems.push(format!("{role}: its thread panicked"));
            }
        }
        while let Ok(event) = events.try_recv() {
            if let Event::Ended {
                role,
                result: Err(err),
            } = event
            {
                problems.push(describe_failure(&role, &err));
            }
        }
        problems
    }
}

/// One line for a role that failed, with a hint where the cause is a local cluster's own.
pub fn describe_failure(role: &str, err: &NetError) -> String {
    match err {
        NetError::IdMismatch { stored, given } => format!(
            "{role}: its data directory belongs to server ID {stored}, but this --servers gives \
             it ID {given}: run `ringkv local` with the --servers the data directory was made \
             with, or use another --data-dir"
        ),
        NetError::Io { .. } if role == "coordinator" => format!(
            "{role}: {err} (is another ringkv running? pick other ports with --client-addr and \
             --server-addr; port 0 picks a free one)"
        ),
        _ => format!("{role}: {err}"),
    }
}

/// The ring ID of local server `index` of `servers`: evenly spaced, so that each server
/// is the primary of an equal share of the keys, and fixed, so that a restart on the same
/// data directory brings the same servers back.
pub fn local_server_id(index: u64, servers: u64) -> u64 {
    index.saturating_mul(u64::MAX / servers.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ids_are_evenly_spaced_and_distinct() {
        let ids: Vec<u64> = (0..3).map(|i| local_server_id(i, 3)).collect();
        assert_eq!(ids, vec![0, u64::MAX / 3, 2 * (u64::MAX / 3)]);
        let many: std::collections::BTreeSet<u64> =
            (0..64).map(|i| local_server_id(i, 64)).collect();
        assert_eq!(many.len(), 64);
    }
}
