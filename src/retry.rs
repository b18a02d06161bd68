//! Asking again until a deadline: what waiting for an engine, a registry,
//! a VM's SSH or a process to go away all come down to.
//!
//! One helper, so that every such wait has the same shape: an attempt
//! either finishes (`Break`), says why not yet (`Continue`), or fails for
//! good (`Err`, never waited out); when the deadline has passed after an
//! attempt that was not done, the last reason becomes the error. It runs
//! on tokio's clock, so its callers' tests can pause time.

use std::ops::ControlFlow;
use std::time::Duration;

use tokio::time::Instant;

/// Calls `attempt` every `pause` until it breaks with a value, returns an
/// error, or `within` has passed after an attempt that continued: then
/// `expired` turns that attempt's reason into the error. An attempt always
/// runs at least once.
///
/// An attempt is a closure making a future (`|| async move { .. }`, over
/// references it copies in), not an async closure: the futures of async
/// closures are not yet provably `Send` (rust-lang/rust#110338), and the
/// providers' futures must be.
pub async fn until_deadline<T, W, E, Fut>(
    within: Duration,
    pause: Duration,
    mut attempt: impl FnMut() -> Fut,
    expired: impl FnOnce(W) -> E,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<ControlFlow<T, W>, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await? {
            ControlFlow::Break(done) => return Ok(done),
            ControlFlow::Continue(why) if Instant::now() >= deadline => return Err(expired(why)),
            ControlFlow::Continue(_) => tokio::time::sleep(pause).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn asks_again_until_the_attempt_is_done() {
        let started = Instant::now();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let calls = &calls;
        let done = until_deadline(
            Duration::from_secs(60),
            Duration::from_secs(1),
            || async move {
                let calls = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Ok::<_, String>(if calls == 5 {
                    ControlFlow::Break(calls)
                } else {
                    ControlFlow::Continue("not yet")
                })
            },
            |why| why.to_string(),
        )
        .await;
        assert_eq!(done, Ok(5));
        assert_eq!(started.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_deadline_the_last_reason_is_the_error() {
        let started = Instant::now();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let calls = &calls;
        let expired = until_deadline(
            Duration::from_secs(10),
            Duration::from_secs(3),
            || async move {
                let calls = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Ok::<ControlFlow<(), String>, String>(ControlFlow::Continue(format!("try {calls}")))
            },
            |why| format!("gave up: {why}"),
        )
        .await;
        // Tries at 0, 3, 6, 9 and 12 s; the one at 12 s is past the deadline.
        assert_eq!(expired, Err("gave up: try 5".to_string()));
        assert_eq!(started.elapsed(), Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_is_never_waited_out() {
        let started = Instant::now();
        let failed = until_deadline(
            Duration::from_secs(600),
            Duration::from_secs(1),
            || async { Err::<ControlFlow<(), ()>, _>("the VM stopped") },
            |()| "expired",
        )
        .await;
        assert_eq!(failed, Err("the VM stopped"));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
