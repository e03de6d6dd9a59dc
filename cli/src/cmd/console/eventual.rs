//! The console against a node. On an eventual-mode node reads list every sibling with
//! its clock, and a write after a read of the same key sends that read's context, so that
//! the user resolves siblings by writing (as Riak's clients do). A peer-mode node keeps
//! one committed value a key: requests are section 1's, without levels or contexts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use super::parse::Command;

/// The longest answer line read (a key's siblings are bounded by the node's limits).
const MAX_ANSWER_BYTES: u64 = 8 * 1024 * 1024;
/// Contexts remembered, one per key read; beyond it the oldest keys are forgotten (a
/// write of such a key is then blind, as after a restart of the console).
const MAX_CONTEXTS: usize = 10_000;

/// Whether a node's status answer is a peer-mode node's: it has no conflict policy.
pub fn is_peer(status: &Value) -> bool {
    status.get("node").is_some() && status.get("conflicts").is_none()
}

/// Why a consistency level or a context is refused on a peer-mode node.
pub const PEER_REFUSES_LEVELS: &str = "this is a peer-mode node: every update is a two-phase \
     commit over all of the key's replicas and every read is linearizable, so there are no \
     consistency levels, siblings or contexts";

/// Asks `addr` for its status: `Some(answer)` when it is a node (eventual or peer mode).
pub fn probe(addr: &str) -> Option<Value> {
    let mut conn = Conn::open(addr).ok()?;
    let answer = conn.request(&json!({"type": "statusreq"})).ok()?;
    answer.get("node").is_some().then_some(answer)
}

/// One request to the node at `addr` on a new connection, and its answer.
pub fn node_call(addr: &str, msg: &Value) -> Result<Value, String> {
    Conn::open(addr)?.request(msg)
}

struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn, String> {
        let stream =
            TcpStream::connect(addr).map_err(|err| format!("cannot connect to {addr}: {err}"))?;
        // `--io-timeout-ms`, by default above any request timeout a node is started with,
        // so that the node's own `timeout` answer comes first.
        let wait = Some(Duration::from_millis(crate::client::io_timeout_ms()));
        stream
            .set_read_timeout(wait)
            .and_then(|()| stream.set_write_timeout(wait))
            .map_err(|err| format!("cannot set up the connection to {addr}: {err}"))?;
        let reader = stream
            .try_clone()
            .map_err(|err| format!("cannot set up the connection to {addr}: {err}"))?;
        Ok(Conn {
            writer: stream,
            reader: BufReader::new(reader),
        })
    }

    fn request(&mut self, msg: &Value) -> Result<Value, String> {
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|err| format!("sending failed: {err}"))?;
        let mut answer = String::new();
        let read = (&mut self.reader)
            .take(MAX_ANSWER_BYTES)
            .read_line(&mut answer)
            .map_err(|err| format!("reading the answer failed: {err}"))?;
        if read == 0 || !answer.ends_with('\n') {
            return Err("the node closed the connection".into());
        }
        serde_json::from_str(&answer).map_err(|err| format!("the answer is not JSON: {err}"))
    }
}

/// A console session with one node.
pub struct EvSession {
    addr: String,
    /// A peer-mode node: no levels or contexts.
    peer: bool,
    conn: Option<Conn>,
    /// The context of the last read (or write) of each key.
    contexts: BTreeMap<String, String>,
}

impl EvSession {
    /// A session with the node at `addr` (a peer-mode one if `peer`), connected at the
    /// first command.
    pub fn new(addr: &str, peer: bool) -> Self {
        Self {
            addr: addr.to_owned(),
            peer,
            conn: None,
            contexts: BTreeMap::new(),
        }
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the node is a peer-mode node.
    pub fn is_peer(&self) -> bool {
        self.peer
    }

    /// Carries out one command and says what came of it.
    pub fn execute(&mut self, command: Command) -> String {
        let request = if self.peer {
            peer_request_of(&command)
        } else {
            Ok(request_of(&command, &self.contexts))
        };
        let (msg, key) = match request {
            Ok(Some(pair)) => pair,
            Ok(None) => return String::new(),
            Err(why) => return why.to_owned(),
        };
        let answer = match self.request(&msg) {
            Ok(answer) => answer,
            Err(err) => return format!("error connection: {err}"),
        };
        if let (Some(key), Some(context)) = (&key, answer["context"].as_str()) {
            if self.contexts.len() >= MAX_CONTEXTS && !self.contexts.contains_key(key) {
                self.contexts.pop_first();
            }
            self.contexts.insert(key.clone(), context.to_owned());
        }
        match command {
            Command::Get { key, .. } => describe_read(&key, &answer),
            Command::Status => describe_status(&answer),
            _ if self.peer => error_text(&answer).unwrap_or_else(|| "OK".to_owned()),
            _ => describe_write(&answer),
        }
    }

    /// Sends on the open connection, or a new one if it failed (once: a write that may
    /// have arrived is not sent twice).
    fn request(&mut self, msg: &Value) -> Result<Value, String> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.addr)?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("not connected".into());
        };
        let answer = conn.request(msg);
        if answer.is_err() {
            self.conn = None;
        }
        answer
    }
}

/// The request line of a command to a peer-mode node; levels and blind writes (which
/// only mean something against siblings) are refused.
fn peer_request_of(command: &Command) -> Result<Option<(Value, Option<String>)>, &'static str> {
    let refused = match command {
        Command::Get { level, .. } => level.is_some(),
        Command::Put { level, blind, .. } | Command::Del { level, blind, .. } => {
            level.is_some() || *blind
        }
        _ => false,
    };
    if refused {
        return Err(PEER_REFUSES_LEVELS);
    }
    Ok(Some(match command {
        Command::Get { key, .. } => (json!({"type": "getreq", "key": key}), None),
        Command::Put { key, value, .. } => {
            (json!({"type": "putreq", "key": key, "value": value}), None)
        }
        Command::Del { key, .. } => (json!({"type": "delreq", "key": key}), None),
        Command::Status => (json!({"type": "statusreq"}), None),
        Command::Help | Command::Exit | Command::Nothing => return Ok(None),
    }))
}

/// The request line of a command, and the key whose context its answer updates.
fn request_of(
    command: &Command,
    contexts: &BTreeMap<String, String>,
) -> Option<(Value, Option<String>)> {
    let level = |level: &Option<String>| level.clone().unwrap_or_else(|| "quorum".into());
    let with_context = |mut msg: Value, key: &str, blind: bool| {
        if let (false, Some(context)) = (blind, contexts.get(key)) {
            msg["context"] = json!(context);
        }
        msg
    };
    Some(match command {
        Command::Get { key, level: l } => (
            json!({"type": "getreq", "key": key, "consistency": level(l)}),
            Some(key.clone()),
        ),
        Command::Put {
            key,
            value,
            level: l,
            blind,
        } => {
            let msg =
                json!({"type": "putreq", "key": key, "value": value, "consistency": level(l)});
            (with_context(msg, key, *blind), Some(key.clone()))
        }
        Command::Del {
            key,
            level: l,
            blind,
        } => {
            let msg = json!({"type": "delreq", "key": key, "consistency": level(l)});
            (with_context(msg, key, *blind), Some(key.clone()))
        }
        Command::Status => (json!({"type": "statusreq"}), None),
        Command::Help | Command::Exit | Command::Nothing => return None,
    })
}

fn error_text(answer: &Value) -> Option<String> {
    let code = answer["error"].as_str()?;
    let message = answer["message"].as_str().unwrap_or("");
    Some(format!("error {code}: {message}"))
}

/// One value plainly; siblings one a line with their clocks, and how to resolve them.
pub fn describe_read(key: &str, answer: &Value) -> String {
    if let Some(error) = error_text(answer) {
        return error;
    }
    if let Some(value) = answer["value"].as_str() {
        return value.to_owned();
    }
    let versions = answer["versions"].as_array().cloned().unwrap_or_default();
    let mut text = format!(
        "{} versions of {key:?}, written concurrently (siblings):\n",
        versions.len()
    );
    for (n, version) in versions.iter().enumerate() {
        let what = match version["value"].as_str() {
            Some(value) => format!("{value:?}"),
            None => "(deleted)".to_owned(),
        };
        text.push_str(&format!(
            "  {}) {what}  clock {}\n",
            n + 1,
            version["clock"]
        ));
    }
    text.push_str(&format!(
        "resolve them: `put {key} VALUE` now sends this read's context and replaces them all \
         (`put! {key} VALUE` would add one more sibling instead)"
    ));
    text
}

fn describe_write(answer: &Value) -> String {
    match error_text(answer) {
        Some(error) => error,
        None => format!("OK  clock {}", answer["clock"]),
    }
}

/// A node's status as a table: every node in ring order.
pub fn describe_status(answer: &Value) -> String {
    if let Some(error) = error_text(answer) {
        return error;
    }
    let mut text = if is_peer(answer) {
        format!(
            "node {} (peer mode, two-phase commit): replication {}\n",
            answer["node"], answer["replication"]
        )
    } else {
        format!(
            "node {}: replication {}, conflicts {}, repair {}, hints dropped {}\n",
            answer["node"],
            answer["replication"],
            answer["conflicts"].as_str().unwrap_or("-"),
            answer["repair"].as_str().unwrap_or("-"),
            answer["hints_dropped"].as_u64().unwrap_or(0),
        )
    };
    text.push_str(&format!(
        "{:>22}  {:<22}  {:<4}  {:>6}\n",
        "ID", "ADDRESS", "UP", "HINTS"
    ));
    for node in answer["nodes"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "{:>22}  {:<22}  {:<4}  {:>6}\n",
            node["id"].to_string(),
            node["addr"].as_str().unwrap_or("-"),
            if node["up"] == true { "yes" } else { "no" },
            node["hints"].as_u64().unwrap_or(0),
        ));
    }
    text.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_are_listed_with_clocks_and_a_way_out() {
        let answer = json!({"type":"resp","key":"k","versions":[
            {"value":"a","clock":{"1":1}},{"deleted":true,"clock":{"2":1}}],"context":"1:1,2:1"});
        let text = describe_read("k", &answer);
        assert!(text.contains("2 versions"), "{text}");
        assert!(text.contains("\"a\"  clock {\"1\":1}"), "{text}");
        assert!(text.contains("(deleted)"), "{text}");
        assert!(text.contains("put k VALUE"), "{text}");
        assert_eq!(describe_read("k", &json!({"value":"v","versions":[]})), "v");
    }

    #[test]
    fn a_write_after_a_read_sends_its_context_unless_blind() {
        let mut contexts = BTreeMap::new();
        contexts.insert("k".to_owned(), "1:1".to_owned());
        let put = |blind| Command::Put {
            key: "k".into(),
            value: "v".into(),
            level: None,
            blind,
        };
        let (msg, _) = request_of(&put(false), &contexts).unwrap();
        assert_eq!(msg["context"], "1:1");
        assert_eq!(msg["consistency"], "quorum");
        let (msg, _) = request_of(&put(true), &contexts).unwrap();
        assert!(msg.get("context").is_none());
    }

    #[test]
    fn a_peer_node_gets_plain_requests_and_refuses_levels_and_blind_writes() {
        let put = |level: Option<&str>, blind| Command::Put {
            key: "k".into(),
            value: "v".into(),
            level: level.map(str::to_owned),
            blind,
        };
        let (msg, _) = peer_request_of(&put(None, false)).unwrap().unwrap();
        assert_eq!(msg, json!({"type": "putreq", "key": "k", "value": "v"}));
        assert!(peer_request_of(&put(Some("one"), false)).is_err());
        assert!(peer_request_of(&put(None, true)).is_err());
        let get = Command::Get {
            key: "k".into(),
            level: Some("all".into()),
        };
        assert_eq!(peer_request_of(&get), Err(PEER_REFUSES_LEVELS));
        let status = json!({"type":"resp","node":2,"replication":5,"nodes":[
            {"id":2,"addr":"127.0.0.1:1","up":true,"hints":0}]});
        assert!(is_peer(&status));
        let text = describe_status(&status);
        assert!(text.starts_with("node 2 (peer mode"), "{text}");
        assert!(!is_peer(&json!({"node":2,"conflicts":"siblings"})));
    }
}
