//! How a log's writes reach its file: into space allocated ahead, each stamped with the
//! log's durable end as it is written.
//!
//! An fdatasync that must also record a grown file size commits the file system's
//! journal; one over space allocated ahead need not, and costs about a third less
//! (docs/performance.md). The price is what a crash may leave: the pages of unsynced
//! writes reach the disk in any order, so a hole of zeros may sit before a valid frame.
//! The stamps let recovery tell that torn stretch from corruption
//! ([`ringkv_core::log::after_prefix`]); a stamp must never be past what is durable.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use ringkv_core::log::stamp_frames;
use ringkv_core::replica::PersistToken;

/// Bytes allocated at a time past a log's end: one allocation, and one sync that records
/// it, per this many bytes of records.
pub(crate) const PREALLOC_BYTES: u64 = 4 * 1024 * 1024;

/// The least a log compacted past a small threshold allocates at a time.
pub(crate) const MIN_PREALLOC_BYTES: u64 = 64 * 1024;

/// What a log compacted once it passes `compact_bytes` allocates at a time: a quarter of
/// the threshold, within [`MIN_PREALLOC_BYTES`] and [`PREALLOC_BYTES`], so that a small
/// threshold keeps the file small on disk too, not 4 MiB of zeros past a few records.
pub(crate) fn prealloc_bytes_for(compact_bytes: u64) -> u64 {
    (compact_bytes / 4).clamp(MIN_PREALLOC_BYTES, PREALLOC_BYTES)
}

/// One log file's writes: where its space is allocated to, and how far it is durable.
#[derive(Debug)]
pub(crate) struct LogWrites {
    /// The file's size: written bytes and the zeros allocated after them.
    allocated_end: u64,
    /// The log is durable up to here (in the offsets its stamps use).
    durable_end: u64,
    /// Syncs handed and not reported, with the log's end each covers, oldest first.
    handed: VecDeque<(PersistToken, u64)>,
    /// The file system refused an allocation ahead: writes grow the file instead.
    cannot_allocate: bool,
    /// No space is allocated past this file offset (a segment's size): writes past it
    /// grow the file.
    allocation_limit: u64,
    /// Bytes allocated at a time past the end of a write.
    chunk_bytes: u64,
}

impl LogWrites {
    /// A log durable up to `durable_end`, whose file is `file_len` bytes long.
    pub(crate) fn new(durable_end: u64, file_len: u64) -> Self {
        Self {
            allocated_end: file_len,
            durable_end,
            handed: VecDeque::new(),
            cannot_allocate: false,
            allocation_limit: u64::MAX,
            chunk_bytes: PREALLOC_BYTES,
        }
    }

    /// From now on, allocates `chunk_bytes` at a time past a write's end.
    pub(crate) fn set_chunk(&mut self, chunk_bytes: u64) {
        assert!(chunk_bytes > 0, "a log allocated ahead by nothing");
        self.chunk_bytes = chunk_bytes;
    }

    /// The same, allocating no space past file offset `limit`.
    pub(crate) fn allocating_to(mut self, limit: u64) -> Self {
        self.allocation_limit = limit;
        self
    }

    /// Stamps `frames` (whole frames) with the durable end and writes them at
    /// `file_offset` of `file`, allocating ahead first when they would pass the file's
    /// end. Not durable until a sync covers them.
    pub(crate) fn write(
        &mut self,
        file: &File,
        file_offset: u64,
        frames: &mut [u8],
    ) -> io::Result<()> {
        let end = file_offset + frames.len() as u64;
        if end > self.allocated_end {
            self.allocate(file, end);
        }
        stamp_frames(frames, self.durable_end);
        file.write_all_at(frames, file_offset)?;
        self.allocated_end = self.allocated_end.max(end);
        Ok(())
    }

    /// Allocates the file's space to past `end`; where the file system cannot, the write
    /// grows the file, as appends do.
    fn allocate(&mut self, file: &File, end: u64) {
        if self.cannot_allocate {
            return;
        }
        let want = end
            .saturating_add(self.chunk_bytes)
            .min(self.allocation_limit);
        if want <= end {
            return;
        }
        match allocate(file, self.allocated_end, want - self.allocated_end) {
            Ok(()) => self.allocated_end = want,
            Err(err) => {
                tracing::info!(%err, "the file system cannot allocate a log's space ahead; the log grows with its writes");
                self.cannot_allocate = true;
            }
        }
    }

    /// A sync of everything written up to `end` was handed, named by `token`.
    pub(crate) fn handed(&mut self, token: PersistToken, end: u64) {
        if let Some(&(last, last_end)) = self.handed.back() {
            assert!(token > last && end >= last_end, "syncs handed out of order");
        }
        self.handed.push_back((token, end));
    }

    /// The sync named `token` finished (and with it every one handed before it).
    pub(crate) fn finished(&mut self, token: PersistToken) {
        while let Some(&(handed, end)) = self.handed.front() {
            if handed > token {
                break;
            }
            self.durable_end = self.durable_end.max(end);
            self.handed.pop_front();
        }
    }

    /// Everything up to `end` is durable: a sync on the calling thread.
    pub(crate) fn synced(&mut self, end: u64) {
        assert!(
            self.handed.is_empty(),
            "a log synced around its sync thread"
        );
        self.durable_end = self.durable_end.max(end);
    }

    /// The file now holds `len` bytes, all durable: it was cut there, or replaced by a
    /// file written whole.
    pub(crate) fn file_cut(&mut self, len: u64) {
        assert!(self.handed.is_empty(), "a log cut under a sync");
        self.durable_end = len;
        self.allocated_end = len;
    }

    /// Writes go to a new, empty file from now on; every write so far is durable.
    pub(crate) fn new_file(&mut self) {
        assert!(self.handed.is_empty(), "a new file begun under a sync");
        self.allocated_end = 0;
    }

    /// Where the log is durable to.
    #[cfg(test)]
    pub(crate) fn durable_end(&self) -> u64 {
        self.durable_end
    }
}

/// Allocates `len` bytes of `file` from `offset` on, growing its size (not
/// `FALLOC_FL_KEEP_SIZE`: a size that moves on each sync is the cost this avoids).
#[cfg(target_os = "linux")]
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::other(
            "an allocation past the largest file offset",
        ));
    };
    // SAFETY: fallocate reads no memory of ours; the descriptor is open for as long as
    // `file` is borrowed.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere logs grow with their writes.
#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no fallocate here",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::log::{after_prefix, decode_frames, encode_frame, AfterPrefix};

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            encode_frame(payload, &mut out);
        }
        out
    }

    fn new_log(dir: &std::path::Path) -> File {
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("log"))
            .unwrap()
    }

    #[test]
    fn writes_go_into_space_allocated_ahead_and_carry_the_durable_end() {
        let tmp = tempfile::tempdir().unwrap();
        let file = new_log(tmp.path());
        let mut writes = LogWrites::new(0, 0);
        let mut first = frames(&[b"one", b"two"]);
        writes.write(&file, 0, &mut first).unwrap();
        let first_end = first.len() as u64;
        assert_eq!(file.metadata().unwrap().len(), first_end + PREALLOC_BYTES);
        writes.handed(PersistToken(1), first_end);
        // Written while the first sync runs: stamped with what was durable before it.
        let mut second = frames(&[b"three"]);
        writes.write(&file, first_end, &mut second).unwrap();
        writes.handed(PersistToken(2), first_end + second.len() as u64);
        writes.finished(PersistToken(1));
        assert_eq!(writes.durable_end(), first_end);
        let mut third = frames(&[b"four"]);
        let third_at = first_end + second.len() as u64;
        writes.write(&file, third_at, &mut third).unwrap();
        writes.finished(PersistToken(2));
        assert_eq!(writes.durable_end(), third_at);

        let mut bytes = vec![0; usize::try_from(file.metadata().unwrap().len()).unwrap()];
        file.read_exact_at(&mut bytes, 0).unwrap();
        let decoded = decode_frames(&bytes);
        let stamps: Vec<_> = decoded.frames.iter().map(|f| f.durable_end).collect();
        assert_eq!(
            stamps,
            vec![Some(0), Some(0), Some(0), Some(first_end)],
            "each frame stamped with the durable end at its write"
        );
        assert_eq!(after_prefix(&bytes, decoded.valid_len), AfterPrefix::Zeros);
    }

    #[test]
    fn a_log_with_a_small_compaction_threshold_allocates_less_ahead() {
        assert_eq!(prealloc_bytes_for(16 * 1024), MIN_PREALLOC_BYTES);
        assert_eq!(prealloc_bytes_for(1024 * 1024), 256 * 1024);
        assert_eq!(prealloc_bytes_for(64 * 1024 * 1024), PREALLOC_BYTES);
        assert_eq!(prealloc_bytes_for(u64::MAX), PREALLOC_BYTES);
        let tmp = tempfile::tempdir().unwrap();
        let file = new_log(tmp.path());
        let mut writes = LogWrites::new(0, 0);
        writes.set_chunk(MIN_PREALLOC_BYTES);
        let mut first = frames(&[b"one"]);
        writes.write(&file, 0, &mut first).unwrap();
        let end = first.len() as u64;
        assert_eq!(file.metadata().unwrap().len(), end + MIN_PREALLOC_BYTES);
        // Writes within the space allocated do not grow the file; the first past it
        // allocates one more chunk past its own end.
        let big = vec![b'x'; 40 * 1024];
        let mut second = frames(&[&big]);
        writes.write(&file, end, &mut second).unwrap();
        assert_eq!(file.metadata().unwrap().len(), end + MIN_PREALLOC_BYTES);
        let at = end + second.len() as u64;
        let mut third = frames(&[&big]);
        writes.write(&file, at, &mut third).unwrap();
        let third_end = at + third.len() as u64;
        assert_eq!(
            file.metadata().unwrap().len(),
            third_end + MIN_PREALLOC_BYTES
        );
    }
}
