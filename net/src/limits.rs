//! The shells' limits per connection, per port, and per process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use ringkv_core::limits::DEFAULT_MAX_FRAME_BYTES;

/// The default of [`HeldRequestBudget`]: 256 MiB of requests read and not yet answered.
pub const DEFAULT_MAX_HELD_REQUEST_BYTES: usize = 256 * 1024 * 1024;

/// Per-connection and per-port limits, every one with a defined answer, so that no peer
/// can make a process grow without bound or hold its resources forever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetLimits {
    /// Connections served at once on one port. A new connection beyond it is accepted,
    /// answered one `overloaded` error line, and closed.
    pub max_connections_per_port: usize,
    /// The longest line, not counting its line end. A longer one gets one
    /// `frame_too_large` answer, after the answers to the requests before it, then the
    /// connection closes.
    pub max_frame_bytes: usize,
    /// Requests read but not yet answered on one connection. At the limit the shell stops
    /// reading that socket until answers drain (backpressure through TCP).
    pub max_in_flight_per_connection: usize,
    /// Bytes of answers not yet taken by the peer. Over it the shell stops reading from
    /// that peer; if it stays over for `idle_timeout_ms`, the connection is closed.
    pub max_outbound_bytes_per_connection: usize,
    /// A client connection with nothing in flight and no bytes either way for this long
    /// is closed.
    pub idle_timeout_ms: u64,
    /// A line started but not finished for this long (slow-loris) closes the connection.
    pub partial_line_timeout_ms: u64,
    /// Bytes of requests read and not yet answered, over every connection of every port
    /// that shares it (by default the whole process). The per-connection limits alone
    /// allowed a thousand connections to hold gigabytes of pipelined requests.
    pub held_requests: HeldRequestBudget,
}

impl Default for NetLimits {
    fn default() -> Self {
        Self {
            max_connections_per_port: 1024,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_in_flight_per_connection: 256,
            max_outbound_bytes_per_connection: 16 * 1024 * 1024,
            idle_timeout_ms: 300_000,
            partial_line_timeout_ms: 30_000,
            held_requests: HeldRequestBudget::process_wide(),
        }
    }
}

impl NetLimits {
    /// Checks that every limit lets a connection make progress.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_connections_per_port == 0 {
            return Err("max_connections_per_port must be at least 1".into());
        }
        if self.max_frame_bytes == 0 {
            return Err("max_frame_bytes must be at least 1".into());
        }
        if self.max_in_flight_per_connection == 0 {
            return Err("max_in_flight_per_connection must be at least 1".into());
        }
        if self.max_outbound_bytes_per_connection == 0 {
            return Err("max_outbound_bytes_per_connection must be at least 1".into());
        }
        if self.idle_timeout_ms == 0 || self.partial_line_timeout_ms == 0 {
            return Err("timeouts must be at least 1 ms".into());
        }
        if self.held_requests.max_bytes() == 0 {
            return Err("the held request bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// A budget of bytes of requests read from clients and not yet answered, shared by every
/// connection that holds a clone of it.
///
/// While it is spent, connections are not read (TCP pushes back on their senders) until
/// answers release bytes; those waiting are then read in the order they began to wait,
/// so that each gets its turn. A connection that carries what keeps the store moving
/// (a node's messages, the coordinator's commits and aborts to a server) is never held
/// back by it: see the ports' `budgeted`. The check is made before each connection's
/// turn, so the budget may be passed by what one turn of one connection reads.
#[derive(Clone)]
pub struct HeldRequestBudget {
    inner: Arc<Held>,
}

struct Held {
    max_bytes: usize,
    bytes: AtomicUsize,
}

impl HeldRequestBudget {
    /// A budget of its own, of `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Held {
                max_bytes,
                bytes: AtomicUsize::new(0),
            }),
        }
    }

    /// The process's budget of [`DEFAULT_MAX_HELD_REQUEST_BYTES`], shared by every role
    /// of the process that was not given one of its own (`ringkv local` runs several).
    pub fn process_wide() -> Self {
        static PROCESS: OnceLock<HeldRequestBudget> = OnceLock::new();
        PROCESS
            .get_or_init(|| HeldRequestBudget::new(DEFAULT_MAX_HELD_REQUEST_BYTES))
            .clone()
    }

    /// The budget's size.
    pub fn max_bytes(&self) -> usize {
        self.inner.max_bytes
    }

    /// The bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Whether connections must wait before being read.
    pub(crate) fn is_spent(&self) -> bool {
        self.held_bytes() >= self.inner.max_bytes
    }

    /// Counts `bytes` of a request read.
    pub(crate) fn charge(&self, bytes: usize) {
        self.inner.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back `bytes` charged before.
    pub(crate) fn release(&self, bytes: usize) {
        let update = self
            .inner
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(bytes))
            });
        let before = match update {
            Ok(held) | Err(held) => held,
        };
        assert!(before >= bytes, "released {bytes} held bytes of {before}");
    }
}

impl std::fmt::Debug for HeldRequestBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldRequestBudget")
            .field("max_bytes", &self.max_bytes())
            .field("held_bytes", &self.held_bytes())
            .finish()
    }
}

impl PartialEq for HeldRequestBudget {
    /// The same budget, not two of the same size: limits are equal only if they share it.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for HeldRequestBudget {}
