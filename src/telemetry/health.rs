//! Whether the process is healthy (making progress, or idly caught up) and ready (connected,
//! and for a group member assigned), as `/healthz` and `/readyz` answer. Pure: the loops
//! report what they do, and the verdict is computed for a `now` passed in.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A service the process depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Kafka,
    Database,
}

impl Service {
    /// The `service` label of `metricsctl_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Kafka => "kafka",
            Service::Database => "database",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// When the step in hand began (`None` between steps).
    step_since: Option<Instant>,
    /// When each service began failing, for as long as it fails without a success.
    kafka_failing_since: Option<Instant>,
    database_failing_since: Option<Instant>,
    /// Why the process is not ready, `None` once it is.
    not_ready: Option<String>,
}

/// What the loops report, shared with the HTTP thread.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Mutex::new(State {
                not_ready: Some("starting: not connected yet".into()),
                ..State::default()
            }),
        }
    }
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A step (the storing of a fetched batch, or a send) begins at `now`.
    pub fn step_started(&self, now: Instant) {
        self.lock().step_since = Some(now);
    }

    /// The step in hand is over: progress was made.
    pub fn step_ended(&self) {
        self.lock().step_since = None;
    }

    /// A call to `service` failed at `now`; the outage is counted from its first failure.
    pub fn failed(&self, service: Service, now: Instant) {
        let mut s = self.lock();
        let since = match service {
            Service::Kafka => &mut s.kafka_failing_since,
            Service::Database => &mut s.database_failing_since,
        };
        since.get_or_insert(now);
    }

    /// A call to `service` succeeded: it is reachable.
    pub fn succeeded(&self, service: Service) {
        let mut s = self.lock();
        match service {
            Service::Kafka => s.kafka_failing_since = None,
            Service::Database => s.database_failing_since = None,
        }
    }

    /// Ready to do its work; or not, and why.
    pub fn set_ready(&self, not_ready: Option<String>) {
        self.lock().not_ready = not_ready;
    }

    /// `Ok` while healthy; else why not, in one line. Unhealthy once the step in hand has run
    /// `threshold` or longer, or a service has failed without a success for that long.
    pub fn check(&self, now: Instant, threshold: Duration) -> Result<(), String> {
        let s = self.lock();
        let age = |since: Option<Instant>| since.map(|t| now.saturating_duration_since(t));
        if let Some(stuck) = age(s.step_since).filter(|a| *a >= threshold) {
            return Err(format!(
                "a step has been running for {:.0} s (threshold {:.0} s)",
                stuck.as_secs_f64(),
                threshold.as_secs_f64()
            ));
        }
        for (service, since) in [
            (Service::Kafka, s.kafka_failing_since),
            (Service::Database, s.database_failing_since),
        ] {
            if let Some(down) = age(since).filter(|a| *a >= threshold) {
                return Err(format!(
                    "{} unreachable for {:.0} s (threshold {:.0} s)",
                    service.as_str(),
                    down.as_secs_f64(),
                    threshold.as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    /// `Ok` once ready; else why not.
    pub fn ready(&self) -> Result<(), String> {
        match &self.lock().not_ready {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn a_step_that_runs_past_the_threshold_is_unhealthy_until_it_ends() {
        let h = Health::default();
        let t0 = Instant::now();
        assert!(h.check(t0, T).is_ok(), "idle is healthy");
        h.step_started(t0);
        assert!(h.check(t0 + Duration::from_secs(29), T).is_ok());
        let why = h.check(t0 + T, T).unwrap_err();
        assert!(why.contains("step has been running for 30 s"), "{why}");
        h.step_ended();
        assert!(h.check(t0 + T * 10, T).is_ok(), "idle again");
    }

    #[test]
    fn an_outage_counts_from_the_first_failure_and_ends_with_a_success() {
        let h = Health::default();
        let t0 = Instant::now();
        h.failed(Service::Database, t0);
        h.failed(Service::Database, t0 + Duration::from_secs(20));
        let why = h.check(t0 + T, T).unwrap_err();
        assert!(why.starts_with("database unreachable for 30 s"), "{why}");
        h.succeeded(Service::Kafka);
        assert!(
            h.check(t0 + T, T).is_err(),
            "another service's success changes nothing"
        );
        h.succeeded(Service::Database);
        assert!(h.check(t0 + T, T).is_ok());
    }

    #[test]
    fn readiness_is_reported_with_its_reason() {
        let h = Health::default();
        assert!(h.ready().is_err(), "not ready before anything connected");
        h.set_ready(None);
        assert!(h.ready().is_ok());
        h.set_ready(Some("rebalancing".into()));
        assert_eq!(h.ready().unwrap_err(), "rebalancing");
    }
}
