//! Deadlines that cost no timer operation per request.
//!
//! Registering a timer and removing it again takes the runtime's timer
//! lock twice, which on a keep-alive connection would happen for every
//! request. A [`LazyDeadline`] keeps one registered timer for as long as
//! its owner lives. Moving the deadline later only records it; when the
//! timer fires before the recorded deadline it is re-armed to it, so it
//! costs one timer operation per period instead of two per request.
//! Moving the deadline earlier re-arms it at once.
//!
//! [`within`] is `tokio::time::timeout` for steps that are usually done
//! at once (a response head handed to a QUIC stream's buffer): it reads
//! the clock and builds a timer only when the step has to wait.

use std::future::{Future, IntoFuture};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::error::Elapsed;
use tokio::time::{Instant, Sleep};

/// `fut`'s output, or [`Elapsed`] when it waited `limit` without one. The
/// limit counts from the first time `fut` had to wait.
pub async fn within<F: IntoFuture>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = pin!(fut.into_future());
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(out);
    }
    tokio::time::timeout(limit, fut).await
}

#[derive(Debug)]
pub struct LazyDeadline {
    wanted: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl LazyDeadline {
    pub fn new(at: Instant) -> Self {
        LazyDeadline {
            wanted: at,
            sleep: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// Moves the deadline to `at`.
    pub fn set(&mut self, at: Instant) {
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
        self.wanted = at;
    }

    /// Whether the deadline has passed; otherwise `cx` is woken when it
    /// may have.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.wanted {
                return true;
            }
            self.sleep.as_mut().reset(self.wanted);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn within_times_only_what_waits() {
        let limit = Duration::from_secs(1);
        assert_eq!(within(limit, async { 7 }).await.ok(), Some(7));
        let start = Instant::now();
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert!(within(limit, slow).await.is_err());
        assert_eq!(start.elapsed(), limit);
        let start = Instant::now();
        let late = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            8
        };
        assert_eq!(within(limit, late).await.ok(), Some(8));
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    async fn expired(d: &mut LazyDeadline) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(d.poll_expired(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn later_deadlines_are_honoured_when_the_timer_fires() {
        let start = Instant::now();
        let mut d = LazyDeadline::new(start + Duration::from_secs(1));
        assert!(!expired(&mut d).await);
        d.set(start + Duration::from_secs(3));
        tokio::time::advance(Duration::from_millis(1500)).await;
        // The timer fired at 1 s and was re-armed to 3 s.
        assert!(!expired(&mut d).await);
        tokio::time::advance(Duration::from_millis(1600)).await;
        assert!(expired(&mut d).await);
    }

    #[tokio::test(start_paused = true)]
    async fn earlier_deadlines_re_arm_at_once() {
        let start = Instant::now();
        let mut d = LazyDeadline::new(start + Duration::from_secs(60));
        assert!(!expired(&mut d).await);
        d.set(start + Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(expired(&mut d).await);
    }
}
