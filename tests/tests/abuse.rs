//! Abuse: whatever a peer sends or fails to read, the processes stay up and keep
//! serving others.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use ringkv_e2e::{error_code, get, put, Client, Cluster};

const IDS: [u64; 2] = [100, u64::MAX - 100];

/// The cluster still answers a fresh client, and every process is alive.
fn assert_serving(c: &mut Cluster) {
    let mut client = c.client();
    assert_eq!(client.request(&put("alive", "yes"))["message"], "Success");
    assert_eq!(client.request(&get("alive"))["value"], "yes");
    assert!(c.coordinator.is_running());
    for server in c.servers.iter_mut().flatten() {
        assert!(server.is_running());
    }
}

/// Deterministic junk (xorshift), with plenty of newlines, NULs and invalid UTF-8.
fn junk(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn random_bytes_on_every_port_get_answers_or_a_close() {
    let mut c = Cluster::start(&IDS, &[]);
    let ports = [
        c.client_addr,
        c.server_addr,
        c.server_listen(0),
        c.server_listen(1),
    ];
    for (i, addr) in ports.into_iter().enumerate() {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // A peer may close on us mid-way; that is a fine answer to junk.
        let _ = stream.write_all(&junk(256 * 1024, 0x9e37_79b9 + i as u64));
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut client = c.client();
    let answer = client.request("\u{1}\u{2}garbage{{{");
    assert_eq!(error_code(&answer), Some("malformed"));
    assert_serving(&mut c);
}

#[test]
fn a_ten_mib_line_is_refused_without_harm() {
    let mut c = Cluster::start(&IDS, &[]);
    let mut client = c.client();
    let mut stream = TcpStream::connect(c.client_addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..10 {
        if stream.write_all(&chunk).is_err() {
            break; // closed after the frame_too_large answer: expected
        }
    }
    let _ = stream.write_all(b"\n");
    let mut reader = Client::from_stream(stream);
    let answer = reader.recv();
    assert_eq!(error_code(&answer), Some("frame_too_large"));
    assert!(reader.is_closed());
    assert_eq!(client.request(&get("alive"))["error"], "not_found");
    assert_serving(&mut c);
}

#[test]
fn many_idle_connections_do_not_starve_others() {
    let mut c = Cluster::start(&IDS, &[]);
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(c.client_addr).unwrap())
        .collect();
    assert_serving(&mut c);
    drop(idle);
}

#[test]
fn a_slow_sender_is_served_and_does_not_block_others() {
    let mut c = Cluster::start(&IDS, &[]);
    let mut slow = c.client();
    let line = format!("{}\n", put("slow", "poke"));
    for (i, byte) in line.bytes().enumerate() {
        slow.send_raw(&[byte]);
        if i % 8 == 0 {
            // Meanwhile others are served.
            let mut other = c.client();
            assert!(other.request(&get("slow")).is_object());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(slow.recv()["message"], "Success");
    assert_serving(&mut c);
}

#[test]
fn a_client_that_never_reads_cannot_hold_up_the_others() {
    let mut c = Cluster::start(&IDS, &[]);
    let mut client = c.client();
    assert_eq!(
        client.request(&put("big", &"b".repeat(200_000)))["message"],
        "Success"
    );
    let addr = c.client_addr;
    // Pipelined GETs of a 200 KB value, never reading the answers: the coordinator must
    // stop reading this client rather than buffer without bound.
    let greedy = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let line = format!("{}\n", get("big"));
        let mut sent = 0usize;
        for _ in 0..20_000 {
            if stream.write_all(line.as_bytes()).is_err() {
                break; // the coordinator stopped reading: our writes time out
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
        sent
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_serving(&mut c);
    let sent = greedy.join().unwrap();
    assert!(sent > 0);
    // Answered in full, the GETs sent would be `sent` times 200 KB (up to 4 GB): the
    // coordinator holds a bounded part of them (its send buffer per connection is 16
    // MiB), or its memory would show it.
    let rss_kib = resident_kib(c.coordinator.pid());
    assert!(
        rss_kib < 256 * 1024,
        "the coordinator holds {rss_kib} KiB after {sent} unread GETs of 200 KB"
    );
    assert_serving(&mut c);
}

/// A process's resident memory, from /proc/PID/status.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a running process");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in kB")
}
