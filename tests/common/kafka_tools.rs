//! Kafka through its own Java tools (`scripts/kafka-tool.sh`): topics created, deleted and
//! described, log end offsets, the batches of a partition's log as `kafka-dump-log` reads them
//! from disk, and a group as `kafka-consumer-groups` describes it. A JVM per call: seconds,
//! so for set-up and final checks, not for polling (`kafka_wire` polls).
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::kcat::partition_leaders;
use super::process::{assert_ok, poll, run_tool, text};
use super::services::{repo_root, service_setting};

/// `scripts/kafka-tool.sh TOOL ARGS...`: Kafka's own command-line tools.
pub fn kafka_tool(args: &[&str]) -> Output {
    let mut c = Command::new("bash");
    c.arg(repo_root().join("scripts/kafka-tool.sh")).args(args);
    run_tool(c, None, Duration::from_secs(120))
}

/// Creates a topic with Kafka's own tool (`args`: `--partitions`, `--config k=v`,
/// `--replica-assignment`, ...), retrying while a deleted namesake is still going away, then
/// waits until every partition has a leader.
pub fn create_topic(brokers: &str, topic: &str, args: &[&str]) {
    let mut all = vec![
        "topics",
        "--bootstrap-server",
        brokers,
        "--create",
        "--topic",
        topic,
    ];
    all.extend_from_slice(args);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = kafka_tool(&all);
        if out.status.success() {
            break;
        }
        let why = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            Instant::now() < deadline,
            "cannot create topic {topic}: {why}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let partitions = args
        .iter()
        .position(|a| *a == "--partitions")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok());
    let ready = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        let leaders = partition_leaders(brokers, topic)?;
        let complete = partitions.is_none_or(|n| leaders.len() == n);
        (complete && !leaders.is_empty() && leaders.values().all(|l| *l >= 0)).then_some(())
    });
    assert!(ready.is_some(), "topic {topic} never got leaders");
}

/// Moves the leadership of every partition of `topic` back to its preferred replica (the first
/// of its assignment) with Kafka's own tool, retrying while a preferred replica is not yet back
/// in sync. After a node was restarted its partitions are led elsewhere, and the controller's
/// periodic leader rebalance (every 300 s by default) moves them back at a moment of its
/// choosing; a test that relies on who leads what elects first, so nothing moves under it.
pub fn elect_preferred_leaders(brokers: &str, topic: &str) {
    // The tool takes one partition by name, or a list of them in a file.
    let partitions = poll(Duration::from_secs(30), Duration::from_millis(500), || {
        partition_leaders(brokers, topic).filter(|l| !l.is_empty())
    })
    .unwrap_or_else(|| panic!("topic {topic} has no partitions"));
    let list: Vec<String> = partitions
        .keys()
        .map(|p| format!(r#"{{"topic":"{topic}","partition":{p}}}"#))
        .collect();
    let file = std::env::temp_dir().join(format!(
        "metricsctl-election-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, format!(r#"{{"partitions":[{}]}}"#, list.join(",")))
        .expect("write the election's partition list");
    let path = file.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = kafka_tool(&[
            "leader-election",
            "--bootstrap-server",
            brokers,
            "--election-type",
            "PREFERRED",
            "--path-to-json-file",
            &path,
        ]);
        // Partitions already led by their preferred replica are not an error (the tool says
        // so and exits 0).
        if out.status.success() {
            let _ = std::fs::remove_file(&file);
            return;
        }
        let why = format!("{}{}", text(&out.stdout), text(&out.stderr));
        if Instant::now() >= deadline {
            let _ = std::fs::remove_file(&file);
            panic!("cannot elect the preferred leaders of {topic}: {why}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Deletes a topic with Kafka's own tool and waits until the cluster no longer lists it.
pub fn delete_topic_and_wait(brokers: &str, topic: &str) {
    let out = kafka_tool(&[
        "topics",
        "--bootstrap-server",
        brokers,
        "--delete",
        "--topic",
        topic,
    ]);
    assert_ok(&out, "kafka-topics --delete");
    let gone = poll(Duration::from_secs(60), Duration::from_millis(300), || {
        let out = kafka_tool(&["topics", "--bootstrap-server", brokers, "--list"]);
        (out.status.success() && !text(&out.stdout).lines().any(|l| l.trim() == topic))
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "topic {topic} still listed a minute after its deletion"
    );
}

/// The topic's id as Kafka's own tool describes it, in the hyphenated form the consumer stores
/// (the tool prints Kafka's URL-safe base64).
pub fn topic_id(brokers: &str, topic: &str) -> String {
    let out = kafka_tool(&[
        "topics",
        "--bootstrap-server",
        brokers,
        "--describe",
        "--topic",
        topic,
    ]);
    assert_ok(&out, "kafka-topics --describe");
    let described = text(&out.stdout);
    let id = described
        .split_whitespace()
        .skip_while(|w| *w != "TopicId:")
        .nth(1)
        .unwrap_or_else(|| panic!("no TopicId in: {described}"));
    let bytes = base64_url_decode(id);
    assert_eq!(bytes.len(), 16, "a topic id is 16 bytes: {id}");
    uuid::Uuid::from_slice(&bytes).unwrap().to_string()
}

/// Each partition's log end offset (the next offset to be written), from Kafka's own
/// GetOffsetShell; empty if the tool fails.
pub fn log_end_offsets(brokers: &str, topic: &str) -> BTreeMap<i32, i64> {
    let out = kafka_tool(&[
        "get-offsets",
        "--bootstrap-server",
        brokers,
        "--topic",
        topic,
    ]);
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.trim().rsplitn(3, ':');
            let offset = parts.next()?.parse().ok()?;
            let partition = parts.next()?.parse().ok()?;
            (parts.next()? == topic).then_some((partition, offset))
        })
        .collect()
}

/// URL-safe base64 without padding, as Kafka prints a `Uuid`.
fn base64_url_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => panic!("not base64: {s}"),
        }
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        acc = (acc << 6) | value(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// One record batch of a partition's log, as Kafka's DumpLogSegments describes it.
#[derive(Debug, Clone)]
pub struct LogBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub count: i64,
    pub codec: String,
    pub transactional: bool,
    pub control: bool,
}

/// Where the local services keep the running Kafka version's storage: `.local/kafka/<version>`
/// (`KAFKA_VERSION` of the environment or `.local/services.env`), else `.local/kafka` (the layout
/// before per-version folders).
pub fn kafka_home() -> PathBuf {
    let local = repo_root().join(".local/kafka");
    let version = service_setting("KAFKA_VERSION", "");
    let home = local.join(&version);
    if !version.is_empty() && home.is_dir() {
        home
    } else {
        local
    }
}

/// The batches of a partition as stored on disk, read by Kafka's own `dump-log` tool from the
/// local node's log directory (any replica); `None` when no local node holds the partition
/// (services elsewhere).
pub fn log_batches(topic: &str, partition: i32) -> Option<Vec<LogBatch>> {
    let kafka = kafka_home();
    let mut data_dirs = vec![kafka.join("data")];
    if let Ok(nodes) = std::fs::read_dir(kafka.join("cluster")) {
        let mut nodes: Vec<PathBuf> = nodes.flatten().map(|e| e.path().join("data")).collect();
        nodes.sort();
        data_dirs.extend(nodes);
    }
    let dir = data_dirs
        .iter()
        .map(|d| d.join(format!("{topic}-{partition}")))
        .find(|d| d.is_dir())?;
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let files = segments
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = kafka_tool(&["dump-log", "--files", &files]);
    assert_ok(&out, "kafka-dump-log");
    let mut batches = Vec::new();
    for line in text(&out.stdout).lines() {
        if !line.starts_with("baseOffset:") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| -> &str {
            words
                .iter()
                .position(|w| *w == name)
                .and_then(|i| words.get(i + 1))
                .copied()
                .unwrap_or_else(|| panic!("no {name} in: {line}"))
        };
        batches.push(LogBatch {
            base_offset: field("baseOffset:").parse().unwrap(),
            last_offset: field("lastOffset:").parse().unwrap(),
            count: field("count:").parse().unwrap(),
            codec: field("compresscodec:").to_string(),
            transactional: field("isTransactional:") == "true",
            control: field("isControl:") == "true",
        });
    }
    Some(batches)
}

/// One partition row of `kafka-consumer-groups --describe --group G`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub topic: String,
    pub partition: i32,
    /// The committed offset (`CURRENT-OFFSET`); `None` for "-".
    pub committed: Option<i64>,
    pub log_end: Option<i64>,
    pub lag: Option<i64>,
    /// The member that owns the partition; `None` when no member does ("-").
    pub consumer_id: Option<String>,
    pub host: Option<String>,
    pub client_id: Option<String>,
}

/// What `kafka-consumer-groups --describe --group G` printed, parsed.
#[derive(Debug, Clone)]
pub struct GroupToolView {
    pub rows: Vec<GroupRow>,
    /// The tool warned that the group is rebalancing.
    pub rebalancing: bool,
    /// The tool said the group does not exist.
    pub missing: bool,
    /// The tool's whole output, for assertion messages.
    pub output: String,
}

impl GroupToolView {
    /// The member owning each partition, for partitions some member owns.
    pub fn owners(&self) -> BTreeMap<i32, String> {
        self.rows
            .iter()
            .filter_map(|r| Some((r.partition, r.consumer_id.clone()?)))
            .collect()
    }

    /// Partitions listed by two rows with different members: must never happen.
    pub fn doubly_owned(&self) -> Vec<i32> {
        let mut seen: HashMap<i32, &str> = HashMap::new();
        let mut doubled = Vec::new();
        for r in &self.rows {
            let Some(id) = r.consumer_id.as_deref() else {
                continue;
            };
            match seen.insert(r.partition, id) {
                Some(other) if other != id => doubled.push(r.partition),
                _ => {}
            }
        }
        doubled.sort_unstable();
        doubled.dedup();
        doubled
    }

    pub fn row(&self, partition: i32) -> Option<&GroupRow> {
        self.rows.iter().find(|r| r.partition == partition)
    }
}

/// `kafka-consumer-groups --describe --group G` from Kafka's own tools, parsed.
pub fn group_tool_describe(brokers: &str, group: &str) -> GroupToolView {
    let out = kafka_tool(&[
        "consumer-groups",
        "--bootstrap-server",
        brokers,
        "--describe",
        "--group",
        group,
    ]);
    let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let dash = |w: &str| (w != "-").then(|| w.to_string());
    let number = |w: &str| w.parse::<i64>().ok();
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"GROUP") && words.contains(&"CONSUMER-ID") {
            in_table = true;
            continue;
        }
        if !in_table || words.len() < 9 || words[0] != group {
            continue;
        }
        rows.push(GroupRow {
            topic: words[1].to_string(),
            partition: words[2]
                .parse()
                .unwrap_or_else(|_| panic!("partition in: {line}")),
            committed: number(words[3]),
            log_end: number(words[4]),
            lag: number(words[5]),
            consumer_id: dash(words[6]),
            host: dash(words[7]),
            client_id: dash(words[8]),
        });
    }
    rows.sort_by_key(|r| r.partition);
    GroupToolView {
        rebalancing: output.contains("is rebalancing"),
        missing: output.contains("does not exist"),
        rows,
        output,
    }
}
