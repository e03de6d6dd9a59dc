//! `ringkv demo conflicts`: seed 003's scenario on five eventual-mode nodes, narrated
//! for a person: an offline replica merging without conflict, concurrent updates kept as
//! siblings, and a write with the read's context resolving them.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::args::{DemoArgs, DemoKind};
use crate::cmd::console::node_call;
use crate::exit::Exit;
use crate::out;

/// Nodes of the demo cluster, and N.
const NODES: usize = 5;
const REPLICATION: usize = 3;
/// The nodes' request timeout: short, so that hints are made quickly.
const TIMEOUT_MS: &str = "1000";
/// How long the demo waits for a node to start, to be seen, or to catch up.
const WAIT_MS: u64 = 20_000;
/// The key the story is about.
const KEY: &str = "cart";

/// Runs one demonstration.
pub fn run(args: &DemoArgs) -> Exit {
    match args.which {
        DemoKind::Conflicts => match conflicts() {
            Ok(()) => Exit::Ok,
            Err(why) => {
                eprintln!("error: {why}");
                Exit::Failure
            }
        },
    }
}

/// The demo's nodes, as child processes stopped when this is dropped.
struct Demo {
    dir: PathBuf,
    ids: Vec<u64>,
    addrs: Vec<String>,
    /// Each node's process, with its stdout kept open so that its last lines reach a
    /// reader.
    children: Vec<Option<(Child, Lines)>>,
}

/// A node's stdout, read until it listens.
type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

impl Drop for Demo {
    fn drop(&mut self) {
        for (child, _) in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Demo {
    fn start() -> Result<Demo, String> {
        let dir = std::env::temp_dir().join(format!("ringkv-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        let listeners = (0..NODES)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("cannot find free ports: {err}"))?;
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("cannot read a port: {err}"))?;
        drop(listeners);
        let ids: Vec<u64> = (1..=NODES as u64)
            .map(|i| i * (u64::MAX / (NODES as u64 + 1)))
            .collect();
        let text: String = ids
            .iter()
            .zip(&addrs)
            .map(|(id, a)| format!("{id} {a}\n"))
            .collect();
        std::fs::write(dir.join("cluster"), text)
            .map_err(|err| format!("cannot write the cluster file: {err}"))?;
        let mut demo = Demo {
            dir,
            ids,
            addrs,
            children: (0..NODES).map(|_| None).collect(),
        };
        for i in 0..NODES {
            demo.start_node(i)?;
        }
        for i in 0..NODES {
            demo.wait_for_up(i, &[])?;
        }
        Ok(demo)
    }

    fn start_node(&mut self, i: usize) -> Result<(), String> {
        let exe =
            std::env::current_exe().map_err(|err| format!("cannot find ringkv itself: {err}"))?;
        let id = self.ids.get(i).ok_or("no such node")?.to_string();
        let mut child = Command::new(exe)
            .args([
                "node",
                "--mode",
                "eventual",
                "--id",
                &id,
                "--replication",
                "3",
                "--timeout-ms",
                TIMEOUT_MS,
            ])
            .arg("--cluster")
            .arg(self.dir.join("cluster"))
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{i}")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| format!("cannot start node {i}: {err}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let listening = lines
            .by_ref()
            .any(|line| line.is_ok_and(|l| l.starts_with("listen ")));
        if let Some(slot) = self.children.get_mut(i) {
            *slot = Some((child, lines));
        }
        if listening {
            Ok(())
        } else {
            Err(format!("node {i} did not start"))
        }
    }

    fn stop_node(&mut self, i: usize) {
        if let Some((mut child, _)) = self.children.get_mut(i).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn call(&self, i: usize, msg: &Value) -> Result<Value, String> {
        node_call(self.addrs.get(i).ok_or("no such node")?, msg)
    }

    /// Waits until node `at` sees exactly the nodes of `down` down.
    fn wait_for_up(&self, at: usize, down: &[usize]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
        loop {
            let status = self.call(at, &json!({"type": "statusreq"}))?;
            let seen = status["nodes"].as_array().is_some_and(|nodes| {
                nodes.iter().all(|n| {
                    let i = self.ids.iter().position(|&id| n["id"] == id);
                    n["up"] == !i.is_some_and(|i| down.contains(&i))
                })
            });
            if seen {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {at} did not see the cluster settle: {status}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The key's replicas (node indexes), first replica first, read from the nodes'
    /// own copies: the nodes that answer `localreq` instead of `unavailable`.
    fn replicas(&self) -> Result<Vec<usize>, String> {
        let mut replicas = Vec::new();
        for i in 0..NODES {
            let answer = self.call(i, &json!({"type": "localreq", "key": KEY}))?;
            if answer["error"] != "unavailable" {
                replicas.push(i);
            }
        }
        Ok(replicas)
    }
}

fn say(text: &str) {
    out::line_or_warn(text);
}

fn versions(answer: &Value) -> String {
    let list = answer["versions"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return format!(
            "nothing ({})",
            answer["error"].as_str().unwrap_or("no versions")
        );
    }
    list.iter()
        .map(|v| format!("{}  clock {}", v["value"], v["clock"]))
        .collect::<Vec<_>>()
        .join("\n        ")
}

fn put(
    demo: &Demo,
    at: usize,
    value: &str,
    level: &str,
    context: Option<&Value>,
) -> Result<Value, String> {
    let mut msg = json!({"type": "putreq", "key": KEY, "value": value, "consistency": level});
    if let Some(context) = context {
        msg["context"] = context.clone();
    }
    let answer = demo.call(at, &msg)?;
    if answer["message"] != "Success" {
        return Err(format!("the write was not acknowledged: {answer}"));
    }
    Ok(answer)
}

fn get(demo: &Demo, at: usize) -> Result<Value, String> {
    demo.call(
        at,
        &json!({"type": "getreq", "key": KEY, "consistency": "all"}),
    )
}

fn conflicts() -> Result<(), String> {
    say(&format!("starting {NODES} eventual-mode nodes (N = {REPLICATION}, siblings, read repair and hints) ..."));
    let mut demo = Demo::start()?;
    say(&format!(
        "cluster file and data in {}\n",
        demo.dir.display()
    ));
    offline_replica(&mut demo)?;
    concurrent_updates(&demo)?;
    say("\nthat is eventual mode: nothing is lost, nothing is silently overwritten, and the\nclient that sees siblings decides. Try it: ringkv local --mode eventual");
    Ok(())
}

/// Act 1: a replica misses an update while offline and merges it without conflict.
fn offline_replica(demo: &mut Demo) -> Result<(), String> {
    let first = put(demo, 0, "milk", "all", None)?;
    let replicas = demo.replicas()?;
    let [a, b, c] = replicas.as_slice() else {
        return Err(format!("expected 3 replicas, found {replicas:?}"));
    };
    let (a, b, c) = (*a, *b, *c);
    say(&format!(
        "1. a client writes {KEY} = \"milk\" through node {a}, at consistency all"
    ));
    say(&format!(
        "   clock {}; the replicas of {KEY:?} are nodes {a}, {b} and {c}",
        first["clock"]
    ));
    demo.stop_node(c);
    demo.wait_for_up(a, &[c])?;
    say(&format!("2. node {c} goes offline"));
    let read = get_at(demo, a, "quorum")?;
    let second = put(demo, a, "milk, eggs", "quorum", Some(&read["context"]))?;
    say(&format!(
        "3. a client reads {KEY} and writes \"milk, eggs\" through node {a} at quorum"
    ));
    say(&format!(
        "   (2 of 3 replicas suffice): Success, clock {}",
        second["clock"]
    ));
    demo.start_node(c)?;
    let stale = demo.call(c, &json!({"type": "localreq", "key": KEY}))?;
    say(&format!(
        "4. node {c} comes back holding: {}",
        versions(&stale)
    ));
    let started = Instant::now();
    let caught = wait_local(demo, c, "milk, eggs")?;
    say(&format!(
        "   {} ms later, by hinted handoff (no read needed), it holds: {}",
        started.elapsed().as_millis(),
        versions(&caught)
    ));
    say("   the new clock is above the old one, so the merge keeps the new value alone: no conflict\n");
    Ok(())
}

fn get_at(demo: &Demo, at: usize, level: &str) -> Result<Value, String> {
    demo.call(
        at,
        &json!({"type": "getreq", "key": KEY, "consistency": level}),
    )
}

fn wait_local(demo: &Demo, at: usize, value: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        let answer = demo.call(at, &json!({"type": "localreq", "key": KEY}))?;
        if answer["value"] == value || Instant::now() > deadline {
            return Ok(answer);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Act 2: concurrent updates through different replicas become siblings; a write with
/// the read's context resolves them.
fn concurrent_updates(demo: &Demo) -> Result<(), String> {
    let replicas = demo.replicas()?;
    let (Some(&x), Some(&y)) = (replicas.first(), replicas.get(1)) else {
        return Err("the key has fewer than 2 replicas".into());
    };
    let read = get(demo, x)?;
    say(&format!(
        "5. two clients both read {KEY} (context {}), then at the same time",
        read["context"]
    ));
    let left = put(demo, x, "milk, eggs, bread", "all", Some(&read["context"]))?;
    let right = put(demo, y, "milk, eggs, butter", "all", Some(&read["context"]))?;
    say(&format!(
        "   one writes \"milk, eggs, bread\" through node {x}: clock {}",
        left["clock"]
    ));
    say(&format!(
        "   one writes \"milk, eggs, butter\" through node {y}: clock {}",
        right["clock"]
    ));
    let both = get(demo, replicas.get(2).copied().unwrap_or(x))?;
    say("6. a read at consistency all returns both versions, with their clocks:");
    say(&format!("        {}", versions(&both)));
    say("   neither clock is above the other: neither writer saw the other's write, so ringkv\n   keeps both (siblings) instead of silently dropping one");
    let merged = put(
        demo,
        y,
        "milk, eggs, bread, butter",
        "all",
        Some(&both["context"]),
    )?;
    let last = get(demo, x)?;
    say(
        "7. a client merges them and writes \"milk, eggs, bread, butter\" with that read's context",
    );
    say(&format!(
        "   clock {}; a read now returns: {}",
        merged["clock"],
        versions(&last)
    ));
    Ok(())
}
