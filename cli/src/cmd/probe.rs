//! `ringkv probe`: the floor under a PUT's latency on this machine. A PUT is answered
//! after two round trips (the client's to the coordinator, the coordinator's phase 1 to
//! the replicas) and one fsync's time: the replicas' prepare records and the
//! coordinator's staged record are synced side by side (parallel commit). These two
//! figures bound what any tuning of ringkv can reach.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::args::ProbeArgs;
use crate::exit::Exit;
use crate::out;

/// The longest latency recorded, in microseconds (10 s).
const MAX_US: u64 = 10_000_000;
/// Bytes written before each fsync: a typical small log record.
const RECORD_BYTES: usize = 128;
/// Bytes of each round-trip message: a typical small request line.
const MESSAGE_BYTES: usize = 64;

/// Measures fsync latency in `--dir` and the loopback round trip, and prints both with
/// the floor they put under a PUT.
pub fn run(args: &ProbeArgs) -> Exit {
    let fsync = match fsync_latency(&args.dir, args.samples) {
        Ok(h) => h,
        Err(err) => {
            eprintln!("error: fsync probe in {}: {err}", args.dir.display());
            return Exit::Failure;
        }
    };
    let rtt = match loopback_round_trip(args.samples) {
        Ok(h) => h,
        Err(err) => {
            eprintln!("error: loopback probe: {err}");
            return Exit::Failure;
        }
    };
    let floor_p50_us = 2 * rtt.value_at_quantile(0.5) + fsync.value_at_quantile(0.5);
    if args.json {
        let line = serde_json::json!({
            "samples": args.samples,
            "fsync_us": summary(&fsync),
            "loopback_rtt_us": summary(&rtt),
            "put_floor_p50_us": floor_p50_us,
        });
        out::line_or_warn(&line.to_string());
    } else {
        out::line_or_warn(&format!(
            "fsync ({RECORD_BYTES}-byte record into space written ahead + fdatasync in {}): {}",
            args.dir.display(),
            describe(&fsync)
        ));
        out::line_or_warn(&format!(
            "loopback round trip ({MESSAGE_BYTES}-byte line each way): {}",
            describe(&rtt)
        ));
        out::line_or_warn(&format!(
            "floor of one PUT (2 round trips + 1 fsync, p50): {floor_p50_us} us"
        ));
    }
    Exit::Ok
}

/// A histogram of 1 us to 10 s with 3 significant digits; bounds that fail are a bug.
fn histogram() -> std::io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_US, 3).map_err(std::io::Error::other)
}

fn record(h: &mut Histogram<u64>, started: Instant) {
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(MAX_US);
    h.saturating_record(us.clamp(1, MAX_US));
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50": h.value_at_quantile(0.5),
        "p99": h.value_at_quantile(0.99),
        "max": h.max(),
        "mean": h.mean().round() as u64,
    })
}

fn describe(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} us, p99 {} us, max {} us, mean {:.0} us",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
        h.mean()
    )
}

/// Writes a record and fdatasyncs, `samples` times, in a scratch file removed after. The
/// records go into space written (and synced) ahead, as ringkv's logs write into space
/// allocated ahead: an fdatasync that need not record a grown file size is what a log's
/// sync costs.
fn fsync_latency(dir: &Path, samples: u64) -> std::io::Result<Histogram<u64>> {
    let path: PathBuf = dir.join(format!(".ringkv-probe-{}", std::process::id()));
    let result = (|| {
        let mut file: File = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let record_bytes = RECORD_BYTES as u64;
        let space =
            usize::try_from(samples.saturating_mul(record_bytes)).map_err(std::io::Error::other)?;
        file.write_all(&vec![0; space])?;
        file.sync_all()?;
        let bytes = [b'r'; RECORD_BYTES];
        let mut h = histogram()?;
        for n in 0..samples {
            let started = Instant::now();
            file.write_all_at(&bytes, n * record_bytes)?;
            file.sync_data()?;
            record(&mut h, started);
        }
        Ok(h)
    })();
    let _ = fs::remove_file(&path);
    result
}

/// Ping-pongs a line with an echo thread over loopback TCP, `samples` times.
fn loopback_round_trip(samples: u64) -> std::io::Result<Histogram<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            writer.write_all(&line)?;
        }
    });
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut message = vec![b'm'; MESSAGE_BYTES - 1];
    message.push(b'\n');
    let mut answer = Vec::with_capacity(MESSAGE_BYTES);
    let mut h = histogram()?;
    // The first round trips warm the path up; they are not recorded.
    for i in 0..samples + 100 {
        let started = Instant::now();
        writer.write_all(&message)?;
        answer.clear();
        reader.read_until(b'\n', &mut answer)?;
        if i >= 100 {
            record(&mut h, started);
        }
    }
    drop(writer);
    drop(reader);
    match echo.join() {
        Ok(result) => result?,
        Err(_) => return Err(std::io::Error::other("the echo thread panicked")),
    }
    Ok(h)
}
