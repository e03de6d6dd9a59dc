//! A simulated disk: one append-only log file per server, with a page cache that loses
//! (or tears) what was written but not synced when its server crashes.

use std::cell::RefCell;
use std::rc::Rc;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use ringkv_core::replica::{LogReader, StorageError};

/// The bytes of one server's log.
#[derive(Debug, Default)]
pub struct DiskState {
    /// Everything written, synced or not (what reads see).
    bytes: Vec<u8>,
    /// How much of `bytes` is durable.
    durable_len: usize,
}

/// A server's disk, shared between the world (writes, syncs, crashes) and the replica
/// (reads through [`LogReader`]).
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Rc<RefCell<DiskState>>);

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
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

    /// The crash: keeps the durable bytes and a random prefix of the rest, whose last
    /// part may be torn (garbled) with chance `tear`. Returns how many unsynced bytes
    /// survived.
    pub fn crash(&self, rng: &mut ChaCha8Rng, tear: f64) -> usize {
        let mut state = self.0.borrow_mut();
        let unsynced = state.bytes.len() - state.durable_len;
        let kept = if unsynced == 0 {
            0
        } else {
            rng.random_range(0..=unsynced)
        };
        let new_len = state.durable_len + kept;
        state.bytes.truncate(new_len);
        if kept > 0 && rng.random_bool(tear) {
            let at = rng.random_range(state.durable_len..new_len);
            if let Some(byte) = state.bytes.get_mut(at) {
                *byte ^= rng.random_range(1..=255u8);
            }
        }
        kept
    }

    /// The whole file as it is now (what a restarting server reads).
    pub fn contents(&self) -> Vec<u8> {
        self.0.borrow().bytes.clone()
    }

    /// Cuts the file to `len` bytes and makes it durable (recovery dropped a torn tail).
    pub fn truncate_and_sync(&self, len: usize) {
        let mut state = self.0.borrow_mut();
        state.bytes.truncate(len);
        state.durable_len = state.bytes.len();
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
        let state = self.0.borrow();
        let start = usize::try_from(offset).map_err(|_| StorageError("offset too large".into()))?;
        state
            .bytes
            .get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StorageError(format!("read past the end at {offset}+{len}")))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_crash_keeps_what_was_synced() {
        let disk = SimDisk::new();
        disk.write(b"durable");
        disk.sync_to(7);
        disk.write(b"maybe lost");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let copy = SimDisk::new();
            copy.write(&disk.contents());
            copy.sync_to(7);
            copy.crash(&mut rng, 1.0);
            assert_eq!(&copy.contents()[..7], b"durable");
            assert!(copy.len() <= 17);
        }
    }
}
