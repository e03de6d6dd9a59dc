//! The per-connection and per-port limits of a port, over real connections.

mod common;

use std::time::{Duration, Instant};

use common::{error_code, start_coordinator, Client, WAIT};
use ringkv_core::proto::{ClientResponse, RequestId};
use ringkv_net::NetLimits;

#[test]
fn a_line_over_the_frame_limit_gets_frame_too_large_after_earlier_answers_then_eof() {
    let coordinator = start_coordinator(
        2,
        NetLimits {
            max_frame_bytes: 100,
            ..NetLimits::default()
        },
    );
    let mut c = Client::connect(coordinator.info.client);
    let mut bytes = br#"{"type":"statusreq","id":1}"#.to_vec();
    bytes.push(b'\n');
    bytes.extend(std::iter::repeat_n(b'x', 300));
    bytes.extend_from_slice(b"\n{\"type\":\"statusreq\",\"id\":2}\n");
    c.send(&bytes);
    let first = c.answer();
    assert_eq!(first.id, Some(RequestId::Unsigned(1)));
    assert!(matches!(first.msg, ClientResponse::Status { .. }));
    let too_large = c.answer();
    assert_eq!(
        (error_code(&too_large), too_large.id),
        ("frame_too_large", None)
    );
    assert_eq!(
        c.rest(),
        "",
        "nothing after frame_too_large: the connection closes"
    );

    // A line exactly at the limit is served.
    let mut c = Client::connect(coordinator.info.client);
    let key = "k".repeat(100 - r#"{"type":"getreq","key":""}"#.len());
    let line = format!(r#"{{"type":"getreq","key":"{key}"}}"#);
    assert_eq!(line.len(), 100);
    assert_eq!(
        error_code(&c.ask(&line)),
        "unavailable",
        "decoded, not refused"
    );
}

#[test]
fn a_connection_over_the_limit_gets_one_overloaded_line_then_eof() {
    let coordinator = start_coordinator(
        2,
        NetLimits {
            max_connections_per_port: 2,
            ..NetLimits::default()
        },
    );
    let addr = coordinator.info.client;
    let status = r#"{"type":"statusreq"}"#;
    let mut first = Client::connect(addr);
    let mut second = Client::connect(addr);
    assert!(matches!(
        first.ask(status).msg,
        ClientResponse::Status { .. }
    ));
    assert!(matches!(
        second.ask(status).msg,
        ClientResponse::Status { .. }
    ));
    let mut third = Client::connect(addr);
    assert_eq!(error_code(&third.answer()), "overloaded");
    assert_eq!(third.rest(), "");
    assert!(
        matches!(second.ask(status).msg, ClientResponse::Status { .. }),
        "the others keep working"
    );

    // A place comes free when a connection closes.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut next = Client::connect(addr);
        next.send(format!("{status}\n"));
        if matches!(next.answer().msg, ClientResponse::Status { .. }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place never came free"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pipelining_beyond_the_in_flight_limit_is_answered_in_order() {
    let coordinator = start_coordinator(
        2,
        NetLimits {
            max_in_flight_per_connection: 3,
            max_outbound_bytes_per_connection: 256,
            ..NetLimits::default()
        },
    );
    let mut c = Client::connect(coordinator.info.client);
    let requests: String = (0..500u64)
        .map(|n| format!("{{\"type\":\"getreq\",\"key\":\"k{n}\",\"id\":{n}}}\n"))
        .collect();
    c.send(&requests);
    for n in 0..500u64 {
        let answer = c.answer();
        assert_eq!(answer.id, Some(RequestId::Unsigned(n)));
        assert_eq!(error_code(&answer), "unavailable");
    }
}

#[test]
fn slow_and_idle_connections_are_closed() {
    let coordinator = start_coordinator(
        2,
        NetLimits {
            partial_line_timeout_ms: 300,
            idle_timeout_ms: 600,
            ..NetLimits::default()
        },
    );
    let started = Instant::now();
    let mut slow = Client::connect(coordinator.info.client);
    let mut idle = Client::connect(coordinator.info.client);
    slow.send(r#"{"type":"statusreq""#);
    assert_eq!(
        slow.rest(),
        "",
        "a line never finished: closed without an answer"
    );
    let slow_ms = started.elapsed().as_millis();
    assert!(
        slow_ms >= 300,
        "closed after {slow_ms} ms, before the timeout"
    );
    assert!(matches!(
        idle.ask(r#"{"type":"statusreq"}"#).msg,
        ClientResponse::Status { .. }
    ));
    assert_eq!(idle.rest(), "", "idle: closed");
    assert!(started.elapsed() < Duration::from_secs(5));
}
