//! A listening port and the connections accepted on it: framing, ordered answers and the
//! per-connection limits. Decoding is the role's: each port is given its decoder.

mod answers;
mod conn;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use ringkv_core::proto::{Envelope, ErrorCode, WireMessage};
use ringkv_core::session::{Access, Sequencer};
use ringkv_core::ReplyTo;

use crate::error::NetError;
use crate::event_loop::Readiness;
use crate::limits::NetLimits;
use crate::tokens::{Kind, TokenSource};

use conn::{Closed, Conn, Input};

/// How often the time limits of a port's connections are checked. A limit thus fires up
/// to this late; in exchange a loop iteration does not visit every connection.
pub(crate) const SWEEP_INTERVAL_MS: u64 = 250;

/// How long to wait before accepting again after `accept` failed (out of file
/// descriptors, usually): pending connections wait in the kernel's backlog meanwhile.
const ACCEPT_RETRY_MS: u64 = 100;

/// Bytes read from a socket at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Decodes one line into a request; on failure, gives the encoded error answer (with the
/// id echoed when the line had a valid one).
pub(crate) type Decoder<R> = fn(&[u8]) -> Result<Envelope<R>, Vec<u8>>;

/// How one port turns lines into requests and errors into answers.
pub(crate) struct PortSpec<R> {
    /// For logs: "client", "register", "participant".
    pub(crate) name: &'static str,
    /// Decodes one line.
    pub(crate) decode: Decoder<R>,
    /// An error answer without id, for `frame_too_large` and `overloaded`.
    pub(crate) error_line: fn(ErrorCode) -> Vec<u8>,
    /// Whether idle connections are closed. Servers keep their registration connection
    /// open on purpose (to notice a coordinator restart), so that port does not.
    pub(crate) idle_timeout: bool,
    /// The key a request touches and how, so that the requests of one connection take
    /// effect in program order ([`Sequencer`]); `None` for ports or requests that need
    /// no ordering.
    pub(crate) access: fn(&R) -> Option<(&str, Access)>,
}

/// A listening port and its connections.
pub(crate) struct Port<R> {
    spec: PortSpec<R>,
    limits: NetLimits,
    listener: TcpListener,
    listener_token: Token,
    tokens: TokenSource,
    conns: BTreeMap<Token, Conn>,
    /// Served connections (refused ones not counted).
    served: usize,
    /// Refused connections still saying `overloaded`; bounded like the served ones.
    refusing: usize,
    /// Which connection each outstanding reply handle belongs to.
    handles: HashMap<u64, Token>,
    /// Per connection with keyed requests under way: what may run and what waits.
    sequencers: BTreeMap<Token, Sequencer<R>>,
    /// Requests a [`Sequencer`] released, to hand to the role in the next turn.
    released: Vec<(ReplyTo, R)>,
    next_handle: u64,
    /// Connections to pump in the next turn.
    ready: BTreeSet<Token>,
    /// Connections with answers to write or limits to recheck.
    touched: BTreeSet<Token>,
    accept_retry_at_ms: Option<u64>,
    next_sweep_ms: u64,
    scratch: Vec<u8>,
}

impl<R> Port<R> {
    /// Binds `addr` and registers the listener.
    pub(crate) fn bind(
        addr: SocketAddr,
        kind: Kind,
        registry: &Registry,
        spec: PortSpec<R>,
        limits: NetLimits,
    ) -> Result<Self, NetError> {
        let mut listener = TcpListener::bind(addr)
            .map_err(|err| NetError::io(format!("binding the {} port {addr}", spec.name), err))?;
        let mut tokens = TokenSource::new(kind);
        let listener_token = tokens.next();
        registry
            .register(&mut listener, listener_token, Interest::READABLE)
            .map_err(|err| NetError::io(format!("registering the {} port", spec.name), err))?;
        Ok(Self {
            spec,
            limits,
            listener,
            listener_token,
            tokens,
            conns: BTreeMap::new(),
            served: 0,
            refusing: 0,
            handles: HashMap::new(),
            sequencers: BTreeMap::new(),
            released: Vec::new(),
            next_handle: 1,
            ready: BTreeSet::new(),
            touched: BTreeSet::new(),
            accept_retry_at_ms: None,
            next_sweep_ms: 0,
            scratch: vec![0; READ_CHUNK_BYTES],
        })
    }

    /// The address actually bound (port 0 resolved).
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.listener.local_addr().map_err(|err| {
            NetError::io(
                format!("reading the {} port's address", self.spec.name),
                err,
            )
        })
    }

    /// Notes an event of this port; the work happens in [`Port::take_requests`] and
    /// [`Port::flush`].
    pub(crate) fn on_event(&mut self, now_ms: u64, registry: &Registry, event: &Readiness) {
        let token = event.token;
        if token == self.listener_token {
            self.accept(now_ms, registry);
            return;
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if event.readable {
            conn.mark_readable();
            self.ready.insert(token);
        }
        if event.writable {
            self.touched.insert(token);
        }
    }

    fn accept(&mut self, now_ms: u64, registry: &Registry) {
        self.accept_retry_at_ms = None;
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::warn!(port = self.spec.name, %err, "accept failed; retrying shortly");
                    self.accept_retry_at_ms = Some(now_ms + ACCEPT_RETRY_MS);
                    return;
                }
            };
            self.admit(now_ms, registry, stream, peer);
        }
    }

    fn admit(&mut self, now_ms: u64, registry: &Registry, mut stream: TcpStream, peer: SocketAddr) {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(port = self.spec.name, %peer, %err, "could not set TCP_NODELAY");
        }
        let max = self.limits.max_connections_per_port;
        let refuse = self.served >= max;
        if refuse && self.refusing >= max {
            // Too many refusals in progress too: say it once without waiting, and go.
            let _ = stream.write(&(self.spec.error_line)(ErrorCode::Overloaded));
            tracing::debug!(port = self.spec.name, %peer, "connection refused at once: overloaded");
            return;
        }
        let token = self.tokens.next();
        if let Err(err) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!(port = self.spec.name, %peer, %err, "could not register a connection");
            return;
        }
        let conn = if refuse {
            self.refusing += 1;
            tracing::debug!(port = self.spec.name, %peer, "connection over the limit: answering overloaded");
            let handle = self.new_handle();
            let answer = (self.spec.error_line)(ErrorCode::Overloaded);
            Conn::refused(stream, peer, now_ms, &self.limits, handle, answer)
        } else {
            self.served += 1;
            tracing::trace!(port = self.spec.name, %peer, "connection accepted");
            self.ready.insert(token);
            Conn::new(stream, peer, now_ms, &self.limits)
        };
        self.conns.insert(token, conn);
        self.touched.insert(token);
    }

    fn new_handle(&mut self) -> u64 {
        let handle = self.next_handle;
        self.next_handle += 1;
        handle
    }

    /// Whether some connection can make progress without waiting for an event.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty() || !self.released.is_empty()
    }

    /// Reads from the connections that are ready, and returns the decoded requests with
    /// the handles to answer them through. Lines that fail decoding are answered here.
    pub(crate) fn take_requests(
        &mut self,
        now_ms: u64,
        registry: &Registry,
        requests: &mut Vec<(ReplyTo, R)>,
    ) {
        requests.append(&mut self.released);
        let ready = std::mem::take(&mut self.ready);
        let mut inputs = Vec::new();
        for token in ready {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            inputs.clear();
            let pumped = conn.pump(now_ms, &self.limits, &mut self.scratch, &mut inputs);
            for input in inputs.drain(..) {
                let handle = self.next_handle;
                self.next_handle += 1;
                match input {
                    Input::Line(line) => match (self.spec.decode)(&line) {
                        Ok(envelope) => {
                            conn.answers_mut().push_pending(handle, envelope.id);
                            self.handles.insert(handle, token);
                            let access = (self.spec.access)(&envelope.msg)
                                .map(|(key, access)| (key.to_owned(), access));
                            let admitted = match access {
                                Some((key, access)) => self
                                    .sequencers
                                    .entry(token)
                                    .or_default()
                                    .admit(handle, &key, access, envelope.msg),
                                None => Some(envelope.msg),
                            };
                            if let Some(msg) = admitted {
                                requests.push((ReplyTo(handle), msg));
                            }
                        }
                        Err(answer) => conn.answers_mut().push_ready(handle, answer),
                    },
                    Input::TooLarge => {
                        tracing::debug!(port = self.spec.name, peer = %conn.peer(), "line over the frame limit");
                        conn.stop_reading();
                        conn.answers_mut()
                            .push_ready(handle, (self.spec.error_line)(ErrorCode::FrameTooLarge));
                    }
                }
            }
            self.touched.insert(token);
            if let Err(closed) = pumped {
                self.close(registry, token, closed);
            }
        }
    }

    /// Answers the request behind `to`. An answer to a connection that is gone is dropped.
    pub(crate) fn reply<M: WireMessage>(&mut self, to: ReplyTo, msg: &M) {
        let Some(token) = self.handles.remove(&to.0) else {
            return;
        };
        if let Some(sequencer) = self.sequencers.get_mut(&token) {
            for (handle, request) in sequencer.complete(to.0) {
                self.released.push((ReplyTo(handle), request));
            }
            if sequencer.is_idle() {
                self.sequencers.remove(&token);
            }
        }
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.answers_mut().fill(to.0, |id| {
                let mut line = Vec::with_capacity(64);
                msg.encode_into(id, &mut line);
                line
            });
            self.touched.insert(token);
        }
    }

    /// Writes what can be written, closes what is finished, and queues connections that
    /// got room to read again.
    pub(crate) fn flush(&mut self, now_ms: u64, registry: &Registry) {
        let touched = std::mem::take(&mut self.touched);
        for token in touched {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            match conn.flush(now_ms, &self.limits) {
                Ok(()) => {
                    if conn.wants_pump(&self.limits) {
                        self.ready.insert(token);
                    }
                }
                Err(closed) => self.close(registry, token, closed),
            }
        }
    }

    /// When [`Port::sweep`] next has work to do.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        let sweep = (!self.conns.is_empty()).then_some(self.next_sweep_ms);
        match (sweep, self.accept_retry_at_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Enforces the time limits, and retries a failed accept.
    pub(crate) fn sweep(&mut self, now_ms: u64, registry: &Registry) {
        if self.accept_retry_at_ms.is_some_and(|at| now_ms >= at) {
            self.accept(now_ms, registry);
        }
        if now_ms < self.next_sweep_ms {
            return;
        }
        self.next_sweep_ms = now_ms + SWEEP_INTERVAL_MS;
        let expired: Vec<(Token, Closed)> = self
            .conns
            .iter()
            .filter_map(|(&token, conn)| {
                conn.check_timers(now_ms, &self.limits, self.spec.idle_timeout)
                    .err()
                    .map(|closed| (token, closed))
            })
            .collect();
        for (token, closed) in expired {
            self.close(registry, token, closed);
        }
    }

    fn close(&mut self, registry: &Registry, token: Token, why: Closed) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let peer = conn.peer();
        match &why {
            Closed::Finished => tracing::trace!(port = self.spec.name, %peer, "connection closed"),
            Closed::Error(err) => {
                tracing::debug!(port = self.spec.name, %peer, %err, "connection failed")
            }
            Closed::Limit(limit) => {
                tracing::info!(port = self.spec.name, %peer, limit, "connection closed")
            }
        }
        for handle in conn.answers().pending_handles() {
            self.handles.remove(&handle);
        }
        self.sequencers.remove(&token);
        // A released request of a closed connection is dropped with it.
        let handles = &self.handles;
        self.released
            .retain(|(handle, _)| handles.contains_key(&handle.0));
        if conn.is_refused() {
            self.refusing = self.refusing.saturating_sub(1);
        } else {
            self.served = self.served.saturating_sub(1);
        }
        if let Err(err) = registry.deregister(conn.stream_mut()) {
            tracing::debug!(port = self.spec.name, %peer, %err, "deregistering a closed connection failed");
        }
        self.ready.remove(&token);
        self.touched.remove(&token);
        // A descriptor came free: connections that waited in the backlog may be taken.
        if self.accept_retry_at_ms.is_some() {
            self.accept_retry_at_ms = Some(0);
        }
    }
}
