//! A KV server's segmented log checked against a model of what it must keep.
//!
//! Random prepares (values large enough to seal a segment every few records), decisions,
//! merges in the background, and stops: clean, or a crash that loses the appends not
//! yet written. After every step the replica's state, read back through the log, is
//! what the model says was made durable. The fixed-scenario tests in `tests` check each
//! mechanism once; this one checks that they compose, whatever the order. A clean stop
//! that wrote its last appends over the segment's start (fixed once already) breaks
//! it at the first restart after one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ringkv_core::proto::{ErrorCode, ParticipantRequest, ParticipantResponse, TxId};
use ringkv_core::replica::ReplicaInput;
use ringkv_core::{ReplyTo, Role};

use super::tests::{del, put, Node};

/// Keys are few, so prepares collide on locks and deletes find their key.
const KEYS: u8 = 5;
/// With 4 KiB segments, a segment is sealed every few records.
const MAX_VALUE_BYTES: usize = 1200;

/// A request to the replica, as the test picks it.
#[derive(Clone, Debug)]
enum Request {
    Prepare {
        key: u8,
        value_bytes: usize,
        del: bool,
    },
    /// A decision for the in-doubt transaction `pick` selects, or, when `pick` lands
    /// past them, for a transaction already decided or never prepared.
    Decide { pick: usize, commit: bool },
}

/// One step of a run.
#[derive(Clone, Debug)]
enum Step {
    /// The request, carried to its durable end.
    Send(Request),
    /// The merge under way finishes and is taken.
    Settle,
    /// The server stops and starts again on its directory. `late` arrived just before
    /// and was appended, not yet written: a clean stop writes it, a crash loses it.
    Stop { late: Option<Request>, crash: bool },
}

/// What a prepare does once committed: a value, or a delete.
type Effect = (String, Option<String>);

/// What the log must give back.
#[derive(Default)]
struct Model {
    committed: BTreeMap<String, String>,
    in_doubt: BTreeMap<TxId, Effect>,
    next_txid: TxId,
}

/// A request as sent, the answer it must get, and what it changes once durable.
struct Planned {
    msg: ParticipantRequest,
    answer: Answer,
    change: Option<Change>,
}

#[derive(Debug, PartialEq)]
enum Answer {
    Ready(TxId),
    Refused(TxId, ErrorCode),
    Ack(TxId),
}

enum Change {
    Prepared(TxId, Effect),
    Decided(TxId, bool),
}

impl Model {
    fn plan(&mut self, request: &Request) -> Planned {
        match *request {
            Request::Prepare {
                key,
                value_bytes,
                del: is_del,
            } => self.plan_prepare(key, value_bytes, is_del),
            Request::Decide { pick, commit } => self.plan_decision(pick, commit),
        }
    }

    fn plan_prepare(&mut self, key: u8, value_bytes: usize, is_del: bool) -> Planned {
        self.next_txid += 1;
        let txid = self.next_txid;
        let key = format!("key{key}");
        let value = (!is_del).then(|| format!("{txid}:{}", "v".repeat(value_bytes)));
        let msg = match &value {
            Some(value) => put(txid, &key, value),
            None => del(txid, &key),
        };
        let locked = self.in_doubt.values().any(|(held, _)| *held == key);
        let refusal = if locked {
            Some(ErrorCode::Locked)
        } else if is_del && !self.committed.contains_key(&key) {
            Some(ErrorCode::NotFound)
        } else {
            None
        };
        match refusal {
            Some(code) => Planned {
                msg,
                answer: Answer::Refused(txid, code),
                change: None,
            },
            None => Planned {
                msg,
                answer: Answer::Ready(txid),
                change: Some(Change::Prepared(txid, (key, value))),
            },
        }
    }

    fn plan_decision(&mut self, pick: usize, commit: bool) -> Planned {
        let in_doubt: Vec<TxId> = self.in_doubt.keys().copied().collect();
        let (txid, change) = match in_doubt.get(pick % (in_doubt.len() + 1)) {
            Some(&txid) => (txid, Some(Change::Decided(txid, commit))),
            // Decided, refused, or (0) never used: answered `ack`, changing nothing.
            // (A decision ahead of its prepare is the core's tests' business.)
            None => {
                let txid = (pick as TxId) % (self.next_txid + 1);
                let txid = if self.in_doubt.contains_key(&txid) {
                    0
                } else {
                    txid
                };
                (txid, None)
            }
        };
        let msg = if commit {
            ParticipantRequest::Commit { txid }
        } else {
            ParticipantRequest::Abort { txid }
        };
        Planned {
            msg,
            answer: Answer::Ack(txid),
            change,
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Prepared(txid, effect) => {
                self.in_doubt.insert(txid, effect);
            }
            Change::Decided(txid, commit) => {
                let effect = self.in_doubt.remove(&txid);
                let Some((key, value)) = effect.filter(|_| commit) else {
                    return;
                };
                match value {
                    Some(value) => self.committed.insert(key, value),
                    None => self.committed.remove(&key),
                };
            }
        }
    }

    fn state(&self) -> (Vec<(String, String)>, Vec<TxId>) {
        let values = self.committed.clone().into_iter().collect();
        (values, self.in_doubt.keys().copied().collect())
    }
}

fn answer_of(reply: &ParticipantResponse) -> Option<Answer> {
    match reply {
        ParticipantResponse::Ready { txid } => Some(Answer::Ready(*txid)),
        ParticipantResponse::Refuse { txid, code, .. } => Some(Answer::Refused(*txid, *code)),
        ParticipantResponse::Ack { txid } => Some(Answer::Ack(*txid)),
        _ => None,
    }
}

fn node_state(node: &Node) -> (Vec<(String, String)>, Vec<TxId>) {
    let (mut values, mut in_doubt) = node.state();
    values.sort();
    in_doubt.sort_unstable();
    (values, in_doubt)
}

/// What a run saw, so that the whole test can insist its rare paths were taken.
#[derive(Default)]
struct Seen {
    merges: usize,
    late_records_kept: usize,
    late_records_lost: usize,
}

fn run(dir: &Path, steps: &[Step], seen: &mut Seen) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut node = Node::open(dir, true);
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Send(request) => {
                let planned = model.plan(request);
                node.send(planned.msg);
                let answers: Vec<Answer> = node
                    .replies
                    .drain(..)
                    .filter_map(|r| answer_of(&r))
                    .collect();
                prop_assert_eq!(&answers, &[planned.answer], "step {}: {:?}", i, step);
                if let Some(change) = planned.change {
                    model.apply(change);
                }
            }
            Step::Settle => node.settle(),
            Step::Stop { late, crash } => {
                node.settle();
                seen.merges += node.merges_taken;
                if let Some(request) = late {
                    let planned = model.plan(request);
                    let input = ReplicaInput::Request {
                        from: ReplyTo(1),
                        msg: planned.msg,
                        to: None,
                    };
                    node.replica.handle(0, input);
                    node.drain();
                    // An answer that needs no record is given at once; the others
                    // wait for a sync that never comes.
                    let answers: Vec<Answer> = node
                        .replies
                        .drain(..)
                        .filter_map(|r| answer_of(&r))
                        .collect();
                    let now: &[Answer] = match planned.change {
                        None => &[planned.answer],
                        Some(_) => &[],
                    };
                    prop_assert_eq!(&answers, now, "step {}", i);
                    let appended = !node.log.shared.borrow().bytes.is_empty();
                    prop_assert_eq!(appended, planned.change.is_some(), "step {}", i);
                    if *crash {
                        // Killed before the write: the bytes never reach the file.
                        node.log.shared.borrow_mut().bytes.clear();
                        seen.late_records_lost += usize::from(appended);
                    } else if let Some(change) = planned.change {
                        model.apply(change);
                        seen.late_records_kept += 1;
                    }
                }
                drop(node);
                node = Node::open(dir, true);
            }
        }
        prop_assert_eq!(
            node_state(&node),
            model.state(),
            "after step {}: {:?}",
            i,
            step
        );
    }
    node.settle();
    seen.merges += node.merges_taken;
    prop_assert_eq!(node_state(&node), model.state(), "at the end");
    Ok(())
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        3 => (0..KEYS, 0..=MAX_VALUE_BYTES, prop::bool::weighted(0.2))
            .prop_map(|(key, value_bytes, del)| Request::Prepare { key, value_bytes, del }),
        2 => (any::<usize>(), prop::bool::weighted(0.8))
            .prop_map(|(pick, commit)| Request::Decide { pick, commit }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        14 => request().prop_map(Step::Send),
        1 => Just(Step::Settle),
        2 => (proptest::option::weighted(0.7, request()), any::<bool>())
            .prop_map(|(late, crash)| Step::Stop { late, crash }),
    ]
}

#[test]
fn the_log_keeps_what_the_model_says_through_merges_stops_and_crashes() {
    let config = Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let seen = RefCell::new(Seen::default());
    let steps = proptest::collection::vec(step(), 1..90);
    let result = runner.run(&steps, |steps| {
        let tmp = tempfile::tempdir().map_err(|err| TestCaseError::fail(err.to_string()))?;
        run(tmp.path(), &steps, &mut seen.borrow_mut())
    });
    let seen = seen.into_inner();
    if let Err(err) = result {
        panic!("{err}");
    }
    // The runs took the paths this test exists for.
    assert!(seen.merges > 0, "no merge was taken in any run");
    assert!(
        seen.late_records_kept > 0,
        "no clean stop wrote a late record"
    );
    assert!(seen.late_records_lost > 0, "no crash lost a late record");
}
