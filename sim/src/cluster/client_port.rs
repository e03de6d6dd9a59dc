//! The serving side of client connections, as the net shell runs it: requests pipelined
//! on one connection take effect in program order per key ([`Sequencer`]), and answers go
//! back in the order of the requests. Any role that serves clients keeps one.

use std::collections::{BTreeMap, VecDeque};

use ringkv_core::proto::RequestId;
use ringkv_core::session::{Access, Sequencer};

use crate::network::Endpoint;

/// One client connection.
struct Conn<R> {
    sequencer: Sequencer<R>,
    /// Every request not yet sent back, in arrival order: its handle, its id, and its
    /// answer line once the role gave it.
    answers: VecDeque<(u64, Option<RequestId>, Option<Vec<u8>>)>,
}

impl<R> Default for Conn<R> {
    fn default() -> Self {
        Self {
            sequencer: Sequencer::new(),
            answers: VecDeque::new(),
        }
    }
}

/// What answering one request let out.
pub struct Answered<R> {
    /// The id the answered request carried.
    pub id: Option<RequestId>,
    /// Held requests that may run now, with their handles, in arrival order.
    pub released: Vec<(u64, R)>,
    /// Answer lines that may be sent now, in order, and to whom.
    pub lines: Vec<(Endpoint, Vec<u8>)>,
}

/// Every client connection of one run of a node; `R` is the request as the role takes it.
pub struct ClientPort<R> {
    conns: BTreeMap<Endpoint, Conn<R>>,
    /// Which connection each outstanding handle belongs to.
    owners: BTreeMap<u64, Endpoint>,
}

impl<R> Default for ClientPort<R> {
    fn default() -> Self {
        Self {
            conns: BTreeMap::new(),
            owners: BTreeMap::new(),
        }
    }
}

impl<R> ClientPort<R> {
    /// A request arrived from `from` under `handle`: returns it if it may run now, or holds
    /// it until the connection's earlier requests on its key are answered.
    pub fn request(
        &mut self,
        from: Endpoint,
        handle: u64,
        id: Option<RequestId>,
        access: Option<(String, Access)>,
        request: R,
    ) -> Option<R> {
        let conn = self.conns.entry(from).or_default();
        conn.answers.push_back((handle, id, None));
        self.owners.insert(handle, from);
        match access {
            Some((key, access)) => conn.sequencer.admit(handle, &key, access, request),
            None => Some(request),
        }
    }

    /// The role answered `handle`; `encode` builds the line from the request's id.
    /// `None` if the handle is unknown (the role answered twice or made it up).
    pub fn answer(
        &mut self,
        handle: u64,
        encode: impl FnOnce(Option<RequestId>) -> Vec<u8>,
    ) -> Option<Answered<R>> {
        let from = self.owners.remove(&handle)?;
        let conn = self.conns.get_mut(&from)?;
        let slot = conn.answers.iter_mut().find(|(h, _, _)| *h == handle)?;
        let id = slot.1.clone();
        slot.2 = Some(encode(id.clone()));
        let released = conn.sequencer.complete(handle);
        let mut lines = Vec::new();
        while conn
            .answers
            .front()
            .is_some_and(|(_, _, line)| line.is_some())
        {
            if let Some((_, _, Some(line))) = conn.answers.pop_front() {
                lines.push((from, line));
            }
        }
        if conn.answers.is_empty() && conn.sequencer.is_idle() {
            self.conns.remove(&from);
        }
        Some(Answered {
            id,
            released,
            lines,
        })
    }

    /// The id of a request not yet answered, e.g. one the answer of another released.
    pub fn id_of(&self, handle: u64) -> Option<RequestId> {
        let from = self.owners.get(&handle)?;
        let conn = self.conns.get(from)?;
        let slot = conn.answers.iter().find(|(h, _, _)| *h == handle)?;
        slot.1.clone()
    }

    /// Requests held behind earlier ones, over every connection.
    pub fn held(&self) -> usize {
        self.conns.values().map(|c| c.sequencer.held()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NodeId;

    fn client(n: u32) -> Endpoint {
        Endpoint::at(NodeId::Client(n), 0)
    }

    fn id(n: u64) -> Option<RequestId> {
        Some(RequestId::Unsigned(n))
    }

    fn line(id: Option<RequestId>) -> Vec<u8> {
        format!("{id:?}").into_bytes()
    }

    #[test]
    fn a_pipelined_read_waits_for_the_write_before_it_and_answers_keep_order() {
        let mut port = ClientPort::default();
        let write = Some(("k".to_owned(), Access::Write));
        let read = Some(("k".to_owned(), Access::Read));
        let other = Some(("j".to_owned(), Access::Read));
        assert_eq!(
            port.request(client(0), 1, id(10), write, "put k"),
            Some("put k")
        );
        assert_eq!(port.request(client(0), 2, id(11), read, "get k"), None);
        assert_eq!(
            port.request(client(0), 3, id(12), other, "get j"),
            Some("get j")
        );
        // Another connection is not held by this one's write.
        let read = Some(("k".to_owned(), Access::Read));
        assert_eq!(
            port.request(client(1), 4, id(13), read, "get k"),
            Some("get k")
        );
        assert_eq!(port.held(), 1);

        // The later request on another key finishes first: its answer waits its turn.
        let answered = port.answer(3, line).unwrap();
        assert!(answered.released.is_empty() && answered.lines.is_empty());
        let answered = port.answer(1, line).unwrap();
        assert_eq!(answered.id, id(10));
        assert_eq!(answered.released, vec![(2, "get k")]);
        assert_eq!(port.id_of(2), id(11));
        assert_eq!(
            answered.lines,
            vec![(client(0), line(id(10)))],
            "the read behind still owes its answer"
        );
        let answered = port.answer(2, line).unwrap();
        assert_eq!(
            answered.lines,
            vec![(client(0), line(id(11))), (client(0), line(id(12)))]
        );
        assert!(port.answer(2, line).is_none(), "answered twice");
        assert_eq!(
            port.answer(4, line).unwrap().lines,
            vec![(client(1), line(id(13)))]
        );
        assert_eq!(port.held(), 0);
    }
}
