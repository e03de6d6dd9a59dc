//! The write-ahead log on disk: appends as the replica asks for them, and one write and
//! one fdatasync for all the appends gathered while the previous sync ran (group
//! commit), the fdatasync done by a sync thread so that the loop keeps serving.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use mio::Waker;

use ringkv_core::log::{after_prefix, AfterPrefix, PrefixEnd};
use ringkv_core::replica::{LogReader, PersistToken, ReplicaRecovery, StorageError, SyncUrgency};

use crate::datadir::sync_dir;
use crate::error::NetError;
use crate::log_writes::LogWrites;
use crate::sync_thread::{self, PendingUrgency, SyncJob, SyncThread};

/// The log's file name in the data directory.
pub(crate) const LOG_FILE: &str = "wal.log";

/// Bytes of the log read at once by recovery: what it holds of the log in memory, with
/// at most one frame cut by a chunk's end.
pub(crate) const RECOVERY_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// A fold over a log fed in chunks (a role's recovery); see
/// [`ringkv_core::storage::LogStream`].
pub(crate) trait ChunkFold {
    /// Replays the whole frames at the start of `chunk`; returns the bytes they took.
    fn feed(&mut self, chunk: &[u8], at_end: bool) -> usize;
    /// Whether the log has ended for the fold.
    fn is_done(&self) -> bool;
    /// Where the next chunk starts.
    fn decoded_to(&self) -> u64;
    /// The log goes on at `offset`, past a gap a merged segment leaves.
    fn skip_to(&mut self, offset: u64);
    /// Which version wrote the last frame decoded.
    fn prefix_end(&self) -> PrefixEnd;
}

impl<R: LogReader> ChunkFold for ReplicaRecovery<R> {
    fn feed(&mut self, chunk: &[u8], at_end: bool) -> usize {
        ReplicaRecovery::feed(self, chunk, at_end)
    }

    fn is_done(&self) -> bool {
        ReplicaRecovery::is_done(self)
    }

    fn decoded_to(&self) -> u64 {
        ReplicaRecovery::decoded_to(self)
    }

    fn skip_to(&mut self, offset: u64) {
        ReplicaRecovery::skip_to(self, offset);
    }

    fn prefix_end(&self) -> PrefixEnd {
        ReplicaRecovery::prefix_end(self)
    }
}

/// The log file as the replica writes it.
///
/// Appends collect in memory; [`LogFile::sync`] writes them with one `write` and makes
/// them durable with one `fdatasync`, and names the last append it covers, so every
/// answer waiting on any of them can go out. (A write per append was one system call per
/// record, four per PUT.) Writes go into space allocated ahead, stamped with the durable
/// end ([`LogWrites`]). Reads see appends not yet written. An error is final: after a
/// failed fsync the kernel may have dropped the dirty pages, so nothing may be
/// acknowledged.
pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    /// Where writes go, and the durable end they are stamped with.
    writes: LogWrites,
    /// Whether recovery said where the records end ([`LogFile::start_appending`]): the
    /// file may hold zeros or a torn stretch after them.
    appending: bool,
    /// Appends not yet written, shared with the readers.
    pending: Rc<RefCell<Pending>>,
    /// The last write appended and not yet synced.
    unsynced: Option<PersistToken>,
    /// What the unsynced writes ask of their sync.
    pending_sync: PendingUrgency,
    /// Syncs done, for the statistics logged at shutdown.
    syncs: u64,
    /// The handle the sync thread syncs.
    sync_file: Option<Arc<File>>,
    /// Where syncs run when the loop does not wait for them ([`LogFile::begin_sync`]).
    /// Declared last: dropped after the file's last write, and it finishes its sync.
    sync_thread: Option<SyncThread>,
}

impl LogFile {
    /// Opens (creating if missing) the log in `dir` and returns it with its whole
    /// contents, for recovery. The file and its directory entry are synced first: after a
    /// crash of the process, bytes it wrote but never synced may still sit in the page
    /// cache, and recovery must not answer `ready` or `ack` from bytes a later crash of
    /// the machine could lose. A failed sync stops the start.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Vec<u8>), NetError> {
        let mut log = Self::open_unread(dir)?;
        let mut bytes = Vec::new();
        log.file
            .read_to_end(&mut bytes)
            .map_err(|err| NetError::io(format!("reading the log {}", log.path.display()), err))?;
        log.pending.borrow_mut().file_len = bytes.len() as u64;
        Ok((log, bytes))
    }

    /// Opens (creating if missing) and syncs the log in `dir` as [`LogFile::open`] does,
    /// without reading it.
    fn open_unread(dir: &Path) -> Result<Self, NetError> {
        let path = dir.join(LOG_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| NetError::io(format!("opening the log {}", path.display()), err))?;
        file.sync_all().map_err(|err| {
            NetError::io(
                format!("syncing the log {} before recovery", path.display()),
                err,
            )
        })?;
        if !existed {
            sync_dir(dir)?;
        }
        let file_len = file
            .metadata()
            .map_err(|err| NetError::io(format!("reading the log {}", path.display()), err))?
            .len();
        let pending = Pending {
            file_len,
            bytes: Vec::new(),
            read: None,
        };
        Ok(Self {
            path,
            file,
            writes: LogWrites::new(file_len, file_len),
            appending: false,
            pending: Rc::new(RefCell::new(pending)),
            unsynced: None,
            pending_sync: PendingUrgency::default(),
            syncs: 0,
            sync_file: None,
            sync_thread: None,
        })
    }

    /// After recovery: the records end at `valid_len`, and `after` is what recovery
    /// found past them (zeros allocated ahead, or a torn tail, or damage the operator
    /// allowed cutting). Cuts the file there, durably, so that appends follow the last
    /// valid record.
    pub(crate) fn start_appending(
        &mut self,
        valid_len: u64,
        after: AfterPrefix,
    ) -> Result<(), NetError> {
        assert!(!self.appending, "a log started twice");
        assert!(
            self.pending.borrow().bytes.is_empty(),
            "appends before recovery"
        );
        let file_len = self.pending.borrow().file_len;
        if valid_len < file_len {
            if after != AfterPrefix::Zeros {
                tracing::warn!(
                    cut_bytes = file_len - valid_len,
                    "the log's torn tail was cut off"
                );
            }
            self.cut(valid_len)?;
        }
        self.appending = true;
        Ok(())
    }

    /// Cuts the file to `len` bytes, durably.
    fn cut(&mut self, len: u64) -> Result<(), NetError> {
        self.pending.borrow_mut().file_len = len;
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(|err| {
                NetError::io(
                    format!("truncating the log {} to {len} bytes", self.path.display()),
                    err,
                )
            })?;
        self.writes.file_cut(len);
        Ok(())
    }

    /// From now on, allocates `bytes` at a time past the end of the writes: less than
    /// the default for a log compacted past a small threshold
    /// ([`crate::log_writes::prealloc_bytes_for`]).
    pub(crate) fn allocate_ahead_by(&mut self, bytes: u64) {
        self.writes.set_chunk(bytes);
    }

    /// A reader of the same file, for the replica to read values back. Every reader
    /// shares one read-only handle, which [`LogFile::replace`] moves to the new file.
    pub(crate) fn reader(&self) -> Result<FileLogReader, NetError> {
        let mut pending = self.pending.borrow_mut();
        if pending.read.is_none() {
            pending.read = Some(self.open_for_reading()?);
        }
        Ok(FileLogReader {
            pending: Rc::clone(&self.pending),
        })
    }

    fn open_for_reading(&self) -> Result<File, NetError> {
        File::open(&self.path).map_err(|err| {
            NetError::io(
                format!("opening the log {} for reading", self.path.display()),
                err,
            )
        })
    }

    /// Appends the bytes of write `token`; written and durable at the next
    /// [`LogFile::sync`] or sync [`LogFile::begin_sync`] hands (soon if `urgency` says
    /// an answer waits).
    pub(crate) fn append(
        &mut self,
        token: PersistToken,
        bytes: &[u8],
        urgency: SyncUrgency,
    ) -> Result<(), NetError> {
        assert!(self.appending, "appends before start_appending");
        self.pending.borrow_mut().bytes.extend_from_slice(bytes);
        self.unsynced = Some(token);
        self.pending_sync.note(urgency);
        Ok(())
    }

    /// An answer now waits for write `token`, appended as deferrable: a job lingering
    /// over it is synced at once, or, if it is not handed yet, its job will be urgent.
    pub(crate) fn hasten(&mut self, token: PersistToken) -> Result<(), NetError> {
        let unsynced = self.unsynced.is_some();
        let thread = self.sync_thread.as_mut();
        sync_thread::hasten_write(thread, &mut self.pending_sync, unsynced, token)
    }

    /// Writes the appends held in memory to the file (not yet durable).
    fn write_pending(&mut self) -> Result<(), NetError> {
        let mut pending = self.pending.borrow_mut();
        if pending.bytes.is_empty() {
            return Ok(());
        }
        let Pending {
            file_len, bytes, ..
        } = &mut *pending;
        self.writes
            .write(&self.file, *file_len, bytes)
            .map_err(|err| {
                NetError::io(format!("appending to the log {}", self.path.display()), err)
            })?;
        *file_len += bytes.len() as u64;
        bytes.clear();
        Ok(())
    }

    /// Starts the thread that [`LogFile::begin_sync`] hands its syncs to; it wakes
    /// `waker` when one is done.
    pub(crate) fn start_sync_thread(&mut self, waker: Arc<Waker>) -> Result<(), NetError> {
        let file = self.file.try_clone().map_err(|err| {
            NetError::io(
                format!("opening the log {} for syncing", self.path.display()),
                err,
            )
        })?;
        self.sync_thread = Some(SyncThread::start(waker)?);
        self.sync_file = Some(Arc::new(file));
        Ok(())
    }

    /// Writes every append so far and hands their fdatasync to the sync thread, unless
    /// the thread cannot take them yet (then they wait for the next call after its
    /// sync; an urgent job may join a lingering one) or nothing was appended.
    /// [`LogFile::finished_sync`] says when it is done.
    pub(crate) fn begin_sync(&mut self) -> Result<(), NetError> {
        let Some(token) = self.unsynced else {
            return Ok(());
        };
        // Only writes that ride along: they wait for the next job.
        let Some(urgency) = self.pending_sync.job() else {
            return Ok(());
        };
        let can_take = self.sync_thread.as_ref().map(|t| t.can_take(urgency));
        match can_take {
            None => panic!("begin_sync without a sync thread"),
            Some(false) => return Ok(()),
            Some(true) => {}
        }
        self.write_pending()?;
        self.writes.handed(token, self.pending.borrow().file_len);
        if let (Some(thread), Some(file)) = (&mut self.sync_thread, &self.sync_file) {
            let file = Arc::clone(file);
            thread.begin(SyncJob {
                token,
                file,
                dir: None,
                urgency,
            })?;
        }
        self.unsynced = None;
        self.pending_sync.handed();
        Ok(())
    }

    /// The last write made durable by a sync that finished since the last call, if any.
    /// A failed sync is final (see [`LogFile`]).
    pub(crate) fn finished_sync(&mut self) -> Result<Option<PersistToken>, NetError> {
        let Some(thread) = &mut self.sync_thread else {
            return Ok(None);
        };
        let done = thread
            .finished()
            .map_err(|err| NetError::io(format!("syncing the log {}", self.path.display()), err))?;
        if let Some(token) = done {
            self.writes.finished(token);
            self.syncs += 1;
        }
        Ok(done)
    }

    /// Makes every append so far durable with one fdatasync, on the calling thread;
    /// returns the last write it covered, or `None` if nothing was appended since the
    /// last sync. For loops without a sync thread.
    pub(crate) fn sync(&mut self) -> Result<Option<PersistToken>, NetError> {
        assert!(
            self.sync_thread.is_none(),
            "a log with a sync thread syncs through it"
        );
        let Some(token) = self.unsynced else {
            return Ok(None);
        };
        self.write_pending()?;
        self.file
            .sync_data()
            .map_err(|err| NetError::io(format!("syncing the log {}", self.path.display()), err))?;
        self.writes.synced(self.pending.borrow().file_len);
        self.syncs += 1;
        self.unsynced = None;
        self.pending_sync.handed();
        Ok(Some(token))
    }

    /// Whether a sync is under way on the sync thread: the file must not be replaced
    /// under it.
    pub(crate) fn sync_busy(&self) -> bool {
        self.sync_thread.as_ref().is_some_and(SyncThread::busy)
    }

    /// Bytes in the log, counting appends not yet written.
    pub(crate) fn len_bytes(&self) -> u64 {
        let pending = self.pending.borrow();
        pending.file_len + pending.bytes.len() as u64
    }

    /// Replaces the whole log with `bytes` (see [`install_log`]), which must hold the
    /// effect of every append so far: those appends are dropped, and the last of them is
    /// returned, durable now. Only while no sync is under way.
    ///
    /// A failure before the rename (a full disk) leaves the log as it was and is handed
    /// back in [`Replaced::Skipped`]: the log goes on, and a later call may try again. A
    /// failure from the rename on is final, as a failed sync is.
    pub(crate) fn replace(&mut self, bytes: &[u8]) -> Result<Replaced, NetError> {
        assert!(!self.sync_busy(), "the log replaced under a sync");
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        if let Err(err) = install_log(&dir, bytes, 2) {
            let _ = std::fs::remove_file(dir.join(REPLACEMENT_FILE));
            return Ok(Replaced::Skipped(err));
        }
        (2..INSTALL_STEPS).try_for_each(|step| install_step(&dir, bytes, step))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|err| {
                NetError::io(format!("reopening the log {}", self.path.display()), err)
            })?;
        if self.sync_file.is_some() {
            let for_sync = file.try_clone().map_err(|err| {
                NetError::io(
                    format!("opening the log {} for syncing", self.path.display()),
                    err,
                )
            })?;
            self.sync_file = Some(Arc::new(for_sync));
        }
        self.file = file;
        // Readers read the new file: the old one is gone with its offsets.
        let has_readers = self.pending.borrow().read.is_some();
        let read = if has_readers {
            Some(self.open_for_reading()?)
        } else {
            None
        };
        let mut pending = self.pending.borrow_mut();
        pending.read = read;
        pending.bytes.clear();
        pending.file_len = bytes.len() as u64;
        self.writes.file_cut(pending.file_len);
        self.syncs += 1;
        self.pending_sync.handed();
        Ok(Replaced::Done(self.unsynced.take()))
    }

    /// The file's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// How many fdatasyncs were done: appends divided by this is the group-commit factor.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs
    }
}

/// What [`LogFile::replace`] did.
#[derive(Debug)]
pub(crate) enum Replaced {
    /// The new log is in place; the last append it covers, if any, is durable.
    Done(Option<PersistToken>),
    /// The new log could not be written; the old one goes on, unchanged.
    Skipped(NetError),
}

/// The name a replacement log is written under before it is renamed over the log.
pub(crate) const REPLACEMENT_FILE: &str = "wal.log.new";

/// The steps of [`install_log`]: write the new file, sync it, rename it over the log,
/// sync the directory.
pub(crate) const INSTALL_STEPS: usize = 4;

/// Installs `bytes` as the log of `dir` atomically: a crash between any two steps leaves
/// the old log or the new one, whole, and at worst a stray replacement file, which
/// [`remove_stray_replacement`] deletes at the next start. Runs only the first `steps`
/// steps (all of them but in tests, which stop early to play a crash there).
pub(crate) fn install_log(dir: &Path, bytes: &[u8], steps: usize) -> Result<(), NetError> {
    (0..steps.min(INSTALL_STEPS)).try_for_each(|step| install_step(dir, bytes, step))
}

/// Step `step` of [`install_log`].
fn install_step(dir: &Path, bytes: &[u8], step: usize) -> Result<(), NetError> {
    let new = dir.join(REPLACEMENT_FILE);
    let fail = |what: &str, err| NetError::io(format!("{what} {}", new.display()), err);
    match step {
        0 => File::create(&new)
            .and_then(|mut file| file.write_all(bytes))
            .map_err(|err| fail("writing", err)),
        1 => File::open(&new)
            .and_then(|file| file.sync_all())
            .map_err(|err| fail("syncing", err)),
        2 => std::fs::rename(&new, dir.join(LOG_FILE))
            .map_err(|err| fail("renaming over the log", err)),
        _ => sync_dir(dir),
    }
}

/// Deletes a replacement log a crash left before it was renamed: the log beside it is
/// whole, and the replacement may not be.
pub(crate) fn remove_stray_replacement(dir: &Path) -> Result<(), NetError> {
    let new = dir.join(REPLACEMENT_FILE);
    match std::fs::remove_file(&new) {
        Ok(()) => sync_dir(dir),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(NetError::io(format!("removing {}", new.display()), err)),
    }
}

/// Refuses to start on a log damaged before its end (a valid record after a bad one, a
/// record of an unknown kind), unless the operator allowed cutting it: only the last,
/// unsynced part of a log can be torn by a crash, so anything else is corruption, and
/// cutting it would silently drop records that were acknowledged.
pub(crate) fn refuse_damage(
    log: &LogFile,
    valid_len: u64,
    after: AfterPrefix,
    bad_record: Option<String>,
    allow_cut: bool,
) -> Result<(), NetError> {
    refuse_damage_in(log.path(), valid_len, after, bad_record, allow_cut)
}

/// After a node's recovery read `bytes` and kept `valid_len` of them: refuses a damaged
/// log as [`refuse_damage`] does, and otherwise starts appending after the last valid
/// record ([`LogFile::start_appending`]).
pub(crate) fn refuse_damage_or_cut_tail(
    log: &mut LogFile,
    bytes: &[u8],
    valid_len: u64,
    bad_record: Option<String>,
    allow_cut: bool,
) -> Result<(), NetError> {
    let after = after_prefix(bytes, valid_len);
    refuse_damage(log, valid_len, after, bad_record, allow_cut)?;
    log.start_appending(valid_len, after)
}

/// [`refuse_damage`] for a log file named by its path (a segment).
pub(crate) fn refuse_damage_in(
    file: &Path,
    valid_len: u64,
    after: AfterPrefix,
    bad_record: Option<String>,
    allow_cut: bool,
) -> Result<(), NetError> {
    let what = match (bad_record, after) {
        (Some(what), _) => format!("a record this version cannot read: {what}"),
        (None, AfterPrefix::ValidFrameAt(at)) => {
            format!("a bad record, with a valid one after it at byte {at}")
        }
        (None, AfterPrefix::Unknown) => {
            "a bad record, with too much after it to tell a torn tail".to_owned()
        }
        (None, AfterPrefix::TornTail | AfterPrefix::Zeros) => return Ok(()),
    };
    refuse(file, valid_len, what, allow_cut)
}

/// Refuses a log damaged at `valid_len` as `what` says, unless the operator allowed
/// cutting it there.
fn refuse(file: &Path, valid_len: u64, what: String, allow_cut: bool) -> Result<(), NetError> {
    if allow_cut {
        tracing::warn!(file = %file.display(), offset = valid_len, %what, "cutting a damaged log as asked");
        return Ok(());
    }
    Err(NetError::CorruptLog {
        file: file.to_path_buf(),
        offset: valid_len,
        what,
    })
}

/// Refuses a segmented log whose records end at `valid_len`, in `file`, before the next
/// segment starts at `next`: the bytes between are gone, with records after them. Unless
/// the operator allowed cutting there, which loses every record from `valid_len` on.
pub(crate) fn refuse_missing(
    file: &Path,
    valid_len: u64,
    next: u64,
    allow_cut: bool,
) -> Result<(), NetError> {
    let what = format!(
        "the log's bytes up to byte {next}, where the next segment starts, are missing: a \
         segment cut short or removed"
    );
    refuse(file, valid_len, what, allow_cut)
}

impl Drop for LogFile {
    /// Appends still in memory reach the file (not durably), as they did when every
    /// append was written at once; nothing was acknowledged on them.
    fn drop(&mut self) {
        if let Err(err) = self.write_pending() {
            tracing::warn!(%err, "writing the last appends of the log failed");
        }
    }
}

/// Appends not yet written to the file, and how long the file is: a read past the file
/// is served from here. Also the readers' handle of the file, so that a replaced log is
/// read from its new file.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    file_len: u64,
    bytes: Vec<u8>,
    /// The read-only handle of the file, once a reader was made.
    read: Option<File>,
}

/// Reads values back from the log file for the replica, with positioned reads on a
/// read-only handle so that they do not move the appending handle.
pub(crate) struct FileLogReader {
    pending: Rc<RefCell<Pending>>,
}

impl LogReader for FileLogReader {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let fail = |why: String| {
            StorageError(format!(
                "reading {len} bytes at offset {offset} of the log: {why}"
            ))
        };
        let pending = self.pending.borrow();
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| fail("the range overflows".into()))?;
        // The part in the file, then the part still in memory.
        let in_file = end.min(pending.file_len).saturating_sub(offset);
        let mut buf = vec![0; usize::try_from(in_file).map_err(|err| fail(err.to_string()))?];
        if !buf.is_empty() {
            let file = pending
                .read
                .as_ref()
                .ok_or_else(|| fail("the log has no read handle".into()))?;
            file.read_exact_at(&mut buf, offset)
                .map_err(|err| fail(err.to_string()))?;
        }
        let held = held_past_file(&pending.bytes, pending.file_len, offset, end)
            .ok_or_else(|| fail("past the end".into()))?;
        buf.extend_from_slice(held);
        Ok(buf)
    }
}

/// The part of the log range `offset..end` that lies past `file_end`, in the appends
/// `held` in memory (they start at `file_end`): empty if the range ends in the file,
/// `None` if it runs past what is held. Both logs' readers finish a read with it.
pub(crate) fn held_past_file(held: &[u8], file_end: u64, offset: u64, end: u64) -> Option<&[u8]> {
    if end <= file_end {
        return Some(&[]);
    }
    let from = usize::try_from(offset.saturating_sub(file_end)).ok()?;
    let to = usize::try_from(end - file_end).ok()?;
    held.get(from..to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_writes::PREALLOC_BYTES;
    use ringkv_core::log::{decode_frames, encode_frame, frame_len, FRAME_HEADER_BYTES};

    #[test]
    fn a_read_past_the_file_takes_the_held_appends_and_no_more() {
        let held = b"abcdef";
        // The file ends at 100; the held appends are bytes 100..106.
        assert_eq!(
            held_past_file(held, 100, 90, 100),
            Some(&b""[..]),
            "all in the file"
        );
        assert_eq!(
            held_past_file(held, 100, 90, 103),
            Some(&b"abc"[..]),
            "straddles"
        );
        assert_eq!(
            held_past_file(held, 100, 102, 106),
            Some(&b"cdef"[..]),
            "all held"
        );
        assert_eq!(
            held_past_file(held, 100, 104, 107),
            None,
            "past what is held"
        );
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
        out
    }

    /// Opens the log in `dir` and starts appending where its records end, as a role's
    /// recovery does; returns it with the payloads read and what followed them.
    fn opened(dir: &Path) -> (LogFile, Vec<Vec<u8>>, AfterPrefix) {
        let (mut log, bytes) = LogFile::open(dir).unwrap();
        let decoded = decode_frames(&bytes);
        let after = after_prefix(&bytes, decoded.valid_len);
        let payloads = decoded.frames.iter().map(|f| f.payload.to_vec()).collect();
        log.start_appending(decoded.valid_len, after).unwrap();
        (log, payloads, after)
    }

    fn on_disk(dir: &Path) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(dir.join(LOG_FILE)).unwrap();
        let decoded = decode_frames(&bytes);
        decoded.frames.iter().map(|f| f.payload.to_vec()).collect()
    }

    fn append(log: &mut LogFile, token: u64, payload: &[u8], urgency: SyncUrgency) {
        log.append(PersistToken(token), &frame(payload), urgency)
            .unwrap();
    }

    /// Where the payload of the `index`th of frames of `payload_bytes` bytes each starts.
    fn payload_at(index: usize, payload_bytes: usize) -> u64 {
        (index * frame_len(payload_bytes) + FRAME_HEADER_BYTES) as u64
    }

    #[test]
    fn a_write_nothing_waits_for_starts_no_sync_and_rides_with_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, _, _) = opened(tmp.path());
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        log.start_sync_thread(waker).unwrap();
        append(&mut log, 1, b"finished", SyncUrgency::Never);
        log.begin_sync().unwrap();
        assert!(!log.sync_busy(), "no sync for it alone");
        append(&mut log, 2, b"commit", SyncUrgency::Now);
        log.begin_sync().unwrap();
        assert!(log.sync_busy());
        let mut events = mio::Events::with_capacity(4);
        let mut done = None;
        for _ in 0..100 {
            done = log.finished_sync().unwrap();
            if done.is_some() {
                break;
            }
            poll.poll(&mut events, Some(std::time::Duration::from_millis(100)))
                .unwrap();
        }
        assert_eq!(done, Some(PersistToken(2)), "one sync covers both");
        assert_eq!(log.syncs(), 1);
    }

    #[test]
    fn several_appends_share_one_sync_that_names_the_last() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, payloads, after) = opened(tmp.path());
        assert!(payloads.is_empty());
        assert_eq!(after, AfterPrefix::Zeros);
        assert_eq!(log.sync().unwrap(), None, "nothing to sync");
        append(&mut log, 1, b"one", SyncUrgency::Now);
        append(&mut log, 2, b"two", SyncUrgency::Now);
        append(&mut log, 3, b"six", SyncUrgency::Now);
        assert_eq!(log.sync().unwrap(), Some(PersistToken(3)));
        assert_eq!(log.syncs(), 1);
        assert_eq!(log.sync().unwrap(), None);
        assert_eq!(log.syncs(), 1);
        append(&mut log, 4, b"ten", SyncUrgency::Now);
        assert_eq!(log.sync().unwrap(), Some(PersistToken(4)));
        assert_eq!(log.syncs(), 2);
        let reader = log.reader().unwrap();
        assert_eq!(reader.read_at(payload_at(1, 3), 3).unwrap(), b"two");
        assert!(
            reader.read_at(payload_at(4, 3), 3).is_err(),
            "reads past the end fail, never panic"
        );
    }

    #[test]
    fn appends_are_written_into_space_allocated_ahead_at_the_sync_and_readable_before() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, _, _) = opened(tmp.path());
        append(&mut log, 1, b"abc", SyncUrgency::Now);
        log.sync().unwrap();
        append(&mut log, 2, b"def", SyncUrgency::Now);
        assert_eq!(
            on_disk(tmp.path()),
            vec![b"abc".to_vec()],
            "an append waits for the sync"
        );
        let file_len = std::fs::metadata(tmp.path().join(LOG_FILE)).unwrap().len();
        assert_eq!(
            file_len,
            frame_len(3) as u64 + PREALLOC_BYTES,
            "allocated ahead"
        );
        let reader = log.reader().unwrap();
        assert_eq!(
            reader.read_at(payload_at(1, 3), 3).unwrap(),
            b"def",
            "held in memory"
        );
        let across = reader
            .read_at(payload_at(0, 3) + 1, 2 + FRAME_HEADER_BYTES + 1)
            .unwrap();
        let mut expected = b"bc".to_vec();
        expected.extend_from_slice(&frame(b"def")[..FRAME_HEADER_BYTES + 1]);
        assert_eq!(across, expected, "across the file's end");
        assert!(
            reader.read_at(payload_at(2, 3), 3).is_err(),
            "past everything"
        );
        assert!(reader.read_at(u64::MAX, 2).is_err(), "overflow");
        log.sync().unwrap();
        assert_eq!(on_disk(tmp.path()), vec![b"abc".to_vec(), b"def".to_vec()]);
        assert_eq!(
            reader.read_at(payload_at(1, 3), 3).unwrap(),
            b"def",
            "from the file now"
        );
        let bytes = std::fs::read(tmp.path().join(LOG_FILE)).unwrap();
        let stamps: Vec<_> = decode_frames(&bytes)
            .frames
            .iter()
            .map(|f| f.durable_end)
            .collect();
        assert_eq!(stamps, vec![Some(0), Some(frame_len(3) as u64)]);
    }

    #[test]
    fn a_replaced_log_is_read_from_its_new_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, _, _) = opened(tmp.path());
        let reader = log.reader().unwrap();
        append(&mut log, 1, b"old bytes", SyncUrgency::Now);
        log.sync().unwrap();
        append(&mut log, 2, b"unsynced", SyncUrgency::Now);
        assert!(matches!(
            log.replace(&frame(b"NEW")).unwrap(),
            Replaced::Done(Some(PersistToken(2)))
        ));
        assert_eq!(reader.read_at(payload_at(0, 3), 3).unwrap(), b"NEW");
        assert!(
            reader.read_at(payload_at(1, 3), 1).is_err(),
            "the old bytes are gone"
        );
        append(&mut log, 3, b"XYZ", SyncUrgency::Now);
        assert_eq!(
            reader.read_at(payload_at(1, 3), 3).unwrap(),
            b"XYZ",
            "from memory"
        );
        log.sync().unwrap();
        assert_eq!(reader.read_at(payload_at(1, 3), 3).unwrap(), b"XYZ");
        assert_eq!(on_disk(tmp.path()), vec![b"NEW".to_vec(), b"XYZ".to_vec()]);
    }

    #[test]
    fn reopening_returns_the_records_and_a_cut_sticks() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, _, _) = opened(tmp.path());
        append(&mut log, 1, b"abcdef", SyncUrgency::Now);
        append(&mut log, 2, b"torn", SyncUrgency::Now);
        log.sync().unwrap();
        drop(log);
        let (mut log, bytes) = LogFile::open(tmp.path()).unwrap();
        assert!(
            bytes.len() as u64 > PREALLOC_BYTES,
            "zeros allocated ahead are read too"
        );
        // Recovery keeps the first record alone, as if the second were torn.
        log.start_appending(frame_len(6) as u64, AfterPrefix::TornTail)
            .unwrap();
        append(&mut log, 1, b"XY", SyncUrgency::Now);
        log.sync().unwrap();
        drop(log);
        let (_, payloads, after) = opened(tmp.path());
        assert_eq!(payloads, vec![b"abcdef".to_vec(), b"XY".to_vec()]);
        assert_eq!(after, AfterPrefix::Zeros);
    }

    #[test]
    fn a_crash_that_lost_a_page_before_a_written_one_is_a_torn_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, _, _) = opened(tmp.path());
        append(&mut log, 1, b"synced", SyncUrgency::Now);
        log.sync().unwrap();
        append(&mut log, 2, b"lost", SyncUrgency::Now);
        append(&mut log, 3, b"kept", SyncUrgency::Now);
        // Written, never synced; then the machine loses the middle page.
        drop(log);
        let path = tmp.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let lost = frame_len(6)..frame_len(6) + frame_len(4);
        bytes[lost].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let (mut log, payloads, after) = opened(tmp.path());
        assert_eq!(payloads, vec![b"synced".to_vec()]);
        assert_eq!(after, AfterPrefix::TornTail);
        append(&mut log, 4, b"next", SyncUrgency::Now);
        log.sync().unwrap();
        assert_eq!(
            on_disk(tmp.path()),
            vec![b"synced".to_vec(), b"next".to_vec()]
        );
    }

    #[test]
    fn damage_to_a_synced_record_before_a_later_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, _, _) = opened(tmp.path());
        append(&mut log, 1, b"first", SyncUrgency::Now);
        log.sync().unwrap();
        append(&mut log, 2, b"second", SyncUrgency::Now);
        log.sync().unwrap();
        drop(log);
        let path = tmp.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FRAME_HEADER_BYTES] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (log, bytes) = LogFile::open(tmp.path()).unwrap();
        let decoded = decode_frames(&bytes);
        let after = after_prefix(&bytes, decoded.valid_len);
        assert_eq!(after, AfterPrefix::ValidFrameAt(frame_len(5) as u64));
        assert!(refuse_damage(&log, decoded.valid_len, after, None, false).is_err());
    }
}
