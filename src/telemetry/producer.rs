//! The metrics of `metricsctl produce`: messages sent, acknowledged, retried, dropped and
//! waiting, the outbox, and how long each Produce request took.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::consumer::ServiceLabels;
use super::health::{Health, Service};
use super::{register_build_info, Exposed};

/// The producer's metrics, updated by the produce loop and read by the HTTP thread.
#[derive(Debug)]
pub struct ProducerMetrics {
    registry: Registry,
    health: Health,
    sent: Counter,
    acknowledged: Counter,
    retried: Counter,
    dropped: Counter,
    unsent: Gauge,
    outbox_reports: Gauge,
    send_seconds: Histogram,
    errors: Family<ServiceLabels, Counter>,
}

impl Default for ProducerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProducerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("metricsctl");
        let m = ProducerMetrics {
            registry: Registry::default(),
            health: Health::default(),
            sent: Counter::default(),
            acknowledged: Counter::default(),
            retried: Counter::default(),
            dropped: Counter::default(),
            unsent: Gauge::default(),
            outbox_reports: Gauge::default(),
            // 1 ms to about 33 s, doubling: a request waits for all in-sync replicas.
            send_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            errors: Family::default(),
        };
        let _ = m.errors.get_or_create(&ServiceLabels {
            service: Service::Kafka.as_str().to_string(),
        });
        register_build_info(&mut registry);
        let r = &mut registry;
        r.register(
            "producer_messages_sent",
            "Messages put in a Produce request (each attempt, retries included)",
            m.sent.clone(),
        );
        r.register(
            "producer_messages_acknowledged",
            "Messages acknowledged by all in-sync replicas",
            m.acknowledged.clone(),
        );
        r.register(
            "producer_messages_retried",
            "Messages whose Produce request failed or was refused; they stay in the outbox and go again",
            m.retried.clone(),
        );
        r.register(
            "producer_messages_dropped",
            "Messages of reports dropped because the outbox was full",
            m.dropped.clone(),
        );
        r.register(
            "producer_messages_unsent",
            "Messages made and not yet acknowledged (lost if the producer stops now)",
            m.unsent.clone(),
        );
        r.register(
            "producer_outbox_reports",
            "Reports waiting in the outbox",
            m.outbox_reports.clone(),
        );
        r.register_with_unit(
            "producer_send_duration",
            "Time of one Produce request, until every partition answered",
            Unit::Seconds,
            m.send_seconds.clone(),
        );
        r.register(
            "errors",
            "Failed calls to a service (kafka), each retried",
            m.errors.clone(),
        );
        ProducerMetrics { registry, ..m }
    }

    /// A Produce request of `messages` took `took`; `acknowledged` of them went through.
    pub fn sent(&self, messages: usize, acknowledged: usize, took: Duration) {
        self.send_seconds.observe(took.as_secs_f64());
        self.sent.inc_by(messages as u64);
        self.acknowledged.inc_by(acknowledged as u64);
        let failed = messages.saturating_sub(acknowledged);
        self.retried.inc_by(failed as u64);
        if failed == 0 {
            self.health.succeeded(Service::Kafka);
            self.health.set_ready(None);
        } else {
            self.failed();
        }
    }

    /// A Produce request failed as a whole.
    pub fn send_failed(&self, messages: usize, took: Duration) {
        self.send_seconds.observe(took.as_secs_f64());
        self.sent.inc_by(messages as u64);
        self.retried.inc_by(messages as u64);
        self.failed();
    }

    fn failed(&self) {
        self.errors
            .get_or_create(&ServiceLabels {
                service: Service::Kafka.as_str().to_string(),
            })
            .inc();
        self.health
            .failed(Service::Kafka, std::time::Instant::now());
    }

    /// A report of `messages` messages was dropped from the full outbox.
    pub fn dropped(&self, messages: usize) {
        self.dropped.inc_by(messages as u64);
    }

    /// What waits in the outbox now.
    pub fn outbox(&self, reports: usize, unsent_messages: usize) {
        self.outbox_reports
            .set(i64::try_from(reports).unwrap_or(i64::MAX));
        self.unsent
            .set(i64::try_from(unsent_messages).unwrap_or(i64::MAX));
    }
}

impl Exposed for ProducerMetrics {
    fn registry(&self) -> &Registry {
        &self.registry
    }
    fn health(&self) -> &Health {
        &self.health
    }
}
