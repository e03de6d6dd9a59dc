//! Recovery as a fold: the log's frames are decoded into a role's records, and each is
//! handed to the role's own replay step. Any role with a log drives it the same way.

use std::fmt;

use crate::log::{after_prefix, decode_frames, AfterPrefix, StopReason};

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
    mut step: impl FnMut(R, u64) -> Result<(), String>,
) -> LogScan<R::Error> {
    let decoded = decode_frames(log);
    let mut scan = LogScan {
        records: 0,
        valid_len: decoded.valid_len,
        stop: decoded.stop,
        after: after_prefix(log, decoded.valid_len),
        bad_record: None,
        anomalies: Vec::new(),
    };
    for frame in &decoded.frames {
        let record = match R::decode(frame.payload) {
            Ok(record) => record,
            Err(err) => {
                scan.bad_record = Some((frame.offset, err));
                scan.valid_len = frame.offset;
                break;
            }
        };
        scan.records += 1;
        if let Err(anomaly) = step(record, frame.payload_offset) {
            scan.anomalies
                .push(format!("at offset {}: {anomaly}", frame.offset));
        }
    }
    scan
}
