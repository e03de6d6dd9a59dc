//! A small blocking client of the coordinator's client port (8080).
//!
//! It exists so that the console, the one-shot commands, `bench` and the end-to-end tests
//! speak the wire protocol through one piece of code: encoding with
//! [`ringkv_core::proto::Envelope`], framing answers with [`LineSplitter`], decoding them
//! as [`ClientResponse`]. Requests may be pipelined: [`Client::send`] several, then
//! [`Client::recv`] their answers, which come back in request order.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringkv_core::limits::DEFAULT_MAX_FRAME_BYTES;
use ringkv_core::proto::{
    ClientRequest, ClientResponse, Envelope, ErrorCode, LineEvent, LineSplitter, RequestId,
    WireMessage,
};

/// How long connecting may take before the client gives up.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// How long one write or one read may take by default (`--io-timeout-ms`): above two of
/// the store's default phase-1 timeouts (an update may wait one for its key's turn and
/// one for its votes), so that a write reported failed for want of an answer has had
/// the time to be decided.
pub const DEFAULT_IO_TIMEOUT_MS: u64 = 30_000;

/// The I/O timeout of every client this process makes, set once from the command line.
static IO_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_IO_TIMEOUT_MS);

/// Sets the I/O timeout of every client made from now on in this process
/// (`--io-timeout-ms`); at least 1 ms.
pub fn set_io_timeout_ms(timeout_ms: u64) {
    IO_TIMEOUT_MS.store(timeout_ms.max(1), Ordering::Relaxed);
}

/// The I/O timeout clients of this process use: for the commands that talk to the store
/// over sockets of their own (bench, the eventual console).
pub fn io_timeout_ms() -> u64 {
    IO_TIMEOUT_MS.load(Ordering::Relaxed)
}

/// Bytes read from the socket at once: many pipelined answers fit in one read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How a [`Client`] connects and frames; the defaults suit interactive use and tests.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The longest wait for a connection to be set up.
    pub connect_timeout_ms: u64,
    /// The longest wait for one write or one read; a slower store counts as failed.
    pub io_timeout_ms: u64,
    /// Whether requests carry an `"id"`, so that every answer is checked against its
    /// request. Off when the caller shows the raw answer line to a person.
    pub tag_requests: bool,
    /// The longest answer line accepted. Twice the protocol's frame limit: the largest
    /// answer (a 256 KiB value written with `\u` escapes, plus its key) stays far below it.
    pub max_frame_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout_ms: DEFAULT_TIMEOUT_MS,
            io_timeout_ms: io_timeout_ms(),
            tag_requests: true,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES.saturating_mul(2),
        }
    }
}

/// Why a request got no answer. Every variant means "the store did not answer", as
/// opposed to an error answer ([`ClientResponse::Error`]), which the store did give.
#[derive(Debug)]
pub enum ClientError {
    /// The address is not `host:port`, or the host did not resolve.
    Resolve {
        /// The address as given.
        addr: String,
        /// Why, when the resolver said.
        source: Option<io::Error>,
    },
    /// No connection could be made to any resolved address.
    Connect {
        /// The address as given.
        addr: String,
        /// The last attempt's error.
        source: io::Error,
    },
    /// Sending or receiving failed.
    Io {
        /// The peer.
        addr: String,
        /// The system's error.
        source: io::Error,
    },
    /// The store did not answer within the I/O timeout.
    TimedOut {
        /// The peer.
        addr: String,
        /// The timeout that passed.
        after_ms: u64,
    },
    /// The store closed the connection before answering.
    Closed {
        /// The peer.
        addr: String,
    },
    /// An earlier failure left the connection in an unknown state; connect again.
    Broken {
        /// The peer.
        addr: String,
    },
    /// The store answered something that is not a valid answer, or out of order.
    Protocol {
        /// The peer.
        addr: String,
        /// What was wrong.
        detail: String,
    },
}

impl ClientError {
    /// Whether the request may have reached the store before the failure: then an update
    /// may have taken effect although no answer came.
    pub fn may_have_reached_the_store(&self) -> bool {
        !matches!(
            self,
            ClientError::Resolve { .. } | ClientError::Connect { .. }
        )
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Resolve { addr, source } => match source {
                Some(err) => write!(f, "cannot resolve {addr}: {err}"),
                None => write!(f, "cannot resolve {addr}: expected host:port"),
            },
            ClientError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
            ClientError::Io { addr, source } => write!(f, "connection to {addr} failed: {source}"),
            ClientError::TimedOut { addr, after_ms } => {
                write!(f, "{addr} did not answer within {after_ms} ms")
            }
            ClientError::Closed { addr } => {
                write!(f, "{addr} closed the connection before answering")
            }
            ClientError::Broken { addr } => write!(
                f,
                "the connection to {addr} failed earlier and cannot be used; connect again"
            ),
            ClientError::Protocol { addr, detail } => {
                write!(f, "unexpected answer from {addr}: {detail}")
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Resolve {
                source: Some(err), ..
            } => Some(err),
            ClientError::Connect { source, .. } | ClientError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One answer: decoded for programs, and the line as it came for `--json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The decoded answer.
    pub response: ClientResponse,
    /// The answer line without its line end.
    pub raw: String,
}

/// A persistent connection to the coordinator's client port.
#[derive(Debug)]
pub struct Client {
    addr: String,
    stream: TcpStream,
    options: ClientOptions,
    splitter: LineSplitter,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    /// The ids of the requests sent and not yet answered, oldest first.
    pending: VecDeque<Option<RequestId>>,
    next_id: u64,
    /// Set after a failure that leaves unknown bytes in flight.
    broken: bool,
}

impl Client {
    /// Connects to `addr` (`host:port`) with the default options.
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientOptions::default())
    }

    /// Connects to `addr` (`host:port`), trying each address it resolves to.
    pub fn connect_with(addr: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let targets: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|err| ClientError::Resolve {
                addr: addr.to_owned(),
                source: Some(err),
            })?
            .collect();
        let connect_timeout = Duration::from_millis(options.connect_timeout_ms.max(1));
        let mut last_err = None;
        for target in &targets {
            match TcpStream::connect_timeout(target, connect_timeout) {
                Ok(stream) => return Client::from_stream(addr, stream, options),
                Err(err) => last_err = Some(err),
            }
        }
        Err(match last_err {
            Some(source) => ClientError::Connect {
                addr: addr.to_owned(),
                source,
            },
            None => ClientError::Resolve {
                addr: addr.to_owned(),
                source: None,
            },
        })
    }

    fn from_stream(
        addr: &str,
        stream: TcpStream,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let io_timeout = Some(Duration::from_millis(options.io_timeout_ms.max(1)));
        let setup = stream
            .set_read_timeout(io_timeout)
            .and_then(|()| stream.set_write_timeout(io_timeout))
            // Requests are small lines; waiting to coalesce them would add a delayed-ACK
            // round to every pipelined batch.
            .and_then(|()| stream.set_nodelay(true));
        if let Err(source) = setup {
            return Err(ClientError::Io {
                addr: addr.to_owned(),
                source,
            });
        }
        Ok(Client {
            addr: addr.to_owned(),
            stream,
            splitter: LineSplitter::new(options.max_frame_bytes),
            options,
            read_buf: vec![0; READ_CHUNK_BYTES],
            write_buf: Vec::with_capacity(256),
            pending: VecDeque::new(),
            next_id: 1,
            broken: false,
        })
    }

    /// The address this client was asked to connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Requests sent whose answers were not received yet.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether the connection still looks usable: not failed earlier, and not closed by
    /// the store while idle (it closes idle connections after a while). Lets a console
    /// reconnect before sending instead of losing a request to a dead connection.
    pub fn is_usable(&mut self) -> bool {
        if self.broken {
            return false;
        }
        if !self.pending.is_empty() {
            return true;
        }
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let alive = match self.stream.peek(&mut probe) {
            Ok(0) => false,
            // Bytes nobody asked for (an `overloaded` at the connection limit) mean the
            // store is about to close this connection.
            Ok(_) => false,
            Err(err) => err.kind() == ErrorKind::WouldBlock,
        };
        alive && self.stream.set_nonblocking(false).is_ok()
    }

    /// Sends one request without waiting for its answer (pipelining).
    pub fn send(&mut self, request: &ClientRequest) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Broken {
                addr: self.addr.clone(),
            });
        }
        let id = if self.options.tag_requests {
            let id = RequestId::Unsigned(self.next_id);
            self.next_id = self.next_id.wrapping_add(1);
            Some(id)
        } else {
            None
        };
        self.write_buf.clear();
        Envelope::with_id(id.clone(), request.clone()).encode_into(&mut self.write_buf);
        if let Err(err) = self.stream.write_all(&self.write_buf) {
            return Err(self.fail(err));
        }
        self.pending.push_back(id);
        Ok(())
    }

    /// Receives the answer to the oldest request in flight.
    pub fn recv(&mut self) -> Result<Answer, ClientError> {
        if self.broken {
            return Err(ClientError::Broken {
                addr: self.addr.clone(),
            });
        }
        let Some(expected) = self.pending.pop_front() else {
            return Err(ClientError::Protocol {
                addr: self.addr.clone(),
                detail: "no request is waiting for an answer".into(),
            });
        };
        let line = self.read_line()?;
        let envelope = ClientResponse::decode(&line).map_err(|err| {
            self.broken = true;
            ClientError::Protocol {
                addr: self.addr.clone(),
                detail: format!("{}: {}", err.code, err.message),
            }
        })?;
        if envelope.id != expected && !is_untagged_error(&envelope) {
            self.broken = true;
            return Err(ClientError::Protocol {
                addr: self.addr.clone(),
                detail: format!(
                    "the answer's id {:?} does not match the request's id {:?}",
                    envelope.id, expected
                ),
            });
        }
        Ok(Answer {
            response: envelope.msg,
            raw: String::from_utf8_lossy(&line).into_owned(),
        })
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, request: &ClientRequest) -> Result<Answer, ClientError> {
        self.send(request)?;
        self.recv()
    }

    /// The next whole line from the store.
    fn read_line(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            match self.splitter.next_event() {
                Some(LineEvent::Line(line)) => return Ok(line),
                Some(LineEvent::TooLarge) => {
                    self.broken = true;
                    return Err(ClientError::Protocol {
                        addr: self.addr.clone(),
                        detail: format!(
                            "an answer line is longer than {} bytes",
                            self.options.max_frame_bytes
                        ),
                    });
                }
                None => {}
            }
            let read = self.stream.read(&mut self.read_buf);
            match read {
                Ok(0) => {
                    // A last answer without its `\n` still counts.
                    if let Some(LineEvent::Line(line)) = self.splitter.finish() {
                        self.broken = true;
                        return Ok(line);
                    }
                    self.broken = true;
                    return Err(ClientError::Closed {
                        addr: self.addr.clone(),
                    });
                }
                Ok(n) => {
                    let bytes = self.read_buf.get(..n).unwrap_or(&[]);
                    self.splitter.push(bytes);
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(self.fail(err)),
            }
        }
    }

    /// Marks the connection unusable and turns the system's error into ours.
    fn fail(&mut self, err: io::Error) -> ClientError {
        self.broken = true;
        match err.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::TimedOut {
                addr: self.addr.clone(),
                after_ms: self.options.io_timeout_ms,
            },
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => ClientError::Closed {
                addr: self.addr.clone(),
            },
            _ => ClientError::Io {
                addr: self.addr.clone(),
                source: err,
            },
        }
    }
}

/// Errors the store sends without an id: a line it could not read as JSON, one over the
/// frame limit, or the `overloaded` of a full port. They still answer the oldest request.
fn is_untagged_error(envelope: &Envelope<ClientResponse>) -> bool {
    envelope.id.is_none()
        && matches!(
            &envelope.msg,
            ClientResponse::Error(reply) if matches!(
                reply.code,
                ErrorCode::Malformed | ErrorCode::FrameTooLarge | ErrorCode::Overloaded
            )
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A one-connection fake store that answers each line with `answer(line)`.
    fn fake_store(answer: fn(&str) -> String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            for line in io::BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let reply = answer(&line);
                if writer.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
        });
        addr
    }

    fn echo_id(line: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = &value["id"];
        format!("{{\"type\":\"resp\",\"message\":\"Success\",\"id\":{id}}}\n")
    }

    #[test]
    fn pipelined_answers_match_their_requests() {
        let addr = fake_store(echo_id);
        let mut client = Client::connect(&addr).unwrap();
        for n in 0..5 {
            client
                .send(&ClientRequest::Get {
                    key: format!("k{n}"),
                })
                .unwrap();
        }
        assert_eq!(client.in_flight(), 5);
        for _ in 0..5 {
            let answer = client.recv().unwrap();
            assert_eq!(answer.response, ClientResponse::Success);
        }
        assert_eq!(client.in_flight(), 0);
        assert!(client.is_usable());
    }

    #[test]
    fn a_wrong_id_breaks_the_connection() {
        let addr =
            fake_store(|_| "{\"type\":\"resp\",\"message\":\"Success\",\"id\":999}\n".into());
        let mut client = Client::connect(&addr).unwrap();
        let err = client.call(&ClientRequest::Status).unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
        assert!(matches!(
            client.call(&ClientRequest::Status),
            Err(ClientError::Broken { .. })
        ));
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        let addr = fake_store(|_| "\u{1}not json\n".into());
        let mut client = Client::connect(&addr).unwrap();
        assert!(matches!(
            client.call(&ClientRequest::Status),
            Err(ClientError::Protocol { .. })
        ));
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        assert!(matches!(
            Client::connect(&addr),
            Err(ClientError::Connect { .. })
        ));
        assert!(matches!(
            Client::connect("no-port-here"),
            Err(ClientError::Resolve { .. })
        ));
    }
}
