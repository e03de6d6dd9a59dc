//! Strict JSON objects in, compact JSON objects out.
//!
//! serde_json already rejects invalid UTF-8, lone surrogate escapes, trailing garbage and
//! nesting deeper than 128; what it does not reject is a field given twice, which the
//! protocol calls `malformed`, so objects are read through a visitor that refuses it.
//!
//! A field's value is read as a [`Field`], not a `serde_json::Value`: strings without
//! escapes stay borrowed from the line and numbers stay plain integers, so that the
//! fields every message has (`type`, `id`, `txid`) cost no allocation. Only arrays and
//! nested objects, which no message of the write path carries, become `Value`s.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{DecodeError, RequestId};

/// Fields a message of the protocol has at most; the field list starts this large so that
/// reading one never grows it.
pub(crate) const USUAL_FIELDS: usize = 6;

/// The fields of one top-level JSON object, in the order they came. Field names without
/// escapes are borrowed from the line: every message reads several, and allocating each
/// showed up as a large share of a write's CPU time.
#[derive(Debug, PartialEq)]
pub(crate) struct Object<'de> {
    fields: Vec<(Cow<'de, str>, Field<'de>)>,
    /// The first field name given twice. The object is still read to its end, so that
    /// the `malformed` answer can echo the request's id.
    duplicate: Option<String>,
}

impl<'de> Object<'de> {
    /// Parses a line that must be exactly one JSON object: the usual flat shape quickly,
    /// anything else through serde_json.
    pub(crate) fn parse(line: &'de [u8]) -> Result<Object<'de>, DecodeError> {
        match super::flat::read(line) {
            Some(object) => Ok(object),
            None => Self::parse_with_serde_json(line),
        }
    }

    /// Parses a line through serde_json alone, whatever its shape.
    pub(crate) fn parse_with_serde_json(line: &'de [u8]) -> Result<Object<'de>, DecodeError> {
        serde_json::from_slice::<Object<'de>>(line)
            .map_err(|err| DecodeError::malformed(None, format!("not a JSON object: {err}")))
    }

    /// An object read by other means than serde_json: its fields, each name once, and
    /// the first name given twice.
    pub(crate) fn from_parts(
        fields: Vec<(Cow<'de, str>, Field<'de>)>,
        duplicate: Option<String>,
    ) -> Self {
        Self { fields, duplicate }
    }

    /// Removes and returns a field, so that large strings move out without a copy.
    pub(crate) fn take(&mut self, name: &str) -> Option<Field<'de>> {
        let at = self.fields.iter().position(|(field, _)| field == name)?;
        Some(self.fields.swap_remove(at).1)
    }

    /// `malformed` (echoing `id`) if a field was given twice.
    pub(crate) fn reject_duplicates(&self, id: &Option<RequestId>) -> Result<(), DecodeError> {
        match &self.duplicate {
            Some(name) => Err(DecodeError::malformed(
                id.clone(),
                format!("duplicate field \"{name}\""),
            )),
            None => Ok(()),
        }
    }

    /// Whether the object has the field.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(field, _)| field == name)
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<'de>(PhantomData<&'de ()>);

impl<'de> Visitor<'de> for ObjectVisitor<'de> {
    type Value = Object<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
        let mut fields: Vec<(Cow<'de, str>, Field<'de>)> = Vec::with_capacity(USUAL_FIELDS);
        let mut duplicate = None;
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            let value: Field<'de> = map.next_value()?;
            if fields.iter().any(|(field, _)| *field == name) {
                duplicate.get_or_insert(name.into_owned());
            } else {
                fields.push((name, value));
            }
        }
        Ok(Object { fields, duplicate })
    }
}

/// A field name, borrowed from the line when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(NameVisitor(PhantomData))
    }
}

struct NameVisitor<'de>(PhantomData<&'de ()>);

impl<'de> Visitor<'de> for NameVisitor<'de> {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, name: &'de str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Borrowed(name)))
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Owned(name.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, name: String) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Owned(name)))
    }
}

/// One field's value as the line gave it. Strings without escapes borrow from the line;
/// integers keep serde_json's split (non-negative `U64`, negative `I64`, anything with a
/// fraction or exponent, or out of range, `F64`), so a field reads as it would through a
/// `Value`.
#[derive(Debug, PartialEq)]
pub(crate) enum Field<'de> {
    Str(Cow<'de, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Null,
    /// An array or an object.
    Nested(Value),
}

impl Field<'_> {
    /// The same value as a `serde_json::Value`, for the fields kept as JSON.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Field::Str(text) => Value::String(text.into_owned()),
            Field::U64(number) => Value::from(number),
            Field::I64(number) => Value::from(number),
            Field::F64(number) => Value::from(number),
            Field::Bool(value) => Value::Bool(value),
            Field::Null => Value::Null,
            Field::Nested(value) => value,
        }
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<'de>(PhantomData<&'de ()>);

impl<'de> Visitor<'de> for FieldVisitor<'de> {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(text)))
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Field<'de>, E> {
        Ok(Field::U64(number))
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Field<'de>, E> {
        // serde_json gives non-negative integers as u64; keep that split whatever calls.
        Ok(u64::try_from(number).map_or(Field::I64(number), Field::U64))
    }

    fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Field<'de>, E> {
        Ok(Field::F64(number))
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(value))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Field::Nested)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Field::Nested)
    }
}

/// Reads the optional request `"id"` (a string or an integer in -2^63..2^64-1), then
/// refuses a duplicate field with an answer that carries it.
pub(crate) fn take_request_id(obj: &mut Object<'_>) -> Result<Option<RequestId>, DecodeError> {
    let id = read_request_id(obj)?;
    obj.reject_duplicates(&id)?;
    Ok(id)
}

fn read_request_id(obj: &mut Object<'_>) -> Result<Option<RequestId>, DecodeError> {
    match obj.take("id") {
        None => Ok(None),
        Some(Field::Str(text)) => Ok(Some(RequestId::Text(text.into_owned()))),
        Some(Field::U64(unsigned)) => Ok(Some(RequestId::Unsigned(unsigned))),
        Some(Field::I64(negative)) => Ok(Some(RequestId::Negative(negative))),
        Some(Field::F64(_)) => Err(DecodeError::malformed(
            None,
            "\"id\" must be a string or an integer in -2^63..2^64-1",
        )),
        Some(_) => Err(DecodeError::malformed(
            None,
            "\"id\" must be a string or an integer",
        )),
    }
}

/// Field accessors that turn a missing or mistyped field into a `malformed` error
/// carrying the request's id.
pub(crate) struct Fields<'a, 'de> {
    pub(crate) obj: &'a mut Object<'de>,
    pub(crate) id: &'a Option<RequestId>,
}

impl<'de> Fields<'_, 'de> {
    fn error(&self, message: String) -> DecodeError {
        DecodeError::malformed(self.id.clone(), message)
    }

    /// A required string field.
    pub(crate) fn string(&mut self, name: &str) -> Result<String, DecodeError> {
        self.str(name).map(Cow::into_owned)
    }

    /// A required string field, borrowed from the line when it has no escapes: for
    /// fields that are only looked at, such as `"type"`.
    pub(crate) fn str(&mut self, name: &str) -> Result<Cow<'de, str>, DecodeError> {
        match self.obj.take(name) {
            Some(Field::Str(text)) => Ok(text),
            Some(_) => Err(self.error(format!("\"{name}\" must be a string"))),
            None => Err(self.error(format!("missing field \"{name}\""))),
        }
    }

    /// An optional string field.
    pub(crate) fn opt_string(&mut self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.obj.take(name) {
            Some(Field::Str(text)) => Ok(Some(text.into_owned())),
            Some(_) => Err(self.error(format!("\"{name}\" must be a string"))),
            None => Ok(None),
        }
    }

    /// A required integer field in 0..2^64-1.
    pub(crate) fn u64(&mut self, name: &str) -> Result<u64, DecodeError> {
        match self.obj.take(name) {
            Some(Field::U64(number)) => Ok(number),
            Some(Field::I64(_) | Field::F64(_)) => {
                Err(self.error(format!("\"{name}\" must be an integer in 0..2^64-1")))
            }
            Some(_) => Err(self.error(format!("\"{name}\" must be an integer"))),
            None => Err(self.error(format!("missing field \"{name}\""))),
        }
    }

    /// A required boolean field.
    pub(crate) fn bool(&mut self, name: &str) -> Result<bool, DecodeError> {
        match self.obj.take(name) {
            Some(Field::Bool(value)) => Ok(value),
            Some(_) => Err(self.error(format!("\"{name}\" must be true or false"))),
            None => Err(self.error(format!("missing field \"{name}\""))),
        }
    }

    /// A required array field.
    pub(crate) fn array(&mut self, name: &str) -> Result<Vec<Value>, DecodeError> {
        match self.obj.take(name) {
            Some(Field::Nested(Value::Array(items))) => Ok(items),
            Some(_) => Err(self.error(format!("\"{name}\" must be an array"))),
            None => Err(self.error(format!("missing field \"{name}\""))),
        }
    }

    /// The required `"type"` field.
    pub(crate) fn kind(&mut self) -> Result<Cow<'de, str>, DecodeError> {
        self.str("type")
    }

    /// The error for a `"type"` this port does not take.
    pub(crate) fn unknown_kind(&self, kind: &str) -> DecodeError {
        self.error(format!("unknown type \"{kind}\""))
    }

    /// The error for a field that has the wrong value.
    pub(crate) fn invalid(&self, message: impl Into<String>) -> DecodeError {
        self.error(message.into())
    }
}

/// Writes one compact JSON object and its line end.
pub(crate) struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Starts an object with its `"type"` field.
    pub(crate) fn new(out: &'a mut Vec<u8>, kind: &'static str) -> Self {
        let mut writer = Self::untyped(out);
        writer.name("type");
        write_plain_string(writer.out, kind);
        writer
    }

    /// Starts an object without a `"type"` field (an item nested in another object).
    pub(crate) fn untyped(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// Field names (and message kinds) are the protocol's snake_case constants: they
    /// are copied as they are, without the escape check.
    fn name(&mut self, name: &'static str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_plain_string(self.out, name);
        self.out.push(b':');
    }

    pub(crate) fn str(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.name(name);
        write_json_string(self.out, value);
        self
    }

    pub(crate) fn u64(&mut self, name: &'static str, value: u64) -> &mut Self {
        self.name(name);
        write_u64(self.out, value);
        self
    }

    pub(crate) fn bool(&mut self, name: &'static str, value: bool) -> &mut Self {
        self.name(name);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// Starts a field whose value the caller writes raw (arrays of objects).
    pub(crate) fn raw(&mut self, name: &'static str) -> &mut Vec<u8> {
        self.name(name);
        self.out
    }

    pub(crate) fn id(&mut self, id: Option<&RequestId>) -> &mut Self {
        match id {
            None => {}
            Some(RequestId::Unsigned(number)) => {
                self.u64("id", *number);
            }
            Some(RequestId::Negative(number)) => {
                self.name("id");
                self.out.extend_from_slice(number.to_string().as_bytes());
            }
            Some(RequestId::Text(text)) => {
                self.str("id", text);
            }
        }
        self
    }

    /// Closes the object and ends the line.
    pub(crate) fn finish(self) {
        self.out.extend_from_slice(b"}\n");
    }

    /// Closes a nested object.
    pub(crate) fn close(self) {
        self.out.push(b'}');
    }
}

/// Writes a constant of the protocol (a field name, a message kind) as a JSON string:
/// none needs an escape.
fn write_plain_string(out: &mut Vec<u8>, text: &'static str) {
    debug_assert!(
        super::flat::plain_run(text.as_bytes(), 0) == text.len(),
        "{text:?} needs escapes"
    );
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// Writes `text` as a JSON string with the escapes JSON needs.
pub(crate) fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Most strings (every field name, most keys and values) need no escape, and those
    // that do have a few: plain runs are copied whole, found eight bytes at a time, and
    // only the bytes between them are escaped. serde_json's writer goes byte by byte,
    // which profiles showed among the largest costs of a write whose value holds a quote
    // (redis-benchmark's random values nearly always do). The bytes are serde_json's.
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut at = 0;
    loop {
        let end = super::flat::plain_run(bytes, at);
        out.extend_from_slice(bytes.get(at..end).unwrap_or_default());
        let Some(&byte) = bytes.get(end) else {
            break;
        };
        write_escape(out, byte);
        at = end + 1;
    }
    out.push(b'"');
}

/// The escape serde_json writes for a quote, a backslash or a control character.
fn write_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short: &[u8] = match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        0x08 => b"\\b",
        0x0c => b"\\f",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        _ => {
            assert!(byte < 0x20, "{byte:#x} needs no escape");
            let high = HEX[usize::from(byte >> 4)];
            let low = HEX[usize::from(byte & 0xf)];
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
            return;
        }
    };
    out.extend_from_slice(short);
}

/// "00" to "99": integers are written two digits per division, as transaction IDs of
/// up to 20 digits made one division per digit show in profiles.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `value` in decimal without the formatting machinery or a temporary string.
fn write_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    while value >= 10 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        start -= 2;
        if let (Some(to), Some(from)) = (
            digits.get_mut(start..start + 2),
            DIGIT_PAIRS.get(pair..pair + 2),
        ) {
            to.copy_from_slice(from);
        }
    }
    // The last pair taken was 10..99, so a digit is left unless the number had an even
    // count of them; zero is the one digit "0".
    if value > 0 || start == digits.len() {
        start -= 1;
        if let Some(digit) = digits.get_mut(start) {
            *digit = b'0' + value as u8;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod field_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::{ParticipantRequest, WireMessage};

    fn field_of(text: &str) -> Field<'_> {
        serde_json::from_str(text).unwrap()
    }

    /// Any JSON value, nested a little.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z\"\\\n\u{0}-\u{1f}é😀]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_field_reads_as_the_value_serde_json_reads(value in json_value()) {
            let text = serde_json::to_string(&value).unwrap();
            let field: Field<'_> = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(field.into_value(), serde_json::from_str::<Value>(&text).unwrap());
        }
    }

    #[test]
    fn numbers_keep_serde_json_split() {
        assert_eq!(field_of("0"), Field::U64(0));
        assert_eq!(field_of("18446744073709551615"), Field::U64(u64::MAX));
        assert_eq!(field_of("-1"), Field::I64(-1));
        assert_eq!(field_of("-9223372036854775808"), Field::I64(i64::MIN));
        for text in [
            "-0",
            "1.0",
            "1e3",
            "18446744073709551616",
            "-9223372036854775809",
        ] {
            assert!(matches!(field_of(text), Field::F64(_)), "{text}");
            assert_eq!(
                field_of(text).into_value(),
                serde_json::from_str::<Value>(text).unwrap()
            );
        }
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        assert!(matches!(
            field_of(r#""plain""#),
            Field::Str(Cow::Borrowed("plain"))
        ));
        assert_eq!(field_of(r#""a\nb""#), Field::Str(Cow::Owned("a\nb".into())));
    }

    fn participant_error(line: &str) -> String {
        match ParticipantRequest::decode(line.as_bytes()) {
            Ok(ok) => panic!("{line} decoded to {ok:?}"),
            Err(err) => err.message,
        }
    }

    #[test]
    fn wrong_types_get_the_same_answers_as_before() {
        for (line, message) in [
            (
                r#"{"type":"commit","txid":-1}"#,
                "\"txid\" must be an integer in 0..2^64-1",
            ),
            (
                r#"{"type":"commit","txid":1.0}"#,
                "\"txid\" must be an integer in 0..2^64-1",
            ),
            (
                r#"{"type":"commit","txid":"1"}"#,
                "\"txid\" must be an integer",
            ),
            (
                r#"{"type":"commit","txid":[1]}"#,
                "\"txid\" must be an integer",
            ),
            (r#"{"type":"commit"}"#, "missing field \"txid\""),
            (r#"{"type":"getreq","key":{}}"#, "\"key\" must be a string"),
            (
                r#"{"type":["commit"],"txid":1}"#,
                "\"type\" must be a string",
            ),
            (
                r#"{"type":"c\u006fmmit","txid":1,"tx\u0069d":2}"#,
                "duplicate field \"txid\"",
            ),
            (
                r#"{"type":"commit","txid":1,"id":-0}"#,
                "\"id\" must be a string or an integer in -2^63..2^64-1",
            ),
            (
                r#"{"type":"commit","txid":1,"id":false}"#,
                "\"id\" must be a string or an integer",
            ),
            (r#"{"type":"commitx","txid":1}"#, "unknown type \"commitx\""),
        ] {
            assert_eq!(participant_error(line), message, "{line}");
        }
        let escaped = ParticipantRequest::decode(br#"{"type":"c\u006fmmit","txid":1}"#).unwrap();
        assert_eq!(escaped.msg, ParticipantRequest::Commit { txid: 1 });
    }
}

#[cfg(test)]
mod writer_tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn integers_are_written_as_to_string_writes_them(value in any::<u64>(), digits in 0u32..20) {
            for value in [value, value % 10u64.pow(digits)] {
                let mut ours = Vec::new();
                write_u64(&mut ours, value);
                prop_assert_eq!(ours, value.to_string().into_bytes());
            }
        }

        #[test]
        fn strings_are_written_as_serde_json_writes_them(text in "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é😀]{0,40}") {
            let mut ours = Vec::new();
            write_json_string(&mut ours, &text);
            prop_assert_eq!(ours, serde_json::to_vec(&text).unwrap());
        }
    }

    #[test]
    fn the_fast_paths_write_what_serde_json_writes() {
        for text in [
            "",
            "type",
            "a b/c",
            "\u{7f}é😀",
            "q\"uote",
            "back\\slash",
            "nl\n",
            "\u{0}",
            "\u{1f}",
        ] {
            let mut ours = Vec::new();
            write_json_string(&mut ours, text);
            assert_eq!(ours, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        for value in [
            0,
            7,
            10,
            99,
            100,
            101,
            999,
            1_000_000,
            10_000_000,
            u64::MAX,
            u64::MAX / 10,
        ] {
            let mut ours = Vec::new();
            write_u64(&mut ours, value);
            assert_eq!(ours, value.to_string().into_bytes());
        }
    }
}
