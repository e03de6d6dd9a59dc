//! A listening port and the connections accepted on it: framing, ordered answers and the
//! per-connection limits. Decoding is the role's: each port is given its decoder.

mod answers;
mod conn;
mod handle_map;
mod token_set;

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use ringkv_core::proto::{Envelope, ErrorCode, LineEvent, LineSplitter, RequestId, WireMessage};
use ringkv_core::session::{Access, KeyHash, Sequencer};
use ringkv_core::ReplyTo;

use crate::error::NetError;
use crate::event_loop::Readiness;
use crate::limits::{HeldRequestBudget, NetLimits};
use crate::tokens::{Kind, TokenSource};

pub(crate) use answers::Join;
use conn::{Closed, Conn};
use handle_map::{HandleMap, TokenMap};
use token_set::TokenSet;

/// How often the time limits of a port's connections are checked. A limit thus fires up
/// to this late; in exchange a loop iteration does not visit every connection.
pub(crate) const SWEEP_INTERVAL_MS: u64 = 250;

/// How long to wait before accepting again after `accept` failed (out of file
/// descriptors, usually): pending connections wait in the kernel's backlog meanwhile.
const ACCEPT_RETRY_MS: u64 = 100;

/// Bytes read from a socket at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How often connections waiting for the held-request budget look at it again: bytes
/// released by another port or another role of the process raise no event here.
const BUDGET_RECHECK_MS: u64 = 10;

/// What a framer found in a connection's bytes.
#[derive(Debug)]
pub(crate) enum FrameEvent<T> {
    /// One whole request frame, to be decoded.
    Frame(T),
    /// A frame over the frame limit: answer `frame_too_large` and close.
    TooLarge,
    /// Bytes that cannot be framed at all: answer the port's protocol error and close.
    Invalid(&'static str),
}

/// How a port cuts its byte stream into requests (JSON lines, RESP commands) and joins
/// the answers of a request that became several.
pub(crate) trait Framer {
    /// One request as framed.
    type Frame;
    /// A framer that refuses frames over `max_frame_bytes`.
    fn new(max_frame_bytes: usize) -> Self;
    /// Adds bytes read from the peer.
    fn push(&mut self, bytes: &[u8]);
    /// The next whole frame or a verdict on the current one.
    fn next_event(&mut self) -> Option<FrameEvent<Self::Frame>>;
    /// The peer half-closed: the last frame, if what is left makes one.
    fn finish(&mut self) -> Option<FrameEvent<Self::Frame>>;
    /// Bytes held but not yet framed.
    fn buffered_bytes(&self) -> usize;
    /// Joins the answers of one frame's requests into one answer.
    fn join(join: Join, parts: Vec<Vec<u8>>, out: &mut Vec<u8>);
    /// The bytes a frame holds, counted against the held-request budget.
    fn frame_bytes(frame: &Self::Frame) -> usize;
    /// How many requests `frame` may become, at most: what it counts against the
    /// per-connection limit on requests in flight.
    fn requests_in(frame: &Self::Frame) -> usize {
        let _ = frame;
        1
    }
}

fn line_event(event: LineEvent) -> FrameEvent<Vec<u8>> {
    match event {
        LineEvent::Line(line) => FrameEvent::Frame(line),
        LineEvent::TooLarge => FrameEvent::TooLarge,
    }
}

impl Framer for LineSplitter {
    type Frame = Vec<u8>;

    fn new(max_frame_bytes: usize) -> Self {
        LineSplitter::new(max_frame_bytes)
    }

    fn push(&mut self, bytes: &[u8]) {
        LineSplitter::push(self, bytes);
    }

    fn next_event(&mut self) -> Option<FrameEvent<Vec<u8>>> {
        LineSplitter::next_event(self).map(line_event)
    }

    fn finish(&mut self) -> Option<FrameEvent<Vec<u8>>> {
        LineSplitter::finish(self).map(line_event)
    }

    fn buffered_bytes(&self) -> usize {
        LineSplitter::buffered_bytes(self)
    }

    fn join(_: Join, parts: Vec<Vec<u8>>, out: &mut Vec<u8>) {
        // A JSON line is always one request; nothing is ever joined.
        parts.iter().for_each(|part| out.extend_from_slice(part));
    }

    fn frame_bytes(frame: &Vec<u8>) -> usize {
        frame.len()
    }
}

/// What a port makes of one frame.
#[derive(Debug)]
pub(crate) enum Decoded<R> {
    /// One request for the role; `tag` tells the port's encoder how to answer it.
    One {
        /// Echoed on the answer.
        id: Option<RequestId>,
        /// The request.
        msg: R,
        /// How to encode the answer.
        tag: u8,
    },
    /// Several requests for the role, answered together as `join` says.
    Many {
        /// The requests and how to encode each answer.
        parts: Vec<(R, u8)>,
        /// How the answers make one.
        join: Join,
    },
    /// Answered at once by the port (a decoding error, or a command the port serves).
    Answer(Vec<u8>),
    /// Answered at once; then the connection reads no more and closes (RESP `QUIT`).
    Last(Vec<u8>),
}

/// Decodes one frame.
pub(crate) type Decoder<R, T> = fn(T) -> Decoded<R>;

/// The JSON ports' decoding: one line, one request, or its error answer.
pub(crate) fn decoded_line<R>(decoded: Result<Envelope<R>, Vec<u8>>) -> Decoded<R> {
    match decoded {
        Ok(envelope) => Decoded::One {
            id: envelope.id,
            msg: envelope.msg,
            tag: 0,
        },
        Err(answer) => Decoded::Answer(answer),
    }
}

/// How one port turns frames into requests and errors into answers.
pub(crate) struct PortSpec<R, F: Framer = LineSplitter> {
    /// For logs: "client", "register", "participant", "resp".
    pub(crate) name: &'static str,
    /// Decodes one frame.
    pub(crate) decode: Decoder<R, F::Frame>,
    /// An error answer without id, for `frame_too_large` and `overloaded`.
    pub(crate) error_line: fn(ErrorCode) -> Vec<u8>,
    /// The answer to bytes the framer could not frame, before closing.
    pub(crate) protocol_error: fn(&str) -> Vec<u8>,
    /// Whether idle connections are closed. Servers keep their registration connection
    /// open on purpose (to notice a coordinator restart), so that port does not.
    pub(crate) idle_timeout: bool,
    /// The key a request touches and how, so that the requests of one connection take
    /// effect in program order ([`Sequencer`]); `None` for ports or requests that need
    /// no ordering.
    pub(crate) access: fn(&R) -> Option<(&str, Access)>,
    /// The first reply handle: ports whose answers reach the role through one channel
    /// take disjoint ranges, so that a handle names its port.
    pub(crate) first_handle: u64,
    /// Whether a request counts against the held-request budget. One that does not
    /// (a node's message, a server's commit) keeps the store moving: its connection is
    /// never held back by the budget from then on.
    pub(crate) budgeted: fn(&R) -> bool,
}

/// A listening port and its connections.
pub(crate) struct Port<R, F: Framer = LineSplitter> {
    spec: PortSpec<R, F>,
    limits: NetLimits,
    listener: TcpListener,
    listener_token: Token,
    tokens: TokenSource,
    conns: TokenMap<Conn<F>>,
    /// Served connections (refused ones not counted).
    served: usize,
    /// Refused connections still saying `overloaded`; bounded like the served ones.
    refusing: usize,
    /// Which connection each outstanding reply handle belongs to.
    handles: HandleMap<Token>,
    /// Per connection with keyed requests under way: what may run and what waits.
    sequencers: TokenMap<Sequencer<R>>,
    /// Requests a [`Sequencer`] released, to hand to the role in the next turn.
    released: Vec<(ReplyTo, R)>,
    /// Bytes each outstanding handle holds of the held-request budget.
    charges: HandleMap<usize>,
    /// Connections that wanted reading while the budget was spent, in the order they
    /// began to wait: the first read when bytes come free.
    waiting: VecDeque<Token>,
    /// When connections waiting for the budget look at it again.
    budget_recheck_at_ms: Option<u64>,
    next_handle: u64,
    /// Connections to pump in the next turn.
    ready: TokenSet,
    /// Connections with answers to write or limits to recheck.
    touched: TokenSet,
    /// The connections of the turn under way (read or flushed), kept for its allocation.
    visiting: Vec<Token>,
    /// What one connection's read turned into, kept for its allocation.
    inputs: Vec<FrameEvent<F::Frame>>,
    accept_retry_at_ms: Option<u64>,
    next_sweep_ms: u64,
    scratch: Vec<u8>,
}

impl<R, F: Framer> Port<R, F> {
    /// Binds `addr` and registers the listener.
    pub(crate) fn bind(
        addr: SocketAddr,
        kind: Kind,
        registry: &Registry,
        spec: PortSpec<R, F>,
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
            next_handle: spec.first_handle,
            spec,
            limits,
            listener,
            listener_token,
            tokens,
            conns: TokenMap::default(),
            served: 0,
            refusing: 0,
            handles: HandleMap::default(),
            sequencers: TokenMap::default(),
            released: Vec::new(),
            charges: HandleMap::default(),
            waiting: VecDeque::new(),
            budget_recheck_at_ms: None,
            ready: TokenSet::default(),
            touched: TokenSet::default(),
            visiting: Vec::new(),
            inputs: Vec::new(),
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
            conn.mark_readable(event.read_closed);
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
        !self.ready.is_empty()
            || !self.released.is_empty()
            || (!self.waiting.is_empty() && !self.limits.held_requests.is_spent())
    }

    /// Connections to read this turn, into `order`: those waiting for the budget first,
    /// in their order, then the others that are ready.
    fn turn_order(&mut self, order: &mut Vec<Token>) {
        self.ready.drain_sorted_into(order);
        if self.waiting.is_empty() {
            return;
        }
        let waited: BTreeSet<Token> = self.waiting.iter().copied().collect();
        order.retain(|token| !waited.contains(token));
        let ready = std::mem::take(order);
        order.extend(self.waiting.drain(..));
        order.extend(ready);
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
        let mut inputs = std::mem::take(&mut self.inputs);
        let mut order = std::mem::take(&mut self.visiting);
        self.turn_order(&mut order);
        for &token in &order {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            if self.limits.held_requests.is_spent() && !conn.is_exempt() {
                self.waiting.push_back(token);
                continue;
            }
            inputs.clear();
            let pumped = conn.pump(now_ms, &self.limits, &mut self.scratch, &mut inputs);
            for input in inputs.drain(..) {
                let mut frame_bytes = 0;
                let decoded = match input {
                    FrameEvent::Frame(frame) => {
                        frame_bytes = F::frame_bytes(&frame);
                        (self.spec.decode)(frame)
                    }
                    FrameEvent::TooLarge => {
                        tracing::debug!(port = self.spec.name, peer = %conn.peer(), "frame over the limit");
                        conn.stop_reading();
                        Decoded::Answer((self.spec.error_line)(ErrorCode::FrameTooLarge))
                    }
                    FrameEvent::Invalid(reason) => {
                        tracing::debug!(port = self.spec.name, peer = %conn.peer(), reason, "bytes that cannot be framed");
                        conn.stop_reading();
                        Decoded::Answer((self.spec.protocol_error)(reason))
                    }
                };
                let mut queue = Queue {
                    conn,
                    token,
                    handles: &mut self.handles,
                    sequencers: &mut self.sequencers,
                    next_handle: &mut self.next_handle,
                    access: self.spec.access,
                    requests,
                    budget: Budgeting {
                        held: &self.limits.held_requests,
                        charges: &mut self.charges,
                        budgeted: self.spec.budgeted,
                    },
                };
                if queue.decoded(decoded, frame_bytes) {
                    // QUIT: what the client sent after it is not read, as in Redis.
                    break;
                }
            }
            self.touched.insert(token);
            if let Err(closed) = pumped {
                self.close(registry, token, closed);
            }
        }
        self.budget_recheck_at_ms =
            (!self.waiting.is_empty()).then_some(now_ms + BUDGET_RECHECK_MS);
        self.visiting = order;
        self.inputs = inputs;
    }

    /// Answers the request behind `to`. An answer to a connection that is gone is dropped.
    pub(crate) fn reply<M: WireMessage>(&mut self, to: ReplyTo, msg: &M) {
        self.reply_into(to, |id, _, out| {
            out.reserve(msg.encoded_len_hint());
            msg.encode_into(id, out);
        });
    }

    /// Whether `to` is a handle of this port (outstanding or not): ports that share the
    /// role's answer channel tell their answers apart by it.
    pub(crate) fn owns(&self, to: ReplyTo) -> bool {
        to.0 >= self.spec.first_handle
    }

    /// Answers the request behind `to` with what `encode` makes from its id and tag.
    pub(crate) fn reply_with(
        &mut self,
        to: ReplyTo,
        encode: impl FnOnce(Option<&RequestId>, u8) -> Vec<u8>,
    ) {
        self.reply_into(to, |id, tag, out| out.extend_from_slice(&encode(id, tag)));
    }

    /// Answers the request behind `to` with what `encode` appends, from its id and tag,
    /// to the buffer it is given: the connection's unsent bytes when the answer is the
    /// next due, so that a hot answer is encoded once and never copied.
    pub(crate) fn reply_into(
        &mut self,
        to: ReplyTo,
        encode: impl FnOnce(Option<&RequestId>, u8, &mut Vec<u8>),
    ) {
        let Some(token) = self.handles.remove(&to.0) else {
            return;
        };
        self.release(to.0);
        // An idle sequencer stays until its connection closes: making and dropping one
        // per request (its maps' nodes with it) showed in profiles of cached GETs.
        if let Some(sequencer) = self.sequencers.get_mut(&token) {
            for (handle, request) in sequencer.complete(to.0) {
                self.released.push((ReplyTo(handle), request));
            }
        }
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.answer(to.0, encode);
            self.touched.insert(token);
        }
    }

    /// Writes what can be written, closes what is finished, and queues connections that
    /// got room to read again.
    pub(crate) fn flush(&mut self, now_ms: u64, registry: &Registry) {
        let mut touched = std::mem::take(&mut self.visiting);
        self.touched.drain_sorted_into(&mut touched);
        for &token in &touched {
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
        self.visiting = touched;
    }

    /// Gives back what handle `handle` held of the budget.
    fn release(&mut self, handle: u64) {
        if let Some(bytes) = self.charges.remove(&handle) {
            self.limits.held_requests.release(bytes);
        }
    }

    /// When [`Port::sweep`] next has work to do, or waiting connections look at the
    /// budget again.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        let sweep = (!self.conns.is_empty()).then_some(self.next_sweep_ms);
        [sweep, self.accept_retry_at_ms, self.budget_recheck_at_ms]
            .into_iter()
            .flatten()
            .min()
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
            if let Some(bytes) = self.charges.remove(&handle) {
                self.limits.held_requests.release(bytes);
            }
        }
        self.waiting.retain(|&waiting| waiting != token);
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
        self.ready.remove(token);
        self.touched.remove(token);
        // A descriptor came free: connections that waited in the backlog may be taken.
        if self.accept_retry_at_ms.is_some() {
            self.accept_retry_at_ms = Some(0);
        }
    }
}

impl<R, F: Framer> Drop for Port<R, F> {
    /// A port that stops gives back what its requests held of a budget that other
    /// roles of the process may still use.
    fn drop(&mut self) {
        for (_, bytes) in self.charges.drain() {
            self.limits.held_requests.release(bytes);
        }
    }
}

/// What a port charges to the held-request budget, and for which requests.
struct Budgeting<'a, R> {
    held: &'a HeldRequestBudget,
    charges: &'a mut HandleMap<usize>,
    budgeted: fn(&R) -> bool,
}

/// The parts of a port one frame's requests are queued through.
struct Queue<'a, R, F: Framer> {
    conn: &'a mut Conn<F>,
    token: Token,
    handles: &'a mut HandleMap<Token>,
    sequencers: &'a mut TokenMap<Sequencer<R>>,
    next_handle: &'a mut u64,
    access: fn(&R) -> Option<(&str, Access)>,
    requests: &'a mut Vec<(ReplyTo, R)>,
    budget: Budgeting<'a, R>,
}

impl<R, F: Framer> Queue<'_, R, F> {
    /// Queues what one frame of `frame_bytes` asks for; true if the connection takes no
    /// more requests.
    fn decoded(&mut self, decoded: Decoded<R>, frame_bytes: usize) -> bool {
        match decoded {
            Decoded::One { id, msg, tag } => self.request(id, msg, tag, frame_bytes),
            Decoded::Many { parts, join } => {
                let count = parts.len();
                // The frame's bytes shared out, so that they are back once all are answered.
                let share = frame_bytes.div_ceil(count.max(1));
                for (msg, tag) in parts {
                    self.request(None, msg, tag, share);
                }
                self.conn.answers_mut().group_last(count, join);
            }
            Decoded::Answer(answer) => {
                let handle = self.handle();
                self.conn.answers_mut().push_ready(handle, answer);
            }
            Decoded::Last(answer) => {
                let handle = self.handle();
                self.conn.answers_mut().push_ready(handle, answer);
                self.conn.stop_reading();
                return true;
            }
        }
        false
    }

    fn handle(&mut self) -> u64 {
        let handle = *self.next_handle;
        *self.next_handle += 1;
        handle
    }

    /// Queues one request of `bytes` for the role, or holds it behind earlier ones on
    /// its key.
    fn request(&mut self, id: Option<RequestId>, msg: R, tag: u8, bytes: usize) {
        let handle = self.handle();
        self.conn.answers_mut().push_pending(handle, id, tag);
        self.handles.insert(handle, self.token);
        if (self.budget.budgeted)(&msg) {
            self.budget.held.charge(bytes);
            self.budget.charges.insert(handle, bytes);
        } else {
            self.conn.set_exempt();
        }
        let access = (self.access)(&msg).map(|(key, access)| (KeyHash::of(key), access));
        let admitted = match access {
            Some((key, access)) => self
                .sequencers
                .entry(self.token)
                .or_default()
                .admit_hashed(handle, key, access, msg),
            None => Some(msg),
        };
        if let Some(msg) = admitted {
            self.requests.push((ReplyTo(handle), msg));
        }
    }
}

#[cfg(test)]
mod budget_tests;
