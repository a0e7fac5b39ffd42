//! The pipeline end to end, against the real broker and database: what the producer sends is
//! stored once, windowed once, and the KPIs match a recomputation from the raw documents.

mod common {
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod mongo_proxy;
    pub mod oracle;
    pub mod process;
    pub mod services;
}

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::kafka_wire::ensure_topic;
use common::kcat::kcat_read_bytes;
use common::mongo_proxy::{mongo_insert_pattern, HoldingProxy};
use common::oracle::{self, check_windows_against_raw};
use common::process::{assert_ok, poll, terminate, text, wait_with_limit};
use common::services::Sandbox;
use mongodb::bson::{doc, Bson};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(120);

/// Every message in the topic: (partition, offset) -> payload, as kcat reads them (an
/// independent client), from the start of each partition to its end.
fn read_topic(sb: &Sandbox) -> BTreeMap<(i32, i64), Vec<u8>> {
    kcat_read_bytes(&sb.brokers, &sb.topic)
        .into_iter()
        .map(|r| ((r.partition, r.offset), r.value.unwrap_or_default()))
        .collect()
}

fn produce(sb: &Sandbox, reports: u32, seed: u64) {
    let out = sb.run(
        &[
            "produce",
            "--count",
            &reports.to_string(),
            "--interval",
            "0",
            "--seed",
            &seed.to_string(),
        ],
        LIMIT,
    );
    assert_ok(&out, "produce");
}

fn consume(sb: &Sandbox, extra: &[&str]) -> String {
    let mut args = vec!["consume", "--exit-when-idle", "3"];
    args.extend_from_slice(extra);
    let out = sb.run(&args, LIMIT);
    assert_ok(&out, "consume");
    text(&out.stderr)
}

#[test]
fn every_produced_message_is_stored_once_and_windowed_once() {
    let sb = Sandbox::new("e2e");
    produce(&sb, 12, 7);
    let log = consume(&sb, &[]);

    let produced: HashSet<String> = read_topic(&sb)
        .values()
        .map(|v| {
            serde_json::from_slice::<Value>(v).unwrap()["message_uuid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(produced.len(), 60, "12 reports of 5 servers");
    let raw = sb.docs("raw", doc! {}, doc! {});
    let stored: Vec<String> = raw
        .iter()
        .map(|d| d.get_str("message_uuid").unwrap().to_string())
        .collect();
    assert_eq!(stored.len(), 60, "each message stored exactly once");
    assert_eq!(stored.iter().cloned().collect::<HashSet<_>>(), produced);

    // The raw document is the message as sent, plus where and when it was read.
    let first = &raw[0];
    for field in [
        "server_id",
        "timestamp_utc",
        "metrics",
        "message_uuid",
        "timestamp",
        "received_at",
        "kafka",
    ] {
        assert!(
            first.contains_key(field),
            "raw document lacks {field}: {first}"
        );
    }
    assert!(matches!(first.get("timestamp"), Some(Bson::DateTime(_))));

    assert_eq!(
        check_windows_against_raw(&sb, 20),
        3,
        "floor(60 / 20) windows"
    );
    // One run: every window's start and end are its messages' arrivals.
    oracle::check_one_run(&sb);
    assert_eq!(sb.count("dlq"), 0);
    assert!(log.contains("window 0 stored: 20 messages"), "{log}");

    // kpis show: a table for people, JSON lines for programs.
    let table = sb.run(&["kpis", "show", "--mongodb-uri", &sb.mongodb_uri], LIMIT);
    assert_ok(&table, "kpis show");
    let table = text(&table.stdout);
    assert!(table.starts_with("WINDOW END (UTC)"), "{table}");
    assert_eq!(table.lines().count(), 4, "header and 3 windows:\n{table}");
    let json = sb.run(&["kpis", "show", "--json", "--limit", "2"], LIMIT);
    assert_ok(&json, "kpis show --json");
    let lines: Vec<Value> = text(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], json!(2), "newest first");
    assert_eq!(lines[0]["message_count"], json!(20));
    assert!(lines[0]["kpis"]["avg_cpu_percent"].is_f64());
}

/// The window checks are not vacuous: each kind of wrong window a consumer could store, with
/// its other figures kept consistent with it (a skewed duration with the rate that matches
/// it, say), is reported; each one is undone before the next.
#[test]
fn the_window_checks_notice_each_kind_of_wrong_window() {
    let sb = Sandbox::new("oracle");
    produce(&sb, 16, 3); // 80 messages, 4 windows
    consume(&sb, &[]);
    let check = || {
        check_windows_against_raw(&sb, 20);
        oracle::check_one_run(&sb);
    };
    check();
    let kpis = sb.db().collection::<mongodb::bson::Document>("kpis");
    let windows = sb.docs("kpis", doc! {}, doc! {"seq": 1});
    assert_eq!(windows.len(), 4);
    let with_alerts = windows
        .iter()
        .find(|w| !w.get_array("alerts").unwrap().is_empty())
        .expect("a window with alerts (seed 3 makes some)")
        .clone();
    let second = windows[1].clone();
    let ms =
        |w: &mongodb::bson::Document, key: &str| w.get_datetime(key).unwrap().timestamp_millis();
    let date = mongodb::bson::DateTime::from_millis;
    type Tamper = Box<dyn Fn(&mut mongodb::bson::Document)>;
    let tamperings: Vec<(&str, &mongodb::bson::Document, Tamper)> = vec![
        (
            "a duration 25 % long, with the rate that matches it",
            &second,
            Box::new(|w| {
                let d = w.get_f64("window_duration_s").unwrap() * 1.25 + 0.01;
                w.insert("window_duration_s", d);
                w.get_document_mut("kpis")
                    .unwrap()
                    .insert("messages_per_second", 20.0 / d);
            }),
        ),
        (
            "a window ending a second late, its duration and rate to match",
            &second,
            Box::new(move |w| {
                w.insert("window_end", date(ms(w, "window_end") + 1000));
                let d = w.get_f64("window_duration_s").unwrap() + 1.0;
                w.insert("window_duration_s", d);
                w.get_document_mut("kpis")
                    .unwrap()
                    .insert("messages_per_second", 20.0 / d);
            }),
        ),
        (
            "a window starting a second early, its duration and rate to match",
            &second,
            Box::new(move |w| {
                w.insert("window_start", date(ms(w, "window_start") - 1000));
                let d = w.get_f64("window_duration_s").unwrap() + 1.0;
                w.insert("window_duration_s", d);
                w.get_document_mut("kpis")
                    .unwrap()
                    .insert("messages_per_second", 20.0 / d);
            }),
        ),
        (
            "a server's average off by one",
            &second,
            Box::new(|w| {
                let servers = w.get_array_mut("servers").unwrap();
                let s = servers[0].as_document_mut().unwrap();
                let v = s.get_f64("avg_cpu_percent").unwrap() + 1.0;
                s.insert("avg_cpu_percent", v);
            }),
        ),
        (
            "an alert of another server",
            &with_alerts,
            Box::new(|w| {
                let alerts = w.get_array_mut("alerts").unwrap();
                let a = alerts[0].as_document_mut().unwrap();
                a.insert("server_id", "nobody");
            }),
        ),
        (
            "an alert with another value",
            &with_alerts,
            Box::new(|w| {
                let alerts = w.get_array_mut("alerts").unwrap();
                let a = alerts[0].as_document_mut().unwrap();
                let v = a.get_f64("value").unwrap() + 0.5;
                a.insert("value", v);
            }),
        ),
        (
            "a wrong max_memory_percent",
            &second,
            Box::new(|w| {
                let k = w.get_document_mut("kpis").unwrap();
                let v = k.get_f64("max_memory_percent").unwrap() - 0.5;
                k.insert("max_memory_percent", v);
            }),
        ),
        (
            "an event time a second early",
            &second,
            Box::new(move |w| {
                let e = w.get_document_mut("event_time").unwrap();
                let first = e.get_datetime("first").unwrap().timestamp_millis();
                e.insert("first", date(first - 1000));
            }),
        ),
    ];
    eprintln!(
        "window-check self-test: {} violations are expected to be reported next",
        tamperings.len()
    );
    for (what, original, tamper) in tamperings {
        let mut wrong = original.clone();
        tamper(&mut wrong);
        let filter = doc! {"_id": original.get("_id").unwrap()};
        kpis.replace_one(filter.clone(), &wrong).run().unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
        kpis.replace_one(filter, original).run().unwrap();
        assert!(outcome.is_err(), "the window checks missed {what}");
    }
    check();
}

#[test]
fn a_window_lists_as_many_servers_as_asked_and_counts_the_rest() {
    let sb = Sandbox::new("perserver");
    produce(&sb, 8, 11);
    consume(&sb, &["--servers-per-window", "2"]);
    let raw = sb.docs("raw", doc! {}, doc! {});
    assert_eq!(raw.len(), 40, "8 reports of 5 servers");
    let windows = sb.docs("kpis", doc! {}, doc! {"seq": 1});
    assert_eq!(windows.len(), 2);
    for w in &windows {
        let servers = w.get_array("servers").unwrap();
        let listed: Vec<&str> = servers
            .iter()
            .map(|s| s.as_document().unwrap().get_str("server_id").unwrap())
            .collect();
        let omitted = w.get_i64("servers_omitted").unwrap();
        // The servers of the window's messages, from the raw documents its offset spans cover.
        let mut ids: Vec<&str> = Vec::new();
        for span in w
            .get_document("kafka")
            .unwrap()
            .get_array("partitions")
            .unwrap()
        {
            let span = span.as_document().unwrap();
            let p = span.get_i32("partition").unwrap();
            let offsets =
                span.get_i64("first_offset").unwrap()..=span.get_i64("last_offset").unwrap();
            for d in &raw {
                let k = d.get_document("kafka").unwrap();
                if k.get_i32("partition").unwrap() == p
                    && offsets.contains(&k.get_i64("offset").unwrap())
                {
                    ids.push(d.get_str("server_id").unwrap());
                }
            }
        }
        assert_eq!(ids.len(), 20, "{w}");
        ids.sort_unstable();
        ids.dedup();
        assert!(
            ids.len() > 2,
            "a window of 20 holds more than two servers: {ids:?}"
        );
        assert_eq!(listed, ids[..2], "the first two by id: {w}");
        assert_eq!(omitted as usize, ids.len() - 2, "{w}");
        // The window's own KPIs still cover all 20 messages.
        assert_eq!(w.get_i32("message_count").unwrap(), 20);
        assert!(w
            .get_document("kpis")
            .unwrap()
            .get_f64("avg_cpu_percent")
            .is_ok());
    }
    check_windows_against_raw(&sb, 20);

    // And none at all: an empty list, every server counted.
    let none = Sandbox::new("noserver");
    produce(&none, 4, 11);
    consume(&none, &["--servers-per-window", "0"]);
    let windows = none.docs("kpis", doc! {}, doc! {});
    assert_eq!(windows.len(), 1);
    assert!(windows[0].get_array("servers").unwrap().is_empty());
    assert_eq!(windows[0].get_i64("servers_omitted").unwrap(), 5);
}

#[test]
fn bad_input_is_dead_lettered_with_its_reason_and_the_stream_goes_on() {
    let sb = Sandbox::new("badinput");
    let good = |n: u32| {
        json!({
            "server_id": format!("web{n:02}"),
            "timestamp_utc": "2026-11-22T18:00:00.123456+00:00",
            "metrics": {"cpu_percent": 10.0 + (n % 50) as f64, "memory_percent": 50, "disk_io_mbps": 1.5,
                        "network_mbps": 20.25, "error_count": n % 4},
            "message_uuid": format!("uuid-{n}"),
            "extra_field": {"kept": n}
        })
    };
    let bytes = |v: Value| serde_json::to_vec(&v).unwrap();
    let with = |n: u32, f: &dyn Fn(&mut Value)| {
        let mut v = good(n);
        f(&mut v);
        bytes(v)
    };
    let mut payloads: Vec<(Vec<u8>, Option<&str>)> = Vec::new();
    let naive = with(100, &|v| {
        v["timestamp_utc"] = json!("2026-11-22T18:00:00.5")
    });
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (vec![0xff, 0xfe, 0x00], "not_utf8"),
        (b"{\"server_id\": ".to_vec(), "invalid_json"),
        (b"[1, 2, 3]".to_vec(), "not_an_object"),
        (
            with(200, &|v| {
                v.as_object_mut().unwrap().remove("server_id");
            }),
            "bad_server_id",
        ),
        (with(201, &|v| v["server_id"] = json!("")), "bad_server_id"),
        (
            with(202, &|v| v["timestamp_utc"] = json!("ayer")),
            "bad_timestamp",
        ),
        (
            with(203, &|v| {
                v.as_object_mut().unwrap().remove("metrics");
            }),
            "bad_metrics",
        ),
        (
            with(204, &|v| v["metrics"]["cpu_percent"] = json!(150.0)),
            "bad_metrics",
        ),
        (
            with(205, &|v| v["metrics"]["disk_io_mbps"] = json!(-1)),
            "bad_metrics",
        ),
        (
            with(206, &|v| v["metrics"]["error_count"] = json!(1.5)),
            "bad_metrics",
        ),
        (
            with(207, &|v| v["metrics"]["network_mbps"] = json!("fast")),
            "bad_metrics",
        ),
        (
            with(208, &|v| {
                v.as_object_mut().unwrap().remove("message_uuid");
            }),
            "bad_message_uuid",
        ),
        // The same event again, from another position: a duplicate, not a second copy.
        (bytes(good(1)), "duplicate_message_uuid"),
    ];
    // Interleave: good, bad, good, bad, ... then the naive-timestamp message (valid).
    let mut n = 0;
    for (payload, reason) in &bad {
        n += 1;
        payloads.push((bytes(good(n)), None));
        payloads.push((payload.clone(), Some(reason)));
    }
    payloads.push((naive, None));
    let valid = payloads.iter().filter(|(_, r)| r.is_none()).count();
    assert_eq!(valid, 14);
    sb.send_raw(
        0,
        &payloads.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
    );

    consume(&sb, &["--window-size", "5"]);

    assert_eq!(
        sb.count("raw") as usize,
        valid,
        "every valid message stored"
    );
    let stored = sb.docs("raw", doc! {"message_uuid": "uuid-3"}, doc! {});
    assert_eq!(
        stored[0]
            .get_document("extra_field")
            .unwrap()
            .get_i32("kept")
            .unwrap(),
        3,
        "unknown fields kept"
    );
    let naive = sb.docs("raw", doc! {"message_uuid": "uuid-100"}, doc! {});
    let utc = time::macros::datetime!(2026-11-22 18:00:00.5 UTC);
    assert_eq!(
        naive[0]
            .get_datetime("timestamp")
            .unwrap()
            .timestamp_millis(),
        (utc.unix_timestamp_nanos() / 1_000_000) as i64,
        "a naive timestamp is UTC"
    );

    let dlq = sb.docs("dlq", doc! {}, doc! {"kafka.offset": 1});
    assert_eq!(
        dlq.len(),
        bad.len(),
        "every invalid message dead-lettered once"
    );
    for (letter, (payload, reason)) in dlq.iter().zip(&bad) {
        assert_eq!(letter.get_str("reason_code").unwrap(), *reason, "{letter}");
        assert!(!letter.get_str("reason").unwrap().is_empty());
        let kafka = letter.get_document("kafka").unwrap();
        assert_eq!(kafka.get_str("topic").unwrap(), sb.topic);
        assert_eq!(kafka.get_i32("partition").unwrap(), 0);
        match letter.get("payload").unwrap() {
            Bson::String(s) => assert_eq!(s.as_bytes(), payload.as_slice()),
            Bson::Binary(b) => assert_eq!(&b.bytes, payload),
            other => panic!("payload {other:?}"),
        }
    }
    let dup = &dlq[bad.len() - 1];
    assert_eq!(dup.get_str("reason").unwrap(), "duplicate message_uuid");
    assert_eq!(
        dup.get_document("duplicate_of")
            .unwrap()
            .get_i64("offset")
            .unwrap(),
        0
    );

    assert_eq!(check_windows_against_raw(&sb, 5), valid / 5);
    oracle::check_one_run(&sb);
}

#[test]
fn a_second_run_on_the_same_group_stores_nothing_again_and_completes_the_open_window() {
    let sb = Sandbox::new("restart");
    produce(&sb, 5, 11); // 25 messages: one window of 20, 5 in the open window
    consume(&sb, &[]);
    assert_eq!((sb.count("raw"), sb.count("kpis")), (25, 1));

    let log = consume(&sb, &[]);
    assert_eq!(
        (sb.count("raw"), sb.count("kpis")),
        (25, 1),
        "second run stores nothing new"
    );
    assert!(
        log.contains("(0 stored, 5 replayed, 0 dead-lettered)"),
        "{log}"
    );

    produce(&sb, 3, 12); // 15 more: the 5 replayed + 15 new close window 1
    consume(&sb, &[]);
    assert_eq!((sb.count("raw"), sb.count("kpis")), (40, 2));
    assert_eq!(check_windows_against_raw(&sb, 20), 2);
}

/// Runs `consume` twice on `sb`'s topic of 200 messages, SIGKILLed mid-step each time: first
/// between storing the raw messages and staging their windows, then between the commit and
/// the windows' publication. Returns the proxies still holding the killed runs' writes.
fn killed_in_staging_then_in_publication(sb: &Sandbox) -> Vec<HoldingProxy> {
    produce(sb, 40, 21); // 200 messages, 20 windows of 10
                         // The 200 messages are one step, stored well within a poll's interval: a kill timed by
                         // watching the database would land after the consumer finished. So a proxy in front of
                         // the database holds the consumer's next write into one collection, and the consumer is
                         // SIGKILLed while that write is held. The held writes are let go only once the last run
                         // is checked, as writes a killed process had already sent: they land late, and change
                         // nothing.
    let upstream = sb.database_address();
    let mut proxies = Vec::new();
    for (name, held) in [("staging", "kpis_staged"), ("publication", "kpis")] {
        let proxy = HoldingProxy::start(&upstream, mongo_insert_pattern(held));
        proxy.hold(true);
        let uri = format!("mongodb://{}/?directConnection=true", proxy.addr);
        let mut consumer = sb.spawn(
            &format!("consume-killed-in-{name}"),
            &["consume", "--window-size", "10", "--mongodb-uri", &uri],
        );
        poll(LIMIT, Duration::from_millis(20), || {
            (proxy.held() > 0).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "the consumer never wrote into {held}: {}",
                consumer.log_tail(30)
            )
        });
        assert!(consumer.running(), "{}", consumer.log_tail(30));
        consumer.child.kill().unwrap(); // SIGKILL while the write is held
        consumer.child.wait().unwrap();
        proxies.push(proxy);
        // The kill landed mid-step: raw messages are in, no window is published.
        let (raw, kpis) = (sb.count("raw"), sb.count("kpis"));
        assert!(
            raw > 0 && kpis == 0,
            "after the kill in {name}: {raw} raw, {kpis} windows: {}",
            consumer.log_tail(30)
        );
    }
    assert!(
        sb.count("kpis_staged") > 0,
        "the second run staged windows (and committed) before it was killed"
    );
    proxies
}

/// After [`killed_in_staging_then_in_publication`]: a last run publishes the windows the
/// second committed, from their staged copies, and every message is counted once; also once
/// the killed runs' held writes have landed.
fn last_run_publishes_the_staged_windows(sb: &Sandbox, proxies: Vec<HoldingProxy>) {
    let log = consume(sb, &["--window-size", "10"]);
    let check = || {
        assert_eq!(sb.count("raw"), 200, "{log}");
        assert_eq!(
            sb.count("dlq"),
            0,
            "nothing read twice from another position: {log}"
        );
        assert_eq!(check_windows_against_raw(sb, 10), 20, "{log}");
    };
    check();
    drop(proxies);
    std::thread::sleep(Duration::from_secs(1));
    check();
}

#[test]
fn a_killed_consumer_loses_nothing_and_doubles_nothing() {
    let sb = Sandbox::new("killed");
    let proxies = killed_in_staging_then_in_publication(&sb);
    // One staged document per step, its windows compressed: the 20 windows of the one step.
    let staged = sb.docs("kpis_staged", doc! {}, doc! {"seq": 1});
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert_eq!(staged[0].get_i64("windows"), Ok(20), "{:?}", staged[0]);
    last_run_publishes_the_staged_windows(&sb, proxies);
}

#[test]
fn windows_staged_by_the_version_before_chunks_are_published_after_an_upgrade() {
    let sb = Sandbox::new("stagedold");
    let proxies = killed_in_staging_then_in_publication(&sb);
    // Rewrite what the killed run staged as `1500b90` and earlier staged it: a document per
    // window, `{token}#{seq}`, the KPI document as uncompressed BSON in `window`.
    let staged = sb.db().collection::<mongodb::bson::Document>("kpis_staged");
    let chunks = sb.docs("kpis_staged", doc! {}, doc! {"seq": 1});
    let mut legacy = Vec::new();
    for chunk in &chunks {
        let token = chunk.get_str("token").unwrap();
        let packed = chunk.get_binary_generic("bson_zstd").unwrap();
        let bson = zstd::stream::decode_all(&packed[..]).unwrap();
        let mut rest = &bson[..];
        while !rest.is_empty() {
            let len = i32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let window = mongodb::bson::Document::from_reader(&rest[..len]).unwrap();
            let seq = window.get_i64("seq").unwrap();
            legacy.push(doc! {
                "_id": format!("{token}#{seq}"),
                "token": token,
                "seq": seq,
                "window_id": window.get_str("_id").unwrap(),
                "staged_at": chunk.get_datetime("staged_at").unwrap(),
                "window": mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: rest[..len].to_vec(),
                },
            });
            rest = &rest[len..];
        }
    }
    assert_eq!(
        legacy.len(),
        20,
        "the killed run staged the step's 20 windows"
    );
    staged.delete_many(doc! {}).run().unwrap();
    staged.insert_many(&legacy).run().unwrap();
    last_run_publishes_the_staged_windows(&sb, proxies);
    let left = sb.docs("kpis_staged", doc! {"window": {"$exists": true}}, doc! {});
    assert!(left.is_empty(), "published, then forgotten: {left:?}");
}

#[test]
fn sigterm_stops_the_consumer_cleanly_and_the_password_never_shows() {
    let sb = Sandbox::new("sigterm");
    let uri = "mongodb://metrics:TopSecret-42@127.0.0.1:1/?serverSelectionTimeoutMS=500";
    let child = sb
        .command(&["consume", "--mongodb-uri", uri])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    terminate(&child);
    let out = wait_with_limit(child, Duration::from_secs(15));
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("ERROR"),
        "an unreachable database is logged: {log}"
    );
    assert!(log.contains("retrying in"), "{log}");
    assert!(!log.contains("TopSecret-42"), "{log}");
    assert!(log.contains("metrics:****@127.0.0.1:1"), "{log}");
}

#[test]
fn the_producer_keeps_reports_while_kafka_is_down_and_stops_on_sigterm() {
    let sb = Sandbox::new("proddown");
    let child = sb
        .command(&[
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--interval",
            "0.2",
            "--drain-timeout",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let stopped = Instant::now();
    terminate(&child);
    let out = wait_with_limit(child, Duration::from_secs(10));
    let drained_for = stopped.elapsed();
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("ERROR") && log.contains("retrying in"),
        "{log}"
    );
    // The reports already made are retried for the drain period, then counted as lost.
    assert!(log.contains("stopping: sending the"), "{log}");
    assert!(
        log.contains("could not be sent within the drain period"),
        "{log}"
    );
    assert!(drained_for >= Duration::from_secs(2), "{drained_for:?}");
    assert!(log.contains("producer stopped:"), "{log}");
    assert!(log.contains("0 messages sent"), "{log}");
}

#[test]
fn kpis_show_is_friendly_when_empty_and_quick_when_unreachable() {
    let sb = Sandbox::new("kpisshow");
    let out = sb.run(&["kpis", "show"], LIMIT);
    assert_ok(&out, "kpis show on an empty collection");
    assert!(
        text(&out.stdout).starts_with("No KPI windows yet"),
        "{}",
        text(&out.stdout)
    );

    let started = Instant::now();
    let out = sb
        .command(&["kpis", "show"])
        .env_remove("MONGODB_URI")
        .env(
            "CONNECTION_STRING",
            "mongodb://reader:Hidden-99@127.0.0.1:1",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fails within about 5 s"
    );
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("127.0.0.1:1"), "the alias was used: {err}");
    assert!(!err.contains("Hidden-99"), "{err}");
}

#[test]
fn keys_land_where_librdkafka_murmur2_puts_them() {
    let sb = Sandbox::new("murmur");
    produce(&sb, 1, 3);
    let ours: BTreeMap<String, i32> = read_topic(&sb)
        .iter()
        .map(|((p, _), v)| {
            let m: Value = serde_json::from_slice(v).unwrap();
            (m["server_id"].as_str().unwrap().to_string(), *p)
        })
        .collect();
    assert_eq!(ours.len(), 5);

    // An independent client, told to partition like Java, writes the same keys elsewhere.
    let other = format!("{}-kcat", sb.topic);
    ensure_topic(&sb.brokers, &other);
    let input: String = ours.keys().map(|k| format!("{k}:x\n")).collect();
    let mut kcat = std::process::Command::new("kcat")
        .args([
            "-b",
            &sb.brokers,
            "-P",
            "-t",
            &other,
            "-K",
            ":",
            "-X",
            "partitioner=murmur2_random",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(kcat.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    drop(kcat.stdin.take());
    assert!(kcat.wait().unwrap().success());
    let read = std::process::Command::new("kcat")
        .args(["-b", &sb.brokers, "-C", "-t", &other, "-e", "-f", "%k %p\n"])
        .output()
        .unwrap();
    let theirs: BTreeMap<String, i32> = text(&read.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, p)| (k.to_string(), p.parse().unwrap()))
        .collect();
    let _ = common::kafka_wire::delete_topic(&sb.brokers, &other);
    assert_eq!(ours, theirs);
}

#[test]
fn consumers_of_one_group_split_the_partitions_between_them() {
    let sb = Sandbox::new("split");
    produce(&sb, 20, 5); // 100 messages on partitions 0 and 1 (the default fleet's keys)
    let spawn = |parts: &str| {
        sb.command(&["consume", "--exit-when-idle", "3", "--partitions", parts])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("0"), spawn("1,2"));
    let (a, b) = (wait_with_limit(a, LIMIT), wait_with_limit(b, LIMIT));
    assert_ok(&a, "consumer of partition 0");
    assert_ok(&b, "consumer of partitions 1,2");
    assert_eq!(sb.count("raw"), 100, "together they stored everything once");

    let per_partition = |p: i32| sb.docs("raw", doc! {"kafka.partition": p}, doc! {}).len();
    let expected = per_partition(0) / 20 + (per_partition(1) + per_partition(2)) / 20;
    let windows = sb.docs("kpis", doc! {}, doc! {});
    assert_eq!(windows.len(), expected);
    let streams: HashSet<&str> = windows
        .iter()
        .map(|w| w.get_str("stream").unwrap())
        .collect();
    assert!(
        streams
            .iter()
            .all(|s| s.ends_with("/0") || s.ends_with("/1,2")),
        "{streams:?}"
    );

    let out = sb.run(&["consume", "--partitions", "7"], LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("has no partition 7"));
}
