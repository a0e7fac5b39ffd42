//! Where the real services are and one test's private corner of them: the services' addresses
//! (from the environment `make test` sets, else `.local/services.env`), and [`Sandbox`], a
//! unique topic, group and database per test, removed when the test ends, with a command for
//! the binary that inherits none of the developer's settings.
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use mongodb::bson::{doc, Document};
use mongodb::sync::{Client, Database};

use super::kafka_wire;

/// Every variable the binary reads; cleared for each run so the developer's shell cannot leak in.
pub const OUR_VARS: &[&str] = &[
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
    pub fn database_address(&self) -> String {
        let rest = self.mongodb_uri.trim_start_matches("mongodb://");
        let rest = rest.rsplit('@').next().unwrap_or(rest);
        rest.split(['/', '?']).next().unwrap_or(rest).to_string()
    }

    /// A sandbox named after `label` and a random suffix, on the services of [`services`].
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

    /// The test's database.
    pub fn db(&self) -> Database {
        self.client.database(&self.database)
    }

    /// Every document of a collection of the test's database matching `filter`, in `sort` order.
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

    /// How many documents a collection of the test's database holds.
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
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.db().drop().run();
        let _ = kafka_wire::delete_topic(&self.brokers, &self.topic);
        if std::thread::panicking() || std::env::var_os("KEEP_TEST_LOGS").is_some() {
            // The logs of background processes stay for a look at what went wrong.
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
