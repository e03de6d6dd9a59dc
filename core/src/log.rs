//! Record framing for every role's write-ahead log.
//!
//! The log is a byte string of frames appended one after another:
//! `[len | STAMPED: u32 LE][crc: u32 LE][durable_end: u64 LE][payload: len bytes]`, where
//! `crc` is CRC-32C over the length word, then the stamp, then the payload. Covering the
//! length means a corrupt length is caught instead of sending the decoder off into the
//! middle of a later record.
//!
//! The stamp, `durable_end`, is where the log was known durable when the frame was
//! written. The shells write logs into space allocated ahead (an fdatasync that need not
//! grow the file costs about a third less), and there a crash can leave any subset of
//! the pages of the writes not yet synced, with zeros where a page did not arrive: holes
//! followed by valid frames. The stamp tells that apart from damage to synced bytes: a
//! valid frame stamped at or before a bad one was written while the bad one's bytes were
//! not yet durable, so both lie in the torn stretch; a frame stamped past it was written
//! after it was durable, so the bad bytes are corruption. Frames of a file installed
//! whole carry [`STAMP_INSTALLED`], and logs of earlier versions hold frames with an
//! eight-byte header and no stamp; both count as written after every byte before them.
//!
//! The stamp's top byte is `0xFF` ([`STAMP_MARK`]), a byte UTF-8 never holds. Looking for
//! frames after a bad one means trying every offset, and a key or value is stored in the
//! log as it is, so a value can hold what looks like a whole frame. Without the mark, a
//! value crafted that way, in a record whose first page a crash lost, read as a frame
//! written after the damage, and recovery refused to start. No frame with the mark lies
//! inside a key or value; frames of earlier versions, which lack it, only count where an
//! earlier version wrote the end of the valid prefix ([`PrefixEnd`]).
//!
//! A crash can leave a torn stretch at the end, and a disk can corrupt anything, so
//! decoding never fails: it returns the longest valid prefix and says where and why it
//! stopped, and recovery truncates the log there.

/// Bytes before each payload: the length, the checksum and the stamp.
pub const FRAME_HEADER_BYTES: usize = 16;

/// Bytes before each payload in a frame without a stamp, as logs of earlier versions
/// hold them; such frames are still read.
pub const LEGACY_FRAME_HEADER_BYTES: usize = 8;

/// The bit of the length word that marks a stamped frame.
const STAMPED: u32 = 1 << 31;

/// The stamp of a frame that was never part of a torn write: one of a file written
/// whole and synced before it was installed, or one not yet stamped by its shell. No
/// damage before such a frame can be a torn tail.
pub const STAMP_INSTALLED: u64 = u64::MAX;

/// The bits set in the stamp of every frame this version writes: its top byte, `0xFF`,
/// which no UTF-8 text holds, so no frame with it can lie inside a stored key or value.
/// A durable end stays far below it (2^56 bytes).
pub const STAMP_MARK: u64 = 0xFF << 56;

/// The longest payload a frame may carry. Far above any record the server writes, so a
/// larger length can only be corruption, and decoding stops rather than trusting it.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The checksum stored in a stamped frame's header.
fn frame_crc(len_word: [u8; 4], stamp: [u8; 8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_word), &stamp);
    crc32c::crc32c_append(crc, payload)
}

/// The checksum stored in a frame without a stamp.
fn legacy_frame_crc(len_word: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_word), payload)
}

/// Appends one frame holding `payload` to `out`, so the caller can batch several records
/// into one write. Its stamp is [`STAMP_INSTALLED`] until [`stamp_frames`] sets it.
///
/// Panics if the payload exceeds [`MAX_PAYLOAD_BYTES`]: the decoder would reject such a
/// frame as corruption, so writing it would silently lose the record and all after it.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= MAX_PAYLOAD_BYTES,
        "log payload of {} bytes exceeds MAX_PAYLOAD_BYTES",
        payload.len()
    );
    // Lossless: MAX_PAYLOAD_BYTES fits in a u32 below the flag bit.
    let len_word = (payload.len() as u32 | STAMPED).to_le_bytes();
    let stamp = STAMP_INSTALLED.to_le_bytes();
    out.reserve(frame_len(payload.len()));
    out.extend_from_slice(&len_word);
    out.extend_from_slice(&frame_crc(len_word, stamp, payload).to_le_bytes());
    out.extend_from_slice(&stamp);
    out.extend_from_slice(payload);
}

/// Sets the stamp of every frame in `frames` (whole frames as [`encode_frame`] writes
/// them) to `durable_end`, where the log is known durable as they are written. A shell
/// calls it on each write it makes into space allocated ahead; a stamp must never be
/// past what is durable, or a crash's torn stretch would read as corruption.
pub fn stamp_frames(frames: &mut [u8], durable_end: u64) {
    assert!(
        durable_end & STAMP_MARK == 0,
        "a durable end of {durable_end} bytes reaches the stamp's mark"
    );
    let stamp = (durable_end | STAMP_MARK).to_le_bytes();
    let mut rest = frames;
    while !rest.is_empty() {
        let (header, after) = rest
            .split_first_chunk_mut::<FRAME_HEADER_BYTES>()
            .expect("stamping a torn frame");
        let len_word = [header[0], header[1], header[2], header[3]];
        let word = u32::from_le_bytes(len_word);
        assert!(word & STAMPED != 0, "stamping a frame without a stamp");
        let len = (word & !STAMPED) as usize;
        assert!(len <= after.len(), "stamping a torn frame");
        let (payload, next) = after.split_at_mut(len);
        header[4..8].copy_from_slice(&frame_crc(len_word, stamp, payload).to_le_bytes());
        header[8..].copy_from_slice(&stamp);
        rest = next;
    }
}

/// The bytes a frame with a payload of `payload_len` bytes occupies, for preallocation and
/// offset arithmetic. Saturates rather than overflowing, since no such frame can exist.
pub fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_BYTES.saturating_add(payload_len)
}

/// Why decoding stopped, so recovery can tell a clean end and a crash-torn tail (expected)
/// from corruption (worth reporting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The bytes ended exactly after a whole frame, or were empty.
    End,
    /// A header of zeros: space allocated ahead and not written, or a hole a crash left
    /// in a torn stretch ([`after_prefix`] tells which).
    Zeros,
    /// Fewer bytes than a header were left.
    TornHeader,
    /// The length asks for more payload bytes than remain.
    TornPayload,
    /// The stored checksum does not match the length and payload.
    BadChecksum,
    /// The length exceeds [`MAX_PAYLOAD_BYTES`].
    OversizedLength,
}

/// One decoded frame, borrowing its payload from the log so replay does not copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Where the frame (its header) starts in the log, in bytes.
    pub offset: u64,
    /// Where the payload starts in the log, in bytes.
    pub payload_offset: u64,
    /// Where the log was durable when the frame was written; `None` for a frame of an
    /// earlier version's log, which has no stamp.
    pub durable_end: Option<u64>,
    /// Whether the stamp carries [`STAMP_MARK`], as every frame this version writes
    /// does; frames of earlier versions lack it.
    pub marked: bool,
    /// The record itself.
    pub payload: &'a [u8],
}

/// The result of decoding a log: the valid prefix of frames, and where and why it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedLog<'a> {
    /// The frames of the valid prefix, in log order.
    pub frames: Vec<Frame<'a>>,
    /// Bytes up to the end of the last good frame: where recovery truncates the log and
    /// appending resumes.
    pub valid_len: u64,
    /// Why decoding stopped at `valid_len`.
    pub stop: StopReason,
}

/// A frame's parts as its header gives them, its checksum not yet checked.
struct RawFrame<'a> {
    len_word: [u8; 4],
    stored_crc: u32,
    stamp: Option<[u8; 8]>,
    payload: &'a [u8],
    header_bytes: usize,
}

impl RawFrame<'_> {
    /// Whether the checksum matches: the frame is as it was written.
    fn is_intact(&self) -> bool {
        let crc = match self.stamp {
            Some(stamp) => frame_crc(self.len_word, stamp, self.payload),
            None => legacy_frame_crc(self.len_word, self.payload),
        };
        crc == self.stored_crc
    }

    /// The stamp without its mark; [`STAMP_INSTALLED`] stays as it is.
    fn durable_end(&self) -> Option<u64> {
        let stamp = u64::from_le_bytes(self.stamp?);
        Some(match stamp {
            STAMP_INSTALLED => STAMP_INSTALLED,
            _ if self.is_marked() => stamp & !STAMP_MARK,
            _ => stamp,
        })
    }

    /// Whether the frame carries [`STAMP_MARK`]: one this version wrote, which no stored
    /// key or value can hold.
    fn is_marked(&self) -> bool {
        self.stamp
            .is_some_and(|stamp| u64::from_le_bytes(stamp) & STAMP_MARK == STAMP_MARK)
    }

    fn total_bytes(&self) -> usize {
        self.header_bytes + self.payload.len()
    }
}

/// The frame the header at the start of `bytes` describes, or why there is none. Never
/// panics, whatever the input.
fn parse_frame(bytes: &[u8]) -> Result<RawFrame<'_>, StopReason> {
    let Some((header, after)) = bytes.split_first_chunk::<LEGACY_FRAME_HEADER_BYTES>() else {
        return Err(StopReason::TornHeader);
    };
    if *header == [0; LEGACY_FRAME_HEADER_BYTES] {
        return Err(StopReason::Zeros);
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    let len_word = [l0, l1, l2, l3];
    let word = u32::from_le_bytes(len_word);
    let (stamp, after) = if word & STAMPED == 0 {
        (None, after)
    } else {
        let Some((stamp, after)) = after.split_first_chunk::<8>() else {
            return Err(StopReason::TornHeader);
        };
        (Some(*stamp), after)
    };
    let payload_len = match usize::try_from(word & !STAMPED) {
        Ok(len) if len <= MAX_PAYLOAD_BYTES => len,
        _ => return Err(StopReason::OversizedLength),
    };
    let Some(payload) = after.get(..payload_len) else {
        return Err(StopReason::TornPayload);
    };
    Ok(RawFrame {
        len_word,
        stored_crc: u32::from_le_bytes([c0, c1, c2, c3]),
        stamp,
        payload,
        header_bytes: bytes.len() - after.len(),
    })
}

/// Decodes frames from the start of `bytes` until the end or the first bad frame. Never
/// panics, whatever the input.
pub fn decode_frames(bytes: &[u8]) -> DecodedLog<'_> {
    let mut frames = Vec::new();
    let mut offset_bytes = 0usize;
    let stop = loop {
        let Some(rest) = bytes.get(offset_bytes..).filter(|rest| !rest.is_empty()) else {
            break StopReason::End;
        };
        let raw = match parse_frame(rest) {
            Ok(raw) if raw.is_intact() => raw,
            Ok(_) => break StopReason::BadChecksum,
            Err(stop) => break stop,
        };
        // usize -> u64 is lossless on every supported target.
        frames.push(Frame {
            offset: offset_bytes as u64,
            payload_offset: (offset_bytes + raw.header_bytes) as u64,
            durable_end: raw.durable_end(),
            marked: raw.is_marked(),
            payload: raw.payload,
        });
        offset_bytes += raw.total_bytes();
    };
    debug_assert!(offset_bytes <= bytes.len());
    DecodedLog {
        frames,
        valid_len: offset_bytes as u64,
        stop,
    }
}

/// The most payload bytes [`after_prefix`] checksums before it gives up: a torn tail is
/// at most what one group commit wrote, far less than this.
pub const MAX_SCAN_BYTES: usize = 256 * 1024 * 1024;

/// What lies after the valid prefix of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterPrefix {
    /// Nothing but zeros, or nothing at all: space allocated ahead and never written.
    /// A clean end.
    Zeros,
    /// Bytes in which no frame written after the bad one was durable starts: a torn
    /// stretch, which a crash of unsynced writes can leave and recovery cuts.
    TornTail,
    /// A valid frame starts at this offset (of the bytes given) that was written after
    /// the bad bytes before it were durable: corruption, which no crash can cause.
    ValidFrameAt(u64),
    /// The scan gave up after [`MAX_SCAN_BYTES`]: treat as corruption, never cut.
    Unknown,
}

impl AfterPrefix {
    /// Whether the bytes after the valid prefix are more than a torn tail: recovery must
    /// not cut them without an operator's word.
    pub fn is_corruption(self) -> bool {
        !matches!(self, AfterPrefix::TornTail | AfterPrefix::Zeros)
    }
}

/// Which version wrote the last frame of a log's valid prefix. It says which frames found
/// after the prefix can be real ones rather than bytes inside a record's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixEnd {
    /// A frame with [`STAMP_MARK`]: what follows was written by this version, every
    /// frame of it with the mark, so a frame without it found there lies inside a
    /// payload.
    Marked,
    /// A frame of an earlier version, without the mark, or no frame at all (the file's
    /// first bytes may be an earlier version's). Unless the bad bytes right after it
    /// show this version wrote them ([`after_prefix_from`]), every valid frame found
    /// after it counts, so an earlier version's damaged frame is never cut as torn.
    Unmarked,
}

impl PrefixEnd {
    /// The prefix end that `last`, the prefix's last frame, makes.
    pub fn after(last: Option<&Frame<'_>>) -> Self {
        match last {
            Some(frame) if frame.marked => PrefixEnd::Marked,
            _ => PrefixEnd::Unmarked,
        }
    }

    /// The prefix end of `prefix`, whole frames already found valid: the headers are
    /// walked, not checked again. Bytes that are no run of whole frames give
    /// [`PrefixEnd::Unmarked`], under which every valid frame found later counts.
    fn of(prefix: &[u8]) -> Self {
        let mut last = PrefixEnd::Unmarked;
        let mut rest = prefix;
        while !rest.is_empty() {
            let Ok(raw) = parse_frame(rest) else {
                return PrefixEnd::Unmarked;
            };
            last = if raw.is_marked() {
                PrefixEnd::Marked
            } else {
                PrefixEnd::Unmarked
            };
            rest = rest.get(raw.total_bytes()..).unwrap_or_default();
        }
        last
    }
}

impl DecodedLog<'_> {
    /// Which version wrote the last frame of the valid prefix.
    pub fn prefix_end(&self) -> PrefixEnd {
        PrefixEnd::after(self.frames.last())
    }
}

/// Judges what follows `valid_len`, the end of the valid prefix of `log` (the whole log,
/// from its first byte), so that recovery tells a clean end or a torn tail (cut it) from
/// corruption (refuse). Offsets in the answer are the log's.
pub fn after_prefix(log: &[u8], valid_len: u64) -> AfterPrefix {
    let Some((prefix, rest)) = usize::try_from(valid_len)
        .ok()
        .and_then(|at| log.split_at_checked(at))
    else {
        return AfterPrefix::Unknown;
    };
    if rest.iter().all(|&b| b == 0) {
        return AfterPrefix::Zeros;
    }
    match after_prefix_from(rest, valid_len, PrefixEnd::of(prefix)) {
        AfterPrefix::ValidFrameAt(at) => AfterPrefix::ValidFrameAt(valid_len + at),
        other => other,
    }
}

/// [`after_prefix`] for `rest`, the bytes of a log from `at` on, where its valid prefix
/// ends; `prefix_end` says who wrote the prefix's last frame. Offsets in the answer are
/// of `rest`, so stamps compare with `at`.
///
/// Frames without the mark count only where an earlier version may have written the
/// bytes after the prefix: after an unmarked frame (or none), and only if the bad bytes
/// do not show otherwise. A header of zeros there is a hole in space allocated ahead,
/// which only this version writes into (an earlier version appended, and a crash of an
/// append leaves zeros only in its torn tail); a header with the mark is this version's.
pub fn after_prefix_from(rest: &[u8], at: u64, prefix_end: PrefixEnd) -> AfterPrefix {
    if rest.iter().all(|&b| b == 0) {
        return AfterPrefix::Zeros;
    }
    let only_marked = prefix_end == PrefixEnd::Marked || written_by_this_version(rest);
    let mut budget = MAX_SCAN_BYTES;
    let mut offset = 1usize;
    while let Some(candidate) = rest
        .get(offset..)
        .filter(|c| c.len() >= LEGACY_FRAME_HEADER_BYTES)
    {
        let raw = match parse_frame(candidate) {
            Ok(raw) => raw,
            Err(StopReason::Zeros) => {
                // No frame starts in a run of zeros: skip to the header that could end it.
                let Some(nonzero) = candidate.iter().position(|&b| b != 0) else {
                    break;
                };
                offset += nonzero.saturating_sub(LEGACY_FRAME_HEADER_BYTES - 1).max(1);
                continue;
            }
            Err(_) => {
                offset += 1;
                continue;
            }
        };
        if only_marked && !raw.is_marked() {
            // Written by no one: this version marks every frame, so these bytes lie
            // inside a payload, perhaps a value made to look like a frame.
            offset += 1;
            continue;
        }
        let Some(left) = budget.checked_sub(raw.payload.len()) else {
            return AfterPrefix::Unknown;
        };
        budget = left;
        if !raw.is_intact() {
            offset += 1;
            continue;
        }
        match raw.durable_end() {
            // Written while the bad bytes were not yet durable: the same torn stretch,
            // and what it covers cannot be judged apart from it.
            Some(stamp) if stamp <= at => offset += raw.total_bytes(),
            _ => return AfterPrefix::ValidFrameAt(offset as u64),
        }
    }
    AfterPrefix::TornTail
}

/// Whether the bad frame at the start of `bad` shows it was written by this version: a
/// header of zeros (a hole in space allocated ahead) or one with [`STAMP_MARK`]. Its
/// checksum is not asked: the frame is known bad.
fn written_by_this_version(bad: &[u8]) -> bool {
    let header = bad.get(..LEGACY_FRAME_HEADER_BYTES).unwrap_or(bad);
    if header.iter().all(|&b| b == 0) {
        return true;
    }
    let stamped = bad
        .first_chunk::<4>()
        .is_some_and(|word| u32::from_le_bytes(*word) & STAMPED != 0);
    // The stamp's top byte, the last of the header.
    let marked = bad.get(FRAME_HEADER_BYTES - 1) == Some(&0xFF);
    stamped && marked
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_bad_frame_followed_by_valid_ones_is_told_from_a_torn_tail() {
        let payloads = vec![b"first".to_vec(), b"second".to_vec(), b"third".to_vec()];
        let log = encode_all(&payloads);
        let ends = frame_ends(&payloads);
        // A flipped byte in the middle frame: the third frame still stands after it.
        let mut middle = log.clone();
        middle[ends[0] + FRAME_HEADER_BYTES] ^= 1;
        let decoded = decode_frames(&middle);
        assert_eq!(decoded.valid_len, ends[0] as u64);
        assert_eq!(
            after_prefix(&middle, decoded.valid_len),
            AfterPrefix::ValidFrameAt(ends[1] as u64)
        );
        // A flip in the last frame, or a cut anywhere, leaves only a torn tail.
        let mut last = log.clone();
        last[ends[1] + FRAME_HEADER_BYTES] ^= 1;
        assert_eq!(
            after_prefix(&last, decode_frames(&last).valid_len),
            AfterPrefix::TornTail
        );
        for cut in 0..log.len() {
            let torn = &log[..cut];
            let expected = if cut == 0 || ends.contains(&cut) {
                AfterPrefix::Zeros
            } else {
                AfterPrefix::TornTail
            };
            assert_eq!(
                after_prefix(torn, decode_frames(torn).valid_len),
                expected,
                "cut at {cut}"
            );
        }
        assert_eq!(after_prefix(&[0; 100], 0), AfterPrefix::Zeros);
    }

    #[test]
    fn frames_of_a_torn_stretch_after_a_hole_are_told_by_their_stamps() {
        // Synced: one frame. Then two frames written while only the first was durable.
        let mut log = encode_all(&[b"synced".to_vec()]);
        let synced = log.len() as u64;
        let mut unsynced = encode_all(&[b"lost".to_vec(), b"arrived".to_vec()]);
        stamp_frames(&mut unsynced, synced);
        log.extend_from_slice(&unsynced);
        log.resize(log.len() + 100, 0);
        let hole = log.len() - 100 - unsynced.len();
        let mut torn = log.clone();
        torn[hole..hole + frame_len(4)].fill(0);
        let decoded = decode_frames(&torn);
        assert_eq!(decoded.valid_len, synced);
        assert_eq!(decoded.stop, StopReason::Zeros);
        assert_eq!(after_prefix(&torn, synced), AfterPrefix::TornTail);
        // The same hole, but the frame after it was written once the lost one was
        // durable: corruption.
        let mut corrupt = log.clone();
        let second = hole + frame_len(4);
        stamp_frames(&mut corrupt[second..second + frame_len(7)], second as u64);
        corrupt[hole..second].fill(0);
        assert_eq!(
            after_prefix(&corrupt, synced),
            AfterPrefix::ValidFrameAt(second as u64)
        );
        // Stamps compare in the log's offsets, whatever part of it the bytes hold.
        let from = synced as usize;
        assert_eq!(
            after_prefix_from(&torn[from..], synced, PrefixEnd::Marked),
            AfterPrefix::TornTail
        );
        assert_eq!(
            after_prefix_from(&corrupt[from..], synced, PrefixEnd::Marked),
            AfterPrefix::ValidFrameAt((second - from) as u64)
        );
    }

    #[test]
    fn frames_of_earlier_versions_without_a_stamp_are_read() {
        let mut log = Vec::new();
        for payload in [&b"old"[..], b"er"] {
            let len_word = (payload.len() as u32).to_le_bytes();
            log.extend_from_slice(&len_word);
            log.extend_from_slice(&legacy_frame_crc(len_word, payload).to_le_bytes());
            log.extend_from_slice(payload);
        }
        let legacy_len = log.len();
        encode_frame(b"new", &mut log);
        let decoded = decode_frames(&log);
        assert_eq!(decoded.stop, StopReason::End);
        assert_eq!(payloads_of(&decoded), vec![&b"old"[..], b"er", b"new"]);
        let stamps: Vec<_> = decoded.frames.iter().map(|f| f.durable_end).collect();
        assert_eq!(stamps, vec![None, None, Some(STAMP_INSTALLED)]);
        assert_eq!(decoded.frames[1].payload_offset, 11 + 8);
        // A legacy frame after a bad one is corruption, as it always was.
        let mut bad = log.clone();
        bad[LEGACY_FRAME_HEADER_BYTES] ^= 1;
        assert_eq!(after_prefix(&bad, 0), AfterPrefix::ValidFrameAt(11));
        assert_eq!(legacy_len, 21);
    }

    #[test]
    fn stamping_keeps_every_frame_valid_and_sets_its_stamp() {
        let payloads = vec![b"".to_vec(), b"alpha".to_vec(), vec![7; 300]];
        let mut log = encode_all(&payloads);
        stamp_frames(&mut log, 12345);
        let decoded = decode_frames(&log);
        assert_prefix(&decoded, &payloads, 3);
        assert!(decoded.frames.iter().all(|f| f.durable_end == Some(12345)));
        assert!(decoded.frames.iter().all(|f| f.marked));
        // The mark is a byte no UTF-8 text holds, so no stored key or value holds it.
        for frame in &decoded.frames {
            let header = &log[frame.offset as usize..frame.payload_offset as usize];
            assert!(std::str::from_utf8(header).is_err());
        }
        assert_eq!(decoded.prefix_end(), PrefixEnd::Marked);
    }

    #[test]
    #[should_panic(expected = "reaches the stamp's mark")]
    fn stamping_a_durable_end_that_reaches_the_mark_panics() {
        let mut log = encode_all(&[b"abc".to_vec()]);
        stamp_frames(&mut log, STAMP_MARK);
    }

    /// Bytes that look like a whole frame without the mark, as an earlier version wrote
    /// them, stamped (if at all) past any durable end: what a crafted value can hold.
    fn lookalike(payload: &[u8], stamped: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let len = payload.len() as u32;
        if stamped {
            let len_word = (len | STAMPED).to_le_bytes();
            let stamp = (1u64 << 40).to_le_bytes();
            out.extend_from_slice(&len_word);
            out.extend_from_slice(&frame_crc(len_word, stamp, payload).to_le_bytes());
            out.extend_from_slice(&stamp);
        } else {
            let len_word = len.to_le_bytes();
            out.extend_from_slice(&len_word);
            out.extend_from_slice(&legacy_frame_crc(len_word, payload).to_le_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_value_made_to_look_like_a_frame_is_not_taken_for_one() {
        // Synced: one frame. Then one record whose value holds two lookalike frames,
        // written while only the first was durable; a crash lost its first bytes.
        let mut log = encode_all(&[b"synced".to_vec()]);
        stamp_frames(&mut log, 0);
        let synced = log.len();
        let mut value = vec![b'v'; 40];
        value.extend(lookalike(b"legacy lookalike", false));
        value.extend(lookalike(b"stamped lookalike", true));
        let mut unsynced = encode_all(&[value]);
        stamp_frames(&mut unsynced, synced as u64);
        log.extend_from_slice(&unsynced);
        log[synced..synced + 32].fill(0);
        let decoded = decode_frames(&log);
        assert_eq!(decoded.valid_len, synced as u64);
        assert_eq!(decoded.prefix_end(), PrefixEnd::Marked);
        assert_eq!(after_prefix(&log, synced as u64), AfterPrefix::TornTail);
        // The same in a log's first batch: the hole at its start is this version's.
        let first_batch = &log[synced..];
        assert_eq!(decode_frames(first_batch).valid_len, 0);
        assert_eq!(after_prefix(first_batch, 0), AfterPrefix::TornTail);
        // After an earlier version's frame, with bad bytes that could be its own,
        // lookalikes count, as that version's frames do: the first is found.
        let mut rest = log[synced..].to_vec();
        rest[..32].fill(0xab);
        assert_eq!(
            after_prefix_from(&rest, synced as u64, PrefixEnd::Unmarked),
            AfterPrefix::ValidFrameAt(16 + 40)
        );
        // Bad bytes of this version's (a header with the mark) say what follows is too.
        rest[..FRAME_HEADER_BYTES].copy_from_slice(&unsynced[..FRAME_HEADER_BYTES]);
        assert_eq!(
            after_prefix_from(&rest, synced as u64, PrefixEnd::Unmarked),
            AfterPrefix::TornTail
        );
    }

    #[test]
    fn an_earlier_versions_frame_after_damage_counts_only_after_its_own_prefix() {
        let legacy: Vec<u8> = [&b"old"[..], b"er", b"est"]
            .iter()
            .flat_map(|p| lookalike(p, false))
            .collect();
        // Damage to the second of three frames of an earlier version: the third counts.
        let mut damaged = legacy.clone();
        damaged[11 + 8] ^= 1;
        let decoded = decode_frames(&damaged);
        assert_eq!(decoded.valid_len, 11);
        assert_eq!(decoded.prefix_end(), PrefixEnd::Unmarked);
        assert_eq!(after_prefix(&damaged, 11), AfterPrefix::ValidFrameAt(21));
        // The same frames after a frame this version wrote lie inside a payload.
        let mut log = encode_all(&[b"new".to_vec()]);
        let new_len = log.len();
        log.extend_from_slice(&[0xab; 8]);
        log.extend_from_slice(&legacy);
        assert_eq!(decode_frames(&log).valid_len, new_len as u64);
        assert_eq!(after_prefix(&log, new_len as u64), AfterPrefix::TornTail);
    }

    #[test]
    #[should_panic(expected = "stamping a torn frame")]
    fn stamping_a_torn_frame_panics() {
        let mut log = encode_all(&[b"abc".to_vec()]);
        log.pop();
        stamp_frames(&mut log, 0);
    }

    fn encode_all(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            encode_frame(payload, &mut out);
        }
        out
    }

    /// Where each frame ends, so tests can tell which frames a cut or flip spares.
    fn frame_ends(payloads: &[Vec<u8>]) -> Vec<usize> {
        payloads
            .iter()
            .scan(0, |end, p| {
                *end += frame_len(p.len());
                Some(*end)
            })
            .collect()
    }

    fn payloads_of<'a>(decoded: &DecodedLog<'a>) -> Vec<&'a [u8]> {
        decoded.frames.iter().map(|f| f.payload).collect()
    }

    fn assert_prefix(decoded: &DecodedLog<'_>, payloads: &[Vec<u8>], count: usize) {
        assert_eq!(decoded.frames.len(), count);
        let mut offset = 0u64;
        for (frame, payload) in decoded.frames.iter().zip(payloads) {
            assert_eq!(frame.payload, payload.as_slice());
            assert_eq!(frame.offset, offset);
            assert_eq!(frame.payload_offset, offset + FRAME_HEADER_BYTES as u64);
            offset += frame_len(payload.len()) as u64;
        }
        assert_eq!(decoded.valid_len, offset);
    }

    #[test]
    fn frame_layout_is_pinned() {
        let mut out = Vec::new();
        encode_frame(b"abc", &mut out);
        stamp_frames(&mut out, 0x0102);
        assert_eq!(out.len(), frame_len(3));
        assert_eq!(&out[..4], &[3, 0, 0, 0x80]);
        let stamp = [2, 1, 0, 0, 0, 0, 0, 0xff];
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[3, 0, 0, 0x80]), &stamp);
        let crc = crc32c::crc32c_append(crc, b"abc");
        assert_eq!(&out[4..8], &crc.to_le_bytes());
        assert_eq!(&out[8..16], &stamp);
        assert_eq!(&out[16..], b"abc");
    }

    #[test]
    fn empty_log_and_empty_payload() {
        let decoded = decode_frames(&[]);
        assert_eq!(decoded.frames, vec![]);
        assert_eq!(decoded.valid_len, 0);
        assert_eq!(decoded.stop, StopReason::End);

        let log = encode_all(&[vec![]]);
        let decoded = decode_frames(&log);
        assert_prefix(&decoded, &[vec![]], 1);
        assert_eq!(decoded.stop, StopReason::End);
    }

    #[test]
    fn zero_filled_region_is_space_not_yet_written() {
        // A preallocated or zeroed tail must not read as a stream of empty records.
        assert_ne!(crc32c::crc32c(&[0; 4]), 0);
        let decoded = decode_frames(&[0; 64]);
        assert_eq!(decoded.frames, vec![]);
        assert_eq!(decoded.valid_len, 0);
        assert_eq!(decoded.stop, StopReason::Zeros);

        let payloads = vec![b"one".to_vec(), b"two".to_vec()];
        let mut log = encode_all(&payloads);
        let written_len = log.len();
        log.resize(written_len + 4096, 0);
        let decoded = decode_frames(&log);
        assert_prefix(&decoded, &payloads, 2);
        assert_eq!(decoded.valid_len, written_len as u64);
        assert_eq!(decoded.stop, StopReason::Zeros);
        assert_eq!(after_prefix(&log, decoded.valid_len), AfterPrefix::Zeros);
    }

    #[test]
    fn oversized_length_is_rejected_before_reading_on() {
        let mut log = encode_all(&[b"ok".to_vec()]);
        let good_len = log.len();
        log.extend_from_slice(&u32::MAX.to_le_bytes());
        log.extend_from_slice(&[0; 100]);
        let decoded = decode_frames(&log);
        assert_eq!(decoded.frames.len(), 1);
        assert_eq!(decoded.valid_len, good_len as u64);
        assert_eq!(decoded.stop, StopReason::OversizedLength);

        let just_over = u32::try_from(MAX_PAYLOAD_BYTES + 1).unwrap();
        let header = just_over.to_le_bytes().repeat(2);
        let decoded = decode_frames(&header);
        assert_eq!(decoded.stop, StopReason::OversizedLength);
    }

    #[test]
    fn max_payload_round_trips() {
        let payload = vec![0xab; MAX_PAYLOAD_BYTES];
        let mut log = Vec::new();
        encode_frame(&payload, &mut log);
        let decoded = decode_frames(&log);
        assert_eq!(decoded.stop, StopReason::End);
        assert_eq!(payloads_of(&decoded), vec![payload.as_slice()]);
    }

    #[test]
    #[should_panic(expected = "exceeds MAX_PAYLOAD_BYTES")]
    fn encoding_an_oversized_payload_panics() {
        encode_frame(&vec![0; MAX_PAYLOAD_BYTES + 1], &mut Vec::new());
    }

    #[test]
    fn every_single_byte_flip_of_a_small_log_is_caught() {
        let payloads = vec![b"".to_vec(), b"alpha".to_vec(), b"beta gamma".to_vec()];
        let log = encode_all(&payloads);
        let ends = frame_ends(&payloads);
        for index in 0..log.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut corrupt = log.clone();
                corrupt[index] ^= mask;
                let decoded = decode_frames(&corrupt);
                let intact = ends.iter().filter(|&&end| end <= index).count();
                assert_prefix(&decoded, &payloads, intact);
                assert_ne!(decoded.stop, StopReason::End);
            }
        }
    }

    fn payloads_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)
    }

    /// Batches of payloads, each one group commit's write.
    fn batches_strategy() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
        proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..6),
            0..6,
        )
    }

    /// Batches whose payloads may hold lookalike frames, as crafted values can.
    fn batches_with_lookalikes_strategy() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
        let payload = (
            proptest::collection::vec(any::<u8>(), 0..100),
            proptest::option::of((proptest::collection::vec(any::<u8>(), 0..60), any::<bool>())),
            proptest::collection::vec(any::<u8>(), 0..100),
        )
            .prop_map(|(mut before, inner, after)| {
                if let Some((inner, stamped)) = inner {
                    before.extend(lookalike(&inner, stamped));
                }
                before.extend(after);
                before
            });
        proptest::collection::vec(proptest::collection::vec(payload, 1..6), 0..6)
    }

    /// The log the batches make when each is written after the one before it is
    /// durable: every frame stamped with its batch's start.
    fn written_log(batches: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut log = Vec::new();
        for batch in batches {
            let mut bytes = encode_all(batch);
            stamp_frames(&mut bytes, log.len() as u64);
            log.extend_from_slice(&bytes);
        }
        log
    }

    proptest! {
        #[test]
        fn round_trip(payloads in payloads_strategy()) {
            let log = encode_all(&payloads);
            let decoded = decode_frames(&log);
            prop_assert_eq!(decoded.stop, StopReason::End);
            prop_assert_eq!(decoded.valid_len, log.len() as u64);
            prop_assert_eq!(payloads_of(&decoded), payloads.iter().map(Vec::as_slice).collect::<Vec<_>>());
            assert_prefix(&decoded, &payloads, payloads.len());
        }

        #[test]
        fn every_truncation_decodes_to_the_whole_frames_before_the_cut(
            payloads in payloads_strategy(),
        ) {
            let log = encode_all(&payloads);
            let ends = frame_ends(&payloads);
            for cut in 0..=log.len() {
                let decoded = decode_frames(&log[..cut]);
                let whole = ends.iter().filter(|&&end| end <= cut).count();
                assert_prefix(&decoded, &payloads, whole);
                let valid_len = usize::try_from(decoded.valid_len).unwrap();
                prop_assert!(valid_len <= cut);
                let expected = match cut - valid_len {
                    0 => StopReason::End,
                    left if left < FRAME_HEADER_BYTES => StopReason::TornHeader,
                    _ => StopReason::TornPayload,
                };
                prop_assert_eq!(decoded.stop, expected);
            }
        }

        #[test]
        fn a_single_byte_flip_never_yields_an_unwritten_frame(
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..300), 1..20),
            at in any::<prop::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let mut log = encode_all(&payloads);
            let index = at.index(log.len());
            log[index] ^= mask;
            let decoded = decode_frames(&log);
            // The frames before the flipped one are untouched; the flipped one is
            // caught (by the CRC, or by its length no longer fitting).
            let intact = frame_ends(&payloads).iter().filter(|&&end| end <= index).count();
            assert_prefix(&decoded, &payloads, intact);
            prop_assert_ne!(decoded.stop, StopReason::End);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let decoded = decode_frames(&bytes);
            prop_assert!(decoded.valid_len <= bytes.len() as u64);
            let mut offset = 0u64;
            for frame in &decoded.frames {
                prop_assert_eq!(frame.offset, offset);
                offset = frame.payload_offset + frame.payload.len() as u64;
            }
            prop_assert_eq!(decoded.valid_len, offset);
            prop_assert_eq!(decoded.stop == StopReason::End, decoded.valid_len == bytes.len() as u64);
        }

        #[test]
        fn a_crash_that_keeps_any_pages_of_the_unsynced_writes_is_a_torn_tail(
            synced in batches_strategy(),
            unsynced in batches_with_lookalikes_strategy(),
            page_bytes in prop::sample::select(vec![16usize, 64, 512, 4096]),
            kept in proptest::collection::vec(any::<bool>(), 64),
            spare_bytes in 0usize..5000,
        ) {
            let mut log = written_log(&synced);
            let durable = log.len();
            // Written while no more than `durable` was synced (one job, or a lingering
            // one and the urgent one that joined it): all stamped with it.
            for batch in &unsynced {
                let mut bytes = encode_all(batch);
                stamp_frames(&mut bytes, durable as u64);
                log.extend_from_slice(&bytes);
            }
            log.resize(log.len() + spare_bytes, 0);
            // The pages a crash did not keep read as the zeros allocated ahead.
            for (page, start) in (durable..log.len()).step_by(page_bytes).enumerate() {
                if !kept.get(page % kept.len()).copied().unwrap_or(false) {
                    let end = (start + page_bytes).min(log.len());
                    log[start..end].fill(0);
                }
            }
            let decoded = decode_frames(&log);
            prop_assert!(decoded.valid_len >= durable as u64);
            let after = after_prefix(&log, decoded.valid_len);
            prop_assert!(!after.is_corruption(), "{after:?} at {}", decoded.valid_len);
        }

        #[test]
        fn damage_to_a_synced_write_with_a_later_write_after_it_is_corruption(
            batches in batches_strategy(),
            last in proptest::collection::vec(any::<u8>(), 0..50),
            at in any::<prop::sample::Index>(),
            zero_run in 0usize..600,
        ) {
            // Every batch synced before the next was written; the last has one frame,
            // stamped past all the others.
            let mut log = written_log(&batches);
            let synced = log.len();
            prop_assume!(synced > 0);
            let mut tail = Vec::new();
            encode_frame(&last, &mut tail);
            stamp_frames(&mut tail, synced as u64);
            log.extend_from_slice(&tail);
            let index = at.index(synced);
            let end = (index + zero_run.max(1)).min(synced);
            if zero_run == 0 {
                log[index] ^= 0x5a;
            } else {
                log[index..end].fill(0);
            }
            let decoded = decode_frames(&log);
            prop_assume!(decoded.valid_len < synced as u64);
            let after = after_prefix(&log, decoded.valid_len);
            prop_assert!(after.is_corruption(), "{after:?} at {}", decoded.valid_len);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_log_keep_the_valid_frames(
            payloads in payloads_strategy(),
            garbage in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let mut log = encode_all(&payloads);
            let written_len = log.len();
            log.extend_from_slice(&garbage);
            let decoded = decode_frames(&log);
            prop_assert!(decoded.frames.len() >= payloads.len());
            prop_assert!(decoded.valid_len >= written_len as u64);
            let decoded_prefix: Vec<&[u8]> = payloads_of(&decoded)[..payloads.len()].to_vec();
            prop_assert_eq!(decoded_prefix, payloads.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }
    }
}
