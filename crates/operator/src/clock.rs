//! Injectable time, so that schedules and stall detection can be tested by moving a clock
//! instead of sleeping.

use std::sync::{Arc, Mutex};

use futures::stream::{BoxStream, StreamExt};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// A stream that yields whenever the clock jumps. Controllers that requeue until a moment in
    /// time reconcile everything again on each jump. The system clock never jumps.
    fn jumps(&self) -> BoxStream<'static, ()> {
        futures::stream::pending().boxed()
    }
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
    jumped: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            jumped: watch::channel(0).0,
        }
    }

    /// Moves the clock forward by `by` and wakes every controller that waits for a moment in
    /// time.
    pub fn advance(&self, by: SignedDuration) {
        self.set(self.now() + by);
    }

    /// Sets the clock to `to` and wakes every controller that waits for a moment in time.
    pub fn set(&self, to: Timestamp) {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = to;
        self.jumped.send_modify(|jumps| *jumps += 1);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn jumps(&self) -> BoxStream<'static, ()> {
        futures::stream::unfold(self.jumped.subscribe(), |mut receiver| async move {
            receiver.changed().await.ok().map(|()| ((), receiver))
        })
        .boxed()
    }
}
