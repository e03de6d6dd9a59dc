use proptest::prelude::*;

use super::*;

fn decode_client(line: &str) -> Result<Envelope<ClientRequest>, DecodeError> {
    ClientRequest::decode(line.as_bytes())
}

fn code_of(line: &str) -> ErrorCode {
    match decode_client(line) {
        Ok(ok) => panic!("{line} decoded to {ok:?}"),
        Err(err) => err.code,
    }
}

#[test]
fn decodes_every_client_request() {
    let get = decode_client(r#"{"type":"getreq","key":"k"}"#).unwrap();
    assert_eq!(get.msg, ClientRequest::Get { key: "k".into() });
    assert_eq!(get.id, None);
    let put = decode_client(r#"{"type":"putreq","key":"k","value":"v","id":7}"#).unwrap();
    assert_eq!(
        put.msg,
        ClientRequest::Put {
            key: "k".into(),
            value: "v".into()
        }
    );
    assert_eq!(put.id, Some(RequestId::Unsigned(7)));
    let del = decode_client(r#"{"key":"k","type":"delreq","id":"x"}"#).unwrap();
    assert_eq!(del.msg, ClientRequest::Del { key: "k".into() });
    assert_eq!(del.id, Some(RequestId::Text("x".into())));
    let status = decode_client(r#" {"type":"statusreq","id":-5} "#).unwrap();
    assert_eq!(status.msg, ClientRequest::Status);
    assert_eq!(status.id, Some(RequestId::Negative(-5)));
}

#[test]
fn structural_faults_are_malformed() {
    for line in [
        "",
        "not json",
        "[]",
        "\"getreq\"",
        "{}",
        r#"{"type":"nosuch","key":"k"}"#,
        r#"{"type":7,"key":"k"}"#,
        r#"{"type":"getreq"}"#,
        r#"{"type":"getreq","key":5}"#,
        r#"{"type":"getreq","key":null}"#,
        r#"{"type":"putreq","key":"k"}"#,
        r#"{"type":"putreq","key":"k","value":1}"#,
        r#"{"type":"getreq","key":"k"} {}"#,
        r#"{"type":"getreq","key":"k","key":"j"}"#,
        r#"{"type":"getreq","type":"getreq","key":"k"}"#,
        r#"{"type":"getreq","key":"k","x":1,"x":2}"#,
        r#"{"type":"getreq","key":"\ud800"}"#,
        r#"{"type":"getreq","key":"\udc00x"}"#,
        r#"{"type":"getreq","key":"k","id":1.5}"#,
        r#"{"type":"getreq","key":"k","id":18446744073709551616}"#,
        r#"{"type":"getreq","key":"k","id":-9223372036854775809}"#,
        r#"{"type":"getreq","key":"k","id":true}"#,
        r#"{"type":"getreq","key":"k","id":null}"#,
        r#"{"type":"getreq","key":"k","id":[1]}"#,
    ] {
        assert_eq!(code_of(line), ErrorCode::Malformed, "{line}");
    }
    assert_eq!(
        ClientRequest::decode(b"{\"type\":\"getreq\",\"key\":\"\xff\"}")
            .unwrap_err()
            .code,
        ErrorCode::Malformed
    );
}

#[test]
fn ids_at_the_edges_are_valid_and_echoed_on_errors() {
    let max = decode_client(r#"{"type":"statusreq","id":18446744073709551615}"#).unwrap();
    assert_eq!(max.id, Some(RequestId::Unsigned(u64::MAX)));
    let min = decode_client(r#"{"type":"statusreq","id":-9223372036854775808}"#).unwrap();
    assert_eq!(min.id, Some(RequestId::Negative(i64::MIN)));
    let err = decode_client(r#"{"type":"nosuch","id":"abc"}"#).unwrap_err();
    assert_eq!(err.id, Some(RequestId::Text("abc".into())));
    let err = decode_client(r#"{"type":"getreq","key":"","id":3}"#).unwrap_err();
    assert_eq!(
        (err.code, err.id),
        (ErrorCode::EmptyKey, Some(RequestId::Unsigned(3)))
    );
    // A duplicate field is malformed, and the line is still an object with an id.
    let err = decode_client(r#"{"type":"getreq","key":"a","key":"b","id":13}"#).unwrap_err();
    assert_eq!(
        (err.code, err.id),
        (ErrorCode::Malformed, Some(RequestId::Unsigned(13)))
    );
    assert!(Register::decode(br#"{"type":"register","id":1,"id":2,"addr":"h:1"}"#).is_err());
    // An invalid id cannot be echoed.
    let err = decode_client(r#"{"type":"getreq","key":"k","id":{}}"#).unwrap_err();
    assert_eq!(err.id, None);
}

#[test]
fn limit_faults_come_in_protocol_order() {
    let long_key = "k".repeat(257);
    let big_value = "v".repeat(262_145);
    assert_eq!(
        code_of(r#"{"type":"getreq","key":""}"#),
        ErrorCode::EmptyKey
    );
    assert_eq!(
        code_of(&format!(r#"{{"type":"getreq","key":"{long_key}"}}"#)),
        ErrorCode::KeyTooLong
    );
    assert_eq!(
        code_of(&format!(
            r#"{{"type":"putreq","key":"{long_key}","value":"{big_value}"}}"#
        )),
        ErrorCode::KeyTooLong
    );
    assert_eq!(
        code_of(&format!(
            r#"{{"type":"putreq","key":"","value":"{big_value}"}}"#
        )),
        ErrorCode::EmptyKey
    );
    assert_eq!(
        code_of(&format!(
            r#"{{"type":"putreq","key":"k","value":"{big_value}"}}"#
        )),
        ErrorCode::ValueTooLarge
    );
    // malformed wins over every limit
    assert_eq!(
        code_of(r#"{"type":"putreq","key":"","value":5}"#),
        ErrorCode::Malformed
    );
    // exactly at the limits is fine, counted in UTF-8 bytes after unescaping
    let key = "é".repeat(128);
    assert!(decode_client(&format!(r#"{{"type":"getreq","key":"{key}"}}"#)).is_ok());
    let key = format!("{}a", "é".repeat(128));
    assert_eq!(
        code_of(&format!(r#"{{"type":"getreq","key":"{key}"}}"#)),
        ErrorCode::KeyTooLong
    );
    let escaped = "\\u00e9".repeat(128);
    assert!(decode_client(&format!(r#"{{"type":"getreq","key":"{escaped}"}}"#)).is_ok());
    let value = "v".repeat(262_144);
    assert!(decode_client(&format!(
        r#"{{"type":"putreq","key":"k","value":"{value}"}}"#
    ))
    .is_ok());
}

#[test]
fn nul_escape_is_an_ordinary_character_and_unknown_fields_are_ignored() {
    let req = decode_client(r#"{"type":"putreq","key":"a\u0000b","value":"","extra":{"x":[1,2]}}"#)
        .unwrap();
    assert_eq!(
        req.msg,
        ClientRequest::Put {
            key: "a\0b".into(),
            value: String::new()
        }
    );
}

#[test]
fn encodes_exactly_the_protocol_shapes() {
    let line = |msg: ClientResponse, id: Option<RequestId>| {
        String::from_utf8(Envelope::with_id(id, msg).encode()).unwrap()
    };
    assert_eq!(
        line(ClientResponse::Success, None),
        "{\"type\":\"resp\",\"message\":\"Success\"}\n"
    );
    assert_eq!(
        line(
            ClientResponse::Value {
                key: "k".into(),
                value: "v\n\"".into()
            },
            Some(RequestId::Unsigned(1))
        ),
        "{\"type\":\"resp\",\"key\":\"k\",\"value\":\"v\\n\\\"\",\"id\":1}\n"
    );
    assert_eq!(
        line(ClientResponse::error(ErrorCode::NotFound), None),
        "{\"type\":\"resp\",\"error\":\"not_found\",\"message\":\"Data Error: Key does not exist\"}\n"
    );
    assert_eq!(
        line(
            ClientResponse::Status {
                servers: vec![ServerStatus {
                    id: u64::MAX,
                    addr: "127.0.0.1:1".into(),
                    up: true
                }],
                expected: 2
            },
            None
        ),
        "{\"type\":\"resp\",\"servers\":[{\"id\":18446744073709551615,\"addr\":\"127.0.0.1:1\",\"up\":true}],\"expected\":2}\n"
    );
    let vote = ParticipantResponse::Refuse {
        txid: 9,
        code: ErrorCode::NotFound,
        message: "m".into(),
    };
    assert_eq!(
        String::from_utf8(Envelope::bare(vote).encode()).unwrap(),
        "{\"type\":\"abort\",\"txid\":9,\"error\":\"not_found\",\"message\":\"m\"}\n"
    );
    assert_eq!(
        String::from_utf8(Envelope::bare(RegisterResponse::Ack).encode()).unwrap(),
        "{\"type\":\"ack\"}\n"
    );
}

#[test]
fn participant_port_leaves_limits_to_the_participant() {
    let long_key = "k".repeat(300);
    let req = ParticipantRequest::decode(
        format!(r#"{{"type":"putreq","txid":1,"key":"{long_key}","value":"v"}}"#).as_bytes(),
    )
    .unwrap();
    assert!(matches!(
        req.msg,
        ParticipantRequest::Prepare { txid: 1, .. }
    ));
    let abort = ParticipantRequest::decode(br#"{"type":"abort","txid":4}"#).unwrap();
    assert_eq!(abort.msg, ParticipantRequest::Abort { txid: 4 });
    let bad = ParticipantRequest::decode(br#"{"type":"commit","txid":-1}"#).unwrap_err();
    assert_eq!(bad.code, ErrorCode::Malformed);
}

#[test]
fn a_vote_to_abort_with_an_unknown_code_is_still_a_vote_to_abort() {
    let vote = ParticipantResponse::decode(
        br#"{"type":"abort","txid":9,"error":"disk_on_fire","message":"smoke"}"#,
    )
    .unwrap();
    assert_eq!(
        vote.msg,
        ParticipantResponse::Refuse {
            txid: 9,
            code: ErrorCode::Aborted,
            message: "smoke".into()
        }
    );
    let known =
        ParticipantResponse::decode(br#"{"type":"abort","txid":9,"error":"locked"}"#).unwrap();
    assert!(matches!(
        known.msg,
        ParticipantResponse::Refuse {
            code: ErrorCode::Locked,
            ..
        }
    ));
    let typeless = ParticipantResponse::decode(br#"{"type":"abort","txid":9,"error":7}"#);
    assert_eq!(typeless.unwrap_err().code, ErrorCode::Malformed);
}

#[test]
fn register_uses_id_as_the_server_id() {
    let reg =
        Register::decode(br#"{"type":"register","id":18446744073709551615,"addr":"h:1"}"#).unwrap();
    assert_eq!(
        reg.msg,
        Register {
            id: u64::MAX,
            addr: "h:1".into()
        }
    );
    assert_eq!(reg.id, None);
    assert!(Register::decode(br#"{"type":"register","id":"7","addr":"h:1"}"#).is_err());
}

#[test]
fn line_splitter_handles_ends_blanks_and_limits() {
    let mut split = LineSplitter::new(8);
    split.push(b"abc\r\n\n   \r\nde");
    assert_eq!(split.next_event(), Some(LineEvent::Line(b"abc".to_vec())));
    assert_eq!(split.next_event(), None);
    split.push(b"f\n");
    assert_eq!(split.next_event(), Some(LineEvent::Line(b"def".to_vec())));
    split.push(b"12345678\r\n12345678\n");
    assert_eq!(
        split.next_event(),
        Some(LineEvent::Line(b"12345678".to_vec()))
    );
    assert_eq!(
        split.next_event(),
        Some(LineEvent::Line(b"12345678".to_vec()))
    );
    split.push(b"tail");
    assert_eq!(split.next_event(), None);
    assert_eq!(split.finish(), Some(LineEvent::Line(b"tail".to_vec())));
    assert_eq!(split.finish(), None);

    let mut split = LineSplitter::new(8);
    split.push(b"123456789\n");
    assert_eq!(split.next_event(), Some(LineEvent::TooLarge));
    split.push(b"ok\n");
    assert_eq!(split.next_event(), None);

    // Detected before the line ends, without buffering the rest.
    let mut split = LineSplitter::new(8);
    split.push(b"12345678\r");
    assert_eq!(split.next_event(), None);
    split.push(b"x");
    assert_eq!(split.next_event(), Some(LineEvent::TooLarge));
    assert_eq!(split.buffered_bytes(), 0);
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,8}",
        any::<String>(),
        "[\\x00-\\x1f\"\\\\\u{80}-\u{10ffff}]{0,6}",
    ]
}

fn request_id() -> impl Strategy<Value = Option<RequestId>> {
    prop_oneof![
        Just(None),
        any::<u64>().prop_map(|n| Some(RequestId::Unsigned(n))),
        (i64::MIN..0).prop_map(|n| Some(RequestId::Negative(n))),
        text().prop_map(|t| Some(RequestId::Text(t))),
    ]
}

fn error_reply() -> impl Strategy<Value = ErrorReply> {
    (prop::sample::select(ErrorCode::ALL.to_vec()), text())
        .prop_map(|(code, message)| ErrorReply { code, message })
}

fn valid_key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9é\u{1F600}\\x00\"\\\\]{1,40}"
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        valid_key().prop_map(|key| ClientRequest::Get { key }),
        (valid_key(), text()).prop_map(|(key, value)| ClientRequest::Put { key, value }),
        valid_key().prop_map(|key| ClientRequest::Del { key }),
        Just(ClientRequest::Status),
    ]
}

fn client_response() -> impl Strategy<Value = ClientResponse> {
    let server = (any::<u64>(), text(), any::<bool>()).prop_map(|(id, addr, up)| ServerStatus {
        id,
        addr,
        up,
    });
    prop_oneof![
        (text(), text()).prop_map(|(key, value)| ClientResponse::Value { key, value }),
        Just(ClientResponse::Success),
        (prop::collection::vec(server, 0..5), any::<u64>())
            .prop_map(|(servers, expected)| ClientResponse::Status { servers, expected }),
        error_reply().prop_map(ClientResponse::Error),
    ]
}

fn participant_request() -> impl Strategy<Value = ParticipantRequest> {
    prop_oneof![
        (any::<u64>(), text(), text()).prop_map(|(txid, key, value)| {
            ParticipantRequest::Prepare {
                txid,
                key,
                op: TxOp::Put { value },
            }
        }),
        (any::<u64>(), text()).prop_map(|(txid, key)| ParticipantRequest::Prepare {
            txid,
            key,
            op: TxOp::Del
        }),
        any::<u64>().prop_map(|txid| ParticipantRequest::Commit { txid }),
        any::<u64>().prop_map(|txid| ParticipantRequest::Abort { txid }),
        text().prop_map(|key| ParticipantRequest::Get { key }),
        Just(ParticipantRequest::Ping),
    ]
}

fn participant_response() -> impl Strategy<Value = ParticipantResponse> {
    prop_oneof![
        any::<u64>().prop_map(|txid| ParticipantResponse::Ready { txid }),
        (any::<u64>(), error_reply()).prop_map(|(txid, reply)| ParticipantResponse::Refuse {
            txid,
            code: reply.code,
            message: reply.message
        }),
        any::<u64>().prop_map(|txid| ParticipantResponse::Ack { txid }),
        (text(), text()).prop_map(|(key, value)| ParticipantResponse::Value { key, value }),
        error_reply().prop_map(ParticipantResponse::Error),
        Just(ParticipantResponse::Pong),
    ]
}

fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug + Clone>(
    msg: M,
    id: Option<RequestId>,
) -> Result<(), TestCaseError> {
    let envelope = Envelope::with_id(id, msg);
    let line = envelope.encode();
    prop_assert_eq!(line.last(), Some(&b'\n'));
    prop_assert!(!line[..line.len() - 1].contains(&b'\n'));
    let decoded = M::decode(&line[..line.len() - 1]);
    prop_assert_eq!(decoded, Ok(envelope));
    Ok(())
}

proptest! {
    #[test]
    fn client_requests_round_trip(msg in client_request(), id in request_id()) {
        round_trip(msg, id)?;
    }

    #[test]
    fn client_responses_round_trip(msg in client_response(), id in request_id()) {
        round_trip(msg, id)?;
    }

    #[test]
    fn participant_requests_round_trip(msg in participant_request(), id in request_id()) {
        round_trip(msg, id)?;
    }

    #[test]
    fn participant_responses_round_trip(msg in participant_response(), id in request_id()) {
        round_trip(msg, id)?;
    }

    #[test]
    fn registrations_round_trip(id in any::<u64>(), addr in text(), reply in error_reply()) {
        round_trip(Register { id, addr }, None)?;
        round_trip(RegisterResponse::Ack, None)?;
        round_trip(RegisterResponse::Error(reply), None)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = ClientRequest::decode(&bytes);
        let _ = ClientResponse::decode(&bytes);
        let _ = ParticipantRequest::decode(&bytes);
        let _ = ParticipantResponse::decode(&bytes);
        let _ = Register::decode(&bytes);
        let _ = RegisterResponse::decode(&bytes);
        let mut split = LineSplitter::new(16);
        split.push(&bytes);
        while split.next_event().is_some() {}
        let _ = split.finish();
    }

    #[test]
    fn mutated_valid_lines_never_panic(
        msg in client_request(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut line = Envelope::bare(msg).encode();
        line.pop();
        let i = at.index(line.len());
        line[i] = byte;
        if let Err(err) = ClientRequest::decode(&line) {
            prop_assert!(err.id.is_none() || line.windows(4).any(|w| w == b"\"id\""));
        }
    }

    #[test]
    fn splitter_returns_the_lines_whatever_the_chunking(
        lines in prop::collection::vec("[a-z ]{0,10}", 0..8),
        cut in prop::collection::vec(1usize..7, 0..30),
    ) {
        let mut stream = Vec::new();
        for line in &lines {
            stream.extend_from_slice(line.as_bytes());
            stream.push(b'\n');
        }
        let mut split = LineSplitter::new(64);
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut sizes = cut.into_iter().cycle();
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(3).min(rest.len());
            split.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(event) = split.next_event() {
                got.push(event);
            }
        }
        let want: Vec<LineEvent> = lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| LineEvent::Line(l.as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn lines_of_a_write_and_a_read_fit_their_size_hint() {
    let key = "k".repeat(crate::limits::MAX_KEY_BYTES);
    let value = "v".repeat(1000);
    let id = Some(RequestId::Unsigned(u64::MAX));
    let put = ClientRequest::Put {
        key: key.clone(),
        value: value.clone(),
    };
    let prepare = ParticipantRequest::Prepare {
        txid: u64::MAX,
        key: key.clone(),
        op: TxOp::Put {
            value: value.clone(),
        },
    };
    let answer = ClientResponse::Value { key, value };
    let lines = [
        (
            put.encoded_len_hint(),
            Envelope::with_id(id.clone(), put).encode(),
        ),
        (
            prepare.encoded_len_hint(),
            Envelope::to_server(u64::MAX, id.clone(), prepare).encode(),
        ),
        (
            answer.encoded_len_hint(),
            Envelope::with_id(id, answer).encode(),
        ),
    ];
    for (hint, line) in lines {
        assert!(line.len() <= hint, "{} > {hint}", line.len());
    }
}
