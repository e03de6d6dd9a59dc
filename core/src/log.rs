//! Record framing for a KV server's write-ahead log.
//!
//! The log is a byte string of frames appended one after another:
//! `[len: u32 LE][crc: u32 LE][payload: len bytes]`, where `crc` is CRC-32C over the four
//! length bytes followed by the payload. Covering the length means a corrupt length is
//! caught instead of sending the decoder off into the middle of a later record.
//!
//! A crash can leave a torn frame at the end, and a disk can corrupt anything, so
//! decoding never fails: it returns the longest valid prefix and says where and why it
//! stopped, and recovery truncates the log there.

/// Bytes before each payload: the length and the checksum.
pub const FRAME_HEADER_BYTES: usize = 8;

/// The longest payload a frame may carry. Far above any record the server writes, so a
/// larger length can only be corruption, and decoding stops rather than trusting it.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The checksum stored in a frame header, over the length bytes and then the payload.
fn frame_crc(len_le_bytes: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_le_bytes), payload)
}

/// Appends one frame holding `payload` to `out`, so the caller can batch several records
/// into one write.
///
/// Panics if the payload exceeds [`MAX_PAYLOAD_BYTES`]: the decoder would reject such a
/// frame as corruption, so writing it would silently lose the record and all after it.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= MAX_PAYLOAD_BYTES,
        "log payload of {} bytes exceeds MAX_PAYLOAD_BYTES",
        payload.len()
    );
    // Lossless: MAX_PAYLOAD_BYTES fits in a u32.
    let len_le_bytes = (payload.len() as u32).to_le_bytes();
    out.reserve(frame_len(payload.len()));
    out.extend_from_slice(&len_le_bytes);
    out.extend_from_slice(&frame_crc(len_le_bytes, payload).to_le_bytes());
    out.extend_from_slice(payload);
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
    /// Fewer than [`FRAME_HEADER_BYTES`] bytes were left.
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

/// Decodes frames from the start of `bytes` until the end or the first bad frame. Never
/// panics, whatever the input.
pub fn decode_frames(bytes: &[u8]) -> DecodedLog<'_> {
    let mut frames = Vec::new();
    let mut offset_bytes = 0usize;
    let mut rest = bytes;
    let stop = loop {
        if rest.is_empty() {
            break StopReason::End;
        }
        let Some((header, after_header)) = rest.split_first_chunk::<FRAME_HEADER_BYTES>() else {
            break StopReason::TornHeader;
        };
        let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
        let len_le_bytes = [l0, l1, l2, l3];
        let stored_crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let payload_len = match usize::try_from(u32::from_le_bytes(len_le_bytes)) {
            Ok(len) if len <= MAX_PAYLOAD_BYTES => len,
            _ => break StopReason::OversizedLength,
        };
        let Some((payload, after_payload)) = after_header.split_at_checked(payload_len) else {
            break StopReason::TornPayload;
        };
        if frame_crc(len_le_bytes, payload) != stored_crc {
            break StopReason::BadChecksum;
        }
        // usize -> u64 is lossless on every supported target.
        frames.push(Frame {
            offset: offset_bytes as u64,
            payload_offset: (offset_bytes + FRAME_HEADER_BYTES) as u64,
            payload,
        });
        offset_bytes += frame_len(payload_len);
        rest = after_payload;
    };
    debug_assert!(offset_bytes <= bytes.len());
    DecodedLog {
        frames,
        valid_len: offset_bytes as u64,
        stop,
    }
}

/// The most payload bytes [`first_valid_frame_from`] checksums before it gives up: a
/// torn tail is at most what one group commit wrote, far less than this.
pub const MAX_SCAN_BYTES: usize = 256 * 1024 * 1024;

/// What lies after the valid prefix of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterPrefix {
    /// Nothing, or bytes in which no whole valid frame starts: a torn tail, which a crash
    /// of unsynced writes can leave and recovery cuts.
    TornTail,
    /// A whole valid frame starts at this offset: the bad bytes before it are corruption
    /// in the middle of the log, which no crash can cause.
    ValidFrameAt(u64),
    /// The scan gave up after [`MAX_SCAN_BYTES`]: treat as corruption, never cut.
    Unknown,
}

impl AfterPrefix {
    /// Whether the bytes after the valid prefix are more than a torn tail: recovery must
    /// not cut them without an operator's word.
    pub fn is_corruption(self) -> bool {
        !matches!(self, AfterPrefix::TornTail)
    }
}

/// Looks for a whole, valid frame starting after `valid_len`, the end of a log's valid
/// prefix, so that recovery tells a torn tail (cut it) from corruption (refuse).
pub fn after_prefix(bytes: &[u8], valid_len: u64) -> AfterPrefix {
    let Ok(start) = usize::try_from(valid_len) else {
        return AfterPrefix::Unknown;
    };
    let mut budget = MAX_SCAN_BYTES;
    for offset in start.saturating_add(1)..bytes.len() {
        let Some(rest) = bytes.get(offset..) else {
            break;
        };
        let Some(([l0, l1, l2, l3, c0, c1, c2, c3], after)) = rest
            .split_first_chunk::<FRAME_HEADER_BYTES>()
            .map(|(h, a)| (*h, a))
        else {
            break;
        };
        let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let Some(payload) = after.get(..len).filter(|_| len <= MAX_PAYLOAD_BYTES) else {
            continue;
        };
        let Some(left) = budget.checked_sub(len) else {
            return AfterPrefix::Unknown;
        };
        budget = left;
        if frame_crc([l0, l1, l2, l3], payload) == u32::from_le_bytes([c0, c1, c2, c3]) {
            return AfterPrefix::ValidFrameAt(offset as u64);
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
            assert_eq!(
                after_prefix(torn, decode_frames(torn).valid_len),
                AfterPrefix::TornTail,
                "cut at {cut}"
            );
        }
        assert_eq!(after_prefix(&[0; 100], 0), AfterPrefix::TornTail);
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
        assert_eq!(out.len(), frame_len(3));
        assert_eq!(&out[..4], &[3, 0, 0, 0]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[3, 0, 0, 0]), b"abc");
        assert_eq!(&out[4..8], &crc.to_le_bytes());
        assert_eq!(&out[8..], b"abc");
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
    fn zero_filled_region_is_a_bad_checksum() {
        // A preallocated or zeroed tail must not read as a stream of empty records.
        assert_ne!(crc32c::crc32c(&[0; 4]), 0);
        let decoded = decode_frames(&[0; 64]);
        assert_eq!(decoded.frames, vec![]);
        assert_eq!(decoded.valid_len, 0);
        assert_eq!(decoded.stop, StopReason::BadChecksum);

        let payloads = vec![b"one".to_vec(), b"two".to_vec()];
        let mut log = encode_all(&payloads);
        let written_len = log.len();
        log.resize(written_len + 4096, 0);
        let decoded = decode_frames(&log);
        assert_prefix(&decoded, &payloads, 2);
        assert_eq!(decoded.valid_len, written_len as u64);
        assert_eq!(decoded.stop, StopReason::BadChecksum);
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
