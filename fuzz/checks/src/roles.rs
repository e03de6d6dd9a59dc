//! Recovery of the coordinator, an eventual-mode node and a peer-mode node from arbitrary
//! log bytes (the KV server's replica has its own, model-checked target, `log`).
//!
//! Each input is used twice: as the log's bytes, and as payloads (cut at 0xFF bytes)
//! framed with valid checksums, so that the records' decoders and the replay steps are
//! reached past the framing. For each role, recovery must not panic (the roles check
//! their invariants at its end), and its report must agree with the framing: the valid
//! prefix ends at the first payload that is no record, else where the frames end; a
//! role that refuses the log (a coordinator's log for another ring size) refuses it
//! with an error. An eventual or peer node that recovered is then compacted (when its
//! values read back), and a node recovered from the compacted log must hold the same
//! keys and values (and, for a peer node, the same transactions in doubt).

use ringkv_core::coordinator::record::CoordinatorRecord;
use ringkv_core::coordinator::{Coordinator, CoordinatorConfig};
use ringkv_core::eventual::record::Record as EventualRecord;
use ringkv_core::eventual::{parse_cluster, KeyState, Node, NodeConfig};
use ringkv_core::log::{decode_frames, encode_frame};
use ringkv_core::peer::record::PeerRecord;
use ringkv_core::peer::{Peer, PeerConfig};
use ringkv_core::storage::{LogReader, LogRecord, StorageError};

/// The log's bytes, for the roles that read values back.
#[derive(Clone, Copy)]
struct MemLog<'a>(&'a [u8]);

impl LogReader for MemLog<'_> {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let start = usize::try_from(offset).map_err(|_| StorageError("offset".into()))?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| StorageError("range".into()))?;
        self.0
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StorageError(format!("{start}..{end} past the log")))
    }
}

/// Where the first frame whose payload the role's own decoder `R` refuses starts, and how
/// many records come before it.
fn first_bad_record<R: LogRecord>(log: &[u8]) -> (Option<u64>, usize) {
    let frames = decode_frames(log).frames;
    match frames
        .iter()
        .position(|frame| R::decode(frame.payload).is_err())
    {
        Some(index) => (frames.get(index).map(|frame| frame.offset), index),
        None => (None, frames.len()),
    }
}

/// What a role's recovery reports of its log's valid prefix.
struct Prefix {
    valid_len: u64,
    records: usize,
    bad_record_at: Option<u64>,
}

impl Prefix {
    /// From a recovery report's fields, whatever the role's record error type.
    fn of<E>(valid_len: u64, records: usize, bad_record: &Option<(u64, E)>) -> Self {
        let bad_record_at = bad_record.as_ref().map(|(at, _)| *at);
        Self {
            valid_len,
            records,
            bad_record_at,
        }
    }
}

/// The bad record recovery reports is the first payload that is no record of `R`, every
/// record before it was replayed, and the valid prefix ends there (else where the frames
/// end): recovery neither cuts a log at a good record nor reads past a bad one.
fn check_prefix<R: LogRecord>(log: &[u8], reported: Prefix, role: &str) {
    let (first_bad, good) = first_bad_record::<R>(log);
    assert_eq!(
        reported.bad_record_at, first_bad,
        "{role}: the bad record is the first payload its decoder refuses"
    );
    assert_eq!(
        reported.records, good,
        "{role}: every record before it is replayed"
    );
    let framed = decode_frames(log).valid_len;
    let expected = first_bad.unwrap_or(framed);
    assert_eq!(
        reported.valid_len, expected,
        "{role}: where the valid prefix ends"
    );
}

fn recover_coordinator(log: &[u8]) {
    match Coordinator::recover(CoordinatorConfig::new(2), log) {
        Ok((_, report)) => {
            let prefix = Prefix::of(report.valid_len, report.records, &report.bad_record);
            check_prefix::<CoordinatorRecord>(log, prefix, "coordinator");
        }
        // The three refusals recovery documents; anything else is a bug.
        Err(err) => assert!(
            err.0.contains("belongs to a ring of")
                || err.0.contains("no transaction IDs are left")
                || err.0.contains("transactions under way, more than"),
            "coordinator: an unexpected refusal: {err:?}"
        ),
    }
}

fn recover_eventual(log: &[u8]) {
    let cluster = parse_cluster("1 127.0.0.1:7001\n2 127.0.0.1:7002\n3 127.0.0.1:7003\n", 1)
        .expect("the cluster is valid");
    let config = NodeConfig::new(1, cluster, 1, 7);
    let (node, report) = match Node::recover(config.clone(), log, MemLog(log)) {
        Ok(recovered) => recovered,
        Err(err) => panic!("the eventual node refused its settings: {err}"),
    };
    let prefix = Prefix::of(report.valid_len, report.records, &report.bad_record);
    check_prefix::<EventualRecord>(log, prefix, "eventual node");
    let Ok(compacted) = node.compaction_log() else {
        return;
    };
    let (again, report) = Node::recover(config, &compacted.bytes, MemLog(&compacted.bytes))
        .expect("a compacted log recovers");
    assert!(
        report.bad_record.is_none() && report.anomalies.is_empty(),
        "eventual node: a compacted log recovers cleanly: {report:?}"
    );
    let states = |node: &Node<MemLog>| -> Vec<(String, Option<KeyState>)> {
        let keys: Vec<String> = node.keys().map(str::to_owned).collect();
        keys.into_iter()
            .map(|key| {
                let state = node.local_state(&key);
                (key, state)
            })
            .collect()
    };
    assert_eq!(
        states(&again),
        states(&node),
        "eventual node: compaction changed a state"
    );
}

fn recover_peer(log: &[u8]) {
    let nodes = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", 7000 + id)))
        .collect();
    let config = PeerConfig::new(1, nodes);
    let (peer, report) = match Peer::recover(config.clone(), 0, log, MemLog(log)) {
        Ok(recovered) => recovered,
        // A log at the last epoch: no transaction ID is left to issue.
        Err(err) if err.0.contains("no transaction IDs left") => return,
        Err(err) => panic!("the peer node refused its settings: {err:?}"),
    };
    let prefix = Prefix::of(report.valid_len, report.records, &report.bad_record);
    check_prefix::<PeerRecord>(log, prefix, "peer node");
    let Ok(compacted) = peer.compacted_log() else {
        return;
    };
    let recovered = Peer::recover(config, 0, &compacted.bytes, MemLog(&compacted.bytes));
    let Ok((again, report)) = recovered else {
        panic!(
            "a compacted peer log does not recover: {recovered:?}",
            recovered = recovered.err()
        );
    };
    assert!(
        report.bad_record.is_none(),
        "peer node: a compacted log recovers cleanly: {report:?}"
    );
    let values = |peer: &Peer<MemLog>| -> Vec<(String, Option<String>)> {
        let keys: Vec<String> = peer.committed_keys().map(str::to_owned).collect();
        keys.into_iter()
            .map(|key| {
                let value = peer.committed_value(&key).ok().flatten();
                (key, value)
            })
            .collect()
    };
    assert_eq!(
        values(&again),
        values(&peer),
        "peer node: compaction changed a value"
    );
    let in_doubt = |peer: &Peer<MemLog>| peer.in_doubt().collect::<Vec<_>>();
    assert_eq!(
        in_doubt(&again),
        in_doubt(&peer),
        "peer node: compaction changed what is in doubt"
    );
}

fn recover_all(log: &[u8]) {
    recover_coordinator(log);
    recover_eventual(log);
    recover_peer(log);
}

/// Runs every check of this target on one input; panics on a violation.
pub fn check(data: &[u8]) {
    recover_all(data);
    let mut framed = Vec::new();
    for payload in data.split(|&b| b == 0xFF) {
        encode_frame(payload, &mut framed);
    }
    recover_all(&framed);
}
