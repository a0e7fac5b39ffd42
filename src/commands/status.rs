//! `metricsctl status`: is the pipeline keeping up? Per partition of the topic: the log's
//! bounds, the group's committed offset and lag, the member that owns the partition, and the
//! last stored window; the dead letters of the last hour. Exit 0 when every partition is owned
//! and lags less than `--max-lag`, 1 otherwise, so a cron job or a container health check can
//! use it.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use super::{database_hint, diagnose, now_utc, CommandError};
use crate::cli::StatusArgs;
use crate::kafka::{KafkaAdmin, KafkaError};
use crate::redact::redact_uri;
use crate::settings::{SettingError, Sources, StatusSettings};
use crate::shutdown::Shutdown;
use crate::store::{CollectionNames, Store, StoreError};

/// One partition's line.
#[derive(Debug, Serialize)]
struct PartitionStatus {
    partition: i32,
    log_start: i64,
    log_end: i64,
    /// `None` when the group never committed an offset for this log.
    committed: Option<i64>,
    /// Messages not yet committed (from the log start when nothing was committed).
    lag: i64,
    /// The member id of the owner, `None` when no live member owns the partition.
    owner: Option<String>,
    owner_host: Option<String>,
    last_window_at: Option<String>,
    last_window_age_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    topic: String,
    topic_id: String,
    group: String,
    group_state: String,
    members: usize,
    partitions: Vec<PartitionStatus>,
    total_lag: i64,
    dead_letters_last_hour: u64,
    max_lag: u64,
    healthy: bool,
    /// Why it is not healthy, one item a problem.
    problems: Vec<String>,
}

pub fn run(args: &StatusArgs) -> Result<(), CommandError> {
    let settings = StatusSettings::resolve(args, &Sources::load()?)?;
    let names = CollectionNames {
        raw: String::new(),
        kpi: settings.kpi_collection.clone(),
        dlq: settings.dlq_collection.clone(),
    };
    let store = Store::open(&settings.mongo, &names).map_err(|e| {
        CommandError::Setting(SettingError {
            setting: "MONGODB_URI".into(),
            problem: e.detail,
        })
    })?;
    let report = gather(&settings, &store)?;
    let mut out = std::io::stdout().lock();
    if settings.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&report).unwrap_or_default()
        );
    } else {
        print_table(&mut out, &report);
    }
    if report.healthy {
        Ok(())
    } else {
        Err(CommandError::Unhealthy)
    }
}

fn gather(settings: &StatusSettings, store: &Store) -> Result<Report, CommandError> {
    let kafka_failed = |e: KafkaError| {
        CommandError::Failed(if e.is_fatal() {
            e.to_string()
        } else if e.detail.contains("does not exist") {
            format!("{e}; check --topic (KAFKA_TOPIC)")
        } else {
            format!(
                "{e}; is Kafka running at {}? (`make up` starts a local one)",
                settings.brokers.join(",")
            )
        })
    };
    let db_failed = |e: StoreError| {
        let hint = database_hint(diagnose(&e), &redact_uri(&settings.mongo.uri));
        CommandError::Failed(format!("{e}; {hint}"))
    };
    // No signal handler: status is short, and Ctrl-C may end it at once.
    let mut source = KafkaAdmin::new(
        settings.brokers.clone(),
        settings.topic.clone(),
        settings.group.clone(),
        Shutdown::default(),
    )
    .with_security(settings.security.clone());
    let topic = source.inspect().map_err(kafka_failed)?;
    let bounds = source
        .offset_bounds(&topic.partitions)
        .map_err(kafka_failed)?;
    let committed = source
        .committed_offsets(&topic.partitions)
        .map_err(kafka_failed)?;
    let (group_state, members) = source.group_members().map_err(kafka_failed)?;
    let topic_id = topic.topic_id.to_string();
    let now = now_utc();

    let mut owners: HashMap<i32, (&str, &str)> = HashMap::new();
    for m in &members {
        for p in &m.partitions {
            owners.insert(*p, (m.member_id.as_str(), m.host.as_str()));
        }
    }
    let mut partitions = Vec::new();
    let mut problems = Vec::new();
    for &p in &topic.partitions {
        let (log_start, log_end) = bounds.get(&p).copied().unwrap_or((0, 0));
        let committed = committed.get(&p).map(|c| c.offset);
        let lag = (log_end - committed.unwrap_or(log_start).max(log_start)).max(0);
        let owner = owners.get(&p).copied();
        let last = store
            .last_window_at(&topic_id, &settings.group, p)
            .map_err(db_failed)?;
        if owner.is_none() {
            problems.push(format!(
                "partition {p} has no owner in group {}",
                settings.group
            ));
        }
        if lag as u64 >= settings.max_lag {
            problems.push(format!(
                "partition {p} lags by {lag} messages (limit {})",
                settings.max_lag
            ));
        }
        partitions.push(PartitionStatus {
            partition: p,
            log_start,
            log_end,
            committed,
            lag,
            owner: owner.map(|(id, _)| id.to_string()),
            owner_host: owner.map(|(_, host)| host.to_string()),
            last_window_at: last.and_then(|t| t.format(&Rfc3339).ok()),
            last_window_age_s: last.map(|t| (now - t).as_seconds_f64().max(0.0)),
        });
    }
    let dead_letters_last_hour = store
        .dead_letters_since(&settings.topic, now - Duration::from_secs(3600))
        .map_err(db_failed)?;
    Ok(Report {
        topic: settings.topic.clone(),
        topic_id,
        group: settings.group.clone(),
        group_state,
        members: members.len(),
        total_lag: partitions.iter().map(|p| p.lag).sum(),
        partitions,
        dead_letters_last_hour,
        max_lag: settings.max_lag,
        healthy: problems.is_empty(),
        problems,
    })
}

fn print_table(out: &mut impl Write, r: &Report) {
    let _ = writeln!(
        out,
        "topic {} (id {}), group {} ({}, {} member{})",
        r.topic,
        r.topic_id,
        r.group,
        r.group_state,
        r.members,
        if r.members == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "{:>9}  {:>10}  {:>10}  {:>10}  {:>8}  {:<48}  {:>14}",
        "PARTITION", "LOG-START", "LOG-END", "COMMITTED", "LAG", "OWNER", "LAST-WINDOW"
    );
    for p in &r.partitions {
        let owner = match (&p.owner, &p.owner_host) {
            (Some(id), Some(host)) => format!("{id} {host}"),
            (Some(id), None) => id.clone(),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:>9}  {:>10}  {:>10}  {:>10}  {:>8}  {:<48}  {:>14}",
            p.partition,
            p.log_start,
            p.log_end,
            p.committed.map_or("-".to_string(), |c| c.to_string()),
            p.lag,
            owner,
            p.last_window_age_s.map_or("-".to_string(), age),
        );
    }
    let _ = writeln!(
        out,
        "total lag {}; dead letters in the last hour: {}",
        r.total_lag, r.dead_letters_last_hour
    );
    if r.healthy {
        let _ = writeln!(out, "OK: every partition owned, lag under {}", r.max_lag);
    } else {
        let _ = writeln!(out, "UNHEALTHY: {}", r.problems.join("; "));
    }
}

/// `42 s ago`, `7 min ago`, `3.5 h ago`.
fn age(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s ago")
    } else if seconds < 7200.0 {
        format!("{:.0} min ago", seconds / 60.0)
    } else {
        format!("{:.1} h ago", seconds / 3600.0)
    }
}
