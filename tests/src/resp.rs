//! A small RESP2 client for the end-to-end tests of the RESP port: it sends commands as
//! multibulks (or raw bytes) and parses every reply type, as any Redis client would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text`.
    Simple(String),
    /// `-text`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` bytes, or `$-1` (nil).
    Bulk(Option<Vec<u8>>),
    /// `*n` replies, or `*-1` (nil).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A bulk reply holding `text`.
    pub fn bulk(text: &str) -> Reply {
        Reply::Bulk(Some(text.as_bytes().to_vec()))
    }

    /// The error's text, if this is an error.
    pub fn error_text(&self) -> Option<&str> {
        match self {
            Reply::Error(text) => Some(text),
            _ => None,
        }
    }
}

/// The bytes of a command as a multibulk.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A connection to a RESP port.
pub struct RespClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RespClient {
    /// Connects, with a 20 s read timeout so that a missing reply fails the test.
    pub fn connect(addr: SocketAddr) -> RespClient {
        let stream = TcpStream::connect(addr).expect("the RESP port accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a read timeout");
        let writer = stream.try_clone().expect("a second handle");
        RespClient {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Connects, or `None` if nothing listens (a process being restarted).
    pub fn try_connect(addr: SocketAddr) -> Option<RespClient> {
        let stream = TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .ok()?;
        let writer = stream.try_clone().ok()?;
        Some(RespClient {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one command and reads its reply, or `None` if the connection broke first
    /// (the command's outcome is then unknown).
    pub fn try_call(&mut self, args: &[&str]) -> Option<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.writer.write_all(&encode_command(&args)).ok()?;
        self.try_recv()
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("the RESP port reads");
    }

    /// Sends one command as a multibulk.
    pub fn send(&mut self, args: &[&str]) {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.send_raw(&encode_command(&args));
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Reply {
        self.send(args);
        self.recv()
    }

    /// Reads one reply; panics on EOF or a reply that is not RESP.
    pub fn recv(&mut self) -> Reply {
        self.try_recv().expect("a reply before EOF")
    }

    /// Reads one reply, or `None` at EOF (or a reset).
    pub fn try_recv(&mut self) -> Option<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1);
        let reply = match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Integer(rest.parse().expect("an integer reply")),
            "$" => {
                let len: i64 = rest.parse().expect("a bulk length");
                if len < 0 {
                    return Some(Reply::Bulk(None));
                }
                let mut body = vec![0; len as usize + 2];
                self.reader.read_exact(&mut body).ok()?;
                assert_eq!(&body[len as usize..], b"\r\n", "a bulk ends with CRLF");
                body.truncate(len as usize);
                Reply::Bulk(Some(body))
            }
            "*" => {
                let len: i64 = rest.parse().expect("an array length");
                if len < 0 {
                    return Some(Reply::Array(None));
                }
                let mut items = Vec::new();
                for _ in 0..len {
                    items.push(self.try_recv()?);
                }
                Reply::Array(Some(items))
            }
            other => panic!("not a RESP reply: {other}{rest}"),
        };
        Some(reply)
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                assert!(
                    line.ends_with("\r\n"),
                    "a reply line ends with CRLF: {line:?}"
                );
                line.truncate(line.len() - 2);
                Some(line)
            }
        }
    }

    /// Half-closes our side: the port answers what it read, then closes.
    pub fn finish_sending(&mut self) {
        self.writer.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Whether the port closed the connection (EOF, or a reset), with no reply pending.
    /// A read that times out is no close: it fails the test, since a port that keeps the
    /// connection open when it should close it would otherwise pass, 20 s later.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) if is_reset(err.kind()) => true,
            Err(err) => panic!("the port neither closed the connection nor answered: {err}"),
        }
    }
}

/// Errors that mean the peer closed the connection (with unread data, a reset).
fn is_reset(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(kind, ConnectionReset | ConnectionAborted | BrokenPipe)
}
