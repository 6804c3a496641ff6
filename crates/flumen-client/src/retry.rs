//! Exponential backoff with jitter, and a helper that retries retriable errors until a deadline.
//!
//! The schedule is the Java client's: the wait starts at `retry.backoff.ms`, doubles on
//! each attempt up to `retry.backoff.max.ms`, and is spread by ±20% so that many clients
//! failing together do not retry in lock-step.

use std::cell::Cell;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// Relative spread of each wait (Java's `CommonClientConfigs.RETRY_BACKOFF_JITTER`).
const JITTER: f64 = 0.2;

/// A backoff schedule: `initial * 2^attempt`, capped at `max`, with ±20% jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    initial: Duration,
    max: Duration,
}

impl Default for RetryPolicy {
    /// The Java defaults: 100 ms doubling up to 1 s.
    fn default() -> Self {
        RetryPolicy::new(
            crate::config::DEFAULT_RETRY_BACKOFF,
            crate::config::DEFAULT_RETRY_BACKOFF_MAX,
        )
    }
}

impl RetryPolicy {
    /// A schedule starting at `initial` and doubling up to `max` (if `max < initial`, every
    /// wait is `max`, as in the Java client).
    pub fn new(initial: Duration, max: Duration) -> Self {
        RetryPolicy { initial, max }
    }

    /// The wait before retry number `attempt` (0-based), without jitter.
    pub fn base_backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry number `attempt` (0-based), with ±20% jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.base_backoff(attempt);
        // Uniform in [1 - JITTER, 1 + JITTER).
        let factor = 1.0 - JITTER + 2.0 * JITTER * unit_random();
        base.mul_f64(factor)
    }

    /// A stateful iterator over this schedule (for reconnect backoff kept per broker).
    pub fn start(&self) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 0,
        }
    }
}

/// Position in a [`RetryPolicy`] schedule.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    /// The next wait; each call doubles the base until the maximum.
    pub fn next_backoff(&mut self) -> Duration {
        let wait = self.policy.backoff(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        wait
    }

    /// Number of waits handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the initial wait (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Runs `op` until it succeeds, fails with an error that is not
/// [retriable](Error::is_retriable), or `deadline` passes.
///
/// Between attempts it sleeps per `policy`; it does not start a wait that would end after
/// the deadline. An attempt still running at the deadline is dropped; the result is then
/// the previous attempt's error, or [`Error::RequestTimeout`] if there was none.
pub async fn retry<T, F, Fut>(deadline: Instant, policy: &RetryPolicy, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut backoff = policy.start();
    let mut last_error: Option<Error> = None;
    loop {
        match tokio::time::timeout_at(deadline, op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if !e.is_retriable() => return Err(e),
            Ok(Err(e)) => {
                let wait = backoff.next_backoff();
                if Instant::now() + wait >= deadline {
                    return Err(e);
                }
                tracing::debug!(error = %e, ?wait, "retrying");
                last_error = Some(e);
                tokio::time::sleep(wait).await;
            }
            Err(_elapsed) => {
                return Err(last_error.unwrap_or(Error::RequestTimeout {
                    addr: String::new(),
                    api: "operation",
                    timeout: deadline.saturating_duration_since(started),
                }));
            }
        }
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // RandomState is seeded from the OS once per thread; good enough for spreading retries.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish() | 1
}

/// A uniform float in `[0, 1)` from a per-thread xorshift generator.
fn unit_random() -> f64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(Duration::from_millis(100), Duration::from_millis(1000))
    }

    #[test]
    fn base_backoff_doubles_until_the_maximum() {
        let p = policy();
        let waits: Vec<u64> = (0..6)
            .map(|a| p.base_backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.base_backoff(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn inverted_policy_always_waits_the_maximum() {
        let p = RetryPolicy::new(Duration::from_millis(500), Duration::from_millis(50));
        assert_eq!(p.base_backoff(0), Duration::from_millis(50));
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_varies() {
        let p = policy();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let w = p.backoff(2).as_secs_f64() * 1000.0;
            assert!(
                (320.0..=480.0).contains(&w),
                "wait {w} ms outside 400 ms ± 20%"
            );
            seen.insert(w.to_bits());
        }
        assert!(
            seen.len() > 100,
            "jitter produced only {} distinct waits",
            seen.len()
        );
    }

    #[test]
    fn backoff_iterator_advances_and_resets() {
        let mut b = RetryPolicy::new(Duration::from_millis(10), Duration::from_secs(1)).start();
        let first = b.next_backoff();
        let second = b.next_backoff();
        assert!(first <= Duration::from_millis(12) && second >= Duration::from_millis(16));
        assert_eq!(b.attempts(), 2);
        b.reset();
        assert!(b.next_backoff() <= Duration::from_millis(12));
    }

    fn retriable() -> Error {
        Error::ConnectionClosed {
            addr: "127.0.0.1:1".into(),
            reason: "test".into(),
        }
    }

    fn fatal() -> Error {
        Error::Config {
            key: "k".into(),
            message: "m".into(),
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn retriable_errors_are_retried_until_success() {
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let out = retry(
            Instant::now() + Duration::from_secs(10),
            &policy(),
            move || {
                let c = c.clone();
                async move {
                    c.set(c.get() + 1);
                    if c.get() < 4 {
                        Err(retriable())
                    } else {
                        Ok(c.get())
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(out, 4);
        assert_eq!(calls.get(), 4);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn non_retriable_error_returns_at_once() {
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let err = retry(
            Instant::now() + Duration::from_secs(10),
            &policy(),
            move || {
                c.set(c.get() + 1);
                async { Err::<(), _>(fatal()) }
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn retries_stop_at_the_deadline_with_the_last_error() {
        let start = Instant::now();
        let calls = Rc::new(Cell::new(0u32));
        let c = calls.clone();
        let err = retry(start + Duration::from_secs(2), &policy(), move || {
            c.set(c.get() + 1);
            async { Err::<(), _>(retriable()) }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
        let elapsed = start.elapsed();
        assert!(
            elapsed <= Duration::from_secs(2),
            "ran past the deadline: {elapsed:?}"
        );
        // 100 + 200 + 400 + 800 ms (±20%) fit in 2 s, the next 1 s wait does not.
        assert!((4..=6).contains(&calls.get()), "{} attempts", calls.get());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_hanging_attempt_is_cut_at_the_deadline() {
        let start = Instant::now();
        let err = retry(start + Duration::from_secs(1), &policy(), || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), Error>(())
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Error::RequestTimeout { .. }), "{err:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
