//! `metricsctl status` against a real broker and database: a group with lag and no owner, a
//! group whose partitions are owned and caught up, and a lag limit crossed. The expected
//! figures come from independent sources: kcat's writes (how many messages each partition
//! holds) and Kafka's own group tool (who owns what).

mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod process;
    pub mod services;
}

use std::time::Duration;

use common::kafka_tools::{create_topic, group_tool_describe};
use common::kcat::kcat_produce;
use common::messages::metric_line;
use common::process::{poll, text};
use common::services::Sandbox;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// `status --json`: its exit code and report.
fn status(sb: &Sandbox, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    let out = sb.run(&args, LIMIT);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status printed no JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// Writes `per_partition` valid messages to each of the 3 partitions with kcat.
fn fill(sb: &Sandbox, per_partition: u64) {
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    for p in 0..3 {
        let lines: Vec<String> = (0..per_partition)
            .map(|n| metric_line(&format!("{}-p{p}", sb.name), n))
            .collect();
        kcat_produce(&sb.brokers, &sb.topic, p, None, &[], &lines);
    }
}

fn partition(report: &Value, p: i64) -> &Value {
    report["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|x| x["partition"] == p))
        .unwrap_or_else(|| panic!("partition {p} missing: {report}"))
}

#[test]
fn lag_without_an_owner_is_unhealthy_and_says_why() {
    let sb = Sandbox::new("statuslag");
    fill(&sb, 30);
    let (code, report) = status(&sb, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["healthy"], false);
    assert_eq!(report["members"], 0);
    assert_eq!(report["total_lag"], 90, "{report}");
    for p in 0..3 {
        let row = partition(&report, p);
        assert_eq!(row["log_end"], 30);
        assert_eq!(row["committed"], Value::Null);
        assert_eq!(row["lag"], 30);
        assert_eq!(row["owner"], Value::Null);
    }
    let problems = report["problems"].to_string();
    assert!(problems.contains("partition 2 has no owner"), "{problems}");

    // The table for people says the same on its last line.
    let out = sb.run(&["status"], LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(table.contains("PARTITION"), "{table}");
    assert!(
        table.lines().last().unwrap_or("").starts_with("UNHEALTHY"),
        "{table}"
    );
}

#[test]
fn owned_and_caught_up_is_healthy_and_a_lag_limit_is_enforced() {
    let sb = Sandbox::new("statusok");
    fill(&sb, 40);
    let mut consumer = sb.spawn("consumer", &["consume"]);
    // Caught up: the two windows of each partition's 40 messages are committed, and
    // published (a window is stored once the consumer took its commit's outcome, a round
    // after the commit went through on a quiet stream).
    let report = poll(Duration::from_secs(60), Duration::from_millis(500), || {
        let (code, report) = status(&sb, &[]);
        let published = report["partitions"]
            .as_array()
            .is_some_and(|ps| ps.len() == 3 && ps.iter().all(|x| x["last_window_at"].is_string()));
        (code == Some(0) && report["total_lag"] == 0 && published).then_some(report)
    })
    .unwrap_or_else(|| panic!("never healthy: {}", consumer.log_tail(30)));
    assert_eq!(report["healthy"], true);
    assert_eq!(report["members"], 1);

    // The owner it names is the member Kafka's own tool lists for each partition: the one
    // consumer owns all three (a tool that lists no owner fails here, not passes).
    let tool = group_tool_describe(&sb.brokers, &sb.group);
    let owners = tool.owners();
    assert_eq!(
        owners.keys().copied().collect::<Vec<i32>>(),
        vec![0, 1, 2],
        "Kafka's group tool lists an owner for every partition:\n{}",
        tool.output
    );
    let members: std::collections::BTreeSet<&String> = owners.values().collect();
    assert_eq!(members.len(), 1, "one member owns them all: {owners:?}");
    for p in 0..3 {
        let row = partition(&report, p);
        let owner = &owners[&(p as i32)];
        assert_eq!(row["owner"].as_str(), Some(owner.as_str()), "{report}");
        assert!(row["last_window_at"].is_string(), "{report}");
        assert_eq!(row["committed"], 40, "{report}");
    }

    // More data than --max-lag allows, while the consumer is stopped: unhealthy.
    assert_eq!(consumer.stop(Duration::from_secs(30)), Some(0));
    for p in 0..3 {
        let lines: Vec<String> = (100..115)
            .map(|n| metric_line(&format!("{}-p{p}", sb.name), n))
            .collect();
        kcat_produce(&sb.brokers, &sb.topic, p, None, &[], &lines);
    }
    let (code, report) = status(&sb, &["--max-lag", "10"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report["problems"]
            .to_string()
            .contains("lags by 15 messages (limit 10)"),
        "{report}"
    );
    // The same lag under a higher limit is only a matter of ownership.
    let (_, report) = status(&sb, &["--max-lag", "1000"]);
    assert!(
        !report["problems"].to_string().contains("lags by"),
        "{report}"
    );
}

#[test]
fn a_missing_topic_is_one_line_and_exit_code_1() {
    let sb = Sandbox::new("statusnotopic");
    let out = sb.run(&["status"], LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("does not exist"), "{err}");
}
