//! What must hold in the coordinator between any two inputs.

use super::{Coordinator, Timer};

impl Coordinator {
    pub(super) fn check_invariants_impl(&self) {
        self.driver.check_invariants();
        self.check_durability();
        self.timers.check_invariants();
        self.check_membership();
        self.check_keys();
        self.check_timers();
    }

    fn check_membership(&self) {
        assert_eq!(
            self.ring.len(),
            self.servers.len(),
            "ring and servers differ"
        );
        assert!(self.servers.keys().all(|id| self.ring.contains(*id)));
        assert!(
            self.ring.len() <= self.config.expected_servers,
            "more servers than expected"
        );
    }

    /// Every key state is busy, runs the transaction it names, and counts its queue
    /// and reads; every transaction belongs to its key; totals within their limits.
    fn check_keys(&self) {
        let mut queued = 0;
        let mut active = 0;
        let mut absorbed = 0;
        for (key, state) in &self.keys {
            assert!(!state.is_idle(), "idle key {key:?} kept");
            queued += state.queue.len();
            assert!(state.queue.len() <= self.config.max_queued_per_key);
            if let Some(txid) = state.active {
                active += 1;
                let update = self.driver.payload(txid);
                assert!(
                    update.is_some_and(|u| u.key == *key),
                    "key {key:?} names transaction {txid}, which is not its own"
                );
                if let Some(update) = update {
                    update.check_invariants(txid);
                    absorbed += update.absorbed.len();
                    assert!(update.absorbed.len() <= self.config.max_queued_per_key);
                }
            }
            let reads = self.reads.values().filter(|r| r.key() == key).count();
            assert_eq!(reads, state.reads, "reads of {key:?} miscounted");
        }
        assert_eq!(queued, self.queued_updates, "queued updates miscounted");
        assert_eq!(
            absorbed, self.absorbed_waiting,
            "absorbed updates miscounted"
        );
        assert_eq!(active, self.driver.len(), "a transaction without its key");
        assert!(
            self.driver.len() + self.queued_updates + self.absorbed_waiting
                <= self.config.max_updates,
            "updates over the limit"
        );
        assert!(
            self.answers_waiting <= self.config.max_updates,
            "answers waiting for their records over the limit"
        );
        assert!(
            self.reads.len() <= self.config.max_reads,
            "reads over the limit"
        );
    }

    /// Every timer has its subject, and every subject that needs a timer has one.
    fn check_timers(&self) {
        for timer in self.timers.kinds() {
            match timer {
                Timer::Queued { key, update } => assert!(
                    self.keys
                        .get(key)
                        .is_some_and(|s| s.queue.iter().any(|u| u.id() == *update)),
                    "queue timer of a gone update"
                ),
                Timer::Read(id) => assert!(self.reads.contains_key(id), "timer of a gone read"),
                Timer::Heartbeat => assert!(!self.servers.is_empty(), "heartbeat of nobody"),
            }
        }
        for id in self.reads.keys() {
            assert!(
                self.timers.deadline(&Timer::Read(*id)).is_some(),
                "read {id} without deadline"
            );
        }
        let heartbeat = self.timers.deadline(&Timer::Heartbeat).is_some();
        assert_eq!(
            heartbeat,
            !self.servers.is_empty(),
            "heartbeat armed iff servers"
        );
    }
}
