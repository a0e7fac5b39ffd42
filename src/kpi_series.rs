//! The six KPIs of a stored window as the numbers the pictures draw (`kpis show --chart`,
//! `kpis plot`). Pure: a window comes in as the JSON the store reads back, so the drawing code
//! never sees MongoDB, and a field missing from an older document is a gap, not an error.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One KPI of a window, in the order the pictures show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kpi {
    Cpu,
    Memory,
    Disk,
    Network,
    Errors,
    MessagesPerSecond,
}

impl Kpi {
    /// Every KPI, in display order (the order of [`WindowKpis::values`]).
    pub const ALL: [Kpi; 6] = [
        Kpi::Cpu,
        Kpi::Memory,
        Kpi::Disk,
        Kpi::Network,
        Kpi::Errors,
        Kpi::MessagesPerSecond,
    ];

    /// The field under `kpis` in a stored window document.
    pub fn field(self) -> &'static str {
        match self {
            Kpi::Cpu => "avg_cpu_percent",
            Kpi::Memory => "avg_memory_percent",
            Kpi::Disk => "avg_disk_io_mbps",
            Kpi::Network => "avg_network_mbps",
            Kpi::Errors => "total_error_count",
            Kpi::MessagesPerSecond => "messages_per_second",
        }
    }

    /// A short name with its unit, for a sparkline's row.
    pub fn label(self) -> &'static str {
        match self {
            Kpi::Cpu => "cpu %",
            Kpi::Memory => "memory %",
            Kpi::Disk => "disk MB/s",
            Kpi::Network => "net Mbps",
            Kpi::Errors => "errors",
            Kpi::MessagesPerSecond => "msg/s",
        }
    }

    /// What the number is, for a plot panel's title.
    pub fn title(self) -> &'static str {
        match self {
            Kpi::Cpu => "CPU, average %",
            Kpi::Memory => "Memory, average %",
            Kpi::Disk => "Disk I/O, average MB/s",
            Kpi::Network => "Network, average Mbps",
            Kpi::Errors => "Errors, total per window",
            Kpi::MessagesPerSecond => "Messages per second",
        }
    }

    /// Decimals shown for a value: error counts are whole numbers.
    pub fn decimals(self) -> usize {
        match self {
            Kpi::Errors => 0,
            _ => 2,
        }
    }
}

/// What the pictures need of one stored window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowKpis {
    /// `window_end`: when the window's last message arrived; `None` if absent or unreadable.
    pub end: Option<OffsetDateTime>,
    /// One value per [`Kpi::ALL`], in that order; `None` for a missing, null or non-finite
    /// field (`messages_per_second` is null for a window that took no measurable time).
    pub values: [Option<f64>; 6],
    /// True when the window lists or counts at least one alert.
    pub alerted: bool,
}

impl WindowKpis {
    /// Reads a window document as the store returns it (dates as RFC 3339 strings).
    pub fn from_document(w: &Value) -> WindowKpis {
        let end = w["window_end"]
            .as_str()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
        let values = Kpi::ALL.map(|k| w["kpis"][k.field()].as_f64().filter(|v| v.is_finite()));
        let listed = w["alerts"].as_array().is_some_and(|a| !a.is_empty());
        let omitted = w["alerts_omitted"].as_i64().is_some_and(|n| n > 0);
        WindowKpis {
            end,
            values,
            alerted: listed || omitted,
        }
    }

    pub fn value(&self, kpi: Kpi) -> Option<f64> {
        let index = Kpi::ALL.iter().position(|k| *k == kpi)?;
        self.values[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn a_stored_window_gives_its_six_kpis_its_end_and_whether_it_alerted() {
        let w = WindowKpis::from_document(&json!({
            "window_end": "2026-12-03T02:00:40.5Z",
            "kpis": {
                "avg_cpu_percent": 41.5, "avg_memory_percent": 55, "avg_disk_io_mbps": 24.75,
                "avg_network_mbps": 50.125, "total_error_count": 3, "messages_per_second": 0.5
            },
            "alerts": [{"metric": "cpu_percent"}],
            "alerts_omitted": 0
        }));
        assert_eq!(w.end, Some(datetime!(2026-12-03 02:00:40.5 UTC)));
        assert_eq!(
            w.values,
            [
                Some(41.5),
                Some(55.0),
                Some(24.75),
                Some(50.125),
                Some(3.0),
                Some(0.5)
            ]
        );
        assert!(w.alerted);
        assert_eq!(w.value(Kpi::Errors), Some(3.0));
    }

    #[test]
    fn missing_null_and_unreadable_fields_are_gaps_and_omitted_alerts_count() {
        let w = WindowKpis::from_document(&json!({
            "window_end": "yesterday",
            "kpis": {"avg_cpu_percent": "high", "messages_per_second": null},
            "alerts": [],
            "alerts_omitted": 4
        }));
        assert_eq!(w.end, None);
        assert_eq!(w.values, [None; 6]);
        assert!(w.alerted);
        let quiet = WindowKpis::from_document(&json!({"alerts": []}));
        assert!(!quiet.alerted);
    }
}
