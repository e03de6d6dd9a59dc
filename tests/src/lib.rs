//! A harness for end-to-end tests: starts `ringkv coordinator` and `ringkv server`
//! processes on loopback with free ports, and speaks the wire protocol to them as any
//! outside client would (raw JSON lines over TCP).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod eventual;
pub mod log_sizes;
pub mod nemesis;
pub mod peer;
pub mod resp;

/// The `ringkv` binary of this build: next to the test executable's `deps` folder, or
/// named by `RINGKV_BIN`.
pub fn ringkv_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("RINGKV_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows where it runs");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = dir.join("ringkv");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p ringkv` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A child process that is killed when dropped, so that no test leaves one behind.
pub struct Proc {
    child: Child,
    /// The lines it printed on stdout while starting.
    pub lines: Vec<String>,
}

impl Proc {
    /// Starts `ringkv ARGS` and reads stdout until `ready` says the lines so far suffice.
    pub fn start(args: &[&str], ready: impl Fn(&[String]) -> bool) -> Proc {
        let mut child = Command::new(ringkv_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ringkv starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut proc = Proc {
            child,
            lines: Vec::new(),
        };
        let mut reader = BufReader::new(stdout);
        while !ready(&proc.lines) {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("stdout readable");
            assert!(
                n > 0,
                "ringkv {args:?} exited before it was ready: {:?}",
                proc.lines
            );
            proc.lines.push(line.trim_end().to_owned());
        }
        // Keep draining stdout so that the child never blocks on a full pipe.
        std::thread::spawn(move || drain(reader));
        proc
    }

    /// The address printed on the line starting with `label`.
    pub fn addr(&self, label: &str) -> SocketAddr {
        self.value(label).parse().expect("an address")
    }

    /// The text after `label ` on the line that starts with it.
    pub fn value(&self, label: &str) -> String {
        let prefix = format!("{label} ");
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {label:?} line in {:?}", self.lines))
            .trim()
            .to_owned()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP` to pause the process, `CONT` to resume it).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Pauses the process (SIGSTOP) for `pause`, then resumes it: to its peers it is a
    /// node that stopped answering and came back with everything it held, as after a
    /// long garbage-collection pause or a partition that healed.
    pub fn pause_for(&self, pause: Duration) {
        self.signal("STOP");
        std::thread::sleep(pause);
        self.signal("CONT");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn drain(mut reader: BufReader<ChildStdout>) {
    let mut sink = [0u8; 4096];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn has(labels: &'static [&'static str]) -> impl Fn(&[String]) -> bool {
    move |lines| {
        labels
            .iter()
            .all(|label| lines.iter().any(|l| l.starts_with(&format!("{label} "))))
    }
}

fn start_coordinator(client: &str, server: &str, expected: usize, flags: &[String]) -> Proc {
    let resp = flags.iter().any(|flag| flag == "--resp-addr");
    let expected = expected.to_string();
    let mut args = vec![
        "coordinator",
        "--client-addr",
        client,
        "--server-addr",
        server,
        "--servers",
        &expected,
    ];
    args.extend(flags.iter().map(String::as_str));
    if resp {
        Proc::start(&args, has(&["client", "server", "resp"]))
    } else {
        Proc::start(&args, has(&["client", "server"]))
    }
}

/// A coordinator and its KV servers, each a process, with data in a temporary directory.
pub struct Cluster {
    /// The coordinator process.
    pub coordinator: Proc,
    /// The KV server processes, by index; `None` while killed.
    pub servers: Vec<Option<Proc>>,
    /// Each server's ring ID.
    pub ids: Vec<u64>,
    /// The clients' port.
    pub client_addr: SocketAddr,
    /// The servers' registration port.
    pub server_addr: SocketAddr,
    /// The coordinator's flags beyond its addresses and server count.
    coordinator_flags: Vec<String>,
    /// Flags every server is started with, restarts included.
    server_flags: Vec<String>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a coordinator expecting `ids.len()` servers, with extra flags and a data
    /// directory of its own, and the servers, and waits until the ring is complete.
    pub fn start(ids: &[u64], coordinator_flags: &[&str]) -> Cluster {
        Cluster::start_with(ids, coordinator_flags, &[])
    }

    /// [`Cluster::start`], every server (and every restart of one) also given
    /// `server_flags`.
    pub fn start_with(ids: &[u64], coordinator_flags: &[&str], server_flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let coordinator_dir = dir.path().join("coordinator");
        let mut flags: Vec<String> = coordinator_flags.iter().map(|f| f.to_string()).collect();
        flags.push("--data-dir".into());
        flags.push(coordinator_dir.to_str().expect("a UTF-8 path").to_owned());
        let coordinator = start_coordinator("127.0.0.1:0", "127.0.0.1:0", ids.len(), &flags);
        let mut cluster = Cluster {
            client_addr: coordinator.addr("client"),
            server_addr: coordinator.addr("server"),
            coordinator,
            servers: ids.iter().map(|_| None).collect(),
            ids: ids.to_vec(),
            coordinator_flags: flags,
            server_flags: server_flags.iter().map(|f| f.to_string()).collect(),
            dir,
        };
        for i in 0..ids.len() {
            cluster.start_server(i);
        }
        cluster.wait_for_ring(ids.len());
        cluster
    }

    /// SIGKILLs the coordinator and starts a new one on the same ports; the servers must
    /// notice and register again.
    pub fn restart_coordinator(&mut self) {
        self.kill_coordinator();
        self.start_coordinator_again();
    }

    /// SIGKILLs the coordinator; [`Cluster::start_coordinator_again`] brings it back.
    pub fn kill_coordinator(&mut self) {
        self.coordinator.kill();
    }

    /// Starts a coordinator on the same ports and flags as the one killed.
    pub fn start_coordinator_again(&mut self) {
        self.coordinator = start_coordinator(
            &self.client_addr.to_string(),
            &self.server_addr.to_string(),
            self.ids.len(),
            &self.coordinator_flags,
        );
    }

    /// The data directory of server `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("server-{i}"))
    }

    /// Starts (or restarts) server `i` on its data directory.
    pub fn start_server(&mut self, i: usize) {
        self.start_server_on(i, "127.0.0.1:0");
    }

    /// Starts (or restarts) server `i` on its data directory with extra flags.
    pub fn start_server_with(&mut self, i: usize, extra: &[&str]) {
        self.start_server_flags(i, "127.0.0.1:0", extra);
    }

    /// Starts (or restarts) server `i` on its data directory, listening on `listen`.
    pub fn start_server_on(&mut self, i: usize, listen: &str) {
        self.start_server_flags(i, listen, &[]);
    }

    /// Starts (or restarts) server `i` listening on `listen`, with extra flags.
    pub fn start_server_flags_pub(&mut self, i: usize, listen: &str, extra: &[&str]) {
        self.start_server_flags(i, listen, extra);
    }

    fn start_server_flags(&mut self, i: usize, listen: &str, extra: &[&str]) {
        let id = self.ids[i].to_string();
        let coordinator = self.server_addr.to_string();
        let dir = self.data_dir(i);
        let dir = dir.to_str().expect("a UTF-8 temporary path");
        let mut args = vec![
            "server",
            "--id",
            &id,
            "--coordinator",
            &coordinator,
            "--data-dir",
            dir,
            "--listen",
            listen,
        ];
        args.extend(self.server_flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let proc = Proc::start(&args, has(&["listen"]));
        self.servers[i] = Some(proc);
    }

    /// SIGKILLs server `i`.
    pub fn kill_server(&mut self, i: usize) {
        if let Some(mut proc) = self.servers[i].take() {
            proc.kill();
        }
    }

    /// Where server `i` listens for two-phase-commit traffic now.
    pub fn server_listen(&self, i: usize) -> SocketAddr {
        self.servers[i]
            .as_ref()
            .expect("server is running")
            .addr("listen")
    }

    /// Waits until `statusreq` lists `count` servers, all up, at their current addresses.
    pub fn wait_for_ring(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = Client::connect(self.client_addr).request(r#"{"type":"statusreq"}"#);
            let servers = status["servers"].as_array().cloned().unwrap_or_default();
            let running: Vec<String> = self
                .servers
                .iter()
                .flatten()
                .map(|p| p.value("listen"))
                .collect();
            let ready = servers.len() == count
                && servers.iter().all(|s| s["up"] == Value::Bool(true))
                && running
                    .iter()
                    .all(|addr| servers.iter().any(|s| s["addr"].as_str() == Some(addr)));
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "ring never completed: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new connection to the coordinator's RESP port (started with `--resp-addr`).
    pub fn resp(&self) -> resp::RespClient {
        resp::RespClient::connect(self.coordinator.addr("resp"))
    }

    /// A new client connection to the coordinator.
    pub fn client(&self) -> Client {
        Client::connect(self.client_addr)
    }

    /// The indices of the servers that hold `key`: its primary and secondary.
    pub fn replicas_of(&self, key: &str) -> [usize; 2] {
        let ring: ringkv_core::ring::Ring = self.ids.iter().copied().collect();
        let pair = ring.replicas_for_key(key).expect("at least two servers");
        let index = |id: u64| self.ids.iter().position(|&x| x == id).expect("a known id");
        [index(pair.primary), index(pair.secondary)]
    }
}

/// One connection speaking JSON lines.
pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects, with a 15 s read time-out so that a hang fails the test instead of
    /// stalling it.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("time-out set");
        let reader = BufReader::new(stream.try_clone().expect("stream clones"));
        Client { stream, reader }
    }

    /// Connects, or `None` if nothing listens (a coordinator being restarted).
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect(addr).ok()?;
        Some(Client::from_stream(stream))
    }

    /// Sends a line and reads its answer, or `None` if the connection broke first (the
    /// outcome of the request is then unknown).
    pub fn try_request(&mut self, line: &str) -> Option<Value> {
        self.stream.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        match self.reader.read_line(&mut answer) {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_str(&answer).ok(),
        }
    }

    /// Wraps a stream already connected.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("time-out set");
        let reader = BufReader::new(stream.try_clone().expect("stream clones"));
        Client { stream, reader }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("sends");
    }

    /// Sends one line (the `\n` is added).
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// Reads one answer line as JSON; panics at EOF.
    pub fn recv(&mut self) -> Value {
        let line = self.recv_line().expect("an answer before EOF");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer {line:?} is not JSON: {e}"))
    }

    /// Reads one line, or `None` at EOF.
    pub fn recv_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end().to_owned()),
            Err(e) => panic!("reading an answer failed: {e}"),
        }
    }

    /// Sends a line and reads its answer.
    pub fn request(&mut self, line: &str) -> Value {
        self.send(line);
        self.recv()
    }

    /// Half-closes the sending side (the CS162 one-request style).
    pub fn finish_sending(&mut self) {
        self.stream.shutdown(Shutdown::Write).expect("half-closes");
    }

    /// Whether the server closed the connection (EOF within the read time-out).
    pub fn is_closed(&mut self) -> bool {
        self.recv_line().is_none()
    }
}

/// Reads `key` from a KV server's own port until it shows `value` (phase 2 reaches a
/// replica a round trip after the client's answer), for at most 10 s.
pub fn wait_for_replica_value(server: SocketAddr, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut participant = Client::connect(server);
    loop {
        let answer = participant.request(&get(key));
        if answer["value"] == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{server} never showed {key}={value}: {answer}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A PUT request line.
pub fn put(key: &str, value: &str) -> String {
    serde_json::json!({"type": "putreq", "key": key, "value": value}).to_string()
}

/// A GET request line.
pub fn get(key: &str) -> String {
    serde_json::json!({"type": "getreq", "key": key}).to_string()
}

/// A DEL request line.
pub fn del(key: &str) -> String {
    serde_json::json!({"type": "delreq", "key": key}).to_string()
}

/// The `"error"` code of an answer, if it is an error.
pub fn error_code(answer: &Value) -> Option<&str> {
    answer["error"].as_str()
}

/// A TCP forwarder in front of a server that can make every flow open so far go silent
/// (its bytes dropped both ways, the connections left open), as a middlebox that lost
/// them would, while flows opened later are forwarded as usual.
pub struct SilencingProxy {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    /// Flows accepted so far, numbered from 1.
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Flows numbered up to this are silent.
    silent_up_to: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SilencingProxy {
    /// Forwards `listen` to `target`, two threads per flow.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> SilencingProxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind(listen).expect("the proxy binds");
        let addr = listener.local_addr().expect("an address");
        let accepted = Arc::new(AtomicU64::new(0));
        let silent_up_to = Arc::new(AtomicU64::new(0));
        let (count, gate) = (accepted.clone(), silent_up_to.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = TcpStream::connect(target) else {
                    continue;
                };
                let flow = count.fetch_add(1, Ordering::SeqCst) + 1;
                for (from, to) in [
                    (inbound.try_clone(), outbound.try_clone()),
                    (outbound.try_clone(), inbound.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let gate = gate.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                let _ = to.shutdown(Shutdown::Write);
                                break;
                            }
                            let silenced = flow <= gate.load(Ordering::SeqCst);
                            if !silenced && to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        SilencingProxy {
            addr,
            accepted,
            silent_up_to,
        }
    }

    /// Every flow open now goes silent for good; later flows are forwarded.
    pub fn silence_open_flows(&self) {
        use std::sync::atomic::Ordering;
        let open = self.accepted.load(Ordering::SeqCst);
        self.silent_up_to.store(open, Ordering::SeqCst);
    }
}
