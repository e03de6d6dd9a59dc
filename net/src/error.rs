//! Why a role stopped.

use std::fmt;
use std::path::PathBuf;

/// Why [`crate::run_coordinator`] or [`crate::run_server`] stopped with an error: what an
/// operator sees, so every message says what happened and what to do about it.
#[derive(Debug)]
pub enum NetError {
    /// A system call failed; `context` names what was being done.
    Io {
        /// What the shell was doing, e.g. "binding the client port 0.0.0.0:8080".
        context: String,
        /// The error the system reported.
        source: std::io::Error,
    },
    /// Another process holds the data directory's lock.
    DataDirLocked(PathBuf),
    /// The data directory belongs to another server ID than the one given.
    IdMismatch {
        /// The ID written in the data directory.
        stored: u64,
        /// The ID the caller asked for.
        given: u64,
    },
    /// No ID was given and the data directory has none yet.
    NoId(PathBuf),
    /// The coordinator refused the registration; the message is its reason.
    Refused(String),
    /// A setting that cannot work.
    Config(String),
    /// The log is damaged before its end: bytes that no crash can leave (a valid record
    /// after a bad one, or a record this version cannot read). Nothing was cut.
    CorruptLog {
        /// The log file.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What was found there.
        what: String,
    },
}

impl NetError {
    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the address to bind was taken by another socket.
    pub(crate) fn is_addr_in_use(&self) -> bool {
        matches!(self, NetError::Io { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Io { context, source } => write!(f, "{context}: {source}"),
            NetError::DataDirLocked(dir) => write!(
                f,
                "data directory {} is in use by another ringkv server; stop it or use another directory",
                dir.display()
            ),
            NetError::IdMismatch { stored, given } => write!(
                f,
                "the data directory belongs to server {stored}, not {given}: start with ID {stored} \
                 (or give no ID), or use another data directory"
            ),
            NetError::NoId(dir) => write!(
                f,
                "data directory {} has no server ID yet: give one on the first start",
                dir.display()
            ),
            NetError::Refused(reason) => {
                write!(f, "the coordinator refused the registration: {reason}")
            }
            NetError::Config(why) => write!(f, "invalid configuration: {why}"),
            NetError::CorruptLog { file, offset, what } => write!(
                f,
                "the log {} is damaged at byte {offset} ({what}); nothing was changed. Restore \
                 the data directory from a copy, or start with --truncate-corrupt-log to cut the \
                 log there and lose every record from that byte on",
                file.display()
            ),
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
