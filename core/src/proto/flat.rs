//! A quick reader for the lines nearly every message is: one flat JSON object whose
//! values are strings (with one-letter escapes at most), integers, booleans or null.
//!
//! serde_json spends a few thousand instructions on such a line (a visitor call per
//! token, a UTF-8 check and an escape scan per string); a write crosses this code nine
//! times. This reader takes the common shape in one pass, string values with the
//! one-letter escapes (`\"`, `\\`, `\n`, ...) included, and gives up (`None`) on
//! anything else: `\u` escapes, escapes in field names, control characters, fractions,
//! exponents, integers out of range, `-0`, nested values or any syntax fault. The caller
//! then reads the line through serde_json, so every answer to an unusual or faulty line,
//! error text included, stays serde_json's; what this reader accepts it reads exactly as
//! serde_json would.

use std::borrow::Cow;

use super::json::{Field, Object, USUAL_FIELDS};

/// The line as an object, or `None` if it is not of the quick shape.
pub(crate) fn read(line: &[u8]) -> Option<Object<'_>> {
    let mut at = skip_space(line, 0);
    if line.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(line, at + 1);
    let mut fields: Vec<(Cow<'_, str>, Field<'_>)> = Vec::with_capacity(USUAL_FIELDS);
    let mut duplicate = None;
    if line.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            let (name, next) = field_name(line, at)?;
            at = skip_space(line, next);
            if line.get(at) != Some(&b':') {
                return None;
            }
            at = skip_space(line, at + 1);
            let (value, next) = value(line, at)?;
            if fields.iter().any(|(field, _)| *field == name) {
                duplicate.get_or_insert_with(|| name.to_owned());
            } else {
                fields.push((Cow::Borrowed(name), value));
            }
            at = skip_space(line, next);
            match line.get(at) {
                Some(b',') => at = skip_space(line, at + 1),
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_space(line, at) == line.len()).then(|| Object::from_parts(fields, duplicate))
}

/// The first position at or after `at` that is not JSON whitespace.
fn skip_space(line: &[u8], mut at: usize) -> usize {
    while matches!(line.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The field names of the messages on a write's path: a name among them needs no UTF-8
/// check, which cost more than the rest of reading it.
const KNOWN_NAMES: [&str; 8] = [
    "type", "id", "key", "value", "txid", "server", "error", "message",
];

/// A field name starting at `at` (its opening quote) and the position after it.
fn field_name(line: &[u8], at: usize) -> Option<(&str, usize)> {
    let rest = line.get(at + 1..)?;
    for name in KNOWN_NAMES {
        if rest.get(name.len()) == Some(&b'"') && rest.starts_with(name.as_bytes()) {
            return Some((name, at + 1 + name.len() + 1));
        }
    }
    match string(line, at)? {
        (Cow::Borrowed(name), next) => Some((name, next)),
        (Cow::Owned(_), _) => None,
    }
}

/// A string starting at `at` (its opening quote) and the position after its closing
/// quote: borrowed from the line if it has no escape. `None` if it has a control
/// character, a `\u` escape or an escape JSON does not have, or is not UTF-8.
fn string(line: &[u8], at: usize) -> Option<(Cow<'_, str>, usize)> {
    if line.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let end = plain_run(line, start);
    match line.get(end)? {
        b'"' => {
            let text = std::str::from_utf8(line.get(start..end)?).ok()?;
            Some((Cow::Borrowed(text), end + 1))
        }
        b'\\' => unescape(line, start, end),
        _ => None,
    }
}

/// The string from `start` whose first escape is at `first_escape`, unescaped, and the
/// position after its closing quote. An escape writes one ASCII byte, which cannot
/// complete or split a UTF-8 sequence: checking the whole result accepts exactly what
/// serde_json's check of the runs between escapes accepts.
///
/// The string's end and length are found first, so that the text is made at its size:
/// a key is kept in maps with the capacity it is made with, and a buffer sized from the
/// rest of the line would keep a large value's worth of memory with each such key.
fn unescape(line: &[u8], start: usize, first_escape: usize) -> Option<(Cow<'_, str>, usize)> {
    let mut len = first_escape - start;
    let mut at = first_escape;
    while line.get(at)? == &b'\\' {
        unescaped(*line.get(at + 1)?)?;
        let end = plain_run(line, at + 2);
        len += 1 + (end - (at + 2));
        at = end;
    }
    if line.get(at)? != &b'"' {
        return None;
    }
    let close = at;
    let mut text = Vec::with_capacity(len);
    text.extend_from_slice(line.get(start..first_escape)?);
    let mut at = first_escape;
    while at < close {
        text.push(unescaped(*line.get(at + 1)?)?);
        let end = plain_run(line, at + 2);
        text.extend_from_slice(line.get(at + 2..end)?);
        at = end;
    }
    assert_eq!(
        text.len(),
        len,
        "an unescaped string's length was misjudged"
    );
    let text = String::from_utf8(text).ok()?;
    Some((Cow::Owned(text), close + 1))
}

/// The byte a one-letter escape (a backslash and `letter`) stands for; `None` for a `\u`
/// escape (left to serde_json) or a letter JSON has no escape for.
fn unescaped(letter: u8) -> Option<u8> {
    Some(match letter {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return None,
    })
}

/// The end of the run of plain string bytes from `at`: the first quote, backslash or
/// control character, or the line's end. Eight bytes at a time: a key or a value is
/// read in a few dozen instructions.
pub(crate) fn plain_run(line: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = line.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        // The classic zero-byte and less-than tests: the lowest flagged byte is exactly
        // the first quote, backslash or control character (flags above it may be
        // false); bytes with their own high bit set are never flagged.
        let hits = ((quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGHS;
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&byte) = line.get(at) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        at += 1;
    }
    at
}

/// A value starting at `at` and the position after it. A value must be followed by
/// whitespace, `,` or `}`; the caller checks that, so `truex` or `1.5` fall through.
fn value(line: &[u8], at: usize) -> Option<(Field<'_>, usize)> {
    let rest = line.get(at..)?;
    match rest.first()? {
        b'"' => string(line, at).map(|(text, next)| (Field::Str(text), next)),
        b't' if rest.starts_with(b"true") => Some((Field::Bool(true), at + 4)),
        b'f' if rest.starts_with(b"false") => Some((Field::Bool(false), at + 5)),
        b'n' if rest.starts_with(b"null") => Some((Field::Null, at + 4)),
        b'-' => {
            let (magnitude, next) = digits(line, at + 1)?;
            // -0 is a float to serde_json; below -2^63 too.
            let negative = 0i64.checked_sub_unsigned(magnitude).filter(|n| *n < 0)?;
            Some((Field::I64(negative), next))
        }
        b'0'..=b'9' => digits(line, at).map(|(number, next)| (Field::U64(number), next)),
        _ => None,
    }
}

/// A run of decimal digits at `at` as a u64 without a leading zero (JSON forbids it),
/// and the position after it; `None` if there is none or it overflows.
fn digits(line: &[u8], start: usize) -> Option<(u64, usize)> {
    let rest = line.get(start..)?;
    let run = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let digits = rest.get(..run)?;
    if run == 0 || (run > 1 && digits.first() == Some(&b'0')) {
        return None;
    }
    // Below 20 digits a number is under 10^19 < 2^64: no overflow check per digit.
    let number = if run < 20 {
        digits
            .iter()
            .fold(0u64, |number, &digit| number * 10 + u64::from(digit - b'0'))
    } else {
        digits.iter().try_fold(0u64, |number, &digit| {
            number.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })?
    };
    Some((number, start + run))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::{
        ClientRequest, Envelope, ParticipantRequest, ParticipantResponse, RequestId, TxOp,
    };

    fn same_as_serde_json(line: &[u8]) -> Result<(), TestCaseError> {
        if let Some(quick) = read(line) {
            let slow = Object::parse_with_serde_json(line);
            prop_assert_eq!(
                Some(quick),
                slow.ok(),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        Ok(())
    }

    /// A line of one object with the chosen fields, `space` around every token.
    fn object(fields: &[(usize, usize)], names: &[&str], values: &[&str], space: &str) -> String {
        let body: Vec<String> = fields
            .iter()
            .map(|&(n, v)| format!("{space}\"{}\"{space}:{space}{}{space}", names[n], values[v]))
            .collect();
        format!("{space}{{{}}}{space}", body.join(","))
    }

    /// Pieces of flat objects and of what a quick reader could get wrong.
    fn token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "{",
            "}",
            ",",
            ":",
            " ",
            "\t",
            "\r",
            "\n",
            "\"",
            "\"type\"",
            "\"key\"",
            "\"k\"",
            "\"k\\u0065y\"",
            "\"\\n\"",
            "\"a\\\"b\"",
            "\"\\\\\\/\\b\\f\\r\\t\"",
            "\"\\x\"",
            "\"\\\"",
            "\"\\u0041\\n\"",
            "\"é\\n\"",
            "\"é\"",
            "\"\u{1}\"",
            "0",
            "00",
            "01",
            "-",
            "-0",
            "-1",
            "7",
            "1.5",
            "1e3",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "true",
            "truex",
            "false",
            "null",
            "nul",
            "[]",
            "[1]",
            "{}",
            "x",
        ])
    }

    proptest! {
        #[test]
        fn what_it_reads_it_reads_as_serde_json(tokens in prop::collection::vec(token(), 0..24)) {
            same_as_serde_json(tokens.concat().as_bytes())?;
        }

        #[test]
        fn well_formed_flat_objects_read_quickly_and_as_serde_json(
            fields in prop::collection::vec((0..6usize, 0..11usize), 0..8),
            space in prop::sample::select(vec!["", " ", " \t\r\n"]),
        ) {
            let names = ["type", "key", "value", "id", "txid", "x"];
            let values = [
                "\"putreq\"", "\"\"", "\"a b/c é😀\"", "0", "42", "-42",
                "18446744073709551615", "true", "null", "\"q\\\"uo\\\\te\\n\"",
                "\"\\/\\b\\f\\r\\té\\\"\"",
            ];
            let line = object(&fields, &names, &values, space);
            prop_assert!(read(line.as_bytes()).is_some(), "{line}");
            same_as_serde_json(line.as_bytes())?;
        }

        #[test]
        fn objects_at_the_edges_read_as_serde_json_or_not_quickly(
            fields in prop::collection::vec((0..8usize, 0..26usize), 1..4),
            space in prop::sample::select(vec!["", " ", "\n", "\u{b}"]),
        ) {
            // Mostly names the quick reader takes, so that the values decide.
            let names = ["key", "value", "keys", "txid", "é", "ty", "k\\u0065y", "\u{1f}"];
            let values = [
                "\"\"", "\"\\n\"", "\"\u{1f}\"", "\"\u{7f}\"", "\"é\"", "0", "00", "01",
                "-", "-0", "-00", "-1", "1.5", "1e3", "1E3", "9999999999999999999",
                "99999999999999999999", "18446744073709551615",
                "18446744073709551616", "-9223372036854775808", "-9223372036854775809", "truex",
                "nul", "nulL", "trux", "[1]",
            ];
            same_as_serde_json(object(&fields, &names, &values, space).as_bytes())?;
        }

        #[test]
        fn any_string_as_serde_json_writes_it_reads_as_serde_json(text in any::<String>()) {
            let line = format!(r#"{{"type":"putreq","value":{}}}"#, serde_json::json!(text));
            same_as_serde_json(line.as_bytes())?;
            // serde_json writes the five short escapes and `\u00XX` for other control
            // characters; only the latter sends a line to serde_json.
            let short = |c: char| c >= ' ' || "\u{8}\u{c}\n\r\t".contains(c);
            if text.chars().all(short) {
                prop_assert!(read(line.as_bytes()).is_some(), "{line}");
            }
        }

        #[test]
        fn arbitrary_bytes_read_as_serde_json(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            same_as_serde_json(&bytes)?;
        }
    }

    #[test]
    fn the_messages_of_a_write_take_the_quick_path() {
        let id = Some(RequestId::Unsigned(7));
        let mut lines = Vec::new();
        let put = ClientRequest::Put {
            key: "k1".into(),
            value: "v".repeat(100),
        };
        lines.push(Envelope::with_id(id.clone(), put).encode());
        for value in ["v", r#"a "quoted" \ value"#] {
            let prepare = ParticipantRequest::Prepare {
                txid: u64::MAX,
                key: "k1".into(),
                op: TxOp::Put {
                    value: value.into(),
                },
            };
            lines.push(Envelope::to_server(3, id.clone(), prepare).encode());
        }
        let ready = ParticipantResponse::Ready { txid: 12 };
        lines.push(Envelope::with_id(id, ready).encode());
        for line in lines {
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            assert!(read(line).is_some(), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn an_escaped_key_is_made_at_its_size_whatever_follows_it() {
        let value = "v".repeat(64 * 1024);
        let line = format!(r#"{{"type":"putreq","key":"k\"1\\","value":"{value}"}}"#);
        let mut quick = read(line.as_bytes()).expect("the quick path");
        let Some(Field::Str(Cow::Owned(key))) = quick.take("key") else {
            panic!("an unescaped key is owned");
        };
        assert_eq!(key, "k\"1\\");
        assert_eq!(key.capacity(), key.len());
    }

    #[test]
    fn a_known_name_counts_only_up_to_its_closing_quote() {
        for line in [r#"{"keyx:1}"#, r#"{"keys":1}"#, r#"{"typ":1}"#] {
            if let Some(quick) = read(line.as_bytes()) {
                assert_eq!(
                    Object::parse_with_serde_json(line.as_bytes()).ok(),
                    Some(quick)
                );
            }
        }
        assert!(read(br#"{"keyx:1}"#).is_none());
    }

    #[test]
    fn duplicates_are_kept_for_the_malformed_answer() {
        let quick = read(br#"{"type":"getreq","key":"a","key":"b","id":13}"#).unwrap();
        assert_eq!(
            Some(quick),
            Object::parse_with_serde_json(br#"{"type":"getreq","key":"a","key":"b","id":13}"#).ok()
        );
    }
}
