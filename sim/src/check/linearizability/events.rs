//! The calls and returns of one key's operations in time order, as a doubly linked list
//! from which an operation's two events can be unlinked when it is placed and relinked, in
//! reverse order, when the placement is undone (Knuth's dancing links).

use ringkv_core::Ts;

use super::input::SearchOp;

/// No neighbour in the list.
pub(super) const NIL: usize = usize::MAX;

/// A call or return event.
#[derive(Clone, Copy, Debug)]
pub(super) struct Event {
    /// The operation, as an index into the search's input.
    pub op: usize,
    /// A call, or else a return.
    pub is_call: bool,
}

/// The events, with each event's position fixed for the whole search.
pub(super) struct EventList {
    /// Every event, by position; unlinking does not move them.
    pub events: Vec<Event>,
    /// The next linked position, or [`NIL`]; the head sentinel sits after the last event.
    pub next: Vec<usize>,
    prev: Vec<usize>,
    /// The position of each operation's call.
    pub call_of: Vec<usize>,
    return_of: Vec<usize>,
}

impl EventList {
    /// Orders the events by time, calls before returns at equal times (an operation
    /// answered at the instant another is invoked does not precede it), and returns that
    /// never come last.
    pub(super) fn new(ops: &[SearchOp]) -> Self {
        let mut keyed: Vec<((bool, Ts), bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (index, op) in ops.iter().enumerate() {
            keyed.push(((false, op.invoke_ms), false, index));
            let when = match op.complete_ms {
                Some(complete_ms) => (false, complete_ms),
                None => (true, 0),
            };
            keyed.push((when, true, index));
        }
        keyed.sort_unstable();

        let count = keyed.len();
        let mut list = EventList {
            events: Vec::with_capacity(count),
            next: Vec::with_capacity(count + 1),
            prev: Vec::with_capacity(count + 1),
            call_of: vec![NIL; ops.len()],
            return_of: vec![NIL; ops.len()],
        };
        for (position, (_, is_return, op)) in keyed.into_iter().enumerate() {
            list.events.push(Event {
                op,
                is_call: !is_return,
            });
            if is_return {
                list.return_of[op] = position;
            } else {
                list.call_of[op] = position;
            }
            list.next.push(if position + 1 < count {
                position + 1
            } else {
                NIL
            });
            list.prev
                .push(if position == 0 { count } else { position - 1 });
        }
        list.next.push(if count > 0 { 0 } else { NIL });
        list.prev.push(NIL);
        list
    }

    /// The first linked event, or [`NIL`] if none is left.
    pub(super) fn first(&self) -> usize {
        self.next[self.events.len()]
    }

    /// Unlinks both events of `op`.
    pub(super) fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        self.unlink(self.return_of[op]);
    }

    /// Relinks both events of `op`; must undo the latest [`EventList::lift`] still in force.
    pub(super) fn unlift(&mut self, op: usize) {
        self.relink(self.return_of[op]);
        self.relink(self.call_of[op]);
    }

    fn unlink(&mut self, position: usize) {
        let (prev, next) = (self.prev[position], self.next[position]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, position: usize) {
        let (prev, next) = (self.prev[position], self.next[position]);
        self.next[prev] = position;
        if next != NIL {
            self.prev[next] = position;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Effect;
    use super::*;

    fn linked_ops(list: &EventList) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        let mut cursor = list.first();
        while cursor != NIL {
            out.push((list.events[cursor].op, list.events[cursor].is_call));
            cursor = list.next[cursor];
        }
        out
    }

    #[test]
    fn orders_calls_before_returns_at_equal_times_and_never_last() {
        let op = |invoke_ms, complete_ms| SearchOp {
            effect: Effect::Clear,
            invoke_ms,
            complete_ms,
            group: None,
        };
        let mut list = EventList::new(&[op(0, None), op(5, Some(10)), op(10, Some(20))]);
        let all = vec![
            (0, true),
            (1, true),
            (2, true),
            (1, false),
            (2, false),
            (0, false),
        ];
        assert_eq!(linked_ops(&list), all);
        list.lift(1);
        list.lift(0);
        assert_eq!(linked_ops(&list), vec![(2, true), (2, false)]);
        list.unlift(0);
        list.unlift(1);
        assert_eq!(linked_ops(&list), all);
    }
}
