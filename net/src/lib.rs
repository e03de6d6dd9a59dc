//! ringkv's shells: mio event loops that run the sans-IO core on real sockets and files.
//!
//! The shells hold no protocol logic. They frame bytes into lines, decode them, hand the
//! messages to the core, write what the core polls out, perform its `Persist` outputs with
//! write + fdatasync (one fsync per loop iteration: group commit), and sleep until the
//! core's `poll_timeout`. A peer can never crash or hang a process: bad bytes get an error
//! answer or a closed connection, and every queue has a limit with a defined answer.
//!
//! Three roles run here, one event loop each, on the calling thread:
//! [`run_coordinator`] and [`run_server`] (strong mode), [`run_node`] (an
//! eventual-mode node) and [`run_peer_node`] (a peer two-phase-commit node; both node
//! kinds share one loop). [`Shutdown`] stops them from another thread.
//! The coordinator may also speak RESP2 on a port of its own ([`resp`]).

#![warn(missing_docs)]

mod clock;
mod compaction;
mod coordinator;
mod datadir;
mod error;
mod event_loop;
mod inbound;
mod limits;
mod log_writes;
mod logfile;
mod node;
mod outbound;
pub mod resp;
mod seed;
mod segments;
mod server;
mod shutdown;
mod sync_thread;
mod tokens;

pub use coordinator::{
    run_coordinator, CoordinatorAddrs, CoordinatorOptions, DEFAULT_LOG_COMPACT_BYTES,
};
pub use error::NetError;
pub use limits::{HeldRequestBudget, NetLimits, DEFAULT_MAX_HELD_REQUEST_BYTES};
pub use node::{run_node, run_peer_node, NodeInfo, NodeOptions, PeerNodeInfo, PeerNodeOptions};
pub use segments::DEFAULT_SEGMENT_BYTES;
pub use server::{run_server, ServerInfo, ServerOptions};
pub use shutdown::Shutdown;
