//! How long the request-log writer waits, under concurrent load, before taking a batch (group
//! commit). Each batch costs PostgreSQL and the server a large fixed part (a round trip, a
//! statement, a commit and the wake-ups around them), so bigger batches cost less per record;
//! but the wait adds to the latency of every request in the batch, and in a closed loop (each
//! client waiting for its answer before sending again) a wait that is long against the time a
//! request spends in the server leaves the CPU idle. By Little's law that time grows with the
//! number of requests in flight, so the wait does too: `audit.gather_micros` for up to
//! `BASE_IN_FLIGHT` requests in flight, in proportion beyond that, and at most `MAX_STEPS`
//! times it and `LONGEST` (docs/PERFORMANCE.md has the measurements). The edge counts a call
//! from when its body has arrived until it is answered (uploads, whose bodies stream through
//! the handler, are not counted: their time is spent waiting on the client).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Requests in flight that the configured wait is meant for.
const BASE_IN_FLIGHT: u32 = 32;
/// The wait grows to at most this many times the configured one,
const MAX_STEPS: u32 = 8;
/// and never past the longest wait the configuration accepts.
const LONGEST: Duration = Duration::from_millis(100);

pub struct Gather {
    base: Duration,
    in_flight: AtomicUsize,
}

impl Gather {
    /// `base`: `audit.gather_micros`.
    pub fn new(base: Duration) -> Arc<Self> {
        Arc::new(Self {
            base,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Counts one request as in flight until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The wait before the next batch while requests arrive concurrently.
    pub fn wait(&self) -> Duration {
        scaled(self.base, self.in_flight())
    }
}

/// `base` for up to `BASE_IN_FLIGHT` requests in flight, in proportion beyond, at most
/// `MAX_STEPS` times and `LONGEST`.
fn scaled(base: Duration, in_flight: usize) -> Duration {
    let in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX);
    let steps = in_flight.clamp(BASE_IN_FLIGHT, BASE_IN_FLIGHT * MAX_STEPS);
    (base * steps / BASE_IN_FLIGHT).min(LONGEST.max(base))
}

/// One request in flight, counted until dropped.
pub struct InFlight(Arc<Gather>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_with_the_requests_in_flight_within_bounds() {
        let base = Duration::from_micros(500);
        assert_eq!(scaled(base, 0), base);
        assert_eq!(scaled(base, 32), base);
        assert_eq!(scaled(base, 48), Duration::from_micros(750));
        assert_eq!(scaled(base, 128), Duration::from_micros(2_000));
        assert_eq!(scaled(base, 100_000), Duration::from_micros(4_000));
        assert_eq!(scaled(Duration::ZERO, 1_000), Duration::ZERO);
        let long = Duration::from_millis(40);
        assert_eq!(scaled(long, 64), Duration::from_millis(80));
        assert_eq!(scaled(long, 128), LONGEST);
    }

    #[test]
    fn a_request_counts_until_its_guard_is_dropped() {
        let gather = Gather::new(Duration::from_micros(500));
        let first = gather.enter();
        let second = gather.enter();
        assert_eq!(gather.in_flight(), 2);
        drop(first);
        assert_eq!(gather.in_flight(), 1);
        drop(second);
        assert_eq!(gather.in_flight(), 0);
    }
}
