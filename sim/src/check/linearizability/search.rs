//! Wing & Gong's search for a linearization, with the memo of Lowe's refinement (as in
//! porcupine's `checker.go`): the one algorithm here, kept apart from what feeds and
//! reports it.
//!
//! A node of the search is a set of placed operations and the register state they leave.
//! Its candidates are the unplaced calls before the first unplaced return in time order
//! (the node's frontier): that return's operation must take effect before anything
//! invoked later. Placing a candidate enters a child node; when no candidate leads to a
//! linearization, the last placement is undone and its parent's scan resumes. A node
//! whose frontier is a return that never comes (or none) is a success: every answered
//! operation was placed, and the rest may never have happened.
//!
//! Three reductions keep this small, each dropping only children that cannot succeed
//! where a kept one fails:
//! - The memo ([`Visited`]) prunes nodes already explored.
//! - A GET (or DEL `not_found`) that can take effect now is placed without alternatives:
//!   it changes nothing, so moving it earlier in any linearization keeps it valid.
//! - Grouped operations (see [`Group`]) have no precondition and may never happen, so a
//!   run of them matters only through its last one: one is placed only right before an
//!   ordinary operation that fails without it, and only the earliest unplaced of its
//!   group.

use ringkv_core::Ts;

use super::events::{EventList, NIL};
use super::input::{Group, SearchOp};
use super::memo::{Spent, Visited};
use super::model::{State, ABSENT};

/// How the search ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Every operation that returned was placed.
    Linearizable {
        /// Scan steps taken.
        steps: u64,
    },
    /// No order works.
    Violation {
        /// Scan steps taken.
        steps: u64,
        /// The longest sequence of operations (indices into the input) that was placed.
        prefix: Vec<usize>,
        /// The operation whose return ended that sequence: it could not be placed.
        blocked: usize,
    },
    /// The budget ran out first.
    Exhausted {
        /// Scan steps taken: the budget.
        steps: u64,
    },
}

/// The first unplaced return of a node: its scan considers the calls linked before it.
#[derive(Clone, Copy, Debug)]
struct Frontier {
    /// When that return happened; a call at this time or earlier is a candidate.
    complete_ms: Ts,
    /// Its position in the event list, where the scan stops.
    position: usize,
}

/// One placement on the current path, with what undoing it needs.
struct Frame {
    /// The ordinary operation placed.
    op: usize,
    /// The grouped operation placed just before it, if it needed one.
    via: Option<usize>,
    /// The state before both.
    previous: State,
    /// Whether it was the node's only choice, so that its failure is the node's.
    forced: bool,
    /// The frontier of the node it was made from, to resume that node's scan.
    frontier: Frontier,
}

/// The search's mutable state, so that each step reads as one method.
struct Search<'a> {
    ops: &'a [SearchOp],
    list: EventList,
    /// Each group's operations in call order: only the earliest unplaced one is used.
    queues: [Vec<usize>; Group::COUNT],
    spent: Spent,
    visited: Visited,
    path: Vec<Frame>,
    /// How many operations the path placed, grouped ones included.
    placed_count: usize,
    state: State,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [SearchOp]) -> Self {
        let list = EventList::new(ops);
        let mut queues: [Vec<usize>; Group::COUNT] = Default::default();
        for event in &list.events {
            if let (true, Some(group)) = (event.is_call, ops[event.op].group) {
                queues[group.slot()].push(event.op);
            }
        }
        Search {
            ops,
            list,
            queues,
            spent: [0; Group::COUNT],
            visited: Visited::new(ops.len()),
            path: Vec::new(),
            placed_count: 0,
            state: ABSENT,
        }
    }

    /// The current node's frontier; `None` if it is a success.
    fn frontier(&self) -> Option<Frontier> {
        let mut position = self.list.first();
        while position != NIL {
            let event = self.list.events[position];
            if !event.is_call {
                // Returns that never come sort last: meeting one means no other is left.
                let complete_ms = self.ops[event.op].complete_ms?;
                return Some(Frontier {
                    complete_ms,
                    position,
                });
            }
            position = self.list.next[position];
        }
        None
    }

    /// A candidate that observes the current state without changing it, if any.
    fn forced_read(&self, frontier: Frontier) -> Option<usize> {
        let mut position = self.list.first();
        while position != frontier.position {
            let op = &self.ops[self.list.events[position].op];
            if op.effect.is_pure() && op.effect.apply(self.state).is_some() {
                return Some(self.list.events[position].op);
            }
            position = self.list.next[position];
        }
        None
    }

    /// How candidate `op` could take effect next: directly, or right after the earliest
    /// unplaced operation of a group that was invoked by the frontier. At most one way
    /// matters: when both work they leave the same state, and direct spends nothing.
    fn placement(&self, op: usize, frontier: Frontier) -> Option<(Option<usize>, State)> {
        let effect = self.ops[op].effect;
        if let Some(next) = effect.apply(self.state) {
            return Some((None, next));
        }
        self.queues.iter().enumerate().find_map(|(slot, queue)| {
            let via = *queue.get(self.spent[slot] as usize)?;
            if self.ops[via].invoke_ms > frontier.complete_ms {
                return None;
            }
            let middle = self.ops[via].effect.apply(self.state)?;
            Some((Some(via), effect.apply(middle)?))
        })
    }

    fn count_spent(&mut self, via: Option<usize>, placed: bool) {
        if let Some(group) = via.and_then(|via| self.ops[via].group) {
            let spent = &mut self.spent[group.slot()];
            *spent = if placed { *spent + 1 } else { *spent - 1 };
        }
    }

    /// Places `op` (after `via`) to enter a child node, unless the memo knows it fails.
    /// `forced` and `frontier` describe the node left, for [`Search::undo`].
    fn place(
        &mut self,
        op: usize,
        via: Option<usize>,
        next: State,
        forced: bool,
        frontier: Frontier,
    ) -> bool {
        self.count_spent(via, true);
        self.visited.toggle(op);
        if !self.visited.enter(next, self.spent) {
            self.visited.toggle(op);
            self.count_spent(via, false);
            return false;
        }
        self.path.push(Frame {
            op,
            via,
            previous: self.state,
            forced,
            frontier,
        });
        self.placed_count += 1 + usize::from(via.is_some());
        self.state = next;
        if let Some(via) = via {
            self.list.lift(via);
        }
        self.list.lift(op);
        true
    }

    /// Undoes the last placement and returns it.
    fn undo(&mut self) -> Option<Frame> {
        let frame = self.path.pop()?;
        self.list.unlift(frame.op);
        if let Some(via) = frame.via {
            self.list.unlift(via);
        }
        self.visited.toggle(frame.op);
        self.count_spent(frame.via, false);
        self.placed_count -= 1 + usize::from(frame.via.is_some());
        self.state = frame.previous;
        Some(frame)
    }

    /// The placed operations in order, grouped ones included.
    fn placed_in_order(&self) -> Vec<usize> {
        self.path
            .iter()
            .flat_map(|frame| frame.via.into_iter().chain([frame.op]))
            .collect()
    }

    /// Tries the current node's candidates from `position` on; `true` once one is placed.
    fn scan(
        &mut self,
        mut position: usize,
        frontier: Frontier,
        budget: &mut Budget,
    ) -> Option<bool> {
        while position != frontier.position {
            budget.spend()?;
            let op = self.list.events[position].op;
            if self.ops[op].group.is_none() {
                if let Some((via, next)) = self.placement(op, frontier) {
                    if self.place(op, via, next, false, frontier) {
                        return Some(true);
                    }
                }
            }
            position = self.list.next[position];
        }
        Some(false)
    }

    /// Explores the current node on entry: its forced read if it has one, else its
    /// candidates in order; `true` once a child was entered.
    fn enter(&mut self, frontier: Frontier, budget: &mut Budget) -> Option<bool> {
        match self.forced_read(frontier) {
            Some(op) => {
                budget.spend()?;
                // If its only child is known to fail, so does the node.
                Some(self.place(op, None, self.state, true, frontier))
            }
            None => self.scan(self.list.first(), frontier, budget),
        }
    }

    fn run(&mut self, max_steps: u64) -> Verdict {
        let mut budget = Budget {
            spent: 0,
            max: max_steps,
        };
        let mut longest: Option<(Vec<usize>, usize)> = None;
        // `None` where the search just entered a node; else where its scan resumes.
        let mut resume: Option<usize> = None;
        let Some(mut frontier) = self.frontier() else {
            return Verdict::Linearizable { steps: 0 };
        };
        loop {
            let entered = match resume.take() {
                None => self.enter(frontier, &mut budget),
                Some(position) => self.scan(position, frontier, &mut budget),
            };
            match entered {
                None => {
                    return Verdict::Exhausted {
                        steps: budget.spent,
                    }
                }
                Some(true) => match self.frontier() {
                    Some(next) => {
                        frontier = next;
                        continue;
                    }
                    None => {
                        return Verdict::Linearizable {
                            steps: budget.spent,
                        }
                    }
                },
                Some(false) => {}
            }

            if longest
                .as_ref()
                .is_none_or(|(prefix, _)| self.placed_count > prefix.len())
            {
                let blocked = self.list.events[frontier.position].op;
                longest = Some((self.placed_in_order(), blocked));
            }
            // Back to the nearest node with candidates left: a forced placement's failure
            // is its node's.
            loop {
                let Some(frame) = self.undo() else {
                    let (prefix, blocked) = longest.expect("recorded just above");
                    return Verdict::Violation {
                        steps: budget.spent,
                        prefix,
                        blocked,
                    };
                };
                if !frame.forced {
                    resume = Some(self.list.next[self.list.call_of[frame.op]]);
                    frontier = frame.frontier;
                    break;
                }
            }
        }
    }
}

/// The scan steps a search may still take.
struct Budget {
    spent: u64,
    max: u64,
}

impl Budget {
    /// Takes one step; `None` once the budget is used up.
    fn spend(&mut self) -> Option<()> {
        (self.spent < self.max).then(|| self.spent += 1)
    }
}

/// Searches for a linearization of `ops`, taking at most `max_steps` scan steps.
pub(super) fn search(ops: &[SearchOp], max_steps: u64) -> Verdict {
    Search::new(ops).run(max_steps)
}

#[cfg(test)]
mod tests {
    use super::super::model::{Effect, FIRST_OBSERVED};
    use super::*;

    fn op(effect: Effect, invoke_ms: Ts, complete_ms: Option<Ts>) -> SearchOp {
        SearchOp {
            effect,
            invoke_ms,
            complete_ms,
            group: None,
        }
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_eq!(search(&[], 10), Verdict::Linearizable { steps: 0 });
    }

    #[test]
    fn the_violation_names_the_longest_prefix_and_the_blocked_operation() {
        let a = FIRST_OBSERVED;
        let ops = [
            op(Effect::Write(a), 0, Some(1)),
            op(Effect::Read(a), 2, Some(3)),
            op(Effect::DeletePresent, 4, Some(5)),
            op(Effect::Read(a), 6, Some(7)),
        ];
        match search(&ops, 1000) {
            Verdict::Violation {
                prefix, blocked, ..
            } => {
                assert_eq!(prefix, vec![0, 1, 2]);
                assert_eq!(blocked, 3);
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn the_budget_stops_the_search() {
        let ops = [
            op(Effect::Write(FIRST_OBSERVED), 0, Some(10)),
            op(Effect::Read(FIRST_OBSERVED), 0, Some(10)),
        ];
        assert_eq!(search(&ops, 1), Verdict::Exhausted { steps: 1 });
        assert!(matches!(search(&ops, 100), Verdict::Linearizable { .. }));
    }
}
