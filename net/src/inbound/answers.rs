//! Answers in request order: the protocol answers pipelined requests on one connection in
//! the order they were sent, while the core may finish them in any order.

use std::collections::VecDeque;

use ringkv_core::proto::RequestId;

/// One request read from the connection, and its answer once known.
#[derive(Debug)]
struct Slot {
    /// The handle the core answers through; increasing along the queue.
    handle: u64,
    /// The request's `"id"`, echoed on the answer.
    id: Option<RequestId>,
    /// The encoded answer line, once the core (or the decoder) gave it.
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
    pub(crate) fn push_pending(&mut self, handle: u64, id: Option<RequestId>) {
        debug_assert!(self.slots.back().is_none_or(|last| last.handle < handle));
        self.slots.push_back(Slot {
            handle,
            id,
            answer: None,
        });
    }

    /// A slot whose answer is known already (a decoding error), written in its turn.
    pub(crate) fn push_ready(&mut self, handle: u64, answer: Vec<u8>) {
        debug_assert!(self.slots.back().is_none_or(|last| last.handle < handle));
        self.slots.push_back(Slot {
            handle,
            id: None,
            answer: Some(answer),
        });
    }

    /// Fills the slot of `handle` with the answer `encode` makes from the request's id.
    /// Returns false if there is no such pending slot (answered before: the core answers
    /// each request once, so a second answer is dropped).
    pub(crate) fn fill(
        &mut self,
        handle: u64,
        encode: impl FnOnce(Option<&RequestId>) -> Vec<u8>,
    ) -> bool {
        let Ok(at) = self.slots.binary_search_by_key(&handle, |slot| slot.handle) else {
            return false;
        };
        match self.slots.get_mut(at) {
            Some(slot) if slot.answer.is_none() => {
                slot.answer = Some(encode(slot.id.as_ref()));
                true
            }
            _ => false,
        }
    }

    /// Moves the answers at the head that are known into `out`, in order.
    pub(crate) fn drain_ready_into(&mut self, out: &mut Vec<u8>) {
        while self.slots.front().is_some_and(|slot| slot.answer.is_some()) {
            if let Some(Slot {
                answer: Some(answer),
                ..
            }) = self.slots.pop_front()
            {
                out.extend_from_slice(&answer);
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

    #[test]
    fn answers_leave_in_request_order_whatever_order_they_arrive_in() {
        let mut q = AnswerQueue::default();
        q.push_pending(1, Some(RequestId::Unsigned(10)));
        q.push_ready(2, b"bad\n".to_vec());
        q.push_pending(3, None);
        let mut out = Vec::new();
        assert!(q.fill(3, |id| line("c", id)));
        q.drain_ready_into(&mut out);
        assert!(out.is_empty(), "the head is not answered yet");
        assert!(q.fill(1, |id| line("a", id)));
        q.drain_ready_into(&mut out);
        assert_eq!(out, b"a:Some(Unsigned(10))\nbad\nc:None\n");
        assert!(q.is_empty());
    }

    #[test]
    fn unknown_or_repeated_handles_are_dropped() {
        let mut q = AnswerQueue::default();
        q.push_pending(5, None);
        assert!(!q.fill(4, |_| b"x\n".to_vec()));
        assert!(q.fill(5, |_| b"y\n".to_vec()));
        assert!(!q.fill(5, |_| b"z\n".to_vec()));
        assert_eq!(q.pending_handles().count(), 0);
        assert_eq!(q.len(), 1);
    }
}
