//! Values made to look like log frames.
//!
//! Every role stores keys and values in its log as they are, and recovery, looking for
//! frames after a bad one, tries every offset: a value can hold what reads as a whole
//! frame. Frames this version writes carry a mark no UTF-8 text holds, but frames of the
//! earlier, unstamped format do not, and a value can hold one. The workloads write some
//! values that do, so that every role's recovery meets them in the torn stretches the
//! simulated machine crashes leave, where a lookalike must not be taken for a frame
//! written after damage.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Whether this write holds a lookalike, in a world where one in `one_in` does. Draws
/// from `rng` only in such a world, so that the others run as they did without any.
pub fn chosen(rng: &mut ChaCha8Rng, one_in: Option<u32>) -> bool {
    one_in.is_some_and(|one_in| rng.random_ratio(1, one_in))
}

/// Padding before the lookalike, so that it lies pages past its record's header at the
/// simulated disk's smaller page sizes, where a crash can lose the header and keep it.
/// Short enough that eventual mode's set values, which gather every element written,
/// stay far below the limits.
const PADDING_BYTES: usize = 160;

/// Tries at a checksum whose bytes are all text: each succeeds about once in sixteen.
const MAX_ATTEMPTS: u32 = 10_000;

/// Text without a space that starts with `tag` and holds, after some padding, a whole
/// frame of the earlier format (`[len][crc][payload]`, its checksum right).
pub fn lookalike_text(tag: &str) -> String {
    for attempt in 0..MAX_ATTEMPTS {
        let payload = format!("{tag}.frame{attempt}");
        let Ok(len) = u32::try_from(payload.len()) else {
            break;
        };
        let len_word = len.to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len_word), payload.as_bytes());
        let header: Vec<u8> = len_word.into_iter().chain(crc.to_le_bytes()).collect();
        // ASCII, and no space: an eventual-mode value is a set of words.
        if header.iter().all(|&b| b.is_ascii() && b != b' ') {
            let mut text = format!("{tag}{}", "x".repeat(PADDING_BYTES));
            text.extend(header.into_iter().map(char::from));
            text.push_str(&payload);
            return text;
        }
    }
    panic!("no frame lookalike for {tag:?} in {MAX_ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookalike_decodes_as_a_frame_of_the_earlier_format() {
        let text = lookalike_text("c1w7");
        assert!(!text.contains(' '));
        assert!(text.starts_with("c1w7x"));
        let bytes = &text.as_bytes()["c1w7".len() + PADDING_BYTES..];
        let decoded = ringkv_core::log::decode_frames(bytes);
        assert_eq!(decoded.frames.len(), 1, "{decoded:?}");
        let frame = decoded.frames[0];
        assert_eq!(frame.durable_end, None);
        assert!(!frame.marked);
        assert!(frame.payload.starts_with(b"c1w7.frame"));
        assert_eq!(decoded.valid_len, bytes.len() as u64);
    }
}
