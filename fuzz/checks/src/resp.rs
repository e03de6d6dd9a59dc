//! The RESP parser of the coordinator's RESP port (`ringkv_net::resp::RespParser`).
//!
//! Each input is used twice:
//! 1. as raw bytes: fed whole, cut at two points hashed from the input, and a byte at a
//!    time, the events must agree; at most one verdict (`TooLarge`, `Invalid`) comes,
//!    and nothing after it; every command has at least one argument; fed a byte at a
//!    time, the parser never holds more than the frame limit (plus the two bytes a line
//!    end may take) from before the byte it was just given;
//! 2. as commands: the bytes are cut into arguments (a 0xFF byte ends an argument, 0xFE a
//!    command), encoded as multibulks, and must come back exactly, however they are cut,
//!    unless a command is over the limit, which must then be `TooLarge`.

use ringkv_net::resp::{RespEvent, RespParser};

const LIMIT: usize = 256;

fn run(bytes: &[u8], cuts: &[usize]) -> (Vec<RespEvent>, usize) {
    let mut parser = RespParser::new(LIMIT);
    let mut events = Vec::new();
    let mut most_held = 0;
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let end = cut.clamp(at, bytes.len());
        let piece = &bytes[at..end];
        parser.push(piece);
        at = end;
        while let Some(event) = parser.next_event() {
            events.push(event);
        }
        most_held = most_held.max(parser.buffered_bytes().saturating_sub(piece.len()));
    }
    events.extend(parser.finish());
    (events, most_held)
}

fn cuts_of(bytes: &[u8]) -> [usize; 2] {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let len = bytes.len() + 1;
    let (a, b) = ((hash as usize) % len, ((hash >> 32) as usize) % len);
    [a.min(b), a.max(b)]
}

fn check_raw(bytes: &[u8]) {
    let (whole, _) = run(bytes, &[]);
    let (cut, _) = run(bytes, &cuts_of(bytes));
    assert_eq!(whole, cut, "events depend on how the stream is cut");
    // Fed a byte at a time, what the parser holds from before each push is measured at
    // every byte: past the limit and a line end it must have answered `TooLarge`. (Fed
    // whole, nothing is held from before the one push, so only this run can tell.)
    let every_byte: Vec<usize> = (1..bytes.len()).collect();
    let (trickled, held) = run(bytes, &every_byte);
    assert_eq!(whole, trickled, "events depend on how the stream is cut");
    assert!(
        held <= LIMIT + 2,
        "held {held} bytes from before the last push"
    );
    let verdicts = whole
        .iter()
        .filter(|event| !matches!(event, RespEvent::Command(_)))
        .count();
    assert!(verdicts <= 1, "more than one verdict: {whole:?}");
    if verdicts == 1 {
        assert!(
            !matches!(whole.last(), Some(RespEvent::Command(_))),
            "a command after a verdict"
        );
    }
    for event in &whole {
        if let RespEvent::Command(args) = event {
            assert!(!args.is_empty(), "a command without arguments");
        }
    }
}

fn check_commands(bytes: &[u8]) {
    let commands: Vec<Vec<Vec<u8>>> = bytes
        .split(|&b| b == 0xFE)
        .map(|command| command.split(|&b| b == 0xFF).map(<[u8]>::to_vec).collect())
        .collect();
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for args in commands {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in &args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg);
            frame.extend_from_slice(b"\r\n");
        }
        stream.extend_from_slice(&frame);
        if frame.len() > LIMIT {
            expected.push(RespEvent::TooLarge);
            break;
        }
        expected.push(RespEvent::Command(args));
    }
    let (whole, _) = run(&stream, &[]);
    assert_eq!(whole, expected, "multibulks did not come back");
    let (cut, _) = run(&stream, &cuts_of(bytes));
    assert_eq!(cut, expected, "multibulks cut apart did not come back");
}

/// Runs every check of this target on one input; panics on a violation.
pub fn check(bytes: &[u8]) {
    check_raw(bytes);
    check_commands(bytes);
}
