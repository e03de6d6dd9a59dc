//! An outgoing connection that carries one role's requests to one peer: connects lazily
//! and without blocking, reconnects after a failure with a growing wait, bounds what
//! waits to be sent, and splits what comes back into lines.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use ringkv_core::proto::{LineEvent, LineSplitter};
use ringkv_core::rng::DetRng;
use ringkv_core::time::{Attempts, Backoff};

use crate::event_loop::Readiness;

/// How long a connection attempt may take before it counts as failed: the kernel's own
/// limit for an unanswered SYN is minutes.
pub(crate) const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// Bytes read from a connection at once.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Queued messages handed to one vectored write (the kernel takes up to 1024).
const MESSAGES_PER_WRITE: usize = 64;

/// Socket reads per turn, so that one chatty peer cannot starve the loop.
const READS_PER_TURN: usize = 16;

/// The bounds and waits of one link.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkConfig {
    /// Bytes of messages waiting to be sent; beyond it the oldest unsent are dropped
    /// (their senders time out and send again).
    pub(crate) max_queued_bytes: usize,
    /// Messages waiting to be sent; beyond it the oldest unsent are dropped.
    pub(crate) max_queued_msgs: usize,
    /// The longest line accepted from the peer; a longer one ends the connection.
    pub(crate) max_frame_bytes: usize,
    /// The waits before connecting again after failures (the core's backoff, with
    /// jitter); `None` connects again at once, for a role that paces its own retries.
    pub(crate) backoff: Option<Backoff>,
    /// A connection that stays silent this long after a message was written on it is
    /// dropped and a new one opened (a peer that hangs, a middlebox that lost the flow);
    /// `None` keeps it.
    pub(crate) silent_after_ms: Option<u64>,
}

/// What a link reports to its role.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// A line from the peer.
    Line(Vec<u8>),
    /// The connection failed, closed, or could not be opened.
    Disconnected,
}

struct Connection {
    stream: TcpStream,
    /// Whether the non-blocking connect has completed.
    established: bool,
    started_ms: u64,
    /// Since when the peer owes a sign of life: set by a write, cleared by any read.
    awaiting_since_ms: Option<u64>,
    maybe_readable: bool,
    /// An event announced the peer's EOF (or an error): read on until it shows.
    peer_closing: bool,
    splitter: LineSplitter,
}

/// An outgoing connection to `target` with its send queue.
pub(crate) struct Link {
    /// For logs: which peer and which use.
    name: String,
    target: String,
    token: Token,
    config: LinkConfig,
    conn: Option<Connection>,
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    /// Bytes of the front message already written to the current connection.
    front_written: usize,
    retry_at_ms: u64,
    attempts: Option<Attempts>,
    rng: DetRng,
    /// Read buffer, kept across reads: zeroing a fresh one for every read cost more
    /// than the reading.
    scratch: Vec<u8>,
}

impl Link {
    /// A link that connects to `target` (`host:port`) at the first send.
    pub(crate) fn new(name: String, target: String, token: Token, config: LinkConfig) -> Self {
        Self {
            name,
            target,
            token,
            config,
            conn: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            front_written: 0,
            retry_at_ms: 0,
            attempts: config.backoff.map(|b| b.begin()),
            rng: DetRng::new(crate::seed::seed_from_os()),
            scratch: Vec::new(),
        }
    }

    pub(crate) fn token(&self) -> Token {
        self.token
    }

    /// Whether the connection is established.
    #[cfg(test)]
    pub(crate) fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|conn| conn.established)
    }

    /// Queues one encoded line and starts connecting if nothing is open and no wait runs.
    /// The bytes go out at the next [`Link::flush`], so that the messages of one loop
    /// iteration share a system call.
    pub(crate) fn send(
        &mut self,
        now_ms: u64,
        registry: &Registry,
        line: Vec<u8>,
        events: &mut Vec<LinkEvent>,
    ) {
        self.queued_bytes += line.len();
        self.queue.push_back(line);
        self.enforce_bounds();
        if self.conn.is_none() && now_ms >= self.retry_at_ms {
            self.connect(now_ms, registry, events);
        }
    }

    fn enforce_bounds(&mut self) {
        while self.queued_bytes > self.config.max_queued_bytes
            || self.queue.len() > self.config.max_queued_msgs
        {
            // The front message may be half written: it must go out whole, so the oldest
            // droppable one is behind it.
            let oldest = usize::from(self.front_written > 0);
            let Some(dropped) = self.queue.remove(oldest) else {
                break;
            };
            self.queued_bytes -= dropped.len();
            tracing::debug!(link = %self.name, bytes = dropped.len(), "send queue full: dropped the oldest message");
        }
    }

    fn connect(&mut self, now_ms: u64, registry: &Registry, events: &mut Vec<LinkEvent>) {
        let addr = match resolve(&self.target) {
            Ok(addr) => addr,
            Err(err) => {
                tracing::warn!(link = %self.name, target = %self.target, %err, "cannot resolve the address");
                self.failed(now_ms, events);
                return;
            }
        };
        let mut stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(link = %self.name, %addr, %err, "connect failed");
                self.failed(now_ms, events);
                return;
            }
        };
        if let Err(err) = registry.register(
            &mut stream,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(link = %self.name, %err, "could not register a connection");
            self.failed(now_ms, events);
            return;
        }
        tracing::debug!(link = %self.name, %addr, "connecting");
        self.conn = Some(Connection {
            stream,
            established: false,
            started_ms: now_ms,
            awaiting_since_ms: None,
            maybe_readable: false,
            peer_closing: false,
            splitter: LineSplitter::new(self.config.max_frame_bytes),
        });
    }

    /// Drops the connection (if any) and waits before the next attempt.
    fn failed(&mut self, now_ms: u64, events: &mut Vec<LinkEvent>) {
        let wait_ms = match (self.config.backoff, self.attempts.as_mut()) {
            (Some(backoff), Some(attempts)) => backoff.next_wait_ms(attempts, &mut self.rng),
            _ => 0,
        };
        self.retry_at_ms = now_ms.saturating_add(wait_ms);
        self.front_written = 0;
        events.push(LinkEvent::Disconnected);
    }

    fn disconnect(&mut self, now_ms: u64, registry: &Registry, events: &mut Vec<LinkEvent>) {
        if let Some(mut conn) = self.conn.take() {
            if let Err(err) = registry.deregister(&mut conn.stream) {
                tracing::debug!(link = %self.name, %err, "deregistering a closed connection failed");
            }
        }
        self.failed(now_ms, events);
    }

    /// Drops the queued messages not begun on the wire (a half-written one must go out
    /// whole): for a peer known to be down, whose senders rely on their deadlines and
    /// on hints rather than on a stale burst when it comes back.
    pub(crate) fn discard_queued(&mut self) {
        let keep = usize::from(self.front_written > 0);
        while self.queue.len() > keep {
            if let Some(dropped) = self.queue.pop_back() {
                self.queued_bytes -= dropped.len();
            }
        }
    }

    /// Drops the connection without reporting it: the link is being replaced.
    pub(crate) fn close(&mut self, registry: &Registry) {
        if let Some(mut conn) = self.conn.take() {
            let _ = registry.deregister(&mut conn.stream);
        }
    }

    /// Handles an event of this link's socket.
    pub(crate) fn on_event(
        &mut self,
        now_ms: u64,
        registry: &Registry,
        event: &Readiness,
        events: &mut Vec<LinkEvent>,
    ) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if !conn.established {
            match connect_result(&conn.stream) {
                ConnectState::Pending => return,
                ConnectState::Failed(err) => {
                    tracing::debug!(link = %self.name, target = %self.target, %err, "connect failed");
                    self.disconnect(now_ms, registry, events);
                    return;
                }
                ConnectState::Established => {
                    tracing::debug!(link = %self.name, target = %self.target, "connected");
                    conn.established = true;
                    conn.maybe_readable = true;
                    self.attempts = self.config.backoff.map(|b| b.begin());
                }
            }
        }
        if event.readable {
            conn.maybe_readable = true;
            conn.peer_closing |= event.read_closed;
        }
        self.pump(now_ms, registry, events);
        self.flush(now_ms, registry, events);
    }

    /// Whether a turn of [`Link::pump`] may read more now.
    pub(crate) fn wants_pump(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|conn| conn.established && conn.maybe_readable)
    }

    /// Reads what the peer sent, as lines, up to a budget per turn.
    pub(crate) fn pump(&mut self, now_ms: u64, registry: &Registry, events: &mut Vec<LinkEvent>) {
        let outcome = {
            let Some(conn) = self.conn.as_mut().filter(|conn| conn.established) else {
                return;
            };
            if self.scratch.is_empty() {
                self.scratch = vec![0; READ_CHUNK_BYTES];
            }
            read_lines(conn, &mut self.scratch, events)
        };
        if let Err(why) = outcome {
            tracing::debug!(link = %self.name, target = %self.target, why, "connection lost");
            self.disconnect(now_ms, registry, events);
        }
    }

    /// Writes queued messages as far as the socket takes them: up to
    /// [`MESSAGES_PER_WRITE`] at a time in one vectored write, so that the messages of a
    /// loop turn cost one system call, not one each.
    pub(crate) fn flush(&mut self, now_ms: u64, registry: &Registry, events: &mut Vec<LinkEvent>) {
        let Some(conn) = self.conn.as_mut().filter(|conn| conn.established) else {
            return;
        };
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MESSAGES_PER_WRITE];
            let mut count = 0;
            for (slot, msg) in slices.iter_mut().zip(&self.queue) {
                let skip = if count == 0 { self.front_written } else { 0 };
                *slot = IoSlice::new(msg.get(skip..).unwrap_or_default());
                count += 1;
            }
            match conn
                .stream
                .write_vectored(slices.get(..count).unwrap_or_default())
            {
                Ok(0) => {
                    self.disconnect(now_ms, registry, events);
                    return;
                }
                Ok(n) => {
                    self.queued_bytes -= advance(&mut self.queue, &mut self.front_written, n);
                    conn.awaiting_since_ms.get_or_insert(now_ms);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::debug!(link = %self.name, target = %self.target, %err, "write failed");
                    self.disconnect(now_ms, registry, events);
                    return;
                }
            }
        }
    }

    /// When [`Link::tick`] next has work to do.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        match &self.conn {
            Some(conn) if !conn.established => {
                Some(conn.started_ms.saturating_add(CONNECT_TIMEOUT_MS))
            }
            Some(conn) => {
                let since = conn.awaiting_since_ms?;
                Some(since.saturating_add(self.config.silent_after_ms?))
            }
            None if !self.queue.is_empty() => Some(self.retry_at_ms),
            None => None,
        }
    }

    /// Gives up a connect that takes too long, and connects again once the wait is over.
    pub(crate) fn tick(&mut self, now_ms: u64, registry: &Registry, events: &mut Vec<LinkEvent>) {
        match &self.conn {
            Some(conn) if !conn.established => {
                if now_ms.saturating_sub(conn.started_ms) >= CONNECT_TIMEOUT_MS {
                    tracing::debug!(link = %self.name, target = %self.target, "connect timed out");
                    self.disconnect(now_ms, registry, events);
                }
            }
            Some(conn) => {
                let silent = conn.awaiting_since_ms.zip(self.config.silent_after_ms);
                if silent.is_some_and(|(since, limit)| now_ms.saturating_sub(since) >= limit) {
                    tracing::info!(link = %self.name, target = %self.target, "the peer went silent; connecting again");
                    self.disconnect(now_ms, registry, events);
                }
            }
            None => {
                if !self.queue.is_empty() && now_ms >= self.retry_at_ms {
                    self.connect(now_ms, registry, events);
                }
            }
        }
    }
}

fn read_lines(
    conn: &mut Connection,
    scratch: &mut [u8],
    events: &mut Vec<LinkEvent>,
) -> Result<(), &'static str> {
    for _ in 0..READS_PER_TURN {
        match conn.stream.read(scratch) {
            Ok(0) => return Err("closed by the peer"),
            Ok(n) => {
                conn.awaiting_since_ms = None;
                conn.splitter.push(scratch.get(..n).unwrap_or_default());
                // A short read emptied the socket; see `Conn::pump` of the inbound side.
                if n < scratch.len() && !conn.peer_closing {
                    conn.maybe_readable = false;
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                conn.maybe_readable = false;
                break;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err("read failed"),
        }
        take_lines(&mut conn.splitter, events)?;
    }
    take_lines(&mut conn.splitter, events)
}

fn take_lines(
    splitter: &mut LineSplitter,
    events: &mut Vec<LinkEvent>,
) -> Result<(), &'static str> {
    while let Some(event) = splitter.next_event() {
        match event {
            LineEvent::Line(line) => events.push(LinkEvent::Line(line)),
            LineEvent::TooLarge => return Err("the peer sent a line over the frame limit"),
        }
    }
    Ok(())
}

enum ConnectState {
    Pending,
    Established,
    Failed(io::Error),
}

/// Whether a non-blocking connect completed: mio's recipe is `take_error`, then
/// `peer_addr` (which fails with `NotConnected` while the handshake runs).
fn connect_result(stream: &TcpStream) -> ConnectState {
    match stream.take_error() {
        Ok(Some(err)) | Err(err) => return ConnectState::Failed(err),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        // A connect to a port nobody listens on, from that same port, connects to itself
        // (TCP simultaneous open on loopback) and holds the port that the peer, when it
        // restarts, must bind: drop it as a failed attempt.
        Ok(peer) if stream.local_addr().is_ok_and(|local| local == peer) => {
            ConnectState::Failed(io::Error::new(
                io::ErrorKind::AddrInUse,
                "the connection reached itself: its peer is down",
            ))
        }
        Ok(_) => {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "could not set TCP_NODELAY");
            }
            ConnectState::Established
        }
        Err(err) if err.kind() == io::ErrorKind::NotConnected => ConnectState::Pending,
        Err(err) => ConnectState::Failed(err),
    }
}

/// The first address `target` names. Names are looked up with the system resolver, which
/// blocks; peers register IP addresses in practice, for which no lookup happens.
fn resolve(target: &str) -> io::Result<SocketAddr> {
    target
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address"))
}

/// Drops the `written` bytes that left from the front of `queue`, of which `front_written`
/// had left before; returns the bytes of the messages now gone whole.
fn advance(queue: &mut VecDeque<Vec<u8>>, front_written: &mut usize, mut written: usize) -> usize {
    let mut freed = 0;
    while written > 0 {
        let Some(front) = queue.front() else {
            break;
        };
        let left = front.len() - *front_written;
        if written < left {
            *front_written += written;
            break;
        }
        written -= left;
        freed += front.len();
        queue.pop_front();
        *front_written = 0;
    }
    freed
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write as _};
    use std::time::{Duration, Instant};

    use mio::{Events, Poll};

    use super::*;

    fn config(max_queued_msgs: usize) -> LinkConfig {
        LinkConfig {
            max_queued_bytes: 1024,
            max_queued_msgs,
            max_frame_bytes: 1024,
            backoff: Some(Backoff {
                wait_ms_min: 10,
                wait_ms_max: 40,
            }),
            silent_after_ms: Some(300),
        }
    }

    /// Runs the link's side of a loop until `done` or a few seconds pass.
    fn drive(
        poll: &mut Poll,
        link: &mut Link,
        events: &mut Vec<LinkEvent>,
        start: Instant,
        mut done: impl FnMut(&Link, &[LinkEvent]) -> bool,
    ) {
        let mut mio_events = Events::with_capacity(16);
        while !done(link, events) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "link made no progress"
            );
            poll.poll(&mut mio_events, Some(Duration::from_millis(10)))
                .unwrap();
            let now_ms = start.elapsed().as_millis() as u64;
            for event in &mio_events {
                let readiness = Readiness {
                    token: event.token(),
                    readable: event.is_readable() || event.is_read_closed() || event.is_error(),
                    writable: event.is_writable() || event.is_error(),
                    read_closed: event.is_read_closed() || event.is_error(),
                };
                link.on_event(now_ms, poll.registry(), &readiness, events);
            }
            link.tick(now_ms, poll.registry(), events);
            link.flush(now_ms, poll.registry(), events);
        }
    }

    #[test]
    fn queues_while_unconnected_dropping_the_oldest_then_delivers_and_reads_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let mut poll = Poll::new().unwrap();
        let mut link = Link::new("test".into(), target, Token(3), config(2));
        let mut events = Vec::new();
        let start = Instant::now();
        for n in 1..=3 {
            link.send(
                0,
                poll.registry(),
                format!("m{n}\n").into_bytes(),
                &mut events,
            );
        }
        assert_eq!(link.queue.len(), 2, "the oldest message was dropped");
        drive(&mut poll, &mut link, &mut events, start, |link, _| {
            link.is_connected() && link.queue.is_empty()
        });
        let (peer, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(peer.try_clone().unwrap());
        let mut got = String::new();
        reader.read_line(&mut got).unwrap();
        reader.read_line(&mut got).unwrap();
        assert_eq!(got, "m2\nm3\n");
        (&peer).write_all(b"answer\n").unwrap();
        drive(&mut poll, &mut link, &mut events, start, |_, events| {
            !events.is_empty()
        });
        assert_eq!(events, vec![LinkEvent::Line(b"answer".to_vec())]);
        events.clear();
        drop(reader);
        drop(peer);
        drive(&mut poll, &mut link, &mut events, start, |_, events| {
            events.contains(&LinkEvent::Disconnected)
        });
        assert!(!link.is_connected());
    }

    #[test]
    fn a_refused_connect_reports_a_disconnect_and_waits_before_retrying() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut poll = Poll::new().unwrap();
        let mut link = Link::new("test".into(), target, Token(3), config(8));
        let mut events = Vec::new();
        let start = Instant::now();
        link.send(0, poll.registry(), b"m\n".to_vec(), &mut events);
        drive(&mut poll, &mut link, &mut events, start, |_, events| {
            events.contains(&LinkEvent::Disconnected)
        });
        let retry_at_ms = link.next_deadline_ms().unwrap();
        // The failure came at or after 0 ms, and the first wait is 10 to 15 ms.
        let seen_ms = start.elapsed().as_millis() as u64;
        assert!(
            (10..=seen_ms + 15).contains(&retry_at_ms),
            "a failed link waits its backoff before connecting again: {retry_at_ms} ms"
        );
        assert_eq!(
            link.queue.len(),
            1,
            "the message waits for the next connection"
        );
    }

    #[test]
    fn a_connection_that_stays_silent_after_a_write_is_replaced() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let mut poll = Poll::new().unwrap();
        let mut link = Link::new("test".into(), target, Token(3), config(8));
        let mut events = Vec::new();
        let start = Instant::now();
        link.send(0, poll.registry(), b"m1\n".to_vec(), &mut events);
        drive(&mut poll, &mut link, &mut events, start, |link, _| {
            link.is_connected() && link.queue.is_empty()
        });
        // The peer takes the message and never answers on this connection.
        let (silent, _) = listener.accept().unwrap();
        drive(&mut poll, &mut link, &mut events, start, |_, events| {
            events.contains(&LinkEvent::Disconnected)
        });
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "not before the limit"
        );
        events.clear();
        // What is sent next goes over a new connection, which answers.
        let at_ms = start.elapsed().as_millis() as u64;
        link.send(at_ms, poll.registry(), b"m2\n".to_vec(), &mut events);
        drive(&mut poll, &mut link, &mut events, start, |link, _| {
            link.is_connected() && link.queue.is_empty()
        });
        let (fresh, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(fresh.try_clone().unwrap());
        let mut got = String::new();
        reader.read_line(&mut got).unwrap();
        assert_eq!(got, "m2\n");
        (&fresh).write_all(b"answer\n").unwrap();
        drive(&mut poll, &mut link, &mut events, start, |_, events| {
            events.contains(&LinkEvent::Line(b"answer".to_vec()))
        });
        drop(silent);
    }

    #[test]
    fn partial_vectored_writes_keep_message_boundaries() {
        let mut queue: VecDeque<Vec<u8>> =
            [b"abc".to_vec(), b"de".to_vec(), b"fgh".to_vec()].into();
        let mut front_written = 0;
        assert_eq!(advance(&mut queue, &mut front_written, 2), 0);
        assert_eq!((queue.len(), front_written), (3, 2));
        assert_eq!(advance(&mut queue, &mut front_written, 3), 5);
        assert_eq!((queue.len(), front_written), (1, 0));
        assert_eq!(advance(&mut queue, &mut front_written, 3), 3);
        assert!(queue.is_empty());
        assert_eq!(advance(&mut queue, &mut front_written, 0), 0);
    }
}

#[cfg(test)]
mod self_connect_tests {
    use std::net::{Ipv4Addr, SocketAddr, TcpListener};

    use socket2::{Domain, Socket, Type};

    use super::*;

    /// A connect from a port to itself, as the kernel may pick for a connect to a port
    /// nobody listens on: it "succeeds" on loopback, and must count as a failure.
    #[test]
    fn a_connection_to_itself_counts_as_failed() {
        // A port free a moment ago.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.connect(&addr.into()).unwrap();
        let stream = TcpStream::from_std(socket.into());
        assert_eq!(stream.peer_addr().unwrap(), stream.local_addr().unwrap());
        assert!(matches!(
            connect_result(&stream),
            ConnectState::Failed(err) if err.kind() == io::ErrorKind::AddrInUse
        ));
    }
}
