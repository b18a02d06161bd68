//! A circuit breaker for the quote call.
//!
//! Without it a dead or slow quotes service would cost every account request
//! the full timeout. After `threshold` consecutive failures the breaker opens
//! and callers get the fallback at once; after `pause` one trial call is let
//! through (half-open) and its result closes or re-opens the breaker.
//! State changes are rare and only on the quote path, so a mutex is fine here.
//!
//! Time is tokio's [`Instant`]: in the service it is the wall clock, and
//! the unit tests pause and advance it, so they never depend on how fast a
//! loaded machine gets through a sleep.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open {
        until: Instant,
    },
    /// One trial call is in flight; everyone else gets the fallback.
    HalfOpen,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    consecutive_failures: u32,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    pause: Duration,
    state: Mutex<State>,
}

/// Permission to make one call. It must be settled with [`Ticket::success`]
/// or [`Ticket::failure`]; a trial ticket dropped unsettled (the request was
/// cancelled) re-opens the breaker rather than leaving it half-open forever.
#[must_use]
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    trial: bool,
    settled: bool,
}

impl Ticket<'_> {
    pub fn success(mut self) {
        self.settled = true;
        self.breaker.settle(true);
    }

    pub fn failure(mut self) {
        self.settled = true;
        self.breaker.settle(false);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled && self.trial {
            self.breaker.settle(false);
        }
    }
}

impl Breaker {
    pub fn new(threshold: u32, pause: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            pause,
            state: Mutex::new(State {
                mode: Mode::Closed,
                consecutive_failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is always left consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `None` while open: answer the fallback without calling out.
    pub fn try_call(&self) -> Option<Ticket<'_>> {
        let mut state = self.lock();
        let trial = match state.mode {
            Mode::Closed => false,
            Mode::HalfOpen => return None,
            Mode::Open { until } if Instant::now() < until => return None,
            Mode::Open { .. } => {
                state.mode = Mode::HalfOpen;
                eprintln!("quote circuit breaker half-open: trying one call");
                true
            }
        };
        Some(Ticket {
            breaker: self,
            trial,
            settled: false,
        })
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.lock().mode, Mode::Closed)
    }

    fn settle(&self, ok: bool) {
        let mut state = self.lock();
        if ok {
            if state.mode != Mode::Closed {
                eprintln!("quote circuit breaker closed: quotes service answers again");
            }
            state.mode = Mode::Closed;
            state.consecutive_failures = 0;
            return;
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let trips = match state.mode {
            Mode::HalfOpen => true,
            Mode::Closed => state.consecutive_failures >= self.threshold,
            // Late failures of calls admitted before the trip must not keep
            // pushing the retry further away.
            Mode::Open { .. } => false,
        };
        if trips {
            eprintln!(
                "quote circuit breaker open after {} consecutive failures; retrying in {:?}",
                state.consecutive_failures, self.pause
            );
            state.mode = Mode::Open {
                until: Instant::now() + self.pause,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const PAUSE: Duration = Duration::from_secs(5);
    const JUST_UNDER: Duration = Duration::from_millis(4999);
    const THE_REST: Duration = Duration::from_millis(1);

    // The clock is paused and only moves on `advance`, so "before" and
    // "after" the pause are exact instants, not sleeps that a busy machine
    // might overrun.

    #[tokio::test(start_paused = true)]
    async fn trips_after_threshold_and_recovers_through_one_trial() {
        let b = Breaker::new(2, PAUSE);
        b.try_call().unwrap().failure();
        assert!(!b.is_open());
        b.try_call().unwrap().failure();
        assert!(b.is_open());
        assert!(b.try_call().is_none());

        advance(JUST_UNDER).await;
        assert!(
            b.try_call().is_none(),
            "still open just before the pause ends"
        );
        advance(THE_REST).await;
        let trial = b.try_call().expect("half-open lets one call through");
        assert!(b.try_call().is_none(), "only one trial at a time");
        trial.failure();
        assert!(b.try_call().is_none(), "a failed trial re-opens");

        // The new pause counts from the failed trial, not from the first trip.
        advance(JUST_UNDER).await;
        assert!(b.try_call().is_none());
        advance(THE_REST).await;
        b.try_call().unwrap().success();
        assert!(!b.is_open());
        assert!(b.try_call().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_trial_reopens_instead_of_sticking_half_open() {
        let b = Breaker::new(1, PAUSE);
        b.try_call().unwrap().failure();
        advance(PAUSE).await;
        drop(b.try_call().unwrap());
        assert!(b.try_call().is_none());
        advance(JUST_UNDER).await;
        assert!(b.try_call().is_none());
        advance(THE_REST).await;
        assert!(b.try_call().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_of_calls_admitted_before_the_trip_do_not_extend_the_pause() {
        let b = Breaker::new(1, PAUSE);
        let early = b.try_call().unwrap();
        b.try_call().unwrap().failure();
        advance(JUST_UNDER).await;
        early.failure();
        advance(THE_REST).await;
        assert!(b.try_call().is_some(), "the pause still ends on time");
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.try_call().unwrap().failure();
        b.try_call().unwrap().success();
        b.try_call().unwrap().failure();
        assert!(!b.is_open());
    }
}
