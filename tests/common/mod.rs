//! Shared helpers for the integration tests: where the real services are, unique names per
//! test, running the binary, and cleaning up (the test's database and topic are removed).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kafka::client::{KafkaClient, ProduceMessage, RequiredAcks};
use mongodb::bson::{doc, Document};
use mongodb::sync::{Client, Database};

/// Every variable the binary reads; cleared for each run so the developer's shell cannot leak in.
const OUR_VARS: &[&str] = &[
    "KAFKA_BROKERS",
    "KAFKA_TOPIC",
    "KAFKA_GROUP_ID",
    "MONGODB_URI",
    "CONNECTION_STRING",
    "MONGODB_DATABASE",
    "MONGODB_RAW_COLLECTION",
    "MONGODB_KPI_COLLECTION",
    "MONGODB_DLQ_COLLECTION",
    "WINDOW_SIZE",
    "REPORTING_INTERVAL_SECONDS",
    "SERVER_IDS",
    "METRICS_SUFFIX",
    "KAFKA_PARTITIONS",
    "EXIT_WHEN_IDLE_SECONDS",
    "MAX_MESSAGES",
    "REPORT_COUNT",
    "SIMULATION_SEED",
    "KPIS_LIMIT",
    "RUST_LOG",
];

/// The services' addresses: the environment (as `make test` sets it), else `.local/services.env`.
pub fn services() -> (String, String) {
    let mut file = HashMap::new();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/services.env");
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                file.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }
    let get = |k: &str, default: &str| {
        std::env::var(k)
            .ok()
            .or_else(|| file.get(k).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    (
        get("KAFKA_BROKERS", "127.0.0.1:29092"),
        get("MONGODB_URI", "mongodb://127.0.0.1:27017"),
    )
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

    /// Produces raw payloads to one partition, in order, with the kafka crate.
    pub fn send_raw(&self, partition: i32, payloads: &[Vec<u8>]) {
        let mut client = kafka_client(&self.brokers, &self.topic);
        let messages: Vec<ProduceMessage> = payloads
            .iter()
            .map(|p| ProduceMessage::new(&self.topic, partition, None, Some(p.as_slice())))
            .collect();
        let confirms = client
            .produce_messages(RequiredAcks::All, Duration::from_secs(10), messages)
            .expect("produce");
        for c in confirms {
            for p in c.partition_confirms {
                p.offset.expect("partition accepted the messages");
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.db().drop().run();
        let _ = delete_topic(&self.brokers, &self.topic);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A kafka-crate client with the topic's metadata loaded, waiting out the "leader not
/// available" answers that follow a topic's auto-creation.
pub fn kafka_client(brokers: &str, topic: &str) -> KafkaClient {
    let mut client = KafkaClient::new(brokers.split(',').map(String::from).collect());
    client.set_group_offset_storage(Some(kafka::client::GroupOffsetStorage::Kafka));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.load_metadata(&[topic]).is_ok()
            && client
                .topics()
                .partitions(topic)
                .is_some_and(|ps| !ps.is_empty() && ps.iter().all(|p| p.leader().is_some()));
        if ready {
            return client;
        }
        assert!(Instant::now() < deadline, "topic {topic} never got leaders");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes a topic with a DeleteTopics v0 request, which the kafka crate does not offer.
pub fn delete_topic(brokers: &str, topic: &str) -> std::io::Result<()> {
    let broker = brokers.split(',').next().unwrap_or(brokers);
    let mut s = TcpStream::connect(broker)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let client_id = b"metricsctl-tests";
    let mut body = Vec::new();
    body.extend_from_slice(&20i16.to_be_bytes()); // api key: DeleteTopics
    body.extend_from_slice(&0i16.to_be_bytes()); // version 0
    body.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    body.extend_from_slice(&1i32.to_be_bytes()); // one topic
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout ms
    s.write_all(&(body.len() as i32).to_be_bytes())?;
    s.write_all(&body)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut response = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut response)?;
    Ok(())
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
