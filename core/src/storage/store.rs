//! The data of a role that keeps keys: an index from key to where its value lies in the
//! log (Bitcask), and a write-through cache of decoded values in front of the log.
//!
//! The store is generic over what a key holds ([`Stored`]): a plain value in strong mode,
//! a set of sibling versions with their clocks in eventual mode. Whatever it is, its
//! bytes sit in the log and are decoded when read back.

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

/// What a key holds, as read back from its bytes in the log.
pub trait Stored: Clone {
    /// Decodes the bytes a log record holds for a key; an error names what is wrong.
    fn from_log_bytes(bytes: Vec<u8>) -> Result<Self, String>;
}

impl Stored for String {
    fn from_log_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())
    }
}

/// The keys and what each holds. The index is a `BTreeMap`: its order is deterministic
/// and it cannot be driven into hash collisions by chosen keys.
pub struct Store<T, R> {
    index: BTreeMap<String, ValueLoc>,
    cache: SetAssociativeCache<T>,
    reader: R,
}

impl<T: Stored, R: LogReader> Store<T, R> {
    /// An empty store reading values back through `reader`.
    pub fn new(cache: CacheConfig, reader: R) -> Result<Self, CacheConfigError> {
        Ok(Self {
            index: BTreeMap::new(),
            cache: SetAssociativeCache::new(cache)?,
            reader,
        })
    }

    /// What `key` holds, from the cache or else the log (then cached).
    pub fn get(&mut self, key: &str) -> Result<Option<T>, StorageError> {
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

    /// What `key` holds, without changing the cache.
    pub fn peek(&self, key: &str) -> Result<Option<T>, StorageError> {
        let Some(&loc) = self.index.get(key) else {
            return Ok(None);
        };
        match self.cache.peek(key) {
            Some(value) => Ok(Some(value.clone())),
            None => self.read(loc).map(Some),
        }
    }

    /// Whether `key` holds anything.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The keys after `after` (all keys if `None`), in order: a cursor for walking a
    /// large store a batch at a time.
    pub fn keys_after(&self, after: Option<&str>) -> impl Iterator<Item = &str> {
        use std::ops::Bound;
        let from = match after {
            Some(key) => Bound::Excluded(key.to_owned()),
            None => Bound::Unbounded,
        };
        self.index
            .range((from, Bound::Unbounded))
            .map(|(key, _)| key.as_str())
    }

    /// How many keys hold something.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no key holds anything.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// `key` now holds `value`, whose bytes lie at `loc`: the index points there and the
    /// cache holds the value.
    pub fn put(&mut self, key: String, loc: ValueLoc, value: T) {
        self.cache.put(&key, value);
        self.index.insert(key, loc);
    }

    /// The reader values come back through.
    pub fn reader(&self) -> &R {
        &self.reader
    }

    /// Every key with where its value lies, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, ValueLoc)> {
        self.index.iter().map(|(key, &loc)| (key.as_str(), loc))
    }

    /// Values moved (compaction rewrote the log): every entry points where `new` says.
    pub fn relocate(&mut self, mut new: impl FnMut(ValueLoc) -> ValueLoc) {
        for loc in self.index.values_mut() {
            *loc = new(*loc);
        }
    }

    /// `key` holds nothing any more.
    pub fn remove(&mut self, key: &str) {
        self.cache.remove(key);
        self.index.remove(key);
    }

    fn read(&self, loc: ValueLoc) -> Result<T, StorageError> {
        let bytes = self.reader.read_at(loc.offset, loc.len as usize)?;
        if bytes.len() != loc.len as usize {
            return Err(StorageError(format!(
                "short read at offset {}: {} of {} bytes",
                loc.offset,
                bytes.len(),
                loc.len
            )));
        }
        T::from_log_bytes(bytes)
            .map_err(|why| StorageError(format!("value at offset {}: {why}", loc.offset)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoLog;

    impl LogReader for NoLog {
        fn read_at(&self, _offset: u64, _len: usize) -> Result<Vec<u8>, StorageError> {
            Err(StorageError("no log".to_owned()))
        }
    }

    #[test]
    fn keys_after_walks_the_index_from_a_cursor() {
        let mut store: Store<String, NoLog> =
            Store::new(CacheConfig::SERVER_DEFAULT, NoLog).expect("cache");
        for key in ["b", "a", "c"] {
            store.put(
                key.to_owned(),
                ValueLoc { offset: 0, len: 0 },
                key.to_owned(),
            );
        }
        let after = |cursor| store.keys_after(cursor).collect::<Vec<_>>();
        assert_eq!(after(None), ["a", "b", "c"]);
        assert_eq!(after(Some("a")), ["b", "c"]);
        assert_eq!(after(Some("aa")), ["b", "c"]);
        assert_eq!(after(Some("c")), Vec::<&str>::new());
    }
}
