//! Recovery as a fold: the log's frames are decoded into a role's records, and each is
//! handed to the role's own replay step. Any role with a log drives it the same way.

use std::fmt;

use crate::log::{after_prefix, decode_frames, AfterPrefix, PrefixEnd, StopReason};

/// A role's log record, decoded from one frame's payload.
pub trait LogRecord: Sized {
    /// Why a payload is no record.
    type Error: fmt::Display + fmt::Debug + Clone;

    /// Decodes one payload; never panics, whatever the bytes.
    fn decode(payload: &[u8]) -> Result<Self, Self::Error>;
}

/// What a fold over a log found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogScan<E> {
    /// Records replayed.
    pub records: usize,
    /// Bytes of the log that hold whole, valid records; what follows must be cut.
    pub valid_len: u64,
    /// Why decoding stopped where it did.
    pub stop: StopReason,
    /// What lies after the valid prefix: a torn tail to cut, or corruption (a valid
    /// frame after a bad one), which the caller must refuse to cut without an operator's
    /// word.
    pub after: AfterPrefix,
    /// A frame whose checksum was right but whose payload is no record, where the fold
    /// stopped (a log of a newer version, or a bug).
    pub bad_record: Option<(u64, E)>,
    /// Records the replay step rejected (they contradict the protocol), with offsets.
    pub anomalies: Vec<String>,
}

/// Replays every record of `log` in order through `step(record, payload_offset)`; a step
/// that returns an error records an anomaly and the fold goes on.
pub fn replay_log<R: LogRecord>(
    log: &[u8],
    step: impl FnMut(R, u64) -> Result<(), String>,
) -> LogScan<R::Error> {
    let mut stream = LogStream::new();
    stream.feed(log, true, step);
    let after = after_prefix(log, stream.decoded_to());
    stream.finish(after)
}

/// The same fold as [`replay_log`], fed the log in chunks, so that recovery holds a
/// bounded part of a large log in memory instead of all of it.
///
/// The caller feeds bytes from [`LogStream::decoded_to`] on; each [`LogStream::feed`]
/// replays the whole frames at the start of its chunk and says how many bytes they took.
/// The caller drops those, adds more bytes behind the rest (a frame cut by the chunk's
/// end), and feeds again until [`LogStream::is_done`]. Then it looks at what follows
/// `decoded_to` for [`LogStream::finish`].
#[derive(Debug)]
pub struct LogStream<E> {
    scan: LogScan<E>,
    /// Where the next chunk starts: the end of the frames decoded so far, which goes on
    /// past a bad record (so that the stop reason is the whole log's).
    decoded_to: u64,
    /// Which version wrote the last frame decoded, for judging what follows the frames.
    prefix_end: PrefixEnd,
    done: bool,
}

impl<E> Default for LogStream<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> LogStream<E> {
    /// A fold at the start of a log.
    pub fn new() -> Self {
        Self {
            scan: LogScan {
                records: 0,
                valid_len: 0,
                stop: StopReason::End,
                after: AfterPrefix::TornTail,
                bad_record: None,
                anomalies: Vec::new(),
            },
            decoded_to: 0,
            prefix_end: PrefixEnd::after(None),
            done: false,
        }
    }

    /// Replays the whole frames at the start of `chunk`, which holds the log's bytes
    /// from [`LogStream::decoded_to`] on; `at_end` if no byte of the log follows it.
    /// Returns the bytes those frames took. A frame cut by the chunk's end (not
    /// `at_end`) waits for the next call, which must start with its bytes.
    pub fn feed<R: LogRecord<Error = E>>(
        &mut self,
        chunk: &[u8],
        at_end: bool,
        mut step: impl FnMut(R, u64) -> Result<(), String>,
    ) -> usize {
        assert!(!self.done, "a log stream fed after its end");
        let decoded = decode_frames(chunk);
        let base = self.decoded_to;
        for frame in &decoded.frames {
            if self.scan.bad_record.is_some() {
                // Replay stopped at a record this version cannot read; the frames are
                // still decoded, so that the report says how the log itself ends.
                break;
            }
            match R::decode(frame.payload) {
                Ok(record) => {
                    self.scan.records += 1;
                    if let Err(anomaly) = step(record, base + frame.payload_offset) {
                        self.scan
                            .anomalies
                            .push(format!("at offset {}: {anomaly}", base + frame.offset));
                    }
                }
                Err(err) => {
                    // The valid prefix ends before it, whatever chunk it came in.
                    self.scan.valid_len = base + frame.offset;
                    self.scan.bad_record = Some((base + frame.offset, err));
                }
            }
        }
        self.decoded_to = base + decoded.valid_len;
        if !decoded.frames.is_empty() {
            self.prefix_end = decoded.prefix_end();
        }
        if self.scan.bad_record.is_none() {
            self.scan.valid_len = self.decoded_to;
        }
        let cut_by_chunk = !at_end
            && matches!(
                decoded.stop,
                StopReason::End | StopReason::TornHeader | StopReason::TornPayload
            );
        if !cut_by_chunk {
            self.scan.stop = decoded.stop;
            self.done = true;
        }
        // Lossless: a chunk's valid length is at most its length.
        usize::try_from(decoded.valid_len).unwrap_or(chunk.len())
    }

    /// The log goes on at `offset`, past a gap: a compacted segment holds fewer bytes
    /// than the range of the log it replaced. Only between whole frames, before the end.
    pub fn skip_to(&mut self, offset: u64) {
        assert!(!self.done, "a log stream skipped after its end");
        assert!(offset >= self.decoded_to, "a log stream skipped backwards");
        self.decoded_to = offset;
        if self.scan.bad_record.is_none() {
            self.scan.valid_len = offset;
        }
    }

    /// Whether the log has ended (or a bad frame ended its valid prefix).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Where the next chunk starts, and, once done, where what follows the frames
    /// begins: the caller judges those bytes ([`crate::log::after_prefix`]).
    pub fn decoded_to(&self) -> u64 {
        self.decoded_to
    }

    /// Which version wrote the last frame decoded (past a gap, the last before it):
    /// what [`crate::log::after_prefix_from`] needs to judge the bytes after the frames.
    pub fn prefix_end(&self) -> PrefixEnd {
        self.prefix_end
    }

    /// The fold's result, given what lies after the decoded frames.
    pub fn finish(mut self, after: AfterPrefix) -> LogScan<E> {
        self.scan.after = after;
        self.scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{encode_frame, frame_len};

    /// A record of one byte, 7: any other payload is no record.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Seven;

    impl LogRecord for Seven {
        type Error = String;

        fn decode(payload: &[u8]) -> Result<Self, String> {
            match payload {
                [7] => Ok(Seven),
                _ => Err(format!("not a record: {payload:?}")),
            }
        }
    }

    fn log_of(payloads: &[&[u8]]) -> Vec<u8> {
        let mut log = Vec::new();
        for payload in payloads {
            encode_frame(payload, &mut log);
        }
        log
    }

    #[test]
    fn replay_stops_at_a_payload_that_is_no_record_and_the_valid_prefix_ends_there() {
        let log = log_of(&[&[7], &[7], &[8, 8], &[7]]);
        let bad_at = 2 * frame_len(1) as u64;
        let mut replayed = 0;
        let scan = replay_log(&log, |_: Seven, _| {
            replayed += 1;
            Ok(())
        });
        assert_eq!(replayed, 2);
        assert_eq!(scan.records, 2);
        assert_eq!(scan.valid_len, bad_at);
        assert_eq!(scan.bad_record.map(|(at, _)| at), Some(bad_at));
        // The frames themselves go on to the end.
        assert_eq!(scan.stop, StopReason::End);
    }

    #[test]
    fn a_bad_record_ends_the_valid_prefix_wherever_the_chunks_are_cut() {
        let log = log_of(&[&[7], &[7], &[7], &[8], &[7]]);
        let bad_at = 3 * frame_len(1) as u64;
        for chunk_bytes in 1..=log.len() {
            // As a reader does: each chunk is what was left over plus the next bytes read.
            let mut stream = LogStream::new();
            let mut read_to = 0;
            while !stream.is_done() {
                let from = usize::try_from(stream.decoded_to()).unwrap();
                read_to = (read_to + chunk_bytes).min(log.len());
                stream.feed(&log[from..read_to], read_to == log.len(), |_: Seven, _| {
                    Ok(())
                });
            }
            let scan = stream.finish(AfterPrefix::TornTail);
            assert_eq!(scan.valid_len, bad_at, "chunks of {chunk_bytes} bytes");
            assert_eq!(scan.records, 3, "chunks of {chunk_bytes} bytes");
            assert_eq!(scan.bad_record.map(|(at, _)| at), Some(bad_at));
        }
    }
}
