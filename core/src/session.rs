//! Program order within one connection. Requests pipelined on a connection are answered
//! in order anyway; the sequencer also makes them take effect in order where it matters:
//! a request on a key waits until the connection's earlier requests on that key that it
//! could observe, or that could observe it, are answered. Reads of a key run side by
//! side; a write waits for every earlier request on its key; a read waits for earlier
//! writes of its key. Requests on other keys do not wait, so pipelines stay concurrent
//! (keys are told apart by a 64-bit hash, [`KeyHash`]: two keys sharing one would only
//! be ordered as one key).
//!
//! This gives a pipelining client read-your-writes: `put k v` then `get k` in one batch
//! reads `v`. Holding costs little: the held request's answer could not be sent before
//! the earlier answer anyway.

use std::collections::VecDeque;

/// How a request touches its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// It only reads.
    Read,
    /// It may change the key.
    Write,
}

/// A key as the sequencer tells keys apart: its 64-bit hash, so that the sequencer
/// keeps no copy of the key and compares two keys as two integers. Two keys with one
/// hash (a chance of 2^-64 for a pair) are ordered as one key: a request may then wait
/// for another it need not wait for, never the other way, so program order still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHash(u64);

impl KeyHash {
    /// The hash of `key`.
    pub fn of(key: &str) -> Self {
        Self(xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
    }
}

/// The ordering state of one connection; `T` is the request as the caller holds it.
///
/// Requests are kept in two short lists searched from end to end: a connection has at
/// most a few hundred requests under way (the port's in-flight limit), usually one or a
/// few, and maps keyed by the key string cost more per request (copies of the key,
/// nodes allocated and freed) than scanning the lists, which profiles showed as a large
/// share of a cached GET.
#[derive(Debug)]
pub struct Sequencer<T> {
    /// Requests dispatched and not yet answered: handle, key, access.
    running: Vec<(u64, KeyHash, Access)>,
    /// Requests waiting for their turn, in arrival order.
    held: VecDeque<(u64, KeyHash, Access, T)>,
}

impl<T> Default for Sequencer<T> {
    fn default() -> Self {
        Self {
            running: Vec::new(),
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
    /// [`Sequencer::complete`] releases it.
    pub fn admit(&mut self, handle: u64, key: &str, access: Access, request: T) -> Option<T> {
        self.admit_hashed(handle, KeyHash::of(key), access, request)
    }

    /// [`Sequencer::admit`] for a caller that hashed the key already (and may then hand
    /// over the request the key belongs to).
    pub fn admit_hashed(
        &mut self,
        handle: u64,
        key: KeyHash,
        access: Access,
        request: T,
    ) -> Option<T> {
        let earlier_held = self.held.iter().any(|(_, k, _, _)| *k == key);
        if earlier_held || !self.may_run(key, access) {
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
        let Some(at) = self.running.iter().position(|(h, _, _)| *h == handle) else {
            return Vec::new();
        };
        let (_, key, _) = self.running.swap_remove(at);
        if self.held.is_empty() {
            return Vec::new();
        }
        self.release(key)
    }

    /// Requests held, waiting for earlier ones.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is in flight or held.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.held.is_empty()
    }

    fn may_run(&self, key: KeyHash, access: Access) -> bool {
        self.running
            .iter()
            .filter(|(_, k, _)| *k == key)
            .all(|(_, _, a)| access == Access::Read && *a == Access::Read)
    }

    fn dispatch(&mut self, handle: u64, key: KeyHash, access: Access) {
        assert!(
            self.running.iter().all(|(h, _, _)| *h != handle),
            "handle {handle} admitted twice"
        );
        self.running.push((handle, key, access));
    }

    /// Releases the held requests of `key` that may run now: the oldest, and the reads
    /// right behind a read.
    fn release(&mut self, key: KeyHash) -> Vec<(u64, T)> {
        let mut released = Vec::new();
        while let Some(at) = self.held.iter().position(|(_, k, _, _)| *k == key) {
            let access = self.held.get(at).map(|(_, _, a, _)| *a);
            let Some(access) = access.filter(|&a| self.may_run(key, a)) else {
                break;
            };
            let Some((handle, _, _, request)) = self.held.remove(at) else {
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
            assert!(s.admit(first, "k", Access::Write, 1).is_some());
            let hashed = s.admit_hashed(first + 1, KeyHash::of("k"), Access::Read, 2);
            assert!(hashed.is_none());
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
