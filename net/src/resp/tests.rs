//! The RESP parser, the translation of commands and the encoding of answers.

use proptest::prelude::*;
use ringkv_core::proto::{ClientRequest, ClientResponse, ErrorCode, ErrorReply, ServerStatus};

use super::command::{decode, glob_match};
use super::parse::{split_inline, RespEvent, RespParser};
use super::reply::{self, Shape};
use crate::inbound::{Decoded, Join};

const LIMIT: usize = 1024;

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Every event from `bytes` pushed in the pieces `cuts` makes, then `finish`.
fn events(bytes: &[u8], cuts: &[usize]) -> Vec<RespEvent> {
    let mut parser = RespParser::new(LIMIT);
    let mut out = Vec::new();
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(bytes.len());
    for end in bounds {
        parser.push(&bytes[at..end.max(at)]);
        at = end.max(at);
        while let Some(event) = parser.next_event() {
            out.push(event);
        }
    }
    out.extend(parser.finish());
    out
}

fn command(args: &[&str]) -> RespEvent {
    RespEvent::Command(args.iter().map(|a| a.as_bytes().to_vec()).collect())
}

#[test]
fn multibulk_and_inline_commands_parse_alike() {
    let mut bytes = multibulk(&[b"SET", b"k", b"a\r\nb"]);
    bytes.extend_from_slice(b"GET k\r\n  \r\nMGET a  'b c' \"d\\x41\\n\"\n*0\r\n*-1\r\nPING");
    assert_eq!(
        events(&bytes, &[]),
        vec![
            command(&["SET", "k", "a\r\nb"]),
            command(&["GET", "k"]),
            command(&["MGET", "a", "b c", "dA\n"]),
            command(&["PING"]),
        ]
    );
}

#[test]
fn a_cut_multibulk_at_eof_is_dropped() {
    assert_eq!(events(b"*2\r\n$3\r\nGET\r\n", &[]), vec![]);
}

#[test]
fn frames_over_the_limit_are_refused_from_their_header() {
    let header = format!("*2\r\n$3\r\nSET\r\n${LIMIT}\r\n");
    assert_eq!(events(header.as_bytes(), &[]), vec![RespEvent::TooLarge]);
    assert_eq!(events(b"*1000\r\n", &[]), vec![RespEvent::TooLarge]);
    let inline = vec![b'a'; LIMIT + 2];
    assert_eq!(events(&inline, &[]), vec![RespEvent::TooLarge]);
    // Exactly at the limit is fine; one byte more is not.
    let body = vec![b'x'; LIMIT - 22];
    let exact = multibulk(&[b"SET", &body]);
    assert_eq!(exact.len(), LIMIT);
    assert!(matches!(events(&exact, &[])[..], [RespEvent::Command(_)]));
    let over = multibulk(&[b"SET", &[body.as_slice(), b"x"].concat()]);
    assert_eq!(events(&over, &[]), vec![RespEvent::TooLarge]);
}

#[test]
fn bytes_that_are_not_resp_are_invalid_and_end_the_stream() {
    for (bytes, reason) in [
        (&b"*x\r\n"[..], "invalid multibulk length"),
        (b"*1\r\n:1\r\n", "expected '$'"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$1\r\nab\r\n", "bulk not ended by CRLF"),
        (b"GET \"k\r\n", "unbalanced quotes in request"),
        (b"GET \"k\"x\r\n", "unbalanced quotes in request"),
        (&[b'*'; 40], "invalid multibulk length"),
    ] {
        let mut with_more = bytes.to_vec();
        with_more.extend_from_slice(b"\r\nPING\r\n");
        assert_eq!(
            events(&with_more, &[]),
            vec![RespEvent::Invalid(reason)],
            "{bytes:?}"
        );
    }
}

#[test]
fn inline_splitting_follows_redis() {
    assert_eq!(
        split_inline(b" a\t'b\\'c' \"\\t\\\"\" ").unwrap(),
        vec![b"a".to_vec(), b"b'c".to_vec(), b"\t\"".to_vec()]
    );
    assert_eq!(split_inline(b"").unwrap(), Vec::<Vec<u8>>::new());
    assert!(split_inline(b"'open").is_err());
}

fn decoded(args: &[&str]) -> Decoded<ClientRequest> {
    decode(args.iter().map(|a| a.as_bytes().to_vec()).collect())
}

fn answer_text(decoded: Decoded<ClientRequest>) -> String {
    match decoded {
        Decoded::Answer(bytes) | Decoded::Last(bytes) => String::from_utf8(bytes).unwrap(),
        other => panic!("not answered by the port: {other:?}"),
    }
}

#[test]
fn data_commands_become_client_requests() {
    let get = |key: &str| ClientRequest::Get { key: key.into() };
    assert!(matches!(
        decoded(&["get", "k"]),
        Decoded::One { msg, tag, .. } if msg == get("k") && tag == Shape::Bulk as u8
    ));
    assert!(matches!(
        decoded(&["SET", "k", "v"]),
        Decoded::One { msg: ClientRequest::Put { .. }, tag, .. } if tag == Shape::Ok as u8
    ));
    let Decoded::Many { parts, join } = decoded(&["DEL", "a", "b"]) else {
        panic!("DEL of two keys is two requests");
    };
    assert_eq!(join, Join::Sum);
    assert_eq!(parts[1].0, ClientRequest::Del { key: "b".into() });
    let Decoded::Many { parts, join } = decoded(&["MGET", "a"]) else {
        panic!("MGET of one key is still an array");
    };
    assert_eq!((parts.len(), join), (1, Join::Array));
    assert!(matches!(
        decoded(&["info"]),
        Decoded::One {
            msg: ClientRequest::Status,
            ..
        }
    ));
}

#[test]
fn the_port_answers_connection_commands_itself() {
    assert_eq!(answer_text(decoded(&["PING"])), "+PONG\r\n");
    assert_eq!(answer_text(decoded(&["echo", "x"])), "$1\r\nx\r\n");
    assert_eq!(answer_text(decoded(&["QUIT"])), "+OK\r\n");
    assert!(matches!(decoded(&["QUIT"]), Decoded::Last(_)));
    assert_eq!(answer_text(decoded(&["select", "0"])), "+OK\r\n");
    assert_eq!(answer_text(decoded(&["INFO", "keyspace"])), "$0\r\n\r\n");
    assert_eq!(
        answer_text(decoded(&["HELLO", "3"])),
        "-NOPROTO unsupported protocol version\r\n"
    );
    assert_eq!(
        answer_text(decoded(&["CONFIG", "GET", "save"])),
        "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );
    assert_eq!(
        answer_text(decoded(&["nope", "a"])),
        "-ERR unknown command 'nope', with args beginning with: 'a' \r\n"
    );
    assert_eq!(
        answer_text(decoded(&["ECHO"])),
        "-ERR wrong number of arguments for 'echo' command\r\n"
    );
    let long = "z".repeat(300);
    let text = answer_text(decoded(&["nope", &long, "b"]));
    assert_eq!(text.matches('z').count(), 128, "args are cut at 128 bytes");
    assert!(!text.contains("'b'"));
}

#[test]
fn limit_faults_come_in_the_protocols_order() {
    let key = "k".repeat(257);
    let value = "v".repeat(256 * 1024 + 1);
    assert!(answer_text(decoded(&["SET", "", &value])).starts_with("-EMPTY_KEY "));
    assert!(answer_text(decoded(&["SET", &key, &value])).starts_with("-KEY_TOO_LONG "));
    assert!(answer_text(decoded(&["SET", "k", &value])).starts_with("-VALUE_TOO_LARGE "));
}

#[test]
fn answers_encode_as_redis_replies() {
    let value = ClientResponse::Value {
        key: "k".into(),
        value: "héllo".into(),
    };
    let not_found = ClientResponse::error(ErrorCode::NotFound);
    let aborted = ClientResponse::Error(ErrorReply::with_message(
        ErrorCode::Aborted,
        "@1:=locked\n@2:=locked",
    ));
    assert_eq!(
        reply::encode(Shape::Bulk, &value),
        b"$6\r\nh\xc3\xa9llo\r\n"
    );
    assert_eq!(reply::encode(Shape::Bulk, &not_found), b"$-1\r\n");
    assert_eq!(reply::encode(Shape::Count, &not_found), b":0\r\n");
    assert_eq!(
        reply::encode(Shape::Count, &ClientResponse::Success),
        b":1\r\n"
    );
    assert_eq!(
        reply::encode(Shape::Ok, &ClientResponse::Success),
        b"+OK\r\n"
    );
    assert_eq!(
        reply::encode(Shape::Ok, &aborted),
        b"-ABORTED @1:=locked @2:=locked\r\n"
    );
    let status = ClientResponse::Status {
        servers: vec![ServerStatus {
            id: 7,
            addr: "h:1".into(),
            up: false,
        }],
        expected: 2,
    };
    let info = String::from_utf8(reply::encode(Shape::InfoReplication, &status)).unwrap();
    assert!(
        info.contains("ring_server0:id=7,addr=h:1,up=no\r\n"),
        "{info}"
    );
    assert!(info.contains("ring_complete:no\r\n"), "{info}");
}

#[test]
fn joined_answers_sum_or_list_and_an_error_wins() {
    let mut out = Vec::new();
    reply::join(
        Join::Sum,
        vec![b":1\r\n".to_vec(), b":0\r\n".to_vec(), b":1\r\n".to_vec()],
        &mut out,
    );
    assert_eq!(out, b":2\r\n");
    out.clear();
    reply::join(
        Join::Array,
        vec![b"$-1\r\n".to_vec(), b"$1\r\nx\r\n".to_vec()],
        &mut out,
    );
    assert_eq!(out, b"*2\r\n$-1\r\n$1\r\nx\r\n");
    out.clear();
    reply::join(
        Join::Array,
        vec![
            b"$-1\r\n".to_vec(),
            b"-UNAVAILABLE a\r\n".to_vec(),
            b"-OVERLOADED b\r\n".to_vec(),
        ],
        &mut out,
    );
    assert_eq!(out, b"-UNAVAILABLE a\r\n");
}

#[test]
fn globs_match_as_in_redis() {
    assert!(glob_match(b"*", b"save"));
    assert!(glob_match(b"app*fsync", b"appendfsync"));
    assert!(glob_match(b"s?ve", b"save"));
    assert!(!glob_match(b"s?ve", b"saave"));
    assert!(!glob_match(b"appendonly", b"appendfsync"));
    assert!(glob_match(b"*a*a*a*", b"banana bread a"));
}

/// Commands as a client library would send them: names and binary arguments.
fn arb_command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6)
}

/// Data commands (names in either case) with keys at and past the limits: random names
/// are almost never GET or SET, so the limit assertions would meet no data command.
fn arb_data_command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let names = [
        "GET", "SET", "DEL", "MGET", "EXISTS", "get", "set", "del", "mget", "Exists",
    ];
    let arg_len = prop_oneof![Just(0usize), Just(1), Just(256), Just(257), 0..300usize];
    let arg = arg_len.prop_map(|len| vec![b'k'; len]);
    (
        prop::sample::select(names.to_vec()),
        prop::collection::vec(arg, 0..5),
    )
        .prop_map(|(name, args)| {
            std::iter::once(name.as_bytes().to_vec())
                .chain(args)
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any split of a stream of commands gives the same commands.
    #[test]
    fn any_split_gives_the_same_commands(
        commands in prop::collection::vec(arb_command(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = Vec::new();
        for args in &commands {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            bytes.extend_from_slice(&multibulk(&args));
        }
        let expected: Vec<RespEvent> =
            commands.iter().cloned().map(RespEvent::Command).collect();
        prop_assert_eq!(events(&bytes, &[]), expected.clone());
        let every_byte: Vec<usize> = (0..bytes.len()).collect();
        prop_assert_eq!(events(&bytes, &every_byte), expected.clone());
        prop_assert_eq!(events(&bytes, &cuts), expected);
    }

    /// Whatever the bytes, the parser never panics, gives the same events however they
    /// are cut, holds at most a frame and a read's worth, and stops after a verdict.
    #[test]
    fn arbitrary_bytes_never_panic_and_splits_agree(
        bytes in prop::collection::vec(
            prop_oneof![Just(b'*'), Just(b'$'), Just(b'\r'), Just(b'\n'), Just(b'1'), Just(b'"'), any::<u8>()],
            0..300,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = events(&bytes, &[]);
        prop_assert_eq!(events(&bytes, &cuts), whole.clone());
        // Byte by byte, no command is ever whole in the buffer: the step by step parser
        // alone must agree with the one-pass path for whole commands.
        let every_byte: Vec<usize> = (0..bytes.len()).collect();
        prop_assert_eq!(events(&bytes, &every_byte), whole.clone());
        let verdicts = whole.iter().filter(|e| !matches!(e, RespEvent::Command(_))).count();
        prop_assert!(verdicts <= 1);
        if verdicts == 1 {
            prop_assert!(!matches!(whole.last(), Some(RespEvent::Command(_))));
        }
        let mut parser = RespParser::new(64);
        for chunk in bytes.chunks(16) {
            parser.push(chunk);
            while parser.next_event().is_some() {}
            prop_assert!(parser.buffered_bytes() <= 64 + 2 + 16);
        }
    }

    /// Decoding any command never panics, and data commands keep to the limits.
    #[test]
    fn any_command_decodes_without_panic(args in prop_oneof![arb_command(), arb_data_command()]) {
        match decode(args) {
            Decoded::One { msg, .. } => prop_assert!(msg.key().is_none_or(|k| !k.is_empty() && k.len() <= 256)),
            Decoded::Many { parts, .. } => prop_assert!(!parts.is_empty() && parts.len() <= 256),
            Decoded::Answer(bytes) | Decoded::Last(bytes) => {
                prop_assert!(bytes.ends_with(b"\r\n"));
            }
        }
    }
}

#[test]
fn a_taken_resp_address_fails_the_bind_or_gives_a_free_port_as_asked() {
    use super::{bind_port, spec, RespListen};
    use crate::limits::NetLimits;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let poll = mio::Poll::new().unwrap();
    let limits = NetLimits::default();
    let bind = |listen| bind_port(listen, poll.registry(), spec, &limits);
    let refused = bind(RespListen::exactly(addr))
        .err()
        .expect("the port is taken");
    assert!(refused.is_addr_in_use(), "{refused}");
    let elsewhere = bind(RespListen::preferring(addr)).unwrap();
    let bound = elsewhere.local_addr().unwrap();
    assert_eq!(bound.ip(), addr.ip());
    assert_ne!(bound.port(), addr.port());
    drop(taken);
    let asked = bind(RespListen::preferring(addr)).unwrap();
    assert_eq!(
        asked.local_addr().unwrap(),
        addr,
        "a free address is taken as asked"
    );
}
