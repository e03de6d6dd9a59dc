//! The durability pipeline: log frames are appended in order, each write named by a
//! token; actions that promise durability (a `ready` vote, an `ack`) wait inside the core
//! until the caller reports the token durable (raft-rs's persisted messages).
//!
//! A report of token `t` covers every earlier token too: writes reach the disk in the
//! order they were asked for, and one sync covers all of them (group commit).

use std::collections::VecDeque;

use crate::log::{encode_frame, frame_len, FRAME_HEADER_BYTES};

/// Which durable write an action waits for; tokens grow with every append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistToken(pub u64);

/// How soon the caller must start the sync that makes a write durable.
///
/// Every write is made durable before anything that depends on it is said, whatever its
/// urgency; urgency only says whether a client's answer is waiting behind it. A commit
/// record a replica writes in phase 2 frees the key for its next update once durable,
/// but the client was answered already: synced on its own, it doubled the fsyncs of a
/// write (each costs tens of microseconds of CPU here) and made the next write's prepare
/// wait behind it. Deferred, it rides with the next urgent sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncUrgency {
    /// An answer waits for it (a `ready` vote, a client's `Success`): sync at once.
    Now,
    /// Nothing a client waits for depends on it: it may wait for the next sync, for at
    /// most the caller's bounded delay.
    Deferrable,
    /// Nothing ever waits for it (no action may be deferred on its token): it reaches the
    /// disk with the next sync of another write, and starts none of its own.
    Never,
}

/// The output that asks the caller to append `bytes` (whole log frames) to the log, make
/// them durable, and then report `Persisted { token }`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a write nobody performs is never durable"]
pub struct Persist {
    /// Names this write.
    pub token: PersistToken,
    /// Whole log frames to append.
    pub bytes: Vec<u8>,
}

/// One appended frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "the write must reach the caller as an output"]
pub struct Appended {
    /// The write to hand to the caller.
    pub persist: Persist,
    /// Where the frame's payload starts in the log.
    pub payload_offset: u64,
}

/// The token of what was read back at recovery: durable before the role started.
const RECOVERED: PersistToken = PersistToken(0);

/// Appends and the actions waiting for them, of type `A`.
#[derive(Clone, Debug)]
pub struct Durability<A> {
    /// Bytes in the log, counting writes asked for and not yet durable.
    log_len: u64,
    next_token: u64,
    /// Every token below this one is durable.
    durable_below: u64,
    waiting: VecDeque<(PersistToken, A)>,
    max_waiting: usize,
}

impl<A> Durability<A> {
    /// A pipeline over a log of `log_len` durable bytes, holding at most `max_waiting`
    /// actions.
    pub fn new(log_len: u64, max_waiting: usize) -> Self {
        assert!(max_waiting > 0, "a pipeline must hold at least one action");
        Self {
            log_len,
            // Token 0 stands for what was durable before the role started.
            next_token: RECOVERED.0 + 1,
            durable_below: RECOVERED.0 + 1,
            waiting: VecDeque::new(),
            max_waiting,
        }
    }

    /// The token of records that were durable before the role started.
    pub fn recovered_token() -> PersistToken {
        RECOVERED
    }

    /// Frames `payload` and appends it; the caller must output the returned write.
    pub fn append(&mut self, payload: &[u8]) -> Appended {
        let mut bytes = Vec::with_capacity(frame_len(payload.len()));
        encode_frame(payload, &mut bytes);
        let payload_offset = self.log_len + FRAME_HEADER_BYTES as u64;
        self.log_len += bytes.len() as u64;
        let token = PersistToken(self.next_token);
        self.next_token += 1;
        Appended {
            persist: Persist { token, bytes },
            payload_offset,
        }
    }

    /// Whether `extra` more actions fit; callers ask before they defer, and answer
    /// `overloaded` when they do not.
    pub fn has_room(&self, extra: usize) -> bool {
        self.waiting.len() + extra <= self.max_waiting
    }

    /// Holds `action` until `token` is durable; hands it back at once if it already is.
    #[must_use = "an action handed back must run now"]
    pub fn defer(&mut self, token: PersistToken, action: A) -> Option<A> {
        assert!(token.0 < self.next_token, "deferred on an unwritten token");
        if self.is_durable(token) {
            return Some(action);
        }
        assert!(self.has_room(1), "deferred beyond the limit without asking");
        // Kept in token order (a repeated prepare waits on an older write than what is
        // queued), so that each action runs as soon as its own write is durable.
        let at = self.waiting.partition_point(|(t, _)| *t <= token);
        self.waiting.insert(at, (token, action));
        None
    }

    /// Whether `token` is durable.
    pub fn is_durable(&self, token: PersistToken) -> bool {
        token.0 < self.durable_below
    }

    /// The caller reports `token`, and so every earlier one, durable; drain the actions
    /// that became ready with [`Durability::pop_ready`].
    pub fn persisted(&mut self, token: PersistToken) {
        assert!(
            token.0 >= self.durable_below && token.0 < self.next_token,
            "persisted token {} out of order (durable below {}, next {})",
            token.0,
            self.durable_below,
            self.next_token
        );
        self.durable_below = token.0 + 1;
    }

    /// The next action whose write is durable, in the order they were deferred.
    #[must_use]
    pub fn pop_ready(&mut self) -> Option<A> {
        let (token, _) = self.waiting.front()?;
        if !self.is_durable(*token) {
            return None;
        }
        self.waiting.pop_front().map(|(_, action)| action)
    }

    /// The log was replaced by a compacted one of `new_len` bytes that holds the effect
    /// of every write so far: appends go on from there, and tokens go on as they were.
    /// Legal only if the log is still `built_len` long (nothing was appended since the
    /// compacted log was built from the role's state) and every write is durable (the
    /// replacement was installed durably and reported).
    pub fn rebase(&mut self, built_len: u64, new_len: u64) {
        assert_eq!(
            self.log_len, built_len,
            "appended to the log after its compaction was built"
        );
        assert_eq!(
            self.durable_below, self.next_token,
            "the log replaced while a write was not durable"
        );
        self.log_len = new_len;
    }

    /// The log's length in bytes, counting writes not yet durable.
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Whether every write is durable and no action waits for one.
    pub fn is_settled(&self) -> bool {
        self.waiting.is_empty() && self.durable_below == self.next_token
    }

    /// Actions waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Waiting tokens ascend, lie between what is durable and what was written, and stay
    /// within the limit.
    pub fn check_invariants(&self) {
        assert!(
            self.durable_below <= self.next_token,
            "durable beyond written"
        );
        assert!(
            self.waiting.len() <= self.max_waiting,
            "waiting over its limit"
        );
        let mut last = 0;
        for (token, _) in &self.waiting {
            assert!(token.0 >= last, "waiting tokens out of order");
            assert!(token.0 < self.next_token, "waiting on an unwritten token");
            last = token.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_wait_for_their_token_and_a_report_covers_earlier_tokens() {
        let mut d: Durability<&str> = Durability::new(100, 4);
        let first = d.append(b"one");
        assert_eq!(first.payload_offset, 100 + FRAME_HEADER_BYTES as u64);
        let second = d.append(b"two");
        assert!(second.persist.token > first.persist.token);
        assert_eq!(d.log_len(), 100 + 2 * frame_len(3) as u64);
        assert_eq!(d.defer(second.persist.token, "b"), None);
        assert_eq!(d.defer(first.persist.token, "a"), None);
        assert_eq!(
            d.defer(Durability::<&str>::recovered_token(), "now"),
            Some("now")
        );
        d.check_invariants();
        assert_eq!(d.pop_ready(), None);
        d.persisted(first.persist.token);
        assert_eq!(
            d.pop_ready(),
            Some("a"),
            "an older write's action runs first"
        );
        assert_eq!(d.pop_ready(), None);
        d.persisted(second.persist.token);
        assert_eq!(d.pop_ready(), Some("b"));
        assert_eq!(d.pop_ready(), None);
        assert_eq!(d.defer(first.persist.token, "late"), Some("late"));
        assert!(d.has_room(4) && !d.has_room(5));
    }

    #[test]
    fn a_rebased_log_appends_from_its_new_length_with_the_same_tokens() {
        let mut d: Durability<()> = Durability::new(50, 1);
        let a = d.append(b"x");
        d.persisted(a.persist.token);
        let built = d.log_len();
        d.rebase(built, 10);
        let b = d.append(b"y");
        assert_eq!(b.payload_offset, 10 + FRAME_HEADER_BYTES as u64);
        assert!(b.persist.token > a.persist.token);
        assert!(d.is_durable(a.persist.token) && !d.is_durable(b.persist.token));
    }

    #[test]
    fn a_rebase_moves_appends_to_the_new_length_once_everything_is_durable() {
        let mut d: Durability<&str> = Durability::new(100, 4);
        let first = d.append(b"one");
        assert!(!d.is_settled());
        d.persisted(first.persist.token);
        assert!(d.is_settled());
        let built = d.log_len();
        d.rebase(built, 20);
        assert_eq!(d.log_len(), 20);
        let next = d.append(b"two");
        assert_eq!(next.payload_offset, 20 + FRAME_HEADER_BYTES as u64);
        assert!(next.persist.token > first.persist.token, "tokens go on");
    }

    #[test]
    #[should_panic(expected = "not durable")]
    fn a_log_is_not_rebased_over_a_write_not_durable() {
        let mut d: Durability<()> = Durability::new(0, 1);
        let _ = d.append(b"x");
        let len = d.log_len();
        d.rebase(len, 0);
    }

    #[test]
    #[should_panic(expected = "after its compaction was built")]
    fn a_log_is_not_rebased_after_an_append_it_does_not_hold() {
        let mut d: Durability<()> = Durability::new(0, 1);
        let built = d.log_len();
        let a = d.append(b"x");
        d.persisted(a.persist.token);
        d.rebase(built, 0);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn a_report_cannot_go_back() {
        let mut d: Durability<()> = Durability::new(0, 1);
        let a = d.append(b"x");
        d.persisted(a.persist.token);
        d.persisted(a.persist.token);
    }
}
