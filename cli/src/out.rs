//! Writing to stdout without panicking: `println!` panics when stdout is a closed pipe
//! (`ringkv get k | head -c0`), and scripts read the role's address lines only once they
//! are flushed.

use std::io::{self, Write};

/// Writes `text` to stdout and flushes it.
pub fn print(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes `text` and a line end to stdout and flushes it.
pub fn line(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// Writes `text` and a line end to stdout; a failure (nobody reads stdout any more) is
/// logged and otherwise ignored, for output that is informative, not the result.
pub fn line_or_warn(text: &str) {
    if let Err(err) = line(text) {
        tracing::warn!(%err, "could not write to stdout");
    }
}
