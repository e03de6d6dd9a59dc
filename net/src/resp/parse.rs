//! Splitting a RESP2 byte stream into commands, with the frame limit enforced.
//!
//! Clients send a command either as a multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what
//! every client library and redis-benchmark send) or inline (`GET k\r\n`, what a person
//! types into telnet). The parser keeps its place between pushes, so a command split
//! across any number of reads costs no re-parsing, and it reports a command over the
//! limit as soon as a header announces it, without buffering the rest.

/// What the parser found in the bytes it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespEvent {
    /// One command: its arguments, never none.
    Command(Vec<Vec<u8>>),
    /// A command over the frame limit: answer it and close the connection. After this the
    /// parser yields nothing more.
    TooLarge,
    /// Bytes that are not RESP: answer `-ERR Protocol error: <reason>` and close the
    /// connection, as Redis does. After this the parser yields nothing more.
    Invalid(&'static str),
}

/// The longest `*N` or `$N` header line, `\r\n` included: a sign, 20 digits and slack.
const MAX_HEADER_BYTES: usize = 32;

/// Where the parser stands inside the current command.
#[derive(Debug)]
enum State {
    /// Between commands.
    Idle,
    /// Inside a multibulk: arguments still expected, those read, and the command's bytes
    /// so far (for the frame limit).
    Multibulk {
        left: usize,
        args: Vec<Vec<u8>>,
        frame_bytes: usize,
    },
    /// Inside a multibulk, a `$N` header read: the body of `len` bytes and `\r\n` follow.
    Bulk {
        len: usize,
        left: usize,
        args: Vec<Vec<u8>>,
        frame_bytes: usize,
    },
}

/// Accumulates bytes and yields commands; its memory is bounded by the frame limit.
#[derive(Debug)]
pub struct RespParser {
    max_frame_bytes: usize,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    state: State,
    /// A verdict (too large, invalid) was given; nothing more is parsed.
    done: bool,
}

/// One step of parsing: an event, a need for more bytes, or progress inside a command.
enum Step {
    Event(RespEvent),
    NeedMore,
    Progress,
}

impl RespParser {
    /// A parser that refuses commands over `max_frame_bytes` bytes on the wire.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes,
            buf: Vec::new(),
            start: 0,
            state: State::Idle,
            done: false,
        }
    }

    /// Adds bytes read from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes held but not yet returned as commands.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole command, or a verdict on the current one; `None` until more bytes
    /// come.
    pub fn next_event(&mut self) -> Option<RespEvent> {
        loop {
            if self.done {
                return None;
            }
            match self.step() {
                Step::Event(event) => {
                    if !matches!(event, RespEvent::Command(_)) {
                        self.done = true;
                        self.buf = Vec::new();
                        self.start = 0;
                    }
                    return Some(event);
                }
                Step::NeedMore => return None,
                Step::Progress => {}
            }
        }
    }

    /// The peer half-closed: a last inline command without its line end still counts (as
    /// a last JSON line does); a multibulk cut short is dropped.
    pub fn finish(&mut self) -> Option<RespEvent> {
        if let Some(event) = self.next_event() {
            return Some(event);
        }
        if self.done || !matches!(self.state, State::Idle) || self.buffered_bytes() == 0 {
            return None;
        }
        let line = self.buf.get(self.start..).unwrap_or_default().to_vec();
        self.start = self.buf.len();
        self.inline_command(&line)
    }

    fn unread(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    fn step(&mut self) -> Step {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => self.step_idle(),
            State::Multibulk {
                left: 0,
                args,
                frame_bytes: _,
            } => {
                if args.is_empty() {
                    // `*0` is an empty command: nothing to answer.
                    Step::Progress
                } else {
                    Step::Event(RespEvent::Command(args))
                }
            }
            State::Multibulk {
                left,
                args,
                frame_bytes,
            } => self.step_bulk_header(left, args, frame_bytes),
            State::Bulk {
                len,
                left,
                args,
                frame_bytes,
            } => self.step_bulk_body(len, left, args, frame_bytes),
        }
    }

    fn step_idle(&mut self) -> Step {
        let Some(&first) = self.unread().first() else {
            return Step::NeedMore;
        };
        if first != b'*' {
            return self.step_inline();
        }
        if let Some(event) = self.whole_multibulk() {
            return Step::Event(event);
        }
        let header_len = match self.header_line() {
            Ok(Some(len)) => len,
            Ok(None) => return Step::NeedMore,
            Err(()) => return Step::Event(RespEvent::Invalid("invalid multibulk length")),
        };
        let Some(count) = parse_length(self.unread().get(1..header_len).unwrap_or_default()) else {
            return Step::Event(RespEvent::Invalid("invalid multibulk length"));
        };
        let frame_bytes = header_len;
        self.start += header_len;
        let Some(count) = count else {
            // `*-1`: a null command, ignored as Redis does.
            return Step::Progress;
        };
        // Each argument takes at least `$0\r\n\r\n`, six bytes.
        if count.saturating_mul(6).saturating_add(frame_bytes) > self.max_frame_bytes {
            return Step::Event(RespEvent::TooLarge);
        }
        self.state = State::Multibulk {
            left: count,
            args: Vec::with_capacity(count.min(16)),
            frame_bytes,
        };
        Step::Progress
    }

    /// A multibulk command wholly in the buffer, parsed in one pass: what nearly every
    /// command of a client library is. `None` hands everything else (a command split
    /// across reads, `*0`, `*-1`, anything invalid or over the limit) to the step by step
    /// parser, so that this path only ever yields what that one would.
    fn whole_multibulk(&mut self) -> Option<RespEvent> {
        let unread = self.unread();
        let header_len = whole_header(unread)?;
        let count = parse_length(unread.get(1..header_len)?)??;
        if count == 0 || count.saturating_mul(6).saturating_add(header_len) > self.max_frame_bytes {
            return None;
        }
        let mut frame_bytes = header_len;
        let mut args = Vec::with_capacity(count.min(16));
        for _ in 0..count {
            let rest = unread.get(frame_bytes..)?;
            let header_len = whole_header(rest)?;
            if rest.first() != Some(&b'$') {
                return None;
            }
            let len = parse_length(rest.get(1..header_len)?)??;
            let end = frame_bytes.checked_add(header_len)?.checked_add(len)?;
            if end.checked_add(2)? > self.max_frame_bytes
                || unread.get(end..end.checked_add(2)?)? != b"\r\n"
            {
                return None;
            }
            args.push(unread.get(frame_bytes + header_len..end)?.to_vec());
            frame_bytes = end + 2;
        }
        self.start += frame_bytes;
        Some(RespEvent::Command(args))
    }

    fn step_bulk_header(&mut self, left: usize, args: Vec<Vec<u8>>, frame_bytes: usize) -> Step {
        let header_len = match self.header_line() {
            Ok(Some(len)) => len,
            Ok(None) => {
                self.state = State::Multibulk {
                    left,
                    args,
                    frame_bytes,
                };
                return Step::NeedMore;
            }
            Err(()) => return Step::Event(RespEvent::Invalid("invalid bulk length")),
        };
        let header = self.unread().get(..header_len).unwrap_or_default();
        if header.first() != Some(&b'$') {
            return Step::Event(RespEvent::Invalid("expected '$'"));
        }
        let len = match parse_length(header.get(1..).unwrap_or_default()) {
            Some(Some(len)) => len,
            _ => return Step::Event(RespEvent::Invalid("invalid bulk length")),
        };
        let frame_bytes = frame_bytes + header_len;
        if frame_bytes.saturating_add(len).saturating_add(2) > self.max_frame_bytes {
            return Step::Event(RespEvent::TooLarge);
        }
        self.start += header_len;
        self.state = State::Bulk {
            len,
            left,
            args,
            frame_bytes,
        };
        Step::Progress
    }

    fn step_bulk_body(
        &mut self,
        len: usize,
        left: usize,
        mut args: Vec<Vec<u8>>,
        frame_bytes: usize,
    ) -> Step {
        let unread = self.unread();
        let (Some(body), Some(end)) = (unread.get(..len), unread.get(len..len + 2)) else {
            self.state = State::Bulk {
                len,
                left,
                args,
                frame_bytes,
            };
            return Step::NeedMore;
        };
        if end != b"\r\n" {
            return Step::Event(RespEvent::Invalid("bulk not ended by CRLF"));
        }
        args.push(body.to_vec());
        self.start += len + 2;
        self.state = State::Multibulk {
            left: left - 1,
            args,
            frame_bytes: frame_bytes + len + 2,
        };
        Step::Progress
    }

    /// The length of the header line (`*N\r\n`, `$N\r\n`) at the read position, line end
    /// included, if it is whole; an error if it is longer than any valid header could be.
    fn header_line(&self) -> Result<Option<usize>, ()> {
        let unread = self.unread();
        let window = unread.get(..MAX_HEADER_BYTES).unwrap_or(unread);
        match window.windows(2).position(|pair| pair == b"\r\n") {
            Some(at) => Ok(Some(at + 2)),
            None if window.len() == MAX_HEADER_BYTES => Err(()),
            None => Ok(None),
        }
    }

    fn step_inline(&mut self) -> Step {
        let unread = self.unread();
        let Some(newline) = unread.iter().position(|&b| b == b'\n') else {
            // One byte over the limit may still be the `\r` of a `\r\n`.
            if unread.len() > self.max_frame_bytes.saturating_add(1) {
                return Step::Event(RespEvent::TooLarge);
            }
            return Step::NeedMore;
        };
        let line = unread.get(..newline).unwrap_or_default().to_vec();
        self.start += newline + 1;
        match self.inline_command(&line) {
            Some(event) => Step::Event(event),
            None => Step::Progress,
        }
    }

    fn inline_command(&self, line: &[u8]) -> Option<RespEvent> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max_frame_bytes {
            return Some(RespEvent::TooLarge);
        }
        match split_inline(line) {
            Ok(args) if args.is_empty() => None,
            Ok(args) => Some(RespEvent::Command(args)),
            Err(reason) => Some(RespEvent::Invalid(reason)),
        }
    }
}

/// The length of the whole header line (`*N\r\n`, `$N\r\n`) at the start of `bytes`,
/// line end included; `None` if it is not whole within the longest a header may be.
fn whole_header(bytes: &[u8]) -> Option<usize> {
    let window = bytes.get(..MAX_HEADER_BYTES).unwrap_or(bytes);
    window
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .map(|at| at + 2)
}

/// Parses the digits of a `*N`/`$N` header (line end included): `Some(None)` for -1,
/// `None` for anything but a decimal in -1..=usize::MAX.
fn parse_length(digits_crlf: &[u8]) -> Option<Option<usize>> {
    let digits = digits_crlf.strip_suffix(b"\r\n")?;
    if digits == b"-1" {
        return Some(None);
    }
    if digits.is_empty() {
        return None;
    }
    let mut n: usize = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(usize::from(digit - b'0'))?;
    }
    Some(Some(n))
}

/// Splits an inline command into arguments as redis-cli and Redis do: spaces and tabs
/// separate; "double quotes" take `\n`, `\r`, `\t`, `\b`, `\a`, `\\`, `\"` and `\xHH`;
/// 'single quotes' take `\'`; a closing quote must be followed by a space or the end.
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut args = Vec::new();
    let mut rest = line;
    loop {
        rest = trim_start(rest);
        let Some(&first) = rest.first() else {
            return Ok(args);
        };
        let (arg, after) = match first {
            b'"' => double_quoted(rest.get(1..).unwrap_or_default())?,
            b'\'' => single_quoted(rest.get(1..).unwrap_or_default())?,
            _ => {
                let end = rest
                    .iter()
                    .position(|b| is_inline_space(*b))
                    .unwrap_or(rest.len());
                (
                    rest.get(..end).unwrap_or_default().to_vec(),
                    rest.get(end..).unwrap_or_default(),
                )
            }
        };
        if after.first().is_some_and(|b| !is_inline_space(*b)) {
            return Err("unbalanced quotes in request");
        }
        args.push(arg);
        rest = after;
    }
}

fn is_inline_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .position(|b| !is_inline_space(*b))
        .unwrap_or(bytes.len());
    bytes.get(skip..).unwrap_or_default()
}

/// The argument inside double quotes (the opening one consumed) and what follows.
fn double_quoted(mut rest: &[u8]) -> Result<(Vec<u8>, &[u8]), &'static str> {
    let mut arg = Vec::new();
    loop {
        match rest {
            [] => return Err("unbalanced quotes in request"),
            [b'"', after @ ..] => return Ok((arg, after)),
            [b'\\', b'x', hi, lo, after @ ..]
                if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() =>
            {
                arg.push(hex_value(*hi) << 4 | hex_value(*lo));
                rest = after;
            }
            [b'\\', c, after @ ..] => {
                arg.push(match c {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => *other,
                });
                rest = after;
            }
            [c, after @ ..] => {
                arg.push(*c);
                rest = after;
            }
        }
    }
}

/// The argument inside single quotes (the opening one consumed) and what follows.
fn single_quoted(mut rest: &[u8]) -> Result<(Vec<u8>, &[u8]), &'static str> {
    let mut arg = Vec::new();
    loop {
        match rest {
            [] => return Err("unbalanced quotes in request"),
            [b'\'', after @ ..] => return Ok((arg, after)),
            [b'\\', b'\'', after @ ..] => {
                arg.push(b'\'');
                rest = after;
            }
            [c, after @ ..] => {
                arg.push(*c);
                rest = after;
            }
        }
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}
