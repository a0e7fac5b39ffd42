//! The KPI windows recomputed from the raw documents they cover, taking nothing from a window
//! but which messages it names (its offset spans): its processing-time span from the messages'
//! `received_at`, its rate from that span, its per-server KPIs and its alerts from their
//! metrics. [`check_windows_against_raw`] calls [`check_window`] for every window
//! and [`check_stream_order`] for every stream; a test that ran one consumer once on a fresh
//! group also calls [`check_one_run`], where every instant is known exactly.
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use mongodb::bson::{doc, Bson, DateTime, Document};

use super::messages::{close, f64_of, kafka_position};
use super::services::Sandbox;

/// A window's processing-time span as stored, and the `received_at` span of its messages.
#[derive(Debug, Clone, Copy)]
pub struct WindowTimes {
    pub seq: i64,
    pub start: DateTime,
    pub end: DateTime,
    /// The earliest and latest `received_at` among the window's messages.
    pub earliest: DateTime,
    pub latest: DateTime,
}

fn date_of(d: &Document, key: &str) -> DateTime {
    *d.get_datetime(key)
        .unwrap_or_else(|e| panic!("{key} of {:?} is not a date: {e}", d.get("_id")))
}

fn seconds_between(from: DateTime, to: DateTime) -> f64 {
    (to.timestamp_millis() - from.timestamp_millis()) as f64 / 1000.0
}

/// Recomputes each window's KPIs from the raw documents it covers (per topic incarnation and
/// partition, the offsets first_offset..=last_offset) and checks every stored figure; also that
/// no message is in two windows, that the windows' offset spans of one partition are disjoint,
/// and that each partition's message_count is what its span holds in raw. Returns the number
/// of windows.
pub fn check_windows_against_raw(sb: &Sandbox, window_size: usize) -> usize {
    let raw = sb.docs("raw", doc! {}, doc! {});
    let by_position: HashMap<(String, i32, i64), &Document> =
        raw.iter().map(|d| (kafka_position(d), d)).collect();
    let windows = sb.docs("kpis", doc! {}, doc! {"seq": 1});
    let mut counted: HashSet<(String, i32, i64)> = HashSet::new();
    let mut spans: HashMap<(String, i32), Vec<(i64, i64)>> = HashMap::new();
    let mut streams: HashMap<String, Vec<WindowTimes>> = HashMap::new();
    for w in &windows {
        let kafka = w.get_document("kafka").unwrap();
        let topic_id = kafka.get_str("topic_id").unwrap().to_string();
        let mut members = Vec::new();
        for p in kafka.get_array("partitions").unwrap() {
            let p = p.as_document().unwrap();
            let partition = p.get_i32("partition").unwrap();
            let (first, last) = (
                p.get_i64("first_offset").unwrap(),
                p.get_i64("last_offset").unwrap(),
            );
            assert!(
                first <= last,
                "window {:?}: span {first}..{last}",
                w.get("_id")
            );
            spans
                .entry((topic_id.clone(), partition))
                .or_default()
                .push((first, last));
            let mut in_span = 0;
            for offset in first..=last {
                let key = (topic_id.clone(), partition, offset);
                if let Some(d) = by_position.get(&key) {
                    assert!(
                        counted.insert(key),
                        "message {topic_id}/{partition}/{offset} in two windows"
                    );
                    members.push(*d);
                    in_span += 1;
                }
            }
            assert_eq!(
                p.get_i32("message_count").unwrap(),
                in_span,
                "window {:?} partition {partition}: message_count vs raw in {first}..={last}",
                w.get("_id")
            );
        }
        assert_eq!(
            members.len(),
            window_size,
            "window {:?} members",
            w.get("_id")
        );
        assert_eq!(w.get_i32("message_count").unwrap() as usize, window_size);
        // Times, rate, per-server KPIs and alerts, recomputed from the raw documents.
        let times = check_window(w, &members);
        streams
            .entry(w.get_str("stream").unwrap().to_string())
            .or_default()
            .push(times);
        let n = members.len() as f64;
        for (field, kpi) in [
            ("cpu_percent", "avg_cpu_percent"),
            ("memory_percent", "avg_memory_percent"),
            ("disk_io_mbps", "avg_disk_io_mbps"),
            ("network_mbps", "avg_network_mbps"),
        ] {
            let mean = members
                .iter()
                .map(|d| f64_of(d, &format!("metrics.{field}")))
                .sum::<f64>()
                / n;
            let stored = f64_of(w, &format!("kpis.{kpi}"));
            assert!(
                close(mean, stored),
                "{kpi}: stored {stored}, recomputed {mean}"
            );
        }
        let errors: i64 = members
            .iter()
            .map(|d| f64_of(d, "metrics.error_count") as i64)
            .sum();
        assert_eq!(
            w.get_document("kpis")
                .unwrap()
                .get_i64("total_error_count")
                .unwrap(),
            errors
        );
        let duration = f64_of(w, "window_duration_s");
        match w.get_document("kpis").unwrap().get("messages_per_second") {
            Some(Bson::Double(rate)) => assert!(close(*rate, n / duration)),
            Some(Bson::Null) => assert_eq!(duration, 0.0),
            other => panic!("messages_per_second: {other:?}"),
        }
        let max_cpu = members
            .iter()
            .map(|d| f64_of(d, "metrics.cpu_percent"))
            .fold(0.0, f64::max);
        assert_eq!(f64_of(w, "kpis.max_cpu_percent"), max_cpu);
        let alerts = members
            .iter()
            .map(|d| {
                [
                    f64_of(d, "metrics.cpu_percent") >= 90.0,
                    f64_of(d, "metrics.memory_percent") >= 90.0,
                    f64_of(d, "metrics.error_count") >= 3.0,
                ]
                .iter()
                .filter(|x| **x)
                .count()
            })
            .sum::<usize>();
        assert_eq!(w.get_array("alerts").unwrap().len(), alerts);
        let servers: usize = w
            .get_array("servers")
            .unwrap()
            .iter()
            .map(|s| s.as_document().unwrap().get_i32("message_count").unwrap() as usize)
            .sum();
        // Servers beyond those listed (--servers-per-window) are only counted.
        if w.get_i64("servers_omitted").unwrap_or(0) == 0 {
            assert_eq!(servers, window_size);
        } else {
            assert!(servers < window_size);
        }
    }
    for (stream, times) in &mut streams {
        check_stream_order(stream, times);
    }
    for ((topic_id, partition), mut list) in spans {
        list.sort();
        for pair in list.windows(2) {
            assert!(
                pair[0].1 < pair[1].0,
                "windows overlap on {topic_id}/{partition}: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
    windows.len()
}

/// Checks one window against its messages (raw documents, in any order); returns its times
/// for the checks across windows.
pub fn check_window(w: &Document, members: &[&Document]) -> WindowTimes {
    let id = w.get("_id").cloned().unwrap_or(Bson::Null);
    let n = members.len() as f64;
    assert!(!members.is_empty(), "window {id}: no messages");

    // Processing time. A message's `received_at` is the arrival it was first stored at; the
    // window ends at the arrival of its last message, so at or after every one of them, and
    // is stored after it ends. The dates are whole milliseconds, the duration is not.
    let (start, end) = (date_of(w, "window_start"), date_of(w, "window_end"));
    let computed_at = date_of(w, "computed_at");
    let received: Vec<DateTime> = members.iter().map(|d| date_of(d, "received_at")).collect();
    let earliest = *received.iter().min().unwrap();
    let latest = *received.iter().max().unwrap();
    assert!(
        start <= end && end <= computed_at,
        "window {id}: start {start}, end {end}, computed at {computed_at}"
    );
    assert!(
        end >= latest,
        "window {id}: ends at {end}, before its message received at {latest}"
    );
    let span = seconds_between(start, end);
    let duration = f64_of(w, "window_duration_s");
    assert!(
        (duration - span).abs() <= 0.001 + 1e-9,
        "window {id}: window_duration_s {duration}, its dates span {span} s"
    );
    match w.get_document("kpis").unwrap().get("messages_per_second") {
        Some(Bson::Double(rate)) => {
            assert!(
                duration > 0.0 && close(*rate, n / duration),
                "window {id}: {rate} messages/s for {n} messages in {duration} s"
            );
            // The rate's own duration, against the dates (whole milliseconds apart).
            assert!(
                (n / rate - span).abs() <= 0.001 + 1e-9,
                "window {id}: {rate} messages/s means {} s, its dates span {span} s",
                n / rate
            );
        }
        Some(Bson::Null) => assert!(
            duration == 0.0 && start == end,
            "window {id}: no rate, yet it spans {duration} s ({start}..{end})"
        ),
        other => panic!("window {id}: messages_per_second {other:?}"),
    }

    // Event time: the earliest and latest `timestamp_utc` of its messages.
    let events: Vec<DateTime> = members.iter().map(|d| date_of(d, "timestamp")).collect();
    let event_time = w.get_document("event_time").unwrap();
    assert_eq!(
        (date_of(event_time, "first"), date_of(event_time, "last")),
        (*events.iter().min().unwrap(), *events.iter().max().unwrap()),
        "window {id}: event_time"
    );

    let metric = |d: &Document, field: &str| f64_of(d, &format!("metrics.{field}"));
    let max = |field: &str| {
        members
            .iter()
            .map(|d| metric(d, field))
            .fold(f64::NEG_INFINITY, f64::max)
    };
    assert_eq!(
        f64_of(w, "kpis.max_memory_percent"),
        max("memory_percent"),
        "window {id}: max_memory_percent"
    );

    // Per server, by server_id in byte order: the first ones listed, the rest counted.
    let mut by_server: BTreeMap<String, Vec<&Document>> = BTreeMap::new();
    for d in members {
        by_server
            .entry(d.get_str("server_id").unwrap().to_string())
            .or_default()
            .push(d);
    }
    let listed = w.get_array("servers").unwrap();
    let omitted = w.get_i64("servers_omitted").unwrap();
    assert_eq!(
        listed.len() + omitted as usize,
        by_server.len(),
        "window {id}: {} servers listed and {omitted} omitted, its messages come from {}",
        listed.len(),
        by_server.len()
    );
    for (entry, (server, docs)) in listed.iter().zip(&by_server) {
        let entry = entry.as_document().unwrap();
        assert_eq!(entry.get_str("server_id").unwrap(), server, "window {id}");
        assert_eq!(
            entry.get_i32("message_count").unwrap() as usize,
            docs.len(),
            "window {id}: {server}'s messages"
        );
        let k = docs.len() as f64;
        for field in [
            "cpu_percent",
            "memory_percent",
            "disk_io_mbps",
            "network_mbps",
        ] {
            let mean = docs.iter().map(|d| metric(d, field)).sum::<f64>() / k;
            let stored = f64_of(entry, &format!("avg_{field}"));
            assert!(
                close(mean, stored),
                "window {id}: {server}'s avg_{field} stored {stored}, recomputed {mean}"
            );
        }
        let errors: i64 = docs.iter().map(|d| metric(d, "error_count") as i64).sum();
        assert_eq!(
            entry.get_i64("total_error_count").unwrap(),
            errors,
            "window {id}: {server}'s total_error_count"
        );
    }

    // Alerts: every reading at or above its threshold, with its server, value and event time;
    // listed up to a limit in consumption order (which the raw documents do not record across
    // partitions), the rest counted.
    let mut expected: Vec<(String, String, u64, i64)> = Vec::new();
    for d in members {
        for (field, threshold) in [
            ("cpu_percent", 90.0),
            ("memory_percent", 90.0),
            ("error_count", 3.0),
        ] {
            let value = metric(d, field);
            if value >= threshold {
                expected.push((
                    d.get_str("server_id").unwrap().to_string(),
                    field.to_string(),
                    value.to_bits(),
                    date_of(d, "timestamp").timestamp_millis(),
                ));
            }
        }
    }
    let mut stored: Vec<(String, String, u64, i64)> = w
        .get_array("alerts")
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_document().unwrap();
            (
                a.get_str("server_id").unwrap().to_string(),
                a.get_str("metric").unwrap().to_string(),
                f64_of(a, "value").to_bits(),
                date_of(a, "timestamp").timestamp_millis(),
            )
        })
        .collect();
    let alerts_omitted = w.get_i64("alerts_omitted").unwrap() as usize;
    assert_eq!(
        stored.len() + alerts_omitted,
        expected.len(),
        "window {id}: {} alerts listed and {alerts_omitted} omitted, its messages cross {} \
         thresholds",
        stored.len(),
        expected.len()
    );
    expected.sort();
    stored.sort();
    if alerts_omitted == 0 {
        assert_eq!(stored, expected, "window {id}: alerts");
    } else {
        let mut pool = expected.clone();
        for a in &stored {
            let at = pool
                .iter()
                .position(|e| e == a)
                .unwrap_or_else(|| panic!("window {id}: alert {a:?} of no message"));
            pool.remove(at);
        }
    }

    WindowTimes {
        seq: w.get_i64("seq").unwrap(),
        start,
        end,
        earliest,
        latest,
    }
}

/// Windows of one stream never overlap in processing time: each starts at or after the end of
/// the one before (at its end within a run, at a later run's first arrival after a restart).
pub fn check_stream_order(stream: &str, times: &mut [WindowTimes]) {
    times.sort_by_key(|t| t.seq);
    for pair in times.windows(2) {
        assert!(
            pair[1].start >= pair[0].end,
            "stream {stream}: window {} starts at {}, before window {} ended at {}",
            pair[1].seq,
            pair[1].start,
            pair[0].seq,
            pair[0].end
        );
    }
}

/// For a test that ran one consumer, once, on a fresh group, where every message of every
/// window arrived in that run (no replays): every instant is known. Window k of a stream
/// ends at its latest message's arrival; the first starts at its earliest message's
/// arrival, every later one at the end of the one before. Call after
/// `check_windows_against_raw` (which checks what the windows hold).
pub fn check_one_run(sb: &Sandbox) {
    let raw = sb.docs("raw", doc! {}, doc! {});
    let by_position: HashMap<(String, i32, i64), &Document> =
        raw.iter().map(|d| (kafka_position(d), d)).collect();
    let mut streams: BTreeMap<String, Vec<WindowTimes>> = BTreeMap::new();
    for w in sb.docs("kpis", doc! {}, doc! {"seq": 1}) {
        let kafka = w.get_document("kafka").unwrap();
        let topic_id = kafka.get_str("topic_id").unwrap().to_string();
        let mut members = Vec::new();
        for p in kafka.get_array("partitions").unwrap() {
            let p = p.as_document().unwrap();
            let partition = p.get_i32("partition").unwrap();
            for offset in p.get_i64("first_offset").unwrap()..=p.get_i64("last_offset").unwrap() {
                if let Some(d) = by_position.get(&(topic_id.clone(), partition, offset)) {
                    members.push(*d);
                }
            }
        }
        let times = check_window(&w, &members);
        streams
            .entry(w.get_str("stream").unwrap().to_string())
            .or_default()
            .push(times);
    }
    for (stream, times) in streams {
        for (k, t) in times.iter().enumerate() {
            assert_eq!(
                t.end, t.latest,
                "stream {stream} window {}: ends at its last message's arrival",
                t.seq
            );
            let expected_start = if k == 0 { t.earliest } else { times[k - 1].end };
            assert_eq!(
                t.start,
                expected_start,
                "stream {stream} window {}: starts at {}",
                t.seq,
                if k == 0 {
                    "its first message's arrival"
                } else {
                    "the end of the window before"
                }
            );
        }
    }
}
