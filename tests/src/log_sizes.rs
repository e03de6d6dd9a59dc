//! How the logs of a cluster's nodes grew and shrank over a run, for the tests of log
//! compaction: a log shorter than at the last look was compacted.

use std::path::Path;

use crate::eventual::EvCluster;

/// What a log compacted past a small threshold allocates ahead at a time.
pub const SMALL_PREALLOC_BYTES: u64 = 64 * 1024;

/// The bytes the records of the log file at `path` take (0 if there is none): the file
/// itself is longer, by the zeros allocated ahead of the writes.
pub fn records_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_default();
    ringkv_core::log::decode_frames(&bytes).valid_len
}

/// The length of each node's `wal.log` records, looked at after every write of a run.
#[derive(Debug)]
pub struct LogSizes {
    previous: Vec<u64>,
    largest: Vec<u64>,
    compactions: Vec<usize>,
    /// The longest a log was right after a compaction.
    left: Vec<u64>,
    /// The largest each log file was on disk, zeros allocated ahead included.
    largest_file: Vec<u64>,
}

impl LogSizes {
    /// For a cluster of `nodes` nodes, none looked at yet.
    pub fn new(nodes: usize) -> Self {
        Self {
            previous: vec![0; nodes],
            largest: vec![0; nodes],
            compactions: vec![0; nodes],
            left: vec![0; nodes],
            largest_file: vec![0; nodes],
        }
    }

    /// Looks at every node's log now.
    pub fn observe(&mut self, c: &EvCluster) {
        for i in 0..self.previous.len() {
            let path = c.data_dir(i).join("wal.log");
            let now = records_len(&path);
            let file = std::fs::metadata(&path).map_or(0, |meta| meta.len());
            self.largest_file[i] = self.largest_file[i].max(file);
            if now < self.previous[i] {
                self.compactions[i] += 1;
                self.left[i] = self.left[i].max(now);
            }
            self.previous[i] = now;
            self.largest[i] = self.largest[i].max(now);
        }
    }

    /// How many times each node's log was seen shorter than at the look before.
    pub fn compactions(&self) -> &[usize] {
        &self.compactions
    }

    /// Every node's log was compacted at least twice, left under `left_bytes` each time,
    /// and never reached twice `threshold_bytes`.
    pub fn assert_compacted(&self, threshold_bytes: u64, left_bytes: u64) {
        eprintln!("log sizes: {self:?}");
        for i in 0..self.previous.len() {
            assert!(
                self.compactions[i] >= 2,
                "node {i}'s log was compacted {} times (largest {} bytes)",
                self.compactions[i],
                self.largest[i]
            );
            assert!(
                self.left[i] < left_bytes,
                "node {i}'s compacted log holds {} bytes",
                self.left[i]
            );
            assert!(
                self.largest[i] < 2 * threshold_bytes,
                "node {i}'s log grew to {} bytes past a threshold of {threshold_bytes}",
                self.largest[i]
            );
            // A log with a small threshold allocates 64 KiB ahead at a time, not the
            // 4 MiB of a log with the default one.
            assert!(
                self.largest_file[i] < 2 * threshold_bytes + 2 * SMALL_PREALLOC_BYTES,
                "node {i}'s log file took {} bytes on disk past a threshold of \
                 {threshold_bytes}",
                self.largest_file[i]
            );
        }
    }
}
