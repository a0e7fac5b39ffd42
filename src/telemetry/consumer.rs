//! The metrics of `metricsctl consume`: what the loop read and stored, how long its steps and
//! database writes took, where each assigned partition stands, and the group membership.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::health::{Health, Service};
use super::{register_build_info, Exposed};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ServiceLabels {
    pub(super) service: String,
}

/// What is known of one partition: its log end (the high watermark of the last fetch) and
/// the group's committed offset (read at resume, then each commit that went through).
#[derive(Debug, Default, Clone, Copy)]
struct PartitionState {
    log_end: Option<i64>,
    committed: Option<i64>,
}

/// The consumer's metrics, updated by the consume loop and read by the HTTP thread.
#[derive(Debug)]
pub struct ConsumerMetrics {
    registry: Registry,
    health: Health,
    messages_read: Counter,
    messages_stored: Counter,
    messages_replayed: Counter,
    dead_lettered: Family<ReasonLabels, Counter>,
    windows_stored: Counter,
    step_seconds: Histogram,
    database_write_seconds: Histogram,
    log_end: Family<PartitionLabels, Gauge>,
    committed: Family<PartitionLabels, Gauge>,
    lag: Family<PartitionLabels, Gauge>,
    assigned_partitions: Gauge,
    generation: Gauge,
    rebalances: Counter,
    errors: Family<ServiceLabels, Counter>,
    partitions: Mutex<HashMap<i32, PartitionState>>,
}

/// Seconds from 1 ms to about 33 s, doubling: a step is a few ms, an outage holds it longer.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsumerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("metricsctl");
        let m = ConsumerMetrics {
            registry: Registry::default(),
            health: Health::default(),
            messages_read: Counter::default(),
            messages_stored: Counter::default(),
            messages_replayed: Counter::default(),
            dead_lettered: Family::default(),
            windows_stored: Counter::default(),
            step_seconds: Histogram::new(latency_buckets()),
            database_write_seconds: Histogram::new(latency_buckets()),
            log_end: Family::default(),
            committed: Family::default(),
            lag: Family::default(),
            assigned_partitions: Gauge::default(),
            generation: Gauge::default(),
            rebalances: Counter::default(),
            errors: Family::default(),
            partitions: Mutex::new(HashMap::new()),
        };
        register_build_info(&mut registry);
        let r = &mut registry;
        r.register(
            "consumer_messages_read",
            "Records consumed past their partition's position",
            m.messages_read.clone(),
        );
        r.register(
            "consumer_messages_stored",
            "Valid messages stored raw in the database",
            m.messages_stored.clone(),
        );
        r.register(
            "consumer_messages_replayed",
            "Valid messages read again after a restart and found already stored from the same position",
            m.messages_replayed.clone(),
        );
        r.register(
            "consumer_dead_letters",
            "Records stored in the dead-letter collection, by reason_code",
            m.dead_lettered.clone(),
        );
        r.register(
            "consumer_windows_stored",
            "KPI windows stored (published)",
            m.windows_stored.clone(),
        );
        r.register_with_unit(
            "consumer_step_duration",
            "Time to process one step of a fetched batch: validate, store, window, commit",
            Unit::Seconds,
            m.step_seconds.clone(),
        );
        r.register_with_unit(
            "consumer_database_write_duration",
            "Time of each database write attempt (raw, dead letters, windows, staging)",
            Unit::Seconds,
            m.database_write_seconds.clone(),
        );
        r.register(
            "consumer_partition_log_end_offset",
            "The partition's high watermark, as the last fetch returned it",
            m.log_end.clone(),
        );
        r.register(
            "consumer_partition_committed_offset",
            "The group's committed offset of the partition (read at resume, then each commit)",
            m.committed.clone(),
        );
        r.register(
            "consumer_partition_lag",
            "Messages not yet committed: log end offset minus committed offset, as `status` shows",
            m.lag.clone(),
        );
        r.register(
            "consumer_assigned_partitions",
            "Partitions this consumer reads",
            m.assigned_partitions.clone(),
        );
        r.register(
            "consumer_group_generation",
            "The consumer group generation this member holds (-1: none)",
            m.generation.clone(),
        );
        r.register(
            "consumer_group_rebalances",
            "Rebalances this member went through (rejoins after the first join)",
            m.rebalances.clone(),
        );
        r.register(
            "errors",
            "Failed calls to a service (kafka, database), each retried",
            m.errors.clone(),
        );
        m.generation.set(-1);
        // Both series exist from the start, so a rate() over them has a beginning.
        for service in [Service::Kafka, Service::Database] {
            let _ = m.errors.get_or_create(&ServiceLabels {
                service: service.as_str().to_string(),
            });
        }
        ConsumerMetrics { registry, ..m }
    }

    /// Adds what one step did.
    pub fn step_done(&self, took: Duration, read: u64, stored: u64, replayed: u64, windows: u64) {
        self.step_seconds.observe(took.as_secs_f64());
        self.messages_read.inc_by(read);
        self.messages_stored.inc_by(stored);
        self.messages_replayed.inc_by(replayed);
        self.windows_stored.inc_by(windows);
    }

    /// Dead letters stored, by reason code.
    pub fn dead_lettered<'a>(&self, codes: impl IntoIterator<Item = &'a str>) {
        for code in codes {
            self.dead_lettered
                .get_or_create(&ReasonLabels {
                    reason_code: code.to_string(),
                })
                .inc();
        }
    }

    /// One database write attempt took `took`.
    pub fn database_write(&self, took: Duration) {
        self.database_write_seconds.observe(took.as_secs_f64());
    }

    /// A call to `service` failed (counted, and the outage clock starts) or succeeded.
    pub fn service_outcome(&self, service: Service, ok: bool) {
        if ok {
            self.health.succeeded(service);
        } else {
            self.errors
                .get_or_create(&ServiceLabels {
                    service: service.as_str().to_string(),
                })
                .inc();
            self.health.failed(service, std::time::Instant::now());
        }
    }

    /// The member joined (or rejoined) with `generation` (`None`: no group) and these
    /// partitions; series of partitions no longer assigned are dropped.
    pub fn assigned(&self, partitions: &[i32], generation: Option<i32>) {
        self.generation.set(generation.map_or(-1, i64::from));
        self.assigned_partitions
            .set(i64::try_from(partitions.len()).unwrap_or(i64::MAX));
        let mut known = self.lock_partitions();
        known.retain(|p, _| partitions.contains(p));
        for family in [&self.log_end, &self.committed, &self.lag] {
            family.clear();
        }
        for p in partitions {
            let state = known.entry(*p).or_default();
            self.publish(*p, *state);
        }
        self.health.set_ready(None);
    }

    /// The group is rebalancing: not ready until the member is assigned again.
    pub fn rebalancing(&self) {
        self.rebalances.inc();
        self.health
            .set_ready(Some("the consumer group is rebalancing".into()));
    }

    /// A fetch returned `log_end` as the partition's high watermark.
    pub fn log_end(&self, partition: i32, log_end: i64) {
        let mut known = self.lock_partitions();
        let state = known.entry(partition).or_default();
        state.log_end = Some(log_end);
        let state = *state;
        self.publish(partition, state);
    }

    /// The group's committed offsets of these partitions, as read or as committed.
    pub fn committed(&self, offsets: impl IntoIterator<Item = (i32, i64)>) {
        let mut known = self.lock_partitions();
        for (partition, offset) in offsets {
            let state = known.entry(partition).or_default();
            state.committed = Some(offset);
            let state = *state;
            self.publish(partition, state);
        }
    }

    fn publish(&self, partition: i32, state: PartitionState) {
        let labels = PartitionLabels {
            partition: partition.to_string(),
        };
        if let Some(end) = state.log_end {
            self.log_end.get_or_create(&labels).set(end);
        }
        if let Some(committed) = state.committed {
            self.committed.get_or_create(&labels).set(committed);
        }
        if let (Some(end), Some(committed)) = (state.log_end, state.committed) {
            self.lag
                .get_or_create(&labels)
                .set((end - committed).max(0));
        }
    }

    fn lock_partitions(&self) -> MutexGuard<'_, HashMap<i32, PartitionState>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ConsumerMetrics {
    /// What `/healthz` and `/readyz` read.
    pub fn health(&self) -> &Health {
        &self.health
    }
}

impl Exposed for ConsumerMetrics {
    fn registry(&self) -> &Registry {
        &self.registry
    }
    fn health(&self) -> &Health {
        &self.health
    }
}
