//! What the user types: argh structures only. Values stay text here; `settings` turns them,
//! together with the environment and `.env`, into validated settings with one set of messages.

use argh::FromArgs;

/// metricsctl: a system-metrics pipeline on Apache Kafka and MongoDB.
/// Every flag falls back to its environment variable, then to `.env`, then to a default.
#[derive(FromArgs, Debug)]
#[argh(
    note = "`metricsctl --version` (or -V) prints the version and the commit it was built from."
)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Produce(ProduceArgs),
    Consume(ConsumeArgs),
    Kpis(KpisArgs),
    Status(StatusArgs),
}

/// Simulate the fleet and send one JSON message per server and report to Kafka.
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "produce")]
pub struct ProduceArgs {
    /// kafka bootstrap brokers, host:port[,host:port] (KAFKA_BROKERS; 127.0.0.1:29092)
    #[argh(option)]
    pub brokers: Option<String>,
    /// topic to write (KAFKA_TOPIC; system-metrics-topic-<METRICS_SUFFIX>)
    #[argh(option)]
    pub topic: Option<String>,
    /// comma-separated server ids (SERVER_IDS; web01,web02,db01,app01,cache01)
    #[argh(option)]
    pub servers: Option<String>,
    /// seconds between report starts, 0 = as fast as possible (REPORTING_INTERVAL_SECONDS; 10)
    #[argh(option)]
    pub interval: Option<String>,
    /// send this many reports, then exit (REPORT_COUNT; unlimited)
    #[argh(option)]
    pub count: Option<String>,
    /// seed for reproducible values (SIMULATION_SEED; random)
    #[argh(option)]
    pub seed: Option<String>,
    /// on SIGINT/SIGTERM, keep sending reports already made for up to this many seconds (PRODUCER_DRAIN_TIMEOUT_SECONDS; 10)
    #[argh(option)]
    pub drain_timeout: Option<String>,
    /// codec of the record batches: none, gzip, snappy, lz4 or zstd (KAFKA_COMPRESSION; none)
    #[argh(option)]
    pub compression: Option<String>,
    /// serve /metrics (Prometheus), /healthz and /readyz on HOST:PORT, e.g. 0.0.0.0:9100 (METRICS_ADDR; off)
    #[argh(option)]
    pub metrics_addr: Option<String>,
    /// seconds a step may run or a service fail before /healthz answers 503 (HEALTH_THRESHOLD_SECONDS; 60)
    #[argh(option)]
    pub health_threshold: Option<String>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (KAFKA_SECURITY_PROTOCOL; PLAINTEXT)
    #[argh(option)]
    pub security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, with SASL_* (KAFKA_SASL_MECHANISM)
    #[argh(option)]
    pub sasl_mechanism: Option<String>,
    /// SASL user (KAFKA_SASL_USERNAME)
    #[argh(option)]
    pub sasl_username: Option<String>,
    /// SASL password; prefer the variable, a flag shows in the process list (KAFKA_SASL_PASSWORD)
    #[argh(option)]
    pub sasl_password: Option<String>,
    /// PEM file of the CA that signed the brokers' certificates (KAFKA_SSL_CA_LOCATION; built-in roots)
    #[argh(option)]
    pub ssl_ca_location: Option<String>,
    /// PEM client certificate for mutual TLS (KAFKA_SSL_CERTIFICATE_LOCATION)
    #[argh(option)]
    pub ssl_certificate_location: Option<String>,
    /// PEM private key of the client certificate (KAFKA_SSL_KEY_LOCATION)
    #[argh(option)]
    pub ssl_key_location: Option<String>,
}

/// Read the topic, store raw metrics in MongoDB and a KPI document per tumbling window.
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "consume")]
pub struct ConsumeArgs {
    /// kafka bootstrap brokers, host:port[,host:port] (KAFKA_BROKERS; 127.0.0.1:29092)
    #[argh(option)]
    pub brokers: Option<String>,
    /// topic to read (KAFKA_TOPIC; system-metrics-topic-<METRICS_SUFFIX>)
    #[argh(option)]
    pub topic: Option<String>,
    /// consumer group whose offsets are committed in Kafka (KAFKA_GROUP_ID; grupo_<METRICS_SUFFIX>_id)
    #[argh(option)]
    pub group: Option<String>,
    /// mongodb:// or mongodb+srv:// URI (MONGODB_URI or CONNECTION_STRING; mongodb://127.0.0.1:27017)
    #[argh(option)]
    pub mongodb_uri: Option<String>,
    /// database (MONGODB_DATABASE; monitoring)
    #[argh(option)]
    pub database: Option<String>,
    /// raw metrics collection (MONGODB_RAW_COLLECTION; system_metrics_raw_<METRICS_SUFFIX>)
    #[argh(option)]
    pub raw_collection: Option<String>,
    /// KPI collection (MONGODB_KPI_COLLECTION; system_metrics_kpis_<METRICS_SUFFIX>)
    #[argh(option)]
    pub kpi_collection: Option<String>,
    /// dead-letter collection (MONGODB_DLQ_COLLECTION; system_metrics_dlq_<METRICS_SUFFIX>)
    #[argh(option)]
    pub dlq_collection: Option<String>,
    /// valid messages per tumbling window (WINDOW_SIZE; 20)
    #[argh(option)]
    pub window_size: Option<String>,
    /// servers a window lists with their own averages, 0 to 100; the rest are only counted
    /// (SERVERS_PER_WINDOW; 100)
    #[argh(option)]
    pub servers_per_window: Option<String>,
    /// read only these partitions, e.g. 0,1, to split a topic between consumers (KAFKA_PARTITIONS; all)
    #[argh(option)]
    pub partitions: Option<String>,
    /// exit 0 after this many seconds without new messages (EXIT_WHEN_IDLE_SECONDS; never)
    #[argh(option)]
    pub exit_when_idle: Option<String>,
    /// stop after this many messages (MAX_MESSAGES; unlimited)
    #[argh(option)]
    pub max_messages: Option<String>,
    /// leave the group when the loop made no step for this many seconds, e.g. stuck on the
    /// database, and /healthz answers 503 while a step runs this long; rejoin once it answers
    /// (MAX_STEP_INTERVAL_SECONDS; 300, above 10)
    #[argh(option)]
    pub max_step_interval: Option<String>,
    /// static group membership: this consumer's stable id, e.g. the pod or host name; a restart within the session timeout keeps its partitions (KAFKA_GROUP_INSTANCE_ID; dynamic)
    #[argh(option)]
    pub group_instance_id: Option<String>,
    /// serve /metrics (Prometheus), /healthz and /readyz on HOST:PORT, e.g. 0.0.0.0:9100 (METRICS_ADDR; off)
    #[argh(option)]
    pub metrics_addr: Option<String>,
    /// seconds Kafka or the database may fail every call before /healthz answers 503; a step is stuck past --max-step-interval (HEALTH_THRESHOLD_SECONDS; 60)
    #[argh(option)]
    pub health_threshold: Option<String>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (KAFKA_SECURITY_PROTOCOL; PLAINTEXT)
    #[argh(option)]
    pub security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, with SASL_* (KAFKA_SASL_MECHANISM)
    #[argh(option)]
    pub sasl_mechanism: Option<String>,
    /// SASL user (KAFKA_SASL_USERNAME)
    #[argh(option)]
    pub sasl_username: Option<String>,
    /// SASL password; prefer the variable, a flag shows in the process list (KAFKA_SASL_PASSWORD)
    #[argh(option)]
    pub sasl_password: Option<String>,
    /// PEM file of the CA that signed the brokers' certificates (KAFKA_SSL_CA_LOCATION; built-in roots)
    #[argh(option)]
    pub ssl_ca_location: Option<String>,
    /// PEM client certificate for mutual TLS (KAFKA_SSL_CERTIFICATE_LOCATION)
    #[argh(option)]
    pub ssl_certificate_location: Option<String>,
    /// PEM private key of the client certificate (KAFKA_SSL_KEY_LOCATION)
    #[argh(option)]
    pub ssl_key_location: Option<String>,
}

/// Per partition of the topic: log bounds, the group's committed offset and lag, the member that
/// owns it, the last stored window; exit 0 when every partition is owned and its lag is under
/// --max-lag, 1 otherwise (for cron jobs and health checks).
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "status")]
pub struct StatusArgs {
    /// kafka bootstrap brokers, host:port[,host:port] (KAFKA_BROKERS; 127.0.0.1:29092)
    #[argh(option)]
    pub brokers: Option<String>,
    /// topic (KAFKA_TOPIC; system-metrics-topic-<METRICS_SUFFIX>)
    #[argh(option)]
    pub topic: Option<String>,
    /// consumer group (KAFKA_GROUP_ID; grupo_<METRICS_SUFFIX>_id)
    #[argh(option)]
    pub group: Option<String>,
    /// mongodb:// or mongodb+srv:// URI (MONGODB_URI or CONNECTION_STRING; mongodb://127.0.0.1:27017)
    #[argh(option)]
    pub mongodb_uri: Option<String>,
    /// database (MONGODB_DATABASE; monitoring)
    #[argh(option)]
    pub database: Option<String>,
    /// KPI collection (MONGODB_KPI_COLLECTION; system_metrics_kpis_<METRICS_SUFFIX>)
    #[argh(option)]
    pub kpi_collection: Option<String>,
    /// dead-letter collection (MONGODB_DLQ_COLLECTION; system_metrics_dlq_<METRICS_SUFFIX>)
    #[argh(option)]
    pub dlq_collection: Option<String>,
    /// a partition lagging by this many messages or more is unhealthy (STATUS_MAX_LAG; 10000)
    #[argh(option)]
    pub max_lag: Option<String>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (KAFKA_SECURITY_PROTOCOL; PLAINTEXT)
    #[argh(option)]
    pub security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, with SASL_* (KAFKA_SASL_MECHANISM)
    #[argh(option)]
    pub sasl_mechanism: Option<String>,
    /// SASL user (KAFKA_SASL_USERNAME)
    #[argh(option)]
    pub sasl_username: Option<String>,
    /// SASL password; prefer the variable, a flag shows in the process list (KAFKA_SASL_PASSWORD)
    #[argh(option)]
    pub sasl_password: Option<String>,
    /// PEM file of the CA that signed the brokers' certificates (KAFKA_SSL_CA_LOCATION; built-in roots)
    #[argh(option)]
    pub ssl_ca_location: Option<String>,
    /// PEM client certificate for mutual TLS (KAFKA_SSL_CERTIFICATE_LOCATION)
    #[argh(option)]
    pub ssl_certificate_location: Option<String>,
    /// PEM private key of the client certificate (KAFKA_SSL_KEY_LOCATION)
    #[argh(option)]
    pub ssl_key_location: Option<String>,
    /// one JSON object, for programs
    #[argh(switch)]
    pub json: bool,
}

/// Read the stored KPI windows.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "kpis")]
pub struct KpisArgs {
    #[argh(subcommand)]
    pub command: KpisCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum KpisCommand {
    Show(ShowArgs),
    Plot(PlotArgs),
}

/// Print the latest KPI windows, newest first.
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "show")]
pub struct ShowArgs {
    /// mongodb:// or mongodb+srv:// URI (MONGODB_URI or CONNECTION_STRING; mongodb://127.0.0.1:27017)
    #[argh(option)]
    pub mongodb_uri: Option<String>,
    /// database (MONGODB_DATABASE; monitoring)
    #[argh(option)]
    pub database: Option<String>,
    /// KPI collection (MONGODB_KPI_COLLECTION; system_metrics_kpis_<METRICS_SUFFIX>)
    #[argh(option)]
    pub kpi_collection: Option<String>,
    /// how many windows (KPIS_LIMIT; 10)
    #[argh(option)]
    pub limit: Option<String>,
    /// one JSON object per window per line, for programs
    #[argh(switch)]
    pub json: bool,
    /// keep printing new windows as they are stored, until Ctrl-C
    #[argh(switch)]
    pub follow: bool,
    /// under the table, a sparkline per KPI across the windows shown, with min and max
    #[argh(switch)]
    pub chart: bool,
}

/// Write an SVG picture of the KPI windows: a panel per KPI over window end time, alerts in red.
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "plot")]
pub struct PlotArgs {
    /// the SVG file to write (replaced if it exists)
    #[argh(option)]
    pub out: String,
    /// mongodb:// or mongodb+srv:// URI (MONGODB_URI or CONNECTION_STRING; mongodb://127.0.0.1:27017)
    #[argh(option)]
    pub mongodb_uri: Option<String>,
    /// database (MONGODB_DATABASE; monitoring)
    #[argh(option)]
    pub database: Option<String>,
    /// KPI collection (MONGODB_KPI_COLLECTION; system_metrics_kpis_<METRICS_SUFFIX>)
    #[argh(option)]
    pub kpi_collection: Option<String>,
    /// the latest N windows (KPIS_LIMIT; 100)
    #[argh(option)]
    pub limit: Option<String>,
    /// instead of --limit, the windows that ended in the last DURATION: 45s, 30m, 2h, 1d
    #[argh(option)]
    pub since: Option<String>,
}
