//! The shells' limits per connection and per port.

use ringkv_core::limits::DEFAULT_MAX_FRAME_BYTES;

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
        Ok(())
    }
}
