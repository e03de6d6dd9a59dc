//! A KV server's data directory: created if missing, locked against a second server, and
//! holding the server's ID so that a restart cannot come back as another server.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::NetError;

/// The lock file; held (advisory `flock`) for as long as the server runs.
const LOCK_FILE: &str = "LOCK";
/// The server's ID, in decimal with a newline.
const ID_FILE: &str = "server-id";
/// The longest ID file read: a u64 in decimal with a line end is far shorter.
const MAX_ID_FILE_BYTES: u64 = 64;

/// An open, locked data directory. The lock is released when this is dropped.
pub(crate) struct DataDir {
    path: PathBuf,
    id: u64,
    _lock: File,
}

impl DataDir {
    /// Opens (creating if missing) and locks `path`, and settles the server's ID: the one
    /// stored, which `given` must match, or `given`, stored on the first start.
    pub(crate) fn open(path: &Path, given: Option<u64>) -> Result<Self, NetError> {
        let lock = lock_dir(path)?;
        let id = match (read_id(path)?, given) {
            (Some(stored), Some(given)) if stored != given => {
                return Err(NetError::IdMismatch { stored, given })
            }
            (Some(stored), _) => stored,
            (None, Some(given)) => {
                write_id(path, given)?;
                given
            }
            (None, None) => return Err(NetError::NoId(path.to_path_buf())),
        };
        Ok(Self {
            path: path.to_path_buf(),
            id,
            _lock: lock,
        })
    }

    /// Opens (creating if missing) and locks the coordinator's `path`, which holds no ID.
    pub(crate) fn open_unnamed(path: &Path) -> Result<Self, NetError> {
        let lock = lock_dir(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            id: 0,
            _lock: lock,
        })
    }

    /// The server's ID (0 for the coordinator's directory).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `path` if missing and takes its lock, which a second process cannot take.
fn lock_dir(path: &Path) -> Result<File, NetError> {
    create_dir_durably(path)?;
    let lock_path = path.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|err| NetError::io(format!("opening {}", lock_path.display()), err))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(NetError::DataDirLocked(path.to_path_buf())),
        Err(TryLockError::Error(err)) => {
            return Err(NetError::io(
                format!("locking {}", lock_path.display()),
                err,
            ))
        }
    }
    Ok(lock)
}

/// Creates `path` if missing, and makes its entry durable in the parent directory.
fn create_dir_durably(path: &Path) -> Result<(), NetError> {
    if path.is_dir() {
        return Ok(());
    }
    // Every directory about to be created, outermost first: each one's entry lives in
    // its parent, which must be synced once the entry exists.
    let mut missing: Vec<&Path> = path
        .ancestors()
        .take_while(|dir| !dir.as_os_str().is_empty() && !dir.is_dir())
        .collect();
    missing.reverse();
    fs::create_dir_all(path).map_err(|err| {
        NetError::io(
            format!("creating the data directory {}", path.display()),
            err,
        )
    })?;
    for dir in missing {
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes the entries of directory `dir` (created, renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), NetError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| NetError::io(format!("syncing the directory {}", dir.display()), err))
}

fn read_id(dir: &Path) -> Result<Option<u64>, NetError> {
    read_number(dir, ID_FILE, "a server ID")
}

/// Reads the decimal number kept in `dir/name`, `None` if the file does not exist; `what`
/// names it in the error about a damaged file.
pub(crate) fn read_number(dir: &Path, name: &str, what: &str) -> Result<Option<u64>, NetError> {
    use std::io::Read;
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(NetError::io(format!("opening {}", path.display()), err)),
    };
    let mut text = String::new();
    file.take(MAX_ID_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|err| NetError::io(format!("reading {}", path.display()), err))?;
    text.trim().parse::<u64>().map(Some).map_err(|_| {
        NetError::Config(format!(
            "{} does not hold {what} (a decimal number); fix or remove it",
            path.display()
        ))
    })
}

fn write_id(dir: &Path, id: u64) -> Result<(), NetError> {
    write_number(dir, ID_FILE, id)
}

/// Writes `number` to `dir/name` through a temporary file, synced, renamed into place, and
/// the directory synced: a crash leaves either no file, the old one, or the whole new one.
pub(crate) fn write_number(dir: &Path, name: &str, number: u64) -> Result<(), NetError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(format!("{number}\n").as_bytes())?;
        file.sync_all()
    });
    written.map_err(|err| NetError::io(format!("writing {}", tmp.display()), err))?;
    fs::rename(&tmp, &path)
        .map_err(|err| NetError::io(format!("renaming {} into place", tmp.display()), err))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_stores_the_id_and_later_starts_must_match_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        assert!(matches!(DataDir::open(&dir, None), Err(NetError::NoId(_))));
        let first = DataDir::open(&dir, Some(7)).unwrap();
        assert_eq!(first.id(), 7);
        assert!(matches!(
            DataDir::open(&dir, Some(7)),
            Err(NetError::DataDirLocked(_))
        ));
        drop(first);
        assert_eq!(DataDir::open(&dir, None).unwrap().id(), 7);
        assert!(matches!(
            DataDir::open(&dir, Some(8)),
            Err(NetError::IdMismatch {
                stored: 7,
                given: 8
            })
        ));
        assert_eq!(fs::read_to_string(dir.join(ID_FILE)).unwrap(), "7\n");
    }

    #[test]
    fn a_damaged_id_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(ID_FILE), "not a number").unwrap();
        let err = DataDir::open(tmp.path(), Some(1)).err().unwrap();
        assert!(
            err.to_string().contains("does not hold a server ID"),
            "{err}"
        );
    }
}
