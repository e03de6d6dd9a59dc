//! The write-ahead log's decoders: frames, records, and recovery of a KV server.
//!
//! Each input is used twice:
//! 1. Raw: the bytes are a log. `decode_frames` must return contiguous frames from offset 0
//!    whose payloads lie in the bytes where the offsets say, a `valid_len` within the bytes
//!    and a stop reason that matches what follows it; a payload that decodes as a `Record`
//!    re-encodes to the same bytes; `Replica::recover` (over an in-memory `LogReader` of the
//!    same bytes) stops at a frame boundary and ends in the state a plain model of replay
//!    gives, every committed value readable.
//! 2. Structured: the bytes are a program that picks a cache shape, records to write, and a
//!    mutation (none, a truncation, or one flipped byte). The records are encoded with
//!    `Record::encode` and `log::encode_frame`, mutated, and recovered: `valid_len` must be
//!    the end of the last frame the mutation spared, and the state the model's.
//!
//! Anomalies in the log are legitimate (recovery reports and skips them); the model counts
//! them too.

use std::collections::{BTreeMap, VecDeque};

use ringkv_core::cache::CacheConfig;
use ringkv_core::log::{
    after_prefix, decode_frames, encode_frame, AfterPrefix, PrefixEnd, StopReason,
    FRAME_HEADER_BYTES, LEGACY_FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES,
};
use ringkv_core::replica::record::Record;
use ringkv_core::replica::{LogReader, Replica, ReplicaConfig, StorageError};

/// The log as the replica reads it back.
struct MemLog<'a>(&'a [u8]);

impl LogReader for MemLog<'_> {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(len)?))
            .and_then(|range| self.0.get(range))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                StorageError(format!(
                    "read of {len} bytes at {offset} past the log's {} bytes",
                    self.0.len()
                ))
            })
    }
}

/// Replay written out plainly, from the protocol's rules (docs/protocol.md, section 1).
struct Model {
    decided_memory: usize,
    /// txid -> (key, Some(value) for a put, None for a delete)
    prepared: BTreeMap<u64, (String, Option<String>)>,
    locks: BTreeMap<String, u64>,
    /// txid -> committed?
    decided: BTreeMap<u64, bool>,
    decided_order: VecDeque<u64>,
    store: BTreeMap<String, String>,
    anomalies: usize,
}

impl Model {
    fn new(decided_memory: usize) -> Self {
        Self {
            decided_memory,
            prepared: BTreeMap::new(),
            locks: BTreeMap::new(),
            decided: BTreeMap::new(),
            decided_order: VecDeque::new(),
            store: BTreeMap::new(),
            anomalies: 0,
        }
    }

    fn apply(&mut self, record: &Record) {
        match record {
            Record::PreparePut { txid, key, value } => {
                self.prepare(*txid, key, Some(value.clone()));
            }
            Record::PrepareDel { txid, key } => self.prepare(*txid, key, None),
            Record::Commit { txid } => self.decide(*txid, true),
            Record::Abort { txid } => self.decide(*txid, false),
            Record::Value { key, value } => self.carry(key, value),
        }
    }

    fn prepare(&mut self, txid: u64, key: &str, value: Option<String>) {
        if self.prepared.contains_key(&txid)
            || self.decided.contains_key(&txid)
            || self.locks.contains_key(key)
        {
            self.anomalies += 1;
            return;
        }
        self.locks.insert(key.to_owned(), txid);
        self.prepared.insert(txid, (key.to_owned(), value));
    }

    /// A committed value compaction carried over: no transaction may hold its key.
    fn carry(&mut self, key: &str, value: &str) {
        if self.locks.contains_key(key) {
            self.anomalies += 1;
            return;
        }
        self.store.insert(key.to_owned(), value.to_owned());
    }

    fn decide(&mut self, txid: u64, commit: bool) {
        let Some((key, value)) = self.prepared.remove(&txid) else {
            if self.decided.get(&txid) != Some(&commit) {
                self.anomalies += 1;
            }
            return;
        };
        self.locks.remove(&key);
        if commit {
            match value {
                Some(value) => self.store.insert(key, value),
                None => self.store.remove(&key),
            };
        }
        if self.decided.insert(txid, commit).is_none() {
            self.decided_order.push_back(txid);
        }
        while self.decided_order.len() > self.decided_memory {
            if let Some(oldest) = self.decided_order.pop_front() {
                self.decided.remove(&oldest);
            }
        }
    }
}

fn read_u32_le(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// The flag of a stamped frame's length word.
const STAMPED: u32 = 1 << 31;

/// The header bytes the length word at the start of `bytes` announces.
fn header_bytes(bytes: &[u8]) -> usize {
    match read_u32_le(bytes) {
        Some(word) if word & STAMPED != 0 => FRAME_HEADER_BYTES,
        _ => LEGACY_FRAME_HEADER_BYTES,
    }
}

/// `decode_frames` on arbitrary bytes, and `Record::decode` of every payload. Returns the
/// records recovery replays (those before the first payload that is no record).
fn check_frames(bytes: &[u8]) -> (Vec<Record>, Vec<usize>) {
    let decoded = decode_frames(bytes);
    let valid_len = usize::try_from(decoded.valid_len).expect("valid_len fits usize");
    assert!(
        valid_len <= bytes.len(),
        "valid_len {valid_len} past the end"
    );
    let mut offset = 0usize;
    let mut records = Vec::new();
    let mut record_ends = Vec::new();
    let mut replaying = true;
    for frame in &decoded.frames {
        assert_eq!(frame.offset, offset as u64, "frames are not contiguous");
        let start = offset + header_bytes(&bytes[offset..]);
        assert_eq!(frame.payload_offset, start as u64);
        let end = start + frame.payload.len();
        assert!(end <= valid_len, "payload past valid_len");
        assert!(
            std::ptr::eq(frame.payload, &bytes[start..end]),
            "payload is not where the offsets say"
        );
        assert_eq!(
            read_u32_le(&bytes[offset..]).map(|word| word & !STAMPED),
            Some(frame.payload.len() as u32),
            "payload length differs from the header"
        );
        match Record::decode(frame.payload) {
            Ok(record) => {
                assert_eq!(
                    record.encode(),
                    frame.payload,
                    "record does not re-encode to its payload"
                );
                if replaying {
                    records.push(record);
                    record_ends.push(end);
                }
            }
            Err(err) => {
                let _ = err.to_string();
                replaying = false;
            }
        }
        offset = end;
    }
    assert_eq!(
        valid_len, offset,
        "valid_len is not the end of the last frame"
    );
    let rest = &bytes[valid_len..];
    let header = header_bytes(rest);
    let zeros = rest.get(..LEGACY_FRAME_HEADER_BYTES) == Some(&[0; LEGACY_FRAME_HEADER_BYTES][..]);
    let whole_header = rest.len() >= header && !zeros;
    let header_len = read_u32_le(rest).map(|word| (word & !STAMPED) as usize);
    let fits = |len: usize| rest.len() - header >= len;
    let stop_is_right = match decoded.stop {
        StopReason::End => rest.is_empty(),
        StopReason::Zeros => zeros,
        StopReason::TornHeader => !rest.is_empty() && !zeros && rest.len() < header,
        StopReason::OversizedLength => whole_header && header_len > Some(MAX_PAYLOAD_BYTES),
        StopReason::TornPayload => {
            whole_header && header_len.is_some_and(|len| len <= MAX_PAYLOAD_BYTES && !fits(len))
        }
        StopReason::BadChecksum => {
            whole_header && header_len.is_some_and(|len| len <= MAX_PAYLOAD_BYTES && fits(len))
        }
    };
    assert!(
        stop_is_right,
        "stop {:?} with {} bytes left",
        decoded.stop,
        rest.len()
    );
    check_after(bytes, valid_len);
    (records, record_ends)
}

/// `after_prefix` on what follows the valid frames: only zeros is a clean end, and a
/// frame it names as proof of corruption is a whole, valid frame where it says, stamped
/// past the bad offset or without a stamp, and without the mark only where an earlier
/// version may have written it.
fn check_after(bytes: &[u8], valid_len: usize) {
    match after_prefix(bytes, valid_len as u64) {
        AfterPrefix::Zeros => assert!(
            bytes[valid_len..].iter().all(|&b| b == 0),
            "zeros reported over bytes that are not"
        ),
        AfterPrefix::ValidFrameAt(at) => {
            let at = usize::try_from(at).expect("offset fits usize");
            assert!(
                at > valid_len,
                "a proof of corruption inside the valid prefix"
            );
            let found = decode_frames(&bytes[at..]);
            let frame = found
                .frames
                .first()
                .expect("no valid frame where one is named");
            assert!(
                frame
                    .durable_end
                    .is_none_or(|stamp| stamp > valid_len as u64),
                "a frame of the torn stretch named as corruption"
            );
            // A frame without the mark is proof only after an earlier version's frame
            // (or none): after a frame of this version's it lies inside a payload.
            assert!(
                frame.marked
                    || decode_frames(&bytes[..valid_len]).prefix_end() == PrefixEnd::Unmarked,
                "a frame without the mark named as corruption after a marked prefix"
            );
        }
        AfterPrefix::TornTail | AfterPrefix::Unknown => {}
    }
}

/// Recovers a replica from `bytes` and checks it against the model of `records`, the
/// records recovery should replay. Returns the reported `valid_len`.
fn check_recover(
    config: ReplicaConfig,
    bytes: &[u8],
    records: &[Record],
    record_ends: &[usize],
) -> usize {
    let (replica, report) =
        Replica::recover(config, bytes, MemLog(bytes)).expect("the cache shape is valid");
    let valid_len = usize::try_from(report.valid_len).expect("valid_len fits usize");
    assert!(valid_len <= bytes.len(), "report.valid_len past the end");
    assert_eq!(replica.log_len(), report.valid_len);
    assert_eq!(report.records, records.len(), "records replayed");
    // Recovery stops at the first payload that is no record, else where framing stopped.
    let decoded_len = decode_frames(bytes).valid_len;
    match report.bad_record {
        Some((offset, _)) => {
            assert_eq!(offset, report.valid_len);
            assert_eq!(record_ends.last().copied().unwrap_or(0), valid_len);
            assert!(report.valid_len < decoded_len);
        }
        None => assert_eq!(report.valid_len, decoded_len),
    }

    let mut model = Model::new(config.decided_memory);
    for record in records {
        model.apply(record);
    }
    assert_eq!(
        report.anomalies.len(),
        model.anomalies,
        "{:?}",
        report.anomalies
    );

    let keys: Vec<String> = replica.committed_keys().map(str::to_owned).collect();
    assert_eq!(keys.len(), report.committed_keys);
    assert!(
        keys.iter().eq(model.store.keys()),
        "committed keys {keys:?}, model {:?}",
        model.store.keys().collect::<Vec<_>>()
    );
    for key in &keys {
        let value = replica.committed_value(key);
        assert_eq!(
            value.as_ref().ok().and_then(Option::as_deref),
            model.store.get(key).map(String::as_str),
            "committed value of {key:?}: {value:?}"
        );
    }
    assert_eq!(replica.committed_value("no such key \u{0}"), Ok(None));

    let in_doubt: Vec<u64> = replica.in_doubt().collect();
    assert_eq!(in_doubt.len(), report.in_doubt);
    assert!(
        in_doubt.iter().eq(model.prepared.keys()),
        "in doubt {in_doubt:?}, model {:?}",
        model.prepared.keys().collect::<Vec<_>>()
    );
    valid_len
}

/// Reads the structured program, with zeros once the input runs out.
struct Program<'a> {
    rest: &'a [u8],
}

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

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }

    fn txid(&mut self) -> u64 {
        match self.byte() {
            b @ 0..=0xef => u64::from(b % 12),
            b => u64::MAX - u64::from(b & 0x0f),
        }
    }

    fn key(&mut self) -> String {
        match self.byte() % 10 {
            0 => "a".to_owned(),
            1 => "b".to_owned(),
            2 => "c".to_owned(),
            3 => "key with \u{0} and \n".to_owned(),
            4 => "ключ".to_owned(),
            5 => "🔑".to_owned(),
            6 => String::new(),
            7 => "k".repeat(257),
            _ => {
                let len = usize::from(self.byte() % 16);
                String::from_utf8_lossy(self.bytes(len)).into_owned()
            }
        }
    }

    fn value(&mut self) -> String {
        match self.byte() {
            0xff => "v".repeat(4096 + usize::from(self.byte())),
            len => String::from_utf8_lossy(self.bytes(usize::from(len % 64))).into_owned(),
        }
    }

    fn record(&mut self) -> Record {
        match self.byte() % 5 {
            0 => Record::PreparePut {
                txid: self.txid(),
                key: self.key(),
                value: self.value(),
            },
            1 => Record::PrepareDel {
                txid: self.txid(),
                key: self.key(),
            },
            2 => Record::Commit { txid: self.txid() },
            3 => Record::Abort { txid: self.txid() },
            // What compaction writes: a committed value carried over.
            _ => Record::Value {
                key: self.key(),
                value: self.value(),
            },
        }
    }
}

enum Mutation {
    None,
    Truncate(u16),
    Flip(u16, u8),
}

fn check_structured(data: &[u8]) {
    let mut program = Program { rest: data };
    let shape = program.byte();
    let config = ReplicaConfig {
        cache: CacheConfig {
            sets: 1 + usize::from(shape & 3),
            ways: 1 + usize::from((shape >> 2) & 3),
        },
        decided_memory: if shape & 0x10 != 0 {
            1 + usize::from(shape >> 5)
        } else {
            ReplicaConfig::default().decided_memory
        },
        ..ReplicaConfig::default()
    };
    let mutation = match program.byte() % 3 {
        0 => Mutation::None,
        1 => Mutation::Truncate(program.u16()),
        _ => Mutation::Flip(program.u16(), program.byte().max(1)),
    };
    let mut records = Vec::new();
    let mut log = Vec::new();
    let mut ends = Vec::new();
    while !program.rest.is_empty() && records.len() < 64 {
        let record = program.record();
        encode_frame(&record.encode(), &mut log);
        ends.push(log.len());
        records.push(record);
    }
    let written = decode_frames(&log);
    assert_eq!(written.stop, StopReason::End);
    assert_eq!(written.frames.len(), records.len());

    // The frames a mutation spares: those that end before the cut or the flipped byte.
    let spared_before = match mutation {
        Mutation::None => log.len(),
        Mutation::Truncate(at) => {
            let cut = usize::from(at) % (log.len() + 1);
            log.truncate(cut);
            cut
        }
        Mutation::Flip(at, mask) => {
            if log.is_empty() {
                0
            } else {
                let index = usize::from(at) % log.len();
                log[index] ^= mask;
                index
            }
        }
    };
    let intact = ends.iter().filter(|&&end| end <= spared_before).count();
    let expected_len = if intact == 0 { 0 } else { ends[intact - 1] };

    let (replayed, replayed_ends) = check_frames(&log);
    assert_eq!(replayed, records[..intact], "records read back");
    assert_eq!(replayed_ends, ends[..intact]);
    let valid_len = check_recover(config, &log, &replayed, &replayed_ends);
    assert_eq!(
        valid_len, expected_len,
        "recovery kept {valid_len} bytes, the spared frames end at {expected_len}"
    );
}

/// Runs every check of this target on one input; panics on a violation.
pub fn check(data: &[u8]) {
    let (records, record_ends) = check_frames(data);
    check_recover(ReplicaConfig::default(), data, &records, &record_ends);
    check_structured(data);
}
