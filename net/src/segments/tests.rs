use std::time::Duration;

use mio::{Events, Poll, Token};
use ringkv_core::proto::{ParticipantRequest, ParticipantResponse, TxId, TxOp};
use ringkv_core::replica::{Replica, ReplicaConfig, ReplicaInput, ReplicaOutput, ReplicaRecovery};
use ringkv_core::{ReplyTo, Role};

use super::*;
use crate::log_writes::PREALLOC_BYTES;

pub(super) const SEGMENT_BYTES: u64 = 4096;

/// A replica over a segmented log, driven as the server's loop drives it.
pub(super) struct Node {
    pub(super) replica: Replica<SegmentReader>,
    pub(super) log: SegmentedLog,
    poll: Poll,
    /// Whether finished merges are taken and new ones started.
    compacting: bool,
    /// Without compacting: the plan taken at the last seal.
    last_plan: Option<CompactionPlan>,
    /// The replica's answers, in order, for a test to take.
    pub(super) replies: Vec<ParticipantResponse>,
    /// How many merges were taken.
    pub(super) merges_taken: usize,
}

impl Node {
    pub(super) fn open(dir: &Path, compacting: bool) -> Node {
        let mut log = SegmentedLog::open(dir, SEGMENT_BYTES).unwrap();
        // A one-entry cache: reads go to the log, where merges moved the values.
        let config = ReplicaConfig {
            cache: ringkv_core::cache::CacheConfig { sets: 1, ways: 1 },
            ..ReplicaConfig::default()
        };
        let mut recovery = ReplicaRecovery::start(config, log.reader()).unwrap();
        let replayed = log.replay_into(&mut recovery).unwrap();
        let (replica, report) = recovery.finish(replayed.after);
        assert!(
            matches!(report.after, AfterPrefix::Zeros | AfterPrefix::TornTail),
            "{report:?}"
        );
        assert!(report.anomalies.is_empty(), "{report:?}");
        assert!(report.bad_record.is_none(), "{report:?}");
        log.start_appending(report.valid_len).unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        log.start_sync_thread(waker).unwrap();
        Node {
            replica,
            log,
            poll,
            compacting,
            last_plan: None,
            replies: Vec::new(),
            merges_taken: 0,
        }
    }

    /// One request, carried to its durable end.
    pub(super) fn send(&mut self, msg: ParticipantRequest) {
        let input = ReplicaInput::Request {
            from: ReplyTo(1),
            msg,
            to: None,
        };
        self.replica.handle(0, input);
        self.drain();
        self.begin_sync();
        let mut events = Events::with_capacity(4);
        while self.log.sync_thread.as_ref().is_some_and(SyncThread::busy) {
            if let Some(token) = self.log.finished_sync().unwrap() {
                self.replica.handle(0, ReplicaInput::Persisted { token });
                self.drain();
                self.begin_sync();
                continue;
            }
            self.poll
                .poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
        }
    }

    /// As the server's turn ends: hand the writes to the sync thread, then look at
    /// merges (a plan is taken right after a seal).
    fn begin_sync(&mut self) {
        self.log.begin_sync().unwrap();
        if self.compacting {
            self.compact();
        } else if let Some(end) = self.log.just_sealed.take() {
            self.last_plan = Some(self.replica.compaction_plan(end));
        }
    }

    pub(super) fn drain(&mut self) {
        while let Some(output) = self.replica.poll_output() {
            match output {
                ReplicaOutput::Persist {
                    token,
                    bytes,
                    urgency,
                } => self.log.append(token, &bytes, urgency),
                ReplicaOutput::Reply { msg, .. } => self.replies.push(msg),
                ReplicaOutput::Hasten { .. } => {}
            }
        }
    }

    fn compact(&mut self) {
        self.take_finished_merge();
        if let Some(end) = self.log.compaction_due() {
            let plan = self.replica.compaction_plan(end);
            self.log.start_compaction(plan).unwrap();
        }
    }

    /// Waits for the merge under way, if any, and takes it.
    pub(super) fn settle(&mut self) {
        for _ in 0..200 {
            if self.log.merging.is_none() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
            self.take_finished_merge();
        }
        panic!("a merge never finished");
    }

    fn take_finished_merge(&mut self) {
        if let Some(done) = self.log.finished_compaction() {
            self.replica.relocate(done.start, done.end, &done.moves);
            self.merges_taken += 1;
        }
    }

    /// Committed values (read from the log, not the cache) and in-doubt prepares.
    pub(super) fn state(&self) -> (Vec<(String, String)>, Vec<TxId>) {
        let reader = self.log.reader();
        let values = self
            .replica
            .committed_keys()
            .map(|key| {
                let value = self.replica.committed_value(key).unwrap().unwrap();
                (key.to_owned(), value)
            })
            .collect();
        drop(reader);
        (values, self.replica.in_doubt().collect())
    }
}

pub(super) fn put(txid: TxId, key: &str, value: &str) -> ParticipantRequest {
    ParticipantRequest::Prepare {
        txid,
        key: key.into(),
        op: TxOp::Put {
            value: value.into(),
        },
    }
}

pub(super) fn del(txid: TxId, key: &str) -> ParticipantRequest {
    ParticipantRequest::Prepare {
        txid,
        key: key.into(),
        op: TxOp::Del,
    }
}

/// Writes values over 20 keys, transactions `txids` (some deletes, some aborted),
/// far more than a segment; the last three stay in doubt.
fn write(node: &mut Node, txids: std::ops::RangeInclusive<u64>) {
    let last = *txids.end();
    for txid in txids {
        let key = format!("key{}", txid % 20);
        if txid % 17 == 0 {
            node.send(del(txid, &key));
        } else {
            node.send(put(txid, &key, &format!("{txid}:{}", "v".repeat(150))));
        }
        if txid % 23 == 0 {
            node.send(ParticipantRequest::Abort { txid });
        } else if txid + 3 <= last {
            node.send(ParticipantRequest::Commit { txid });
        }
    }
}

/// What `write` over `txids` commits, worked out from its rules alone (not read back
/// through the log): each key's last committed value, by key. `committed` says which
/// transactions were committed in the end.
fn expected_values(
    txids: std::ops::RangeInclusive<u64>,
    committed: impl Fn(u64) -> bool,
) -> Vec<(String, String)> {
    let mut values = std::collections::BTreeMap::new();
    for txid in txids.filter(|&txid| committed(txid)) {
        let key = format!("key{}", txid % 20);
        if txid % 17 == 0 {
            values.remove(&key);
        } else {
            values.insert(key, format!("{txid}:{}", "v".repeat(150)));
        }
    }
    values.into_iter().collect()
}

fn sorted(mut values: Vec<(String, String)>) -> Vec<(String, String)> {
    values.sort();
    values
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // In the log's order: the first segment's name, `wal.log`, sorts last by bytes.
    names.sort_by_key(|name| (parse_name(name).map(|(start, _)| start), name.clone()));
    names
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn a_log_past_many_segments_merges_in_the_background_and_recovers_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::open(tmp.path(), true);
    write(&mut node, 1..=600);
    node.settle();
    let state = node.state();
    assert!(state.0.len() > 15, "{state:?}");
    assert_eq!(state.1, [599, 600], "598 was aborted");
    let first = expected_values(1..=600, |txid| !txid.is_multiple_of(23) && txid + 3 <= 600);
    assert!(
        sorted(state.0.clone()) == first,
        "the merged segments hold what was written"
    );
    let written: u64 = 600 * 200;
    let on_disk = disk_bytes(tmp.path());
    assert!(
        on_disk < written / 4,
        "{on_disk} bytes on disk of {written} written: {:?}",
        files(tmp.path())
    );
    assert!(files(tmp.path()).len() <= 5, "{:?}", files(tmp.path()));
    drop(node);

    let mut node = Node::open(tmp.path(), true);
    assert_eq!(node.state(), state, "recovered from the merged segments");
    // Writes go on after the restart, and a later restart sees them too.
    for txid in 599..=600 {
        node.send(ParticipantRequest::Commit { txid });
    }
    write(&mut node, 601..=800);
    node.settle();
    let state = node.state();
    let committed = |txid: u64| !txid.is_multiple_of(23) && (txid <= 600 || txid + 3 <= 800);
    let second = expected_values(1..=800, committed);
    assert!(
        sorted(state.0.clone()) == second,
        "and what was written after the restart"
    );
    drop(node);
    assert_eq!(Node::open(tmp.path(), true).state(), state);
}

#[test]
fn appends_still_in_memory_at_a_clean_stop_land_after_the_log_not_over_its_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::open(tmp.path(), false);
    write(&mut node, 1..=5);
    let (values, mut in_doubt) = node.state();
    // A last prepare appended but not yet handed to the sync thread, as when the
    // process stops right after it arrived.
    let late = ReplicaInput::Request {
        from: ReplyTo(1),
        msg: put(6, "late", "v"),
        to: None,
    };
    node.replica.handle(0, late);
    node.drain();
    drop(node);
    // The log reopens whole: the late record was written after the others (never
    // acknowledged, it is in doubt), not over the start of the segment.
    let node = Node::open(tmp.path(), false);
    in_doubt.push(6);
    assert_eq!(node.state(), (values, in_doubt));
}

/// Stops a merge after `step`, as a crash there would, and checks that the log
/// recovers to the state it had.
fn crash_after(step: Option<Step>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::open(tmp.path(), false);
    write(&mut node, 1..=200);
    let state = node.state();
    let plan = node.last_plan.clone().expect("segments were sealed");
    let inputs: Vec<Input> = node
        .log
        .shared
        .borrow()
        .sealed
        .range(..plan.end)
        .map(|(&start, seg)| Input {
            start,
            len: seg.len,
            file: seg.file.try_clone().unwrap(),
            path: seg.path.clone(),
        })
        .collect();
    assert!(inputs.len() > 3, "several sealed segments");
    let merged = merge(tmp.path(), 0, &plan, &inputs, step);
    assert_eq!(merged.is_ok(), step.is_none());
    drop(node);
    let node = Node::open(tmp.path(), false);
    assert_eq!(node.state(), state, "after a stop at {step:?}");
    let names = files(tmp.path());
    assert!(!names.iter().any(|n| n == MERGE_TMP), "{names:?}");
    let merged_files = names.iter().filter(|n| n.matches('-').count() == 2).count();
    let expect_merged = usize::from(step.is_none_or(|step| step >= Step::Renamed));
    assert_eq!(merged_files, expect_merged, "{names:?}");
}

#[test]
fn a_crash_between_any_two_steps_of_installing_a_merge_recovers_the_same_state() {
    for step in [
        Some(Step::Written),
        Some(Step::Renamed),
        Some(Step::DirSynced),
        Some(Step::Deleted),
        None,
    ] {
        crash_after(step);
    }
}

/// Writes files of zeros named and sized as given into `dir`, and returns what
/// [`chain`] keeps of them: each one's start and where its part of the log ends.
fn chain_of<const N: usize>(dir: &Path, made: [(String, usize); N]) -> Vec<(u64, u64)> {
    for (name, len) in made {
        std::fs::write(dir.join(name), vec![0; len]).unwrap();
    }
    chain(dir)
        .unwrap()
        .iter()
        .map(|seg| (seg.start, seg.covers_end))
        .collect()
}

#[test]
fn names_parse_and_a_merged_file_replaces_what_it_covers() {
    assert_eq!(parse_name("wal.log"), Some((0, None)));
    assert_eq!(parse_name(&plain_name(42)), Some((42, None)));
    assert_eq!(parse_name(&merged_name(0, 42)), Some((0, Some(42))));
    assert_eq!(parse_name("wal-x.log"), None);
    assert_eq!(parse_name("id"), None);
    let tmp = tempfile::tempdir().unwrap();
    let files_made = [
        (plain_name(0), 100),
        (plain_name(100), 100),
        (merged_name(0, 200), 30),
        (plain_name(200), 10),
        (MERGE_TMP.to_owned(), 5),
    ];
    assert_eq!(chain_of(tmp.path(), files_made), [(0, 200), (200, 210)]);
    assert_eq!(files(tmp.path()), [merged_name(0, 200), plain_name(200)]);

    // A sealed segment whose cut was lost in a crash reaches past the next one's
    // start: it ends there, and covers nothing.
    let tmp = tempfile::tempdir().unwrap();
    let files_made = [
        (plain_name(0), 5000),
        (plain_name(100), 4000),
        (plain_name(200), 10),
    ];
    let kept = chain_of(tmp.path(), files_made);
    assert_eq!(kept, [(0, 100), (100, 200), (200, 210)]);
    assert_eq!(files(tmp.path()).len(), 3);
}

/// The verdict of recovery over the log in `dir`, and where bytes went missing.
fn replayed(dir: &Path) -> (u64, AfterPrefix, Option<u64>) {
    let log = SegmentedLog::open(dir, SEGMENT_BYTES).unwrap();
    let mut recovery = ReplicaRecovery::start(ReplicaConfig::default(), log.reader()).unwrap();
    let replayed = log.replay_into(&mut recovery).unwrap();
    let (_, report) = recovery.finish(replayed.after);
    (report.valid_len, replayed.after, replayed.missing_before)
}

#[test]
fn a_sealed_segment_cut_short_or_gone_is_damage_not_a_gap_to_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::open(tmp.path(), false);
    write(&mut node, 1..=60);
    drop(node);
    let names = files(tmp.path());
    assert!(names.len() >= 3, "several segments: {names:?}");
    let (whole, after, missing) = replayed(tmp.path());
    assert!(!after.is_corruption() && missing.is_none());
    let start_of = |name: &str| parse_name(name).unwrap().0;
    // The second segment cut short at a frame's end: its records from there on are
    // gone, and the log's valid part ends there.
    let second = tmp.path().join(&names[1]);
    let bytes = std::fs::read(&second).unwrap();
    let frames = ringkv_core::log::decode_frames(&bytes).frames;
    let keep = frames[frames.len() / 2].offset;
    let cut_at = start_of(&names[1]) + keep;
    OpenOptions::new()
        .write(true)
        .open(&second)
        .unwrap()
        .set_len(keep)
        .unwrap();
    let (valid_len, after, missing) = replayed(tmp.path());
    assert_eq!(valid_len, cut_at);
    assert!(after.is_corruption(), "{after:?}");
    assert_eq!(missing, Some(start_of(&names[2])));
    assert!(valid_len < whole);
    // The first segment gone: nothing of the log is valid.
    std::fs::remove_file(tmp.path().join(&names[0])).unwrap();
    let (valid_len, after, missing) = replayed(tmp.path());
    assert_eq!((valid_len, missing), (0, Some(start_of(&names[1]))));
    assert!(after.is_corruption(), "{after:?}");
    // The refusal names the missing bytes; cutting, as the operator may ask, keeps
    // nothing after them.
    let err = crate::logfile::refuse_missing(&second, 0, 7, false).unwrap_err();
    assert!(err.to_string().contains("up to byte 7"), "{err}");
    assert!(crate::logfile::refuse_missing(&second, 0, 7, true).is_ok());
}

#[test]
fn a_value_that_looks_like_a_frame_in_a_torn_last_batch_is_cut_as_torn() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::open(tmp.path(), false);
    write(&mut node, 1..=40);
    let state = node.state();
    drop(node);
    let names = files(tmp.path());
    assert!(names.len() > 1, "several segments: {names:?}");
    let last = tmp.path().join(names.last().unwrap());
    let end = ringkv_core::log::decode_frames(&std::fs::read(&last).unwrap()).valid_len;
    // An unsynced batch: a record whose value holds what looks like a frame of an
    // earlier version (which carries no mark). The crash lost the record's first bytes.
    let inner = b"a frame in a value";
    let len_word = (inner.len() as u32).to_le_bytes();
    let mut value = b"v".repeat(64);
    value.extend_from_slice(&len_word);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_word), inner);
    value.extend_from_slice(&crc.to_le_bytes());
    value.extend_from_slice(inner);
    let mut batch = Vec::new();
    ringkv_core::log::encode_frame(&value, &mut batch);
    ringkv_core::log::stamp_frames(&mut batch, 0);
    batch[..32].fill(0);
    let file = OpenOptions::new().write(true).open(&last).unwrap();
    file.write_all_at(&batch, end).unwrap();
    drop(file);
    // Node::open asserts the bytes after the frames are a torn tail, not corruption.
    let node = Node::open(tmp.path(), false);
    assert_eq!(node.state(), state);
}

#[test]
fn sealed_segments_whose_allocated_space_was_not_cut_recover_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::open(tmp.path(), false);
    write(&mut node, 1..=120);
    let state = node.state();
    drop(node);
    // As a crash that lost each seal's cut leaves them: space allocated ahead,
    // zeros, past every sealed segment's records.
    let names = files(tmp.path());
    assert!(names.len() > 3, "several segments: {names:?}");
    for name in &names[..names.len() - 1] {
        let file = OpenOptions::new()
            .write(true)
            .open(tmp.path().join(name))
            .unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len + PREALLOC_BYTES).unwrap();
    }
    let mut node = Node::open(tmp.path(), false);
    assert_eq!(
        node.state(),
        state,
        "every segment read to the next one's start"
    );
    assert_eq!(files(tmp.path()), names, "no segment taken for merged away");
    // Appends go on, and a merge over the long files keeps the state too.
    write(&mut node, 121..=200);
    let state = node.state();
    drop(node);
    let mut node = Node::open(tmp.path(), true);
    assert_eq!(node.state(), state);
    write(&mut node, 201..=300);
    node.settle();
    let state = node.state();
    drop(node);
    assert_eq!(Node::open(tmp.path(), true).state(), state);
}
