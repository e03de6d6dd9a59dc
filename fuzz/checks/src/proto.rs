//! Every wire decoder of `ringkv_core::proto`, and the line splitter, on arbitrary bytes.
//!
//! Checked beyond "never panics":
//! - a line that decodes re-encodes to one line that decodes to the same envelope, and
//!   encodes to the same bytes again (round trip, encoder stable);
//! - a decoded `ClientRequest` is within the protocol's limits (as PROTOCOL.md states them,
//!   and as `check_key_value` computes them);
//! - a decode error has a code the port may answer (`malformed`, or a limit code on the
//!   client port), and the error answer built from it round-trips too;
//! - `LineSplitter` yields lines of at most 64 bytes without `\n`, keeps at most 65 bytes
//!   buffered, and yields exactly what a plain split of the whole stream gives, wherever
//!   the stream is cut in two.
//!
//! The same bytes also describe a message (any type of the six, with an id, and keys and
//! values whose lengths sit on the protocol's limits), which is encoded and decoded by
//! its port's decoder: it must come back equal, except that a `ClientRequest` over the
//! limits must fail with exactly the protocol's limit code, its id echoed. Raw
//! bytes alone seldom reach a request just over a limit, and a decoder that wrongly
//! accepts one gains no coverage to lead the fuzzer there.

use std::fmt::Debug;

use ringkv_core::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use ringkv_core::proto::{
    check_key_value, ClientRequest, ClientResponse, DecodeError, Envelope, ErrorCode, ErrorReply,
    LineEvent, LineSplitter, ParticipantRequest, ParticipantResponse, Register, RegisterResponse,
    RequestId, ServerStatus, TxOp, WireMessage,
};

const MAX_FRAME_BYTES: usize = 64;

/// Encodes an envelope and checks that the bytes are one line that decodes back to it.
fn assert_round_trips<M>(envelope: &Envelope<M>)
where
    M: WireMessage + Debug + PartialEq,
{
    let encoded = envelope.encode();
    let Some((&b'\n', line)) = encoded.split_last() else {
        panic!("encoding does not end in a line end: {encoded:?}");
    };
    assert!(
        !line.contains(&b'\n'),
        "encoding spans several lines: {:?}",
        String::from_utf8_lossy(&encoded)
    );
    let again = Envelope::<M>::decode(line).unwrap_or_else(|err| {
        panic!(
            "re-encoded {envelope:?} as {:?}, which does not decode: {err}",
            String::from_utf8_lossy(line)
        )
    });
    assert_eq!(&again, envelope, "round trip changed the envelope");
    assert_eq!(again.encode(), encoded, "encoding is not stable");
}

/// Decodes `line` as an `M`; on success checks the round trip, on failure the error.
fn check_decoder<M>(line: &[u8], limit_codes_allowed: bool) -> Option<Envelope<M>>
where
    M: WireMessage + Debug + PartialEq,
{
    match Envelope::<M>::decode(line) {
        Ok(envelope) => {
            assert_round_trips(&envelope);
            Some(envelope)
        }
        Err(err) => {
            check_error(&err, limit_codes_allowed);
            None
        }
    }
}

/// The limits of shared/PROTOCOL.md, written out independently of the core: a key is 1 to
/// 256 bytes of UTF-8, a value at most 262144, and the first fault in that order counts.
fn protocol_limits(key: &str, value: Option<&str>) -> Result<(), ErrorCode> {
    let verdict = if key.is_empty() {
        Err(ErrorCode::EmptyKey)
    } else if key.len() > 256 {
        Err(ErrorCode::KeyTooLong)
    } else if value.is_some_and(|value| value.len() > 262_144) {
        Err(ErrorCode::ValueTooLarge)
    } else {
        Ok(())
    };
    assert_eq!(
        check_key_value(key, value),
        verdict,
        "check_key_value disagrees with the protocol for a key of {} and a value of {:?} bytes",
        key.len(),
        value.map(str::len)
    );
    verdict
}

fn request_limits(request: &ClientRequest) -> Result<(), ErrorCode> {
    match request {
        ClientRequest::Get { key } | ClientRequest::Del { key } => protocol_limits(key, None),
        ClientRequest::Put { key, value } => protocol_limits(key, Some(value)),
        ClientRequest::Status => Ok(()),
    }
}

fn check_error(err: &DecodeError, limit_codes_allowed: bool) {
    let allowed = match err.code {
        ErrorCode::Malformed => true,
        ErrorCode::EmptyKey | ErrorCode::KeyTooLong | ErrorCode::ValueTooLarge => {
            limit_codes_allowed
        }
        _ => false,
    };
    assert!(allowed, "decoder returned code {:?}: {err}", err.code);
    // The answer a server sends for it must itself be a valid line.
    let answer = Envelope::with_id(err.id.clone(), ClientResponse::Error(err.reply()));
    assert_round_trips(&answer);
    let _ = err.to_string();
}

fn decode_all(line: &[u8]) {
    if let Some(request) = check_decoder::<ClientRequest>(line, true) {
        assert_eq!(
            request_limits(&request.msg),
            Ok(()),
            "decoded a request over the limits: {request:?}"
        );
        assert_eq!(
            request.msg.key().is_some(),
            request.msg != ClientRequest::Status
        );
    }
    check_decoder::<ClientResponse>(line, false);
    check_decoder::<ParticipantRequest>(line, false);
    check_decoder::<ParticipantResponse>(line, false);
    if let Some(register) = check_decoder::<Register>(line, false) {
        assert_eq!(register.id, None, "register carries its id in the message");
    }
    if let Some(response) = check_decoder::<RegisterResponse>(line, false) {
        assert_eq!(response.id, None, "register answers carry no id");
    }
}

/// What the splitter must yield for the whole stream followed by a half-close: each
/// `\n`-separated piece less one trailing `\r`, blank pieces skipped, and everything
/// from the first piece over the limit replaced by one `TooLarge`.
fn model_split(data: &[u8]) -> Vec<LineEvent> {
    let mut events = Vec::new();
    for piece in data.split(|&b| b == b'\n') {
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        if line.len() > MAX_FRAME_BYTES {
            events.push(LineEvent::TooLarge);
            break;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            events.push(LineEvent::Line(line.to_vec()));
        }
    }
    events
}

fn check_event(event: &LineEvent) {
    if let LineEvent::Line(line) = event {
        assert!(
            line.len() <= MAX_FRAME_BYTES,
            "line of {} bytes over the limit",
            line.len()
        );
        assert!(!line.contains(&b'\n'), "line holds a line end");
        assert!(!line.is_empty(), "empty line returned");
    }
}

fn drain(splitter: &mut LineSplitter, events: &mut Vec<LineEvent>) {
    while let Some(event) = splitter.next_event() {
        check_event(&event);
        events.push(event);
        assert!(events.len() <= 1 << 16, "splitter does not stop");
    }
    // Nothing whole is left, so at most a partial line (and its possible `\r`) waits.
    assert!(
        splitter.buffered_bytes() <= MAX_FRAME_BYTES + 1,
        "splitter holds {} bytes",
        splitter.buffered_bytes()
    );
}

/// FNV-1a: a cut point that moves with every mutation of the input.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn check_splitter(data: &[u8]) -> Vec<LineEvent> {
    let len = data.len() as u64;
    let cut = usize::try_from(fnv1a(data) % (len + 1)).unwrap_or(0);
    let (first, second) = data.split_at(cut);
    let mut splitter = LineSplitter::new(MAX_FRAME_BYTES);
    let mut events = Vec::new();
    splitter.push(first);
    drain(&mut splitter, &mut events);
    splitter.push(second);
    drain(&mut splitter, &mut events);
    while let Some(event) = splitter.finish() {
        check_event(&event);
        events.push(event);
        assert!(events.len() <= 1 << 16, "finish does not stop");
    }
    assert_eq!(splitter.finish(), None);
    assert_eq!(splitter.next_event(), None);
    if events.last() == Some(&LineEvent::TooLarge) {
        assert_eq!(
            splitter.buffered_bytes(),
            0,
            "a poisoned splitter keeps bytes"
        );
    }
    assert_eq!(
        events,
        model_split(data),
        "splitter differs from a plain split (cut at {cut})"
    );
    events
}

/// Reads a message description from the input, with zeros once it runs out.
struct Program<'a> {
    rest: &'a [u8],
}

/// Characters that need escaping or take several bytes in UTF-8.
const PALETTE: [char; 16] = [
    'a', 'k', ' ', '\0', '\n', '\r', '"', '\\', '/', '\u{1f}', '\u{7f}', 'é', '€', '\u{2028}',
    '\u{ffff}', '🔑',
];

impl Program<'_> {
    fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        match self.byte() {
            0xff => u64::MAX,
            0xfe => 1 << 63,
            0xfd => {
                let mut le = [0u8; 8];
                le.iter_mut().for_each(|b| *b = self.byte());
                u64::from_le_bytes(le)
            }
            b => u64::from(b),
        }
    }

    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A string of `len` UTF-8 bytes: `k`s, then a multi-byte character if one fits.
    fn sized(len: usize, tail: char) -> String {
        let tail_len = tail.len_utf8();
        if len >= tail_len {
            let mut text = "k".repeat(len - tail_len);
            text.push(tail);
            text
        } else {
            "k".repeat(len)
        }
    }

    /// Mostly short strings of palette characters; sometimes exactly on a limit.
    fn string(&mut self) -> String {
        let tail = PALETTE[usize::from(self.byte() % 16)];
        match self.byte() {
            0xf0 => Self::sized(MAX_KEY_BYTES - 1, tail),
            0xf1 => Self::sized(MAX_KEY_BYTES, tail),
            0xf2 => Self::sized(MAX_KEY_BYTES + 1, tail),
            0xf3 => Self::sized(MAX_KEY_BYTES + usize::from(self.byte() % 8), tail),
            0xf4 => Self::sized(MAX_VALUE_BYTES, tail),
            0xf5 => Self::sized(MAX_VALUE_BYTES + 1, tail),
            0xf6 => Self::sized(MAX_VALUE_BYTES - 1 + usize::from(self.byte() % 8), tail),
            len => (0..len % 24)
                .map(|_| PALETTE[usize::from(self.byte() % 16)])
                .collect(),
        }
    }

    fn id(&mut self) -> Option<RequestId> {
        match self.byte() % 4 {
            0 => None,
            1 => Some(RequestId::Unsigned(self.u64())),
            2 => Some(RequestId::Negative(-1 - (self.u64() >> 1) as i64)),
            _ => Some(RequestId::Text(self.string())),
        }
    }

    fn code(&mut self) -> ErrorCode {
        ErrorCode::ALL[usize::from(self.byte()) % ErrorCode::ALL.len()]
    }

    fn reply(&mut self) -> ErrorReply {
        ErrorReply::with_message(self.code(), self.string())
    }
}

/// Encodes `envelope` and decodes it as an `M`: it must come back as `expected`.
fn check_generated<M>(
    envelope: Envelope<M>,
    expected: Result<Envelope<M>, (Option<RequestId>, ErrorCode)>,
) where
    M: WireMessage + Debug + PartialEq,
{
    let encoded = envelope.encode();
    let line = encoded.strip_suffix(b"\n").expect("a line end");
    match (Envelope::<M>::decode(line), expected) {
        (Ok(decoded), Ok(expected)) => assert_eq!(decoded, expected, "{envelope:?}"),
        (Err(err), Err((id, code))) => {
            assert_eq!((&err.id, err.code), (&id, code), "{envelope:?}: {err}");
        }
        (got, expected) => panic!("{envelope:?} decoded as {got:?}, expected {expected:?}"),
    }
    if encoded.len() <= 4096 {
        decode_all(line);
    }
}

fn same<M: Clone>(envelope: &Envelope<M>) -> Result<Envelope<M>, (Option<RequestId>, ErrorCode)> {
    Ok(envelope.clone())
}

fn generate_and_check(data: &[u8]) {
    let mut p = Program { rest: data };
    let kind = p.byte() % 23;
    let id = p.id();
    match kind {
        0..=3 => {
            let msg = match kind {
                0 => ClientRequest::Get { key: p.string() },
                1 => ClientRequest::Put {
                    key: p.string(),
                    value: p.string(),
                },
                2 => ClientRequest::Del { key: p.string() },
                _ => ClientRequest::Status,
            };
            let limits = request_limits(&msg);
            let envelope = Envelope::with_id(id.clone(), msg);
            let expected = match limits {
                Ok(()) => Ok(envelope.clone()),
                Err(code) => Err((id, code)),
            };
            check_generated(envelope, expected);
        }
        4..=7 => {
            let msg = match kind {
                4 => ClientResponse::Value {
                    key: p.string(),
                    value: p.string(),
                },
                5 => ClientResponse::Success,
                6 => ClientResponse::Status {
                    servers: (0..p.byte() % 4)
                        .map(|_| ServerStatus {
                            id: p.u64(),
                            addr: p.string(),
                            up: p.bool(),
                        })
                        .collect(),
                    expected: p.u64(),
                },
                _ => ClientResponse::Error(p.reply()),
            };
            let envelope = Envelope::with_id(id, msg);
            check_generated(envelope.clone(), same(&envelope));
        }
        8..=13 => {
            let msg = match kind {
                8 => ParticipantRequest::Prepare {
                    txid: p.u64(),
                    key: p.string(),
                    op: TxOp::Put { value: p.string() },
                },
                9 => ParticipantRequest::Prepare {
                    txid: p.u64(),
                    key: p.string(),
                    op: TxOp::Del,
                },
                10 => ParticipantRequest::Commit { txid: p.u64() },
                11 => ParticipantRequest::Abort { txid: p.u64() },
                12 => ParticipantRequest::Get { key: p.string() },
                _ => ParticipantRequest::Ping,
            };
            // Limits are the participant's vote, not a decoding error.
            let envelope = Envelope::with_id(id, msg);
            check_generated(envelope.clone(), same(&envelope));
        }
        14..=19 => {
            let msg = match kind {
                14 => ParticipantResponse::Ready { txid: p.u64() },
                15 => ParticipantResponse::Refuse {
                    txid: p.u64(),
                    code: p.code(),
                    message: p.string(),
                },
                16 => ParticipantResponse::Ack { txid: p.u64() },
                17 => ParticipantResponse::Value {
                    key: p.string(),
                    value: p.string(),
                },
                18 => ParticipantResponse::Error(p.reply()),
                _ => ParticipantResponse::Pong,
            };
            let envelope = Envelope::with_id(id, msg);
            check_generated(envelope.clone(), same(&envelope));
        }
        20 => {
            // Register carries the ring ID in the message; an envelope id is not sent.
            let msg = Register {
                id: p.u64(),
                addr: p.string(),
            };
            check_generated(Envelope::with_id(id, msg.clone()), Ok(Envelope::bare(msg)));
        }
        _ => {
            let msg = if kind == 21 {
                RegisterResponse::Ack
            } else {
                RegisterResponse::Error(p.reply())
            };
            check_generated(Envelope::with_id(id, msg.clone()), Ok(Envelope::bare(msg)));
        }
    }
}

/// Runs every check of this target on one input; panics on a violation.
pub fn check(data: &[u8]) {
    decode_all(data);
    generate_and_check(data);
    let events = check_splitter(data);
    // Lines from a multi-line input go through the decoders one by one as well.
    if events.len() > 1 {
        for event in &events {
            if let LineEvent::Line(line) = event {
                decode_all(line);
            }
        }
    }
}
