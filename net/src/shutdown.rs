//! Stopping a running role from another thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mio::Waker;

/// Stops a running role from another thread (a Ctrl-C handler, tests).
///
/// An event loop may be asleep in `poll` for up to its longest wait, so a flag alone would
/// be seen late: every loop registers a [`Waker`] here, and [`Shutdown::trigger`] wakes them.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    triggered: AtomicBool,
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
struct Wakers {
    next_id: u64,
    list: Vec<(u64, Arc<Waker>)>,
}

impl Shutdown {
    /// A shutdown not yet triggered, with no loop attached.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every loop using this shutdown to stop, and wakes them. Idempotent.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        for (_, waker) in &self.wakers().list {
            if let Err(err) = waker.wake() {
                tracing::warn!(%err, "could not wake an event loop for shutdown");
            }
        }
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Attaches a loop's waker until the returned guard is dropped, so that a loop that
    /// ended does not keep its poller alive through this handle.
    pub(crate) fn attach(&self, waker: Arc<Waker>) -> AttachGuard {
        let mut wakers = self.wakers();
        let id = wakers.next_id;
        wakers.next_id += 1;
        wakers.list.push((id, waker));
        AttachGuard {
            shutdown: self.clone(),
            id,
        }
    }

    /// The waker list; a panic elsewhere while it was held cannot corrupt a `Vec` push or
    /// retain, so a poisoned lock is used as it is.
    fn wakers(&self) -> MutexGuard<'_, Wakers> {
        self.inner
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish_non_exhaustive()
    }
}

/// Detaches a loop's waker from its [`Shutdown`] when the loop ends.
pub(crate) struct AttachGuard {
    shutdown: Shutdown,
    id: u64,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        let id = self.id;
        self.shutdown
            .wakers()
            .list
            .retain(|(other, _)| *other != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_wakes_attached_loops_and_detaches_on_drop() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let shutdown = Shutdown::new();
        let guard = shutdown.attach(waker);
        assert_eq!(shutdown.wakers().list.len(), 1);
        assert!(!shutdown.is_triggered());
        let mut events = mio::Events::with_capacity(4);
        let zero = Some(std::time::Duration::ZERO);
        poll.poll(&mut events, zero).unwrap();
        assert!(events.is_empty(), "no wake before the trigger");
        shutdown.clone().trigger();
        assert!(shutdown.is_triggered());
        poll.poll(&mut events, zero).unwrap();
        let woken: Vec<mio::Token> = events.iter().map(|event| event.token()).collect();
        assert_eq!(
            woken,
            [mio::Token(0)],
            "the trigger wakes the attached loop"
        );
        drop(guard);
        assert!(shutdown.wakers().list.is_empty());
    }
}
