//! What every role that keeps data is built from: the durability pipeline (append whole
//! frames, get a token, defer what waits for it), a store of keys whose values live in
//! the log, and recovery as a fold over the log's records.

pub(crate) mod codec;
mod durability;
mod recovery;
mod store;

pub use codec::RecordError;
pub use durability::{Appended, Durability, Persist, PersistToken, SyncUrgency};
pub use recovery::{replay_log, LogRecord, LogScan, LogStream};
pub use store::{LogReader, StorageError, Store, Stored, ValueLoc};
