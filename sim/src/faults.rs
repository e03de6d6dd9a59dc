//! The fault schedule of the safety phase (the nemesis): crashes of nodes, and faults on
//! network paths. Each kind of fault comes at seeded, jittered intervals around its swarm
//! knob, and the whole schedule stops at the heal.

use rand::RngExt;

use crate::disk::CrashKind;
use crate::driver::{Event, World};
use crate::network::NodeId;
use crate::trace::name;

/// A fault put on one path for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathFault {
    /// Messages are lost, both ways or (half the time) one way only.
    Partition,
    /// Messages are held back, both ways.
    Clog,
}

impl World {
    /// Schedules the first fault of each kind the seed turned on.
    pub(crate) fn schedule_faults(&mut self) {
        let crash_every_ms = self.config.crashes.crash_every_ms;
        if crash_every_ms > 0 {
            self.schedule(crash_every_ms, Event::CrashTick);
        }
        for fault in [PathFault::Partition, PathFault::Clog] {
            let every_ms = self.every_ms(fault);
            if every_ms > 0 {
                self.schedule(every_ms, Event::PathFaultTick(fault));
            }
        }
    }

    fn every_ms(&self, fault: PathFault) -> u64 {
        match fault {
            PathFault::Partition => self.config.net.partition_every_ms,
            PathFault::Clog => self.config.net.clog_every_ms,
        }
    }

    /// Crashes a random crashable node, unless too many are down already, and schedules
    /// its restart and the next crash.
    pub(crate) fn crash_tick(&mut self) {
        if self.healed {
            return;
        }
        let faults = self.config.crashes.clone();
        let down = self.cluster.down().len();
        let up = self.cluster.crashable_up();
        if down < faults.max_down && !up.is_empty() {
            let coordinator_up = up.contains(&NodeId::Coordinator);
            let node = if coordinator_up && self.rng.random_bool(faults.coordinator) {
                NodeId::Coordinator
            } else {
                up[self.rng.random_range(0..up.len())]
            };
            let kind = if self.rng.random_bool(faults.machine) {
                CrashKind::Machine
            } else {
                CrashKind::Process
            };
            self.crash_for_a_while(node, kind);
        }
        let every_ms = faults.crash_every_ms;
        let next = self.rng.random_range(every_ms / 2..=every_ms * 3 / 2);
        self.schedule(self.now + next.max(1), Event::CrashTick);
    }

    /// A sync of `node`'s log is under way: its machine crashes now, if that run still
    /// runs and no more nodes than allowed are down. This is how a crash lands between a
    /// commit decision and its phase 2, or between a prepare and its vote.
    pub(crate) fn crash_in_sync(&mut self, node: NodeId, incarnation: u32) {
        let running = self.cluster.incarnation(node) == Some(incarnation);
        let down = self.cluster.down().len();
        let crashable = self.cluster.crashable_up().contains(&node);
        if self.healed || !running || !crashable || down >= self.config.crashes.max_down {
            return;
        }
        self.crash_for_a_while(node, CrashKind::Machine);
    }

    /// Crashes `node` and schedules its restart after a random downtime.
    fn crash_for_a_while(&mut self, node: NodeId, kind: CrashKind) {
        self.crash(node, kind);
        self.maybe_lose_disk(node);
        let down_ms = self.rng.random_range(1..=self.config.crashes.max_down_ms);
        self.schedule(self.now + down_ms, Event::Start { node });
    }

    /// Crashes `node` now; it stays down until it is started again.
    pub fn crash(&mut self, node: NodeId, kind: CrashKind) {
        let tear = self.config.crashes.tear;
        self.before_crash(node, kind);
        let Some(kept) = self.cluster.crash(node, kind, &mut self.rng, tear) else {
            return;
        };
        self.stats.crashes += 1;
        if kind == CrashKind::Machine {
            self.stats.machine_crashes += 1;
        }
        if node == NodeId::Coordinator {
            self.stats.coordinator_crashes += 1;
        }
        self.stats.torn_or_kept_bytes += kept as u64;
        self.node_changed(node, false);
        let what = match kind {
            CrashKind::Process => "process",
            CrashKind::Machine => "machine",
        };
        let node = name(node);
        let note = format!("{node} crashes ({what}; {kept} unsynced bytes survive)");
        self.trace.note(self.now, &note);
    }

    /// Cuts or clogs a random path that carried messages for a while, and schedules the
    /// next such fault.
    pub(crate) fn path_fault_tick(&mut self, fault: PathFault) {
        if self.healed {
            return;
        }
        if let Some((a, b)) = self.network.pick_path(&mut self.rng) {
            let lasts_ms = match fault {
                PathFault::Partition => 100..3000,
                PathFault::Clog => 50..2000,
            };
            let until = self.now + self.rng.random_range(lasts_ms);
            // Which end is cut off from the other, if only one way.
            let (a, b) = if self.rng.random_bool(0.5) {
                (a, b)
            } else {
                (b, a)
            };
            let one_way = fault == PathFault::Partition && self.rng.random_bool(0.5);
            match fault {
                PathFault::Partition => self.network.partition(a, b, one_way, until),
                PathFault::Clog => self.network.clog(a, b, until),
            }
            let arrow = if one_way { "->" } else { "<->" };
            let (a, b) = (name(a), name(b));
            let note = format!("path {a} {arrow} {b}: {fault:?} until {until} ms");
            self.trace.note(self.now, &note);
        }
        let every_ms = self.every_ms(fault);
        let next = self.rng.random_range(every_ms / 2..=every_ms * 3 / 2);
        self.schedule(self.now + next.max(1), Event::PathFaultTick(fault));
    }
}
