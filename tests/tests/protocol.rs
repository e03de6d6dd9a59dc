//! Every request and every error code of protocol section 1, against real processes.

use ringkv_e2e::{del, error_code, get, put, wait_for_replica_value, Client, Cluster, Proc};
use serde_json::{json, Value};

const IDS: [u64; 3] = [0, u64::MAX / 2, u64::MAX];

fn cluster() -> Cluster {
    Cluster::start(&IDS, &[])
}

#[test]
fn put_get_del_and_status_answer_as_the_protocol_says() {
    let c = cluster();
    let mut client = c.client();
    assert_eq!(
        client.request(&put("fruit", "apple")),
        json!({"type":"resp","message":"Success"})
    );
    assert_eq!(
        client.request(&get("fruit")),
        json!({"type":"resp","key":"fruit","value":"apple"})
    );
    assert_eq!(
        client.request(&del("fruit")),
        json!({"type":"resp","message":"Success"})
    );
    let missing = client.request(&get("fruit"));
    assert_eq!(error_code(&missing), Some("not_found"));
    assert_eq!(missing["message"], "Data Error: Key does not exist");

    let status = client.request(r#"{"type":"statusreq"}"#);
    assert_eq!(status["type"], "resp");
    assert_eq!(status["expected"], 3);
    let ids: Vec<u64> = status["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, IDS.to_vec(), "every server, in ring order");
    for server in status["servers"].as_array().unwrap() {
        assert_eq!(server["up"], true);
        assert!(server["addr"].as_str().unwrap().contains(':'));
    }
}

#[test]
fn values_survive_escapes_unicode_and_nul() {
    let c = cluster();
    let mut client = c.client();
    let value = "line\nbreak \"quoted\" \\ tab\t é 😀 \u{0}";
    let key = "ключ\u{0}";
    assert_eq!(client.request(&put(key, value))["message"], "Success");
    assert_eq!(client.request(&get(key))["value"], value);
}

#[test]
fn values_with_one_letter_escapes_come_back_through_a_replica() {
    let mut c = cluster();
    // Only escapes of one letter (no `\u`): every hop reads them on its quick path, the
    // KV servers' prepares included, and a GET after the coordinator's restart (an empty
    // cache) reads the value back from a replica's answer line.
    let value = "a \"quoted\" \\ back\\slash/\nnew\tline\r\u{8}\u{c} é";
    let key = "esc\"ape\\";
    assert_eq!(c.client().request(&put(key, value))["message"], "Success");
    c.restart_coordinator();
    c.wait_for_ring(IDS.len());
    let answer = c.client().request(&get(key));
    assert_eq!(answer["value"], value, "{answer}");
    assert_eq!(answer["key"], key, "{answer}");
}

#[test]
fn every_data_error_is_answered_with_its_code_and_the_id() {
    let c = cluster();
    let mut client = c.client();
    let long_key = "k".repeat(257);
    let big_value = "v".repeat(256 * 1024 + 1);
    let cases: Vec<(String, &str)> = vec![
        (
            json!({"type":"getreq","key":"","id":1}).to_string(),
            "empty_key",
        ),
        (
            json!({"type":"putreq","key":"","value":"v","id":2}).to_string(),
            "empty_key",
        ),
        (
            json!({"type":"getreq","key":long_key,"id":3}).to_string(),
            "key_too_long",
        ),
        (
            json!({"type":"delreq","key":long_key,"id":4}).to_string(),
            "key_too_long",
        ),
        (
            json!({"type":"putreq","key":"k","value":big_value,"id":5}).to_string(),
            "value_too_large",
        ),
        (
            json!({"type":"putreq","key":long_key,"value":big_value,"id":6}).to_string(),
            "key_too_long",
        ),
        (
            json!({"type":"delreq","key":"never-written","id":7}).to_string(),
            "not_found",
        ),
        (
            json!({"type":"getreq","key":"never-written","id":8}).to_string(),
            "not_found",
        ),
        (json!({"type":"nosuchreq","id":9}).to_string(), "malformed"),
        (
            json!({"type":"getreq","key":5,"id":10}).to_string(),
            "malformed",
        ),
        (
            json!({"type":"putreq","key":"k","id":11}).to_string(),
            "malformed",
        ),
        (json!({"key":"k","id":12}).to_string(), "malformed"),
        (
            r#"{"type":"getreq","key":"a","key":"b","id":13}"#.to_string(),
            "malformed",
        ),
        (
            r#"{"type":"getreq","key":"\ud800","id":14}"#.to_string(),
            "malformed",
        ),
    ];
    for (line, code) in &cases {
        let answer = client.request(line);
        assert_eq!(answer["type"], "resp", "{line}");
        assert_eq!(error_code(&answer), Some(*code), "{line} -> {answer}");
        assert!(answer["message"].is_string(), "{answer}");
        let sent: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        if sent.is_object() {
            assert_eq!(answer["id"], sent["id"], "the id is echoed: {answer}");
        }
    }
    // Not JSON at all, not an object: malformed, no id, and the connection goes on.
    for line in ["this is not json", "[1,2,3]", "42", "{\"type\":"] {
        let answer = client.request(line);
        assert_eq!(error_code(&answer), Some("malformed"), "{line}");
        assert!(answer.get("id").is_none());
    }
    assert_eq!(
        client.request(&put("k", "still works"))["message"],
        "Success"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order_with_their_ids() {
    let c = cluster();
    let mut client = c.client();
    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(
            &json!({"type":"putreq","key":format!("p{i}"),"value":format!("v{i}"),"id":i})
                .to_string(),
        );
        batch.push('\n');
    }
    batch.push_str("\n   \n"); // blank lines get no answer
    batch.push_str(&json!({"type":"getreq","key":"","id":"bad"}).to_string());
    batch.push_str("\r\n");
    client.send_raw(batch.as_bytes());
    for i in 0..50 {
        let answer = client.recv();
        assert_eq!(answer["id"], i, "{answer}");
        assert_eq!(answer["message"], "Success");
    }
    let answer = client.recv();
    assert_eq!(
        (answer["id"].as_str(), error_code(&answer)),
        (Some("bad"), Some("empty_key"))
    );
    // Reads of the written keys, pipelined, in order.
    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(&json!({"type":"getreq","key":format!("p{i}"),"id":-i-1}).to_string());
        batch.push('\n');
    }
    client.send_raw(batch.as_bytes());
    for i in 0..50 {
        let answer = client.recv();
        assert_eq!(answer["id"], -i - 1);
        assert_eq!(answer["value"], format!("v{i}"));
    }
}

#[test]
fn one_request_then_half_close_is_answered_before_eof() {
    let c = cluster();
    let mut client = c.client();
    client.send_raw(put("half", "closed").as_bytes()); // no final newline
    client.finish_sending();
    assert_eq!(client.recv()["message"], "Success");
    assert!(client.is_closed());
    let mut client = c.client();
    client.send(&get("half"));
    client.send(&del("half"));
    client.finish_sending();
    assert_eq!(client.recv()["value"], "closed");
    assert_eq!(client.recv()["message"], "Success");
    assert!(client.is_closed());
}

#[test]
fn a_line_over_the_frame_limit_is_answered_then_closed() {
    let c = Cluster::start(&IDS, &["--max-frame-bytes", "4096"]);
    let mut client = c.client();
    client.send(&put("before", "x"));
    let mut line = put("k", &"v".repeat(5000));
    line.push('\n');
    client.send_raw(line.as_bytes());
    assert_eq!(
        client.recv()["message"],
        "Success",
        "earlier answers come first"
    );
    let answer = client.recv();
    assert_eq!(error_code(&answer), Some("frame_too_large"));
    assert!(client.is_closed());
    // The oversized write changed nothing.
    assert_eq!(
        error_code(&c.client().request(&get("k"))),
        Some("not_found")
    );
}

#[test]
fn a_ring_not_yet_complete_answers_unavailable_and_registration_refuses_extra_ids() {
    let coordinator = Proc::start(
        &[
            "coordinator",
            "--client-addr",
            "127.0.0.1:0",
            "--server-addr",
            "127.0.0.1:0",
            "--servers",
            "2",
        ],
        |lines| {
            lines
                .iter()
                .filter(|l| l.starts_with("client ") || l.starts_with("server "))
                .count()
                == 2
        },
    );
    let mut client = Client::connect(coordinator.addr("client"));
    for line in [put("k", "v"), get("k"), del("k")] {
        assert_eq!(
            error_code(&client.request(&line)),
            Some("unavailable"),
            "{line}"
        );
    }
    let status = client.request(r#"{"type":"statusreq"}"#);
    assert_eq!(status["servers"], json!([]));
    assert_eq!(status["expected"], 2);

    let mut registrar = Client::connect(coordinator.addr("server"));
    for id in [1u64, 2] {
        let answer = registrar.request(
            &json!({"type":"register","id":id,"addr":format!("127.0.0.1:{}", 40000 + id)})
                .to_string(),
        );
        assert_eq!(answer, json!({"type":"ack"}));
    }
    let refused =
        registrar.request(&json!({"type":"register","id":3,"addr":"127.0.0.1:40003"}).to_string());
    assert_eq!(error_code(&refused), Some("refused"), "{refused}");
    // A known ID registering again (a restart) is welcome.
    let again =
        registrar.request(&json!({"type":"register","id":2,"addr":"127.0.0.1:40009"}).to_string());
    assert_eq!(again, json!({"type":"ack"}));
    let bad = registrar.request(&json!({"type":"register","id":1,"addr":"no port"}).to_string());
    assert_eq!(error_code(&bad), Some("refused"));
}

#[test]
fn a_replica_voting_abort_gives_aborted_with_its_reason() {
    let c = cluster();
    let mut client = c.client();
    assert_eq!(client.request(&put("locked", "old"))["message"], "Success");
    let [primary, _] = c.replicas_of("locked");
    wait_for_replica_value(c.server_listen(primary), "locked", "old");
    // Prepare a transaction on the primary directly, as a coordinator would, and leave it
    // undecided: the key is locked there.
    let mut participant = Client::connect(c.server_listen(primary));
    let vote =
        participant.request(r#"{"type":"putreq","txid":1,"key":"locked","value":"intruder"}"#);
    assert_eq!(vote, json!({"type":"ready","txid":1}));
    // The prepared write is invisible to reads.
    assert_eq!(participant.request(&get("locked"))["value"], "old");

    let answer = client.request(&put("locked", "new"));
    assert_eq!(error_code(&answer), Some("aborted"), "{answer}");
    let message = answer["message"].as_str().unwrap();
    let id = c.ids[primary];
    assert!(
        message.starts_with(&format!("@{id}:=")) && message.contains("locked"),
        "{message}"
    );
    assert_eq!(
        client.request(&get("locked"))["value"],
        "old",
        "nothing changed"
    );

    // Phase 2 for the stray transaction releases the key; repeating it is harmless.
    for _ in 0..2 {
        let ack = participant.request(r#"{"type":"abort","txid":1}"#);
        assert_eq!(ack, json!({"type":"ack","txid":1}));
    }
    // A phase-2 message for an unknown transaction is acknowledged (presumed abort).
    assert_eq!(
        participant.request(r#"{"type":"commit","txid":424242}"#),
        json!({"type":"ack","txid":424242})
    );
    assert_eq!(client.request(&put("locked", "new"))["message"], "Success");
    assert_eq!(client.request(&get("locked"))["value"], "new");
}

#[test]
fn a_kv_server_port_speaks_the_participant_protocol() {
    let c = cluster();
    let mut client = c.client();
    assert_eq!(client.request(&put("direct", "v1"))["message"], "Success");
    let [primary, secondary] = c.replicas_of("direct");
    for server in [primary, secondary] {
        wait_for_replica_value(c.server_listen(server), "direct", "v1");
        let mut participant = Client::connect(c.server_listen(server));
        let answer =
            participant.request(&json!({"type":"getreq","key":"direct","id":"x"}).to_string());
        assert_eq!(
            answer,
            json!({"type":"resp","key":"direct","value":"v1","id":"x"})
        );
        let missing = participant.request(&get("nothing-here"));
        assert_eq!(error_code(&missing), Some("not_found"));
        let refused = participant.request(r#"{"type":"delreq","txid":77,"key":"nothing-here"}"#);
        assert_eq!(refused["type"], "abort");
        assert_eq!(refused["txid"], 77);
        assert_eq!(refused["error"], "not_found");
        let malformed = participant.request(r#"{"type":"commit"}"#);
        assert_eq!(error_code(&malformed), Some("malformed"));
    }
}

#[test]
fn a_pipeline_takes_effect_in_program_order_per_key() {
    let c = cluster();
    let mut client = c.client();
    for round in 0..20 {
        let value = format!("v{round}");
        let batch = [
            put("rw", &value),
            get("rw"),
            put("rw", &format!("{value}-second")),
            get("rw"),
            del("rw"),
            get("rw"),
            put("rw", &value),
            get("other"),
        ]
        .join("\n");
        client.send(&batch);
        let answers: Vec<Value> = (0..8).map(|_| client.recv()).collect();
        assert_eq!(answers[0]["message"], "Success");
        assert_eq!(answers[1]["value"], value.as_str(), "read your write");
        assert_eq!(answers[2]["message"], "Success");
        assert_eq!(answers[3]["value"], format!("{value}-second"));
        assert_eq!(answers[4]["message"], "Success");
        assert_eq!(error_code(&answers[5]), Some("not_found"));
        assert_eq!(answers[6]["message"], "Success");
        assert_eq!(error_code(&answers[7]), Some("not_found"));
    }
}

#[test]
fn a_port_at_its_connection_limit_answers_overloaded_and_closes() {
    let c = Cluster::start(&IDS, &["--max-connections", "3"]);
    // Take all three places (the harness's own status connections may still be closing).
    let served = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut client = c.client();
            let answer = client.request(&get("x"));
            if error_code(&answer) == Some("not_found") {
                return client;
            }
            assert_eq!(error_code(&answer), Some("overloaded"), "{answer}");
            assert!(
                std::time::Instant::now() < deadline,
                "no place for a connection"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut held: Vec<Client> = (0..3).map(|_| served()).collect();
    let mut extra = c.client();
    let answer = extra.recv();
    assert_eq!(error_code(&answer), Some("overloaded"), "{answer}");
    assert!(extra.is_closed());
    // A place frees up when a connection leaves.
    drop(held.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut client = c.client();
        client.send(&get("x"));
        let answer = client.recv();
        if error_code(&answer) == Some("not_found") {
            break;
        }
        assert_eq!(error_code(&answer), Some("overloaded"));
        assert!(std::time::Instant::now() < deadline, "no place freed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
