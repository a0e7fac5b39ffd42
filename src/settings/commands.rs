//! Each command's settings, resolved from its flags and the [`Sources`]: the values one command
//! needs, each checked by the parser of its kind.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::kafka::{
    brokers, group, group_instance_id, kafka_security, partitions, topic, SecurityFlags,
};
use super::mongo::{mongo, named_collection, MongoSettings, DLQ, KPIS, RAW};
use super::telemetry::{telemetry, TelemetrySettings};
use super::values::{bounded, max_step_interval, positive, seconds, servers, span, suffix};
use super::*;
use crate::cli::{ConsumeArgs, PlotArgs, ProduceArgs, ShowArgs, StatusArgs};
use crate::kafka::{Compression, Security};
use crate::window::MAX_LISTED;

#[derive(Debug, Clone, PartialEq)]
pub struct ProduceSettings {
    pub brokers: Vec<String>,
    /// TLS and SASL for every connection to the brokers.
    pub security: Security,
    pub topic: String,
    pub servers: Vec<String>,
    pub interval: Duration,
    pub count: Option<u64>,
    pub seed: Option<u64>,
    /// After a stop signal, how long reports already made may still be sent.
    pub drain_timeout: Duration,
    pub compression: Compression,
    /// The `/metrics`, `/healthz` and `/readyz` endpoint.
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeSettings {
    pub brokers: Vec<String>,
    /// TLS and SASL for every connection to the brokers.
    pub security: Security,
    pub topic: String,
    pub group: String,
    pub mongo: MongoSettings,
    pub raw_collection: String,
    pub kpi_collection: String,
    pub dlq_collection: String,
    pub window_size: NonZeroUsize,
    /// How many servers a KPI window lists with their own averages (0 to 100).
    pub servers_per_window: usize,
    /// `None` reads every partition of the topic.
    pub partitions: Option<Vec<i32>>,
    pub exit_when_idle: Option<Duration>,
    pub max_messages: Option<u64>,
    /// A group member whose loop made no step for this long leaves the group, so its
    /// partitions move to a member that works; it is also how long a rebalance waits for the
    /// members to rejoin. Always more than [`GROUP_SESSION_TIMEOUT`].
    pub max_step_interval: Duration,
    /// KIP-345 static membership: the same id across restarts keeps the partitions.
    pub group_instance_id: Option<String>,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KpisSettings {
    pub mongo: MongoSettings,
    pub kpi_collection: String,
    pub limit: usize,
    pub json: bool,
    pub follow: bool,
    /// Sparklines under the table (never with `json`).
    pub chart: bool,
}

/// `kpis plot`: which windows to draw and where the SVG goes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSettings {
    pub mongo: MongoSettings,
    pub kpi_collection: String,
    pub windows: PlotWindows,
    pub out: PathBuf,
}

/// Which windows `kpis plot` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotWindows {
    /// The latest N stored (`--limit`).
    Latest(usize),
    /// Those whose end is at most this long before now (`--since`).
    EndedWithin(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusSettings {
    pub brokers: Vec<String>,
    /// TLS and SASL for every connection to the brokers.
    pub security: Security,
    pub topic: String,
    pub group: String,
    pub mongo: MongoSettings,
    pub kpi_collection: String,
    pub dlq_collection: String,
    pub max_lag: u64,
    pub json: bool,
}

impl ProduceSettings {
    pub fn resolve(args: &ProduceArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        let security = kafka_security(src, &SecurityFlags::from(args))?;
        Ok(ProduceSettings {
            brokers: brokers(src.pick(&args.brokers, "brokers", &["KAFKA_BROKERS"]))?,
            security,
            topic: topic(src.pick(&args.topic, "topic", &["KAFKA_TOPIC"]), &suffix)?,
            servers: servers(src.pick(&args.servers, "servers", &["SERVER_IDS"]))?,
            interval: match src.pick(&args.interval, "interval", &["REPORTING_INTERVAL_SECONDS"]) {
                Some(v) => seconds(&v)?,
                None => Duration::from_secs_f64(DEFAULT_INTERVAL_SECONDS),
            },
            count: src
                .pick(&args.count, "count", &["REPORT_COUNT"])
                .map(|v| positive(&v))
                .transpose()?,
            seed: src
                .pick(&args.seed, "seed", &["SIMULATION_SEED"])
                .map(|v| {
                    v.text.trim().parse::<u64>().map_err(|_| {
                        v.error("must be a whole number from 0 to 18446744073709551615")
                    })
                })
                .transpose()?,
            drain_timeout: match src.pick(
                &args.drain_timeout,
                "drain-timeout",
                &["PRODUCER_DRAIN_TIMEOUT_SECONDS"],
            ) {
                Some(v) => seconds(&v)?,
                None => Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECONDS),
            },
            compression: match src.pick(&args.compression, "compression", &["KAFKA_COMPRESSION"]) {
                Some(v) => v.text.parse().map_err(|e: String| v.error(e))?,
                None => Compression::None,
            },
            telemetry: telemetry(src, &args.metrics_addr, &args.health_threshold, None)?,
        })
    }
}

impl ConsumeSettings {
    pub fn resolve(args: &ConsumeArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        let window_size = match src.pick(&args.window_size, "window-size", &["WINDOW_SIZE"]) {
            Some(v) => NonZeroUsize::new(bounded(&v, 1_000_000)?).unwrap_or(NonZeroUsize::MIN),
            None => NonZeroUsize::new(DEFAULT_WINDOW_SIZE).unwrap_or(NonZeroUsize::MIN),
        };
        let security = kafka_security(src, &SecurityFlags::from(args))?;
        let max_step_interval = src
            .pick(
                &args.max_step_interval,
                "max-step-interval",
                &["MAX_STEP_INTERVAL_SECONDS"],
            )
            .map(|v| max_step_interval(&v))
            .transpose()?
            .unwrap_or(DEFAULT_MAX_STEP_INTERVAL);
        Ok(ConsumeSettings {
            brokers: brokers(src.pick(&args.brokers, "brokers", &["KAFKA_BROKERS"]))?,
            security,
            topic: topic(src.pick(&args.topic, "topic", &["KAFKA_TOPIC"]), &suffix)?,
            group: group(src.pick(&args.group, "group", &["KAFKA_GROUP_ID"]), &suffix)?,
            mongo: mongo(src, &args.mongodb_uri, &args.database)?,
            raw_collection: named_collection(src, &args.raw_collection, &RAW, &suffix)?,
            kpi_collection: named_collection(src, &args.kpi_collection, &KPIS, &suffix)?,
            dlq_collection: named_collection(src, &args.dlq_collection, &DLQ, &suffix)?,
            window_size,
            servers_per_window: match src.pick(
                &args.servers_per_window,
                "servers-per-window",
                &["SERVERS_PER_WINDOW"],
            ) {
                Some(v) => v
                    .text
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= MAX_LISTED)
                    .ok_or_else(|| {
                        v.error(format!("must be a whole number from 0 to {MAX_LISTED}"))
                    })?,
                None => MAX_LISTED,
            },
            partitions: src
                .pick(&args.partitions, "partitions", &["KAFKA_PARTITIONS"])
                .map(|v| partitions(&v))
                .transpose()?,
            exit_when_idle: src
                .pick(
                    &args.exit_when_idle,
                    "exit-when-idle",
                    &["EXIT_WHEN_IDLE_SECONDS"],
                )
                .map(|v| seconds(&v))
                .transpose()?,
            max_messages: src
                .pick(&args.max_messages, "max-messages", &["MAX_MESSAGES"])
                .map(|v| positive(&v))
                .transpose()?,
            max_step_interval,
            group_instance_id: src
                .pick(
                    &args.group_instance_id,
                    "group-instance-id",
                    &["KAFKA_GROUP_INSTANCE_ID"],
                )
                .map(|v| group_instance_id(&v))
                .transpose()?,
            telemetry: telemetry(
                src,
                &args.metrics_addr,
                &args.health_threshold,
                Some(max_step_interval),
            )?,
        })
    }
}

impl StatusSettings {
    pub fn resolve(args: &StatusArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        let security = kafka_security(src, &SecurityFlags::from(args))?;
        Ok(StatusSettings {
            brokers: brokers(src.pick(&args.brokers, "brokers", &["KAFKA_BROKERS"]))?,
            security,
            topic: topic(src.pick(&args.topic, "topic", &["KAFKA_TOPIC"]), &suffix)?,
            group: group(src.pick(&args.group, "group", &["KAFKA_GROUP_ID"]), &suffix)?,
            mongo: mongo(src, &args.mongodb_uri, &args.database)?,
            kpi_collection: named_collection(src, &args.kpi_collection, &KPIS, &suffix)?,
            dlq_collection: named_collection(src, &args.dlq_collection, &DLQ, &suffix)?,
            max_lag: src
                .pick(&args.max_lag, "max-lag", &["STATUS_MAX_LAG"])
                .map(|v| positive(&v))
                .transpose()?
                .unwrap_or(DEFAULT_MAX_LAG),
            json: args.json,
        })
    }
}

impl KpisSettings {
    pub fn resolve(args: &ShowArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        if args.chart && args.json {
            return Err(SettingError {
                setting: "--chart".into(),
                problem: "draws for people; it cannot be combined with --json".into(),
            });
        }
        let limit = match src.pick(&args.limit, "limit", &["KPIS_LIMIT"]) {
            Some(v) => bounded(&v, MAX_KPIS_LIMIT)?,
            None => DEFAULT_KPIS_LIMIT,
        };
        Ok(KpisSettings {
            mongo: mongo(src, &args.mongodb_uri, &args.database)?,
            kpi_collection: named_collection(src, &args.kpi_collection, &KPIS, &suffix)?,
            limit,
            json: args.json,
            follow: args.follow,
            chart: args.chart,
        })
    }
}

impl PlotSettings {
    pub fn resolve(args: &PlotArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        if args.limit.is_some() && args.since.is_some() {
            return Err(SettingError {
                setting: "--since".into(),
                problem: "give either --limit or --since, not both".into(),
            });
        }
        let windows = match (&args.since, src.pick(&args.limit, "limit", &["KPIS_LIMIT"])) {
            (Some(since), _) => PlotWindows::EndedWithin(span(&Value {
                text: since.clone(),
                origin: "--since".into(),
            })?),
            (None, Some(limit)) => PlotWindows::Latest(bounded(&limit, MAX_KPIS_LIMIT)?),
            (None, None) => PlotWindows::Latest(DEFAULT_PLOT_LIMIT),
        };
        let out = PathBuf::from(&args.out);
        if args.out.trim().is_empty() || out.is_dir() {
            return Err(SettingError {
                setting: "--out".into(),
                problem: format!(
                    "must name a file to write, e.g. kpis.svg (got {:?})",
                    args.out
                ),
            });
        }
        Ok(PlotSettings {
            mongo: mongo(src, &args.mongodb_uri, &args.database)?,
            kpi_collection: named_collection(src, &args.kpi_collection, &KPIS, &suffix)?,
            windows,
            out,
        })
    }
}
