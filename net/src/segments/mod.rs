//! A KV server's log as segment files, and their compaction (Bitcask's merge) off the
//! event loop.
//!
//! The log is one run of offsets, as the replica sees it; its bytes lie in segment
//! files, each holding one part: `wal-<START>.log` holds the bytes from offset START on
//! (`wal.log` is the segment at 0, as the single file of earlier versions). Appends go to
//! the last segment; once it holds `--segment-bytes` and its every write is durable, a
//! new one begins at the log's end, and the old one is sealed: never written again.
//!
//! Sealed segments are merged: the records they still need ([`Replica::compaction_plan`])
//! are written by a thread into one file that takes their place at the same offsets,
//! `wal-<START>-<END>.log`, holding the rewritten part of START..END. It is installed so
//! that a crash between any two steps recovers: written as `wal-merge.tmp` and synced,
//! renamed (the merged file now stands for START..END: recovery ignores any segment
//! that starts inside a range a merged file covers), the directory synced, the old
//! segments deleted, the directory synced again.
//!
//! [`Replica::compaction_plan`]: ringkv_core::replica::Replica::compaction_plan

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

use mio::Waker;
use ringkv_core::log::{after_prefix_from, AfterPrefix, FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES};
use ringkv_core::replica::compaction::{write_compacted, Carried, CompactionPlan, Moved};
use ringkv_core::replica::{LogReader, PersistToken, StorageError, SyncUrgency, ValueLoc};

use crate::datadir::sync_dir;
use crate::error::NetError;
use crate::log_writes::LogWrites;
use crate::logfile::{held_past_file, ChunkFold, RECOVERY_CHUNK_BYTES};
use crate::sync_thread::{self, PendingUrgency, SyncJob, SyncThread};

/// The default size at which a segment is sealed.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The first segment, at 0 (the single file of a log written before segments).
const FIRST_SEGMENT: &str = "wal.log";
/// Where a merge writes before it is installed.
const MERGE_TMP: &str = "wal-merge.tmp";

/// The most bytes after a log's valid frames read to tell a torn tail from corruption.
const AFTER_SCAN_BYTES: usize = 2 * (MAX_PAYLOAD_BYTES + FRAME_HEADER_BYTES);

/// One segment file found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegFile {
    path: PathBuf,
    /// The offset of the log its first byte holds.
    start: u64,
    /// Where the part of the log it stands for ends: its start plus its length, or,
    /// for a merged file, the end of the range it replaced.
    covers_end: u64,
    merged: bool,
}

fn plain_name(start: u64) -> String {
    if start == 0 {
        return FIRST_SEGMENT.to_owned();
    }
    format!("wal-{start:020}.log")
}

fn merged_name(start: u64, end: u64) -> String {
    format!("wal-{start:020}-{end:020}.log")
}

/// What a file name says: `(start, merged end)`, or `None` for another file.
fn parse_name(name: &str) -> Option<(u64, Option<u64>)> {
    if name == FIRST_SEGMENT {
        return Some((0, None));
    }
    let inner = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    match inner.split_once('-') {
        None => Some((inner.parse().ok()?, None)),
        Some((start, end)) => Some((start.parse().ok()?, Some(end.parse().ok()?))),
    }
}

/// The segments of the log in `dir`, in order: every file that no merged file replaced.
/// Files a merge replaced but did not get to delete, and a merge never installed, are
/// deleted now.
pub(crate) fn chain(dir: &Path) -> Result<Vec<SegFile>, NetError> {
    let fail = |err| {
        NetError::io(
            format!("listing the log's segments in {}", dir.display()),
            err,
        )
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let entry = entry.map_err(fail)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == MERGE_TMP {
            std::fs::remove_file(entry.path()).map_err(fail)?;
            continue;
        }
        let Some((start, merged_end)) = parse_name(&name) else {
            continue;
        };
        let len = entry.metadata().map_err(fail)?.len();
        found.push(SegFile {
            path: entry.path(),
            start,
            covers_end: merged_end.unwrap_or(start + len).max(start + len),
            merged: merged_end.is_some(),
        });
    }
    // A plain segment ends where the next file starts: a seal cuts the space allocated
    // past its records without waiting for the cut to be durable, so after a crash the
    // file may still reach past its successor's start, with zeros.
    let mut starts: Vec<u64> = found.iter().map(|file| file.start).collect();
    starts.sort_unstable();
    for file in found.iter_mut().filter(|file| !file.merged) {
        let next = starts.iter().find(|&&start| start > file.start);
        if let Some(&next) = next {
            file.covers_end = file.covers_end.min(next);
        }
    }
    // By start; of files with one start, the one that stands for the most first.
    found.sort_by(|a, b| a.start.cmp(&b.start).then(b.covers_end.cmp(&a.covers_end)));
    let mut kept: Vec<SegFile> = Vec::new();
    for file in found {
        let covered = kept.last().is_some_and(|last| file.start < last.covers_end)
            || kept.last().is_some_and(|last| file.start == last.start);
        if covered {
            tracing::info!(file = %file.path.display(), "removing a segment a merge replaced");
            std::fs::remove_file(&file.path).map_err(fail)?;
        } else {
            kept.push(file);
        }
    }
    Ok(kept)
}

/// A sealed segment: read, never written.
struct Sealed {
    file: File,
    len: u64,
    path: PathBuf,
    merged: bool,
}

/// What the log's readers share with its writer.
struct Shared {
    sealed: BTreeMap<u64, Sealed>,
    /// The segment appended to: where it starts, a read handle, and how far its bytes
    /// reach in the log (written to the file; later ones are in `bytes`).
    active_start: u64,
    active_read: Option<File>,
    file_end: u64,
    bytes: Vec<u8>,
}

/// The segment appended to.
struct Active {
    path: PathBuf,
    file: Arc<File>,
}

/// A merge under way on its thread.
struct Merging {
    start: u64,
    end: u64,
    done: Receiver<io::Result<Merged>>,
}

/// What an installed merge reports.
pub(crate) struct Merged {
    path: PathBuf,
    len: u64,
    moves: Vec<Moved>,
}

/// A finished merge, for the replica to move its values.
pub(crate) struct Compacted {
    /// The rewritten part's start.
    pub(crate) start: u64,
    /// The rewritten part's end.
    pub(crate) end: u64,
    /// Where the values went.
    pub(crate) moves: Vec<Moved>,
}

/// The KV server's log: segment files, a sync thread, and merges.
pub(crate) struct SegmentedLog {
    dir: PathBuf,
    segment_bytes: u64,
    shared: Rc<RefCell<Shared>>,
    active: Option<Active>,
    /// The active segment was created since the last sync: the directory is synced too.
    new_file: bool,
    unsynced: Option<PersistToken>,
    /// What the unsynced writes ask of their sync.
    pending: PendingUrgency,
    syncs: u64,
    merging: Option<Merging>,
    /// Bytes the last merge wrote: what the sealed segments held that was live.
    live_bytes: u64,
    /// Where the segment sealed since the last [`SegmentedLog::compaction_due`] ended.
    just_sealed: Option<u64>,
    waker: Option<Arc<Waker>>,
    /// Where the active segment's writes go, and the durable end (in the log's offsets)
    /// they are stamped with.
    writes: LogWrites,
    sync_thread: Option<SyncThread>,
}

/// Where replay ended.
pub(crate) struct Replayed {
    /// What follows the valid frames.
    pub(crate) after: AfterPrefix,
    /// The segment the valid frames end in, for messages.
    pub(crate) file: PathBuf,
    /// Where the segment after the valid frames starts, when bytes before it are
    /// missing: a sealed segment cut short, or one gone.
    pub(crate) missing_before: Option<u64>,
}

impl SegmentedLog {
    /// Opens the log in `dir` (an empty one if there is none) for recovery. Every
    /// segment and the directory are synced first, as [`crate::logfile::LogFile::open`]
    /// says why.
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> Result<Self, NetError> {
        if segment_bytes < 4096 {
            return Err(NetError::Config(
                "the segment size must be at least 4096 bytes".into(),
            ));
        }
        let mut sealed = BTreeMap::new();
        for seg in chain(dir)? {
            let file = File::open(&seg.path)
                .and_then(|file| file.sync_all().map(|()| file))
                .map_err(|err| {
                    NetError::io(format!("opening the segment {}", seg.path.display()), err)
                })?;
            let len = seg.covers_end.min(seg.start + file_len(&file)?) - seg.start;
            let sealed_seg = Sealed {
                file,
                len,
                path: seg.path,
                merged: seg.merged,
            };
            sealed.insert(seg.start, sealed_seg);
        }
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            shared: Rc::new(RefCell::new(Shared {
                sealed,
                active_start: u64::MAX,
                active_read: None,
                file_end: 0,
                bytes: Vec::new(),
            })),
            active: None,
            new_file: false,
            unsynced: None,
            pending: PendingUrgency::default(),
            syncs: 0,
            merging: None,
            live_bytes: 0,
            just_sealed: None,
            waker: None,
            writes: LogWrites::new(0, 0),
            sync_thread: None,
        })
    }

    /// A reader of the log, for the replica.
    pub(crate) fn reader(&self) -> SegmentReader {
        SegmentReader {
            shared: Rc::clone(&self.shared),
        }
    }

    /// Feeds every segment to `fold`, in chunks, skipping the gaps merged files leave,
    /// until the log ends, a bad frame ends its valid part, or bytes are missing.
    pub(crate) fn replay_into(&self, fold: &mut impl ChunkFold) -> Result<Replayed, NetError> {
        let shared = self.shared.borrow();
        let segments: Vec<(u64, &Sealed)> =
            shared.sealed.iter().map(|(&s, seg)| (s, seg)).collect();
        let mut ended: Option<(usize, AfterPrefix)> = None;
        let mut missing_before = None;
        for (i, &(start, seg)) in segments.iter().enumerate() {
            if start > fold.decoded_to() {
                // A merged file's range reaches its successor (skipped to below), and a
                // sealed segment holds records up to the next one's start, durable
                // before the seal: bytes before `start` were lost, so records are.
                fold.feed(&[], true);
                missing_before = Some(start);
                ended = Some((i.saturating_sub(1), AfterPrefix::ValidFrameAt(start)));
                break;
            }
            let held = feed_file(fold, &seg.file, seg.len, &seg.path)?;
            if fold.is_done() || held > 0 {
                // A frame cut by the segment's end, or a bad one: only the last segment
                // may end torn; in any other, valid segments follow the damage.
                if !fold.is_done() {
                    let rest = read_range(&seg.file, seg.len - held as u64, held, &seg.path)?;
                    fold.feed(&rest, true);
                }
                let after = match segments.get(i + 1) {
                    Some(&(next, _)) => AfterPrefix::ValidFrameAt(next),
                    None => after_frames(&seg.file, start, seg.len, &*fold, &seg.path)?,
                };
                ended = Some((i, after));
                break;
            }
            if seg.merged {
                let covers_end = merged_end_of(&seg.path).unwrap_or(start + seg.len);
                fold.skip_to(covers_end);
            }
        }
        let (index, after) = match ended {
            Some(ended) => ended,
            None => {
                fold.feed(&[], true);
                (segments.len().saturating_sub(1), AfterPrefix::TornTail)
            }
        };
        let file = segments
            .get(index)
            .map_or_else(|| self.dir.join(plain_name(0)), |(_, seg)| seg.path.clone());
        Ok(Replayed {
            after,
            file,
            missing_before,
        })
    }

    /// After recovery: cuts the log at `valid_len` (the segment it ends in is cut there
    /// and every later one removed: only after the operator allowed it, or for a torn
    /// tail) and opens the segment appends go to.
    pub(crate) fn start_appending(&mut self, valid_len: u64) -> Result<(), NetError> {
        let mut shared = self.shared.borrow_mut();
        // The segment the valid part ends in, and every one after it, which is cut.
        let ends_in = shared
            .sealed
            .range(..=valid_len)
            .next_back()
            .map(|(&s, _)| s);
        let later: Vec<u64> = shared
            .sealed
            .keys()
            .copied()
            .filter(|&start| ends_in.is_none_or(|ends_in| start > ends_in))
            .collect();
        for start in later {
            if let Some(seg) = shared.sealed.remove(&start) {
                tracing::warn!(file = %seg.path.display(), "removing a segment after the log's cut");
                std::fs::remove_file(&seg.path)
                    .map_err(|err| NetError::io(format!("removing {}", seg.path.display()), err))?;
            }
        }
        let last = shared
            .sealed
            .iter()
            .next_back()
            .map(|(&s, seg)| (s, seg.merged, seg.len));
        let reuse = match last {
            Some((start, false, len)) if start + len >= valid_len => Some(start),
            _ => None,
        };
        let (start, path) = match reuse {
            Some(start) => {
                let seg = shared
                    .sealed
                    .remove(&start)
                    .ok_or_else(|| NetError::Config("the last segment vanished".into()))?;
                let keep = valid_len - start;
                if keep < seg.len {
                    cut(&seg.path, keep)?;
                }
                (start, seg.path)
            }
            None => {
                if let Some((start, true, len)) = last {
                    if start + len > valid_len {
                        // Damage inside a merged file, cut as asked.
                        let seg = shared.sealed.get_mut(&start).ok_or_else(|| {
                            NetError::Config("the merged segment vanished".into())
                        })?;
                        cut(&seg.path, valid_len - start)?;
                        seg.len = valid_len - start;
                    }
                }
                (valid_len, self.dir.join(plain_name(valid_len)))
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| NetError::io(format!("opening the segment {}", path.display()), err))?;
        sync_dir(&self.dir)?;
        self.writes = LogWrites::new(valid_len, file_len(&file)?).allocating_to(self.segment_bytes);
        let read = File::open(&path)
            .map_err(|err| NetError::io(format!("opening the segment {}", path.display()), err))?;
        shared.active_start = start;
        shared.active_read = Some(read);
        shared.file_end = valid_len;
        drop(shared);
        self.active = Some(Active {
            path,
            file: Arc::new(file),
        });
        Ok(())
    }

    /// Starts the sync thread; `waker` is also woken by finished merges.
    pub(crate) fn start_sync_thread(&mut self, waker: Arc<Waker>) -> Result<(), NetError> {
        self.sync_thread = Some(SyncThread::start(Arc::clone(&waker))?);
        self.waker = Some(waker);
        Ok(())
    }

    /// Appends the bytes of write `token`; written and durable through the sync thread,
    /// soon if `urgency` says an answer waits.
    pub(crate) fn append(&mut self, token: PersistToken, bytes: &[u8], urgency: SyncUrgency) {
        self.shared.borrow_mut().bytes.extend_from_slice(bytes);
        self.unsynced = Some(token);
        self.pending.note(urgency);
    }

    /// An answer now waits for write `token`, appended as deferrable: a job lingering
    /// over it is synced at once, or, if it is not handed yet, its job will be urgent.
    pub(crate) fn hasten(&mut self, token: PersistToken) -> Result<(), NetError> {
        let unsynced = self.unsynced.is_some();
        let thread = self.sync_thread.as_mut();
        sync_thread::hasten_write(thread, &mut self.pending, unsynced, token)
    }

    /// Writes the appends still in memory where the active segment's written bytes end
    /// (positioned and stamped: the file's cursor is never used), and returns the log's
    /// written end after them.
    fn write_pending(&mut self, file: &File) -> io::Result<u64> {
        let mut shared = self.shared.borrow_mut();
        let Shared {
            active_start,
            file_end,
            bytes,
            ..
        } = &mut *shared;
        if !bytes.is_empty() {
            self.writes.write(file, *file_end - *active_start, bytes)?;
            *file_end += bytes.len() as u64;
            bytes.clear();
        }
        Ok(*file_end)
    }

    /// Writes the appends so far and hands their sync to the sync thread, if it can
    /// take them (else they wait for the next call; an urgent job may join a lingering
    /// one). When the segment is full and its every write durable, the appends go to a
    /// new one, and the full one is sealed.
    pub(crate) fn begin_sync(&mut self) -> Result<(), NetError> {
        let Some(token) = self.unsynced else {
            return Ok(());
        };
        let Some(urgency) = self.pending.job() else {
            return Ok(());
        };
        let thread = self
            .sync_thread
            .as_ref()
            .expect("begin_sync without a sync thread");
        if !thread.can_take(urgency) {
            return Ok(());
        }
        let full = {
            let shared = self.shared.borrow();
            shared.file_end - shared.active_start >= self.segment_bytes
        };
        if full {
            // A seal needs every write of the segment durable: wait for the lingering
            // job's sync.
            if thread.busy() {
                return Ok(());
            }
            self.roll()?;
        }
        let active = self
            .active
            .as_ref()
            .expect("appends before start_appending");
        let path = active.path.clone();
        let file = Arc::clone(&active.file);
        let end = self
            .write_pending(&file)
            .map_err(|err| NetError::io(format!("appending to the log {}", path.display()), err))?;
        self.writes.handed(token, end);
        let dir = self.new_file.then(|| self.dir.clone());
        self.new_file = false;
        if let Some(thread) = &mut self.sync_thread {
            thread.begin(SyncJob {
                token,
                file,
                dir,
                urgency,
            })?;
        }
        self.unsynced = None;
        self.pending.handed();
        Ok(())
    }

    /// Seals the active segment and begins a new one at the log's end. Every write of
    /// the old one is durable: no sync is under way, and each write is synced by the
    /// job it is handed with. The old one gives back the space allocated past its end,
    /// without a sync on the loop (on a slow disk one would stall it, as #7 found): if a
    /// crash loses the cut, the sealed file reaches past the next one's start with
    /// zeros, and [`chain`] ends it where the next begins.
    fn roll(&mut self) -> Result<(), NetError> {
        let mut shared = self.shared.borrow_mut();
        let start = shared.file_end;
        if let Some(old) = &self.active {
            let len = start - shared.active_start;
            old.file.set_len(len).map_err(|err| {
                NetError::io(format!("sealing the segment {}", old.path.display()), err)
            })?;
        }
        self.writes.new_file();
        let path = self.dir.join(plain_name(start));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|err| NetError::io(format!("creating the segment {}", path.display()), err))?;
        let read = File::open(&path)
            .map_err(|err| NetError::io(format!("opening the segment {}", path.display()), err))?;
        let old = self.active.replace(Active {
            path,
            file: Arc::new(file),
        });
        let old_start = shared.active_start;
        let old_read = shared.active_read.replace(read);
        if let (Some(old), Some(old_read)) = (old, old_read) {
            let len = start - old_start;
            let sealed = Sealed {
                file: old_read,
                len,
                path: old.path,
                merged: false,
            };
            shared.sealed.insert(old_start, sealed);
        }
        shared.active_start = start;
        self.new_file = true;
        self.just_sealed = Some(start);
        tracing::debug!(start, "a new log segment");
        Ok(())
    }

    /// The last write made durable since the last call, if any; a failed sync is final.
    pub(crate) fn finished_sync(&mut self) -> Result<Option<PersistToken>, NetError> {
        let Some(thread) = &mut self.sync_thread else {
            return Ok(None);
        };
        let done = thread.finished().map_err(|err| {
            NetError::io(format!("syncing the log in {}", self.dir.display()), err)
        })?;
        if let Some(token) = done {
            self.writes.finished(token);
            self.syncs += 1;
        }
        Ok(done)
    }

    /// Syncs done, for the statistics at shutdown.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Where the sealed part of the log ends, if a merge of it is due: a segment was
    /// just sealed, no merge runs, and the sealed segments hold more than twice what the
    /// last merge kept, and more than one segment's worth. That keeps the disk within
    /// about twice the live data plus the segment being written.
    ///
    /// Only right after a seal: every transaction prepared before it is then either
    /// decided before it (applied) or in doubt, so the replica's plan carries it whole;
    /// later, a decision after the seal could belong to a prepare the plan dropped.
    pub(crate) fn compaction_due(&mut self) -> Option<u64> {
        self.just_sealed.take()?;
        if self.merging.is_some() {
            return None;
        }
        let shared = self.shared.borrow();
        let sealed_bytes: u64 = shared.sealed.values().map(|seg| seg.len).sum();
        let plain = shared.sealed.values().filter(|seg| !seg.merged).count();
        let due = plain > 0
            && sealed_bytes > self.live_bytes.saturating_mul(2)
            && sealed_bytes >= self.segment_bytes;
        due.then_some(shared.active_start)
    }

    /// Starts merging the sealed segments as `plan` says, on a thread of its own.
    pub(crate) fn start_compaction(&mut self, plan: CompactionPlan) -> Result<(), NetError> {
        let shared = self.shared.borrow();
        let Some(start) = shared.sealed.keys().next().copied() else {
            return Ok(());
        };
        let mut inputs = Vec::new();
        for (&seg_start, seg) in shared.sealed.range(..plan.end) {
            let file = seg.file.try_clone().map_err(|err| {
                NetError::io(format!("opening the segment {}", seg.path.display()), err)
            })?;
            inputs.push(Input {
                start: seg_start,
                len: seg.len,
                file,
                path: seg.path.clone(),
            });
        }
        drop(shared);
        let (tx, done) = mpsc::channel();
        let dir = self.dir.clone();
        let waker = self.waker.clone();
        let end = plan.end;
        std::thread::Builder::new()
            .name("log-merge".into())
            .spawn(move || {
                let result = merge(&dir, start, &plan, &inputs, None);
                let _ = tx.send(result);
                if let Some(waker) = waker {
                    let _ = waker.wake();
                }
            })
            .map_err(|err| NetError::io("starting a merge of the log", err))?;
        tracing::info!(start, end, "merging the log's sealed segments");
        self.merging = Some(Merging { start, end, done });
        Ok(())
    }

    /// A merge that finished since the last call: the merged file now stands for the
    /// segments it replaced, and the replica must move its values. A failed merge
    /// changes nothing in memory (the next start recovers from whatever it left).
    pub(crate) fn finished_compaction(&mut self) -> Option<Compacted> {
        let merging = self.merging.as_ref()?;
        let result = match merging.done.try_recv() {
            Ok(result) => result,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err(io::Error::other("the merge thread died")),
        };
        let Merging { start, end, .. } = self.merging.take()?;
        let merged = match result {
            Ok(merged) => merged,
            Err(err) => {
                tracing::error!(%err, "merging the log failed; the old segments stay");
                // Try again only after the sealed part doubles.
                self.live_bytes = self.live_bytes.max(end - start);
                return None;
            }
        };
        let file = match File::open(&merged.path) {
            Ok(file) => file,
            Err(err) => {
                tracing::error!(%err, "opening the merged segment failed; the old segments stay");
                return None;
            }
        };
        let mut shared = self.shared.borrow_mut();
        let replaced: Vec<u64> = shared.sealed.range(start..end).map(|(&s, _)| s).collect();
        for seg_start in replaced {
            shared.sealed.remove(&seg_start);
        }
        let sealed = Sealed {
            file,
            len: merged.len,
            path: merged.path,
            merged: true,
        };
        shared.sealed.insert(start, sealed);
        self.live_bytes = merged.len;
        tracing::info!(start, end, kept_bytes = merged.len, "log segments merged");
        Some(Compacted {
            start,
            end,
            moves: merged.moves,
        })
    }
}

impl Drop for SegmentedLog {
    /// Appends still in memory reach the file (not durably); nothing was acknowledged
    /// on them. They go where the segment's written bytes end, stamped as every write
    /// is: the file's own cursor never moves (writes are positioned), so a plain write
    /// would land over the segment's first records.
    fn drop(&mut self) {
        let Some(file) = self.active.as_ref().map(|active| Arc::clone(&active.file)) else {
            return;
        };
        if let Err(err) = self.write_pending(&file) {
            tracing::warn!(%err, "writing the last appends of the log failed");
        }
    }
}

/// A sealed segment a merge reads.
pub(crate) struct Input {
    start: u64,
    len: u64,
    file: File,
    path: PathBuf,
}

/// A step of installing a merge, after which a test may stop it, as a crash would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    /// The merged bytes are written to the temporary file and synced.
    Written,
    /// The temporary file is renamed to its segment name.
    Renamed,
    /// The directory is synced.
    DirSynced,
    /// The replaced segments are deleted (the directory is then synced again).
    Deleted,
}

/// Writes the merge of `inputs` as `plan` says and installs it; `stop_after` ends it
/// early at a step, as a crash would (tests).
pub(crate) fn merge(
    dir: &Path,
    start: u64,
    plan: &CompactionPlan,
    inputs: &[Input],
    stop_after: Option<Step>,
) -> io::Result<Merged> {
    let tmp = dir.join(MERGE_TMP);
    let file = File::create(&tmp)?;
    let mut out = BufWriter::new(&file);
    let mut written = 0u64;
    let read = |loc: ValueLoc| -> io::Result<String> {
        let input = inputs
            .iter()
            .rev()
            .find(|input| input.start <= loc.offset)
            .filter(|input| loc.offset + u64::from(loc.len) <= input.start + input.len)
            .ok_or_else(|| io::Error::other(format!("no segment holds offset {}", loc.offset)))?;
        let bytes = read_range(
            &input.file,
            loc.offset - input.start,
            loc.len as usize,
            &input.path,
        )
        .map_err(|err| io::Error::other(err.to_string()))?;
        String::from_utf8(bytes).map_err(|_| io::Error::other("a value that is not UTF-8"))
    };
    let moves = write_compacted(plan, start, read, |frame| {
        written += frame.len() as u64;
        out.write_all(frame)
    })?;
    out.flush()?;
    drop(out);
    file.sync_all()?;
    if stop_after == Some(Step::Written) {
        return Err(io::Error::other("stopped after writing"));
    }
    let path = dir.join(merged_name(start, plan.end));
    std::fs::rename(&tmp, &path)?;
    if stop_after == Some(Step::Renamed) {
        return Err(io::Error::other("stopped after renaming"));
    }
    File::open(dir)?.sync_all()?;
    if stop_after == Some(Step::DirSynced) {
        return Err(io::Error::other("stopped after syncing the directory"));
    }
    for input in inputs {
        if input.path != path {
            std::fs::remove_file(&input.path)?;
        }
    }
    if stop_after == Some(Step::Deleted) {
        return Err(io::Error::other("stopped after deleting"));
    }
    File::open(dir)?.sync_all()?;
    Ok(Merged {
        path,
        len: written,
        moves,
    })
}

/// Live bytes a plan keeps, roughly: for deciding when the next merge is due.
pub(crate) fn plan_bytes(plan: &CompactionPlan) -> u64 {
    plan.carried
        .iter()
        .map(|carried| match carried {
            Carried::Value { key, loc } => 24 + key.len() as u64 + u64::from(loc.len),
            Carried::Prepare { key, put, .. } => {
                32 + key.len() as u64 + put.map_or(0, |loc| u64::from(loc.len))
            }
        })
        .sum()
}

/// The end a merged file's name gives.
fn merged_end_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    parse_name(name)?.1
}

fn file_len(file: &File) -> Result<u64, NetError> {
    file.metadata()
        .map(|meta| meta.len())
        .map_err(|err| NetError::io("reading a segment's length", err))
}

fn read_range(file: &File, at: u64, len: usize, path: &Path) -> Result<Vec<u8>, NetError> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, at)
        .map_err(|err| NetError::io(format!("reading the segment {}", path.display()), err))?;
    Ok(buf)
}

fn cut(path: &Path, len: u64) -> Result<(), NetError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(len).and_then(|()| file.sync_all()))
        .map_err(|err| {
            NetError::io(
                format!("cutting the segment {} to {len} bytes", path.display()),
                err,
            )
        })
}

/// Feeds one segment file to `fold` in chunks, not as the log's end; returns the bytes
/// left over at the file's end (a frame cut there), 0 when the file ended between
/// frames.
fn feed_file(
    fold: &mut impl ChunkFold,
    file: &File,
    len: u64,
    path: &Path,
) -> Result<usize, NetError> {
    let mut held: Vec<u8> = Vec::new();
    let mut read = 0u64;
    while read < len && !fold.is_done() {
        let want = (len - read).min(RECOVERY_CHUNK_BYTES as u64) as usize;
        held.extend(read_range(file, read, want, path)?);
        read += want as u64;
        let used = fold.feed(&held, false);
        held.drain(..used.min(held.len()));
    }
    Ok(if fold.is_done() { 0 } else { held.len() })
}

/// What follows the valid frames in the last segment, from where `fold` decoded to.
fn after_frames(
    file: &File,
    start: u64,
    len: u64,
    fold: &impl ChunkFold,
    path: &Path,
) -> Result<AfterPrefix, NetError> {
    let decoded_to = fold.decoded_to();
    let from = decoded_to.saturating_sub(start);
    let rest_len = len.saturating_sub(from);
    let scan_len = rest_len.min(AFTER_SCAN_BYTES as u64);
    let rest = read_range(file, from, scan_len as usize, path)?;
    Ok(
        match after_prefix_from(&rest, decoded_to, fold.prefix_end()) {
            AfterPrefix::ValidFrameAt(at) => AfterPrefix::ValidFrameAt(decoded_to + at),
            AfterPrefix::TornTail | AfterPrefix::Zeros if rest_len > scan_len => {
                AfterPrefix::Unknown
            }
            other => other,
        },
    )
}

/// Reads values back for the replica, from the segment that holds them.
pub(crate) struct SegmentReader {
    shared: Rc<RefCell<Shared>>,
}

impl LogReader for SegmentReader {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let fail = |why: String| {
            StorageError(format!(
                "reading {len} bytes at offset {offset} of the log: {why}"
            ))
        };
        let shared = self.shared.borrow();
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| fail("the range overflows".into()))?;
        if offset < shared.active_start {
            let (start, seg) = shared
                .sealed
                .range(..=offset)
                .next_back()
                .ok_or_else(|| fail("before the first segment".into()))?;
            if end > start + seg.len {
                return Err(fail(format!("past the end of {}", seg.path.display())));
            }
            let mut buf = vec![0; len];
            seg.file
                .read_exact_at(&mut buf, offset - start)
                .map_err(|err| fail(err.to_string()))?;
            return Ok(buf);
        }
        let file = shared
            .active_read
            .as_ref()
            .ok_or_else(|| fail("no segment is open".into()))?;
        // The part in the file, then the part still in memory.
        let in_file = end.min(shared.file_end).saturating_sub(offset);
        let mut buf = vec![0; usize::try_from(in_file).map_err(|err| fail(err.to_string()))?];
        file.read_exact_at(&mut buf, offset - shared.active_start)
            .map_err(|err| fail(err.to_string()))?;
        let held = held_past_file(&shared.bytes, shared.file_end, offset, end)
            .ok_or_else(|| fail("past the end".into()))?;
        buf.extend_from_slice(held);
        Ok(buf)
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
