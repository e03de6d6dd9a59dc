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
        let stamp = durable_end.to_le_bytes();
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

    fn durable_end(&self) -> Option<u64> {
        self.stamp.map(u64::from_le_bytes)
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

/// Judges what follows `valid_len`, the end of a log's valid prefix, so that recovery
/// tells a clean end or a torn tail (cut it) from corruption (refuse). `bytes` hold the
/// log from offset `base` on, so stamps compare with `base + valid_len`.
pub fn after_prefix(bytes: &[u8], base: u64, valid_len: u64) -> AfterPrefix {
    let Some(rest) = usize::try_from(valid_len)
        .ok()
        .and_then(|at| bytes.get(at..))
    else {
        return AfterPrefix::Unknown;
    };
    if rest.iter().all(|&b| b == 0) {
        return AfterPrefix::Zeros;
    }
    let bad_at = base.saturating_add(valid_len);
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
            Some(stamp) if stamp <= bad_at => offset += raw.total_bytes(),
            _ => return AfterPrefix::ValidFrameAt(valid_len + offset as u64),
        }
    }
    AfterPrefix::TornTail
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
            after_prefix(&middle, 0, decoded.valid_len),
            AfterPrefix::ValidFrameAt(ends[1] as u64)
        );
        // A flip in the last frame, or a cut anywhere, leaves only a torn tail.
        let mut last = log.clone();
        last[ends[1] + FRAME_HEADER_BYTES] ^= 1;
        assert_eq!(
            after_prefix(&last, 0, decode_frames(&last).valid_len),
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
                after_prefix(torn, 0, decode_frames(torn).valid_len),
                expected,
                "cut at {cut}"
            );
        }
        assert_eq!(after_prefix(&[0; 100], 0, 0), AfterPrefix::Zeros);
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
        assert_eq!(after_prefix(&torn, 0, synced), AfterPrefix::TornTail);
        // The same hole, but the frame after it was written once the lost one was
        // durable: corruption.
        let mut corrupt = log.clone();
        let second = hole + frame_len(4);
        stamp_frames(&mut corrupt[second..second + frame_len(7)], second as u64);
        corrupt[hole..second].fill(0);
        assert_eq!(
            after_prefix(&corrupt, 0, synced),
            AfterPrefix::ValidFrameAt(second as u64)
        );
        // Stamps compare in the log's offsets, whatever part of it the bytes hold.
        let from = synced as usize;
        assert_eq!(
            after_prefix(&torn[from..], synced, 0),
            AfterPrefix::TornTail
        );
        assert_eq!(
            after_prefix(&corrupt[from..], synced, 0),
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
        assert_eq!(after_prefix(&bad, 0, 0), AfterPrefix::ValidFrameAt(11));
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
        let stamp = [2, 1, 0, 0, 0, 0, 0, 0];
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
        assert_eq!(after_prefix(&log, 0, decoded.valid_len), AfterPrefix::Zeros);
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
            unsynced in batches_strategy(),
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
            let after = after_prefix(&log, 0, decoded.valid_len);
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
            let after = after_prefix(&log, 0, decoded.valid_len);
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
