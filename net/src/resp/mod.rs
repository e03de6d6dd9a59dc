//! The RESP2 port: Redis's wire protocol on the coordinator and on the nodes of the
//! peer-to-peer modes (module `node`), so that redis-cli, redis-benchmark and Redis client
//! libraries work against ringkv.
//!
//! The port only translates. A data command becomes the client requests a JSON line would
//! (GET and EXISTS and MGET `getreq`, SET `putreq`, DEL `delreq`, INFO `statusreq`), goes
//! through the same program-order sequencer and into the same core inputs, and its answer
//! is written back as RESP. Limits and bad input get the JSON port's answers, as RESP
//! errors whose prefix is the protocol's code upper-cased (`-VALUE_TOO_LARGE ...`).

mod admin;
mod command;
mod node;
mod parse;
mod reply;

pub use command::MAX_KEYS_PER_COMMAND;
pub use node::RESP_CONSISTENCY;
pub(crate) use node::{node_spec, RespAnswer, RespRequest};
pub use parse::{split_inline, RespEvent, RespParser};

use std::net::SocketAddr;

use mio::Registry;
use ringkv_core::proto::{ClientRequest, ClientResponse, RequestId};

use crate::error::NetError;
use crate::inbound::{FrameEvent, Framer, Join, Port, PortSpec};
use crate::limits::NetLimits;
use crate::tokens::Kind;

/// Where a RESP2 port listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespListen {
    /// The address asked for.
    pub addr: SocketAddr,
    /// When `addr` is taken, take a free port on the same IP instead of failing:
    /// `ringkv local` asks for Redis's own port, which a Redis on the machine (or
    /// another `ringkv local` starting at the same moment) may hold.
    pub or_free_port: bool,
}

impl RespListen {
    /// Exactly `addr`: binding fails if it is taken.
    pub fn exactly(addr: SocketAddr) -> Self {
        Self {
            addr,
            or_free_port: false,
        }
    }

    /// `addr`, or a free port on its IP if that one is taken.
    pub fn preferring(addr: SocketAddr) -> Self {
        Self {
            addr,
            or_free_port: true,
        }
    }
}

/// Binds the RESP2 port where `listen` says; the fallback is decided by the bind itself,
/// so that no other process can take the port between a check and the bind.
pub(crate) fn bind_port<R, F: Framer>(
    listen: RespListen,
    registry: &Registry,
    spec: impl Fn() -> PortSpec<R, F>,
    limits: &NetLimits,
) -> Result<Port<R, F>, NetError> {
    let bind = |addr| Port::bind(addr, Kind::PortC, registry, spec(), limits.clone());
    match bind(listen.addr) {
        Err(err) if listen.or_free_port && err.is_addr_in_use() => {
            tracing::info!(wanted = %listen.addr, "RESP port taken; using a free one");
            bind(SocketAddr::new(listen.addr.ip(), 0))
        }
        bound => bound,
    }
}

/// The first reply handle of the RESP port: above every handle the JSON client port will
/// ever use (2^62 requests), so that the coordinator's answers find their port.
pub(crate) const FIRST_HANDLE: u64 = 1 << 62;

impl Framer for RespParser {
    type Frame = Vec<Vec<u8>>;

    fn new(max_frame_bytes: usize) -> Self {
        RespParser::new(max_frame_bytes)
    }

    fn push(&mut self, bytes: &[u8]) {
        RespParser::push(self, bytes);
    }

    fn next_event(&mut self) -> Option<FrameEvent<Vec<Vec<u8>>>> {
        RespParser::next_event(self).map(frame_event)
    }

    fn finish(&mut self) -> Option<FrameEvent<Vec<Vec<u8>>>> {
        RespParser::finish(self).map(frame_event)
    }

    fn buffered_bytes(&self) -> usize {
        RespParser::buffered_bytes(self)
    }

    fn join(join: Join, parts: Vec<Vec<u8>>, out: &mut Vec<u8>) {
        reply::join(join, parts, out);
    }

    fn frame_bytes(args: &Vec<Vec<u8>>) -> usize {
        args.iter().map(Vec::len).sum()
    }

    fn requests_in(args: &Vec<Vec<u8>>) -> usize {
        // A command on keys becomes one request per key (its arguments but the name).
        args.len().saturating_sub(1).clamp(1, MAX_KEYS_PER_COMMAND)
    }
}

fn frame_event(event: RespEvent) -> FrameEvent<Vec<Vec<u8>>> {
    match event {
        RespEvent::Command(args) => FrameEvent::Frame(args),
        RespEvent::TooLarge => FrameEvent::TooLarge,
        RespEvent::Invalid(reason) => FrameEvent::Invalid(reason),
    }
}

/// How the RESP port frames, decodes and answers.
pub(crate) fn spec() -> PortSpec<ClientRequest, RespParser> {
    PortSpec {
        name: "resp",
        decode: command::decode,
        error_line: reply::code_error,
        protocol_error: |reason| reply::redis_error(&format!("ERR Protocol error: {reason}")),
        idle_timeout: true,
        access: ClientRequest::access,
        first_handle: FIRST_HANDLE,
        budgeted: |_| true,
    }
}

/// The RESP encoder in the shape [`crate::inbound::Port::reply_into`] takes.
pub(crate) fn answer_encoder(
    msg: &ClientResponse,
) -> impl FnOnce(Option<&RequestId>, u8, &mut Vec<u8>) + '_ {
    move |_, tag, out| reply::encode_into(reply::Shape::from_tag(tag), msg, out)
}

#[cfg(test)]
mod tests;
