//! What both roles' loops share: the poller, the clock, the shutdown hook, and how long
//! to sleep.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll, Registry, Token, Waker};

use crate::clock::Clock;
use crate::error::NetError;
use crate::shutdown::{AttachGuard, Shutdown};
use crate::tokens::WAKER;

/// The longest sleep in `poll`, so that a loop looks at its clock and its shutdown flag
/// at least this often even if every wakeup were lost.
const MAX_WAIT_MS: u64 = 1_000;

/// Events taken from the kernel per `poll`.
const EVENTS_PER_POLL: usize = 1024;

/// A mio poller with the role's clock and its shutdown attached.
pub(crate) struct EventLoop {
    poll: Poll,
    events: Events,
    clock: Clock,
    shutdown: Shutdown,
    /// Wakes the loop from other threads: the shutdown, and the log's sync thread.
    waker: Arc<Waker>,
    _attached: AttachGuard,
}

impl EventLoop {
    pub(crate) fn new(shutdown: Shutdown) -> Result<Self, NetError> {
        let poll = Poll::new().map_err(|err| NetError::io("creating the poller", err))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|err| NetError::io("creating the waker", err))?;
        let waker = Arc::new(waker);
        let attached = shutdown.attach(Arc::clone(&waker));
        Ok(Self {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            clock: Clock::new(),
            shutdown,
            waker,
            _attached: attached,
        })
    }

    pub(crate) fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// The loop's waker, for a thread that finishes work the loop waits for: mio allows
    /// one waker per poller, so the shutdown and the sync thread share it.
    pub(crate) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether the role was asked to stop.
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// Sleeps until an event, `deadline_ms`, or at most [`MAX_WAIT_MS`]; `busy` means
    /// some work is ready already, so only look for events without sleeping. Puts the
    /// events in `ready` and returns the time after the wait.
    pub(crate) fn wait(
        &mut self,
        deadline_ms: Option<u64>,
        busy: bool,
        ready: &mut Vec<Readiness>,
    ) -> Result<u64, NetError> {
        let now_ms = self.clock.now_ms();
        let timeout = if busy {
            Duration::ZERO
        } else {
            let cap = now_ms.saturating_add(MAX_WAIT_MS);
            Clock::wait_until(now_ms, deadline_ms.map_or(cap, |at| at.min(cap)))
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(err) => return Err(NetError::io("waiting for events", err)),
        }
        ready.clear();
        ready.extend(self.events.iter().map(|event| Readiness {
            token: event.token(),
            readable: event.is_readable() || event.is_read_closed() || event.is_error(),
            writable: event.is_writable() || event.is_write_closed() || event.is_error(),
            read_closed: event.is_read_closed() || event.is_error(),
        }));
        Ok(self.clock.now_ms())
    }
}

/// What an event said about one socket, copied out of mio's buffer so that the loop can
/// use its registry while handling it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Readiness {
    pub(crate) token: Token,
    /// Bytes, an EOF or an error may be waiting: read to find out.
    pub(crate) readable: bool,
    /// The socket may take bytes (or a connect completed or failed).
    pub(crate) writable: bool,
    /// The peer's EOF (or an error) has arrived: read until it shows, even past a short
    /// read, for no later event will say so again.
    pub(crate) read_closed: bool,
}

/// The earliest of some optional deadlines.
pub(crate) fn earliest(deadlines: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    deadlines.into_iter().flatten().min()
}
