//! Checks of the cluster's final state: every replica of every key agrees, no server holds
//! a key it does not replicate, nothing is left half done; and liveness: once the faults
//! stopped and the cluster settled, every operation succeeded in time. A key's replicas
//! are the first `replication` servers of the ring walk from its position, so the checks
//! hold for any replication factor.

use std::collections::BTreeMap;

use ringkv_core::ring::{key_position, Ring};
use ringkv_core::Ts;

use crate::history::{History, Outcome};

/// One KV server as the run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSnapshot {
    /// Every committed key and value.
    pub values: BTreeMap<String, String>,
    /// Transactions prepared and undecided.
    pub in_doubt: Vec<u64>,
}

/// The cluster as the run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// Every server of the ring; `None` for one that is not running.
    pub servers: BTreeMap<u64, Option<ServerSnapshot>>,
    /// How many servers hold each key.
    pub replication: usize,
    /// Transactions the coordinator still has open.
    pub open_transactions: usize,
    /// Client requests still held behind earlier ones of their connection.
    pub held_requests: usize,
    /// Nodes off the ring (a coordinator) that are not running.
    pub stopped: Vec<String>,
}

/// The replica set of `key`: the first `n` distinct servers met walking the ring
/// clockwise from the key's position (fewer if the ring is smaller).
pub fn replica_set(ring: &Ring, key: &str, n: usize) -> Vec<u64> {
    let mut set = Vec::new();
    let mut next = ring.owner(key_position(key));
    while let Some(id) = next {
        if set.len() == n || set.contains(&id) {
            break;
        }
        set.push(id);
        next = ring.successor(id);
    }
    set
}

/// Checks that every replica of each key holds the same value and that no server holds a
/// key it does not replicate. Returns every key's final value, or the disagreements.
pub fn check_agreement(
    snapshot: &ClusterSnapshot,
    keys: &[String],
) -> Result<BTreeMap<String, Option<String>>, Vec<String>> {
    let ring: Ring = snapshot.servers.keys().copied().collect();
    if snapshot.replication < 1 || ring.len() < snapshot.replication {
        return Err(vec![format!(
            "{} servers cannot hold {} replicas",
            ring.len(),
            snapshot.replication
        )]);
    }
    let mut problems = Vec::new();
    let mut finals = BTreeMap::new();
    for key in keys {
        match agreed_value(
            snapshot,
            &replica_set(&ring, key, snapshot.replication),
            key,
        ) {
            Ok(value) => {
                finals.insert(key.clone(), value);
            }
            Err(problem) => problems.push(problem),
        }
    }
    for (&id, server) in &snapshot.servers {
        for key in server.iter().flat_map(|s| s.values.keys()) {
            if !replica_set(&ring, key, snapshot.replication).contains(&id) {
                problems.push(format!(
                    "server {id} holds {key:?}, which it does not replicate"
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(finals)
    } else {
        Err(problems)
    }
}

/// The one value every server of `replicas` holds for `key`, or what each holds.
fn agreed_value(
    snapshot: &ClusterSnapshot,
    replicas: &[u64],
    key: &str,
) -> Result<Option<String>, String> {
    let held: Vec<(u64, Result<Option<String>, &str>)> = replicas
        .iter()
        .map(|&id| match snapshot.servers.get(&id) {
            Some(Some(server)) => (id, Ok(server.values.get(key).cloned())),
            _ => (id, Err("not running")),
        })
        .collect();
    let first = held.first().map(|(_, value)| value.clone());
    match first {
        Some(Ok(value)) if held.iter().all(|(_, v)| v.as_ref() == Ok(&value)) => Ok(value),
        _ => {
            let each: Vec<String> = held
                .iter()
                .map(|(id, value)| format!("server {id} has {value:?}"))
                .collect();
            Err(format!("replicas of {key:?} differ: {}", each.join(", ")))
        }
    }
}

/// Checks that every operation invoked in `window` (from the moment the cluster settled
/// after the faults stopped, to the moment clients stopped) got a successful answer, and
/// that the run ended with no transaction open or in doubt.
pub fn check_liveness(
    history: &History,
    window: std::ops::Range<Ts>,
    snapshot: &ClusterSnapshot,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let stuck: Vec<String> = history
        .operations()
        .iter()
        .filter(|op| window.contains(&op.invoke_ms))
        .filter(|op| {
            op.complete_ms.is_none()
                || !matches!(
                    op.outcome,
                    Outcome::Found(_) | Outcome::NotFound | Outcome::Done
                )
        })
        .map(|op| {
            format!(
                "op {} (client {}, {:?} {:?}, invoked at {} ms) ended {:?}",
                op.index, op.client, op.command, op.key, op.invoke_ms, op.outcome
            )
        })
        .collect();
    if !stuck.is_empty() {
        problems.push(format!(
            "{} operations after the faults stopped did not succeed in time:\n  {}",
            stuck.len(),
            stuck
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    if snapshot.held_requests > 0 {
        problems.push(format!(
            "{} client requests still held behind earlier ones",
            snapshot.held_requests
        ));
    }
    for node in &snapshot.stopped {
        problems.push(format!("{node} is not running"));
    }
    if snapshot.open_transactions > 0 {
        problems.push(format!(
            "{} transactions still open at the coordinator",
            snapshot.open_transactions
        ));
    }
    for (id, server) in &snapshot.servers {
        match server {
            None => problems.push(format!("server {id} is not running")),
            Some(s) if !s.in_doubt.is_empty() => problems.push(format!(
                "server {id} still holds transactions in doubt: {:?}",
                s.in_doubt
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Peer mode's liveness: as [`check_liveness`], except that an update may be answered
/// `aborted` (it met other updates of its key until its timeout was spent), and instead
/// updates must keep succeeding: in the window, every key that was updated saw an update
/// succeed, and at least half of all answered updates succeeded (no livelock).
pub fn check_progress(
    history: &History,
    window: std::ops::Range<Ts>,
    snapshot: &ClusterSnapshot,
) -> Result<(), Vec<String>> {
    let mut contended = History::new();
    let mut problems = Vec::new();
    let (mut done, mut aborted) = (0usize, 0usize);
    let mut keys: BTreeMap<&str, bool> = BTreeMap::new();
    for op in history.operations() {
        let in_window = window.contains(&op.invoke_ms);
        let update = op.command != crate::history::Command::Get;
        if in_window && update && op.complete_ms.is_some() {
            let succeeded = matches!(op.outcome, Outcome::Done | Outcome::NotFound);
            *keys.entry(&op.key).or_default() |= succeeded;
            done += usize::from(succeeded);
            aborted += usize::from(history.was_aborted(op.index));
        }
        // What liveness judges: everything but the updates aborted under contention.
        let index = contended.invoke(op.client, &op.key, op.command.clone(), op.invoke_ms);
        if let Some(at) = op.complete_ms {
            let outcome = if history.was_aborted(op.index) {
                Outcome::Done
            } else {
                op.outcome.clone()
            };
            contended.complete(index, outcome, at);
        }
    }
    if let Err(more) = check_liveness(&contended, window, snapshot) {
        problems.extend(more);
    }
    for (key, succeeded) in keys {
        if !succeeded {
            problems.push(format!(
                "no update of {key:?} succeeded after the faults stopped"
            ));
        }
    }
    if aborted > done {
        problems.push(format!(
            "after the faults stopped {aborted} updates were aborted and only {done} succeeded"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Command;

    fn server(values: &[(&str, &str)]) -> Option<ServerSnapshot> {
        Some(ServerSnapshot {
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            in_doubt: Vec::new(),
        })
    }

    /// A ring of 10, 20, 30: every key of these tests lands past 30, so on 10 then 20.
    fn snapshot(s10: Option<ServerSnapshot>, s20: Option<ServerSnapshot>) -> ClusterSnapshot {
        ClusterSnapshot {
            servers: [(10, s10), (20, s20), (30, server(&[]))].into(),
            replication: 2,
            ..ClusterSnapshot::default()
        }
    }

    fn keys() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn agreeing_replicas_give_the_final_values() {
        let ring: Ring = [10, 20, 30].into_iter().collect();
        for key in keys() {
            let pair = ring.replicas_for_key(&key).unwrap();
            assert_eq!(
                (pair.primary, pair.secondary),
                (10, 20),
                "test assumes {key}"
            );
        }
        let snap = snapshot(server(&[("a", "1")]), server(&[("a", "1")]));
        let finals = check_agreement(&snap, &keys()).unwrap();
        assert_eq!(finals.get("a"), Some(&Some("1".to_string())));
        assert_eq!(finals.get("b"), Some(&None));
    }

    #[test]
    fn differing_replicas_are_reported() {
        let snap = snapshot(server(&[("a", "1")]), server(&[("a", "2")]));
        let err = check_agreement(&snap, &keys()).unwrap_err();
        assert!(err[0].contains("replicas of \"a\" differ"), "{err:?}");
        let snap = snapshot(server(&[("a", "1")]), server(&[]));
        assert!(
            check_agreement(&snap, &keys()).is_err(),
            "one replica lacks the key"
        );
    }

    #[test]
    fn a_key_on_a_server_that_does_not_replicate_it_is_reported() {
        let mut snap = snapshot(server(&[]), server(&[]));
        snap.servers.insert(30, server(&[("a", "1")]));
        let err = check_agreement(&snap, &keys()).unwrap_err();
        assert!(err[0].contains("server 30 holds \"a\""), "{err:?}");
    }

    #[test]
    fn a_stopped_replica_cannot_agree() {
        let snap = snapshot(server(&[]), None);
        assert!(check_agreement(&snap, &keys()).is_err());
    }

    #[test]
    fn replica_sets_walk_the_ring_and_wrap() {
        let ring: Ring = [10, 20, 30].into_iter().collect();
        let key = "a";
        assert!(key_position(key) > 30, "test assumes {key} lands past 30");
        assert_eq!(replica_set(&ring, key, 1), vec![10]);
        assert_eq!(replica_set(&ring, key, 2), vec![10, 20]);
        assert_eq!(replica_set(&ring, key, 3), vec![10, 20, 30]);
        assert_eq!(
            replica_set(&ring, key, 5),
            vec![10, 20, 30],
            "capped by the ring"
        );
        // A key whose position equals an ID lands on that ID.
        let at = key_position(key);
        let ring: Ring = [5, at, u64::MAX].into_iter().collect();
        assert_eq!(replica_set(&ring, key, 2), vec![at, u64::MAX]);
        assert_eq!(replica_set(&ring, key, 3), vec![at, u64::MAX, 5]);
        let ring: Ring = [5, at - 1].into_iter().collect();
        assert_eq!(
            replica_set(&ring, key, 2),
            vec![5, at - 1],
            "wraps past the largest"
        );
        assert_eq!(
            replica_set(&ring, key, 2),
            {
                let pair = ring.replicas_for_key(key).unwrap();
                vec![pair.primary, pair.secondary]
            },
            "two replicas are the core's pair"
        );
    }

    #[test]
    fn with_three_replicas_all_three_must_agree() {
        let mut snap = snapshot(server(&[("a", "1")]), server(&[("a", "1")]));
        snap.replication = 3;
        let err = check_agreement(&snap, &keys()).unwrap_err();
        assert!(err[0].contains("server 30 has Ok(None)"), "{err:?}");
        snap.servers.insert(30, server(&[("a", "1")]));
        let finals = check_agreement(&snap, &keys()).unwrap();
        assert_eq!(finals.get("a"), Some(&Some("1".to_string())));
        snap.replication = 2;
        let err = check_agreement(&snap, &keys()).unwrap_err();
        assert!(err[0].contains("server 30 holds \"a\""), "{err:?}");
        snap.replication = 4;
        assert!(
            check_agreement(&snap, &keys()).is_err(),
            "more replicas than servers"
        );
    }

    fn history() -> History {
        let mut h = History::new();
        // Before the window: failures are allowed.
        let early = h.invoke(0, "a", Command::Get, 10);
        h.complete(early, Outcome::Failed, 20);
        let _lost_early = h.invoke(1, "a", Command::Del, 30);
        let ok = h.invoke(0, "a", Command::Put { value: "v".into() }, 100);
        h.complete(ok, Outcome::Done, 110);
        h
    }

    #[test]
    fn liveness_accepts_success_in_the_window() {
        let snap = snapshot(server(&[]), server(&[]));
        assert_eq!(check_liveness(&history(), 100..200, &snap), Ok(()));
    }

    #[test]
    fn liveness_rejects_failures_and_silence_in_the_window() {
        let snap = snapshot(server(&[]), server(&[]));
        let mut failed = history();
        let op = failed.invoke(2, "a", Command::Get, 150);
        failed.complete(op, Outcome::Failed, 160);
        assert!(check_liveness(&failed, 100..200, &snap).is_err());
        let mut silent = history();
        silent.invoke(2, "a", Command::Get, 150);
        assert!(check_liveness(&silent, 100..200, &snap).is_err());
    }

    #[test]
    fn liveness_rejects_leftovers() {
        let mut open = snapshot(server(&[]), server(&[]));
        open.open_transactions = 1;
        assert!(check_liveness(&history(), 100..200, &open).is_err());
        let mut doubt = snapshot(server(&[]), server(&[]));
        doubt.servers.insert(
            30,
            Some(ServerSnapshot {
                values: BTreeMap::new(),
                in_doubt: vec![7],
            }),
        );
        assert!(check_liveness(&history(), 100..200, &doubt).is_err());
        let down = snapshot(server(&[]), None);
        assert!(check_liveness(&history(), 100..200, &down).is_err());
        let mut held = snapshot(server(&[]), server(&[]));
        held.held_requests = 1;
        assert!(check_liveness(&history(), 100..200, &held).is_err());
        let mut stopped = snapshot(server(&[]), server(&[]));
        stopped.stopped.push("coordinator".into());
        assert!(check_liveness(&history(), 100..200, &stopped).is_err());
    }
}
