//! Program order within one connection. Requests pipelined on a connection are answered
//! in order anyway; the sequencer also makes them take effect in order where it matters:
//! a request on a key waits until the connection's earlier requests on that key that it
//! could observe, or that could observe it, are answered. Reads of a key run side by
//! side; a write waits for every earlier request on its key; a read waits for earlier
//! writes of its key. Requests on other keys never wait, so pipelines stay concurrent.
//!
//! This gives a pipelining client read-your-writes: `put k v` then `get k` in one batch
//! reads `v`. Holding costs little: the held request's answer could not be sent before
//! the earlier answer anyway.

use std::collections::{BTreeMap, VecDeque};

/// How a request touches its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// It only reads.
    Read,
    /// It may change the key.
    Write,
}

#[derive(Clone, Copy, Debug, Default)]
struct InFlight {
    reads: u32,
    writes: u32,
}

/// The ordering state of one connection; `T` is the request as the caller holds it.
#[derive(Debug)]
pub struct Sequencer<T> {
    /// The one request in flight when nothing else is in flight or held: a client that
    /// waits for each answer never touches the maps below, whose updates were a large
    /// share of a cached GET's work. Set only while the maps and `held` are empty.
    sole: Option<(u64, String, Access)>,
    in_flight: BTreeMap<String, InFlight>,
    /// What each dispatched request holds, by its handle.
    dispatched: BTreeMap<u64, (String, Access)>,
    /// Requests waiting for their turn, in arrival order.
    held: VecDeque<(u64, String, Access, T)>,
}

impl<T> Default for Sequencer<T> {
    fn default() -> Self {
        Self {
            sole: None,
            in_flight: BTreeMap::new(),
            dispatched: BTreeMap::new(),
            held: VecDeque::new(),
        }
    }
}

impl<T> Sequencer<T> {
    /// A connection with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers a request: returns it back if it may run now, or holds it (`None`) until
    /// [`Sequencer::complete`] releases it. A caller that owns the key passes it, and
    /// it is kept without a copy.
    pub fn admit(
        &mut self,
        handle: u64,
        key: impl Into<String>,
        access: Access,
        request: T,
    ) -> Option<T> {
        let key = key.into();
        if self.is_idle() {
            self.sole = Some((handle, key, access));
            return Some(request);
        }
        self.spill_sole();
        let earlier_held = self.held.iter().any(|(_, k, _, _)| *k == key);
        if earlier_held || !self.may_run(&key, access) {
            self.held.push_back((handle, key, access, request));
            return None;
        }
        self.dispatch(handle, key, access);
        Some(request)
    }

    /// The request behind `handle` was answered: returns, in arrival order, the held
    /// requests that may run now. Unknown handles (never admitted, or held and dropped)
    /// release nothing.
    pub fn complete(&mut self, handle: u64) -> Vec<(u64, T)> {
        if self
            .sole
            .as_ref()
            .is_some_and(|(sole, _, _)| *sole == handle)
        {
            self.sole = None;
            return Vec::new();
        }
        let Some((key, access)) = self.dispatched.remove(&handle) else {
            return Vec::new();
        };
        if let Some(entry) = self.in_flight.get_mut(&key) {
            match access {
                Access::Read => entry.reads -= 1,
                Access::Write => entry.writes -= 1,
            }
            if entry.reads == 0 && entry.writes == 0 {
                self.in_flight.remove(&key);
            }
        }
        self.release(&key)
    }

    /// Requests held, waiting for earlier ones.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is in flight or held.
    pub fn is_idle(&self) -> bool {
        self.sole.is_none() && self.dispatched.is_empty() && self.held.is_empty()
    }

    /// Moves the sole request into the maps, before a second request joins it.
    fn spill_sole(&mut self) {
        if let Some((handle, key, access)) = self.sole.take() {
            assert!(
                self.dispatched.is_empty() && self.held.is_empty(),
                "a sole request beside others"
            );
            self.dispatch(handle, key, access);
        }
    }

    fn may_run(&self, key: &str, access: Access) -> bool {
        let busy = self.in_flight.get(key).copied().unwrap_or_default();
        match access {
            Access::Read => busy.writes == 0,
            Access::Write => busy.writes == 0 && busy.reads == 0,
        }
    }

    fn dispatch(&mut self, handle: u64, key: String, access: Access) {
        // A key already in flight is not copied again.
        let entry = match self.in_flight.get_mut(&key) {
            Some(entry) => entry,
            None => self.in_flight.entry(key.clone()).or_default(),
        };
        match access {
            Access::Read => entry.reads += 1,
            Access::Write => entry.writes += 1,
        }
        let previous = self.dispatched.insert(handle, (key, access));
        assert!(previous.is_none(), "handle {handle} admitted twice");
    }

    /// Releases the held requests of `key` that may run now: the oldest, and the reads
    /// right behind a read.
    fn release(&mut self, key: &str) -> Vec<(u64, T)> {
        let mut released = Vec::new();
        while let Some(at) = self.held.iter().position(|(_, k, _, _)| k == key) {
            let access = self.held.get(at).map(|(_, _, a, _)| *a);
            let Some(access) = access.filter(|&a| self.may_run(key, a)) else {
                break;
            };
            let Some((handle, key, _, request)) = self.held.remove(at) else {
                break;
            };
            self.dispatch(handle, key, access);
            released.push((handle, request));
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The rule the sequencer keeps, stated plainly: a request runs once no earlier
    /// unanswered request on its key is a write, and, if it is a write, once there is
    /// none at all.
    fn runnable(pending: &[(u64, &str, Access, bool)], at: usize) -> bool {
        let Some(&(_, key, access, _)) = pending.get(at) else {
            return false;
        };
        let mut earlier = pending.iter().take(at).filter(|(_, k, _, _)| *k == key);
        match access {
            Access::Read => earlier.all(|(_, _, a, _)| *a == Access::Read),
            Access::Write => earlier.next().is_none(),
        }
    }

    proptest! {
        #[test]
        fn requests_run_exactly_when_the_plain_rule_lets_them(
            steps in prop::collection::vec((any::<bool>(), 0..3usize, any::<bool>(), 0..8usize), 1..60),
        ) {
            let keys = ["a", "b", "c"];
            let mut s = Sequencer::new();
            // (handle, key, access, running), in arrival order.
            let mut pending: Vec<(u64, &str, Access, bool)> = Vec::new();
            for (handle, (admit, key, write, pick)) in (0u64..).zip(steps) {
                if admit || pending.is_empty() {
                    let access = if write { Access::Write } else { Access::Read };
                    pending.push((handle, keys[key], access, false));
                    let expected = runnable(&pending, pending.len() - 1);
                    let ran = s.admit(handle, keys[key], access, handle).is_some();
                    prop_assert_eq!(ran, expected);
                    if let Some(last) = pending.last_mut() {
                        last.3 = ran;
                    }
                    continue;
                }
                let running: Vec<usize> = (0..pending.len()).filter(|&i| pending[i].3).collect();
                let Some(&at) = running.get(pick % running.len().max(1)) else {
                    prop_assert!(false, "nothing runs though requests wait: {:?}", pending);
                    continue;
                };
                let done = pending.remove(at).0;
                let mut expected = Vec::new();
                for i in 0..pending.len() {
                    if !pending[i].3 && runnable(&pending, i) {
                        pending[i].3 = true;
                        expected.push((pending[i].0, pending[i].0));
                    }
                }
                prop_assert_eq!(s.complete(done), expected);
            }
            prop_assert_eq!(s.is_idle(), pending.is_empty());
        }
    }

    #[test]
    fn a_read_behind_a_write_of_its_key_waits_for_it() {
        let mut s = Sequencer::new();
        assert_eq!(s.admit(1, "k", Access::Write, "put"), Some("put"));
        assert_eq!(s.admit(2, "k", Access::Read, "get"), None);
        assert_eq!(
            s.admit(3, "other", Access::Read, "get other"),
            Some("get other")
        );
        assert_eq!(s.complete(3), vec![]);
        assert_eq!(s.complete(1), vec![(2, "get")]);
        assert_eq!(s.complete(2), vec![]);
        assert!(s.is_idle());
    }

    #[test]
    fn reads_overlap_and_a_write_waits_for_them_all() {
        let mut s = Sequencer::new();
        assert!(s.admit(1, "k", Access::Read, 1).is_some());
        assert!(s.admit(2, "k", Access::Read, 2).is_some());
        assert_eq!(s.admit(3, "k", Access::Write, 3), None);
        // A read behind the held write keeps its place: it would observe the write.
        assert_eq!(s.admit(4, "k", Access::Read, 4), None);
        assert_eq!(s.complete(1), vec![]);
        assert_eq!(s.complete(2), vec![(3, 3)]);
        assert_eq!(s.complete(3), vec![(4, 4)]);
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn reads_behind_a_write_are_released_together() {
        let mut s = Sequencer::new();
        assert!(s.admit(1, "k", Access::Write, 1).is_some());
        for h in 2..5 {
            assert!(s.admit(h, "k", Access::Read, h).is_none());
        }
        assert!(s.admit(5, "k", Access::Write, 5).is_none());
        assert_eq!(s.complete(1), vec![(2, 2), (3, 3), (4, 4)]);
        assert_eq!(s.complete(3), vec![]);
        assert_eq!(s.complete(2), vec![]);
        assert_eq!(s.complete(4), vec![(5, 5)]);
    }

    #[test]
    fn an_idle_sequencer_kept_for_the_next_requests_orders_them_as_a_new_one() {
        let mut s = Sequencer::new();
        for round in 0..3u64 {
            let first = round * 10;
            assert!(s
                .admit(first, String::from("k"), Access::Write, 1)
                .is_some());
            assert!(s
                .admit(first + 1, "k".to_owned(), Access::Read, 2)
                .is_none());
            assert!(s.admit(first + 2, "j", Access::Read, 3).is_some());
            assert_eq!(s.complete(first), vec![(first + 1, 2)]);
            assert_eq!(s.complete(first + 1), vec![]);
            assert_eq!(s.complete(first + 2), vec![]);
            assert!(s.is_idle());
        }
    }

    #[test]
    fn writes_of_one_key_run_one_at_a_time_in_order() {
        let mut s = Sequencer::new();
        assert!(s.admit(1, "k", Access::Write, 1).is_some());
        assert!(s.admit(2, "k", Access::Write, 2).is_none());
        assert!(s.admit(3, "k", Access::Write, 3).is_none());
        assert_eq!(s.complete(1), vec![(2, 2)]);
        assert_eq!(s.complete(2), vec![(3, 3)]);
        assert_eq!(s.complete(99), vec![], "an unknown handle releases nothing");
    }
}
