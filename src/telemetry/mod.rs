//! Operating metricsctl from outside: Prometheus metrics and health and readiness endpoints,
//! served over HTTP by `--metrics-addr` (`server`).
//!
//! Each command's metrics live in one process-wide set ([`consumer`], [`producer`]): the
//! hooks sit deep in the loops and their retries (a failed database call, a fetch, a commit),
//! and a process-wide handle keeps each of them one line, as the Prometheus clients' default
//! registries do. The metrics are kept whether or not they are served: an update is an atomic
//! add, too cheap to be worth a second code path.

mod consumer;
mod health;
mod producer;
mod server;

use std::sync::OnceLock;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use consumer::ConsumerMetrics;
pub use health::{Health, HealthThreshold, Service};
pub use producer::ProducerMetrics;
pub use server::{serve, MetricsServer};

use crate::build_info;

/// What the HTTP thread reads: the metrics to encode and the health to report.
pub trait Exposed: Send + Sync + 'static {
    fn registry(&self) -> &Registry;
    fn health(&self) -> &Health;
}

/// The consumer's metrics, the same set for the whole process.
pub fn consumer() -> &'static ConsumerMetrics {
    static CONSUMER: OnceLock<ConsumerMetrics> = OnceLock::new();
    CONSUMER.get_or_init(ConsumerMetrics::new)
}

/// The producer's metrics, the same set for the whole process.
pub fn producer() -> &'static ProducerMetrics {
    static PRODUCER: OnceLock<ProducerMetrics> = OnceLock::new();
    PRODUCER.get_or_init(ProducerMetrics::new)
}

/// `metricsctl_build_info{version, commit} 1`, as Prometheus exporters name which build runs
/// (the same two strings `metricsctl --version` prints).
fn register_build_info(registry: &mut Registry) {
    let info: Family<Vec<(&'static str, &'static str)>, Gauge> = Family::default();
    info.get_or_create(&vec![
        ("version", build_info::VERSION),
        ("commit", build_info::COMMIT),
    ])
    .set(1);
    registry.register(
        "build_info",
        "The version and the git commit of the running metricsctl, as --version prints them",
        info,
    );
}
