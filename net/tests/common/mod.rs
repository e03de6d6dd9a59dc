//! Helpers of the loopback tests: roles on threads, and a line-speaking client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown as SocketShutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringkv_core::coordinator::CoordinatorConfig;
use ringkv_core::proto::{ClientResponse, Envelope, WireMessage};
use ringkv_core::replica::ReplicaConfig;
use ringkv_net::{
    run_coordinator, run_server, CoordinatorAddrs, CoordinatorOptions, NetError, NetLimits,
    ServerInfo, ServerOptions, Shutdown,
};

/// How long any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A role running on its own thread, stopped and joined on drop.
pub struct Running<T> {
    pub info: T,
    pub shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), NetError>>>,
}

impl<T> Running<T> {
    /// Stops the role and returns how it ended.
    pub fn stop(mut self) -> Result<(), NetError> {
        self.shutdown.trigger();
        let thread = self.thread.take().expect("joined once");
        thread.join().expect("the role's thread panicked")
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn start_coordinator(expected: usize, limits: NetLimits) -> Running<CoordinatorAddrs> {
    let shutdown = Shutdown::new();
    let (tx, rx) = mpsc::channel();
    let opts = CoordinatorOptions {
        client_addr: loopback(),
        server_addr: loopback(),
        resp_addr: Some(ringkv_net::resp::RespListen::exactly(loopback())),
        config: CoordinatorConfig::new(expected),
        data_dir: None,
        limits,
        truncate_corrupt_log: false,
        log_compact_bytes: ringkv_net::DEFAULT_LOG_COMPACT_BYTES,
    };
    let stop = shutdown.clone();
    let thread = std::thread::spawn(move || {
        run_coordinator(opts, stop, |addrs| {
            let _ = tx.send(addrs);
        })
    });
    let info = rx
        .recv_timeout(WAIT)
        .expect("the coordinator did not start");
    Running {
        info,
        shutdown,
        thread: Some(thread),
    }
}

pub fn server_options(coordinator: SocketAddr, dir: &Path, id: Option<u64>) -> ServerOptions {
    ServerOptions {
        id,
        coordinator: coordinator.to_string(),
        data_dir: dir.to_path_buf(),
        listen: loopback(),
        advertise_host: None,
        replica: ReplicaConfig::default(),
        limits: NetLimits::default(),
        truncate_corrupt_log: false,
        segment_bytes: ringkv_net::DEFAULT_SEGMENT_BYTES,
    }
}

pub fn start_server(opts: ServerOptions) -> Running<ServerInfo> {
    let shutdown = Shutdown::new();
    let (tx, rx) = mpsc::channel();
    let stop = shutdown.clone();
    let thread = std::thread::spawn(move || {
        run_server(opts, stop, |info| {
            let _ = tx.send(info.clone());
        })
    });
    let info = match rx.recv_timeout(WAIT) {
        Ok(info) => info,
        Err(_) => panic!("the server did not start: {:?}", thread.join()),
    };
    Running {
        info,
        shutdown,
        thread: Some(thread),
    }
}

/// A coordinator and its KV servers, each with a data directory.
pub struct Cluster {
    pub coordinator: Running<CoordinatorAddrs>,
    pub servers: Vec<Running<ServerInfo>>,
    pub dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// A coordinator expecting `n` servers, and those servers (IDs 1..=n), ring complete.
    pub fn start(n: usize) -> Cluster {
        let coordinator = start_coordinator(n, NetLimits::default());
        let mut servers = Vec::new();
        let mut dirs = Vec::new();
        for id in 1..=n as u64 {
            let dir = tempfile::tempdir().expect("a temporary directory");
            servers.push(start_server(server_options(
                coordinator.info.server,
                dir.path(),
                Some(id),
            )));
            dirs.push(dir);
        }
        let cluster = Cluster {
            coordinator,
            servers,
            dirs,
        };
        cluster.wait_for_servers(n);
        cluster
    }

    pub fn client(&self) -> Client {
        Client::connect(self.coordinator.info.client)
    }

    /// Waits until `statusreq` lists `n` servers, all up.
    pub fn wait_for_servers(&self, n: usize) {
        let mut client = self.client();
        let deadline = Instant::now() + WAIT;
        loop {
            if let ClientResponse::Status { servers, .. } =
                client.ask(r#"{"type":"statusreq"}"#).msg
            {
                if servers.len() == n && servers.iter().all(|s| s.up) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the servers did not register");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A blocking client that speaks lines.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let writer = stream.try_clone().expect("clone");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.writer.write_all(bytes.as_ref()).expect("write");
    }

    /// The next line, without its `\n`; `None` at EOF.
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a line");
        if n == 0 {
            return None;
        }
        assert!(line.ends_with('\n'), "a line without end: {line:?}");
        line.pop();
        Some(line)
    }

    /// The next answer, decoded.
    pub fn answer(&mut self) -> Envelope<ClientResponse> {
        let line = self.line().expect("an answer, not EOF");
        ClientResponse::decode(line.as_bytes())
            .unwrap_or_else(|err| panic!("undecodable answer {line:?}: {err}"))
    }

    /// Sends one request line and returns its answer.
    pub fn ask(&mut self, request: &str) -> Envelope<ClientResponse> {
        self.send(format!("{request}\n"));
        self.answer()
    }

    /// Reads until EOF and returns everything left.
    pub fn rest(&mut self) -> String {
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).expect("read to EOF");
        rest
    }

    pub fn half_close(&mut self) {
        self.writer
            .shutdown(SocketShutdown::Write)
            .expect("shutdown");
    }
}

/// The error code of an answer, or a panic naming what came instead.
pub fn error_code(answer: &Envelope<ClientResponse>) -> &'static str {
    match &answer.msg {
        ClientResponse::Error(reply) => reply.code.as_str(),
        other => panic!("expected an error answer, got {other:?}"),
    }
}
