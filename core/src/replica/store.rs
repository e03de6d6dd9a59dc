//! The committed data of a KV server: an index from key to where its value lies in the
//! log, and a write-through cache of values in front of the log.

use std::collections::BTreeMap;
use std::fmt;

use crate::cache::{CacheConfig, CacheConfigError, SetAssociativeCache};

/// Where a committed value's bytes lie in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueLoc {
    /// Byte offset from the start of the log.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Read access to bytes already written to the log: how the replica reads values back
/// without holding them all in memory. Writes never go through it; they are outputs.
pub trait LogReader {
    /// The `len` bytes at `offset`.
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError>;
}

/// A failed read of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageError(pub String);

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StorageError {}

/// The committed key-value data. The index is a `BTreeMap`: its order is deterministic and
/// it cannot be driven into hash collisions by chosen keys.
pub(crate) struct Store<R> {
    index: BTreeMap<String, ValueLoc>,
    cache: SetAssociativeCache<String>,
    reader: R,
}

impl<R: LogReader> Store<R> {
    pub(crate) fn new(cache: CacheConfig, reader: R) -> Result<Self, CacheConfigError> {
        Ok(Self {
            index: BTreeMap::new(),
            cache: SetAssociativeCache::new(cache)?,
            reader,
        })
    }

    /// The committed value, from the cache or else the log (then cached).
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<String>, StorageError> {
        let Some(&loc) = self.index.get(key) else {
            return Ok(None);
        };
        if let Some(value) = self.cache.get(key) {
            return Ok(Some(value.clone()));
        }
        let value = self.read(loc)?;
        self.cache.put(key, value.clone());
        Ok(Some(value))
    }

    /// The committed value, without changing the cache.
    pub(crate) fn peek(&self, key: &str) -> Result<Option<String>, StorageError> {
        let Some(&loc) = self.index.get(key) else {
            return Ok(None);
        };
        match self.cache.peek(key) {
            Some(value) => Ok(Some(value.clone())),
            None => self.read(loc).map(Some),
        }
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// A committed write: the index points at the new value and the cache holds it.
    pub(crate) fn put(&mut self, key: String, loc: ValueLoc, value: String) {
        self.cache.put(&key, value);
        self.index.insert(key, loc);
    }

    /// A committed delete.
    pub(crate) fn remove(&mut self, key: &str) {
        self.cache.remove(key);
        self.index.remove(key);
    }

    fn read(&self, loc: ValueLoc) -> Result<String, StorageError> {
        let bytes = self.reader.read_at(loc.offset, loc.len as usize)?;
        if bytes.len() != loc.len as usize {
            return Err(StorageError(format!(
                "short read at offset {}: {} of {} bytes",
                loc.offset,
                bytes.len(),
                loc.len
            )));
        }
        String::from_utf8(bytes)
            .map_err(|_| StorageError(format!("value at offset {} is not UTF-8", loc.offset)))
    }
}
