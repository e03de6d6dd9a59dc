//! Every connection of the load on one event-driven thread (mio): each keeps up to
//! `pipeline` requests in flight, times each from send to answer, and carries on over a
//! new connection if the old one drops. One thread, whatever the number of connections,
//! so that the load generator takes little of the CPU it measures.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use ringkv_core::limits::DEFAULT_MAX_FRAME_BYTES;
use ringkv_core::proto::{
    ClientRequest, ClientResponse, Consistency, Envelope, ErrorCode, EventualRequest,
    EventualResponse, LineEvent, LineSplitter, NodeMessage, WireMessage, WriteOp,
};

use super::report::{OpKind, Tally};

/// Bytes read from a socket at once: many pipelined answers fit in one read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The longest wait in one poll, so that the stop flag and the progress callback are
/// looked at this often even when nothing arrives.
const POLL_WAIT_MS: u64 = 50;

/// Hands out the next operation for connection `conn`, or `None` when the load is done.
pub trait OpSource {
    /// The next operation for connection `conn`.
    fn next_op(&mut self, conn: usize) -> Option<(OpKind, ClientRequest)>;
}

impl<F: FnMut(usize) -> Option<(OpKind, ClientRequest)>> OpSource for F {
    fn next_op(&mut self, conn: usize) -> Option<(OpKind, ClientRequest)> {
        self(conn)
    }
}

/// One connection of the load.
struct Conn {
    stream: TcpStream,
    splitter: LineSplitter,
    out: Vec<u8>,
    out_pos: usize,
    in_flight: VecDeque<(OpKind, Instant)>,
    /// The op source has nothing more for this connection.
    exhausted: bool,
    /// The level of an eventual-mode node's requests; `None` speaks strong mode.
    level: Option<Consistency>,
}

/// The connections and their poller.
pub struct Driver {
    addrs: Vec<SocketAddr>,
    poll: Poll,
    conns: Vec<Conn>,
    scratch: Vec<u8>,
    level: Option<Consistency>,
}

impl Driver {
    /// Opens `connections` connections to `addr`; with `level`, every request is an
    /// eventual-mode node's, at that consistency level.
    pub fn connect(
        addr: &str,
        connections: usize,
        level: Option<Consistency>,
    ) -> Result<Driver, String> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|err| format!("{addr} is not a usable HOST:PORT: {err}"))?
            .collect();
        let poll = Poll::new().map_err(|err| format!("cannot create a poller: {err}"))?;
        let mut driver = Driver {
            addrs,
            poll,
            conns: Vec::with_capacity(connections),
            scratch: vec![0; READ_CHUNK_BYTES],
            level,
        };
        for index in 0..connections {
            let conn = driver.open(index)?;
            driver.conns.push(conn);
        }
        Ok(driver)
    }

    fn open(&self, index: usize) -> Result<Conn, String> {
        let mut last_err = None;
        for addr in &self.addrs {
            match std::net::TcpStream::connect_timeout(addr, Duration::from_secs(10)) {
                Ok(stream) => {
                    let setup = stream
                        .set_nodelay(true)
                        .and_then(|()| stream.set_nonblocking(true));
                    if let Err(err) = setup {
                        return Err(format!("cannot set up a connection to {addr}: {err}"));
                    }
                    let mut stream = TcpStream::from_std(stream);
                    self.poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(index),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .map_err(|err| format!("cannot register a connection: {err}"))?;
                    return Ok(Conn {
                        stream,
                        // Answers are at most a value and a key, far below twice the
                        // request frame limit.
                        splitter: LineSplitter::new(DEFAULT_MAX_FRAME_BYTES.saturating_mul(2)),
                        out: Vec::with_capacity(4096),
                        out_pos: 0,
                        in_flight: VecDeque::new(),
                        exhausted: false,
                        level: self.level,
                    });
                }
                Err(err) => last_err = Some(format!("cannot connect to {addr}: {err}")),
            }
        }
        Err(last_err.unwrap_or_else(|| "the address resolves to nothing".into()))
    }

    /// Runs `source` to its end over every connection, adding what was answered to
    /// `tally`; `tick` is called about every [`POLL_WAIT_MS`] with the operations done
    /// so far. Fails only if a dropped connection cannot be made again.
    pub fn run(
        &mut self,
        pipeline: usize,
        source: &mut impl OpSource,
        tally: &mut Tally,
        mut tick: impl FnMut(u64),
    ) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        for conn in &mut self.conns {
            conn.exhausted = false;
        }
        let mut done = 0;
        loop {
            for index in 0..self.conns.len() {
                self.fill(index, pipeline, source, tally)?;
            }
            if self
                .conns
                .iter()
                .all(|conn| conn.exhausted && conn.in_flight.is_empty())
            {
                tally.finish();
                return Ok(());
            }
            match self
                .poll
                .poll(&mut events, Some(Duration::from_millis(POLL_WAIT_MS)))
            {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(format!("waiting for answers failed: {err}")),
            }
            for event in &events {
                let index = event.token().0;
                done += self.read(index, tally)?;
            }
            done += self.expire(tally)?;
            tick(done);
        }
    }

    /// Tops up connection `index` to `pipeline` requests in flight and sends them.
    fn fill(
        &mut self,
        index: usize,
        pipeline: usize,
        source: &mut impl OpSource,
        tally: &mut Tally,
    ) -> Result<(), String> {
        let Some(conn) = self.conns.get_mut(index) else {
            return Ok(());
        };
        while !conn.exhausted && conn.in_flight.len() < pipeline {
            let Some((kind, request)) = source.next_op(index) else {
                conn.exhausted = true;
                break;
            };
            encode(request, conn.level, &mut conn.out);
            conn.in_flight.push_back((kind, Instant::now()));
        }
        if let Err(err) = conn.write_out() {
            self.replace(index, tally, &err)?;
        }
        Ok(())
    }

    /// Reads what connection `index` has; returns the operations answered.
    fn read(&mut self, index: usize, tally: &mut Tally) -> Result<u64, String> {
        let Some(conn) = self.conns.get_mut(index) else {
            return Ok(0);
        };
        match conn.read_answers(&mut self.scratch, tally) {
            Ok(answered) => Ok(answered),
            Err(err) => {
                let lost = self.replace(index, tally, &err)?;
                Ok(lost)
            }
        }
    }

    /// Replaces connections whose oldest request waited too long; returns the operations
    /// counted lost.
    fn expire(&mut self, tally: &mut Tally) -> Result<u64, String> {
        // A connection whose oldest request waits this long for an answer counts as lost.
        let timeout = Duration::from_millis(crate::client::io_timeout_ms());
        let stuck: Vec<usize> = (0..self.conns.len())
            .filter(|&index| {
                self.conns.get(index).is_some_and(|conn| {
                    conn.in_flight
                        .front()
                        .is_some_and(|(_, sent_at)| sent_at.elapsed() >= timeout)
                })
            })
            .collect();
        let mut lost = 0;
        for index in stuck {
            lost += self.replace(index, tally, "no answer within 10 s")?;
        }
        Ok(lost)
    }

    /// Counts what connection `index` had in flight as lost and connects it again;
    /// returns how many operations were lost.
    fn replace(&mut self, index: usize, tally: &mut Tally, why: &str) -> Result<u64, String> {
        tracing::warn!(connection = index, why, "connection lost; reconnecting");
        let fresh = self.open(index)?;
        let Some(conn) = self.conns.get_mut(index) else {
            return Ok(0);
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let lost = conn.in_flight.len() as u64;
        let exhausted = conn.exhausted;
        *conn = fresh;
        conn.exhausted = exhausted;
        tally.lost(lost);
        Ok(lost)
    }
}

impl Conn {
    /// Writes as much of the queued requests as the socket takes.
    fn write_out(&mut self) -> Result<(), String> {
        while self.out_pos < self.out.len() {
            let unsent = self.out.get(self.out_pos..).unwrap_or_default();
            match self.stream.write(unsent) {
                Ok(0) => return Err("the connection took no bytes".into()),
                Ok(n) => self.out_pos += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("sending failed: {err}")),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads until the socket would block; returns the operations answered.
    fn read_answers(&mut self, scratch: &mut [u8], tally: &mut Tally) -> Result<u64, String> {
        let mut answered = 0;
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Err("the store closed the connection".into()),
                Ok(n) => self.splitter.push(scratch.get(..n).unwrap_or_default()),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("receiving failed: {err}")),
            }
            while let Some(event) = self.splitter.next_event() {
                let LineEvent::Line(line) = event else {
                    return Err("an answer over the frame limit".into());
                };
                let Some((kind, sent_at)) = self.in_flight.pop_front() else {
                    return Err("an answer to no request".into());
                };
                let error = match self.level {
                    Some(_) => node_error(&line)?,
                    None => strong_error(&line)?,
                };
                match error {
                    Answered::Code(code) => tally.answered(kind, sent_at.elapsed(), code),
                    Answered::Timeout => tally.timed_out(kind, sent_at.elapsed()),
                }
                answered += 1;
            }
        }
        Ok(answered)
    }
}

/// What an answer said, for the tally.
enum Answered {
    /// Success (`None`) or an error code.
    Code(Option<ErrorCode>),
    /// An eventual-mode node's `timeout`: too few replicas answered in time.
    Timeout,
}

fn strong_error(line: &[u8]) -> Result<Answered, String> {
    match Envelope::<ClientResponse>::decode(line) {
        Ok(Envelope {
            msg: ClientResponse::Error(reply),
            ..
        }) => Ok(Answered::Code(Some(reply.code))),
        Ok(_) => Ok(Answered::Code(None)),
        Err(err) => Err(format!("an answer that does not decode: {err}")),
    }
}

fn node_error(line: &[u8]) -> Result<Answered, String> {
    match Envelope::<EventualResponse>::decode(line) {
        Ok(envelope) => Ok(match envelope.msg {
            EventualResponse::Error(reply) => Answered::Code(Some(reply.code)),
            EventualResponse::NotFound { .. } => Answered::Code(Some(ErrorCode::NotFound)),
            EventualResponse::Timeout => Answered::Timeout,
            _ => Answered::Code(None),
        }),
        Err(err) => Err(format!("an answer that does not decode: {err}")),
    }
}

/// A request as strong mode, or an eventual-mode node at `level`, takes it.
fn encode(request: ClientRequest, level: Option<Consistency>, out: &mut Vec<u8>) {
    let Some(consistency) = level else {
        request.encode_into(None, out);
        return;
    };
    let eventual = match request {
        ClientRequest::Get { key } => EventualRequest::Get { key, consistency },
        ClientRequest::Put { key, value } => EventualRequest::Write {
            key,
            op: WriteOp::Put(value),
            consistency,
            context: None,
        },
        ClientRequest::Del { key } => EventualRequest::Write {
            key,
            op: WriteOp::Del,
            consistency,
            context: None,
        },
        ClientRequest::Status => EventualRequest::Status,
    };
    NodeMessage::Client(eventual).encode_into(None, out);
}
