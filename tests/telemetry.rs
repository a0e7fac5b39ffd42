//! `--metrics-addr`: `/metrics` scraped during a real run and read by an independent parser
//! (Python's prometheus_client) agrees with the database and with `status`; `/readyz` and
//! `/healthz` answer; an address that cannot be served is a setting error (exit 2).

mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod process;
    pub mod scrape;
    pub mod services;
}

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use common::process::{assert_ok, poll, text};
use common::scrape::{free_port, http_get, scrape, value, Sample};
use common::services::Sandbox;
use mongodb::bson::{doc, Document};

fn counter(samples: &[Sample], name: &str) -> f64 {
    value(samples, name, &[]).unwrap_or_else(|| panic!("no sample {name}"))
}

/// Each `metricsctl_consumer_partition_<what>` gauge, by partition.
fn per_partition(samples: &[Sample], what: &str) -> BTreeMap<i64, i64> {
    let name = format!("metricsctl_consumer_partition_{what}");
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| {
            (
                s.labels["partition"].parse().expect("partition"),
                s.value as i64,
            )
        })
        .collect()
}

#[test]
fn metrics_agree_with_the_database_and_with_status() {
    let sb = Sandbox::new("telemetry");
    // 30 reports of the 5 default servers (partitions 0 and 1), and two records that are no
    // metric at all (partition 2), dead-lettered with their reason codes.
    assert_ok(
        &sb.run(
            &["produce", "--count", "30", "--interval", "0"],
            Duration::from_secs(60),
        ),
        "produce",
    );
    sb.send_raw(2, &[b"not json".to_vec(), br#"{"server_id": 7}"#.to_vec()]);
    let total = 30 * 5 + 2;

    let addr = format!("127.0.0.1:{}", free_port());
    let mut consumer = sb.spawn(
        "consume",
        &[
            "consume",
            "--metrics-addr",
            &addr,
            "--exit-when-idle",
            "600",
        ],
    );
    let caught_up = poll(Duration::from_secs(90), Duration::from_millis(250), || {
        let samples = scrape(&addr)?;
        let read = value(&samples, "metricsctl_consumer_messages_read_total", &[])?;
        (read as u64 >= total).then_some(samples)
    });
    let samples = caught_up.unwrap_or_else(|| {
        panic!(
            "the consumer did not read {total} messages; log tail:\n{}",
            consumer.log_tail(20)
        )
    });
    assert_eq!(http_get(&addr, "/readyz").map(|r| r.0), Some(200));
    assert_eq!(http_get(&addr, "/healthz").map(|r| r.0), Some(200));
    let build = samples
        .iter()
        .find(|s| s.name == "metricsctl_build_info")
        .expect("metricsctl_build_info");
    let version = text(&sb.run(&["--version"], Duration::from_secs(10)).stdout);
    assert_eq!(
        version.trim(),
        format!(
            "metricsctl {} (commit {})",
            build.labels["version"], build.labels["commit"]
        )
    );
    assert_eq!(build.value, 1.0);
    assert_eq!(
        counter(&samples, "metricsctl_consumer_assigned_partitions"),
        3.0
    );

    // Lag per partition, as `status` computes it at the same moment: the consumer has read
    // everything, and once the commit it started last went through (commits run while the
    // steps go on; a quiet round takes the outcome) nothing moves between the two reads.
    let agree = |samples: &[Sample], report: &serde_json::Value| {
        let lag = per_partition(samples, "lag");
        let log_end = per_partition(samples, "log_end_offset");
        let committed = per_partition(samples, "committed_offset");
        report["partitions"].as_array().is_some_and(|ps| {
            ps.iter().all(|p| {
                let partition = p["partition"].as_i64().unwrap_or(-1);
                lag.get(&partition).copied() == p["lag"].as_i64()
                    && log_end.get(&partition).copied() == p["log_end"].as_i64()
                    && committed.get(&partition).copied() == p["committed"].as_i64()
            })
        })
    };
    let mut last = None;
    let _ = poll(Duration::from_secs(20), Duration::from_millis(500), || {
        let status = sb.run(
            &["status", "--json", "--max-lag", "1000000"],
            Duration::from_secs(60),
        );
        let report: serde_json::Value =
            serde_json::from_slice(&status.stdout).expect("status --json output");
        let samples = scrape(&addr).expect("a second scrape");
        let settled = agree(&samples, &report);
        last = Some((samples, report));
        settled.then_some(())
    });
    let (samples, report) = last.expect("status and a scrape");
    let lag = per_partition(&samples, "lag");
    let log_end = per_partition(&samples, "log_end_offset");
    let committed = per_partition(&samples, "committed_offset");
    for p in report["partitions"].as_array().expect("partitions") {
        let partition = p["partition"].as_i64().expect("partition");
        assert_eq!(
            lag.get(&partition).copied(),
            p["lag"].as_i64(),
            "lag of partition {partition}: metrics {lag:?}, status {p}"
        );
        assert_eq!(log_end.get(&partition).copied(), p["log_end"].as_i64());
        assert_eq!(committed.get(&partition).copied(), p["committed"].as_i64());
    }

    assert_eq!(consumer.stop(Duration::from_secs(60)), Some(0));
    // The counters against the documents, counted with the database's own client.
    let stored = counter(&samples, "metricsctl_consumer_messages_stored_total") as u64;
    assert_eq!(stored, sb.count("raw"), "stored counter vs raw documents");
    assert_eq!(stored, 150);
    let mut dead_by_code: BTreeMap<String, u64> = BTreeMap::new();
    for d in sb.docs("dlq", doc! {}, doc! {}) {
        let code = d.get_str("reason_code").expect("reason_code").to_string();
        *dead_by_code.entry(code).or_default() += 1;
    }
    let counted: BTreeMap<String, u64> = samples
        .iter()
        .filter(|s| s.name == "metricsctl_consumer_dead_letters_total")
        .map(|s| (s.labels["reason_code"].clone(), s.value as u64))
        .collect();
    assert_eq!(counted, dead_by_code, "dead letters by reason_code");
    assert_eq!(counted.values().sum::<u64>(), 2);
    let windows = sb
        .db()
        .collection::<Document>("kpis")
        .count_documents(doc! {})
        .run()
        .expect("count");
    assert_eq!(
        counter(&samples, "metricsctl_consumer_windows_stored_total") as u64,
        windows
    );
    let steps = value(
        &samples,
        "metricsctl_consumer_step_duration_seconds_count",
        &[],
    )
    .expect("step histogram");
    assert!(steps >= 1.0);
}

#[test]
fn producer_metrics_count_what_kafka_acknowledged() {
    let sb = Sandbox::new("telemetry_produce");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut producer = sb.spawn(
        "produce",
        &[
            "produce",
            "--metrics-addr",
            &addr,
            "--interval",
            "0.2",
            "--count",
            "1000000",
        ],
    );
    let samples = poll(Duration::from_secs(60), Duration::from_millis(200), || {
        let s = scrape(&addr)?;
        (value(&s, "metricsctl_producer_messages_acknowledged_total", &[])? >= 50.0).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "no acknowledgement counted; log:\n{}",
            producer.log_tail(20)
        )
    });
    assert_eq!(http_get(&addr, "/readyz").map(|r| r.0), Some(200));
    assert_eq!(producer.stop(Duration::from_secs(60)), Some(0));
    let acked = counter(&samples, "metricsctl_producer_messages_acknowledged_total");
    let sent = counter(&samples, "metricsctl_producer_messages_sent_total");
    assert!(sent >= acked, "sent {sent} < acknowledged {acked}");
    assert_eq!(
        counter(&samples, "metricsctl_producer_messages_dropped_total"),
        0.0
    );
    assert!(
        value(
            &samples,
            "metricsctl_producer_send_duration_seconds_count",
            &[]
        )
        .unwrap()
            >= 1.0
    );
    // Everything acknowledged by the time of the scrape is in the log.
    let in_log: i64 = common::kafka_tools::log_end_offsets(&sb.brokers, &sb.topic)
        .values()
        .sum();
    assert!(
        in_log as f64 >= acked,
        "log holds {in_log}, {acked} acknowledged"
    );
}

#[test]
fn an_address_that_cannot_be_served_exits_2_with_one_line() {
    let sb = Sandbox::new("telemetry_addr");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    let cases: Vec<(&str, String)> = vec![
        ("consume", "nonsense".to_string()),
        ("consume", "127.0.0.1:99999".to_string()),
        ("consume", taken.clone()),
        ("produce", taken.clone()),
    ];
    for (command, addr) in cases {
        let out = sb.run(&[command, "--metrics-addr", &addr], Duration::from_secs(30));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command} {addr}: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "{command} {addr}: one line, got {err}"
        );
        assert!(
            err.starts_with("error: invalid setting --metrics-addr"),
            "{command} {addr}: {err}"
        );
    }
    // From the environment too, named as such.
    let out = sb
        .command(&["consume"])
        .env("METRICS_ADDR", "localhost")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("METRICS_ADDR (from environment)"));
}
