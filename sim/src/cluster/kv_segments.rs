//! A KV server's log as segments, sealed and merged as its shell does it (`net`'s
//! `segments`), so that merges meet every fault the simulator makes: a segment is
//! sealed once the active file holds `segment_bytes` and every write is durable; right
//! after a seal, when the sealed files hold more than twice what the last merge kept,
//! they are merged from the replica's plan. The merge is installed some milliseconds
//! later, as a thread of the shell finishes it, while the server goes on; a crash before
//! then loses it and leaves the sealed files. Recovery reads the sealed files in order,
//! skipping the rest of each merged range, then the active file.

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::log::{after_prefix_from, AfterPrefix};
use ringkv_core::proto::TxId;
use ringkv_core::replica::compaction::{write_compacted, Moved};
use ringkv_core::replica::{LogReader, RecoveryReport, Replica, ReplicaConfig, ReplicaRecovery};
use ringkv_core::Ts;

use super::outbox::Outbox;
use crate::disk::{Journal, SimDisk};

/// The longest a merge takes, from the seal to its installation.
const MAX_MERGE_MS: Ts = 40;

/// A merge written and not yet installed.
#[derive(Debug)]
struct PendingMerge {
    start: usize,
    end: usize,
    bytes: Vec<u8>,
    moves: Vec<Moved>,
    install_at: Ts,
}

/// When the server seals and merges, and the merge under way.
#[derive(Debug)]
pub(crate) struct Segments {
    segment_bytes: usize,
    /// What the last merge kept: the next is due once the sealed files hold twice that.
    live_bytes: usize,
    pending: Option<PendingMerge>,
    /// Draws how long each merge takes.
    rng: ChaCha8Rng,
}

impl Segments {
    /// Seals at `segment_bytes`; merge times drawn from `seed`.
    pub(crate) fn new(segment_bytes: usize, seed: u64) -> Self {
        assert!(segment_bytes > 0, "an empty segment");
        Self {
            segment_bytes,
            live_bytes: 0,
            pending: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// When the merge under way is installed.
    pub(crate) fn poll_timeout(&self) -> Option<Ts> {
        self.pending.as_ref().map(|merge| merge.install_at)
    }

    /// At the end of a turn: seals the active file if it is full and every write is
    /// durable (and reported to the replica), then starts a merge if one is due.
    pub(crate) fn after_turn(
        &mut self,
        now: Ts,
        (journal, disk): (&Journal, &SimDisk),
        replica: &Replica<SimDisk>,
        out: &mut Outbox,
    ) {
        let active_bytes = disk.len() - disk.active_start();
        if !journal.is_idle() || active_bytes < self.segment_bytes {
            return;
        }
        let end = disk.seal();
        out.note(format!("segment sealed at {end}"));
        if self.pending.is_none() && self.merge_due(disk) {
            self.start_merge(now, end, disk, replica, out);
        }
    }

    /// As the shell decides it: plain sealed files exist, and the sealed files hold more
    /// than twice what the last merge kept and at least a segment.
    fn merge_due(&self, disk: &SimDisk) -> bool {
        let sealed = disk.sealed();
        let plain = sealed
            .iter()
            .any(|file| file.covers_end == file.start + file.bytes.len());
        let sealed_bytes: usize = sealed.iter().map(|file| file.bytes.len()).sum();
        plain
            && sealed_bytes > self.live_bytes.saturating_mul(2)
            && sealed_bytes >= self.segment_bytes
    }

    /// Writes the merge of the sealed files before `end` now, from the replica's plan
    /// taken right after the seal, and installs it later. A read that fails leaves the
    /// sealed files as they are, as a failed merge does.
    fn start_merge(
        &mut self,
        now: Ts,
        end: usize,
        disk: &SimDisk,
        replica: &Replica<SimDisk>,
        out: &mut Outbox,
    ) {
        let Some(start) = disk.sealed().first().map(|file| file.start) else {
            return;
        };
        let plan = replica.compaction_plan(end as u64);
        let read = |loc: ringkv_core::storage::ValueLoc| -> Result<String, String> {
            let bytes = disk
                .read_at(loc.offset, loc.len as usize)
                .map_err(|err| err.0)?;
            String::from_utf8(bytes).map_err(|_| format!("a value at {} not UTF-8", loc.offset))
        };
        let mut bytes = Vec::new();
        let emit = |frame: &[u8]| -> Result<(), String> {
            bytes.extend_from_slice(frame);
            Ok(())
        };
        match write_compacted(&plan, start as u64, read, emit) {
            Ok(moves) => {
                let install_at = now + self.rng.random_range(0..=MAX_MERGE_MS);
                out.note(format!(
                    "merging {start}..{end} into {} bytes, installed at {install_at}",
                    bytes.len()
                ));
                self.pending = Some(PendingMerge {
                    start,
                    end,
                    bytes,
                    moves,
                    install_at,
                });
            }
            Err(err) => {
                out.note(format!("merging {start}..{end} failed: {err}"));
                self.live_bytes = self.live_bytes.max(end - start);
            }
        }
    }

    /// Installs the merge under way if its time came: the merged file takes the sealed
    /// files' place, and the replica moves its values. A replica recovered from the log
    /// after it must hold what one recovered before it holds, or the run fails.
    pub(crate) fn install_if_due(
        &mut self,
        now: Ts,
        disk: &SimDisk,
        replica: &mut Replica<SimDisk>,
        out: &mut Outbox,
    ) {
        if self
            .pending
            .as_ref()
            .is_none_or(|merge| merge.install_at > now)
        {
            return;
        }
        let Some(merge) = self.pending.take() else {
            return;
        };
        self.live_bytes = merge.bytes.len();
        out.note(format!(
            "merge of {}..{} installed, {} bytes",
            merge.start,
            merge.end,
            merge.bytes.len()
        ));
        let before = recovered_state(disk);
        disk.install_merge(merge.start, merge.end, merge.bytes);
        replica.relocate(merge.start as u64, merge.end as u64, &merge.moves);
        out.segment_merges += 1;
        let after = recovered_state(disk);
        if before != after {
            out.anomaly(format!(
                "the log merged at {}..{} recovers to {after:?}, before the merge to {before:?}",
                merge.start, merge.end
            ));
        }
    }
}

/// What a replica recovered from `disk` (read without faults) holds: its committed
/// values and the transactions in doubt, or why it could not be read.
type Recovered = Result<(BTreeMap<String, String>, Vec<TxId>), String>;

fn recovered_state(disk: &SimDisk) -> Recovered {
    let (replica, _) = recover(ReplicaConfig::default(), &disk.copy_without_faults())?;
    let mut values = BTreeMap::new();
    for key in replica.committed_keys() {
        let value = replica.committed_value(key).map_err(|err| err.0)?;
        let value = value.ok_or_else(|| format!("{key:?} is listed without a value"))?;
        values.insert(key.to_owned(), value);
    }
    Ok((values, replica.in_doubt().collect()))
}

/// Rebuilds a replica from `disk` as the shell does: the sealed files in order (the
/// rest of a merged range skipped), then the active file, whose end is judged for a
/// torn tail. Errors are breaks of the model (a sealed file that does not end at a
/// frame's end), for the run's anomalies.
pub(crate) fn recover(
    config: ReplicaConfig,
    disk: &SimDisk,
) -> Result<(Replica<SimDisk>, RecoveryReport), String> {
    let active = disk.contents();
    let sealed = disk.sealed();
    if sealed.is_empty() {
        return Replica::recover(config, &active, disk.clone()).map_err(|err| err.to_string());
    }
    let mut recovery =
        ReplicaRecovery::start(config, disk.clone()).map_err(|err| err.to_string())?;
    for file in &sealed {
        if file.start as u64 != recovery.decoded_to() {
            return Err(format!(
                "a sealed file at {} where the log reached {}",
                file.start,
                recovery.decoded_to()
            ));
        }
        let used = recovery.feed(&file.bytes, false);
        if used != file.bytes.len() || recovery.is_done() {
            return Err(format!(
                "the sealed file at {} is not whole frames",
                file.start
            ));
        }
        if file.covers_end as u64 > recovery.decoded_to() {
            recovery.skip_to(file.covers_end as u64);
        }
    }
    let active_start = disk.active_start();
    if recovery.decoded_to() != active_start as u64 {
        return Err(format!(
            "the active file at {active_start} where the log reached {}",
            recovery.decoded_to()
        ));
    }
    recovery.feed(&active, true);
    let decoded_to = recovery.decoded_to();
    let rest = usize::try_from(decoded_to)
        .ok()
        .and_then(|at| active.get(at.checked_sub(active_start)?..))
        .unwrap_or_default();
    let after = match after_prefix_from(rest, decoded_to, recovery.prefix_end()) {
        AfterPrefix::ValidFrameAt(at) => AfterPrefix::ValidFrameAt(decoded_to + at),
        other => other,
    };
    Ok(recovery.finish(after))
}

#[cfg(test)]
mod tests {
    use ringkv_core::proto::{ParticipantRequest, TxOp};
    use ringkv_core::replica::{ReplicaInput, ReplicaOutput};
    use ringkv_core::{ReplyTo, Role};

    use super::*;

    /// A replica over a segmented simulated disk, each request carried to its durable
    /// end as the cluster's node does it.
    struct Server {
        disk: SimDisk,
        journal: Journal,
        replica: Replica<SimDisk>,
        segments: Segments,
        out: Outbox,
    }

    impl Server {
        fn start(disk: SimDisk) -> Self {
            // A one-entry cache: reads go to the log, where the merge moved the values.
            let config = ReplicaConfig {
                cache: ringkv_core::cache::CacheConfig { sets: 1, ways: 1 },
                ..ReplicaConfig::default()
            };
            let (replica, report) = recover(config, &disk).unwrap();
            assert!(report.anomalies.is_empty() && !report.after.is_corruption());
            disk.truncate_and_sync(report.valid_len as usize);
            Self {
                disk,
                journal: Journal::default(),
                replica,
                segments: Segments::new(256, 1),
                out: Outbox::default(),
            }
        }

        fn send(&mut self, msg: ParticipantRequest) {
            let input = ReplicaInput::Request {
                from: ReplyTo(1),
                msg,
                to: None,
            };
            self.replica.handle(0, input);
            loop {
                while let Some(output) = self.replica.poll_output() {
                    if let ReplicaOutput::Persist { token, bytes, .. } = output {
                        self.journal.write(&self.disk, token.0, &bytes);
                    }
                }
                if !self.journal.start_sync() {
                    break;
                }
                let token = self.journal.finish_sync(&self.disk).unwrap();
                let token = ringkv_core::replica::PersistToken(token);
                self.replica.handle(0, ReplicaInput::Persisted { token });
            }
            let log = (&self.journal, &self.disk);
            self.segments
                .after_turn(0, log, &self.replica, &mut self.out);
        }

        fn put(&mut self, txid: TxId, key: &str, value: &str, commit: bool) {
            let op = TxOp::Put {
                value: value.into(),
            };
            let key = key.into();
            self.send(ParticipantRequest::Prepare { txid, key, op });
            if commit {
                self.send(ParticipantRequest::Commit { txid });
            }
        }

        fn state(&self) -> (Vec<(String, String)>, Vec<TxId>) {
            let values = self
                .replica
                .committed_keys()
                .map(|key| {
                    let value = self.replica.committed_value(key).unwrap().unwrap();
                    (key.to_owned(), value)
                })
                .collect();
            (values, self.replica.in_doubt().collect())
        }
    }

    #[test]
    fn a_merge_installed_after_the_server_went_on_recovers_the_same_state() {
        let mut server = Server::start(SimDisk::new(0));
        let put_round = |server: &mut Server, round: u64| {
            let (key, value) = (format!("k{}", round % 3), format!("v{round}"));
            server.put(round, &key, &value, true);
        };
        for round in 1..=10 {
            put_round(&mut server, round);
        }
        // In doubt across the seal that starts a merge: one decided while the merge is
        // under way (and a carried value replaced then), one after its install.
        server.put(100, "doubt", "decided before the install", false);
        server.put(102, "late", "decided after the install", false);
        let prepared_end = server.disk.len();
        let mut round = 10;
        loop {
            let pending = server.segments.pending.as_ref();
            if pending.is_some_and(|merge| merge.end >= prepared_end) {
                break;
            }
            if pending.is_some() {
                // A merge of what came before the prepares: installed, and on.
                let (disk, replica, out) = (&server.disk, &mut server.replica, &mut server.out);
                server.segments.install_if_due(Ts::MAX, disk, replica, out);
            }
            round += 1;
            assert!(round < 100, "no merge started");
            put_round(&mut server, round);
        }
        server.send(ParticipantRequest::Commit { txid: 100 });
        server.put(round + 1, "k0", "after the plan", true);
        server.put(101, "k1", "in doubt at the end", false);
        let before = server.state();
        assert_eq!(before.1, [101, 102]);
        let installed = server.out.segment_merges;
        let now = Ts::MAX;
        let (disk, replica, out) = (&server.disk, &mut server.replica, &mut server.out);
        server.segments.install_if_due(now, disk, replica, out);
        assert_eq!(server.out.segment_merges, installed + 1);
        assert!(
            server.out.anomalies.is_empty(),
            "{:?}",
            server.out.anomalies
        );
        assert_eq!(server.state(), before, "read through the moved values");
        let merged = server.disk.sealed().first().cloned().unwrap();
        let dropped = merged.bytes.len() < merged.covers_end;
        assert!(dropped, "the merge dropped records");

        // Its value moved with its prepare (read from the log: another write takes
        // the cache's one entry).
        server.send(ParticipantRequest::Commit { txid: 102 });
        server.put(round + 2, "k2", "takes the cache", true);
        let after = server.state();
        assert_eq!(after.1, [101]);
        let value = |key: &str| {
            after
                .0
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(value("late"), Some("decided after the install"));
        assert_eq!(value("doubt"), Some("decided before the install"));
        assert_eq!(value("k0"), Some("after the plan"));
        assert_eq!(value("k2"), Some("takes the cache"));

        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let crash = crate::disk::CrashKind::Machine;
        server.disk.crash(crash, &mut rng, 1.0);
        let restarted = Server::start(server.disk.clone());
        assert_eq!(restarted.state(), after);
    }
}
