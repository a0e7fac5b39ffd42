//! `metricsctl kpis show`: the latest KPI windows, as a table for people (optionally with a
//! sparkline per KPI under it) or JSON lines for programs, optionally following new windows as
//! they are stored.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{no_windows_yet, open_store, read_failure};
use crate::chart::chart;
use crate::cli::ShowArgs;
use crate::commands::{now_utc, CommandError};
use crate::kpi_series::WindowKpis;
use crate::settings::{KpisSettings, Sources};
use crate::shutdown::Shutdown;

/// How often `--follow` looks for new windows.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// How far behind the newest window seen `--follow` looks again (clock differences between
/// consumers).
const FOLLOW_LOOKBACK: Duration = Duration::from_secs(60);

pub fn show(args: &ShowArgs) -> Result<(), CommandError> {
    let settings = KpisSettings::resolve(args, &Sources::load()?)?;
    let store = open_store(&settings.mongo, &settings.kpi_collection)?;
    let latest = store
        .latest_windows(settings.limit)
        .map_err(read_failure(&settings.mongo))?;
    let mut out = std::io::stdout().lock();
    if latest.is_empty() && !settings.follow {
        let _ = writeln!(
            out,
            "{}",
            no_windows_yet(&settings.mongo, &settings.kpi_collection)
        );
        return Ok(());
    }
    if !settings.json {
        let _ = writeln!(out, "{}", header());
    }
    for w in &latest {
        print_window(&mut out, w, settings.json);
    }
    // The windows the sparklines cover, oldest first: the table lists the newest first.
    let mut charted: VecDeque<WindowKpis> = VecDeque::new();
    if settings.chart && !latest.is_empty() {
        charted = latest.iter().rev().map(WindowKpis::from_document).collect();
        print_chart(&mut out, &mut charted);
    }
    if !settings.follow {
        return Ok(());
    }

    drop(out);
    let shutdown = Shutdown::install().map_err(CommandError::Failed)?;
    // Windows are stamped when stored, but by several consumers on clocks that may differ a
    // little: each poll looks back FOLLOW_LOOKBACK behind the newest stamp seen and skips the
    // windows already printed, so none is missed and none printed twice.
    let mut seen: HashMap<String, OffsetDateTime> = latest
        .iter()
        .filter_map(|w| Some((window_id(w)?, computed_at(w)?)))
        .collect();
    let mut since = latest
        .iter()
        .filter_map(computed_at)
        .max()
        .unwrap_or_else(now_utc);
    while shutdown.sleep(FOLLOW_POLL) {
        let fresh = match store.windows_since(since - FOLLOW_LOOKBACK) {
            Ok(w) => w,
            Err(e) => {
                log::error!("{e}; retrying");
                continue;
            }
        };
        let mut out = std::io::stdout().lock();
        let mut printed = 0;
        for w in fresh {
            let at = computed_at(&w);
            if let Some(id) = window_id(&w) {
                if seen.insert(id, at.unwrap_or(since)).is_some() {
                    continue;
                }
            }
            if let Some(at) = at {
                since = since.max(at);
            }
            if settings.chart && printed == 0 && !charted.is_empty() {
                // Rows go on below the last sparklines.
                let _ = writeln!(out);
            }
            print_window(&mut out, &w, settings.json);
            printed += 1;
            if settings.chart {
                charted.push_back(WindowKpis::from_document(&w));
            }
        }
        // The sparklines move on: the newest --limit windows, drawn again after each batch.
        if settings.chart && printed > 0 {
            while charted.len() > settings.limit {
                charted.pop_front();
            }
            print_chart(&mut out, &mut charted);
        }
        // What is older than the look-back cannot come back in a poll.
        seen.retain(|_, at| *at >= since - FOLLOW_LOOKBACK);
    }
    Ok(())
}

fn window_id(w: &Value) -> Option<String> {
    w.get("_id").map(|v| v.to_string())
}

fn computed_at(w: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(w.get("computed_at")?.as_str()?, &Rfc3339).ok()
}

fn print_window(out: &mut impl Write, w: &Value, json: bool) {
    let line = if json { w.to_string() } else { row(w) };
    // A closed pipe (e.g. `| head`) is not an error worth reporting.
    let _ = writeln!(out, "{line}");
}

/// The sparklines, set off from the rows above by a blank line.
fn print_chart(out: &mut impl Write, windows: &mut VecDeque<WindowKpis>) {
    let _ = writeln!(out);
    for line in chart(windows.make_contiguous()) {
        let _ = writeln!(out, "{line}");
    }
}

fn header() -> String {
    format!(
        "{:<19}  {:>9}  {:>4}  {:>7}  {:>6}  {:>6}  {:>9}  {:>8}  {:>6}  {:>6}",
        "WINDOW END (UTC)",
        "DURATION",
        "MSGS",
        "MSG/S",
        "CPU %",
        "MEM %",
        "DISK MB/s",
        "NET Mbps",
        "ERRORS",
        "ALERTS"
    )
}

/// One aligned table row; a field missing from the document shows as `-`.
fn row(w: &Value) -> String {
    let kpis = &w["kpis"];
    let num = |v: &Value, decimals: usize| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{x:.decimals$}"))
    };
    let end = w["window_end"]
        .as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        .map_or("-".to_string(), crate::plot::stamp);
    let duration = w["window_duration_s"]
        .as_f64()
        .map_or("-".to_string(), |d| {
            if d < 10.0 {
                format!("{d:.3}s")
            } else {
                format!("{d:.1}s")
            }
        });
    let alerts = w["alerts"].as_array().map_or(0, Vec::len);
    format!(
        "{:<19}  {:>9}  {:>4}  {:>7}  {:>6}  {:>6}  {:>9}  {:>8}  {:>6}  {:>6}",
        end,
        duration,
        w["message_count"]
            .as_i64()
            .map_or("-".into(), |n| n.to_string()),
        num(&kpis["messages_per_second"], 2),
        num(&kpis["avg_cpu_percent"], 2),
        num(&kpis["avg_memory_percent"], 2),
        num(&kpis["avg_disk_io_mbps"], 2),
        num(&kpis["avg_network_mbps"], 2),
        kpis["total_error_count"]
            .as_i64()
            .map_or("-".into(), |n| n.to_string()),
        alerts
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{database_hint, diagnose, DatabaseTrouble};
    use crate::redact::redact_uri;
    use crate::store::{StoreError, StoreErrorKind};

    fn failure(permanent: bool, detail: &str) -> StoreError {
        StoreError {
            operation: "KPI read",
            detail: detail.into(),
            kind: if permanent {
                StoreErrorKind::Permanent
            } else {
                StoreErrorKind::Transient
            },
        }
    }

    #[test]
    fn an_authentication_failure_points_at_the_credentials_not_at_the_server() {
        // What the driver says, as the store passes it on (the first line of its error); the
        // driver's `ErrorKind` variants cannot be built outside it, so these are its words.
        for detail in [
            "Kind: SCRAM failure: Authentication failed., labels: {}, source: None",
            "Kind: SCRAM failure: Unsupported authentication mechanism \"SCRAM-SHA-1\".",
            "Kind: PLAIN failure: invalid server response, labels: {}",
            "Kind: MONGODB-X509 failure: unknown user, labels: {}",
        ] {
            assert_eq!(
                diagnose(&failure(true, detail)),
                DatabaseTrouble::Credentials,
                "{detail}"
            );
        }
        let hint = database_hint(
            DatabaseTrouble::Credentials,
            &redact_uri("mongodb://metrics:Kpis-Unit-Pw@db:27017/"),
        );
        assert!(
            hint.contains("check the user and password in MONGODB_URI"),
            "{hint}"
        );
        assert!(
            !hint.contains("Kpis-Unit-Pw") && !hint.contains("running"),
            "{hint}"
        );
    }

    #[test]
    fn no_answer_asks_whether_the_server_runs_and_other_permanent_errors_name_the_options() {
        let timeout = "Kind: Server selection timeout: No available servers. Topology: { Type: \
                       Unknown, Servers: [ { Address: 127.0.0.1:1, Type: Unknown, Error: Kind: \
                       I/O error: Connection refused (os error 111) } ] }, labels: {}";
        assert_eq!(
            diagnose(&failure(false, timeout)),
            DatabaseTrouble::Unreachable
        );
        assert!(database_hint(DatabaseTrouble::Unreachable, "mongodb://h").contains("running"));
        let tls = "Kind: An invalid TLS configuration was provided: no certificate, labels: {}";
        assert_eq!(diagnose(&failure(true, tls)), DatabaseTrouble::Settings);
        assert!(database_hint(DatabaseTrouble::Settings, "mongodb://h").contains("options"));
    }

    #[test]
    fn rows_align_with_the_header_and_show_missing_rates() {
        let w = serde_json::json!({
            "window_end": "2026-11-22T18:00:40.5Z",
            "window_duration_s": 40.07,
            "message_count": 20,
            "kpis": {
                "avg_cpu_percent": 41.234, "avg_memory_percent": 55.1, "avg_disk_io_mbps": 24.8,
                "avg_network_mbps": 50.12, "total_error_count": 3, "messages_per_second": null
            },
            "alerts": [{}, {}]
        });
        let r = row(&w);
        assert_eq!(r.len(), header().len());
        assert!(
            r.starts_with("2026-11-22 18:00:40      40.1s    20        -   41.23"),
            "{r}"
        );
        assert!(r.ends_with("       3       2"), "{r}");
    }
}
