//! Capped exponential backoff, shared by every loop that talks to Kafka or MongoDB.

use std::time::Duration;

/// Exponential backoff with equal jitter: the n-th delay is drawn uniformly from
/// `c/2..=c` where `c = min(cap, first * 2^n)`. The jitter keeps processes that failed together
/// from retrying in lockstep; the lower half keeps a delay from ever being (nearly) zero, which
/// with full jitter (`0..=c`) could turn a failing loop into a tight one; with a short cap a
/// recovered service is noticed within about `cap`.
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

    /// The defaults used for Kafka and MongoDB: 100 ms doubling to a 1 s cap, as Java's Kafka
    /// clients back off (`retry.backoff.max.ms` and `reconnect.backoff.max.ms` are both 1 s), so
    /// every delay is 50 ms to 1 s and after an outage work resumes within about 1 s of the
    /// answer. A 2 s cap let a recovery take 3.3 s after the cluster answered (`tests/cluster.rs`);
    /// an ERROR line a second during an outage is the price.
    pub fn standard() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Records a failure and returns how long to wait before the next attempt: at least half
    /// of the current ceiling, at most the ceiling, and never more than the cap.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.first.saturating_mul(1u32 << exp).min(self.cap);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(fastrand::f64())
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_stay_within_half_and_all_of_a_doubling_ceiling_capped_and_reset() {
        for _ in 0..200 {
            let mut b = Backoff::new(ms(100), Duration::from_secs(1));
            let d: Vec<Duration> = (0..7).map(|_| b.next_delay()).collect();
            for (got, ceiling) in d.iter().zip([100u64, 200, 400, 800, 1000, 1000, 1000]) {
                assert!(
                    *got >= ms(ceiling / 2) && *got <= ms(ceiling),
                    "{got:?} vs {ceiling} ms"
                );
            }
            assert_eq!(b.failures(), 7);
            b.reset();
            let first = b.next_delay();
            assert!(first >= ms(50) && first <= ms(100), "{first:?}");
        }
    }

    #[test]
    fn the_standard_delay_is_never_below_50_ms_nor_above_1_s() {
        let mut b = Backoff::standard();
        let mut delays = Vec::new();
        for round in 0..500 {
            if round % 25 == 0 {
                b.reset();
            }
            delays.push(b.next_delay());
        }
        assert!(delays.iter().all(|d| *d >= ms(50)), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(1)),
            "{delays:?}"
        );
        // Also after so many failures that the doubling would overflow.
        let mut b = Backoff::standard();
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= ms(50) && d <= Duration::from_secs(1), "{d:?}");
        }
        assert!(b.next_delay() >= ms(500), "at the cap: 0.5..=1 s");
    }

    #[test]
    fn jitter_spreads_retries_over_the_upper_half() {
        let mut b = Backoff::standard();
        for _ in 0..10 {
            b.next_delay();
        }
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= ms(500) && *d <= Duration::from_secs(1)));
        // Uniform over 0.5..1 s: both halves are hit (fails with probability 2^-199).
        assert!(delays.iter().any(|d| *d < ms(750)));
        assert!(delays.iter().any(|d| *d > ms(750)));
    }
}
