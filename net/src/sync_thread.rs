//! The log's sync thread: fdatasync off the event loop.
//!
//! An fdatasync can take milliseconds on a good disk and seconds on a slow or busy one.
//! Done in the loop, it held every read and every ping behind it, and a server with a
//! slow disk was reported down. The loop writes the bytes itself (into the page cache,
//! fast) and hands this thread the sync, one at a time; meanwhile it keeps serving and
//! collects the next batch. The thread says it is done through the loop's [`Waker`],
//! and the loop then releases what waited for that sync.
//!
//! A job whose writes no answer waits for (a decision record, see
//! [`ringkv_core::storage::SyncUrgency`]) lingers up to [`DEFERRED_LINGER_US`] before its
//! sync: an urgent job handed meanwhile joins it, and one fdatasync covers both. The
//! loop's timers have millisecond resolution; the thread waits with microsecond
//! resolution, so a lingering record delays the key's next update little.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Waker;
use ringkv_core::replica::{PersistToken, SyncUrgency};

use crate::error::NetError;

/// A test hook, not a setting: when set to a number of milliseconds, the sync thread
/// sleeps that long before every fdatasync, so that tests can show what a slow disk
/// holds up (and what it must not). Never set it in production.
pub(crate) const TEST_SYNC_DELAY_ENV: &str = "RINGKV_TEST_SYNC_DELAY_MS";

/// How long a job of deferrable writes waits for an urgent one to join it. About twice
/// the gap between a commit record and the next PUT's prepare on one connection here,
/// so that the prepare's sync usually covers it; a key's next update waits this long at
/// most for the acknowledgements of the last.
pub(crate) const DEFERRED_LINGER_US: u64 = 300;

/// An answer now waits for write `token`, appended as deferrable: a job lingering over it
/// is synced at once, or, if it is not handed yet (`unsynced`), its job will be urgent.
/// Shared by the logs that sync through a [`SyncThread`].
pub(crate) fn hasten_write(
    thread: Option<&mut SyncThread>,
    pending: &mut PendingUrgency,
    unsynced: bool,
    token: PersistToken,
) -> Result<(), NetError> {
    let handed = match thread {
        Some(thread) => thread.hurry(token)?,
        None => false,
    };
    if !handed && unsynced {
        pending.hasten();
    }
    Ok(())
}

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
    /// Whether an answer waits for the sync; if not, the job lingers.
    pub(crate) urgency: SyncUrgency,
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

/// The most urgent of the writes not yet handed to a sync: what their job asks for, or
/// `None` when no job is needed (nothing unsynced, or only writes that ride along).
#[derive(Debug, Default)]
pub(crate) struct PendingUrgency(Option<SyncUrgency>);

impl PendingUrgency {
    /// Notes one more unsynced write.
    pub(crate) fn note(&mut self, urgency: SyncUrgency) {
        match urgency {
            SyncUrgency::Now => self.0 = Some(SyncUrgency::Now),
            SyncUrgency::Deferrable => {
                self.0.get_or_insert(SyncUrgency::Deferrable);
            }
            SyncUrgency::Never => {}
        }
    }

    /// An answer now waits for an unsynced write.
    pub(crate) fn hasten(&mut self) {
        self.0 = Some(SyncUrgency::Now);
    }

    /// What the job of the unsynced writes asks for, if one is needed.
    pub(crate) fn job(&self) -> Option<SyncUrgency> {
        self.0
    }

    /// The unsynced writes were handed to a sync.
    pub(crate) fn handed(&mut self) {
        self.0 = None;
    }
}

/// What the loop hands the thread.
enum ToThread {
    /// A sync to run.
    Job(SyncJob),
    /// An answer now waits for the lingering job: sync it now (ignored if no job lingers).
    Hurry,
}

/// The thread and the sync it may be doing.
pub(crate) struct SyncThread {
    /// Syncs to do; dropped to stop the thread.
    jobs: Option<Sender<ToThread>>,
    done: Receiver<Done>,
    handle: Option<JoinHandle<()>>,
    /// The jobs handed and not reported, oldest first, with their urgency: one job, or
    /// a lingering one and the urgent one handed after it. A completion covers every
    /// append written before its job was handed.
    in_flight: VecDeque<(PersistToken, SyncUrgency)>,
}

impl SyncThread {
    /// Starts a thread that runs the syncs it is handed and wakes `waker` after each.
    pub(crate) fn start(waker: Arc<Waker>) -> Result<Self, NetError> {
        let delay_ms = test_delay_ms()?;
        let (jobs, job_rx) = mpsc::channel::<ToThread>();
        let (done_tx, done) = mpsc::channel::<Done>();
        let handle = std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || run_jobs(&job_rx, &done_tx, &waker, delay_ms))
            .map_err(|err| NetError::io("starting the log's sync thread", err))?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            handle: Some(handle),
            in_flight: VecDeque::new(),
        })
    }

    /// Whether a sync is under way or lingering.
    pub(crate) fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Whether a job of `urgency` may be handed now: when nothing is under way, or an
    /// urgent job joining a lingering one.
    pub(crate) fn can_take(&self, urgency: SyncUrgency) -> bool {
        match (self.in_flight.len(), self.in_flight.front()) {
            (0, _) => true,
            (1, Some((_, SyncUrgency::Deferrable))) => urgency == SyncUrgency::Now,
            _ => false,
        }
    }

    /// Asks for a sync of everything written so far, named by the last write in it; the
    /// caller asks [`SyncThread::can_take`] first and waits for [`SyncThread::finished`].
    pub(crate) fn begin(&mut self, job: SyncJob) -> Result<(), NetError> {
        assert!(self.can_take(job.urgency), "a log sync handed out of turn");
        let (token, urgency) = (job.token, job.urgency);
        if let Some((last, _)) = self.in_flight.back() {
            assert!(token > *last, "a sync handed for older writes");
        }
        self.send(ToThread::Job(job))?;
        self.in_flight.push_back((token, urgency));
        Ok(())
    }

    /// An answer now waits for the write `token`, handed or about to be handed: a job
    /// lingering over it is synced at once. Says whether `token` was in a lingering job
    /// (if not, the caller makes its next job urgent).
    pub(crate) fn hurry(&mut self, token: PersistToken) -> Result<bool, NetError> {
        let lingering = match self.in_flight.front_mut() {
            Some((last, urgency)) if *urgency == SyncUrgency::Deferrable && token <= *last => {
                *urgency = SyncUrgency::Now;
                true
            }
            _ => false,
        };
        if lingering {
            self.send(ToThread::Hurry)?;
        }
        Ok(lingering || self.in_flight.iter().any(|(last, _)| token <= *last))
    }

    fn send(&self, msg: ToThread) -> Result<(), NetError> {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(msg));
        if !matches!(sent, Some(Ok(()))) {
            return Err(NetError::io(
                "handing a sync to the log's sync thread",
                io::Error::other("the sync thread has stopped"),
            ));
        }
        Ok(())
    }

    /// The last write made durable by the syncs that finished since the last call, if
    /// any, or the error of an fdatasync.
    pub(crate) fn finished(&mut self) -> Result<Option<PersistToken>, io::Error> {
        let mut durable = None;
        while !self.in_flight.is_empty() {
            match self.done.try_recv() {
                Ok((token, result)) => {
                    result?;
                    let asked = self.in_flight.iter().any(|(t, _)| *t == token);
                    assert!(asked, "a sync finished that was not asked for");
                    // A job joined by a later one is reported by the later one's token.
                    self.in_flight.retain(|(t, _)| *t > token);
                    durable = Some(token);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    return Err(io::Error::other("the sync thread stopped in a sync"))
                }
            }
        }
        Ok(durable)
    }
}

/// The thread's body: each job (joined by an urgent one if it lingers), synced and
/// reported through `waker`, until the loop drops its end of `jobs`.
fn run_jobs(jobs: &Receiver<ToThread>, done: &Sender<Done>, waker: &Waker, delay_ms: u64) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(ToThread::Job(job)) => job,
                // Its job was synced already.
                Ok(ToThread::Hurry) => continue,
                Err(_) => return,
            },
        };
        let job = linger(job, jobs, &mut next);
        if delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        let result = job.run();
        if done.send((job.token, result)).is_err() {
            return;
        }
        if let Err(err) = waker.wake() {
            tracing::warn!(%err, "the sync thread could not wake its loop");
        }
    }
}

/// Waits up to [`DEFERRED_LINGER_US`] for an urgent job to join a deferrable one, or to
/// be hurried; a job on another file (the log was replaced meanwhile) runs after it
/// instead.
fn linger(job: SyncJob, jobs: &Receiver<ToThread>, next: &mut Option<SyncJob>) -> SyncJob {
    if job.urgency == SyncUrgency::Now {
        return job;
    }
    match jobs.recv_timeout(Duration::from_micros(DEFERRED_LINGER_US)) {
        Ok(ToThread::Job(urgent)) if Arc::ptr_eq(&urgent.file, &job.file) => SyncJob {
            dir: job.dir.or(urgent.dir),
            ..urgent
        },
        Ok(ToThread::Job(other)) => {
            *next = Some(other);
            job
        }
        Ok(ToThread::Hurry) => job,
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => job,
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
            urgency: SyncUrgency::Now,
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

    /// Polls until the thread reports `token` durable.
    fn wait_for(poll: &mut Poll, thread: &mut SyncThread, token: u64) {
        let mut events = Events::with_capacity(4);
        for _ in 0..100 {
            if thread.finished().unwrap() == Some(PersistToken(token)) {
                return;
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
        }
        panic!("token {token} never reported durable");
    }

    #[test]
    fn an_urgent_job_may_join_a_lingering_one_and_nothing_else_may() {
        let tmp = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(tmp.path().join("f")).unwrap());
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let mut thread = SyncThread::start(waker).unwrap();
        let job = |token, urgency| SyncJob {
            token: PersistToken(token),
            file: Arc::clone(&file),
            dir: None,
            urgency,
        };
        thread.begin(job(1, SyncUrgency::Deferrable)).unwrap();
        assert!(thread.busy());
        assert!(!thread.can_take(SyncUrgency::Deferrable));
        assert!(thread.can_take(SyncUrgency::Now));
        thread.begin(job(2, SyncUrgency::Now)).unwrap();
        assert!(!thread.can_take(SyncUrgency::Now), "two jobs at most");
        // Joined or not, the report of the later job covers both.
        wait_for(&mut poll, &mut thread, 2);
        assert!(!thread.busy());

        // A lingering job alone is synced after its delay.
        thread.begin(job(3, SyncUrgency::Deferrable)).unwrap();
        wait_for(&mut poll, &mut thread, 3);
        assert!(!thread.busy());
        // Hurried, a lingering job is urgent: nothing may join it any more.
        thread.begin(job(5, SyncUrgency::Deferrable)).unwrap();
        assert!(!thread.hurry(PersistToken(6)).unwrap(), "6 is not handed");
        assert!(thread.can_take(SyncUrgency::Now));
        assert!(thread.hurry(PersistToken(5)).unwrap());
        assert!(!thread.can_take(SyncUrgency::Now));
        wait_for(&mut poll, &mut thread, 5);
        // An urgent job runs at once, and nothing joins it.
        thread.begin(job(7, SyncUrgency::Now)).unwrap();
        assert!(!thread.can_take(SyncUrgency::Now));
        assert!(!thread.can_take(SyncUrgency::Deferrable));
        wait_for(&mut poll, &mut thread, 7);
    }
}
