//! Answers in request order: the protocol answers pipelined requests on one connection in
//! the order they were sent, while the core may finish them in any order.

use std::collections::VecDeque;

use ringkv_core::proto::RequestId;

/// How the answers of a command that became several requests make one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Join {
    /// One request, one answer.
    One,
    /// The sum of integer answers (RESP `DEL k1 k2`, `EXISTS k1 k2`).
    Sum,
    /// An array of the answers (RESP `MGET`).
    Array,
}

/// Joins the `parts` of a command's requests, answered, into one answer in `out`.
pub(crate) type Joiner = fn(Join, Vec<Vec<u8>>, &mut Vec<u8>);

/// One request read from the connection, and its answer once known.
#[derive(Debug)]
struct Slot {
    /// The handle the core answers through; increasing along the queue.
    handle: u64,
    /// The request's `"id"`, echoed on the answer.
    id: Option<RequestId>,
    /// How the port encodes this request's answer (RESP: the command it came from).
    tag: u8,
    /// On the first slot of a command of several requests: how many slots it spans and
    /// how they join. `(1, Join::One)` otherwise.
    group: (usize, Join),
    /// The encoded answer, once the core (or the decoder) gave it.
    answer: Option<Vec<u8>>,
}

/// The answers of one connection, in request order.
#[derive(Debug, Default)]
pub(crate) struct AnswerQueue {
    slots: VecDeque<Slot>,
}

impl AnswerQueue {
    /// Requests read and not yet written back.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A slot the core will fill through `handle`; handles must increase.
    pub(crate) fn push_pending(&mut self, handle: u64, id: Option<RequestId>, tag: u8) {
        debug_assert!(self.slots.back().is_none_or(|last| last.handle < handle));
        self.slots.push_back(Slot {
            handle,
            id,
            tag,
            group: (1, Join::One),
            answer: None,
        });
    }

    /// Makes the last `count` slots one command whose answers join as `join`.
    pub(crate) fn group_last(&mut self, count: usize, join: Join) {
        let Some(first) = self.slots.len().checked_sub(count) else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(first) {
            slot.group = (count, join);
        }
    }

    /// A slot whose answer is known already (a decoding error), written in its turn.
    pub(crate) fn push_ready(&mut self, handle: u64, answer: Vec<u8>) {
        debug_assert!(self.slots.back().is_none_or(|last| last.handle < handle));
        self.slots.push_back(Slot {
            handle,
            id: None,
            tag: 0,
            group: (1, Join::One),
            answer: Some(answer),
        });
    }

    /// Fills the slot of `handle` with the answer `encode` makes, always in the slot, so
    /// that tests can look at the queue's ordering alone; false as [`AnswerQueue::fill_into`].
    #[cfg(test)]
    pub(crate) fn fill(
        &mut self,
        handle: u64,
        encode: impl FnOnce(Option<&RequestId>, u8) -> Vec<u8>,
    ) -> bool {
        let Ok(at) = self.slots.binary_search_by_key(&handle, |slot| slot.handle) else {
            return false;
        };
        match self.slots.get_mut(at) {
            Some(slot) if slot.answer.is_none() => {
                slot.answer = Some(encode(slot.id.as_ref(), slot.tag));
                true
            }
            _ => false,
        }
    }

    /// Fills the slot of `handle` with the answer `encode` writes from the request's id
    /// and tag. An answer due first (nothing before it unanswered, one request alone) is
    /// written straight onto `out`, the connection's unsent bytes, sparing an allocation
    /// and a copy per answer; any other waits in its slot. Returns false if there is no
    /// such pending slot (answered before: the core answers each request once, so a
    /// second answer is dropped).
    pub(crate) fn fill_into(
        &mut self,
        handle: u64,
        out: &mut Vec<u8>,
        encode: impl FnOnce(Option<&RequestId>, u8, &mut Vec<u8>),
    ) -> bool {
        let Ok(at) = self.slots.binary_search_by_key(&handle, |slot| slot.handle) else {
            return false;
        };
        match self.slots.get_mut(at) {
            Some(slot) if slot.answer.is_none() => {
                if at == 0 && slot.group == (1, Join::One) {
                    encode(slot.id.as_ref(), slot.tag, out);
                    self.slots.pop_front();
                } else {
                    let mut answer = Vec::new();
                    encode(slot.id.as_ref(), slot.tag, &mut answer);
                    slot.answer = Some(answer);
                }
                true
            }
            _ => false,
        }
    }

    /// Moves the answers at the head that are known into `out`, in order; a command of
    /// several requests leaves once all of them are answered, joined by `joiner`.
    pub(crate) fn drain_ready_into(&mut self, out: &mut Vec<u8>, joiner: Joiner) {
        while let Some(&Slot {
            group: (count, join),
            ..
        }) = self.slots.front()
        {
            let count = count.max(1);
            let answered = self
                .slots
                .iter()
                .take(count)
                .take_while(|slot| slot.answer.is_some())
                .count();
            if answered < count {
                return;
            }
            let parts = self.slots.drain(..count).filter_map(|slot| slot.answer);
            if join == Join::One {
                parts.for_each(|answer| out.extend_from_slice(&answer));
            } else {
                joiner(join, parts.collect(), out);
            }
        }
    }

    /// The handles still waiting for the core, for forgetting them when the connection
    /// dies.
    pub(crate) fn pending_handles(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots
            .iter()
            .filter(|slot| slot.answer.is_none())
            .map(|slot| slot.handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(tag: &str, id: Option<&RequestId>) -> Vec<u8> {
        format!("{tag}:{id:?}\n").into_bytes()
    }

    /// A joiner that shows what it was given: the join, then the parts in order.
    fn concat(join: Join, parts: Vec<Vec<u8>>, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{join:?}[").as_bytes());
        for part in parts {
            out.extend_from_slice(&part);
        }
        out.push(b']');
    }

    #[test]
    fn a_group_leaves_whole_once_every_part_is_answered() {
        let mut q = AnswerQueue::default();
        q.push_pending(1, None, 7);
        q.push_pending(2, None, 7);
        q.push_pending(3, None, 7);
        q.group_last(3, Join::Sum);
        q.push_pending(4, None, 0);
        let mut out = Vec::new();
        assert!(q.fill(4, |_, tag| format!("d{tag}").into_bytes()));
        assert!(q.fill(1, |_, tag| format!("a{tag}").into_bytes()));
        assert!(q.fill(3, |_, _| b"c".to_vec()));
        q.drain_ready_into(&mut out, concat);
        assert!(out.is_empty(), "part 2 of the group is not answered yet");
        assert!(q.fill(2, |_, _| b"b".to_vec()));
        q.drain_ready_into(&mut out, concat);
        assert_eq!(out, b"Sum[a7bc]d0");
        assert!(q.is_empty());
    }

    #[test]
    fn answers_leave_in_request_order_whatever_order_they_arrive_in() {
        let mut q = AnswerQueue::default();
        q.push_pending(1, Some(RequestId::Unsigned(10)), 0);
        q.push_ready(2, b"bad\n".to_vec());
        q.push_pending(3, None, 0);
        let mut out = Vec::new();
        assert!(q.fill(3, |id, _| line("c", id)));
        q.drain_ready_into(&mut out, concat);
        assert!(out.is_empty(), "the head is not answered yet");
        assert!(q.fill(1, |id, _| line("a", id)));
        q.drain_ready_into(&mut out, concat);
        assert_eq!(out, b"a:Some(Unsigned(10))\nbad\nc:None\n");
        assert!(q.is_empty());
    }

    #[test]
    fn unknown_or_repeated_handles_are_dropped() {
        let mut q = AnswerQueue::default();
        q.push_pending(5, None, 0);
        assert!(!q.fill(4, |_, _| b"x\n".to_vec()));
        assert!(q.fill(5, |_, _| b"y\n".to_vec()));
        assert!(!q.fill(5, |_, _| b"z\n".to_vec()));
        assert_eq!(q.pending_handles().count(), 0);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn the_answer_due_first_is_written_straight_out_and_the_rest_wait_their_turn() {
        let put = |text: &'static str| {
            move |_: Option<&RequestId>, _: u8, buf: &mut Vec<u8>| {
                buf.extend_from_slice(text.as_bytes())
            }
        };
        let mut q = AnswerQueue::default();
        q.push_pending(1, None, 0);
        q.push_pending(2, None, 0);
        q.push_pending(3, None, 7);
        q.push_pending(4, None, 7);
        q.group_last(2, Join::Sum);
        let mut out = b"earlier;".to_vec();
        assert!(q.fill_into(2, &mut out, put("b;")));
        assert_eq!(out, b"earlier;", "answer 1 is not written yet, so 2 waits");
        assert!(q.fill_into(1, &mut out, put("a;")));
        assert_eq!(out, b"earlier;a;", "the head goes straight out");
        assert!(!q.fill_into(1, &mut out, put("again;")));
        assert!(q.fill_into(3, &mut out, put("c")));
        q.drain_ready_into(&mut out, concat);
        assert_eq!(out, b"earlier;a;b;", "a group waits for all its parts");
        assert!(q.fill_into(4, &mut out, put("d")));
        q.drain_ready_into(&mut out, concat);
        assert_eq!(out, b"earlier;a;b;Sum[cd]");
        assert!(q.is_empty());
    }
}
