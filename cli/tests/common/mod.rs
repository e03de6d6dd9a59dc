//! Helpers of the end-to-end tests: the built `ringkv` binary as child processes that are
//! killed when the test ends, however it ends, and a cluster of them on loopback.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use ringkv::client::Client;
use ringkv_core::proto::{ClientRequest, ClientResponse};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The binary under test.
pub fn ringkv() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringkv"));
    command.env_remove("RUST_LOG");
    command
}

/// Runs `ringkv ARGS` to its end, with no stdin.
pub fn run(args: &[&str]) -> Output {
    ringkv()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the ringkv binary runs")
}

/// The exit code, failing the test if the process was killed by a signal.
pub fn code(status: ExitStatus) -> i32 {
    status.code().expect("exited by itself, not by a signal")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running child whose stdout lines are collected on a thread. Killed on drop.
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    name: String,
}

impl Proc {
    /// The process's ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `ringkv ARGS` with stdin closed and stdout piped.
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        let mut child = ringkv()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the ringkv binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            name: name.to_owned(),
        }
    }

    /// The value of the first stdout line `PREFIX VALUE`, waiting for it.
    pub fn value_of(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let wanted = format!("{prefix} ");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(value) = line.strip_prefix(&wanted) {
                        return value.to_owned();
                    }
                }
                Err(_) => {
                    let err = self.stderr_so_far();
                    panic!(
                        "{} printed no `{prefix} ...` line; stderr: {err}",
                        self.name
                    )
                }
            }
        }
    }

    /// Every stdout line until one contains `needle`; fails after [`WAIT`].
    pub fn lines_until(&mut self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => {
                    let err = self.stderr_so_far();
                    panic!(
                        "{} never printed {needle:?}; stdout so far: {seen:?}; stderr: {err}",
                        self.name
                    )
                }
            }
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.wait()
    }

    /// Waits for the process to end by itself; fails after [`WAIT`].
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stderr of an exited process, or a note that it still runs.
    pub fn stderr_so_far(&mut self) -> String {
        if matches!(self.child.try_wait(), Ok(None)) {
            return "(still running)".into();
        }
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coordinator and its servers as separate processes, each in its own data directory.
pub struct Cluster {
    pub coordinator: Proc,
    pub servers: Vec<Proc>,
    pub client_addr: String,
    pub server_addr: String,
    pub ids: Vec<u64>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a coordinator expecting `ids.len()` servers and those servers, and waits
    /// until the ring is complete.
    pub fn start(ids: &[u64]) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let expected = ids.len().to_string();
        let mut coordinator = Proc::spawn(
            "coordinator",
            &[
                "coordinator",
                "--client-addr",
                "127.0.0.1:0",
                "--server-addr",
                "127.0.0.1:0",
                "--servers",
                &expected,
            ],
        );
        let client_addr = coordinator.value_of("client");
        let server_addr = coordinator.value_of("server");
        let mut cluster = Cluster {
            coordinator,
            servers: Vec::new(),
            client_addr,
            server_addr,
            ids: ids.to_vec(),
            dir,
        };
        for &id in ids {
            let server = cluster.start_server(id);
            cluster.servers.push(server);
        }
        cluster.wait_for_ring();
        cluster
    }

    /// The data directory of the server with `id`.
    pub fn data_dir(&self, id: u64) -> String {
        self.dir
            .path()
            .join(format!("server-{id}"))
            .to_string_lossy()
            .into_owned()
    }

    /// Starts server `id` on its data directory and checks what it printed.
    pub fn start_server(&self, id: u64) -> Proc {
        let data_dir = self.data_dir(id);
        let id_text = id.to_string();
        let mut server = Proc::spawn(
            &format!("server {id}"),
            &[
                "server",
                "--coordinator",
                &self.server_addr,
                "--data-dir",
                &data_dir,
                "--id",
                &id_text,
            ],
        );
        let listen = server.value_of("listen");
        assert!(listen.starts_with("127.0.0.1:"), "listen {listen}");
        assert_eq!(server.value_of("id"), id_text);
        server
    }

    /// Waits until the coordinator lists every server.
    pub fn wait_for_ring(&self) {
        wait_for_ring(&self.client_addr, self.ids.len());
    }
}

/// Waits until the coordinator at `addr` lists `servers` servers.
pub fn wait_for_ring(addr: &str, servers: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer =
            Client::connect(addr).and_then(|mut client| client.call(&ClientRequest::Status));
        if let Ok(answer) = answer {
            if let ClientResponse::Status {
                servers: listed, ..
            } = answer.response
            {
                if listed.len() == servers {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "the ring never completed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `path` exists, for readable assertions.
pub fn exists(path: &str) -> bool {
    Path::new(path).exists()
}
