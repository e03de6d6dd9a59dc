//! The log's sync thread: fdatasync off the event loop.
//!
//! An fdatasync can take milliseconds on a good disk and seconds on a slow or busy one.
//! Done in the loop, it held every read and every ping behind it, and a server with a
//! slow disk was reported down. The loop writes the bytes itself (into the page cache,
//! fast) and hands this thread the sync, one at a time; meanwhile it keeps serving and
//! collects the next batch. The thread says it is done through the loop's [`Waker`],
//! and the loop then releases what waited for that sync.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Waker;
use ringkv_core::replica::PersistToken;

use crate::error::NetError;

/// A test hook, not a setting: when set to a number of milliseconds, the sync thread
/// sleeps that long before every fdatasync, so that tests can show what a slow disk
/// holds up (and what it must not). Never set it in production.
pub(crate) const TEST_SYNC_DELAY_ENV: &str = "RINGKV_TEST_SYNC_DELAY_MS";

/// What the thread reports: the last write a sync covered, and how the sync went.
type Done = (PersistToken, io::Result<()>);

/// One sync: the file the writes went to, and the directory to sync after it when the
/// file is new (its entry must be durable too).
pub(crate) struct SyncJob {
    /// The last write it covers.
    pub(crate) token: PersistToken,
    /// The file to fdatasync.
    pub(crate) file: Arc<File>,
    /// The directory to fsync after the file, if the file was just created.
    pub(crate) dir: Option<PathBuf>,
}

impl SyncJob {
    fn run(&self) -> io::Result<()> {
        self.file.sync_data()?;
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The thread and the one sync it may be doing.
pub(crate) struct SyncThread {
    /// Syncs to do; dropped to stop the thread.
    jobs: Option<Sender<SyncJob>>,
    done: Receiver<Done>,
    handle: Option<JoinHandle<()>>,
    /// The sync under way, if any: at most one, so that a completion covers every
    /// append written before it was asked for.
    in_flight: Option<PersistToken>,
}

impl SyncThread {
    /// Starts a thread that runs the syncs it is handed and wakes `waker` after each.
    pub(crate) fn start(waker: Arc<Waker>) -> Result<Self, NetError> {
        let delay_ms = test_delay_ms()?;
        let (jobs, job_rx) = mpsc::channel::<SyncJob>();
        let (done_tx, done) = mpsc::channel::<Done>();
        let handle = std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || {
                for job in job_rx {
                    if delay_ms > 0 {
                        std::thread::sleep(Duration::from_millis(delay_ms));
                    }
                    let result = job.run();
                    if done_tx.send((job.token, result)).is_err() {
                        return;
                    }
                    if let Err(err) = waker.wake() {
                        tracing::warn!(%err, "the sync thread could not wake its loop");
                    }
                }
            })
            .map_err(|err| NetError::io("starting the log's sync thread", err))?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            handle: Some(handle),
            in_flight: None,
        })
    }

    /// Whether a sync is under way.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Asks for a sync of everything written so far, named by the last write in it.
    /// Only one sync runs at a time; the caller waits for [`SyncThread::finished`].
    pub(crate) fn begin(&mut self, job: SyncJob) -> Result<(), NetError> {
        assert!(self.in_flight.is_none(), "one log sync at a time");
        let token = job.token;
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(NetError::io(
                "handing a sync to the log's sync thread",
                io::Error::other("the sync thread has stopped"),
            ));
        }
        self.in_flight = Some(token);
        Ok(())
    }

    /// The sync that finished since the last call, if any: the last write it made
    /// durable, or the error of the fdatasync.
    pub(crate) fn finished(&mut self) -> Result<Option<PersistToken>, io::Error> {
        if self.in_flight.is_none() {
            return Ok(None);
        }
        match self.done.try_recv() {
            Ok((token, result)) => {
                assert_eq!(
                    Some(token),
                    self.in_flight,
                    "a sync finished that was not asked for"
                );
                self.in_flight = None;
                result.map(|()| Some(token))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => {
                Err(io::Error::other("the sync thread stopped in a sync"))
            }
        }
    }
}

impl Drop for SyncThread {
    /// Lets a sync under way finish, so that the file is not closed under it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::warn!("the log's sync thread panicked");
            }
        }
    }
}

/// The test hook's delay; 0 when unset.
fn test_delay_ms() -> Result<u64, NetError> {
    match std::env::var(TEST_SYNC_DELAY_ENV) {
        Err(_) => Ok(0),
        Ok(text) => {
            let delay_ms = text.trim().parse::<u64>().map_err(|_| {
                NetError::Config(format!(
                    "{TEST_SYNC_DELAY_ENV} must be a number of milliseconds, not {text:?}"
                ))
            })?;
            tracing::warn!(
                delay_ms,
                "{TEST_SYNC_DELAY_ENV} is set: every log sync is slowed (a test hook)"
            );
            Ok(delay_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};

    #[test]
    fn a_sync_finishes_through_the_waker_and_one_runs_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(tmp.path().join("f")).unwrap());
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let mut thread = SyncThread::start(waker).unwrap();
        assert_eq!(thread.finished().unwrap(), None, "nothing asked");
        let job = |token| SyncJob {
            token: PersistToken(token),
            file: Arc::clone(&file),
            dir: Some(tmp.path().to_path_buf()),
        };
        thread.begin(job(7)).unwrap();
        assert!(thread.busy());
        let mut events = Events::with_capacity(4);
        let mut got = None;
        for _ in 0..100 {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            got = thread.finished().unwrap();
            if got.is_some() {
                break;
            }
        }
        assert_eq!(got, Some(PersistToken(7)));
        assert!(!thread.busy());
        thread.begin(job(8)).unwrap();
        drop(thread);
    }
}
