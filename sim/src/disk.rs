//! A simulated disk: one append-only log file per node, with a page cache. A process crash
//! leaves the page cache to the OS, so every unsynced write survives; a machine crash
//! loses it, or keeps a random prefix whose last part may be torn. Writes carry the stamp
//! the shells give them (where the log was durable as they were written). Reads of stored
//! data may fail with a seeded chance, as an I/O error would.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::replica::{LogReader, StorageError, SyncUrgency};
use ringkv_core::Ts;

/// What a crash took down, which decides what the page cache keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// Only the process died: the OS still holds and will write every unsynced byte.
    Process,
    /// The machine died: unsynced bytes are lost, or a prefix of them reached the platter.
    Machine,
}

/// The bytes of one node's log and its read faults.
#[derive(Debug)]
struct DiskState {
    /// Everything written, synced or not (what reads see).
    bytes: Vec<u8>,
    /// How much of `bytes` is durable.
    durable_len: usize,
    /// Chance that one read fails.
    read_failure: f64,
    /// Decides read failures; seeded per disk, so a disk's faults do not shift when another
    /// node reads more or less.
    rng: ChaCha8Rng,
    /// Reads failed so far, to show a run exercised them.
    failed_reads: u64,
    /// The data directory's incarnation file (eventual nodes): written and synced once
    /// when a node starts on an empty directory, lost only with the whole disk.
    incarnation: Option<u64>,
}

/// A node's disk, shared between the world (writes, syncs, crashes) and the role running
/// on it (reads through [`LogReader`]).
#[derive(Clone, Debug)]
pub struct SimDisk(Rc<RefCell<DiskState>>);

impl SimDisk {
    /// An empty disk whose read faults are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Rc::new(RefCell::new(DiskState {
            bytes: Vec::new(),
            durable_len: 0,
            read_failure: 0.0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            failed_reads: 0,
            incarnation: None,
        })))
    }

    /// Sets the chance that a read fails (0 when the faults stop).
    pub fn set_read_failure(&self, chance: f64) {
        self.0.borrow_mut().read_failure = chance;
    }

    /// Reads that failed so far.
    pub fn failed_reads(&self) -> u64 {
        self.0.borrow().failed_reads
    }

    /// Appends bytes to the page cache; returns the length written so far.
    pub fn write(&self, bytes: &[u8]) -> usize {
        let mut state = self.0.borrow_mut();
        state.bytes.extend_from_slice(bytes);
        state.bytes.len()
    }

    /// Makes the first `len` bytes durable (a sync that covered them completed).
    pub fn sync_to(&self, len: usize) {
        let mut state = self.0.borrow_mut();
        assert!(len <= state.bytes.len(), "sync beyond what was written");
        state.durable_len = state.durable_len.max(len);
    }

    /// How much of the file is durable: where the log ends as far as a sync has shown.
    pub fn durable_len(&self) -> usize {
        self.0.borrow().durable_len
    }

    /// The crash. A process crash keeps everything; a machine crash keeps the durable
    /// bytes and a random prefix of the rest, whose last part may be torn (garbled) with
    /// chance `tear`. Returns how many unsynced bytes survived.
    pub fn crash(&self, kind: CrashKind, rng: &mut ChaCha8Rng, tear: f64) -> usize {
        let mut state = self.0.borrow_mut();
        let unsynced = state.bytes.len() - state.durable_len;
        if kind == CrashKind::Process || unsynced == 0 {
            return unsynced;
        }
        let kept = rng.random_range(0..=unsynced);
        let new_len = state.durable_len + kept;
        state.bytes.truncate(new_len);
        if kept > 0 && rng.random_bool(tear) {
            // The tear garbles the end of what was kept, within its last frame header's
            // length: a crash tears the tail, and valid frames after a bad one would be
            // corruption, which recovery refuses instead of cutting.
            let from = new_len
                .saturating_sub(ringkv_core::log::FRAME_HEADER_BYTES)
                .max(state.durable_len);
            let at = rng.random_range(from..new_len);
            if let Some(byte) = state.bytes.get_mut(at) {
                *byte ^= rng.random_range(1..=255u8);
            }
        }
        kept
    }

    /// The whole file as it is now (what a restarting node reads).
    pub fn contents(&self) -> Vec<u8> {
        self.0.borrow().bytes.clone()
    }

    /// Puts `bytes` durably in the place of the whole file, as the shells install a
    /// compacted log (written aside, synced, renamed over the old one, the directory
    /// synced): a crash finds the old file or the new one, never a mix.
    pub fn replace_all(&self, bytes: &[u8]) {
        let mut state = self.0.borrow_mut();
        state.bytes = bytes.to_vec();
        state.durable_len = state.bytes.len();
    }

    /// Cuts the file to `len` bytes and makes it durable (recovery dropped a torn tail and
    /// synced what it replayed, so that it never acts on bytes a later crash could lose).
    pub fn truncate_and_sync(&self, len: usize) {
        let mut state = self.0.borrow_mut();
        state.bytes.truncate(len);
        state.durable_len = state.bytes.len();
    }

    /// The incarnation kept in the data directory, if one was written since the disk was
    /// last wiped: an eventual node recovers under it, or takes a new one when it is gone.
    pub fn incarnation(&self) -> Option<u64> {
        self.0.borrow().incarnation
    }

    /// Writes (and syncs) the data directory's incarnation file.
    pub fn set_incarnation(&self, incarnation: u64) {
        self.0.borrow_mut().incarnation = Some(incarnation);
    }

    /// The disk is lost (replaced by an empty one): the log and the incarnation file are
    /// gone, as after a failed drive, so the node's next run starts from nothing.
    pub fn wipe(&self) {
        let mut state = self.0.borrow_mut();
        state.bytes.clear();
        state.durable_len = 0;
        state.incarnation = None;
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.0.borrow().bytes.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LogReader for SimDisk {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let mut state = self.0.borrow_mut();
        let chance = state.read_failure;
        if chance > 0.0 && state.rng.random_bool(chance) {
            state.failed_reads += 1;
            return Err(StorageError(format!(
                "simulated I/O error at {offset}+{len}"
            )));
        }
        let start = usize::try_from(offset).map_err(|_| StorageError("offset too large".into()))?;
        state
            .bytes
            .get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StorageError(format!("read past the end at {offset}+{len}")))
    }
}

/// The longest a deferrable write waits for a sync: the simulator's smallest step (the
/// net shells' sync thread lingers 300 us).
pub const DEFERRED_SYNC_MS: Ts = 1;

/// Group commit for one run of a node: writes wait in the page cache until a sync starts,
/// and one sync covers everything written before it started. It lives and dies with the
/// process, as the shell's write queue does. A deferrable write (a decision record whose
/// client was answered) waits for the next urgent sync, a hastening, or
/// [`DEFERRED_SYNC_MS`], as in the net shells.
#[derive(Debug, Default)]
pub struct Journal {
    /// Tokens written and not yet covered by a sync, with the log length after each.
    unsynced: VecDeque<(u64, usize)>,
    /// The sync under way: the last token and log length it covers.
    syncing: Option<(u64, usize)>,
    /// An unsynced write an answer waits for.
    urgent: bool,
    /// When the oldest unsynced deferrable write was made.
    deferred_since: Option<Ts>,
}

impl Journal {
    /// Appends the write named `token` to `disk`; an answer waits for it.
    pub fn write(&mut self, disk: &SimDisk, token: u64, bytes: &[u8]) {
        self.write_with(disk, token, bytes, SyncUrgency::Now, 0);
    }

    /// Appends the write named `token` (whole frames), made at `now`, to `disk`, stamped
    /// with where the log is durable as it is written.
    pub fn write_with(
        &mut self,
        disk: &SimDisk,
        token: u64,
        bytes: &[u8],
        urgency: SyncUrgency,
        now: Ts,
    ) {
        // Stamped as the shells stamp every write into space allocated ahead: with where
        // the log is durable now, never more (a sync under way has not yet shown its end).
        let mut stamped = bytes.to_vec();
        ringkv_core::log::stamp_frames(&mut stamped, disk.durable_len() as u64);
        let len = disk.write(&stamped);
        self.unsynced.push_back((token, len));
        match urgency {
            SyncUrgency::Now => self.urgent = true,
            SyncUrgency::Deferrable => {
                self.deferred_since.get_or_insert(now);
            }
            SyncUrgency::Never => {}
        }
    }

    /// An answer now waits for an unsynced deferrable write: what is unsynced is synced
    /// as soon as no sync is under way (if the write is in the sync under way, its end
    /// answers).
    pub fn hasten(&mut self) {
        if !self.unsynced.is_empty() {
            self.urgent = true;
        }
    }

    /// Starts a sync if none is under way and something waits, deferrable or not; true
    /// if one started (the caller then reports its end with [`Journal::finish_sync`]).
    pub fn start_sync(&mut self) -> bool {
        if self.syncing.is_some() {
            return false;
        }
        let Some(&last) = self.unsynced.back() else {
            return false;
        };
        self.unsynced.clear();
        self.urgent = false;
        self.deferred_since = None;
        self.syncing = Some(last);
        true
    }

    /// Starts a sync at `now` if one is due: an urgent write waits, or a deferrable one
    /// waited [`DEFERRED_SYNC_MS`].
    pub fn start_sync_if_due(&mut self, now: Ts) -> bool {
        let due = self.urgent || self.deferred_due().is_some_and(|at| at <= now);
        due && self.start_sync()
    }

    /// When deferred writes become due, if nothing urgent waits and no sync is under way
    /// (its end starts the next): the node's next tick.
    pub fn deferred_due(&self) -> Option<Ts> {
        if self.urgent || self.syncing.is_some() {
            return None;
        }
        self.deferred_since
            .map(|since| since.saturating_add(DEFERRED_SYNC_MS))
    }

    /// Whether a sync is under way: a compaction waits for its end, as the shells wait
    /// for their sync thread.
    pub fn is_syncing(&self) -> bool {
        self.syncing.is_some()
    }

    /// Replaces the whole log on `disk` by `bytes` (a compacted log, which holds the
    /// effect of every write so far); only while no sync is under way. Returns the last
    /// write not yet covered by a sync, durable now.
    pub fn replace(&mut self, disk: &SimDisk, bytes: &[u8]) -> Option<u64> {
        assert!(self.syncing.is_none(), "a log replaced under a sync");
        let covered = self.unsynced.back().map(|&(token, _)| token);
        self.unsynced.clear();
        self.urgent = false;
        self.deferred_since = None;
        disk.replace_all(bytes);
        covered
    }

    /// The sync under way completed: its bytes are durable. Returns the last token it
    /// covered.
    pub fn finish_sync(&mut self, disk: &SimDisk) -> Option<u64> {
        let (token, len) = self.syncing.take()?;
        disk.sync_to(len);
        Some(token)
    }
}

/// When a node rewrites its log, as the shells decide it: once the log passes the
/// threshold and twice what the last rewrite left.
#[derive(Debug)]
pub struct LogCompaction {
    threshold_bytes: Option<usize>,
    last_bytes: usize,
}

impl LogCompaction {
    /// Past `threshold_bytes`; never when `None`.
    pub fn new(threshold_bytes: Option<usize>) -> Self {
        Self {
            threshold_bytes,
            last_bytes: 0,
        }
    }

    /// Whether a log of `len_bytes` is due.
    pub fn is_due(&self, len_bytes: usize) -> bool {
        self.threshold_bytes.is_some_and(|threshold| {
            len_bytes >= threshold && len_bytes >= self.last_bytes.saturating_mul(2)
        })
    }

    /// The log was rewritten to `len_bytes` (or a rewrite failed at that length: the next
    /// try waits until it doubles).
    pub fn done(&mut self, len_bytes: usize) {
        self.last_bytes = len_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::log::{decode_frames, encode_frame, frame_len, StopReason, STAMP_INSTALLED};

    fn disk_with_unsynced_tail() -> SimDisk {
        let disk = SimDisk::new(0);
        disk.write(b"durable");
        disk.sync_to(7);
        disk.write(b"maybe lost");
        disk
    }

    /// One frame holding `payload`, as a role hands it to the journal.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
        out
    }

    /// The file without the zeros a crash may leave after it (space allocated ahead).
    fn without_spare(mut bytes: Vec<u8>) -> Vec<u8> {
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        bytes
    }

    #[test]
    fn a_machine_crash_keeps_what_was_synced_and_loses_some_of_the_rest() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let disk = disk_with_unsynced_tail();
            disk.crash(CrashKind::Machine, &mut rng, 1.0);
            assert_eq!(&disk.contents()[..7], b"durable");
            assert!(disk.len() <= 17);
            lengths.insert(disk.len());
        }
        assert!(lengths.len() > 3, "random prefixes kept: {lengths:?}");
        assert!(
            lengths.contains(&7),
            "sometimes all unsynced bytes are lost"
        );
    }

    #[test]
    fn a_write_made_while_a_sync_is_under_way_carries_the_durable_end_before_it() {
        let disk = SimDisk::new(0);
        let mut journal = Journal::default();
        let stamps = |disk: &SimDisk| -> Vec<Option<u64>> {
            let bytes = disk.contents();
            let decoded = decode_frames(&bytes);
            assert_eq!(decoded.stop, StopReason::End);
            decoded.frames.iter().map(|f| f.durable_end).collect()
        };
        let one = frame_len(3) as u64;
        journal.write(&disk, 1, &frame(b"one"));
        assert!(journal.start_sync());
        journal.write(&disk, 2, &frame(b"two"));
        assert_eq!(
            stamps(&disk),
            vec![Some(0), Some(0)],
            "the sync has not ended"
        );
        assert_eq!(journal.finish_sync(&disk), Some(1));
        assert_eq!(disk.durable_len() as u64, one);
        journal.write(&disk, 3, &frame(b"six"));
        assert!(journal.start_sync());
        journal.write(&disk, 4, &frame(b"ten"));
        assert_eq!(journal.finish_sync(&disk), Some(3));
        journal.write(&disk, 5, &frame(b"end"));
        let three = 3 * one;
        assert_eq!(
            stamps(&disk),
            vec![Some(0), Some(0), Some(one), Some(one), Some(three)]
        );
        // An installed log keeps its frames' stamps: it is never torn.
        let installed = frame(b"all");
        journal.replace(&disk, &installed);
        assert_eq!(stamps(&disk), vec![Some(STAMP_INSTALLED)]);
        journal.write(&disk, 6, &frame(b"new"));
        assert_eq!(
            stamps(&disk),
            vec![Some(STAMP_INSTALLED), Some(installed.len() as u64)]
        );
    }

    #[test]
    fn a_deferrable_write_waits_for_an_urgent_one_or_the_delay() {
        let disk = SimDisk::new(0);
        let mut journal = Journal::default();
        journal.write_with(&disk, 1, &frame(b"commit"), SyncUrgency::Deferrable, 10);
        assert!(!journal.start_sync_if_due(10));
        assert_eq!(journal.deferred_due(), Some(10 + DEFERRED_SYNC_MS));
        assert!(journal.start_sync_if_due(10 + DEFERRED_SYNC_MS));
        assert_eq!(journal.deferred_due(), None, "a sync is under way");
        assert_eq!(journal.finish_sync(&disk), Some(1));

        journal.write_with(&disk, 2, &frame(b"commit"), SyncUrgency::Deferrable, 20);
        journal.write_with(&disk, 3, &frame(b"prepare"), SyncUrgency::Now, 20);
        assert_eq!(journal.deferred_due(), None, "due already");
        assert!(journal.start_sync_if_due(20), "the urgent write takes both");
        assert_eq!(journal.finish_sync(&disk), Some(3));
        assert_eq!(disk.durable_len(), 2 * frame_len(6) + frame_len(7));
    }

    #[test]
    fn a_process_crash_keeps_every_unsynced_write() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let disk = disk_with_unsynced_tail();
            assert_eq!(disk.crash(CrashKind::Process, &mut rng, 1.0), 10);
            assert_eq!(disk.contents(), b"durablemaybe lost");
        }
        // What a process crash left unsynced a later machine crash may still lose.
        let lost = (0..20).any(|_| {
            let disk = disk_with_unsynced_tail();
            disk.crash(CrashKind::Process, &mut rng, 0.0);
            disk.crash(CrashKind::Machine, &mut rng, 0.0) < 10
        });
        assert!(lost);
    }

    #[test]
    fn reads_fail_with_the_chance_set_and_never_after_it_is_cleared() {
        let disk = SimDisk::new(3);
        disk.write(b"0123456789");
        assert_eq!(disk.read_at(2, 3).unwrap(), b"234");
        disk.set_read_failure(0.5);
        let failed = (0..200).filter(|_| disk.read_at(0, 4).is_err()).count();
        assert!((50..150).contains(&failed), "failed {failed} of 200");
        assert_eq!(disk.failed_reads(), failed as u64);
        disk.set_read_failure(0.0);
        assert!((0..200).all(|_| disk.read_at(0, 4).is_ok()));
        assert!(
            disk.read_at(8, 4).is_err(),
            "a read past the end still fails"
        );
    }

    #[test]
    fn one_sync_covers_every_write_before_it_started() {
        let disk = SimDisk::new(0);
        let mut journal = Journal::default();
        journal.write(&disk, 1, &frame(b"aa"));
        journal.write(&disk, 2, &frame(b"bb"));
        assert!(journal.start_sync());
        journal.write(&disk, 3, &frame(b"cc"));
        assert!(!journal.start_sync(), "one sync at a time");
        assert_eq!(journal.finish_sync(&disk), Some(2));
        assert!(
            journal.start_sync(),
            "the write behind the first sync gets its own"
        );
        assert_eq!(journal.finish_sync(&disk), Some(3));
        let written = disk.contents();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        disk.crash(CrashKind::Machine, &mut rng, 1.0);
        assert_eq!(
            without_spare(disk.contents()),
            written,
            "everything synced survives"
        );
        assert_eq!(journal.finish_sync(&disk), None);
    }

    #[test]
    fn a_replaced_log_covers_the_unsynced_writes_and_survives_any_crash() {
        let disk = SimDisk::new(0);
        let mut journal = Journal::default();
        journal.write(&disk, 1, &frame(b"one"));
        assert!(journal.start_sync());
        assert!(journal.is_syncing());
        assert_eq!(journal.finish_sync(&disk), Some(1));
        journal.write(&disk, 2, &frame(b"two"));
        journal.write(&disk, 3, &frame(b"three"));
        let compacted = frame(b"compacted");
        assert_eq!(journal.replace(&disk, &compacted), Some(3));
        assert!(!journal.start_sync(), "nothing is left to sync");
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            disk.crash(CrashKind::Machine, &mut rng, 1.0);
            assert_eq!(without_spare(disk.contents()), compacted);
            // Recovery cuts the zeros after the last frame, as the roles do.
            disk.truncate_and_sync(compacted.len());
        }
    }

    #[test]
    fn a_log_is_compacted_past_its_threshold_and_twice_what_the_last_left() {
        let mut compaction = LogCompaction::new(Some(100));
        assert!(!compaction.is_due(99));
        assert!(compaction.is_due(100));
        compaction.done(80);
        assert!(!compaction.is_due(159));
        assert!(compaction.is_due(160));
        assert!(!LogCompaction::new(None).is_due(usize::MAX));
    }
}
