//! A coordinator and KV servers on loopback, driven over real client connections.

mod common;

use std::time::{Duration, Instant};

use common::{error_code, server_options, start_server, Client, Cluster, WAIT};
use ringkv_core::proto::{
    ClientResponse, ParticipantResponse, RegisterResponse, RequestId, WireMessage,
};
use ringkv_net::{run_server, NetError, Shutdown};

fn value(key: &str, value: &str) -> ClientResponse {
    ClientResponse::Value {
        key: key.into(),
        value: value.into(),
    }
}

#[test]
fn put_get_del_status_pipelining_malformed_lines_and_half_close() {
    let cluster = Cluster::start(2);
    let mut c = cluster.client();

    assert_eq!(
        c.ask(r#"{"type":"putreq","key":"k","value":"v1"}"#).msg,
        ClientResponse::Success
    );
    assert_eq!(
        c.ask(r#"{"type":"getreq","key":"k"}"#).msg,
        value("k", "v1")
    );
    assert_eq!(
        c.ask(r#"{"type":"delreq","key":"k"}"#).msg,
        ClientResponse::Success
    );
    assert_eq!(
        error_code(&c.ask(r#"{"type":"getreq","key":"k"}"#)),
        "not_found"
    );
    assert_eq!(
        error_code(&c.ask(r#"{"type":"delreq","key":"k"}"#)),
        "not_found"
    );
    match c.ask(r#"{"type":"statusreq","id":"s"}"#) {
        answer if answer.id != Some(RequestId::Text("s".into())) => {
            panic!("id lost: {answer:?}")
        }
        answer => match answer.msg {
            ClientResponse::Status { servers, expected } => {
                assert_eq!(expected, 2);
                assert_eq!(servers.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2]);
                assert!(servers.iter().all(|s| s.up));
            }
            other => panic!("not a status: {other:?}"),
        },
    }

    // Pipelined: all sent before any answer is read; answered in order, ids echoed. The
    // GET of the key the PUT before it writes reads that write (program order within a
    // connection).
    assert_eq!(
        c.ask(r#"{"type":"putreq","key":"r","value":"before"}"#).msg,
        ClientResponse::Success
    );
    c.send(concat!(
        r#"{"type":"putreq","key":"p","value":"1","id":1}"#,
        "\n",
        r#"{"type":"getreq","key":"p","id":"two"}"#,
        "\n",
        "\n   \n",
        r#"{"type":"getreq","key":"nope","id":-3}"#,
        "\r\n",
        r#"{"type":"putreq","key":"","value":"x","id":4}"#,
        "\n",
        r#"{"type":"statusreq","id":5}"#,
        "\n",
    ));
    let first = c.answer();
    assert_eq!(
        (first.id, first.msg),
        (Some(RequestId::Unsigned(1)), ClientResponse::Success)
    );
    let second = c.answer();
    assert_eq!(
        (second.id, second.msg),
        (Some(RequestId::Text("two".into())), value("p", "1"))
    );
    let third = c.answer();
    assert_eq!(third.id, Some(RequestId::Negative(-3)));
    assert_eq!(error_code(&third), "not_found");
    let fourth = c.answer();
    assert_eq!(fourth.id, Some(RequestId::Unsigned(4)));
    assert_eq!(error_code(&fourth), "empty_key");
    let fifth = c.answer();
    assert_eq!(fifth.id, Some(RequestId::Unsigned(5)));
    assert!(matches!(fifth.msg, ClientResponse::Status { .. }));

    // Malformed lines are answered and the connection stays usable.
    assert_eq!(error_code(&c.ask("this is not json")), "malformed");
    let unknown = c.ask(r#"{"type":"frobnicate","id":7}"#);
    assert_eq!(
        (error_code(&unknown), unknown.id),
        ("malformed", Some(RequestId::Unsigned(7)))
    );
    assert_eq!(c.ask(r#"{"type":"getreq","key":"p"}"#).msg, value("p", "1"));

    // Half-close: one request without a final newline, then EOF; answered, then closed.
    let mut h = cluster.client();
    h.send(r#"{"type":"getreq","key":"p","id":"h"}"#);
    h.half_close();
    let answer = h.answer();
    assert_eq!(
        (answer.id, answer.msg),
        (Some(RequestId::Text("h".into())), value("p", "1"))
    );
    assert_eq!(h.rest(), "", "closed after the answer");

    // Half-close after several requests: every one answered, in order.
    let mut h = cluster.client();
    h.send("{\"type\":\"putreq\",\"key\":\"q\",\"value\":\"a\"}\n{\"type\":\"getreq\",\"key\":\"r\"}\n{\"type\":\"getreq\",\"key\":\"p\"}");
    h.half_close();
    assert_eq!(h.answer().msg, ClientResponse::Success);
    assert_eq!(h.answer().msg, value("r", "before"));
    assert_eq!(h.answer().msg, value("p", "1"));
    assert_eq!(h.rest(), "");
}

/// Reads `key` straight from a KV server's port, as the coordinator does.
fn direct_get(addr: std::net::SocketAddr, key: &str) -> ParticipantResponse {
    let mut c = Client::connect(addr);
    c.send(format!(
        "{{\"type\":\"getreq\",\"key\":\"{key}\",\"id\":1}}\n"
    ));
    let line = c.line().expect("an answer");
    let answer = ParticipantResponse::decode(line.as_bytes()).expect("a participant answer");
    assert_eq!(answer.id, Some(RequestId::Unsigned(1)), "id echoed");
    answer.msg
}

fn wait_for_direct_value(addr: std::net::SocketAddr, key: &str, want: &str) {
    wait_for_direct_answer(
        addr,
        key,
        ParticipantResponse::Value {
            key: key.into(),
            value: want.into(),
        },
    );
}

/// Waits until a replica's own answer for `key` is `want`: phase 2 reaches a replica a
/// round trip after the client's answer.
fn wait_for_direct_answer(addr: std::net::SocketAddr, key: &str, want: ParticipantResponse) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = direct_get(addr, key);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never reached the replica: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_restarted_server_keeps_committed_data_and_its_directory_is_locked_while_running() {
    let mut cluster = Cluster::start(2);
    let mut c = cluster.client();
    assert_eq!(
        c.ask(r#"{"type":"putreq","key":"durable","value":"yes"}"#)
            .msg,
        ClientResponse::Success
    );
    assert_eq!(
        c.ask(r#"{"type":"putreq","key":"gone","value":"x"}"#).msg,
        ClientResponse::Success
    );
    assert_eq!(
        c.ask(r#"{"type":"delreq","key":"gone"}"#).msg,
        ClientResponse::Success
    );
    let first_listen = cluster.servers[0].info.listen;
    wait_for_direct_value(first_listen, "durable", "yes");
    let gone = ParticipantResponse::Error(ringkv_core::proto::ErrorReply::new(
        ringkv_core::proto::ErrorCode::NotFound,
    ));
    wait_for_direct_answer(first_listen, "gone", gone);

    // A second server on the same directory is refused before it listens.
    let coordinator = cluster.coordinator.info.server;
    let dir = cluster.dirs[0].path().to_path_buf();
    let second = run_server(
        server_options(coordinator, &dir, None),
        Shutdown::new(),
        |_| panic!("a second server on a locked directory must not start"),
    );
    match second {
        Err(NetError::DataDirLocked(locked)) => assert_eq!(locked, dir),
        other => panic!("expected DataDirLocked, got {other:?}"),
    }

    // Stop the first server and start it again with no ID: the directory remembers it.
    let old = cluster.servers.remove(0);
    old.stop().expect("a clean stop");
    // A crash in the middle of a write leaves a torn frame after the last record, in
    // the space allocated ahead.
    let wal = dir.join("wal.log");
    let bytes = std::fs::read(&wal).expect("the log exists");
    let clean_len = ringkv_core::log::decode_frames(&bytes).valid_len;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .and_then(|file| {
            std::os::unix::fs::FileExt::write_all_at(&file, &[0x40, 0, 0, 0, 1, 2, 3], clean_len)
        })
        .expect("tear the log");
    let restarted = start_server(server_options(coordinator, &dir, None));
    assert_eq!(restarted.info.id, 1);
    assert_eq!(restarted.info.recovery.committed_keys, 1);
    assert_eq!(restarted.info.recovery.in_doubt, 0);
    assert_eq!(restarted.info.recovery.valid_len, clean_len);
    assert_eq!(
        std::fs::metadata(&wal).expect("the log exists").len(),
        clean_len,
        "the torn tail was cut off"
    );
    let listen = restarted.info.listen;
    assert_eq!(
        direct_get(listen, "durable"),
        ParticipantResponse::Value {
            key: "durable".into(),
            value: "yes".into()
        }
    );
    assert!(matches!(
        direct_get(listen, "gone"),
        ParticipantResponse::Error(_)
    ));
    cluster.servers.insert(0, restarted);

    // The coordinator learns the new address and updates reach both replicas again.
    assert_eq!(
        c.ask(r#"{"type":"putreq","key":"durable","value":"again"}"#)
            .msg,
        ClientResponse::Success
    );
    assert_eq!(
        c.ask(r#"{"type":"getreq","key":"durable"}"#).msg,
        value("durable", "again")
    );
    wait_for_direct_value(listen, "durable", "again");
}

/// xorshift64*: garbage that is the same on every run.
fn garbage(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let byte = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
            // About one line end in 50 bytes; NULs and invalid UTF-8 come by themselves.
            if byte < 5 {
                b'\n'
            } else {
                byte
            }
        })
        .collect()
}

#[test]
fn garbage_bytes_get_answers_and_other_clients_are_served() {
    let cluster = Cluster::start(2);
    let mut bad = cluster.client();
    let mut good = cluster.client();
    let mut bytes = garbage(64 * 1024, 0x9E37_79B9_7F4A_7C15);
    bytes.extend_from_slice(b"\0\0\xff\xfe{\"type\":\"statusreq\"\0}\n");
    bad.send(&bytes);
    assert!(matches!(
        good.ask(r#"{"type":"statusreq"}"#).msg,
        ClientResponse::Status { .. }
    ));
    bad.half_close();
    let rest = bad.rest();
    let answers: Vec<&str> = rest.lines().collect();
    assert!(answers.len() > 100, "only {} answers", answers.len());
    for line in &answers {
        let answer = ClientResponse::decode(line.as_bytes()).expect("every answer decodes");
        assert_eq!(error_code(&answer), "malformed", "{line}");
    }
    assert_eq!(
        good.ask(r#"{"type":"putreq","key":"after","value":"ok"}"#)
            .msg,
        ClientResponse::Success
    );
    assert_eq!(
        good.ask(r#"{"type":"getreq","key":"after"}"#).msg,
        value("after", "ok")
    );
}

#[test]
fn concurrent_pipelining_clients_all_get_their_answers() {
    let cluster = Cluster::start(2);
    let addr = cluster.coordinator.info.client;
    let started = Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for round in 0..10 {
                    let batch: String = (0..10)
                        .map(|n| {
                            let id = round * 10 + n;
                            format!("{{\"type\":\"putreq\",\"key\":\"t{t}k{n}\",\"value\":\"{id}\",\"id\":{id}}}\n")
                        })
                        .collect();
                    c.send(batch);
                    for n in 0..10u64 {
                        let answer = c.answer();
                        assert_eq!(answer.id, Some(RequestId::Unsigned(round * 10 + n)));
                        assert_eq!(answer.msg, ClientResponse::Success);
                    }
                }
                for n in 0..10 {
                    let want = 90 + n;
                    assert_eq!(
                        c.ask(&format!("{{\"type\":\"getreq\",\"key\":\"t{t}k{n}\"}}")).msg,
                        value(&format!("t{t}k{n}"), &want.to_string())
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed");
    }
    eprintln!("600 updates in {:?}", started.elapsed());
}

#[test]
fn the_registration_and_participant_ports_answer_malformed_lines_and_stay_usable() {
    let cluster = Cluster::start(2);
    let mut reg = Client::connect(cluster.coordinator.info.server);
    reg.send("nonsense\n");
    let answer =
        RegisterResponse::decode(reg.line().expect("an answer").as_bytes()).expect("decodes");
    match answer.msg {
        RegisterResponse::Error(reply) => assert_eq!(reply.code.as_str(), "malformed"),
        other => panic!("expected malformed, got {other:?}"),
    }
    // A known server registering again at the same address is acknowledged.
    let addr = cluster.servers[1].info.listen;
    reg.send(format!(
        "{{\"type\":\"register\",\"id\":2,\"addr\":\"{addr}\"}}\n"
    ));
    let answer =
        RegisterResponse::decode(reg.line().expect("an answer").as_bytes()).expect("decodes");
    assert_eq!(answer.msg, RegisterResponse::Ack);

    let mut direct = Client::connect(cluster.servers[0].info.listen);
    direct.send("{\"type\":\"bogus\",\"id\":\"x\"}\n{\"type\":\"ping\",\"id\":2}\n");
    let first =
        ParticipantResponse::decode(direct.line().expect("an answer").as_bytes()).expect("decodes");
    assert_eq!(first.id, Some(RequestId::Text("x".into())));
    assert!(
        matches!(first.msg, ParticipantResponse::Error(ref reply) if reply.code.as_str() == "malformed")
    );
    let second =
        ParticipantResponse::decode(direct.line().expect("an answer").as_bytes()).expect("decodes");
    assert_eq!(
        (second.id, second.msg),
        (Some(RequestId::Unsigned(2)), ParticipantResponse::Pong)
    );
}
