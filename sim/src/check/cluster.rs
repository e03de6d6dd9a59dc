//! Checks of the cluster's final state: both replicas of every key agree, no server holds
//! a key it does not replicate, nothing is left half done; and liveness: once the faults
//! stopped and the cluster settled, every operation succeeded in time.

use std::collections::BTreeMap;

use ringkv_core::ring::Ring;
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
    /// Transactions the coordinator still has open.
    pub open_transactions: usize,
}

/// Checks that both replicas of each key agree and that no server holds a key it does not
/// replicate. Returns every key's final value, or the list of disagreements.
pub fn check_agreement(
    snapshot: &ClusterSnapshot,
    keys: &[String],
) -> Result<BTreeMap<String, Option<String>>, Vec<String>> {
    let ring: Ring = snapshot.servers.keys().copied().collect();
    let mut problems = Vec::new();
    let mut finals = BTreeMap::new();
    let value_on = |id: u64, key: &str| -> Result<Option<String>, String> {
        match snapshot.servers.get(&id) {
            Some(Some(server)) => Ok(server.values.get(key).cloned()),
            _ => Err(format!("server {id} is not running")),
        }
    };
    for key in keys {
        let Some(pair) = ring.replicas_for_key(key) else {
            return Err(vec!["the ring has fewer than two servers".into()]);
        };
        match (value_on(pair.primary, key), value_on(pair.secondary, key)) {
            (Ok(a), Ok(b)) if a == b => {
                finals.insert(key.clone(), a);
            }
            (a, b) => problems.push(format!(
                "replicas of {key:?} differ: server {} has {a:?}, server {} has {b:?}",
                pair.primary, pair.secondary
            )),
        }
    }
    for (&id, server) in &snapshot.servers {
        for key in server.iter().flat_map(|s| s.values.keys()) {
            let replicates = ring
                .replicas_for_key(key)
                .is_some_and(|p| p.primary == id || p.secondary == id);
            if !replicates {
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
            open_transactions: 0,
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
    }
}
