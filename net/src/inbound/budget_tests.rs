//! The held-request budget over real connections, driven turn by turn.

use std::io::Write;
use std::net::TcpStream as StdStream;

use super::*;
use crate::event_loop::EventLoop;
use crate::Shutdown;

/// Lines are requests; a line starting with `ack` is outside the budget, like a node's
/// acknowledgement.
fn spec() -> PortSpec<Vec<u8>> {
    PortSpec {
        name: "test",
        decode: |line| Decoded::One {
            id: None,
            msg: line,
            tag: 0,
        },
        error_line: |_| b"error\n".to_vec(),
        protocol_error: |_| b"protocol error\n".to_vec(),
        idle_timeout: false,
        access: |_| None,
        first_handle: 1,
        budgeted: |line| !line.starts_with(b"ack"),
    }
}

struct World {
    ev: EventLoop,
    port: Port<Vec<u8>>,
    budget: HeldRequestBudget,
    ready: Vec<Readiness>,
    /// Every request taken, in order, with its handle.
    taken: Vec<(ReplyTo, Vec<u8>)>,
}

impl World {
    fn new(max_bytes: usize) -> World {
        let ev = EventLoop::new(Shutdown::new()).unwrap();
        let budget = HeldRequestBudget::new(max_bytes);
        let limits = NetLimits {
            held_requests: budget.clone(),
            ..NetLimits::default()
        };
        let addr = "127.0.0.1:0".parse().unwrap();
        let port = Port::bind(addr, Kind::PortA, ev.registry(), spec(), limits).unwrap();
        World {
            ev,
            port,
            budget,
            ready: Vec::new(),
            taken: Vec::new(),
        }
    }

    fn connect(&mut self) -> StdStream {
        let stream = StdStream::connect(self.port.local_addr().unwrap()).unwrap();
        let before = self.port.conns.len();
        self.until(|w| w.port.conns.len() > before);
        stream
    }

    /// One loop turn, as a role's loop makes it.
    fn turn(&mut self) {
        let busy = self.port.has_ready();
        let deadline = Some(self.ev.now_ms() + 5);
        let now_ms = self.ev.wait(deadline, busy, &mut self.ready).unwrap();
        for event in &self.ready {
            self.port.on_event(now_ms, self.ev.registry(), event);
        }
        let mut requests = Vec::new();
        self.port
            .take_requests(now_ms, self.ev.registry(), &mut requests);
        self.taken.extend(requests);
        self.port.sweep(now_ms, self.ev.registry());
        self.port.flush(now_ms, self.ev.registry());
    }

    /// Turns until `done`, for at most 10 s.
    fn until(&mut self, done: impl Fn(&World) -> bool) {
        let start = std::time::Instant::now();
        while !done(self) {
            assert!(start.elapsed().as_secs() < 10, "never came to pass");
            self.turn();
        }
    }

    fn lines(&self) -> Vec<String> {
        self.taken
            .iter()
            .map(|(_, line)| String::from_utf8_lossy(line).into_owned())
            .collect()
    }

    fn has(&self, line: &str) -> bool {
        self.taken.iter().any(|(_, taken)| taken == line.as_bytes())
    }

    fn answer(&mut self, line: &str) {
        let handle = self
            .taken
            .iter()
            .find(|(_, taken)| taken == line.as_bytes())
            .map(|(handle, _)| *handle)
            .unwrap();
        self.port.reply_with(handle, |_, _| b"ok\n".to_vec());
    }

    fn waiting(&self) -> usize {
        self.port.waiting.len()
    }
}

#[test]
fn a_spent_budget_stops_reading_until_answers_release_bytes_but_never_acknowledgements() {
    let mut w = World::new(100);
    let mut node = w.connect();
    node.write_all(b"ack 1\n").unwrap();
    w.until(|w| w.has("ack 1"));
    assert_eq!(
        w.budget.held_bytes(),
        0,
        "an acknowledgement is not charged"
    );

    let mut big = w.connect();
    let mut small = w.connect();
    let line = "x".repeat(150);
    big.write_all(format!("{line}\n").as_bytes()).unwrap();
    w.until(|w| w.has(&line));
    assert_eq!(w.budget.held_bytes(), 150);

    small.write_all(b"hello\n").unwrap();
    node.write_all(b"ack 2\n").unwrap();
    w.until(|w| w.has("ack 2") && w.waiting() > 0);
    for _ in 0..20 {
        w.turn();
    }
    assert!(
        !w.has("hello"),
        "a connection is not read while the budget is spent"
    );

    w.answer(&line);
    assert_eq!(w.budget.held_bytes(), 0, "the answer gave the bytes back");
    w.until(|w| w.has("hello"));
    assert_eq!(w.budget.held_bytes(), 5);
    assert_eq!(w.waiting(), 0);
}

#[test]
fn connections_waiting_for_the_budget_take_turns_in_the_order_they_began_to_wait() {
    let mut w = World::new(10);
    let mut first = w.connect();
    let mut second = w.connect();
    let mut third = w.connect();
    first.write_all(b"first 1 ......\n").unwrap();
    w.until(|w| w.has("first 1 ......"));
    second.write_all(b"second 1 .....\n").unwrap();
    w.until(|w| w.waiting() == 1);
    third.write_all(b"third 1 ......\n").unwrap();
    w.until(|w| w.waiting() == 2);

    // The first connection asks again; it waits behind the two that came before.
    first.write_all(b"first 2 ......\n").unwrap();
    w.until(|w| w.waiting() == 3);
    for (answered, next) in [
        ("first 1 ......", "second 1 ....."),
        ("second 1 .....", "third 1 ......"),
        ("third 1 ......", "first 2 ......"),
    ] {
        w.answer(answered);
        w.until(|w| w.has(next));
        assert_eq!(
            w.taken.last().map(|(_, l)| l.as_slice()),
            Some(next.as_bytes())
        );
    }
    assert_eq!(
        w.lines(),
        [
            "first 1 ......",
            "second 1 .....",
            "third 1 ......",
            "first 2 ......"
        ]
    );
}

#[test]
fn a_port_that_stops_gives_its_bytes_back_to_the_process() {
    let mut w = World::new(100);
    let mut stream = w.connect();
    stream.write_all(b"held request\n").unwrap();
    w.until(|w| w.has("held request"));
    assert_eq!(w.budget.held_bytes(), 12);
    let budget = w.budget.clone();
    drop(w);
    assert_eq!(budget.held_bytes(), 0);
}
