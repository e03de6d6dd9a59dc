//! Program order on a connection, judged from what the serving node saw. Requests
//! pipelined on one connection must take effect in order where they conflict (on one key,
//! at least one a write). Two checks together show it:
//! - [`check_program_order`]: each such request reached the core only after the core
//!   answered the earlier one;
//! - linearizability of [`served_history`], where each operation spans only the time the
//!   core held it, so that "answered before the next was handed over" becomes real-time
//!   order, which a linearization must respect.
//!
//! The client's own history cannot show this: a pipelined request is invoked before the
//! answer to the one ahead of it, so the two overlap and may be linearized either way.

use std::collections::BTreeMap;

use ringkv_core::Ts;

use crate::history::{Command, History, ServedLog};

/// The history as the serving side saw it: every operation that reached a core spans
/// from when the core got it to when the core answered it, with that answer (even if the
/// client never received it). Operations that never reached a core stay open from their
/// invocation: they may never have happened. Indices match the client's history; times
/// are stamps (milliseconds times 1000, see [`crate::history::Served`]).
pub fn served_history(history: &History, served: &ServedLog) -> History {
    let mut out = History::new();
    for op in history.operations() {
        let Some(seen) = served.get(&op.index) else {
            out.invoke(op.client, &op.key, op.command.clone(), op.invoke_ms * 1000);
            continue;
        };
        let index = out.invoke(op.client, &op.key, op.command.clone(), seen.dispatched);
        if let Some((answered, outcome)) = &seen.answered {
            out.complete(index, outcome.clone(), *answered);
        }
    }
    out
}

/// The latest answers so far on one connection and key.
#[derive(Default)]
struct Latest {
    /// The latest answer to any request: a write must wait for it.
    any: Option<(Ts, usize)>,
    /// The latest answer to a write: a read must wait for it.
    write: Option<(Ts, usize)>,
}

/// Checks that on every client's connection, each request reached the core only after
/// every earlier request on its key that it conflicts with was answered. Requests that
/// never reached a core, or were never answered (their node crashed), order nothing.
pub fn check_program_order(history: &History, served: &ServedLog) -> Result<(), Vec<String>> {
    let mut latest: BTreeMap<(u32, &str), Latest> = BTreeMap::new();
    let mut problems = Vec::new();
    for op in history.operations() {
        let Some(seen) = served.get(&op.index) else {
            continue;
        };
        let write = op.command != Command::Get;
        let entry = latest.entry((op.client, op.key.as_str())).or_default();
        let must_follow = if write { entry.any } else { entry.write };
        if let Some((answered, earlier)) = must_follow.filter(|&(at, _)| at >= seen.dispatched) {
            problems.push(format!(
                "client {} key {:?}: operation #{} reached the core at stamp {} before \
                 earlier operation #{earlier} was answered at stamp {answered}",
                op.client, op.key, op.index, seen.dispatched
            ));
        }
        if let Some((answered, _)) = seen.answered {
            let mark = Some((answered, op.index));
            entry.any = entry.any.max(mark);
            if write {
                entry.write = entry.write.max(mark);
            }
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
    use crate::history::{Outcome, Served};

    fn served(dispatched: Ts, answered: Ts, outcome: Outcome) -> Served {
        Served {
            dispatched,
            answered: Some((answered, outcome)),
        }
    }

    /// Client 0 pipelines PUT k then GET k; client 1 reads k at the same time.
    fn history() -> History {
        let mut h = History::new();
        let put = h.invoke(0, "k", Command::Put { value: "v".into() }, 10);
        let get = h.invoke(0, "k", Command::Get, 10);
        let other = h.invoke(1, "k", Command::Get, 10);
        h.complete(put, Outcome::Done, 30);
        h.complete(get, Outcome::Found("v".into()), 30);
        h.complete(other, Outcome::NotFound, 30);
        h
    }

    #[test]
    fn a_request_released_after_the_answer_ahead_of_it_is_in_order() {
        let log: ServedLog = [
            (0, served(11_001, 20_001, Outcome::Done)),
            (1, served(20_002, 21_001, Outcome::Found("v".into()))),
            (2, served(11_002, 12_001, Outcome::NotFound)),
        ]
        .into();
        assert_eq!(check_program_order(&history(), &log), Ok(()));
        let seen = served_history(&history(), &log);
        let ops = seen.operations();
        assert_eq!(
            (ops[1].invoke_ms, ops[1].complete_ms),
            (20_002, Some(21_001))
        );
        assert_eq!(ops[2].outcome, Outcome::NotFound);
    }

    #[test]
    fn a_read_handed_over_before_the_write_ahead_of_it_was_answered_is_reported() {
        let log: ServedLog = [
            (0, served(11_001, 20_001, Outcome::Done)),
            (1, served(11_002, 12_001, Outcome::NotFound)),
        ]
        .into();
        let err = check_program_order(&history(), &log).unwrap_err();
        assert!(err[0].contains("operation #1"), "{err:?}");
        // At the same stamp is not after.
        let log: ServedLog = [
            (0, served(11_001, 20_001, Outcome::Done)),
            (1, served(20_001, 21_001, Outcome::Found("v".into()))),
        ]
        .into();
        assert!(check_program_order(&history(), &log).is_err());
    }

    #[test]
    fn reads_overlap_and_so_do_other_connections_and_other_keys() {
        let mut h = History::new();
        let a = h.invoke(0, "k", Command::Get, 10);
        let b = h.invoke(0, "k", Command::Get, 10);
        let c = h.invoke(0, "j", Command::Del, 10);
        let d = h.invoke(1, "k", Command::Del, 10);
        for op in [a, b, c, d] {
            h.complete(op, Outcome::NotFound, 30);
        }
        let log: ServedLog = (0..4)
            .map(|op| (op, served(11_001 + op as Ts, 12_000, Outcome::NotFound)))
            .collect();
        assert_eq!(check_program_order(&h, &log), Ok(()));
    }

    #[test]
    fn requests_that_never_reached_a_core_order_nothing_and_stay_open() {
        let mut log: ServedLog = [(1, served(11_002, 12_001, Outcome::NotFound))].into();
        assert_eq!(check_program_order(&history(), &log), Ok(()));
        let seen = served_history(&history(), &log);
        assert_eq!(seen.operations()[0].invoke_ms, 10_000);
        assert!(seen.is_open(0), "the PUT may never have happened");
        // Handed over but never answered (its node crashed): open from its hand-over.
        log.insert(
            0,
            Served {
                dispatched: 11_001,
                answered: None,
            },
        );
        assert_eq!(check_program_order(&history(), &log), Ok(()));
        assert!(served_history(&history(), &log).is_open(0));
    }
}
