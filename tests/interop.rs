//! Other producers' batches, read by `metricsctl consume`: Kafka's own console producer (Java),
//! idempotent and compressing with lz4 and zstd, the codecs Kafka's Java client writes with its
//! own framing (its lz4 blocks and its high-compression level, not librdkafka's). Every message
//! must be stored once, and Kafka's own group tool must see the group caught up.

mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod oracle;
    pub mod process;
    pub mod services;
}

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use mongodb::bson::doc;

use common::kafka_tools::{create_topic, group_tool_describe};
use common::kcat::kcat_read;
use common::messages::{metric_line, uuid_of};
use common::oracle::check_windows_against_raw;
use common::process::{assert_ok, run_tool, text};
use common::services::{repo_root, Sandbox};

const PER_CODEC: u64 = 60;

/// Kafka's console producer writes `lines` (`key<TAB>value`) to `topic`: acks=all, idempotent,
/// `codec`, one request's worth per batch.
fn java_produce(brokers: &str, topic: &str, codec: &str, lines: &[String]) {
    let mut c = Command::new("bash");
    c.arg(repo_root().join("scripts/kafka-tool.sh"))
        .args(["console-producer", "--bootstrap-server", brokers])
        .args(["--topic", topic])
        .args(["--property", "parse.key=true"])
        .args(["--property", "key.separator=\t"])
        .args(["--producer-property", "acks=all"])
        .args(["--producer-property", "enable.idempotence=true"])
        .args(["--producer-property", &format!("compression.type={codec}")])
        .args(["--producer-property", "linger.ms=50"]);
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = run_tool(c, Some(input.as_bytes()), Duration::from_secs(120));
    assert_ok(&out, &format!("kafka-console-producer ({codec})"));
}

#[test]
fn javas_idempotent_lz4_and_zstd_batches_are_stored_once_and_the_group_caught_up() {
    let sb = Sandbox::new("interop_java");
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    let mut sent: HashMap<String, String> = HashMap::new();
    for (i, codec) in ["lz4", "zstd"].into_iter().enumerate() {
        let lines: Vec<String> = (0..PER_CODEC)
            .map(|n| {
                let value = metric_line(&format!("{}-{codec}", sb.name), n + 1000 * i as u64);
                let uuid = uuid_of(&value).expect("a metric line has a uuid");
                let key = serde_json::from_str::<serde_json::Value>(&value).unwrap()["server_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                sent.insert(uuid, codec.to_string());
                format!("{key}\t{value}")
            })
            .collect();
        java_produce(&sb.brokers, &sb.topic, codec, &lines);
    }
    let total = 2 * PER_CODEC;
    // kcat, an independent reader, sees exactly what was sent: the Java producer stored each
    // message once, in the codec asked for.
    let in_kafka = kcat_read(&sb.brokers, &sb.topic);
    assert_eq!(in_kafka.len() as u64, total, "messages in Kafka per kcat");

    let out = sb.run(
        &["consume", "--exit-when-idle", "3"],
        Duration::from_secs(120),
    );
    assert_ok(&out, "consume");
    assert_eq!(sb.count("raw"), total, "raw documents");
    assert_eq!(sb.count("dlq"), 0, "dead letters: {}", text(&out.stderr));
    let stored: Vec<String> = sb
        .docs("raw", doc! {}, doc! {})
        .iter()
        .map(|d| d.get_str("message_uuid").unwrap().to_string())
        .collect();
    let mut seen = HashSet::new();
    for uuid in &stored {
        assert!(seen.insert(uuid), "{uuid} stored twice");
        assert!(sent.contains_key(uuid), "{uuid} was never sent");
    }
    let windows = check_windows_against_raw(&sb, 20);
    assert_eq!(windows as u64, total / 20, "windows of 20");

    // Kafka's own tool describes the group: every partition committed to its end.
    let view = group_tool_describe(&sb.brokers, &sb.group);
    assert!(!view.missing, "{}", view.output);
    assert_eq!(view.rows.len(), 3, "{}", view.output);
    for row in &view.rows {
        assert_eq!(
            row.lag,
            Some(0),
            "partition {}: {}",
            row.partition,
            view.output
        );
    }
    // And so does `status`.
    let out = sb.run(&["status", "--json"], Duration::from_secs(60));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert_eq!(report["total_lag"], 0, "{report}");
}
