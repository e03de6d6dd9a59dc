//! One accepted connection: bytes in, lines out; answers in, bytes out; and the limits
//! that keep a slow or hostile peer from holding the process.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;
use ringkv_core::proto::RequestId;

use super::answers::AnswerQueue;
use super::{FrameEvent, Framer};
use crate::limits::NetLimits;

/// How long a closing connection keeps reading (and discarding) after its last answer,
/// waiting for the peer's EOF. Closing with unread bytes makes the kernel send a reset,
/// which can destroy the last answer before the peer reads it.
pub(crate) const LINGER_MS: u64 = 2_000;

/// Socket reads per turn of one connection, so that one busy peer cannot starve the
/// others; a connection with more to read is served again in the next loop iteration.
const READS_PER_TURN: usize = 16;

/// What reading turned up, in order: the framer's events.
pub(crate) type Input<T> = FrameEvent<T>;

/// Where the connection stands with the peer's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// Requests may still come.
    Open,
    /// The peer half-closed; the lines still held are taken, then the last partial line.
    Eof,
    /// No more requests: everything is taken, or a line was too large, or the connection
    /// was refused at accept.
    Done,
}

/// Why a connection must go now.
#[derive(Debug)]
pub(crate) enum Closed {
    /// The peer reset the connection or a system call failed.
    Error(io::Error),
    /// Everything was answered and the peer's EOF seen (or the linger ended).
    Finished,
    /// A limit of [`NetLimits`] ran out; names which.
    Limit(&'static str),
}

/// One accepted connection.
pub(crate) struct Conn<F> {
    stream: TcpStream,
    peer: SocketAddr,
    framer: F,
    answers: AnswerQueue,
    out: Vec<u8>,
    /// Where the unsent part of `out` starts.
    out_pos: usize,
    reading: Reading,
    /// The peer's EOF was read.
    peer_eof: bool,
    /// The socket may hold bytes not read yet: set by a readable event, cleared when a
    /// read would block. Edge-triggered events do not repeat, so this must be kept.
    maybe_readable: bool,
    /// An event announced the peer's EOF (or an error): read on until it shows.
    peer_closing: bool,
    /// The last turn stopped with lines possibly still held in the splitter.
    stalled: bool,
    /// Accepted beyond the connection limit, only to be answered `overloaded`.
    refused: bool,
    /// It carried a request outside the held-request budget (a node's, or a server's
    /// commit): the budget never holds it back.
    exempt: bool,
    /// When our side was shut for writing; the connection then only waits for EOF.
    write_shut_at_ms: Option<u64>,
    /// When bytes last moved either way.
    last_activity_ms: u64,
    /// Since when a line has been started and not finished.
    partial_since_ms: Option<u64>,
    /// Since when unsent answers have been over the limit.
    over_outbound_since_ms: Option<u64>,
}

impl<F: Framer> Conn<F> {
    /// A connection to serve.
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        now_ms: u64,
        limits: &NetLimits,
    ) -> Self {
        Self {
            stream,
            peer,
            framer: F::new(limits.max_frame_bytes),
            answers: AnswerQueue::default(),
            out: Vec::new(),
            out_pos: 0,
            reading: Reading::Open,
            peer_eof: false,
            maybe_readable: true,
            peer_closing: false,
            stalled: false,
            refused: false,
            exempt: false,
            write_shut_at_ms: None,
            last_activity_ms: now_ms,
            partial_since_ms: None,
            over_outbound_since_ms: None,
        }
    }

    /// A connection over the limit: it reads no request, gets `answer`, and closes.
    pub(crate) fn refused(
        stream: TcpStream,
        peer: SocketAddr,
        now_ms: u64,
        limits: &NetLimits,
        handle: u64,
        answer: Vec<u8>,
    ) -> Self {
        let mut conn = Self::new(stream, peer, now_ms, limits);
        conn.refused = true;
        conn.reading = Reading::Done;
        conn.answers.push_ready(handle, answer);
        conn
    }

    pub(crate) fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(crate) fn is_refused(&self) -> bool {
        self.refused
    }

    /// Whether the held-request budget must never hold this connection back.
    pub(crate) fn is_exempt(&self) -> bool {
        self.exempt
    }

    /// The connection carried a request outside the held-request budget.
    pub(crate) fn set_exempt(&mut self) {
        self.exempt = true;
    }

    pub(crate) fn answers_mut(&mut self) -> &mut AnswerQueue {
        &mut self.answers
    }

    /// Answers the request of `handle` with what `encode` writes, straight onto the
    /// unsent bytes when it is the next answer due ([`AnswerQueue::fill_into`]).
    pub(crate) fn answer(
        &mut self,
        handle: u64,
        encode: impl FnOnce(Option<&RequestId>, u8, &mut Vec<u8>),
    ) -> bool {
        self.answers.fill_into(handle, &mut self.out, encode)
    }

    pub(crate) fn answers(&self) -> &AnswerQueue {
        &self.answers
    }

    /// A readable (or error) event arrived; `read_closed` if it also announced the
    /// peer's EOF or an error.
    pub(crate) fn mark_readable(&mut self, read_closed: bool) {
        self.maybe_readable = true;
        self.peer_closing |= read_closed;
    }

    /// A line was over the frame limit: its answer is the last, so no more lines are taken.
    pub(crate) fn stop_reading(&mut self) {
        self.reading = Reading::Done;
    }

    fn unsent_bytes(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Whether another request may be taken now without passing a limit.
    fn has_room(&self, limits: &NetLimits) -> bool {
        self.answers.len() < limits.max_in_flight_per_connection
            && self.unsent_bytes() < limits.max_outbound_bytes_per_connection
    }

    /// Whether a turn of [`Conn::pump`] could take a request or learn something now.
    pub(crate) fn wants_pump(&self, limits: &NetLimits) -> bool {
        if self.write_shut_at_ms.is_some() {
            return self.maybe_readable;
        }
        self.reading != Reading::Done
            && (self.maybe_readable || self.stalled || self.reading == Reading::Eof)
            && self.has_room(limits)
    }

    /// Reads from the socket and takes lines, as far as the limits allow, into `inputs`.
    pub(crate) fn pump(
        &mut self,
        now_ms: u64,
        limits: &NetLimits,
        scratch: &mut [u8],
        inputs: &mut Vec<Input<F::Frame>>,
    ) -> Result<(), Closed> {
        if self.write_shut_at_ms.is_some() {
            return self.discard_until_eof(scratch);
        }
        let room = limits
            .max_in_flight_per_connection
            .saturating_sub(self.answers.len());
        // Requests taken this turn: a frame that becomes several (RESP `MGET k1 k2`)
        // counts as several, so that a connection holds at most the limit plus one frame.
        let mut taken = 0usize;
        let mut line_completed = false;
        let mut reads = 0;
        self.stalled = false;
        loop {
            if self.reading == Reading::Done {
                break;
            }
            if taken >= room || self.unsent_bytes() >= limits.max_outbound_bytes_per_connection {
                self.stalled = true;
                break;
            }
            match self.framer.next_event() {
                Some(FrameEvent::Frame(frame)) => {
                    line_completed = true;
                    taken += F::requests_in(&frame);
                    inputs.push(FrameEvent::Frame(frame));
                    continue;
                }
                Some(verdict) => {
                    inputs.push(verdict);
                    self.reading = Reading::Done;
                    break;
                }
                None => {}
            }
            if self.reading == Reading::Eof {
                if let Some(event) = self.framer.finish() {
                    inputs.push(event);
                }
                self.reading = Reading::Done;
                break;
            }
            if !self.maybe_readable {
                break;
            }
            if reads == READS_PER_TURN {
                self.stalled = true;
                break;
            }
            reads += 1;
            self.read_once(now_ms, scratch)?;
        }
        self.track_partial_frame(now_ms, line_completed);
        Ok(())
    }

    /// One read of the socket into the framer.
    fn read_once(&mut self, now_ms: u64, scratch: &mut [u8]) -> Result<(), Closed> {
        match self.stream.read(scratch) {
            Ok(0) => {
                self.peer_eof = true;
                self.maybe_readable = false;
                self.reading = Reading::Eof;
            }
            Ok(n) => {
                self.last_activity_ms = now_ms;
                self.framer.push(scratch.get(..n).unwrap_or_default());
                // A read that did not fill the buffer emptied the socket: bytes that
                // come later raise a new edge, so asking again would only return
                // EAGAIN, one system call per request. An EOF that already came
                // raises none, so then the loop reads on until it shows.
                if n < scratch.len() && !self.peer_closing {
                    self.maybe_readable = false;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.maybe_readable = false;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Closed::Error(err)),
        }
        Ok(())
    }

    /// Since when a frame has been started and not finished (the partial-line timeout
    /// counts from then): restarted when a frame completed this turn, cleared when no
    /// bytes wait.
    fn track_partial_frame(&mut self, now_ms: u64, frame_completed: bool) {
        if self.reading == Reading::Open && self.framer.buffered_bytes() > 0 {
            if frame_completed || self.partial_since_ms.is_none() {
                self.partial_since_ms = Some(now_ms);
            }
        } else {
            self.partial_since_ms = None;
        }
    }

    /// After the last answer: reads and drops whatever the peer still sends, until its EOF.
    fn discard_until_eof(&mut self, scratch: &mut [u8]) -> Result<(), Closed> {
        for _ in 0..READS_PER_TURN {
            match self.stream.read(scratch) {
                Ok(0) => return Err(Closed::Finished),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.maybe_readable = false;
                    return Ok(());
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // A reset after the last answer is the peer's way of leaving.
                Err(_) => return Err(Closed::Finished),
            }
        }
        Ok(())
    }

    /// Writes the answers known at the head of the queue, as far as the socket takes
    /// them, and shuts our side once everything is answered and no request can follow.
    pub(crate) fn flush(&mut self, now_ms: u64, limits: &NetLimits) -> Result<(), Closed> {
        if self.out_pos > 0 && self.out_pos * 2 >= self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        self.answers.drain_ready_into(&mut self.out, F::join);
        while self.out_pos < self.out.len() {
            let unsent = self.out.get(self.out_pos..).unwrap_or_default();
            match self.stream.write(unsent) {
                Ok(0) => {
                    return Err(Closed::Error(io::Error::from(io::ErrorKind::WriteZero)));
                }
                Ok(n) => {
                    self.out_pos += n;
                    self.last_activity_ms = now_ms;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(Closed::Error(err)),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        if self.unsent_bytes() >= limits.max_outbound_bytes_per_connection {
            self.over_outbound_since_ms.get_or_insert(now_ms);
        } else {
            self.over_outbound_since_ms = None;
        }
        let all_answered =
            self.reading == Reading::Done && self.answers.is_empty() && self.unsent_bytes() == 0;
        if all_answered && self.write_shut_at_ms.is_none() {
            if self.peer_eof {
                return Err(Closed::Finished);
            }
            match self.stream.shutdown(Shutdown::Write) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                    return Err(Closed::Finished)
                }
                Err(err) => return Err(Closed::Error(err)),
            }
            self.write_shut_at_ms = Some(now_ms);
            // The peer's EOF may be waiting already.
            self.maybe_readable = true;
        }
        Ok(())
    }

    /// Checks the time limits; `idle_applies` says whether this port closes idle peers.
    pub(crate) fn check_timers(
        &self,
        now_ms: u64,
        limits: &NetLimits,
        idle_applies: bool,
    ) -> Result<(), Closed> {
        let since = |at: u64| now_ms.saturating_sub(at);
        if let Some(at) = self.write_shut_at_ms {
            if since(at) >= LINGER_MS {
                return Err(Closed::Finished);
            }
            return Ok(());
        }
        if self
            .over_outbound_since_ms
            .is_some_and(|at| since(at) >= limits.idle_timeout_ms)
        {
            return Err(Closed::Limit(
                "unsent answers over the limit for the idle timeout",
            ));
        }
        let backpressured = !self.has_room(limits);
        if self.reading == Reading::Open
            && !backpressured
            && self
                .partial_since_ms
                .is_some_and(|at| since(at) >= limits.partial_line_timeout_ms)
        {
            return Err(Closed::Limit(
                "a line unfinished for the partial-line timeout",
            ));
        }
        if idle_applies
            && self.answers.is_empty()
            && self.unsent_bytes() == 0
            && since(self.last_activity_ms) >= limits.idle_timeout_ms
        {
            return Err(Closed::Limit("idle for the idle timeout"));
        }
        Ok(())
    }
}
