//! Whether the process is healthy (making progress, or idly caught up) and ready (connected,
//! and for a group member assigned), as `/healthz` and `/readyz` answer. Pure: the loops
//! report what they do, and the verdict is computed for a `now` passed in.
//!
//! Two kinds of trouble make a process unhealthy, each with its own limit
//! ([`HealthThreshold`]): a step stuck (one step in hand for too long, whatever the reason),
//! and a service unreachable (every call to Kafka, or to the database, failing for too long).

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

/// How long each kind of trouble may last before `/healthz` answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThreshold {
    /// A step in hand this long is stuck. `consume` takes its `--max-step-interval`, the moment
    /// a group member leaves its group for the same reason; `produce` its `--health-threshold`.
    pub step: Duration,
    /// A service whose every call failed this long, without a success in between, is
    /// unreachable (`--health-threshold`). Counted from the first failure: a call to a server
    /// that does not answer fails only once the driver or the client gives it up.
    pub outage: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// When the first step since the last one that succeeded began (`None` after a success,
    /// and before the first step): a step that failed is no progress, so the steps that retry
    /// it are stuck from the first one's start.
    step_since: Option<Instant>,
    /// Whether a step failed since the last success (so none may be in hand now).
    step_failed: bool,
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

    /// A step (the storing of a fetched batch, or a send) begins at `now`; after a failed one
    /// the clock keeps running from the first that failed.
    pub fn step_started(&self, now: Instant) {
        self.lock().step_since.get_or_insert(now);
    }

    /// The step in hand succeeded, or the work was started afresh (a resume that succeeded):
    /// progress was made.
    pub fn step_ended(&self) {
        let mut s = self.lock();
        s.step_since = None;
        s.step_failed = false;
    }

    /// The step in hand failed: no progress, so the clock goes on until a step succeeds. (A
    /// member stuck on its database leaves its group and its step then fails; `/healthz`
    /// stays 503 instead of flapping to 200 while the database is still frozen.)
    pub fn step_failed(&self) {
        self.lock().step_failed = true;
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
    /// `threshold.step` or longer, or a service has failed without a success for
    /// `threshold.outage` or longer.
    pub fn check(&self, now: Instant, threshold: HealthThreshold) -> Result<(), String> {
        let s = self.lock();
        let age = |since: Option<Instant>| since.map(|t| now.saturating_duration_since(t));
        if let Some(stuck) = age(s.step_since).filter(|a| *a >= threshold.step) {
            let what = if s.step_failed {
                "no step has succeeded for"
            } else {
                "a step has been running for"
            };
            return Err(format!(
                "{what} {:.0} s (stuck: the limit is {:.0} s)",
                stuck.as_secs_f64(),
                threshold.step.as_secs_f64()
            ));
        }
        for (service, since) in [
            (Service::Kafka, s.kafka_failing_since),
            (Service::Database, s.database_failing_since),
        ] {
            if let Some(down) = age(since).filter(|a| *a >= threshold.outage) {
                return Err(format!(
                    "{} unreachable for {:.0} s (threshold {:.0} s)",
                    service.as_str(),
                    down.as_secs_f64(),
                    threshold.outage.as_secs_f64()
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
    const BOTH: HealthThreshold = HealthThreshold { step: T, outage: T };

    #[test]
    fn a_step_that_runs_past_the_threshold_is_unhealthy_until_it_ends() {
        let h = Health::default();
        let t0 = Instant::now();
        assert!(h.check(t0, BOTH).is_ok(), "idle is healthy");
        h.step_started(t0);
        assert!(h.check(t0 + Duration::from_secs(29), BOTH).is_ok());
        let why = h.check(t0 + T, BOTH).unwrap_err();
        assert!(why.contains("step has been running for 30 s"), "{why}");
        h.step_ended();
        assert!(h.check(t0 + T * 10, BOTH).is_ok(), "idle again");
    }

    #[test]
    fn a_failed_step_is_no_progress_until_a_step_or_a_resume_succeeds() {
        let h = Health::default();
        let t0 = Instant::now();
        h.step_started(t0);
        h.step_failed();
        // Between steps (rejoining, backing off) and through the retries, the clock runs on
        // from the first failed step's start.
        let why = h.check(t0 + T, BOTH).unwrap_err();
        assert!(why.starts_with("no step has succeeded for 30 s"), "{why}");
        h.step_started(t0 + Duration::from_secs(20));
        let why = h.check(t0 + T, BOTH).unwrap_err();
        assert!(why.starts_with("no step has succeeded for 30 s"), "{why}");
        h.step_ended();
        assert!(h.check(t0 + T * 10, BOTH).is_ok(), "a success ends it");
        h.step_started(t0 + T * 10);
        assert!(
            h.check(t0 + T * 10 + Duration::from_secs(29), BOTH).is_ok(),
            "the next step's clock starts at its own start"
        );
    }

    #[test]
    fn each_kind_of_trouble_has_its_own_limit() {
        // consume's shape: a step may run 300 s (the max step interval), a service fail 60 s.
        let limits = HealthThreshold {
            step: Duration::from_secs(300),
            outage: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let stepping = Health::default();
        stepping.step_started(t0);
        assert!(
            stepping
                .check(t0 + Duration::from_secs(299), limits)
                .is_ok(),
            "a step within the max step interval is no trouble, however past the outage limit"
        );
        let why = stepping
            .check(t0 + Duration::from_secs(300), limits)
            .unwrap_err();
        assert!(why.contains("the limit is 300 s"), "{why}");

        let failing = Health::default();
        failing.failed(Service::Kafka, t0);
        assert!(failing.check(t0 + Duration::from_secs(59), limits).is_ok());
        let why = failing
            .check(t0 + Duration::from_secs(60), limits)
            .unwrap_err();
        assert_eq!(why, "kafka unreachable for 60 s (threshold 60 s)");
    }

    #[test]
    fn an_outage_counts_from_the_first_failure_and_ends_with_a_success() {
        let h = Health::default();
        let t0 = Instant::now();
        h.failed(Service::Database, t0);
        h.failed(Service::Database, t0 + Duration::from_secs(20));
        let why = h.check(t0 + T, BOTH).unwrap_err();
        assert!(why.starts_with("database unreachable for 30 s"), "{why}");
        h.succeeded(Service::Kafka);
        assert!(
            h.check(t0 + T, BOTH).is_err(),
            "another service's success changes nothing"
        );
        h.succeeded(Service::Database);
        assert!(h.check(t0 + T, BOTH).is_ok());
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
