//! Splitting a byte stream into protocol lines, with the frame limit enforced.
//!
//! The shells feed whatever bytes a socket gave; the splitter hands back whole lines
//! without their line end (`\n` or `\r\n`), skips blank lines, and reports a line over
//! the limit as soon as it is certain, without buffering the rest of it.

/// What the splitter found in the bytes it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineEvent {
    /// One whole line, without its line end.
    Line(Vec<u8>),
    /// A line over the frame limit: answer `frame_too_large` and close the connection.
    /// After this the splitter yields nothing more.
    TooLarge,
}

/// Accumulates bytes and yields lines; its memory is bounded by the frame limit.
#[derive(Debug)]
pub struct LineSplitter {
    max_frame_bytes: usize,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    /// How far past `start` is known to hold no `\n`.
    scanned: usize,
    poisoned: bool,
}

impl LineSplitter {
    /// A splitter that refuses lines longer than `max_frame_bytes` (line end not counted).
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            poisoned: false,
        }
    }

    /// Adds bytes read from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.poisoned {
            return;
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes held but not yet returned as lines.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole line or the verdict that the current line is too large.
    pub fn next_event(&mut self) -> Option<LineEvent> {
        loop {
            if self.poisoned {
                return None;
            }
            let unread = self.buf.get(self.start..).unwrap_or(&[]);
            let Some(newline) = unread
                .get(self.scanned..)
                .and_then(|rest| memchr::memchr(b'\n', rest))
                .map(|at| at + self.scanned)
            else {
                self.scanned = unread.len();
                // One byte over the limit may still be the `\r` of a `\r\n`.
                if unread.len() > self.max_frame_bytes.saturating_add(1) {
                    return Some(self.poison());
                }
                return None;
            };
            let line_end = self.start + newline;
            let line = self.take_line(line_end);
            self.start = line_end + 1;
            self.scanned = 0;
            if let Some(event) = self.judge(line) {
                return Some(event);
            }
        }
    }

    /// The peer half-closed: a last line without `\n` counts as a whole line.
    pub fn finish(&mut self) -> Option<LineEvent> {
        if let Some(event) = self.next_event() {
            return Some(event);
        }
        if self.poisoned || self.buffered_bytes() == 0 {
            return None;
        }
        let line = self.take_line(self.buf.len());
        self.start = self.buf.len();
        self.scanned = 0;
        self.judge(line)
    }

    fn take_line(&self, end: usize) -> Vec<u8> {
        let mut line = self.buf.get(self.start..end).unwrap_or(&[]).to_vec();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        line
    }

    fn judge(&mut self, line: Vec<u8>) -> Option<LineEvent> {
        if line.len() > self.max_frame_bytes {
            return Some(self.poison());
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return None;
        }
        Some(LineEvent::Line(line))
    }

    fn poison(&mut self) -> LineEvent {
        self.poisoned = true;
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
        LineEvent::TooLarge
    }
}
