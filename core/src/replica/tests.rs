use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::log::StopReason;

/// The log as the tests' disk: appended by the test as the replica asks.
#[derive(Clone, Default)]
struct MemLog(Rc<RefCell<Vec<u8>>>);

impl LogReader for MemLog {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let log = self.0.borrow();
        let start = offset as usize;
        log.get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StorageError("out of range".into()))
    }
}

struct Harness {
    replica: Replica<MemLog>,
    log: MemLog,
    replies: Vec<(ReplyTo, ParticipantResponse)>,
    unsynced: Vec<PersistToken>,
    /// The urgency of every write asked for, in order.
    urgencies: Vec<SyncUrgency>,
    /// Writes an answer came to wait for after they were asked for.
    hastened: Vec<PersistToken>,
}

const C: ReplyTo = ReplyTo(1);

impl Harness {
    fn new(config: ReplicaConfig) -> Self {
        let log = MemLog::default();
        Self {
            replica: Replica::new(config, log.clone()).unwrap(),
            log,
            replies: Vec::new(),
            unsynced: Vec::new(),
            urgencies: Vec::new(),
            hastened: Vec::new(),
        }
    }

    fn recover(log_bytes: Vec<u8>) -> (Self, RecoveryReport) {
        let log = MemLog(Rc::new(RefCell::new(log_bytes)));
        let bytes = log.0.borrow().clone();
        let (replica, report) =
            Replica::recover(ReplicaConfig::default(), &bytes, log.clone()).unwrap();
        log.0.borrow_mut().truncate(report.valid_len as usize);
        (
            Self {
                replica,
                log,
                replies: Vec::new(),
                unsynced: Vec::new(),
                urgencies: Vec::new(),
                hastened: Vec::new(),
            },
            report,
        )
    }

    fn drain(&mut self) {
        self.replica.check_invariants();
        while let Some(out) = self.replica.poll_output() {
            match out {
                ReplicaOutput::Reply { to, msg } => self.replies.push((to, msg)),
                ReplicaOutput::Persist {
                    token,
                    bytes,
                    urgency,
                } => {
                    self.log.0.borrow_mut().extend_from_slice(&bytes);
                    self.unsynced.push(token);
                    self.urgencies.push(urgency);
                }
                ReplicaOutput::Hasten { token } => self.hastened.push(token),
            }
        }
    }

    /// Sends a request and returns the answers that came at once.
    fn send(&mut self, msg: ParticipantRequest) -> Vec<ParticipantResponse> {
        self.replica.handle(
            0,
            ReplicaInput::Request {
                from: C,
                msg,
                to: None,
            },
        );
        self.drain();
        self.replies.drain(..).map(|(_, m)| m).collect()
    }

    /// Makes every write durable and returns the answers that were waiting for it.
    fn sync(&mut self) -> Vec<ParticipantResponse> {
        if let Some(&token) = self.unsynced.last() {
            self.unsynced.clear();
            self.replica.handle(0, ReplicaInput::Persisted { token });
            self.drain();
        }
        self.replies.drain(..).map(|(_, m)| m).collect()
    }
}

fn put(txid: TxId, key: &str, value: &str) -> ParticipantRequest {
    ParticipantRequest::Prepare {
        txid,
        key: key.into(),
        op: TxOp::Put {
            value: value.into(),
        },
    }
}

fn del(txid: TxId, key: &str) -> ParticipantRequest {
    ParticipantRequest::Prepare {
        txid,
        key: key.into(),
        op: TxOp::Del,
    }
}

fn get(key: &str) -> ParticipantRequest {
    ParticipantRequest::Get { key: key.into() }
}

fn commit(txid: TxId) -> ParticipantRequest {
    ParticipantRequest::Commit { txid }
}

fn abort(txid: TxId) -> ParticipantRequest {
    ParticipantRequest::Abort { txid }
}

fn value(key: &str, value: &str) -> ParticipantResponse {
    ParticipantResponse::Value {
        key: key.into(),
        value: value.into(),
    }
}

fn error_code(answers: &[ParticipantResponse]) -> Vec<ErrorCode> {
    answers
        .iter()
        .map(|a| match a {
            ParticipantResponse::Error(reply) => reply.code,
            ParticipantResponse::Refuse { code, .. } => *code,
            other => panic!("not an error: {other:?}"),
        })
        .collect()
}

const READY_1: ParticipantResponse = ParticipantResponse::Ready { txid: 1 };
const ACK_1: ParticipantResponse = ParticipantResponse::Ack { txid: 1 };

#[test]
fn ready_waits_for_the_prepare_record_and_ack_for_the_decision() {
    let mut h = Harness::new(ReplicaConfig::default());
    assert_eq!(h.send(put(1, "k", "v")), vec![]);
    assert_eq!(h.sync(), vec![READY_1]);
    // Prepared and undecided: invisible.
    assert_eq!(error_code(&h.send(get("k"))), vec![ErrorCode::NotFound]);
    assert_eq!(h.send(commit(1)), vec![]);
    // Not applied before the decision is durable.
    assert_eq!(error_code(&h.send(get("k"))), vec![ErrorCode::NotFound]);
    assert_eq!(h.sync(), vec![ACK_1]);
    assert_eq!(h.send(get("k")), vec![value("k", "v")]);
    assert_eq!(h.replica.in_doubt().count(), 0);
}

#[test]
fn a_vote_waits_for_an_urgent_sync_and_a_decision_for_a_deferrable_one() {
    let mut h = Harness::new(ReplicaConfig::default());
    assert_eq!(h.send(put(1, "k", "v")), vec![]);
    assert_eq!(h.send(put(2, "j", "w")), vec![]);
    h.sync();
    assert_eq!(h.send(commit(2)), vec![]);
    h.sync();
    assert_eq!(h.send(del(3, "j")), vec![]);
    assert_eq!(
        h.urgencies,
        [
            SyncUrgency::Now,
            SyncUrgency::Now,
            SyncUrgency::Deferrable,
            SyncUrgency::Now
        ]
    );
    h.urgencies.clear();
    h.sync();
    assert_eq!(h.send(commit(1)), vec![]);
    assert_eq!(h.send(abort(3)), vec![]);
    assert_eq!(h.urgencies, [SyncUrgency::Deferrable; 2]);
    // Deferrable or not, the acknowledgements still wait for the records.
    assert_eq!(h.sync(), vec![ACK_1, ParticipantResponse::Ack { txid: 3 }]);
}

#[test]
fn a_repeated_decision_hastens_its_record_until_it_is_durable() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.send(put(1, "k", "v"));
    h.sync();
    assert_eq!(h.send(commit(1)), vec![]);
    assert!(h.hastened.is_empty(), "nobody waits yet");
    let decision = *h.unsynced.last().unwrap();
    // The coordinator sent the decision again: an update of the key waits behind it.
    assert_eq!(h.send(commit(1)), vec![]);
    assert_eq!(h.hastened, vec![decision]);
    assert_eq!(h.sync(), vec![ACK_1, ACK_1]);
    assert_eq!(h.send(commit(1)), vec![ACK_1], "durable: answered at once");
    assert_eq!(h.hastened, vec![decision]);
}

#[test]
fn repeated_phase_two_is_idempotent_and_unknown_is_presumed_abort() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.send(put(1, "k", "v"));
    h.sync();
    h.send(commit(1));
    assert_eq!(
        h.send(commit(1)),
        vec![],
        "a repeat waits for the same decision"
    );
    assert_eq!(h.sync(), vec![ACK_1, ACK_1]);
    assert_eq!(h.send(commit(1)), vec![ACK_1]);
    assert_eq!(h.send(abort(1)), vec![ACK_1], "the first decision stands");
    assert_eq!(h.send(get("k")), vec![value("k", "v")]);
    assert_eq!(
        h.send(abort(77)),
        vec![ParticipantResponse::Ack { txid: 77 }]
    );
    assert_eq!(
        h.send(commit(78)),
        vec![ParticipantResponse::Ack { txid: 78 }]
    );
}

#[test]
fn a_prepare_arriving_after_its_abort_is_refused() {
    let mut h = Harness::new(ReplicaConfig::default());
    assert_eq!(h.send(abort(5)), vec![ParticipantResponse::Ack { txid: 5 }]);
    assert_eq!(
        error_code(&h.send(put(5, "k", "v"))),
        vec![ErrorCode::Aborted]
    );
    assert!(h.unsynced.is_empty());
    // The key was never locked.
    assert_eq!(h.send(put(6, "k", "w")), vec![]);
}

#[test]
fn a_refusal_is_remembered_and_repeated_even_after_the_key_changed() {
    let mut h = Harness::new(ReplicaConfig::default());
    assert_eq!(error_code(&h.send(del(1, "k"))), vec![ErrorCode::NotFound]);
    h.send(put(2, "k", "v"));
    h.sync();
    h.send(commit(2));
    h.sync();
    // The DEL's prepare arrives again (duplicated, delayed): same vote, no lock.
    assert_eq!(error_code(&h.send(del(1, "k"))), vec![ErrorCode::NotFound]);
    assert!(h.unsynced.is_empty());
    h.send(put(3, "k", "w"));
    assert_eq!(h.sync(), vec![ParticipantResponse::Ready { txid: 3 }]);
}

#[test]
fn a_locked_key_refuses_a_second_prepare_until_decided() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.send(put(1, "k", "v"));
    h.sync();
    let answers = h.send(put(2, "k", "w"));
    assert_eq!(error_code(&answers), vec![ErrorCode::Locked]);
    h.send(abort(1));
    assert_eq!(h.sync(), vec![ACK_1]);
    // The refused transaction stays refused; a new one goes through.
    assert_eq!(
        error_code(&h.send(put(2, "k", "w"))),
        vec![ErrorCode::Locked]
    );
    h.send(put(3, "k", "w"));
    assert_eq!(h.sync(), vec![ParticipantResponse::Ready { txid: 3 }]);
    // An abort changed nothing.
    assert_eq!(error_code(&h.send(get("k"))), vec![ErrorCode::NotFound]);
}

#[test]
fn delete_of_a_missing_key_votes_not_found_and_a_committed_delete_removes() {
    let mut h = Harness::new(ReplicaConfig::default());
    assert_eq!(error_code(&h.send(del(1, "k"))), vec![ErrorCode::NotFound]);
    h.send(put(2, "k", "v"));
    h.sync();
    h.send(commit(2));
    h.sync();
    h.send(del(3, "k"));
    assert_eq!(h.sync(), vec![ParticipantResponse::Ready { txid: 3 }]);
    h.send(commit(3));
    h.sync();
    assert_eq!(error_code(&h.send(get("k"))), vec![ErrorCode::NotFound]);
}

#[test]
fn limits_are_votes_to_abort_and_read_errors() {
    let mut h = Harness::new(ReplicaConfig::default());
    let long_key = "k".repeat(257);
    let big = "v".repeat(256 * 1024 + 1);
    assert_eq!(
        error_code(&h.send(put(1, "", "v"))),
        vec![ErrorCode::EmptyKey]
    );
    assert_eq!(
        error_code(&h.send(put(2, &long_key, &big))),
        vec![ErrorCode::KeyTooLong]
    );
    assert_eq!(
        error_code(&h.send(put(3, "k", &big))),
        vec![ErrorCode::ValueTooLarge]
    );
    assert_eq!(error_code(&h.send(get(""))), vec![ErrorCode::EmptyKey]);
    assert_eq!(
        error_code(&h.send(get(&long_key))),
        vec![ErrorCode::KeyTooLong]
    );
    assert!(h.unsynced.is_empty(), "refused prepares write nothing");
}

#[test]
fn prepares_beyond_the_limit_are_overloaded() {
    let mut h = Harness::new(ReplicaConfig {
        max_prepared: 1,
        ..ReplicaConfig::default()
    });
    h.send(put(1, "a", "v"));
    assert_eq!(
        error_code(&h.send(put(2, "b", "v"))),
        vec![ErrorCode::Overloaded]
    );
    assert_eq!(h.sync(), vec![READY_1]);
}

#[test]
fn values_come_back_from_the_log_when_the_cache_misses() {
    let mut h = Harness::new(ReplicaConfig {
        cache: CacheConfig { sets: 1, ways: 1 },
        ..ReplicaConfig::default()
    });
    for (txid, key) in [(1, "a"), (2, "b"), (3, "c")] {
        h.send(put(txid, key, &format!("value of {key}")));
        h.sync();
        h.send(commit(txid));
        h.sync();
    }
    for key in ["a", "b", "c", "a"] {
        assert_eq!(
            h.send(get(key)),
            vec![value(key, &format!("value of {key}"))]
        );
    }
}

#[test]
fn recovery_rebuilds_committed_values_and_in_doubt_locks() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.send(put(1, "a", "one"));
    h.sync();
    h.send(commit(1));
    h.sync();
    h.send(put(2, "b", "two"));
    h.sync();
    h.send(put(3, "c", "three"));
    h.sync();
    h.send(abort(3));
    h.sync();
    h.send(put(4, "a", "uno"));
    h.sync();
    h.send(commit(4));
    h.sync();
    let bytes = h.log.0.borrow().clone();

    let (mut h, report) = Harness::recover(bytes.clone());
    assert_eq!(report.stop, StopReason::End);
    assert_eq!(report.valid_len, bytes.len() as u64);
    assert_eq!(report.in_doubt, 1);
    assert!(report.anomalies.is_empty());
    assert_eq!(h.send(get("a")), vec![value("a", "uno")]);
    assert_eq!(error_code(&h.send(get("b"))), vec![ErrorCode::NotFound]);
    assert_eq!(error_code(&h.send(get("c"))), vec![ErrorCode::NotFound]);
    // The in-doubt transaction keeps its key locked until the decision comes again.
    assert_eq!(
        error_code(&h.send(put(9, "b", "x"))),
        vec![ErrorCode::Locked]
    );
    assert_eq!(
        h.send(put(2, "b", "two")),
        vec![ParticipantResponse::Ready { txid: 2 }],
        "a repeated prepare of the in-doubt transaction is still ready"
    );
    h.send(commit(2));
    assert_eq!(h.sync(), vec![ParticipantResponse::Ack { txid: 2 }]);
    assert_eq!(h.send(get("b")), vec![value("b", "two")]);
    // Appends after recovery land after the valid prefix and recover again.
    let bytes = h.log.0.borrow().clone();
    let (mut h, report) = Harness::recover(bytes);
    assert_eq!(report.in_doubt, 0);
    assert_eq!(h.send(get("b")), vec![value("b", "two")]);
}

#[test]
fn recovery_stops_at_a_torn_tail() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.send(put(1, "a", "one"));
    h.sync();
    h.send(commit(1));
    h.sync();
    let whole = h.log.0.borrow().len();
    h.send(put(2, "a", "two"));
    h.sync();
    h.send(commit(2));
    h.sync();
    let mut bytes = h.log.0.borrow().clone();
    // Where each of the four frames ends, read from the whole log, not from recovery.
    let ends = frame_ends(&bytes);
    assert_eq!(ends.len(), 4);
    for cut in whole..=bytes.len() {
        let (mut r, report) = Harness::recover(bytes[..cut].to_vec());
        let whole_frames: Vec<usize> = ends.iter().copied().filter(|&end| end <= cut).collect();
        let valid = whole_frames.last().copied().unwrap_or(0);
        assert_eq!(report.valid_len, valid as u64, "cut at {cut}");
        assert_eq!(report.records, whole_frames.len(), "cut at {cut}");
        // The second commit counts only once its frame is whole.
        let want = if whole_frames.len() == 4 {
            "two"
        } else {
            "one"
        };
        assert_eq!(r.send(get("a")), vec![value("a", want)], "cut at {cut}");
    }
    // A corrupt byte in the tail: the prefix before it survives.
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let (mut r, report) = Harness::recover(bytes);
    assert_eq!(report.stop, StopReason::BadChecksum);
    assert_eq!(report.in_doubt, 1);
    assert_eq!(r.send(get("a")), vec![value("a", "one")]);
}

#[test]
#[should_panic(expected = "out of order")]
fn a_persisted_token_never_asked_for_is_a_loud_bug() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.replica.handle(
        0,
        ReplicaInput::Persisted {
            token: PersistToken(3),
        },
    );
}

#[test]
fn work_addressed_to_another_server_is_refused_and_changes_nothing() {
    let mut h = Harness::new(ReplicaConfig {
        id: Some(7),
        ..ReplicaConfig::default()
    });
    let send_to = |h: &mut Harness, to: u64, msg: ParticipantRequest| {
        h.replica.handle(
            0,
            ReplicaInput::Request {
                from: C,
                msg,
                to: Some(to),
            },
        );
        h.drain();
        h.replies.drain(..).map(|(_, m)| m).collect::<Vec<_>>()
    };
    let answers = send_to(&mut h, 8, put(1, "k", "v"));
    assert!(matches!(
        answers[..],
        [ParticipantResponse::Refuse {
            txid: 1,
            code: ErrorCode::Refused,
            ..
        }]
    ));
    assert!(h.unsynced.is_empty(), "nothing was written");
    let answers = send_to(&mut h, 8, commit(1));
    assert!(
        matches!(&answers[..], [ParticipantResponse::Error(e)] if e.code == ErrorCode::Refused)
    );
    // The same transaction addressed to this server is new here: the refusal above was
    // not remembered as its decision.
    assert!(send_to(&mut h, 7, put(1, "k", "v")).is_empty());
    assert_eq!(h.sync(), vec![ParticipantResponse::Ready { txid: 1 }]);
}

#[test]
fn in_doubt_lists_the_prepared_undecided_transactions() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.send(put(4, "a", "1"));
    h.send(put(2, "b", "2"));
    h.sync();
    assert_eq!(
        h.send(ParticipantRequest::InDoubt),
        vec![ParticipantResponse::InDoubt { txids: vec![2, 4] }]
    );
    h.send(commit(2));
    h.sync();
    assert_eq!(
        h.send(ParticipantRequest::InDoubt),
        vec![ParticipantResponse::InDoubt { txids: vec![4] }]
    );
}

/// Recovers from `bytes` fed `chunk` bytes at a time, as a shell reading its log file
/// in chunks does: what a call did not take is fed again with the next bytes behind it.
fn recover_in_chunks(bytes: &[u8], chunk: usize) -> (Replica<MemLog>, RecoveryReport) {
    let log = MemLog(Rc::new(RefCell::new(bytes.to_vec())));
    let mut recovery = ReplicaRecovery::start(ReplicaConfig::default(), log).unwrap();
    let mut held: Vec<u8> = Vec::new();
    let mut read = 0;
    while !recovery.is_done() {
        let take = chunk.min(bytes.len() - read);
        held.extend_from_slice(&bytes[read..read + take]);
        read += take;
        let used = recovery.feed(&held, read == bytes.len());
        held.drain(..used);
        assert!(held.len() <= chunk + crate::log::MAX_PAYLOAD_BYTES);
    }
    let after = crate::log::after_prefix(bytes, recovery.decoded_to());
    recovery.finish(after)
}

/// What a replica holds, with every value read back from the log where the replica
/// says it lies (not from its cache): committed values, and the in-doubt transactions
/// with what they would write.
type State = (Vec<(String, String)>, Vec<(TxId, String, Option<String>)>);

fn state_of(replica: &Replica<MemLog>) -> State {
    let read = |loc: ValueLoc| {
        let bytes = replica
            .store
            .reader()
            .read_at(loc.offset, loc.len as usize)
            .unwrap();
        String::from_utf8(bytes).unwrap_or_else(|_| "<not UTF-8>".into())
    };
    let values = replica
        .store
        .entries()
        .map(|(key, loc)| (key.to_owned(), read(loc)))
        .collect();
    let in_doubt = replica
        .participant
        .prepared_ops()
        .map(|(txid, key, op)| {
            let value = match op {
                PreparedOp::Put { loc, value } => {
                    assert_eq!(&read(*loc), value, "a prepared value where it lies");
                    Some(value.clone())
                }
                PreparedOp::Del { .. } => None,
            };
            (txid, key.to_owned(), value)
        })
        .collect();
    (values, in_doubt)
}

proptest::proptest! {
    #[test]
    fn a_log_fed_in_chunks_recovers_to_the_same_state_as_whole(
        ops in proptest::collection::vec((0u8..5, 0u8..3, 1u64..8), 0..40),
        chunk in 1usize..80,
        damage in proptest::option::of((0usize..2000, proptest::bool::ANY)),
    ) {
        let mut h = Harness::new(ReplicaConfig::default());
        for (kind, key, txid) in ops {
            let key = format!("k{key}");
            let request = match kind {
                0 => put(txid, &key, &format!("v{txid}")),
                1 => del(txid, &key),
                2 | 3 => commit(txid),
                _ => abort(txid),
            };
            h.send(request);
            h.sync();
        }
        let mut bytes = h.log.0.borrow().clone();
        if let Some((at, flip)) = damage {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                if flip { bytes[at] ^= 0x5a } else { bytes.truncate(at) }
            }
        }
        let whole_log = MemLog(Rc::new(RefCell::new(bytes.clone())));
        let (whole, whole_report) =
            Replica::recover(ReplicaConfig::default(), &bytes, whole_log).unwrap();
        let (chunked, chunked_report) = recover_in_chunks(&bytes, chunk);
        proptest::prop_assert_eq!(&chunked_report, &whole_report);
        proptest::prop_assert_eq!(state_of(&chunked), state_of(&whole));
    }
}

/// Where each frame of `bytes` ends.
fn frame_ends(bytes: &[u8]) -> Vec<usize> {
    crate::log::decode_frames(bytes)
        .frames
        .iter()
        .map(|f| (f.payload_offset as usize) + f.payload.len())
        .collect()
}

/// A log written by a replica through random requests.
fn random_log(ops: &[(u8, u8, u64)]) -> Vec<u8> {
    let mut h = Harness::new(ReplicaConfig::default());
    for &(kind, key, txid) in ops {
        let key = format!("k{key}");
        let request = match kind {
            0 => put(
                txid,
                &key,
                &format!("v{txid}-{}", "x".repeat(txid as usize)),
            ),
            1 => del(txid, &key),
            2 | 3 => commit(txid),
            _ => abort(txid),
        };
        h.send(request);
        h.sync();
    }
    let bytes = h.log.0.borrow().clone();
    bytes
}

/// Compacts the part of `log` before `end` as a server does when it seals it: the plan
/// from the replica as it stood then. Returns the rewritten bytes and the moves.
fn compact_before(log: &[u8], end: usize) -> (Vec<u8>, Vec<compaction::Moved>) {
    let (sealed, _) = Harness::recover(log[..end].to_vec());
    let plan = sealed.replica.compaction_plan(end as u64);
    let mut out = Vec::new();
    let moves = compaction::write_compacted(
        &plan,
        0,
        |loc| {
            let at = loc.offset as usize;
            Ok::<_, ()>(String::from_utf8(log[at..at + loc.len as usize].to_vec()).unwrap())
        },
        |frame| {
            out.extend_from_slice(frame);
            Ok(())
        },
    )
    .unwrap();
    (out, moves)
}

proptest::proptest! {
    #[test]
    fn a_compacted_log_recovers_to_the_same_state_and_moved_values_read_back(
        ops in proptest::collection::vec((0u8..5, 0u8..4, 1u64..10), 0..60),
        cut in 0usize..1000,
    ) {
        let log = random_log(&ops);
        let mut boundaries = vec![0];
        boundaries.extend(frame_ends(&log));
        let end = boundaries[cut % boundaries.len()];
        let (compacted, moves) = compact_before(&log, end);
        proptest::prop_assert!(compacted.len() <= end, "never longer than what it replaces");

        // The log as the server keeps it: the rewritten part where the old one began,
        // a gap to `end`, and what followed `end`.
        let mut laid_out = compacted.clone();
        laid_out.resize(end, 0);
        laid_out.extend_from_slice(&log[end..]);
        let reader = MemLog(Rc::new(RefCell::new(laid_out.clone())));
        let mut recovery = ReplicaRecovery::start(ReplicaConfig::default(), reader.clone()).unwrap();
        let used = recovery.feed(&compacted, false);
        proptest::prop_assert_eq!(used, compacted.len());
        recovery.skip_to(end as u64);
        recovery.feed(&log[end..], true);
        let after = crate::log::AfterPrefix::TornTail;
        let (recovered, report) = recovery.finish(after);
        proptest::prop_assert_eq!(report.valid_len, log.len() as u64);
        proptest::prop_assert_eq!(report.stop, StopReason::End);

        let (mut original, _) = Harness::recover(log.clone());
        proptest::prop_assert_eq!(state_of(&recovered), state_of(&original.replica));

        // The running replica, told where its values went, reads them from the new
        // layout.
        let (mut running, _) = Harness::recover(log.clone());
        running.replica.relocate(0, end as u64, &moves);
        *running.log.0.borrow_mut() = laid_out;
        proptest::prop_assert_eq!(state_of(&running.replica), state_of(&original.replica));
        // And a commit of a transaction that was in doubt applies its moved value.
        let in_doubt: Vec<TxId> = running.replica.in_doubt().collect();
        for txid in in_doubt {
            running.send(commit(txid));
            running.sync();
            original.send(commit(txid));
            original.sync();
        }
        proptest::prop_assert_eq!(state_of(&running.replica), state_of(&original.replica));
    }
}
