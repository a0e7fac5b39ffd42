//! Kafka through librdkafka's command-line client, kcat: a client independent of ours that
//! writes lines or exact bytes to a partition, reads a whole topic (as JSON lines, or byte for
//! byte), and reads the cluster's metadata.
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use super::kafka_wire;
use super::process::{assert_ok, run_tool, text};
use super::services::Sandbox;

/// Each partition's leader (-1: none) as kcat sees the cluster's metadata; `None` when no
/// broker answered.
pub fn partition_leaders(brokers: &str, topic: &str) -> Option<BTreeMap<i32, i32>> {
    let mut c = Command::new("kcat");
    // Reconnecting every 100 ms, a poll that starts while no broker answers returns as soon
    // as one does.
    c.args(["-b", brokers, "-L", "-J", "-t", topic, "-m", "2", "-q"])
        .args([
            "-X",
            "reconnect.backoff.ms=50",
            "-X",
            "reconnect.backoff.max.ms=100",
        ]);
    let out = run_tool(c, None, Duration::from_secs(20));
    if !out.status.success() {
        return None;
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let t = meta["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic"] == topic)?;
    if t.get("error").is_some() {
        return None;
    }
    Some(
        t["partitions"]
            .as_array()?
            .iter()
            .map(|p| {
                (
                    p["partition"].as_i64().unwrap_or(-1) as i32,
                    p["leader"].as_i64().unwrap_or(-1) as i32,
                )
            })
            .collect(),
    )
}

/// Writes `lines` (one message each, no key) to one partition with kcat. With a codec the
/// producer lingers 200 ms so the lines become one compressed batch (a compressed set of
/// several records). `extra` adds kcat options (`-X transactional.id=...`, ...).
pub fn kcat_produce(
    brokers: &str,
    topic: &str,
    partition: i32,
    codec: Option<&str>,
    extra: &[&str],
    lines: &[String],
) {
    let partition = partition.to_string();
    let mut c = Command::new("kcat");
    c.args(["-b", brokers, "-P", "-t", topic, "-p", &partition]);
    if let Some(codec) = codec {
        c.args(["-z", codec, "-X", "linger.ms=200"]);
    }
    c.args(extra);
    let mut input = Vec::new();
    for l in lines {
        assert!(!l.contains('\n'), "one message per line");
        input.extend_from_slice(l.as_bytes());
        input.push(b'\n');
    }
    let out = run_tool(c, Some(&input), Duration::from_secs(60));
    assert_ok(&out, "kcat -P");
}

/// One record as kcat reads it.
#[derive(Debug, Clone)]
pub struct KcatRecord {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp in ms (LogAppendTime on topics created with it).
    pub timestamp_ms: i64,
    pub key: Option<String>,
    pub payload: Option<String>,
}

/// What kcat prints reading the whole topic, from the start of each partition to its end, each
/// record as `format` says (kcat's `-J` or `-f` options), within `limit`.
fn kcat_consume(brokers: &str, topic: &str, format: &[&str], limit: Duration) -> Vec<u8> {
    let mut c = Command::new("kcat");
    c.args([
        "-b",
        brokers,
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
    ])
    .args(format);
    let out = run_tool(c, None, limit);
    assert_ok(&out, "kcat -C");
    out.stdout
}

/// Every record of the topic, from the start of each partition to its end, read by kcat
/// (librdkafka, read_committed: transaction markers are never shown).
pub fn kcat_read(brokers: &str, topic: &str) -> Vec<KcatRecord> {
    let out = kcat_consume(brokers, topic, &["-J"], Duration::from_secs(120));
    let mut records: Vec<KcatRecord> = text(&out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("kcat -J line {l:.200}: {e}"));
            KcatRecord {
                partition: v["partition"].as_i64().unwrap() as i32,
                offset: v["offset"].as_i64().unwrap(),
                timestamp_ms: v["ts"].as_i64().unwrap_or(-1),
                key: v["key"].as_str().map(String::from),
                payload: v["payload"].as_str().map(String::from),
            }
        })
        .collect();
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// One record exactly as kcat reads it: its value byte for byte (`None`: a record without a
/// value, a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KcatBytes {
    pub partition: i32,
    pub offset: i64,
    pub value: Option<Vec<u8>>,
}

/// Every record of the topic, from the start of each partition to its end, byte for byte:
/// kcat prints each value after a header with its length, so values may hold newlines, bytes
/// that are not UTF-8, or tens of MiB.
pub fn kcat_read_bytes(brokers: &str, topic: &str) -> Vec<KcatBytes> {
    let bytes = kcat_consume(
        brokers,
        topic,
        &["-f", "%p %o %S\n%s"],
        Duration::from_secs(300),
    );
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = at
            + bytes[at..]
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or_else(|| panic!("kcat output ends inside a header at byte {at}"));
        let header = String::from_utf8_lossy(&bytes[at..end]).into_owned();
        let fields: Vec<&str> = header.split(' ').collect();
        assert_eq!(fields.len(), 3, "kcat header {header:?}");
        let partition: i32 = fields[0].parse().expect("partition");
        let offset: i64 = fields[1].parse().expect("offset");
        let len: i64 = fields[2].parse().expect("value length");
        at = end + 1;
        let value = if len < 0 {
            None
        } else {
            let len = len as usize;
            assert!(at + len <= bytes.len(), "kcat output ends inside a value");
            at += len;
            Some(bytes[at - len..at].to_vec())
        };
        records.push(KcatBytes {
            partition,
            offset,
            value,
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// Writes values to one partition with kcat, in order: each non-empty value as one file (kcat
/// sends a file as one message, whatever bytes it holds), an empty value and a record without
/// value (`None`) through kcat's key mode (`-Z` makes an empty value a null one). Values up to
/// 32 MiB (the topic's `max.message.bytes` must allow them).
pub fn kcat_send_values(brokers: &str, topic: &str, partition: i32, values: &[Option<Vec<u8>>]) {
    let dir =
        std::env::temp_dir().join(format!("metricsctl-kcat-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let partition = partition.to_string();
    let base = |extra: &[&str]| {
        let mut c = Command::new("kcat");
        c.args([
            "-b",
            brokers,
            "-P",
            "-t",
            topic,
            "-p",
            &partition,
            "-X",
            "message.max.bytes=33554432",
        ]);
        c.args(extra);
        c
    };
    let mut i = 0;
    while i < values.len() {
        match &values[i] {
            Some(v) if !v.is_empty() => {
                // A run of non-empty values: one kcat, one file each.
                let mut files = Vec::new();
                while let Some(Some(v)) = values.get(i) {
                    if v.is_empty() {
                        break;
                    }
                    let f = dir.join(format!("{i:06}"));
                    std::fs::write(&f, v).expect("write value");
                    files.push(f.display().to_string());
                    i += 1;
                }
                let mut c = base(&[]);
                c.args(&files);
                assert_ok(
                    &run_tool(c, None, Duration::from_secs(120)),
                    "kcat -P files",
                );
                for f in files {
                    let _ = std::fs::remove_file(f);
                }
            }
            other => {
                let null = other.is_none();
                let c = base(if null {
                    &["-K", ":", "-Z"]
                } else {
                    &["-K", ":"]
                });
                let out = run_tool(c, Some(b"key:\n"), Duration::from_secs(60));
                assert_ok(&out, "kcat -P an empty or null value");
                i += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

impl Sandbox {
    /// Produces raw payloads (any bytes) to one partition, in order, with kcat, once the topic
    /// exists with a leader for each partition.
    pub fn send_raw(&self, partition: i32, payloads: &[Vec<u8>]) {
        kafka_wire::ensure_topic(&self.brokers, &self.topic);
        let values: Vec<Option<Vec<u8>>> = payloads.iter().cloned().map(Some).collect();
        kcat_send_values(&self.brokers, &self.topic, partition, &values);
    }
}
