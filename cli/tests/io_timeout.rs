//! `--io-timeout-ms`: how long a client command waits for the store before it gives up.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{code, run, stderr, stdout};

/// A store that takes connections and requests and never answers.
fn silent_store() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("has an address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[test]
fn a_one_shot_command_gives_up_after_the_io_timeout_it_was_given() {
    let addr = silent_store();
    let started = Instant::now();
    let output = run(&["put", "k", "v", "--addr", &addr, "--io-timeout-ms", "300"]);
    let took = started.elapsed();
    assert_eq!(code(output.status), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("did not answer within 300 ms"),
        "{}",
        stderr(&output)
    );
    assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
    assert!(took < Duration::from_secs(9), "waited {took:?}");
}

#[test]
fn the_io_timeout_defaults_to_30_s_on_every_client_command() {
    for command in ["get", "put", "del", "status", "console", "bench"] {
        let output = run(&[command, "--help"]);
        let help = stdout(&output);
        let flag = help
            .find("--io-timeout-ms <IO_TIMEOUT_MS>")
            .unwrap_or_else(|| panic!("{command} has no --io-timeout-ms: {help}"));
        let rest = help.get(flag + 2..).unwrap_or_default();
        let entry = rest.split("\n  -").next().unwrap_or_default();
        assert!(entry.contains("[default: 30000]"), "{command}: {entry}");
    }
}
