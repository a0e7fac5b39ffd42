//! Shared helpers for the integration tests: where the real services are, unique names per
//! test, running the binary, and cleaning up (the test's database and topic are removed).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson, Document};
use mongodb::sync::{Client, Database};

pub mod kafka_wire;
pub mod oracle;
pub mod scrape;

/// Every variable the binary reads; cleared for each run so the developer's shell cannot leak in.
const OUR_VARS: &[&str] = &[
    "KAFKA_BROKERS",
    "KAFKA_TOPIC",
    "KAFKA_GROUP_ID",
    "KAFKA_COMPRESSION",
    "MONGODB_URI",
    "CONNECTION_STRING",
    "MONGODB_DATABASE",
    "MONGODB_RAW_COLLECTION",
    "MONGODB_KPI_COLLECTION",
    "MONGODB_DLQ_COLLECTION",
    "WINDOW_SIZE",
    "SERVERS_PER_WINDOW",
    "REPORTING_INTERVAL_SECONDS",
    "SERVER_IDS",
    "METRICS_SUFFIX",
    "KAFKA_PARTITIONS",
    "EXIT_WHEN_IDLE_SECONDS",
    "MAX_STEP_INTERVAL_SECONDS",
    "MAX_MESSAGES",
    "REPORT_COUNT",
    "SIMULATION_SEED",
    "KPIS_LIMIT",
    "PRODUCER_DRAIN_TIMEOUT_SECONDS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CA_LOCATION",
    "KAFKA_SSL_CERTIFICATE_LOCATION",
    "KAFKA_SSL_KEY_LOCATION",
    "STATUS_MAX_LAG",
    "METRICS_ADDR",
    "HEALTH_THRESHOLD_SECONDS",
    "KAFKA_GROUP_INSTANCE_ID",
    "RUST_LOG",
    "RUST_LOG_STYLE",
];

/// A service setting: the environment (as `make test` sets it), else `.local/services.env`.
pub fn service_setting(key: &str, default: &str) -> String {
    if let Ok(v) = std::env::var(key) {
        return v;
    }
    let path = repo_root().join(".local/services.env");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let file: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    file.get(key).map_or(default.to_string(), |v| v.to_string())
}

/// The services' addresses: the environment (as `make test` sets it), else `.local/services.env`.
pub fn services() -> (String, String) {
    (
        service_setting("KAFKA_BROKERS", "127.0.0.1:29092"),
        service_setting("MONGODB_URI", "mongodb://127.0.0.1:27017"),
    )
}

/// The repository, where `scripts/` and `.local/` are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One test's private topic, group and database; dropped (database deleted, topic deleted)
/// when the test ends, whether it passed or not.
pub struct Sandbox {
    pub name: String,
    pub brokers: String,
    pub mongodb_uri: String,
    pub topic: String,
    pub group: String,
    pub database: String,
    pub dir: PathBuf,
    client: Client,
}

impl Sandbox {
    /// The host:port of the test database (a `mongodb://` URI), for a proxy in front of it.
    #[allow(dead_code)] // not every test binary puts a proxy in front of the database
    pub fn database_address(&self) -> String {
        let rest = self.mongodb_uri.trim_start_matches("mongodb://");
        let rest = rest.rsplit('@').next().unwrap_or(rest);
        rest.split(['/', '?']).next().unwrap_or(rest).to_string()
    }

    pub fn new(label: &str) -> Sandbox {
        let (brokers, mongodb_uri) = services();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{label}_{}", &id[..10]);
        let dir = std::env::temp_dir().join(format!("metricsctl-test-{name}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let client = Client::with_uri_str(&mongodb_uri).expect("mongodb client");
        Sandbox {
            topic: format!("t-{name}"),
            group: format!("g-{name}"),
            database: format!("db_{name}"),
            name,
            brokers,
            mongodb_uri,
            dir,
            client,
        }
    }

    pub fn db(&self) -> Database {
        self.client.database(&self.database)
    }

    pub fn docs(&self, collection: &str, filter: Document, sort: Document) -> Vec<Document> {
        self.db()
            .collection::<Document>(collection)
            .find(filter)
            .sort(sort)
            .run()
            .expect("find")
            .map(|d| d.expect("document"))
            .collect()
    }

    pub fn count(&self, collection: &str) -> u64 {
        self.db()
            .collection::<Document>(collection)
            .count_documents(doc! {})
            .run()
            .expect("count")
    }

    /// A command for the binary, with this sandbox's names and no inherited settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_metricsctl"));
        for v in OUR_VARS {
            c.env_remove(v);
        }
        c.current_dir(&self.dir)
            .env("KAFKA_BROKERS", &self.brokers)
            .env("MONGODB_URI", &self.mongodb_uri)
            .env("KAFKA_TOPIC", &self.topic)
            .env("KAFKA_GROUP_ID", &self.group)
            .env("MONGODB_DATABASE", &self.database)
            .env("MONGODB_RAW_COLLECTION", "raw")
            .env("MONGODB_KPI_COLLECTION", "kpis")
            .env("MONGODB_DLQ_COLLECTION", "dlq")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs the binary to completion within `limit`, returning its output.
    pub fn run(&self, args: &[&str], limit: Duration) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn metricsctl");
        wait_with_limit(child, limit)
    }

    /// Produces raw payloads (any bytes) to one partition, in order, with kcat, once the topic
    /// exists with a leader for each partition.
    pub fn send_raw(&self, partition: i32, payloads: &[Vec<u8>]) {
        ensure_topic(&self.brokers, &self.topic);
        let values: Vec<Option<Vec<u8>>> = payloads.iter().cloned().map(Some).collect();
        kcat_send_values(&self.brokers, &self.topic, partition, &values);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.db().drop().run();
        let _ = delete_topic(&self.brokers, &self.topic);
        if std::thread::panicking() || std::env::var_os("KEEP_TEST_LOGS").is_some() {
            // The logs of background processes stay for a look at what went wrong.
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Creates the topic as a producer's first request does (the broker's defaults: 3 partitions) and
/// waits until every partition has a leader; returns the partitions' leaders.
pub fn ensure_topic(brokers: &str, topic: &str) -> kafka_wire::Leaders {
    kafka_wire::ensure_topic(brokers, topic)
}

/// Deletes a topic without waiting for the cluster to forget it (DeleteTopics v4, which Kafka
/// 3.9 and 4.x both accept).
pub fn delete_topic(brokers: &str, topic: &str) -> std::io::Result<()> {
    kafka_wire::delete_topic(brokers, topic)
}

pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "metricsctl did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to a child process.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a run succeeded, showing its output if not.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Background processes: the binary running while the test acts on the services.

/// A `metricsctl` process running in the background, its log (stderr) in a file so it can never
/// block on a full pipe. Killed when dropped if still running (a failed test leaves nothing).
pub struct Background {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Sandbox {
    /// Starts the binary in the background; its stderr goes to `<dir>/<name>.log`.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Background {
        self.spawn_with(name, args, &[])
    }

    /// [`Sandbox::spawn`] with more environment variables (a log filter, say).
    pub fn spawn_with(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Background {
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .command(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn metricsctl");
        Background {
            child,
            log,
            name: name.to_string(),
        }
    }
}

impl Background {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last `n` lines, for assertion messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, then waits up to `limit` for the exit; returns the exit code (None: a signal).
    pub fn stop(&mut self, limit: Duration) -> Option<i32> {
        terminate(&self.child);
        self.wait_exit(limit)
    }

    /// Waits up to `limit` for the process to end by itself (killed and reported past it);
    /// returns the exit code (None: a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not stop within {limit:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `probe` every `every` until it returns `Some`, or `limit` passes (then `None`).
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Seconds since the Unix epoch, with sub-millisecond precision.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Kafka through independent clients: kcat (librdkafka) and Kafka's own Java tools.

/// Runs a command to completion within `limit` (killed and reported past it).
pub fn run_tool(mut command: Command, input: Option<&[u8]>, limit: Duration) -> Output {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{command:?}");
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    // Output is drained by threads so a large answer (a whole topic) cannot block the child.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write to the tool's stdin");
    }
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_reader.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {limit:?}; stderr:\n{}",
                text(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

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
pub fn log_end_offsets(brokers: &str, topic: &str) -> std::collections::BTreeMap<i32, i64> {
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

/// Each partition's leader (-1: none) as kcat sees the cluster's metadata; `None` when no
/// broker answered.
pub fn partition_leaders(
    brokers: &str,
    topic: &str,
) -> Option<std::collections::BTreeMap<i32, i32>> {
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

/// Every record of the topic, from the start of each partition to its end, read by kcat
/// (librdkafka, read_committed: transaction markers are never shown).
pub fn kcat_read(brokers: &str, topic: &str) -> Vec<KcatRecord> {
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
        "-J",
        "-q",
    ]);
    let out = run_tool(c, None, Duration::from_secs(120));
    assert_ok(&out, "kcat -C");
    let mut records: Vec<KcatRecord> = text(&out.stdout)
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

// ---------------------------------------------------------------------------------------------
// Brokers: scripts/services.sh kills and starts nodes of the current mode.

/// Kafka nodes of the running mode (1 or 3).
pub fn kafka_nodes() -> u32 {
    service_setting("KAFKA_NODES", "1").parse().unwrap_or(1)
}

pub fn services_sh(args: &[&str]) -> Output {
    let mut c = Command::new("bash");
    c.arg(repo_root().join("scripts/services.sh")).args(args);
    // The services of this checkout may run on moved ports (`SERVICES_PORT_OFFSET`).
    c.env(
        "SERVICES_PORT_OFFSET",
        service_setting("SERVICES_PORT_OFFSET", "0"),
    );
    run_tool(c, None, Duration::from_secs(400))
}

/// SIGKILLs Kafka node `n`; returns its pid.
pub fn kill_broker(n: u32) -> u32 {
    let out = services_sh(&["kill-broker", &n.to_string()]);
    assert_ok(&out, "services.sh kill-broker");
    text(&out.stdout).trim().parse().expect("a pid")
}

/// Starts Kafka node `n` again; returns once it answers.
pub fn start_broker(n: u32) {
    let out = services_sh(&["start-broker", &n.to_string()]);
    assert_ok(&out, "services.sh start-broker");
}

// ---------------------------------------------------------------------------------------------
// Messages and what the database holds.

/// A valid metric message, its `message_uuid` `{tag}-{n}`, on one line.
pub fn metric_line(tag: &str, n: u64) -> String {
    let servers = ["web01", "web02", "db01", "app01", "cache01"];
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    serde_json::json!({
        "server_id": servers[(n % 5) as usize],
        "timestamp_utc": timestamp,
        "metrics": {
            "cpu_percent": ((n * 37) % 1000) as f64 / 10.0,
            "memory_percent": ((n * 53) % 1000) as f64 / 10.0,
            "disk_io_mbps": (n % 17) as f64 * 1.25,
            "network_mbps": (n % 23) as f64 * 2.5,
            "error_count": n % 4,
        },
        "message_uuid": format!("{tag}-{n}"),
    })
    .to_string()
}

/// The `message_uuid` of a payload, if it is a JSON object with one.
pub fn uuid_of(payload: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    v.get("message_uuid")?.as_str().map(String::from)
}

/// Where a raw document or a dead letter came from: (topic id, partition, offset).
pub fn kafka_position(d: &Document) -> (String, i32, i64) {
    let k = d.get_document("kafka").expect("kafka position");
    (
        k.get_str("topic_id").expect("kafka.topic_id").to_string(),
        k.get_i32("partition").expect("kafka.partition"),
        k.get_i64("offset").expect("kafka.offset"),
    )
}

/// A number at a dotted path of a document.
pub fn f64_of(d: &Document, path: &str) -> f64 {
    let mut cur = Bson::Document(d.clone());
    for key in path.split('.') {
        cur = cur
            .as_document()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or(Bson::Null);
    }
    match cur {
        Bson::Double(f) => f,
        Bson::Int32(i) => f64::from(i),
        Bson::Int64(i) => i as f64,
        other => panic!("{path} is not a number: {other:?}"),
    }
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
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
    let mut streams: HashMap<String, Vec<oracle::WindowTimes>> = HashMap::new();
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
        let times = oracle::check_window(w, &members);
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
        oracle::check_stream_order(stream, times);
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

// ---------------------------------------------------------------------------------------------
// Consumer groups as Kafka sees them: Kafka's own group tool, and a DescribeGroups probe written
// here from Kafka's protocol guide (no product code), cheap enough to poll every 100 ms.

/// Sends a signal (`STOP`, `CONT`, `KILL`, `TERM`, ...) to a child process with `kill`.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {}", child.id());
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
    pub fn owners(&self) -> std::collections::BTreeMap<i32, String> {
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

/// A live member of a group as DescribeGroups answers: its ids and its partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMember {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub partitions: Vec<i32>,
}

/// A group as its coordinator describes it: state (`Stable`, `PreparingRebalance`, ...) and
/// members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGroup {
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<WireMember>,
}

impl WireGroup {
    pub fn member_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.members.iter().map(|m| m.member_id.clone()).collect();
        ids.sort();
        ids
    }

    /// The owners of each partition (more than one would be a broken assignment).
    pub fn owners(&self) -> std::collections::BTreeMap<i32, Vec<String>> {
        let mut owners: std::collections::BTreeMap<i32, Vec<String>> = Default::default();
        for m in &self.members {
            for p in &m.partitions {
                owners.entry(*p).or_default().push(m.member_id.clone());
            }
        }
        owners
    }

    pub fn partitions_of(&self, member_id: &str) -> Vec<i32> {
        self.members
            .iter()
            .find(|m| m.member_id == member_id)
            .map(|m| m.partitions.clone())
            .unwrap_or_default()
    }
}

/// Reads Kafka protocol fields from a response body.
struct WireReader<'a> {
    buf: &'a [u8],
}

impl WireReader<'_> {
    fn take(&mut self, n: usize) -> std::io::Result<&[u8]> {
        if self.buf.len() < n {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short Kafka response",
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn i16(&mut self) -> std::io::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn i32(&mut self) -> std::io::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn string(&mut self) -> std::io::Result<String> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
    fn bytes(&mut self) -> std::io::Result<Vec<u8>> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(Vec::new());
        }
        Ok(self.take(n as usize)?.to_vec())
    }
}

/// One request (header v1: api key, version, correlation id, client id) and its response body
/// after the correlation id.
fn wire_call(
    stream: &mut TcpStream,
    api_key: i16,
    version: i16,
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let client_id = b"metricsctl-tests-probe";
    let mut request = Vec::new();
    request.extend_from_slice(&api_key.to_be_bytes());
    request.extend_from_slice(&version.to_be_bytes());
    request.extend_from_slice(&7i32.to_be_bytes());
    request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    request.extend_from_slice(client_id);
    request.extend_from_slice(body);
    stream.write_all(&(request.len() as i32).to_be_bytes())?;
    stream.write_all(&request)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut response = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    stream.read_exact(&mut response)?;
    if response.len() < 4 {
        return Err(std::io::Error::other("response without a correlation id"));
    }
    Ok(response.split_off(4))
}

fn wire_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Describes `group` with FindCoordinator v0 and DescribeGroups v0, decoding each member's
/// consumer-protocol assignment (its partitions of `topic`). `Err` when a broker does not answer
/// or answers with an error. Kafka 4 still accepts v0 of both (KIP-896 removed neither; 4.4
/// answers FindCoordinator v0-v6 and DescribeGroups v0-v6).
pub fn describe_group_wire(brokers: &str, group: &str, topic: &str) -> std::io::Result<WireGroup> {
    let timeout = Some(Duration::from_secs(5));
    let mut body = Vec::new();
    wire_string(&mut body, group);
    // Any broker answers FindCoordinator: the first one that does (a node may be down).
    let mut answer = Err(std::io::Error::other("no broker"));
    for broker in brokers.split(',') {
        answer = TcpStream::connect(broker).and_then(|mut s| {
            s.set_read_timeout(timeout)?;
            wire_call(&mut s, 10, 0, &body) // FindCoordinator v0
        });
        if answer.is_ok() {
            break;
        }
    }
    let found = answer?;
    let mut r = WireReader { buf: &found };
    let error = r.i16()?;
    if error != 0 {
        return Err(std::io::Error::other(format!(
            "FindCoordinator error {error}"
        )));
    }
    let _node = r.i32()?;
    let host = r.string()?;
    let port = r.i32()?;
    let mut c = TcpStream::connect((host.as_str(), port as u16))?;
    c.set_read_timeout(timeout)?;
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes());
    wire_string(&mut body, group);
    let described = wire_call(&mut c, 15, 0, &body)?; // DescribeGroups v0
    let mut r = WireReader { buf: &described };
    let groups = r.i32()?;
    if groups != 1 {
        return Err(std::io::Error::other(format!("{groups} groups described")));
    }
    let error = r.i16()?;
    if error != 0 {
        return Err(std::io::Error::other(format!(
            "DescribeGroups error {error}"
        )));
    }
    let _group_id = r.string()?;
    let state = r.string()?;
    let protocol_type = r.string()?;
    let protocol = r.string()?;
    let n = r.i32()?.max(0);
    let mut members = Vec::new();
    for _ in 0..n {
        let member_id = r.string()?;
        let client_id = r.string()?;
        let host = r.string()?;
        let _metadata = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(WireMember {
            member_id,
            client_id,
            host,
            partitions: decode_consumer_assignment(&assignment, topic)?,
        });
    }
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    Ok(WireGroup {
        state,
        protocol_type,
        protocol,
        members,
    })
}

/// The consumer protocol's assignment (version, then topics with their partitions, then user
/// data): the partitions of `topic`, sorted. Empty bytes: no assignment yet.
fn decode_consumer_assignment(bytes: &[u8], topic: &str) -> std::io::Result<Vec<i32>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = WireReader { buf: bytes };
    let _version = r.i16()?;
    let mut partitions = Vec::new();
    for _ in 0..r.i32()?.max(0) {
        let name = r.string()?;
        for _ in 0..r.i32()?.max(0) {
            let p = r.i32()?;
            if name == topic {
                partitions.push(p);
            }
        }
    }
    partitions.sort_unstable();
    Ok(partitions)
}

// ---------------------------------------------------------------------------------------------
// The fault suite (tests/chaos.rs): byte-exact topics through kcat, a process's peak memory,
// and stopping the shared services safely (only when no one else tests, always brought back).

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
        "-f",
        "%p %o %S\n%s",
    ]);
    let out = run_tool(c, None, Duration::from_secs(300));
    assert_ok(&out, "kcat -C");
    let bytes = out.stdout;
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

/// A process's peak resident memory (`VmHWM` of /proc/PID/status, in KiB), polled every 50 ms
/// by a thread until the process is gone; [`PeakRss::sample`] reads it once more (call it just
/// before killing the process).
pub struct PeakRss {
    pid: u32,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn watch_peak_rss(pid: u32) -> PeakRss {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let peak = std::sync::Arc::new(AtomicU64::new(0));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (p, s) = (peak.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            // A zombie has no VmHWM line: the process is over.
            let Some(kib) = vm_hwm_kib(pid) else { break };
            p.fetch_max(kib, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    PeakRss {
        pid,
        peak,
        stop,
        handle: Some(handle),
    }
}

impl PeakRss {
    /// Reads the peak now (the process still runs) and returns the largest seen, in KiB.
    pub fn sample(&self) -> u64 {
        if let Some(kib) = vm_hwm_kib(self.pid) {
            self.peak
                .fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
        }
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops polling; the largest peak seen, in KiB.
    pub fn finish(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A process's parent pid, from /proc/PID/stat.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// True when `ancestor` is `pid` or one of its ancestors.
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match parent_pid(pid) {
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

/// Other people's test runs against the shared services: test binaries (`target/*/deps/`),
/// `cargo test` and the benchmark driver (`bench/run.py`), except this process, its ancestors
/// and its own children. One line per process (pid and command). Only runs from this checkout
/// count (their working directory is in it): another checkout has services of its own
/// (`.local/`, its own ports), which stopping ours does not touch.
pub fn other_test_processes() -> Vec<String> {
    let me = std::process::id();
    let root = repo_root();
    let root = root.canonicalize().unwrap_or(root);
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(program) = args.first() else {
            continue;
        };
        let name = program.rsplit('/').next().unwrap_or(program);
        // metricsctl processes of a test run descend from its test binary, found here; others
        // (a demo, a stray consumer) are no tests and ride out an outage like any consumer.
        let busy = (program.contains("target/") && program.contains("/deps/"))
            || (name == "cargo"
                && matches!(args.get(1).map(String::as_str), Some("test" | "nextest")))
            || args.iter().any(|a| a.ends_with("bench/run.py"));
        let here =
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|d| d.starts_with(&root));
        // Not a zombie, not this run's own parent chain or children.
        if !busy
            || !here
            || parent_pid(pid).is_none()
            || descends_from(me, pid)
            || descends_from(pid, me)
        {
            continue;
        }
        found.push(format!("{pid} {}", args.join(" ")));
    }
    found.sort();
    found
}

/// Waits until no one else has run tests for `settle` (a few seconds: `cargo test` starts its
/// test binaries one after the other), before a test stops a shared service. Panics after
/// `limit`, naming the processes, rather than pulling a service from under someone's test.
pub fn wait_for_no_other_tests(settle: Duration, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut quiet_since = Instant::now();
    let mut last_notice = Instant::now();
    loop {
        let others = other_test_processes();
        if !others.is_empty() {
            quiet_since = Instant::now();
            assert!(
                Instant::now() < deadline,
                "other tests still use the shared services after {limit:?}; not stopping a \
                 service under them:\n{}",
                others.join("\n")
            );
            if last_notice.elapsed() >= Duration::from_secs(30) {
                eprintln!(
                    "waiting for other test runs to end before stopping a service:\n  {}",
                    others.join("\n  ")
                );
                last_notice = Instant::now();
            }
        } else if quiet_since.elapsed() >= settle {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Brings every service back (`scripts/services.sh up`, which starts only what does not run)
/// when dropped, also when the test panicked: a test that stops a shared service holds one.
pub struct ServicesRestorer;

impl Drop for ServicesRestorer {
    fn drop(&mut self) {
        // No assertion here: a panic while unwinding would abort the whole test binary.
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/services.sh"))
            .arg("up")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("services.sh up after the test failed ({status:?}): run `make up`");
        }
    }
}

/// `scripts/services.sh up`: starts whatever does not run, returns once everything answers.
pub fn services_up() {
    let out = services_sh(&["up"]);
    assert_ok(&out, "services.sh up");
}

/// Holds `.local/services.lock`, the lock every state-changing `scripts/services.sh` command
/// takes, until dropped: while a test keeps a service down, another run's `services.sh up`
/// (`make test`, `make bench`) waits for it (up to 300 s) instead of starting the service
/// under the test. Released too when the test process dies (the holder reads its stdin).
pub struct ServicesLock {
    child: Child,
}

pub fn lock_services() -> ServicesLock {
    let lock = repo_root().join(".local/services.lock");
    let mut child = Command::new("flock")
        .args(["-w", "300"])
        .arg(&lock)
        .args(["-c", "echo locked; read _"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flock (util-linux)");
    let mut line = [0u8; 7];
    let got = child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut line)
        .is_ok();
    assert!(
        got && &line == b"locked\n",
        "could not take {} within 300 s",
        lock.display()
    );
    ServicesLock { child }
}

impl Drop for ServicesLock {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // `read` ends, the shell and flock exit: released
        let _ = self.child.wait();
    }
}

/// The pid files of the current mode's Kafka nodes.
fn kafka_pid_files() -> Vec<PathBuf> {
    let run = repo_root().join(".local/run");
    match kafka_nodes() {
        1 => vec![run.join("kafka.pid")],
        n => (1..=n)
            .map(|i| run.join(format!("kafka-{i}.pid")))
            .collect(),
    }
}

/// SIGKILLs every Kafka node of the current mode (Kafka is down) and waits until they are
/// gone; returns their pids. Works under [`lock_services`] (it does not go through
/// `services.sh`); `services_up` starts them again.
pub fn kill_all_kafka() -> Vec<u32> {
    let pids: Vec<u32> = kafka_pid_files()
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no Kafka pid in {}", f.display()))
        })
        .collect();
    for pid in &pids {
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -KILL {pid} (Kafka)");
    }
    let gone = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        pids.iter().all(|p| parent_pid(*p).is_none()).then_some(())
    });
    assert!(gone.is_some(), "Kafka ({pids:?}) still runs after SIGKILL");
    pids
}

/// FerretDB's pid, from `.local/run/ferretdb.pid`.
pub fn ferretdb_pid() -> Option<u32> {
    std::fs::read_to_string(repo_root().join(".local/run/ferretdb.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// SIGKILLs FerretDB and waits until it is gone; returns its pid. `services_up` starts it again.
pub fn kill_ferretdb() -> u32 {
    let pid = ferretdb_pid().expect("FerretDB's pid file (.local/run/ferretdb.pid)");
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -KILL {pid} (FerretDB)");
    let gone = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        (parent_pid(pid).is_none()).then_some(())
    });
    assert!(
        gone.is_some(),
        "FerretDB (pid {pid}) still runs after SIGKILL"
    );
    pid
}

/// True when the database answers a ping within about 2 s.
pub fn mongo_answers(uri: &str) -> bool {
    let Ok(mut options) = mongodb::options::ClientOptions::parse(uri).run() else {
        return false;
    };
    options.server_selection_timeout = Some(Duration::from_secs(2));
    options.connect_timeout = Some(Duration::from_secs(2));
    let Ok(client) = Client::with_options(options) else {
        return false;
    };
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .run()
        .is_ok()
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of the database that can hold back chosen requests: a slow write,
// made to measure.

/// Forwards connections to `upstream`. While holding, a client message (one MongoDB wire
/// message: a little-endian length, then the rest) that contains `pattern` is kept back, and
/// with it everything after it on that connection, until released. An empty `pattern` holds
/// every message, the driver's monitoring checks included: to this proxy's clients the
/// database is frozen (as if SIGSTOPped: connections are accepted, nothing is answered) while
/// it keeps serving everyone else. Stops when dropped.
pub struct HoldingProxy {
    pub addr: String,
    holding: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HoldingProxy {
    pub fn start(upstream: &str, pattern: Vec<u8>) -> HoldingProxy {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let holding = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, n, s, upstream) = (
            holding.clone(),
            held.clone(),
            stop.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
                let (h, n, pattern) = (h.clone(), n.clone(), pattern.clone());
                std::thread::spawn(move || loop {
                    let mut len = [0u8; 4];
                    if c_read.read_exact(&mut len).is_err() {
                        let _ = s_write.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    let size = (u32::from_le_bytes(len) as usize).max(4);
                    let mut message = len.to_vec();
                    message.resize(size, 0);
                    if c_read.read_exact(&mut message[4..]).is_err() {
                        let _ = s_write.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if h.load(Ordering::SeqCst)
                        && (pattern.is_empty()
                            || message
                                .windows(pattern.len())
                                .any(|w| w == pattern.as_slice()))
                    {
                        n.fetch_add(1, Ordering::SeqCst);
                        while h.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        n.fetch_sub(1, Ordering::SeqCst);
                    }
                    if s_write.write_all(&message).is_err() {
                        return;
                    }
                });
            }
        });
        HoldingProxy {
            addr,
            holding,
            held,
            stop,
        }
    }

    /// Starts (true) or stops (false, releasing what is held) holding matching messages.
    pub fn hold(&self, on: bool) {
        self.holding.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Messages held back right now.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.hold(false);
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The bytes a MongoDB `insert` command into `collection` starts with (the command document's
/// first element, `insert: "<collection>"`, BSON-encoded).
pub fn mongo_insert_pattern(collection: &str) -> Vec<u8> {
    let mut p = b"\x02insert\x00".to_vec();
    p.extend_from_slice(&((collection.len() + 1) as i32).to_le_bytes());
    p.extend_from_slice(collection.as_bytes());
    p.push(0);
    p
}
