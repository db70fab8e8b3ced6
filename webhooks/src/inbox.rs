//! The dispatcher's inbox: how the webhook projector hands over the deliveries it has just
//! recorded, so their first attempt starts without a claim query. The projector records them
//! already leased to this process (no other replica's claim takes them), stages them while its
//! page runs and publishes them once the page has committed; the dispatcher takes them on its
//! next turn. If the process dies in between, the leases run out and any replica claims the
//! deliveries: the handoff is a shortcut, never the only way a delivery gets sent. The inbox
//! is also how anything wakes the dispatcher.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::dispatcher::Due;

#[derive(Default)]
pub struct Inbox {
    /// The lease handed-over deliveries are recorded with; `None` in a process without a
    /// dispatcher (the CLI), whose deliveries are left for any dispatcher to claim.
    lease: Option<Duration>,
    staged: Mutex<Vec<Due>>,
    ready: Mutex<Vec<Due>>,
    wake: Notify,
}

impl Inbox {
    /// An inbox for a process whose dispatcher leases deliveries for `lease`.
    pub fn new(lease: Duration) -> Self {
        Self {
            lease: Some(lease),
            ..Self::default()
        }
    }

    pub fn lease(&self) -> Option<Duration> {
        self.lease
    }

    /// The deliveries of the page being written (replacing those of a page that never
    /// committed).
    pub(crate) fn stage(&self, deliveries: Vec<Due>) {
        *self.staged.lock().expect("lock") = deliveries;
    }

    /// The staged page committed: its deliveries are ready to send.
    pub(crate) fn publish(&self) {
        let staged = std::mem::take(&mut *self.staged.lock().expect("lock"));
        if !staged.is_empty() {
            self.ready.lock().expect("lock").extend(staged);
        }
        self.wake.notify_one();
    }

    pub(crate) fn take(&self) -> Vec<Due> {
        std::mem::take(&mut *self.ready.lock().expect("lock"))
    }

    /// Wakes the dispatcher (new deliveries to claim, a replay queued some).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn notified(&self) {
        self.wake.notified().await
    }
}
