//! Capped exponential backoff, shared by every loop that talks to Kafka or MongoDB.

use std::time::Duration;

/// Exponential backoff with full jitter: the n-th delay is drawn uniformly from
/// `0..=min(cap, first * 2^n)`, so processes that failed together do not retry in lockstep, and
/// with a short cap a recovered service is noticed within about `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            failures: 0,
        }
    }

    /// The defaults used for Kafka and MongoDB: 100 ms doubling to a 2 s cap (Java clients cap
    /// reconnects at 1 s), so after an outage work resumes within about 2 s of the answer.
    pub fn standard() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.first.saturating_mul(1u32 << exp).min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_ceiling_capped_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        for (got, ceiling) in d.iter().zip([100u64, 200, 400, 800, 1000, 1000]) {
            assert!(
                *got <= Duration::from_millis(ceiling),
                "{got:?} vs {ceiling}"
            );
        }
        assert_eq!(b.failures(), 6);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_spreads_retries() {
        let mut b = Backoff::standard();
        for _ in 0..10 {
            b.next_delay();
        }
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        // Uniform over 0..2 s: both halves are hit (fails with probability 2^-199).
        assert!(delays.iter().any(|d| *d < Duration::from_secs(1)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(1)));
    }
}
