//! The simulated fleet: draws each server's metrics the way the exercise's generator does.
//! Pure and seedable: the clock and the message ids are passed in, so values are reproducible.

use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::metric::{format_timestamp, MetricMessage, Metrics};

/// Probability and range of a CPU spike (otherwise 5-75 %).
pub const CPU_SPIKE_PROBABILITY: f64 = 0.10;
/// Probability and range of a memory spike (otherwise 20-85 %).
pub const MEMORY_SPIKE_PROBABILITY: f64 = 0.05;
/// Probability that a report carries 1-3 errors (otherwise 0).
pub const ERROR_PROBABILITY: f64 = 0.08;

/// A fleet of simulated servers that report together.
pub struct Fleet {
    /// Shared with every message that names the server.
    servers: Vec<Arc<str>>,
    rng: fastrand::Rng,
}

impl Fleet {
    /// `seed` makes the drawn values reproducible; `None` seeds from the OS.
    pub fn new(servers: Vec<String>, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Fleet {
            servers: servers.into_iter().map(Arc::from).collect(),
            rng,
        }
    }

    pub fn servers(&self) -> &[Arc<str>] {
        &self.servers
    }

    /// One report: a message per server, in fleet order, all stamped `at`.
    /// `new_id` supplies each message's UUID: kept outside the seeded generator so that two runs
    /// with the same seed still produce distinct events.
    pub fn report(
        &mut self,
        at: OffsetDateTime,
        mut new_id: impl FnMut() -> Uuid,
    ) -> Vec<MetricMessage> {
        let timestamp_utc: Arc<str> = format_timestamp(at).into();
        let mut messages = Vec::with_capacity(self.servers.len());
        for server_id in &self.servers {
            messages.push(MetricMessage {
                server_id: server_id.clone(),
                timestamp_utc: timestamp_utc.clone(),
                metrics: draw_metrics(&mut self.rng),
                message_uuid: new_id(),
            });
        }
        messages
    }
}

/// Draws one server's metrics with the exercise's distributions, rounded to 2 decimals.
pub fn draw_metrics(rng: &mut fastrand::Rng) -> Metrics {
    let mut cpu = uniform(rng, 5.0, 75.0);
    if rng.f64() < CPU_SPIKE_PROBABILITY {
        cpu = uniform(rng, 85.0, 98.0);
    }
    let mut memory = uniform(rng, 20.0, 85.0);
    if rng.f64() < MEMORY_SPIKE_PROBABILITY {
        memory = uniform(rng, 90.0, 99.0);
    }
    let disk = uniform(rng, 0.1, 50.0);
    let network = uniform(rng, 1.0, 100.0);
    let error_count = if rng.f64() < ERROR_PROBABILITY {
        rng.i64(1..=3)
    } else {
        0
    };
    Metrics {
        cpu_percent: round2(cpu),
        memory_percent: round2(memory),
        disk_io_mbps: round2(disk),
        network_mbps: round2(network),
        error_count,
    }
}

fn uniform(rng: &mut fastrand::Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.f64()
}

/// Rounds to 2 decimals, as the exercise's `round(x, 2)`.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ids() -> impl FnMut() -> Uuid {
        let mut n = 0;
        move || {
            n += 1;
            Uuid::from_u128(n)
        }
    }

    fn samples(n: usize, seed: u64) -> Vec<Metrics> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n).map(|_| draw_metrics(&mut rng)).collect()
    }

    fn has_two_decimals(x: f64) -> bool {
        ((x * 100.0).round() / 100.0 - x).abs() < 1e-9
    }

    #[test]
    fn a_report_has_one_message_per_server_with_every_field() {
        let servers: Vec<String> = ["web01", "web02", "db01", "app01", "cache01"]
            .map(String::from)
            .to_vec();
        let mut fleet = Fleet::new(servers.clone(), Some(1));
        let report = fleet.report(datetime!(2026-11-22 18:00:00.123456 UTC), ids());
        assert_eq!(report.len(), 5);
        let names: Vec<&str> = report.iter().map(|m| &*m.server_id).collect();
        assert_eq!(names, ["web01", "web02", "db01", "app01", "cache01"]);
        let json: serde_json::Value = serde_json::from_str(&report[0].to_json()).unwrap();
        assert_eq!(json["timestamp_utc"], "2026-11-22T18:00:00.123456+00:00");
        assert_eq!(json["message_uuid"], "00000000-0000-0000-0000-000000000001");
        for field in [
            "cpu_percent",
            "memory_percent",
            "disk_io_mbps",
            "network_mbps",
        ] {
            assert!(json["metrics"][field].is_f64(), "{field} is a float");
        }
        assert!(json["metrics"]["error_count"].is_i64());
        // What the producer sends is what the consumer accepts.
        for m in &report {
            assert!(crate::metric::validate(m.to_json().as_bytes()).is_ok());
        }
    }

    #[test]
    fn values_stay_in_the_exercise_ranges_with_two_decimals() {
        for m in samples(20_000, 7) {
            assert!(
                (5.0..=75.0).contains(&m.cpu_percent) || (85.0..=98.0).contains(&m.cpu_percent)
            );
            assert!(
                (20.0..=85.0).contains(&m.memory_percent)
                    || (90.0..=99.0).contains(&m.memory_percent)
            );
            assert!((0.1..=50.0).contains(&m.disk_io_mbps));
            assert!((1.0..=100.0).contains(&m.network_mbps));
            assert!((0..=3).contains(&m.error_count));
            for x in [
                m.cpu_percent,
                m.memory_percent,
                m.disk_io_mbps,
                m.network_mbps,
            ] {
                assert!(has_two_decimals(x), "{x} has more than 2 decimals");
            }
        }
    }

    #[test]
    fn spikes_and_errors_happen_at_the_exercise_rates() {
        let n = 40_000;
        let s = samples(n, 42);
        let rate = |pred: &dyn Fn(&Metrics) -> bool| {
            s.iter().filter(|m| pred(m)).count() as f64 / n as f64
        };
        // A spike is a value above the normal range; 3 standard deviations at n=40k is ~0.5 %.
        let cpu_spikes = rate(&|m| m.cpu_percent > 75.0);
        let memory_spikes = rate(&|m| m.memory_percent > 85.0);
        let with_errors = rate(&|m| m.error_count > 0);
        assert!((cpu_spikes - 0.10).abs() < 0.01, "cpu spikes {cpu_spikes}");
        assert!(
            (memory_spikes - 0.05).abs() < 0.008,
            "memory spikes {memory_spikes}"
        );
        assert!((with_errors - 0.08).abs() < 0.01, "errors {with_errors}");
        // Among reports with errors, 1, 2 and 3 are equally likely.
        for k in 1..=3 {
            let share = s.iter().filter(|m| m.error_count == k).count() as f64
                / s.iter().filter(|m| m.error_count > 0).count() as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.05, "error_count {k}: {share}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_values_but_new_ids() {
        let servers = vec!["a".to_string(), "b".to_string()];
        let at = datetime!(2026-11-22 18:00:00 UTC);
        let first = Fleet::new(servers.clone(), Some(99)).report(at, ids());
        let mut other_ids = 100;
        let again = Fleet::new(servers.clone(), Some(99)).report(at, || {
            other_ids += 1;
            Uuid::from_u128(other_ids)
        });
        let values = |r: &[MetricMessage]| r.iter().map(|m| m.metrics).collect::<Vec<_>>();
        assert_eq!(values(&first), values(&again));
        assert_ne!(first[0].message_uuid, again[0].message_uuid);
        let different = Fleet::new(servers, Some(100)).report(at, ids());
        assert_ne!(values(&first), values(&different));
    }

    #[test]
    fn rounds_half_away_from_zero_to_two_decimals() {
        assert_eq!(round2(12.344), 12.34);
        assert_eq!(round2(12.346), 12.35);
        assert_eq!(round2(0.1), 0.1);
    }
}
