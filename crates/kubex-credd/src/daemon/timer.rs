//! Sleeping until a moment on the clock that counts suspend. tokio's timers run on one that stops
//! while the machine sleeps, so a long wait is slept in slices of at most [`SLICE`], each checked
//! against that clock: after a resume, a deadline that passed during the night is noticed within
//! a slice (a token file is not left holding an expired token, an idle daemon does exit).

use std::time::Duration;

use crate::token::Stamp;

/// The longest a daemon timer sleeps before it looks at the clock again.
pub const SLICE: Duration = Duration::from_secs(5);

/// Returns once `now()` has reached `deadline`.
pub async fn sleep_until(deadline: Stamp, now: impl Fn() -> Stamp) {
    loop {
        let left = deadline.saturating_sub(now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(SLICE)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    // The suspend-counting clock of the test, in seconds; each test runs on its own thread.
    thread_local! {
        static CLOCK_S: AtomicU64 = const { AtomicU64::new(100) };
    }

    fn now() -> Stamp {
        Stamp::from_duration(Duration::from_secs(CLOCK_S.with(|c| c.load(Ordering::SeqCst))))
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_passed_in_a_suspend_is_noticed_within_a_slice() {
        let deadline = now().after(Duration::from_secs(3600));
        let sleeping = tokio::spawn(sleep_until(deadline, now));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!sleeping.is_finished());
        // The machine sleeps for an hour: the runtime's clock did not move, this one did.
        CLOCK_S.with(|c| c.fetch_add(3600, Ordering::SeqCst));
        let started = tokio::time::Instant::now();
        sleeping.await.expect("the sleep ends");
        assert!(started.elapsed() <= SLICE, "noticed after {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_suspend_it_sleeps_the_whole_wait() {
        let deadline = now().after(Duration::from_secs(12));
        let started = tokio::time::Instant::now();
        let ticking = tokio::spawn(async {
            // The test clock follows the runtime's, as a machine that stays awake.
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                CLOCK_S.with(|c| c.fetch_add(1, Ordering::SeqCst));
            }
        });
        sleep_until(deadline, now).await;
        ticking.abort();
        assert!(started.elapsed() >= Duration::from_secs(12), "{:?}", started.elapsed());
    }
}
