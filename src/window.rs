//! Tumbling windows of N valid messages and the KPIs of each window. Pure: every instant is
//! passed in (`push(message, arrival)`), so the arithmetic is tested exactly.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use time::OffsetDateTime;

use crate::metric::Metrics;

/// A CPU or memory reading at or above this percentage raises an alert.
pub const ALERT_PERCENT: f64 = 90.0;
/// An `error_count` at or above this raises an alert.
pub const ALERT_ERROR_COUNT: i64 = 3;
/// How many servers and how many alerts a window lists at most; the rest are only counted. A
/// window of many messages from many servers must still fit in one MongoDB document (16 MiB),
/// and a hundred entries are more than a person reads. Fewer servers may be asked for
/// ([`TumblingWindows::listing_servers`]).
pub const MAX_LISTED: usize = 100;

/// One valid message as the window sees it: what it measured and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowMessage {
    pub server_id: String,
    /// The message's own `timestamp_utc` (event time).
    pub timestamp: OffsetDateTime,
    pub metrics: Metrics,
    pub partition: i32,
    pub offset: i64,
}

/// The KPIs of one closed window.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiWindow {
    /// Processing time: the close of the previous window, or the arrival of this window's first
    /// message when there is no previous window in this run.
    pub start: OffsetDateTime,
    /// Processing time: the arrival of this window's last message.
    pub end: OffsetDateTime,
    pub duration_s: f64,
    pub message_count: usize,
    pub totals: Averages,
    /// `message_count / duration_s`; `None` when the window took no measurable time.
    pub messages_per_second: Option<f64>,
    pub max_cpu_percent: f64,
    pub max_memory_percent: f64,
    /// Per `server_id`, sorted by name: the first [`MAX_LISTED`].
    pub servers: Vec<ServerKpis>,
    /// Servers of this window beyond the first [`MAX_LISTED`], counted but not listed.
    pub servers_omitted: usize,
    /// Readings that crossed a threshold, in message order: the first [`MAX_LISTED`].
    pub alerts: Vec<Alert>,
    /// Alerts beyond the first [`MAX_LISTED`], counted but not listed.
    pub alerts_omitted: usize,
    /// Earliest and latest `timestamp_utc` among the window's messages.
    pub first_event: OffsetDateTime,
    pub last_event: OffsetDateTime,
    /// The Kafka offsets of the window's messages, per partition, sorted by partition.
    pub partitions: Vec<PartitionSpan>,
}

/// Averages and error total over a set of messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Averages {
    pub avg_cpu_percent: f64,
    pub avg_memory_percent: f64,
    pub avg_disk_io_mbps: f64,
    pub avg_network_mbps: f64,
    pub total_error_count: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerKpis {
    pub server_id: String,
    pub message_count: usize,
    pub kpis: Averages,
}

/// A reading that crossed an alert threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub server_id: String,
    /// The metric's field name, e.g. `cpu_percent`.
    pub metric: &'static str,
    pub value: f64,
    pub timestamp: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpan {
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub message_count: usize,
}

/// Collects valid messages and closes a window every `size` of them.
#[derive(Debug)]
pub struct TumblingWindows {
    size: NonZeroUsize,
    members: Vec<WindowMessage>,
    first_arrival: Option<OffsetDateTime>,
    previous_close: Option<OffsetDateTime>,
    /// How many servers a window lists with their own KPIs.
    servers_listed: usize,
}

impl TumblingWindows {
    pub fn new(size: NonZeroUsize) -> Self {
        TumblingWindows {
            size,
            members: Vec::with_capacity(size.get()),
            first_arrival: None,
            previous_close: None,
            servers_listed: MAX_LISTED,
        }
    }

    /// Lists at most `n` servers per window (at most [`MAX_LISTED`]); 0 lists none, and every
    /// server is only counted in `servers_omitted`.
    pub fn listing_servers(mut self, n: usize) -> Self {
        self.servers_listed = n.min(MAX_LISTED);
        self
    }

    /// Adds a message that arrived at `arrival`; returns the window it closes, if any.
    pub fn push(&mut self, message: WindowMessage, arrival: OffsetDateTime) -> Option<KpiWindow> {
        if self.members.is_empty() {
            self.first_arrival = Some(arrival);
        }
        self.members.push(message);
        if self.members.len() < self.size.get() {
            return None;
        }
        let start = self
            .previous_close
            .or(self.first_arrival)
            .unwrap_or(arrival);
        let members = std::mem::replace(&mut self.members, Vec::with_capacity(self.size.get()));
        self.previous_close = Some(arrival);
        self.first_arrival = None;
        Some(compute_listing(
            &members,
            start,
            arrival,
            self.servers_listed,
        ))
    }

    /// Messages in the open window, which is not stored if the run ends before it fills.
    pub fn pending(&self) -> usize {
        self.members.len()
    }
}

/// The KPIs of a non-empty set of messages spanning `start..end` in processing time.
pub fn compute(members: &[WindowMessage], start: OffsetDateTime, end: OffsetDateTime) -> KpiWindow {
    compute_listing(members, start, end, MAX_LISTED)
}

/// [`compute`], listing at most `servers_listed` servers.
fn compute_listing(
    members: &[WindowMessage],
    start: OffsetDateTime,
    end: OffsetDateTime,
    servers_listed: usize,
) -> KpiWindow {
    let duration_s = (end - start).as_seconds_f64().max(0.0);
    let message_count = members.len();
    let messages_per_second = (duration_s > 0.0).then(|| message_count as f64 / duration_s);

    let mut by_server: BTreeMap<&str, Vec<&Metrics>> = BTreeMap::new();
    let mut by_partition: BTreeMap<i32, PartitionSpan> = BTreeMap::new();
    let mut alerts = Vec::new();
    let mut alerts_omitted = 0;
    for m in members {
        by_server.entry(&m.server_id).or_default().push(&m.metrics);
        by_partition
            .entry(m.partition)
            .and_modify(|span| {
                span.first_offset = span.first_offset.min(m.offset);
                span.last_offset = span.last_offset.max(m.offset);
                span.message_count += 1;
            })
            .or_insert(PartitionSpan {
                partition: m.partition,
                first_offset: m.offset,
                last_offset: m.offset,
                message_count: 1,
            });
        let readings = [
            (
                "cpu_percent",
                m.metrics.cpu_percent >= ALERT_PERCENT,
                m.metrics.cpu_percent,
            ),
            (
                "memory_percent",
                m.metrics.memory_percent >= ALERT_PERCENT,
                m.metrics.memory_percent,
            ),
            (
                "error_count",
                m.metrics.error_count >= ALERT_ERROR_COUNT,
                m.metrics.error_count as f64,
            ),
        ];
        for (metric, crossed, value) in readings {
            if crossed && alerts.len() >= MAX_LISTED {
                alerts_omitted += 1;
            } else if crossed {
                alerts.push(Alert {
                    server_id: m.server_id.clone(),
                    metric,
                    value,
                    timestamp: m.timestamp,
                });
            }
        }
    }

    let servers_omitted = by_server.len().saturating_sub(servers_listed);
    let all: Vec<&Metrics> = members.iter().map(|m| &m.metrics).collect();
    let max = |f: fn(&Metrics) -> f64| all.iter().map(|m| f(m)).fold(f64::NEG_INFINITY, f64::max);
    KpiWindow {
        start,
        end,
        duration_s,
        message_count,
        totals: averages(&all),
        messages_per_second,
        max_cpu_percent: max(|m| m.cpu_percent),
        max_memory_percent: max(|m| m.memory_percent),
        servers: by_server
            .into_iter()
            .take(servers_listed)
            .map(|(server_id, metrics)| ServerKpis {
                server_id: server_id.to_string(),
                message_count: metrics.len(),
                kpis: averages(&metrics),
            })
            .collect(),
        servers_omitted,
        alerts,
        alerts_omitted,
        first_event: members.iter().map(|m| m.timestamp).min().unwrap_or(start),
        last_event: members.iter().map(|m| m.timestamp).max().unwrap_or(end),
        partitions: by_partition.into_values().collect(),
    }
}

fn averages(metrics: &[&Metrics]) -> Averages {
    let n = metrics.len().max(1) as f64;
    let mean = |f: fn(&Metrics) -> f64| metrics.iter().map(|m| f(m)).sum::<f64>() / n;
    Averages {
        avg_cpu_percent: mean(|m| m.cpu_percent),
        avg_memory_percent: mean(|m| m.memory_percent),
        avg_disk_io_mbps: mean(|m| m.disk_io_mbps),
        avg_network_mbps: mean(|m| m.network_mbps),
        total_error_count: metrics.iter().map(|m| m.error_count).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Duration;

    const T0: OffsetDateTime = datetime!(2026-11-22 18:00:00 UTC);

    fn msg(
        server: &str,
        cpu: f64,
        mem: f64,
        errors: i64,
        partition: i32,
        offset: i64,
    ) -> WindowMessage {
        WindowMessage {
            server_id: server.to_string(),
            timestamp: T0 + Duration::seconds(offset),
            metrics: Metrics {
                cpu_percent: cpu,
                memory_percent: mem,
                disk_io_mbps: cpu / 2.0,
                network_mbps: mem / 4.0,
                error_count: errors,
            },
            partition,
            offset,
        }
    }

    fn size(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn closes_a_window_every_n_messages_with_hand_computed_kpis() {
        let mut w = TumblingWindows::new(size(4));
        let inputs = [
            msg("web01", 10.0, 20.0, 0, 0, 0),
            msg("db01", 20.0, 40.0, 1, 1, 0),
            msg("web01", 30.0, 95.0, 3, 0, 1),
            msg("db01", 92.0, 50.0, 0, 1, 1),
        ];
        let mut closed = None;
        for (i, m) in inputs.into_iter().enumerate() {
            // Arrivals at 0, 2, 4, 8 seconds after T0.
            let at = T0 + Duration::seconds([0, 2, 4, 8][i]);
            closed = w.push(m, at);
            if i < 3 {
                assert!(closed.is_none());
            }
        }
        let k = closed.expect("the 4th message closes the window");
        assert_eq!(k.message_count, 4);
        assert_eq!(k.start, T0, "first window starts at its first arrival");
        assert_eq!(k.end, T0 + Duration::seconds(8));
        assert_eq!(k.duration_s, 8.0);
        assert_eq!(k.messages_per_second, Some(0.5));
        assert_eq!(k.totals.avg_cpu_percent, 38.0);
        assert_eq!(k.totals.avg_memory_percent, 51.25);
        assert_eq!(k.totals.avg_disk_io_mbps, 19.0);
        assert_eq!(k.totals.avg_network_mbps, 12.8125);
        assert_eq!(k.totals.total_error_count, 4);
        assert_eq!(k.max_cpu_percent, 92.0);
        assert_eq!(k.max_memory_percent, 95.0);
        assert_eq!(k.servers.len(), 2);
        assert_eq!(k.servers[0].server_id, "db01");
        assert_eq!(k.servers[0].message_count, 2);
        assert_eq!(k.servers[0].kpis.avg_cpu_percent, 56.0);
        assert_eq!(k.servers[1].kpis.total_error_count, 3);
        let alerts: Vec<(&str, &str, f64)> = k
            .alerts
            .iter()
            .map(|a| (a.server_id.as_str(), a.metric, a.value))
            .collect();
        assert_eq!(
            alerts,
            [
                ("web01", "memory_percent", 95.0),
                ("web01", "error_count", 3.0),
                ("db01", "cpu_percent", 92.0)
            ]
        );
        assert_eq!(k.first_event, T0);
        assert_eq!(k.last_event, T0 + Duration::seconds(1));
        assert_eq!(
            k.partitions,
            [
                PartitionSpan {
                    partition: 0,
                    first_offset: 0,
                    last_offset: 1,
                    message_count: 2
                },
                PartitionSpan {
                    partition: 1,
                    first_offset: 0,
                    last_offset: 1,
                    message_count: 2
                },
            ]
        );
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn the_next_window_starts_where_the_previous_closed() {
        let mut w = TumblingWindows::new(size(2));
        assert!(w.push(msg("a", 1.0, 1.0, 0, 0, 0), T0).is_none());
        let first = w
            .push(msg("a", 1.0, 1.0, 0, 0, 1), T0 + Duration::seconds(4))
            .unwrap();
        assert_eq!((first.start, first.duration_s), (T0, 4.0));
        // A pause before the next message counts in the next window's duration.
        assert!(w
            .push(msg("a", 1.0, 1.0, 0, 0, 2), T0 + Duration::seconds(20))
            .is_none());
        let second = w
            .push(msg("a", 1.0, 1.0, 0, 0, 3), T0 + Duration::seconds(24))
            .unwrap();
        assert_eq!(second.start, T0 + Duration::seconds(4));
        assert_eq!(second.duration_s, 20.0);
        assert_eq!(second.messages_per_second, Some(0.1));
    }

    #[test]
    fn a_window_that_takes_no_time_has_no_rate() {
        let mut w = TumblingWindows::new(size(3));
        w.push(msg("a", 1.0, 1.0, 0, 0, 0), T0);
        w.push(msg("a", 2.0, 1.0, 0, 0, 1), T0);
        let k = w.push(msg("a", 3.0, 1.0, 0, 0, 2), T0).unwrap();
        assert_eq!(k.duration_s, 0.0);
        assert_eq!(k.messages_per_second, None);
        assert_eq!(k.totals.avg_cpu_percent, 2.0);
    }

    #[test]
    fn size_one_closes_on_every_message() {
        let mut w = TumblingWindows::new(size(1));
        let a = w.push(msg("a", 50.0, 60.0, 2, 2, 7), T0).unwrap();
        assert_eq!(
            (a.message_count, a.duration_s, a.messages_per_second),
            (1, 0.0, None)
        );
        assert_eq!(a.totals.avg_cpu_percent, 50.0);
        let b = w
            .push(
                msg("a", 70.0, 60.0, 0, 2, 8),
                T0 + Duration::milliseconds(250),
            )
            .unwrap();
        assert_eq!(b.duration_s, 0.25);
        assert_eq!(b.messages_per_second, Some(4.0));
    }

    #[test]
    fn a_partial_window_is_only_pending() {
        let mut w = TumblingWindows::new(size(20));
        for i in 0..19 {
            assert!(w.push(msg("a", 1.0, 1.0, 0, 0, i), T0).is_none());
        }
        assert_eq!(w.pending(), 19);
    }

    #[test]
    fn long_server_and_alert_lists_are_cut_and_counted() {
        // 150 servers, each with a CPU and an error-count alert: 300 alerts.
        let n = MAX_LISTED + 50;
        let mut w = TumblingWindows::new(size(n));
        let mut closed = None;
        for i in 0..n {
            closed = w.push(msg(&format!("s{i:03}"), 95.0, 10.0, 5, 0, i as i64), T0);
        }
        let k = closed.unwrap();
        assert_eq!(k.servers.len(), MAX_LISTED);
        assert_eq!(k.servers_omitted, 50);
        assert_eq!(k.servers[0].server_id, "s000");
        assert_eq!(k.servers[MAX_LISTED - 1].server_id, "s099");
        assert_eq!(k.alerts.len(), MAX_LISTED);
        assert_eq!(k.alerts_omitted, 2 * n - MAX_LISTED);
        // The KPIs still cover every message, listed or not.
        assert_eq!(k.message_count, n);
        assert_eq!(k.totals.total_error_count, 5 * n as i64);
    }

    #[test]
    fn fewer_servers_may_be_listed_and_none_at_all() {
        let window = |listed: usize| {
            let mut w = TumblingWindows::new(size(4)).listing_servers(listed);
            for (i, s) in ["c", "a", "b", "a"].iter().enumerate() {
                if let Some(k) = w.push(msg(s, 95.0, 10.0, 1, 0, i as i64), T0) {
                    return k;
                }
            }
            unreachable!("a window of 4 closes on the 4th message")
        };
        let two = window(2);
        let listed: Vec<(&str, usize)> = two
            .servers
            .iter()
            .map(|s| (s.server_id.as_str(), s.message_count))
            .collect();
        assert_eq!((listed, two.servers_omitted), (vec![("a", 2), ("b", 1)], 1));
        let none = window(0);
        assert_eq!((none.servers.len(), none.servers_omitted), (0, 3));
        // Nothing else changes: the window's own KPIs and alerts cover every message.
        assert_eq!(none.totals, two.totals);
        assert_eq!(none.alerts, two.alerts);
        assert_eq!(window(1000).servers.len(), 3);
    }

    #[test]
    fn short_lists_omit_nothing() {
        let mut w = TumblingWindows::new(size(2));
        w.push(msg("a", 95.0, 1.0, 0, 0, 0), T0);
        let k = w.push(msg("b", 1.0, 1.0, 0, 0, 1), T0).unwrap();
        assert_eq!((k.servers.len(), k.servers_omitted), (2, 0));
        assert_eq!((k.alerts.len(), k.alerts_omitted), (1, 0));
    }

    #[test]
    fn averages_keep_full_precision() {
        let mut w = TumblingWindows::new(size(3));
        w.push(msg("a", 10.01, 1.0, 0, 0, 0), T0);
        w.push(msg("a", 10.02, 1.0, 0, 0, 1), T0);
        let k = w.push(msg("a", 10.04, 1.0, 0, 0, 2), T0).unwrap();
        assert_eq!(k.totals.avg_cpu_percent, (10.01 + 10.02 + 10.04) / 3.0);
    }
}
