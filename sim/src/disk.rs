//! A simulated disk: one log per node, with a page cache. A process crash leaves the
//! page cache to the OS, so every unsynced write survives. A machine crash keeps the
//! synced bytes and loses some of the rest, in one of two ways drawn per crash: a random
//! prefix of the unsynced bytes survives, its last part maybe torn (garbled); or, as in a
//! file whose space was allocated ahead and is overwritten, any subset of the pages of the
//! unsynced bytes survives and the others read as zeros. Either may leave zeros after the
//! log: space allocated ahead and never written. Writes carry the stamp the shells give
//! them (where the log was durable as they were written), which lets recovery tell such
//! holes from corruption. Reads of stored data may fail with a seeded chance, as an I/O
//! error would.
//!
//! A log is one file, or, for a KV server, segment files as its shell keeps them: the
//! active file takes the appends, and sealed files (durable, never written again) hold
//! the log before it, some of them merged (a rewritten range of the log, shorter than
//! the range it stands for). Offsets in this interface are the log's; crashes touch the
//! active file only.

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
    /// The machine died: unsynced bytes are lost, or some of them (a prefix, or some of
    /// their pages) reached the platter.
    Machine,
}

/// The page sizes in which a machine crash keeps or loses the unsynced bytes of a file
/// written into space allocated ahead: from a sector torn into pieces to a whole page of
/// the page cache.
const CRASH_PAGE_BYTES: [usize; 4] = [16, 64, 512, 4096];

/// The most pages of zeros (space allocated ahead and never written) a machine crash
/// leaves after the log.
const SPARE_PAGES: usize = 4;

/// A sealed segment file of a KV server's log: durable, never written again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedFile {
    /// The log offset its first byte holds.
    pub start: usize,
    /// Its bytes: whole frames.
    pub bytes: Vec<u8>,
    /// Where the part of the log it stands for ends: where its bytes end for a plain
    /// segment, further for a merged one (replay skips to it).
    pub covers_end: usize,
}

/// The bytes of one node's log and its read faults.
#[derive(Debug)]
struct DiskState {
    /// The sealed files, in the log's order; always empty for roles that do not seal.
    sealed: Vec<SealedFile>,
    /// The log offset of the active file's first byte.
    active_start: usize,
    /// Everything written to the active file, synced or not (what reads see).
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

impl DiskState {
    /// A machine crash of a file that grows with each write: a random prefix of the
    /// unsynced bytes survives, its last part garbled with chance `tear`. Returns the
    /// bytes kept.
    fn keep_a_prefix(&mut self, rng: &mut ChaCha8Rng, tear: f64) -> usize {
        let unsynced = self.bytes.len() - self.durable_len;
        let kept = rng.random_range(0..=unsynced);
        let new_len = self.durable_len + kept;
        self.bytes.truncate(new_len);
        if kept > 0 && rng.random_bool(tear) {
            // The tear garbles the end of what was kept, within its last frame header's
            // length: a crash tears the tail, and valid frames after a bad one would be
            // corruption, which recovery refuses instead of cutting.
            let from = new_len
                .saturating_sub(ringkv_core::log::FRAME_HEADER_BYTES)
                .max(self.durable_len);
            let at = rng.random_range(from..new_len);
            if let Some(byte) = self.bytes.get_mut(at) {
                *byte ^= rng.random_range(1..=255u8);
            }
        }
        kept
    }

    /// A machine crash of a file written into space allocated ahead: each page of `page`
    /// bytes (aligned to file offsets) that holds unsynced bytes keeps them or reads as
    /// zeros, with a chance to keep drawn once. Durable bytes sharing a page with
    /// unsynced ones are kept. Returns the unsynced bytes kept.
    fn keep_some_pages(&mut self, rng: &mut ChaCha8Rng, page: usize) -> usize {
        let keep = rng.random_range(0.0..=1.0);
        let len = self.bytes.len();
        let mut kept = 0;
        let mut start = self.durable_len;
        while start < len {
            let end = ((start / page + 1) * page).min(len);
            if rng.random_bool(keep) {
                kept += end - start;
            } else {
                self.bytes[start..end].fill(0);
            }
            start = end;
        }
        kept
    }
}

/// A node's disk, shared between the world (writes, syncs, crashes) and the role running
/// on it (reads through [`LogReader`]).
#[derive(Clone, Debug)]
pub struct SimDisk(Rc<RefCell<DiskState>>);

impl SimDisk {
    /// An empty disk whose read faults are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Rc::new(RefCell::new(DiskState {
            sealed: Vec::new(),
            active_start: 0,
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

    /// Appends bytes to the page cache; returns the log's length written so far.
    pub fn write(&self, bytes: &[u8]) -> usize {
        let mut state = self.0.borrow_mut();
        state.bytes.extend_from_slice(bytes);
        state.active_start + state.bytes.len()
    }

    /// Makes the log durable up to `len` (a sync that covered it completed).
    pub fn sync_to(&self, len: usize) {
        let mut state = self.0.borrow_mut();
        let in_file = len
            .checked_sub(state.active_start)
            .expect("a sync of a sealed file");
        assert!(in_file <= state.bytes.len(), "sync beyond what was written");
        state.durable_len = state.durable_len.max(in_file);
    }

    /// Where the log ends as far as a sync has shown.
    pub fn durable_len(&self) -> usize {
        let state = self.0.borrow();
        state.active_start + state.durable_len
    }

    /// The crash. A process crash keeps everything. A machine crash keeps the durable
    /// bytes, never touched, and loses some of the rest, in one of two ways (even odds):
    ///
    /// - a random prefix of the unsynced bytes survives, whose last part may be torn
    ///   (garbled) with chance `tear`, as when the file grows with each write;
    /// - the file was written into space allocated ahead: the unsynced bytes are cut into
    ///   pages of one size drawn per crash (16, 64, 512 or 4096 bytes, aligned to file
    ///   offsets), and each page keeps its unsynced bytes or reads as zeros, with a chance
    ///   to keep drawn per crash, so holes may lie before pages that arrived.
    ///
    /// Then zeros may follow (up to a few pages): space allocated ahead and not written.
    /// Returns how many unsynced bytes survived (were not lost or zeroed).
    pub fn crash(&self, kind: CrashKind, rng: &mut ChaCha8Rng, tear: f64) -> usize {
        let mut state = self.0.borrow_mut();
        if kind == CrashKind::Process {
            return state.bytes.len() - state.durable_len;
        }
        let page = CRASH_PAGE_BYTES[rng.random_range(0..CRASH_PAGE_BYTES.len())];
        let (kept, spare) = if rng.random_bool(0.5) {
            let kept = state.keep_a_prefix(rng, tear);
            let spare = if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(1..=SPARE_PAGES * page)
            };
            (kept, spare)
        } else {
            let kept = state.keep_some_pages(rng, page);
            (kept, rng.random_range(0..=SPARE_PAGES * page))
        };
        let len = state.bytes.len();
        state.bytes.resize(len + spare, 0);
        kept
    }

    /// The active file as it is now (what a restarting node reads): the whole log,
    /// unless segments were sealed ([`SimDisk::sealed`]).
    pub fn contents(&self) -> Vec<u8> {
        self.0.borrow().bytes.clone()
    }

    /// A disk holding the same files whose reads never fail: what the checks read.
    pub fn copy_without_faults(&self) -> SimDisk {
        let state = self.0.borrow();
        Self(Rc::new(RefCell::new(DiskState {
            sealed: state.sealed.clone(),
            active_start: state.active_start,
            bytes: state.bytes.clone(),
            durable_len: state.durable_len,
            read_failure: 0.0,
            rng: ChaCha8Rng::seed_from_u64(0),
            failed_reads: 0,
            incarnation: state.incarnation,
        })))
    }

    /// The sealed files, in the log's order.
    pub fn sealed(&self) -> Vec<SealedFile> {
        self.0.borrow().sealed.clone()
    }

    /// The log offset where the active file starts.
    pub fn active_start(&self) -> usize {
        self.0.borrow().active_start
    }

    /// Seals the active file, every byte of which is durable, and starts a new one at
    /// the log's end, as a KV server's shell rolls its segments. Returns where the new
    /// one starts.
    pub fn seal(&self) -> usize {
        let mut state = self.0.borrow_mut();
        assert_eq!(
            state.durable_len,
            state.bytes.len(),
            "a segment sealed with writes not durable"
        );
        let start = state.active_start;
        let bytes = std::mem::take(&mut state.bytes);
        let covers_end = start + bytes.len();
        state.sealed.push(SealedFile {
            start,
            bytes,
            covers_end,
        });
        state.active_start = covers_end;
        state.durable_len = 0;
        covers_end
    }

    /// Puts `bytes`, the merge of the log's range `start..end`, durably in the place of
    /// the sealed files there, as the shell installs a merge: a crash finds them or it.
    pub fn install_merge(&self, start: usize, end: usize, bytes: Vec<u8>) {
        let mut state = self.0.borrow_mut();
        assert!(
            start + bytes.len() <= end && end <= state.active_start,
            "a merge of {start}..{end} in {} bytes, the active file at {}",
            bytes.len(),
            state.active_start
        );
        let replaced = |file: &SealedFile| (start..end).contains(&file.start);
        let at = state
            .sealed
            .iter()
            .position(replaced)
            .expect("a merge replaces sealed files");
        assert_eq!(state.sealed[at].start, start, "a merge starts at a file");
        state.sealed.retain(|file| !replaced(file));
        assert!(
            state.sealed.get(at).is_none_or(|next| next.start == end),
            "a merge ends where a file starts"
        );
        let merged = SealedFile {
            start,
            bytes,
            covers_end: end,
        };
        state.sealed.insert(at, merged);
    }

    /// Puts `bytes` durably in the place of the whole file, as the shells install a
    /// compacted log (written aside, synced, renamed over the old one, the directory
    /// synced): a crash finds the old file or the new one, never a mix.
    pub fn replace_all(&self, bytes: &[u8]) {
        let mut state = self.0.borrow_mut();
        assert!(state.sealed.is_empty(), "a segmented log replaced whole");
        state.bytes = bytes.to_vec();
        state.durable_len = state.bytes.len();
    }

    /// Cuts the log at `len` and makes it durable (recovery dropped a torn tail and
    /// synced what it replayed, so that it never acts on bytes a later crash could lose).
    pub fn truncate_and_sync(&self, len: usize) {
        let mut state = self.0.borrow_mut();
        let in_file = len
            .checked_sub(state.active_start)
            .expect("a cut inside a sealed file");
        state.bytes.truncate(in_file);
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
        state.sealed.clear();
        state.active_start = 0;
        state.bytes.clear();
        state.durable_len = 0;
        state.incarnation = None;
    }

    /// The log's length written so far.
    pub fn len(&self) -> usize {
        let state = self.0.borrow();
        state.active_start + state.bytes.len()
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
        let at = usize::try_from(offset).map_err(|_| StorageError("offset too large".into()))?;
        let (file_start, bytes) = if at >= state.active_start {
            (state.active_start, &state.bytes)
        } else {
            let file = state.sealed.iter().rev().find(|file| file.start <= at);
            let file = file.ok_or_else(|| StorageError(format!("no file holds {offset}")))?;
            (file.start, &file.bytes)
        };
        let start = at - file_start;
        bytes
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

    /// Whether every write is durable: no sync under way and nothing waiting for one.
    pub fn is_idle(&self) -> bool {
        self.syncing.is_none() && self.unsynced.is_empty()
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
    use ringkv_core::log::{
        after_prefix, decode_frames, encode_frame, frame_len, StopReason, STAMP_INSTALLED,
    };

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
        let mut kept_counts = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let disk = disk_with_unsynced_tail();
            let kept = disk.crash(CrashKind::Machine, &mut rng, 1.0);
            assert_eq!(&disk.contents()[..7], b"durable");
            assert!(kept <= 10);
            kept_counts.insert(kept);
        }
        assert!(kept_counts.len() > 3, "random parts kept: {kept_counts:?}");
        assert!(
            kept_counts.contains(&0),
            "sometimes all unsynced bytes are lost"
        );
    }

    #[test]
    fn a_crash_of_preallocated_space_leaves_holes_before_kept_pages_and_zeros_after() {
        // Unsynced bytes none of which is zero, so what a crash zeroed shows.
        let durable = 1000;
        let written = 9000;
        let original: Vec<u8> = (0..written).map(|i| (i % 251 + 1) as u8).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut holes_before_kept, mut spare, mut all_lost, mut all_kept) = (0, 0, 0, 0);
        for _ in 0..400 {
            let disk = SimDisk::new(0);
            disk.write(&original);
            disk.sync_to(durable);
            let kept = disk.crash(CrashKind::Machine, &mut rng, 0.0);
            let after = disk.contents();
            assert_eq!(
                &after[..durable],
                &original[..durable],
                "durable bytes intact"
            );
            // Each unsynced byte is as written or zero, and only zeros follow them.
            for (at, &byte) in after.iter().enumerate().skip(durable) {
                assert!(byte == 0 || original.get(at) == Some(&byte), "byte {at}");
            }
            let survived = after[durable..].iter().filter(|&&b| b != 0).count();
            assert_eq!(kept, survived);
            let first_hole = after[durable..].iter().position(|&b| b == 0);
            let last_kept = after[durable..].iter().rposition(|&b| b != 0);
            if let (Some(hole), Some(kept_at)) = (first_hole, last_kept) {
                holes_before_kept += usize::from(hole < kept_at);
            }
            spare += usize::from(after.len() > written);
            all_lost += usize::from(kept == 0);
            all_kept += usize::from(kept == written - durable);
        }
        assert!(
            holes_before_kept > 50,
            "holes before kept bytes: {holes_before_kept}"
        );
        assert!(spare > 100, "zeros after the log: {spare}");
        assert!(
            all_lost > 10 && all_kept > 10,
            "{all_lost} lost all, {all_kept} kept all"
        );
    }

    #[test]
    fn no_crash_of_stamped_frames_reads_as_corruption() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut stamps_seen = std::collections::BTreeSet::new();
        let mut cut_after_a_hole = 0;
        for round in 0..600u64 {
            let disk = SimDisk::new(round);
            let mut journal = Journal::default();
            let mut token = 0;
            let mut write = |journal: &mut Journal, rng: &mut ChaCha8Rng| {
                token += 1;
                let len = rng.random_range(0..300);
                let payload: Vec<u8> = (0..len).map(|_| rng.random_range(1..=255u8)).collect();
                journal.write(&disk, token, &frame(&payload));
            };
            // Several syncs finished, and writes made between them and during them, so
            // that the frames after the durable end carry different stamps.
            for _ in 0..rng.random_range(0..4) {
                for _ in 0..rng.random_range(1..4) {
                    write(&mut journal, &mut rng);
                }
                journal.start_sync();
                for _ in 0..rng.random_range(0..3) {
                    write(&mut journal, &mut rng);
                }
                if rng.random_bool(0.7) {
                    journal.finish_sync(&disk);
                }
            }
            for _ in 0..rng.random_range(0..6) {
                write(&mut journal, &mut rng);
            }
            let durable = disk.durable_len();
            let before = disk.contents();
            let stamps: std::collections::BTreeSet<_> = decode_frames(&before)
                .frames
                .iter()
                .filter(|f| f.offset >= durable as u64)
                .filter_map(|f| f.durable_end)
                .collect();
            stamps_seen.insert(stamps.len());
            let tear = rng.random_range(0.0..1.0);
            disk.crash(CrashKind::Machine, &mut rng, tear);
            let after = disk.contents();
            assert_eq!(&after[..durable], &before[..durable]);
            let decoded = decode_frames(&after);
            assert!(decoded.valid_len >= durable as u64, "round {round}");
            let verdict = after_prefix(&after, decoded.valid_len);
            assert!(
                !verdict.is_corruption(),
                "round {round}: {verdict:?} at {}",
                decoded.valid_len
            );
            // A valid frame past where decoding stopped: the stamps told the hole apart.
            let valid_len = decoded.valid_len as usize;
            let kept_after_stop = after[valid_len..]
                .iter()
                .zip(&before[valid_len.min(before.len())..])
                .any(|(a, b)| a == b && *a != 0);
            cut_after_a_hole += usize::from(decoded.stop == StopReason::Zeros && kept_after_stop);
        }
        assert!(
            stamps_seen.iter().any(|&n| n >= 2),
            "unsynced frames with several stamps: {stamps_seen:?}"
        );
        assert!(
            cut_after_a_hole > 10,
            "holes before kept bytes: {cut_after_a_hole}"
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
    fn a_log_of_zeros_alone_is_an_empty_log() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut only_zeros = 0;
        for _ in 0..100 {
            let disk = SimDisk::new(0);
            let mut journal = Journal::default();
            journal.write(&disk, 1, &frame(b"lost"));
            disk.crash(CrashKind::Machine, &mut rng, 0.0);
            let bytes = disk.contents();
            if bytes.is_empty() || bytes.iter().any(|&b| b != 0) {
                continue;
            }
            only_zeros += 1;
            let decoded = decode_frames(&bytes);
            assert_eq!((decoded.valid_len, decoded.stop), (0, StopReason::Zeros));
            assert!(!after_prefix(&bytes, 0).is_corruption());
        }
        assert!(only_zeros > 10, "logs of zeros alone: {only_zeros}");
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
    fn sealed_files_are_read_at_the_logs_offsets_and_outlive_any_crash() {
        let disk = SimDisk::new(0);
        let mut journal = Journal::default();
        let (one, two, three) = (frame(b"first-file"), frame(b"second"), frame(b"third"));
        let (a, b) = (one.len(), one.len() + two.len());
        journal.write(&disk, 1, &one);
        assert!(journal.start_sync());
        journal.finish_sync(&disk);
        assert!(journal.is_idle());
        assert_eq!(disk.seal(), a);
        journal.write(&disk, 2, &two);
        assert!(!journal.is_idle());
        assert_eq!(
            (disk.len(), disk.durable_len(), disk.active_start()),
            (b, a, a)
        );
        let tail = |bytes: &[u8], n: usize| bytes[bytes.len() - n..].to_vec();
        assert_eq!(disk.read_at((a - 4) as u64, 4).unwrap(), b"file");
        assert_eq!(disk.read_at((b - 6) as u64, 6).unwrap(), b"second");
        assert!(
            disk.read_at((a - 2) as u64, 4).is_err(),
            "a read across two files"
        );
        assert!(journal.start_sync());
        journal.finish_sync(&disk);
        assert_eq!(disk.seal(), b);
        journal.write(&disk, 3, &three);
        // A merge of both sealed files into fewer bytes: the rest of its range is a
        // hole, and the active file keeps its offsets.
        let merged = frame(b"merged");
        disk.install_merge(0, b, merged.clone());
        let sealed = disk.sealed();
        assert_eq!(sealed.len(), 1);
        assert_eq!((sealed[0].start, sealed[0].covers_end), (0, b));
        let at = (merged.len() - 4) as u64;
        assert_eq!(disk.read_at(at, 4).unwrap(), tail(&merged, 4));
        assert!(
            disk.read_at(merged.len() as u64 + 1, 2).is_err(),
            "the hole"
        );
        assert_eq!(
            disk.read_at((b + three.len() - 5) as u64, 5).unwrap(),
            b"third"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..50 {
            disk.crash(CrashKind::Machine, &mut rng, 1.0);
            assert_eq!(disk.sealed(), sealed, "sealed files are durable");
            assert!(disk.len() >= b, "the active file starts where it did");
            disk.truncate_and_sync(b);
            assert_eq!(disk.len(), b);
            journal = Journal::default();
            journal.write(&disk, 3, &three);
        }
        disk.wipe();
        assert!(disk.sealed().is_empty() && disk.is_empty());
    }

    #[test]
    #[should_panic(expected = "a segment sealed with writes not durable")]
    fn a_segment_with_unsynced_writes_is_never_sealed() {
        let disk = SimDisk::new(0);
        disk.write(b"unsynced");
        disk.seal();
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
