//! The command line itself: help, usage errors, a server's remembered ID, and a whole
//! `ringkv local` cluster that stops on SIGTERM and comes back with its data.

mod common;

use common::{code, run, stderr, stdout, wait_for_ring, Proc};
use ringkv::client::Client;
use ringkv_core::proto::{ClientRequest, ClientResponse};

#[test]
fn every_subcommand_explains_itself() {
    let subcommands = [
        ("local", "--data-dir"),
        ("coordinator", "--cache-sets"),
        ("server", "--data-dir"),
        ("console", "--addr"),
        ("get", "--json"),
        ("put", "--json"),
        ("del", "--json"),
        ("status", "--json"),
        ("bench", "--pipeline"),
        ("probe", "--samples"),
    ];
    for (name, flag) in subcommands {
        let help = run(&[name, "--help"]);
        assert_eq!(code(help.status), 0, "{name} --help");
        let text = stdout(&help);
        assert!(text.contains("Usage: ringkv"), "{name}: {text}");
        assert!(text.contains(flag), "{name} --help lacks {flag}: {text}");
    }
    let bench = stdout(&run(&["bench", "--help"]));
    assert!(bench.contains("[default: 10]"), "{bench}");
    let top = run(&["--help"]);
    assert_eq!(code(top.status), 0);
    assert!(stdout(&top).contains("Exit codes"));
}

#[test]
fn probe_measures_the_floor_under_a_put() {
    let dir = tempfile::tempdir().unwrap();
    let probe = run(&[
        "probe",
        "--samples",
        "20",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code(probe.status), 0);
    let line: serde_json::Value = serde_json::from_str(stdout(&probe).trim()).unwrap();
    for figure in ["fsync_us", "loopback_rtt_us"] {
        assert!(line[figure]["p50"].as_u64().unwrap() >= 1, "{line}");
    }
    let floor = line["put_floor_p50_us"].as_u64().unwrap();
    // One fsync: the replicas' records and the coordinator's sync side by side.
    let parts = line["fsync_us"]["p50"].as_u64().unwrap()
        + 2 * line["loopback_rtt_us"]["p50"].as_u64().unwrap();
    assert_eq!(floor, parts);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the scratch file is gone"
    );
    let missing = run(&["probe", "--dir", "/nonexistent/ringkv"]);
    assert_eq!(code(missing.status), 2);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(code(run(&[]).status), 2);
    assert_eq!(code(run(&["frobnicate"]).status), 2);
    assert_eq!(code(run(&["get"]).status), 2);
    assert_eq!(code(run(&["coordinator", "--servers", "1"]).status), 2);
    let both = run(&["bench", "--ops", "5", "--duration-s", "1"]);
    assert_eq!(code(both.status), 2);
    let bad_addr = run(&["coordinator", "--servers", "2", "--client-addr", "nowhere"]);
    assert_eq!(code(bad_addr.status), 2);
    assert!(
        stderr(&bad_addr).contains("--client-addr"),
        "{}",
        stderr(&bad_addr)
    );
}

#[test]
fn a_server_remembers_its_id_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("s").to_string_lossy().into_owned();
    // No coordinator listens there: the server keeps trying to register, which is fine.
    let coordinator = "127.0.0.1:9";

    let no_id = run(&[
        "server",
        "--coordinator",
        coordinator,
        "--data-dir",
        &data_dir,
    ]);
    assert_eq!(code(no_id.status), 2);
    assert!(
        stderr(&no_id).contains("has no server ID yet"),
        "{}",
        stderr(&no_id)
    );

    let args = [
        "server",
        "--coordinator",
        coordinator,
        "--data-dir",
        &data_dir,
    ];
    let mut first = Proc::spawn("first", &[&args[..], &["--id", "5"][..]].concat());
    assert_eq!(first.value_of("id"), "5");
    let status = first.terminate();
    assert_eq!(code(status), 0, "a SIGTERM is a clean stop");

    let mut again = Proc::spawn("again", &args);
    assert_eq!(again.value_of("id"), "5");
    drop(again);

    let other = run(&[&args[..], &["--id", "6"][..]].concat());
    assert_eq!(code(other.status), 2);
    let message = stderr(&other);
    assert!(message.contains("belongs to server 5"), "{message}");
}

#[test]
fn local_runs_a_cluster_that_comes_back_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_string_lossy().into_owned();
    let args = [
        "local",
        "--servers",
        "3",
        "--data-dir",
        &data_dir,
        "--client-addr",
        "127.0.0.1:0",
        "--server-addr",
        "127.0.0.1:0",
    ];

    let mut local = Proc::spawn("local", &args);
    let printed = local.lines_until("clients connect to ");
    let addr = client_addr(&printed);
    let text = printed.join("\n");
    assert!(text.contains("3 of 3 servers registered"), "{text}");
    for index in 0..3 {
        assert!(text.contains(&format!("server-{index} (")), "{text}");
    }
    assert!(text.contains("33.3%"), "{text}");
    let mut client = Client::connect(&addr).unwrap();
    for n in 0..20 {
        let put = ClientRequest::Put {
            key: format!("key-{n}"),
            value: format!("value-{n}"),
        };
        assert_eq!(client.call(&put).unwrap().response, ClientResponse::Success);
    }
    drop(client);
    let status = local.terminate();
    assert_eq!(code(status), 0, "{}", local.stderr_so_far());

    // The same data directory brings the same servers, and their data, back.
    let mut local = Proc::spawn("local again", &args);
    let printed = local.lines_until("clients connect to ");
    let addr = client_addr(&printed);
    wait_for_ring(&addr, 3);
    let mut client = Client::connect(&addr).unwrap();
    for n in 0..20 {
        let get = ClientRequest::Get {
            key: format!("key-{n}"),
        };
        assert_eq!(
            client.call(&get).unwrap().response,
            ClientResponse::Value {
                key: format!("key-{n}"),
                value: format!("value-{n}"),
            }
        );
    }
    drop(client);
    let status = local.terminate();
    assert_eq!(code(status), 0, "{}", local.stderr_so_far());
}

/// The address after "clients connect to " in what `ringkv local` printed.
fn client_addr(printed: &[String]) -> String {
    printed
        .iter()
        .find_map(|line| line.strip_prefix("clients connect to "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a `clients connect to` line")
        .to_owned()
}

#[test]
fn an_update_whose_answer_is_lost_is_reported_as_of_unknown_outcome() {
    // A store that reads the request and closes without answering.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = std::io::Read::read(&mut conn, &mut buf);
        }
    });
    let put = run(&["put", "k", "v", "--addr", &addr]);
    assert_eq!(code(put.status), 2);
    assert!(
        stderr(&put).contains("may or may not have taken effect"),
        "{}",
        stderr(&put)
    );
    let get = run(&["get", "k", "--addr", &addr]);
    assert_eq!(code(get.status), 2);
    assert!(!stderr(&get).contains("taken effect"), "{}", stderr(&get));
    server.join().unwrap();
}
