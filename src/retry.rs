//! Capped exponential backoff, shared by every loop that talks to Kafka or MongoDB.

use std::time::Duration;

/// Delays 0.5 s, 1 s, 2 s, ... up to `cap`, each with up to 20 % random jitter so that several
/// consumers restarting together do not hammer a recovering broker in lockstep.
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

    /// The defaults used for Kafka and MongoDB: 0.5 s doubling to 30 s.
    pub fn standard() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let base = self.first.saturating_mul(1u32 << exp).min(self.cap);
        let jitter = base.mul_f64(fastrand::f64() * 0.2);
        (base + jitter).min(self.cap)
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
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        for (got, base) in d.iter().zip([100u64, 200, 400, 800, 1000, 1000]) {
            let base = Duration::from_millis(base);
            assert!(
                *got >= base.min(Duration::from_secs(1))
                    && *got <= base.mul_f64(1.2).min(Duration::from_secs(1)),
                "{got:?} vs {base:?}"
            );
        }
        assert_eq!(b.failures(), 6);
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(121));
    }
}
