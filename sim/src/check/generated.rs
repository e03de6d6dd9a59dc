//! Randomized runs with a known answer, for the checkers' tests: a sequential ground
//! truth is generated first, then each operation gets an interval around its true
//! linearization point, so the history is linearizable and the final state loses no
//! write by construction.

use std::collections::BTreeMap;

use ringkv_core::Ts;

use crate::history::{ClientId, Command, History, Outcome};

/// A tiny deterministic generator, so that the tests depend on no RNG crate's stream.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`; the modulo bias is irrelevant to tests.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The shape of a generated workload.
pub(crate) struct Workload {
    /// Concurrent clients, each with at most one operation in flight.
    pub(crate) clients: usize,
    /// The keys, chosen uniformly.
    pub(crate) keys: &'static [&'static str],
    /// Operations in the run.
    pub(crate) operations: usize,
    /// Share of operations answered as failed (no effect).
    pub(crate) failed_per_mille: u64,
    /// Share of operations never answered (an update among them takes effect or not).
    pub(crate) unknown_per_mille: u64,
}

/// The usual case: a few keys, a few clients, some faults.
pub(crate) const MIXED: Workload = Workload {
    clients: 6,
    keys: &["a", "b", "c"],
    operations: 300,
    failed_per_mille: 50,
    unknown_per_mille: 50,
};

/// The costly case for the search: one hot key, many clients, and nearly a third of the
/// operations never answered, each staying concurrent with the rest of the history.
pub(crate) const UNRELIABLE: Workload = Workload {
    clients: 8,
    keys: &["hot"],
    operations: 300,
    failed_per_mille: 50,
    unknown_per_mille: 300,
};

/// How far before its linearization point an operation may be invoked.
const MAX_LEAD_MS: Ts = 40;
/// How far after its linearization point an operation may be answered (or time out).
const MAX_LAG_MS: Ts = 40;

/// One operation of the ground truth.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    /// Who invokes it.
    pub(crate) client: ClientId,
    /// The key it touches.
    pub(crate) key: &'static str,
    /// What it asks for.
    pub(crate) command: Command,
    /// When it is invoked: at or before its linearization point.
    pub(crate) invoke_ms: Ts,
    /// When the client gave up or got its answer: the end of the true interval.
    pub(crate) end_ms: Ts,
    /// The answer, or `None` if it never arrived.
    pub(crate) outcome: Option<Outcome>,
}

/// A generated run: its operations and every key's value at the end.
pub(crate) struct Run {
    /// The operations, in order of their linearization points.
    pub(crate) planned: Vec<Planned>,
    /// Every key of the workload, with its value after the last operation.
    pub(crate) final_values: BTreeMap<String, Option<String>>,
}

/// A sequential execution with linearization points 1 ms or more apart, each inside its
/// operation's interval, with each client waiting for its previous operation to end.
pub(crate) fn plan(seed: u64, workload: &Workload) -> Run {
    let mut rng = SplitMix64(seed);
    let mut values: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let mut free_ms: Vec<Ts> = vec![0; workload.clients];
    let mut point_ms: Ts = 0;
    let mut planned = Vec::with_capacity(workload.operations);
    for i in 0..workload.operations {
        point_ms += 1 + rng.below(8);
        point_ms = point_ms.max(*free_ms.iter().min().expect("some client"));
        let free: Vec<usize> = (0..workload.clients)
            .filter(|&c| free_ms[c] <= point_ms)
            .collect();
        let client = free[rng.below(free.len() as u64) as usize];
        let lead_ms = rng.below((point_ms - free_ms[client]).min(MAX_LEAD_MS) + 1);
        let end_ms = point_ms + rng.below(MAX_LAG_MS + 1);
        free_ms[client] = end_ms + 1;

        let key = workload.keys[rng.below(workload.keys.len() as u64) as usize];
        let command = match rng.below(10) {
            0..=3 => Command::Get,
            4..=7 => Command::Put {
                value: format!("v{i}"),
            },
            _ => Command::Del,
        };
        let fate = rng.below(1000);
        let failed = fate < workload.failed_per_mille;
        let unknown = !failed && fate < workload.failed_per_mille + workload.unknown_per_mille;
        let takes_effect = !failed && (!unknown || rng.below(2) == 0);

        let current = values.entry(key).or_default();
        let answer = match &command {
            Command::Get => match current {
                Some(value) => Outcome::Found(value.clone()),
                None => Outcome::NotFound,
            },
            Command::Put { value } => {
                if takes_effect {
                    *current = Some(value.clone());
                }
                Outcome::Done
            }
            Command::Del => {
                let outcome = if current.is_some() {
                    Outcome::Done
                } else {
                    Outcome::NotFound
                };
                if takes_effect {
                    *current = None;
                }
                outcome
            }
        };
        planned.push(Planned {
            client: client as ClientId,
            key,
            command,
            invoke_ms: point_ms - lead_ms,
            end_ms,
            outcome: match (failed, unknown) {
                (true, _) => Some(Outcome::Failed),
                (false, true) => None,
                (false, false) => Some(answer),
            },
        });
    }
    let final_values = workload
        .keys
        .iter()
        .map(|key| (key.to_string(), values.get(key).cloned().flatten()))
        .collect();
    Run {
        planned,
        final_values,
    }
}

/// Records the plan as clients would: invocations and answers in time order.
pub(crate) fn record(planned: &[Planned]) -> History {
    let mut events: Vec<(Ts, bool, usize)> = Vec::new();
    for (i, op) in planned.iter().enumerate() {
        events.push((op.invoke_ms, false, i));
        if op.outcome.is_some() {
            events.push((op.end_ms, true, i));
        }
    }
    events.sort_unstable();
    let mut history = History::new();
    let mut index_of = vec![usize::MAX; planned.len()];
    for (time_ms, is_answer, i) in events {
        let op = &planned[i];
        if is_answer {
            let outcome = op.outcome.clone().expect("only answered ops have answers");
            history.complete(index_of[i], outcome, time_ms);
        } else {
            index_of[i] = history.invoke(op.client, op.key, op.command.clone(), time_ms);
        }
    }
    history
}
