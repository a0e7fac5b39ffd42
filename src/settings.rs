//! Settings: each value comes from its flag, else its environment variable, else `.env`, else a
//! default; it is validated once here, so commands receive typed values they can trust. A value
//! that cannot be valid is a `SettingError`, which `main` turns into one line and exit code 2.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{ConsumeArgs, PlotArgs, ProduceArgs, ShowArgs, StatusArgs};
use crate::kafka::security::{TlsFile, TlsFiles};
use crate::kafka::{Compression, SaslCredentials, SaslMechanism, Security, SecurityProtocol};
use crate::redact;
use crate::telemetry::HealthThreshold;
use crate::window::MAX_LISTED;

pub const DEFAULT_BROKERS: &str = "127.0.0.1:29092";
pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017";
pub const DEFAULT_DATABASE: &str = "monitoring";
pub const DEFAULT_SUFFIX: &str = "iabdXX";
pub const DEFAULT_SERVERS: &str = "web01,web02,db01,app01,cache01";
pub const DEFAULT_WINDOW_SIZE: usize = 20;
pub const DEFAULT_INTERVAL_SECONDS: f64 = 10.0;
pub const DEFAULT_KPIS_LIMIT: usize = 10;
/// `kpis plot` draws more windows than `kpis show` lists by default: a curve needs points.
pub const DEFAULT_PLOT_LIMIT: usize = 100;
/// The most windows `kpis show` lists or `kpis plot` draws.
pub const MAX_KPIS_LIMIT: usize = 100_000;
pub const DEFAULT_MAX_LAG: u64 = 10_000;
pub const DEFAULT_DRAIN_TIMEOUT_SECONDS: u64 = 10;
/// How long a group member may go without a heartbeat before the coordinator removes it.
pub const GROUP_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// `--max-step-interval` by default: Java's `max.poll.interval.ms`.
pub const DEFAULT_MAX_STEP_INTERVAL: Duration = Duration::from_secs(300);
/// The longest `--max-step-interval` taken (a day).
const MAX_STEP_INTERVAL_LIMIT_SECONDS: f64 = 86_400.0;
/// How long a service may stay unreachable (and, for `produce`, a step may run) before
/// `/healthz` answers 503.
pub const DEFAULT_HEALTH_THRESHOLD_SECONDS: u64 = 60;

/// A setting that cannot be valid: which one, where it came from, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub setting: String,
    pub problem: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting {}: {}", self.setting, self.problem)
    }
}

impl std::error::Error for SettingError {}

/// Where values come from, besides the flags: the environment, then `.env`.
pub struct Sources {
    env: HashMap<String, String>,
    dotenv: HashMap<String, String>,
}

impl Sources {
    /// The process environment and `./.env` (if present). A `.env` that cannot be read or parsed
    /// is itself a setting error.
    pub fn load() -> Result<Sources, SettingError> {
        let env = std::env::vars().collect();
        let path = Path::new(".env");
        let mut dotenv = HashMap::new();
        if path.exists() {
            let entries = dotenvy::from_path_iter(path).map_err(|e| SettingError {
                setting: ".env".into(),
                problem: format!("cannot read it ({e}); fix or remove the file"),
            })?;
            for entry in entries {
                let (k, v) = entry.map_err(|e| SettingError {
                    setting: ".env".into(),
                    problem: format!("cannot parse it ({e}); each line should be NAME=value"),
                })?;
                dotenv.insert(k, v);
            }
        }
        Ok(Sources { env, dotenv })
    }

    /// Sources from explicit maps, for tests.
    pub fn from_maps(env: HashMap<String, String>, dotenv: HashMap<String, String>) -> Sources {
        Sources { env, dotenv }
    }

    /// The first of the flag, the variables (in order) in the environment, then in `.env`.
    fn pick(&self, flag: &Option<String>, flag_name: &str, vars: &[&str]) -> Option<Value> {
        if let Some(v) = flag {
            return Some(Value {
                text: v.clone(),
                origin: format!("--{flag_name}"),
            });
        }
        for (map, place) in [(&self.env, "environment"), (&self.dotenv, ".env")] {
            for var in vars {
                if let Some(v) = map.get(*var) {
                    return Some(Value {
                        text: v.clone(),
                        origin: format!("{var} (from {place})"),
                    });
                }
            }
        }
        None
    }

    fn var(&self, name: &str) -> Option<Value> {
        self.pick(&None, "", &[name])
    }
}

/// A raw value and where it came from, for error messages.
struct Value {
    text: String,
    origin: String,
}

impl Value {
    fn error(&self, problem: impl fmt::Display) -> SettingError {
        SettingError {
            setting: self.origin.clone(),
            problem: format!("{problem} (got {:?})", redact::scrub(&self.text)),
        }
    }
}

/// Where the MongoDB data lives.
#[derive(Debug, Clone, PartialEq)]
pub struct MongoSettings {
    pub uri: String,
    pub database: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProduceSettings {
    pub brokers: Vec<String>,
    /// TLS and SASL for every connection to the brokers.
    pub security: Security,
    pub topic: String,
    pub servers: Vec<String>,
    pub interval: Duration,
    pub count: Option<u64>,
    pub seed: Option<u64>,
    /// After a stop signal, how long reports already made may still be sent.
    pub drain_timeout: Duration,
    pub compression: Compression,
    /// The `/metrics`, `/healthz` and `/readyz` endpoint.
    pub telemetry: TelemetrySettings,
}

/// Where `/metrics`, `/healthz` and `/readyz` are served (`None`: not at all), and when
/// `/healthz` turns unhealthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// A step running, or a service failing without a break, this long makes `/healthz` 503:
    /// for `consume` the step's limit is `--max-step-interval`, the outage's
    /// `--health-threshold`; for `produce` both are `--health-threshold`.
    pub health_threshold: HealthThreshold,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeSettings {
    pub brokers: Vec<String>,
    /// TLS and SASL for every connection to the brokers.
    pub security: Security,
    pub topic: String,
    pub group: String,
    pub mongo: MongoSettings,
    pub raw_collection: String,
    pub kpi_collection: String,
    pub dlq_collection: String,
    pub window_size: NonZeroUsize,
    /// How many servers a KPI window lists with their own averages (0 to 100).
    pub servers_per_window: usize,
    /// `None` reads every partition of the topic.
    pub partitions: Option<Vec<i32>>,
    pub exit_when_idle: Option<Duration>,
    pub max_messages: Option<u64>,
    /// A group member whose loop made no step for this long leaves the group, so its
    /// partitions move to a member that works; it is also how long a rebalance waits for the
    /// members to rejoin. Always more than [`GROUP_SESSION_TIMEOUT`].
    pub max_step_interval: Duration,
    /// KIP-345 static membership: the same id across restarts keeps the partitions.
    pub group_instance_id: Option<String>,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KpisSettings {
    pub mongo: MongoSettings,
    pub kpi_collection: String,
    pub limit: usize,
    pub json: bool,
    pub follow: bool,
    /// Sparklines under the table (never with `json`).
    pub chart: bool,
}

/// `kpis plot`: which windows to draw and where the SVG goes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSettings {
    pub mongo: MongoSettings,
    pub kpi_collection: String,
    pub windows: PlotWindows,
    pub out: PathBuf,
}

/// Which windows `kpis plot` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotWindows {
    /// The latest N stored (`--limit`).
    Latest(usize),
    /// Those whose end is at most this long before now (`--since`).
    EndedWithin(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusSettings {
    pub brokers: Vec<String>,
    /// TLS and SASL for every connection to the brokers.
    pub security: Security,
    pub topic: String,
    pub group: String,
    pub mongo: MongoSettings,
    pub kpi_collection: String,
    pub dlq_collection: String,
    pub max_lag: u64,
    pub json: bool,
}

impl ProduceSettings {
    pub fn resolve(args: &ProduceArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        let security = kafka_security(
            src,
            &SecurityFlags {
                protocol: &args.security_protocol,
                mechanism: &args.sasl_mechanism,
                username: &args.sasl_username,
                password: &args.sasl_password,
                ca: &args.ssl_ca_location,
                certificate: &args.ssl_certificate_location,
                key: &args.ssl_key_location,
            },
        )?;
        Ok(ProduceSettings {
            brokers: brokers(src.pick(&args.brokers, "brokers", &["KAFKA_BROKERS"]))?,
            security,
            topic: topic(src.pick(&args.topic, "topic", &["KAFKA_TOPIC"]), &suffix)?,
            servers: servers(src.pick(&args.servers, "servers", &["SERVER_IDS"]))?,
            interval: match src.pick(&args.interval, "interval", &["REPORTING_INTERVAL_SECONDS"]) {
                Some(v) => seconds(&v)?,
                None => Duration::from_secs_f64(DEFAULT_INTERVAL_SECONDS),
            },
            count: src
                .pick(&args.count, "count", &["REPORT_COUNT"])
                .map(|v| positive(&v))
                .transpose()?,
            seed: src
                .pick(&args.seed, "seed", &["SIMULATION_SEED"])
                .map(|v| {
                    v.text.trim().parse::<u64>().map_err(|_| {
                        v.error("must be a whole number from 0 to 18446744073709551615")
                    })
                })
                .transpose()?,
            drain_timeout: match src.pick(
                &args.drain_timeout,
                "drain-timeout",
                &["PRODUCER_DRAIN_TIMEOUT_SECONDS"],
            ) {
                Some(v) => seconds(&v)?,
                None => Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECONDS),
            },
            compression: match src.pick(&args.compression, "compression", &["KAFKA_COMPRESSION"]) {
                Some(v) => v.text.parse().map_err(|e: String| v.error(e))?,
                None => Compression::None,
            },
            telemetry: telemetry(src, &args.metrics_addr, &args.health_threshold, None)?,
        })
    }
}

impl ConsumeSettings {
    pub fn resolve(args: &ConsumeArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        let window_size = match src.pick(&args.window_size, "window-size", &["WINDOW_SIZE"]) {
            Some(v) => NonZeroUsize::new(bounded(&v, 1_000_000)?).unwrap_or(NonZeroUsize::MIN),
            None => NonZeroUsize::new(DEFAULT_WINDOW_SIZE).unwrap_or(NonZeroUsize::MIN),
        };
        let security = kafka_security(
            src,
            &SecurityFlags {
                protocol: &args.security_protocol,
                mechanism: &args.sasl_mechanism,
                username: &args.sasl_username,
                password: &args.sasl_password,
                ca: &args.ssl_ca_location,
                certificate: &args.ssl_certificate_location,
                key: &args.ssl_key_location,
            },
        )?;
        let max_step_interval = src
            .pick(
                &args.max_step_interval,
                "max-step-interval",
                &["MAX_STEP_INTERVAL_SECONDS"],
            )
            .map(|v| max_step_interval(&v))
            .transpose()?
            .unwrap_or(DEFAULT_MAX_STEP_INTERVAL);
        Ok(ConsumeSettings {
            brokers: brokers(src.pick(&args.brokers, "brokers", &["KAFKA_BROKERS"]))?,
            security,
            topic: topic(src.pick(&args.topic, "topic", &["KAFKA_TOPIC"]), &suffix)?,
            group: group(src.pick(&args.group, "group", &["KAFKA_GROUP_ID"]), &suffix)?,
            mongo: mongo(src, &args.mongodb_uri, &args.database)?,
            raw_collection: named_collection(
                src,
                &args.raw_collection,
                "raw-collection",
                "MONGODB_RAW_COLLECTION",
                "raw",
                &suffix,
            )?,
            kpi_collection: named_collection(
                src,
                &args.kpi_collection,
                "kpi-collection",
                "MONGODB_KPI_COLLECTION",
                "kpis",
                &suffix,
            )?,
            dlq_collection: named_collection(
                src,
                &args.dlq_collection,
                "dlq-collection",
                "MONGODB_DLQ_COLLECTION",
                "dlq",
                &suffix,
            )?,
            window_size,
            servers_per_window: match src.pick(
                &args.servers_per_window,
                "servers-per-window",
                &["SERVERS_PER_WINDOW"],
            ) {
                Some(v) => v
                    .text
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= MAX_LISTED)
                    .ok_or_else(|| {
                        v.error(format!("must be a whole number from 0 to {MAX_LISTED}"))
                    })?,
                None => MAX_LISTED,
            },
            partitions: src
                .pick(&args.partitions, "partitions", &["KAFKA_PARTITIONS"])
                .map(|v| partitions(&v))
                .transpose()?,
            exit_when_idle: src
                .pick(
                    &args.exit_when_idle,
                    "exit-when-idle",
                    &["EXIT_WHEN_IDLE_SECONDS"],
                )
                .map(|v| seconds(&v))
                .transpose()?,
            max_messages: src
                .pick(&args.max_messages, "max-messages", &["MAX_MESSAGES"])
                .map(|v| positive(&v))
                .transpose()?,
            max_step_interval,
            group_instance_id: src
                .pick(
                    &args.group_instance_id,
                    "group-instance-id",
                    &["KAFKA_GROUP_INSTANCE_ID"],
                )
                .map(|v| group_instance_id(&v))
                .transpose()?,
            telemetry: telemetry(
                src,
                &args.metrics_addr,
                &args.health_threshold,
                Some(max_step_interval),
            )?,
        })
    }
}

impl StatusSettings {
    pub fn resolve(args: &StatusArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        let security = kafka_security(
            src,
            &SecurityFlags {
                protocol: &args.security_protocol,
                mechanism: &args.sasl_mechanism,
                username: &args.sasl_username,
                password: &args.sasl_password,
                ca: &args.ssl_ca_location,
                certificate: &args.ssl_certificate_location,
                key: &args.ssl_key_location,
            },
        )?;
        Ok(StatusSettings {
            brokers: brokers(src.pick(&args.brokers, "brokers", &["KAFKA_BROKERS"]))?,
            security,
            topic: topic(src.pick(&args.topic, "topic", &["KAFKA_TOPIC"]), &suffix)?,
            group: group(src.pick(&args.group, "group", &["KAFKA_GROUP_ID"]), &suffix)?,
            mongo: mongo(src, &args.mongodb_uri, &args.database)?,
            kpi_collection: named_collection(
                src,
                &args.kpi_collection,
                "kpi-collection",
                "MONGODB_KPI_COLLECTION",
                "kpis",
                &suffix,
            )?,
            dlq_collection: named_collection(
                src,
                &args.dlq_collection,
                "dlq-collection",
                "MONGODB_DLQ_COLLECTION",
                "dlq",
                &suffix,
            )?,
            max_lag: src
                .pick(&args.max_lag, "max-lag", &["STATUS_MAX_LAG"])
                .map(|v| positive(&v))
                .transpose()?
                .unwrap_or(DEFAULT_MAX_LAG),
            json: args.json,
        })
    }
}

impl KpisSettings {
    pub fn resolve(args: &ShowArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        if args.chart && args.json {
            return Err(SettingError {
                setting: "--chart".into(),
                problem: "draws for people; it cannot be combined with --json".into(),
            });
        }
        let limit = match src.pick(&args.limit, "limit", &["KPIS_LIMIT"]) {
            Some(v) => bounded(&v, MAX_KPIS_LIMIT)?,
            None => DEFAULT_KPIS_LIMIT,
        };
        Ok(KpisSettings {
            mongo: mongo(src, &args.mongodb_uri, &args.database)?,
            kpi_collection: named_collection(
                src,
                &args.kpi_collection,
                "kpi-collection",
                "MONGODB_KPI_COLLECTION",
                "kpis",
                &suffix,
            )?,
            limit,
            json: args.json,
            follow: args.follow,
            chart: args.chart,
        })
    }
}

impl PlotSettings {
    pub fn resolve(args: &PlotArgs, src: &Sources) -> Result<Self, SettingError> {
        let suffix = suffix(src)?;
        if args.limit.is_some() && args.since.is_some() {
            return Err(SettingError {
                setting: "--since".into(),
                problem: "give either --limit or --since, not both".into(),
            });
        }
        let windows = match (&args.since, src.pick(&args.limit, "limit", &["KPIS_LIMIT"])) {
            (Some(since), _) => PlotWindows::EndedWithin(span(&Value {
                text: since.clone(),
                origin: "--since".into(),
            })?),
            (None, Some(limit)) => PlotWindows::Latest(bounded(&limit, MAX_KPIS_LIMIT)?),
            (None, None) => PlotWindows::Latest(DEFAULT_PLOT_LIMIT),
        };
        let out = PathBuf::from(&args.out);
        if args.out.trim().is_empty() || out.is_dir() {
            return Err(SettingError {
                setting: "--out".into(),
                problem: format!(
                    "must name a file to write, e.g. kpis.svg (got {:?})",
                    args.out
                ),
            });
        }
        Ok(PlotSettings {
            mongo: mongo(src, &args.mongodb_uri, &args.database)?,
            kpi_collection: named_collection(
                src,
                &args.kpi_collection,
                "kpi-collection",
                "MONGODB_KPI_COLLECTION",
                "kpis",
                &suffix,
            )?,
            windows,
            out,
        })
    }
}

/// The longest `--since`: a hundred years of windows is everything there is.
const MAX_SPAN_DAYS: u64 = 36_500;

/// A span of time such as `45s`, `30m`, `2h` or `1d`: a whole number of at least 1 and a unit.
fn span(v: &Value) -> Result<Duration, SettingError> {
    let problem = || {
        v.error(format!(
            "must be a whole number of at least 1 followed by s, m, h or d, such as 30m, 2h \
             or 1d, and at most {MAX_SPAN_DAYS}d"
        ))
    };
    let text = v.text.trim();
    let unit = text.chars().last().ok_or_else(problem)?;
    let unit_seconds: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(problem()),
    };
    let number = &text[..text.len() - unit.len_utf8()];
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= 1 && number.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.checked_mul(unit_seconds))
        .filter(|s| *s <= MAX_SPAN_DAYS * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(problem)
}

/// `METRICS_SUFFIX`, from which the exercise's default names are built.
fn suffix(src: &Sources) -> Result<String, SettingError> {
    match src.var("METRICS_SUFFIX") {
        Some(v) => {
            let ok = !v.text.is_empty()
                && v.text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if ok {
                Ok(v.text)
            } else {
                Err(v.error("must be letters, digits, '_' or '-', e.g. iabd07"))
            }
        }
        None => Ok(DEFAULT_SUFFIX.to_string()),
    }
}

fn brokers(v: Option<Value>) -> Result<Vec<String>, SettingError> {
    let Some(v) = v else {
        return Ok(vec![DEFAULT_BROKERS.to_string()]);
    };
    let list = list(&v.text);
    if list.is_empty() {
        return Err(v.error("must list at least one broker as host:port"));
    }
    for b in &list {
        let valid = match b.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
            None => false,
        };
        if !valid {
            return Err(v.error(format!(
                "broker {b:?} is not host:port, e.g. 127.0.0.1:29092"
            )));
        }
    }
    Ok(list)
}

/// The Kafka security flags of a command that talks to Kafka (each falls back to its
/// variable).
struct SecurityFlags<'a> {
    protocol: &'a Option<String>,
    mechanism: &'a Option<String>,
    username: &'a Option<String>,
    password: &'a Option<String>,
    ca: &'a Option<String>,
    certificate: &'a Option<String>,
    key: &'a Option<String>,
}

/// `KAFKA_SECURITY_PROTOCOL` and what goes with it. A combination that cannot work (SASL
/// settings without a SASL protocol, TLS files without TLS, a key without its certificate) and
/// a file that cannot be used are setting errors; the password is registered as a secret
/// before anything can quote it.
fn kafka_security(src: &Sources, f: &SecurityFlags) -> Result<Security, SettingError> {
    let password = src.pick(f.password, "sasl-password", &["KAFKA_SASL_PASSWORD"]);
    if let Some(p) = &password {
        redact::register(&p.text);
    }
    let protocol_value = src.pick(
        f.protocol,
        "security-protocol",
        &["KAFKA_SECURITY_PROTOCOL"],
    );
    let protocol = match &protocol_value {
        Some(v) => v.text.parse().map_err(|e: String| v.error(e))?,
        None => SecurityProtocol::Plaintext,
    };
    let mechanism = src.pick(f.mechanism, "sasl-mechanism", &["KAFKA_SASL_MECHANISM"]);
    let username = src.pick(f.username, "sasl-username", &["KAFKA_SASL_USERNAME"]);
    let ca = src.pick(f.ca, "ssl-ca-location", &["KAFKA_SSL_CA_LOCATION"]);
    let certificate = src.pick(
        f.certificate,
        "ssl-certificate-location",
        &["KAFKA_SSL_CERTIFICATE_LOCATION"],
    );
    let key = src.pick(f.key, "ssl-key-location", &["KAFKA_SSL_KEY_LOCATION"]);
    let mismatch = |v: &Value, needs: &str| SettingError {
        setting: v.origin.clone(),
        problem: format!("needs KAFKA_SECURITY_PROTOCOL={needs}, but it is {protocol}"),
    };
    if !protocol.sasl() {
        if let Some(v) = [&mechanism, &username, &password]
            .into_iter()
            .flatten()
            .next()
        {
            return Err(mismatch(v, "SASL_SSL or SASL_PLAINTEXT"));
        }
    }
    if !protocol.tls() {
        if let Some(v) = [&ca, &certificate, &key].into_iter().flatten().next() {
            return Err(mismatch(v, "SSL or SASL_SSL"));
        }
    }
    let required = |v: Option<Value>, var: &str, what: &str| match v {
        Some(v) if !v.text.trim().is_empty() => Ok(v),
        Some(v) => Err(SettingError {
            setting: v.origin,
            problem: format!("must not be empty with {protocol}"),
        }),
        None => Err(SettingError {
            setting: var.to_string(),
            problem: format!("{protocol} needs {what}"),
        }),
    };
    let sasl = if protocol.sasl() {
        let mechanism = required(
            mechanism,
            "KAFKA_SASL_MECHANISM",
            &format!("a SASL mechanism: {}", SaslMechanism::NAMES),
        )?;
        let mechanism: SaslMechanism = mechanism
            .text
            .parse()
            .map_err(|e: String| mechanism.error(e))?;
        let username = required(username, "KAFKA_SASL_USERNAME", "a SASL user")?;
        let password = required(password, "KAFKA_SASL_PASSWORD", "the SASL user's password")?;
        Some(SaslCredentials::new(
            mechanism,
            username.text.trim().to_string(),
            password.text,
        ))
    } else {
        None
    };
    let path = |v: &Option<Value>| -> Result<Option<PathBuf>, SettingError> {
        match v {
            Some(v) if v.text.trim().is_empty() => Err(v.error("must name a PEM file")),
            Some(v) => Ok(Some(PathBuf::from(v.text.trim()))),
            None => Ok(None),
        }
    };
    let files = TlsFiles {
        ca: path(&ca)?,
        certificate: path(&certificate)?,
        key: path(&key)?,
    };
    Security::new(protocol, sasl, files).map_err(|e| {
        let (value, var) = match e.file {
            TlsFile::Ca => (&ca, "KAFKA_SSL_CA_LOCATION"),
            TlsFile::Certificate => (&certificate, "KAFKA_SSL_CERTIFICATE_LOCATION"),
            TlsFile::Key => (&key, "KAFKA_SSL_KEY_LOCATION"),
        };
        SettingError {
            setting: value
                .as_ref()
                .map_or_else(|| var.to_string(), |v| v.origin.clone()),
            problem: e.problem,
        }
    })
}

fn topic(v: Option<Value>, suffix: &str) -> Result<String, SettingError> {
    let Some(v) = v else {
        return Ok(format!("system-metrics-topic-{suffix}"));
    };
    let t = v.text.trim();
    let legal = !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if legal {
        Ok(t.to_string())
    } else {
        Err(v.error("must be 1-249 characters of letters, digits, '.', '_' or '-' (Kafka's rule)"))
    }
}

/// The consumer group, by default the exercise's `grupo_<suffix>_id`.
fn group(v: Option<Value>, suffix: &str) -> Result<String, SettingError> {
    match v {
        Some(v) => non_empty_name(&v),
        None => Ok(format!("grupo_{suffix}_id")),
    }
}

fn non_empty_name(v: &Value) -> Result<String, SettingError> {
    let t = v.text.trim();
    if t.is_empty() {
        Err(v.error("must not be empty"))
    } else {
        Ok(t.to_string())
    }
}

fn servers(v: Option<Value>) -> Result<Vec<String>, SettingError> {
    let Some(v) = v else {
        return Ok(DEFAULT_SERVERS.split(',').map(String::from).collect());
    };
    let list = list(&v.text);
    if list.is_empty() {
        return Err(v.error("must name at least one server, e.g. web01,db01"));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = list.iter().find(|s| !seen.insert(s.as_str())) {
        return Err(v.error(format!("names {dup:?} twice")));
    }
    Ok(list)
}

/// `--metrics-addr` and `--health-threshold`, shared by `produce` and `consume`. A step in
/// hand is stuck past `max_step` when given (`consume`'s `--max-step-interval`: the moment a
/// group member leaves, so `/healthz` and the group agree), else past the health threshold.
fn telemetry(
    src: &Sources,
    addr: &Option<String>,
    threshold: &Option<String>,
    max_step: Option<Duration>,
) -> Result<TelemetrySettings, SettingError> {
    let metrics_addr = src
        .pick(addr, "metrics-addr", &["METRICS_ADDR"])
        .map(|v| metrics_addr(&v))
        .transpose()?;
    let health_threshold =
        match src.pick(threshold, "health-threshold", &["HEALTH_THRESHOLD_SECONDS"]) {
            Some(v) => Some(seconds(&v)?)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| v.error("must be a number of seconds above 0"))?,
            None => Duration::from_secs(DEFAULT_HEALTH_THRESHOLD_SECONDS),
        };
    Ok(TelemetrySettings {
        metrics_addr,
        health_threshold: HealthThreshold {
            step: max_step.unwrap_or(health_threshold),
            outage: health_threshold,
        },
    })
}

/// `HOST:PORT`, the host a name or an address (`[::1]:9100` for IPv6); the name is resolved
/// here, once, so a typo is a setting error and not a failure later.
fn metrics_addr(v: &Value) -> Result<std::net::SocketAddr, SettingError> {
    use std::net::ToSocketAddrs;
    let text = v.text.trim();
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(v.error("must be HOST:PORT, e.g. 0.0.0.0:9100 or 127.0.0.1:9100"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(v.error("must be HOST:PORT with a port from 0 to 65535, e.g. 0.0.0.0:9100"));
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| v.error(format!("cannot resolve host {host:?}")))
}

/// A static member's id: Kafka takes any non-empty string up to 249 characters (the group and
/// topic name limit); control characters would only make the logs unreadable.
fn group_instance_id(v: &Value) -> Result<String, SettingError> {
    let id = v.text.trim();
    if id.is_empty() || id.len() > 249 || id.chars().any(char::is_control) {
        return Err(v.error(
            "must be 1 to 249 printable characters, e.g. the pod or host name; leave it unset \
             for a dynamic member",
        ));
    }
    Ok(id.to_string())
}

fn seconds(v: &Value) -> Result<Duration, SettingError> {
    v.text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 31_536_000.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| v.error("must be a number of seconds, 0 or more"))
}

/// More than the group's session timeout: a member's heartbeats prove it alive for that long
/// anyway, and a shorter limit would make a member leave over a write that a database
/// failover (a few seconds) holds up.
fn max_step_interval(v: &Value) -> Result<Duration, SettingError> {
    let session = GROUP_SESSION_TIMEOUT.as_secs_f64();
    v.text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > session && *s <= MAX_STEP_INTERVAL_LIMIT_SECONDS)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            v.error(format!(
                "must be a number of seconds above the group session timeout ({session} s) and \
                 at most {MAX_STEP_INTERVAL_LIMIT_SECONDS}"
            ))
        })
}

fn positive(v: &Value) -> Result<u64, SettingError> {
    v.text
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| v.error("must be a whole number of at least 1"))
}

/// A whole number from 1 to `max`.
fn bounded(v: &Value, max: usize) -> Result<usize, SettingError> {
    let n = positive(v)?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| v.error(format!("must be a whole number from 1 to {max}")))
}

/// A comma-separated list, items trimmed, empty items skipped.
fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn partitions(v: &Value) -> Result<Vec<i32>, SettingError> {
    let mut list = Vec::new();
    for part in v.text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part.parse::<i32>() {
            Ok(p) if p >= 0 => list.push(p),
            _ => return Err(v.error("must be partition numbers like 0,1,2")),
        }
    }
    list.sort_unstable();
    list.dedup();
    if list.is_empty() {
        return Err(v.error("must name at least one partition, like 0,1"));
    }
    Ok(list)
}

fn mongo(
    src: &Sources,
    uri_flag: &Option<String>,
    database_flag: &Option<String>,
) -> Result<MongoSettings, SettingError> {
    let uri = match src.pick(
        uri_flag,
        "mongodb-uri",
        &["MONGODB_URI", "CONNECTION_STRING"],
    ) {
        Some(v) => mongodb_uri(&v)?,
        None => DEFAULT_MONGODB_URI.to_string(),
    };
    let database = match src.pick(database_flag, "database", &["MONGODB_DATABASE"]) {
        Some(v) => {
            let d = v.text.trim();
            let legal =
                !d.is_empty() && d.len() < 64 && !d.chars().any(|c| "/\\. \"$*<>:|?".contains(c));
            if !legal {
                return Err(v.error(
                    "must be 1-63 characters without spaces or any of / \\ . \" $ * < > : | ?",
                ));
            }
            d.to_string()
        }
        None => DEFAULT_DATABASE.to_string(),
    };
    Ok(MongoSettings { uri, database })
}

/// Checks a MongoDB URI and registers its password as a secret, so it is masked in every later
/// log line and error. The shape is checked here, for plain messages; then the driver's own
/// parser checks every option's name and value, so a URI the driver would refuse stops the
/// program at start. That parse needs no network: a `mongodb+srv://` URI's DNS records are
/// looked up when connecting.
fn mongodb_uri(v: &Value) -> Result<String, SettingError> {
    let uri = v.text.trim().to_string();
    redact::register_uri_password(&uri);
    let rest = uri
        .strip_prefix("mongodb://")
        .or_else(|| uri.strip_prefix("mongodb+srv://"))
        .ok_or_else(|| v.error("must start with mongodb:// or mongodb+srv://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hosts.is_empty() || hosts.split(',').any(str::is_empty) || uri.contains(char::is_whitespace)
    {
        return Err(v.error("has no host; expected e.g. mongodb://127.0.0.1:27017"));
    }
    if let Err(e) = mongodb::options::ConnectionString::parse(&uri) {
        // A raw reserved character makes the driver cut the password somewhere inside it, and
        // its reason may then quote a piece (`got pa` as a port): name the characters instead.
        let raw = redact::raw_reserved_in_password(&uri);
        if !raw.is_empty() {
            let encoded: Vec<String> = raw
                .iter()
                .map(|c| format!("{c} as {}", redact::percent_encode(&c.to_string())))
                .collect();
            return Err(v.error(format!(
                "its password holds reserved characters, which must be percent-encoded: write {}",
                encoded.join(", ")
            )));
        }
        return Err(v.error(format!(
            "the MongoDB driver refuses it: {}; correct the connection string (options: \
             https://www.mongodb.com/docs/manual/reference/connection-string-options/)",
            redact::scrub(&driver_reason(&e))
        )));
    }
    Ok(uri)
}

/// The driver's reason alone, without its "Kind: ..., labels: ..." wrapping.
fn driver_reason(e: &mongodb::error::Error) -> String {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::InvalidArgument { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Collection names: MongoDB forbids `$` and the `system.` prefix.
/// A collection named by its flag or variable, else the exercise's `system_metrics_<kind>_<suffix>`.
fn named_collection(
    src: &Sources,
    flag: &Option<String>,
    flag_name: &str,
    var: &str,
    kind: &str,
    suffix: &str,
) -> Result<String, SettingError> {
    collection(
        src.pick(flag, flag_name, &[var]),
        format!("system_metrics_{kind}_{suffix}"),
    )
}

fn collection(v: Option<Value>, default: String) -> Result<String, SettingError> {
    let Some(v) = v else {
        return Ok(default);
    };
    let c = v.text.trim();
    if c.is_empty() || c.contains('$') || c.contains('\0') || c.starts_with("system.") {
        return Err(v.error("must be a non-empty name without '$', not starting with 'system.'"));
    }
    Ok(c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(env: &[(&str, &str)], dotenv: &[(&str, &str)]) -> Sources {
        let m = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Sources::from_maps(m(env), m(dotenv))
    }

    #[test]
    fn defaults_follow_the_exercise_names() {
        let c = ConsumeSettings::resolve(&ConsumeArgs::default(), &src(&[], &[])).unwrap();
        assert_eq!(c.brokers, ["127.0.0.1:29092"]);
        assert_eq!(c.topic, "system-metrics-topic-iabdXX");
        assert_eq!(c.group, "grupo_iabdXX_id");
        assert_eq!(c.raw_collection, "system_metrics_raw_iabdXX");
        assert_eq!(c.kpi_collection, "system_metrics_kpis_iabdXX");
        assert_eq!(c.dlq_collection, "system_metrics_dlq_iabdXX");
        assert_eq!(c.mongo.uri, "mongodb://127.0.0.1:27017");
        assert_eq!(c.mongo.database, "monitoring");
        assert_eq!(c.window_size.get(), 20);
        assert_eq!(c.partitions, None);
        let p = ProduceSettings::resolve(&ProduceArgs::default(), &src(&[], &[])).unwrap();
        assert_eq!(p.servers, ["web01", "web02", "db01", "app01", "cache01"]);
        assert_eq!(p.interval, Duration::from_secs(10));
        assert_eq!((p.count, p.seed), (None, None));
    }

    #[test]
    fn metrics_endpoint_and_static_membership_settings() {
        let c = ConsumeSettings::resolve(&ConsumeArgs::default(), &src(&[], &[])).unwrap();
        assert_eq!(c.telemetry.metrics_addr, None, "off by default");
        assert_eq!(
            c.telemetry.health_threshold,
            HealthThreshold {
                step: Duration::from_secs(300),
                outage: Duration::from_secs(60)
            },
            "a step is stuck past the max step interval, a service down past 60 s"
        );
        assert_eq!(c.group_instance_id, None, "dynamic by default");
        let c = ConsumeSettings::resolve(
            &ConsumeArgs::default(),
            &src(
                &[
                    ("METRICS_ADDR", "127.0.0.1:9100"),
                    ("HEALTH_THRESHOLD_SECONDS", "2.5"),
                    ("MAX_STEP_INTERVAL_SECONDS", "15"),
                    ("KAFKA_GROUP_INSTANCE_ID", " consumer-0 "),
                ],
                &[],
            ),
        )
        .unwrap();
        assert_eq!(
            c.telemetry.metrics_addr,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            c.telemetry.health_threshold,
            HealthThreshold {
                step: Duration::from_secs(15),
                outage: Duration::from_millis(2500)
            }
        );
        assert_eq!(c.group_instance_id.as_deref(), Some("consumer-0"));
        let p = ProduceSettings::resolve(
            &ProduceArgs {
                metrics_addr: Some("[::1]:0".into()),
                ..Default::default()
            },
            &src(&[], &[]),
        )
        .unwrap();
        assert_eq!(p.telemetry.metrics_addr, Some("[::1]:0".parse().unwrap()));
        assert_eq!(
            p.telemetry.health_threshold,
            HealthThreshold {
                step: Duration::from_secs(60),
                outage: Duration::from_secs(60)
            },
            "produce has no max step interval: a Produce request stuck 60 s is"
        );
        for (var, bad) in [
            ("METRICS_ADDR", "9100"),
            ("METRICS_ADDR", "127.0.0.1:65536"),
            ("METRICS_ADDR", ":9100"),
            ("HEALTH_THRESHOLD_SECONDS", "0"),
            ("KAFKA_GROUP_INSTANCE_ID", "  "),
        ] {
            let e = ConsumeSettings::resolve(&ConsumeArgs::default(), &src(&[(var, bad)], &[]))
                .unwrap_err();
            assert!(e.setting.starts_with(var), "{var}={bad}: {e}");
        }
    }

    #[test]
    fn the_suffix_names_everything() {
        let c = ConsumeSettings::resolve(
            &ConsumeArgs::default(),
            &src(&[("METRICS_SUFFIX", "iabd07")], &[]),
        )
        .unwrap();
        assert_eq!(c.topic, "system-metrics-topic-iabd07");
        assert_eq!(c.group, "grupo_iabd07_id");
        assert_eq!(c.raw_collection, "system_metrics_raw_iabd07");
    }

    #[test]
    fn flag_beats_environment_beats_dotenv() {
        let s = src(
            &[("WINDOW_SIZE", "5")],
            &[("WINDOW_SIZE", "7"), ("KAFKA_TOPIC", "from-dotenv")],
        );
        let c = ConsumeSettings::resolve(&ConsumeArgs::default(), &s).unwrap();
        assert_eq!(c.window_size.get(), 5);
        assert_eq!(c.topic, "from-dotenv");
        let args = ConsumeArgs {
            window_size: Some("3".into()),
            ..Default::default()
        };
        assert_eq!(
            ConsumeSettings::resolve(&args, &s)
                .unwrap()
                .window_size
                .get(),
            3
        );
    }

    #[test]
    fn connection_string_is_an_alias_that_mongodb_uri_overrides() {
        let s = src(&[("CONNECTION_STRING", "mongodb://alias-host:27017")], &[]);
        let k = KpisSettings::resolve(&ShowArgs::default(), &s).unwrap();
        assert_eq!(k.mongo.uri, "mongodb://alias-host:27017");
        let s = src(
            &[
                ("CONNECTION_STRING", "mongodb://alias-host"),
                ("MONGODB_URI", "mongodb://main-host"),
            ],
            &[],
        );
        let k = KpisSettings::resolve(&ShowArgs::default(), &s).unwrap();
        assert_eq!(k.mongo.uri, "mongodb://main-host");
    }

    #[test]
    fn max_step_interval_defaults_to_five_minutes_and_takes_fractions() {
        let n = |env: &[(&str, &str)]| {
            ConsumeSettings::resolve(&ConsumeArgs::default(), &src(env, &[]))
                .unwrap()
                .max_step_interval
        };
        assert_eq!(n(&[]), Duration::from_secs(300));
        assert_eq!(
            n(&[("MAX_STEP_INTERVAL_SECONDS", " 15 ")]),
            Duration::from_secs(15)
        );
        assert_eq!(
            n(&[("MAX_STEP_INTERVAL_SECONDS", "10.5")]),
            Duration::from_millis(10_500)
        );
    }

    #[test]
    fn servers_per_window_defaults_to_the_most_listed_and_takes_zero() {
        let n = |env: &[(&str, &str)]| {
            ConsumeSettings::resolve(&ConsumeArgs::default(), &src(env, &[]))
                .unwrap()
                .servers_per_window
        };
        assert_eq!(n(&[]), MAX_LISTED);
        assert_eq!(n(&[("SERVERS_PER_WINDOW", "0")]), 0);
        assert_eq!(n(&[("SERVERS_PER_WINDOW", " 7 ")]), 7);
    }

    #[test]
    fn invalid_values_name_the_setting_and_its_origin() {
        let bad = |env: &[(&str, &str)]| {
            ConsumeSettings::resolve(&ConsumeArgs::default(), &src(env, &[]))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(&[("WINDOW_SIZE", "0")]),
            "invalid setting WINDOW_SIZE (from environment): must be a whole number of at least 1 (got \"0\")"
        );
        assert!(bad(&[("MONGODB_URI", "http://x")]).contains("must start with mongodb://"));
        assert!(bad(&[("MONGODB_URI", "mongodb://")]).contains("has no host"));
        assert!(bad(&[("KAFKA_BROKERS", "localhost")]).contains("not host:port"));
        assert!(bad(&[("KAFKA_PARTITIONS", "0,x")]).contains("partition numbers"));
        assert_eq!(
            bad(&[("SERVERS_PER_WINDOW", "101")]),
            "invalid setting SERVERS_PER_WINDOW (from environment): must be a whole number from 0 to 100 (got \"101\")"
        );
        assert!(bad(&[("EXIT_WHEN_IDLE_SECONDS", "-1")]).contains("seconds"));
        for v in ["10", "5", "-1", "x", "NaN", "86401"] {
            assert!(
                bad(&[("MAX_STEP_INTERVAL_SECONDS", v)])
                    .starts_with("invalid setting MAX_STEP_INTERVAL_SECONDS (from environment): must be a number of seconds above the group session timeout (10 s)"),
                "{v}"
            );
        }
        assert!(bad(&[("KAFKA_TOPIC", "bad topic")]).contains("Kafka's rule"));
        assert!(bad(&[("MONGODB_RAW_COLLECTION", "a$b")]).contains("'$'"));
        let e = ProduceSettings::resolve(
            &ProduceArgs {
                servers: Some(" , ".into()),
                ..Default::default()
            },
            &src(&[], &[]),
        )
        .unwrap_err();
        assert_eq!(e.setting, "--servers");
        assert!(e.problem.contains("at least one server"));
    }

    #[test]
    fn kpis_plot_takes_a_limit_or_a_span_of_time_but_not_both() {
        let plot =
            |args: PlotArgs, env: &[(&str, &str)]| PlotSettings::resolve(&args, &src(env, &[]));
        let args = |limit: Option<&str>, since: Option<&str>| PlotArgs {
            out: "kpis.svg".into(),
            limit: limit.map(String::from),
            since: since.map(String::from),
            ..Default::default()
        };
        let windows = |a, env| plot(a, env).map(|p| p.windows);
        assert_eq!(
            windows(args(None, None), &[]),
            Ok(PlotWindows::Latest(DEFAULT_PLOT_LIMIT))
        );
        assert_eq!(
            windows(args(None, None), &[("KPIS_LIMIT", "7")]),
            Ok(PlotWindows::Latest(7))
        );
        assert_eq!(
            windows(args(Some("3"), None), &[]),
            Ok(PlotWindows::Latest(3))
        );
        // A flag beats the environment: --since with KPIS_LIMIT set is not a conflict.
        let minutes = |m: u64| Ok(PlotWindows::EndedWithin(Duration::from_secs(m * 60)));
        assert_eq!(
            windows(args(None, Some("30m")), &[("KPIS_LIMIT", "7")]),
            minutes(30)
        );
        assert_eq!(windows(args(None, Some(" 2h ")), &[]), minutes(120));
        assert_eq!(windows(args(None, Some("1d")), &[]), minutes(1440));
        assert_eq!(
            windows(args(None, Some("45s")), &[]),
            Ok(PlotWindows::EndedWithin(Duration::from_secs(45)))
        );

        let both = plot(args(Some("3"), Some("1h")), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            both,
            "invalid setting --since: give either --limit or --since, not both"
        );
        for bad in [
            "", "h", "0m", "-1h", "+1h", "1.5h", "90", "2 h", "1w", "2ħ", "36501d",
        ] {
            let e = plot(args(None, Some(bad)), &[]).unwrap_err();
            assert_eq!(e.setting, "--since", "{bad}");
            assert!(e.problem.contains("followed by s, m, h or d"), "{bad}: {e}");
        }
        assert!(plot(args(None, Some("36500d")), &[]).is_ok());
        for out in ["", " ", "."] {
            let e = plot(
                PlotArgs {
                    out: out.into(),
                    ..Default::default()
                },
                &[],
            )
            .unwrap_err();
            assert_eq!(e.setting, "--out", "{out:?}");
        }
    }

    #[test]
    fn kpis_show_draws_sparklines_for_people_only() {
        let show = |chart, json| {
            KpisSettings::resolve(
                &ShowArgs {
                    chart,
                    json,
                    ..Default::default()
                },
                &src(&[], &[]),
            )
        };
        assert!(show(true, false).unwrap().chart);
        assert!(!show(false, true).unwrap().chart);
        let e = show(true, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid setting --chart: draws for people; it cannot be combined with --json"
        );
    }

    #[test]
    fn a_uri_password_never_appears_in_a_setting_error() {
        let e = ConsumeSettings::resolve(
            &ConsumeArgs {
                mongodb_uri: Some("mongodb://user:pa55-unit@".into()),
                ..Default::default()
            },
            &src(&[], &[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has no host"), "{e}");
        assert!(!e.contains("pa55-unit"), "{e}");
    }

    #[test]
    fn the_drivers_parser_checks_uri_options_at_start_without_the_password() {
        let bad = |uri: &str| {
            KpisSettings::resolve(&ShowArgs::default(), &src(&[("MONGODB_URI", uri)], &[]))
                .unwrap_err()
        };
        let e = bad("mongodb://u:Unit-Secret-3@127.0.0.1:27017/?badoption=1");
        assert_eq!(e.setting, "MONGODB_URI (from environment)");
        assert!(
            e.problem
                .starts_with("the MongoDB driver refuses it: badoption is an invalid option;"),
            "{e}"
        );
        assert!(!e.to_string().contains("Unit-Secret-3"), "{e}");
        assert!(
            !e.to_string().contains("labels"),
            "the driver's wrapping: {e}"
        );
        assert!(bad("mongodb://h/?retryWrites=maybe")
            .problem
            .contains("must be a boolean"));
        assert!(bad("mongodb://h/?authMechanism=FOO")
            .problem
            .contains("invalid mechanism string: FOO"));
        assert!(bad("mongodb+srv://h.example.net:27017/")
            .problem
            .contains("port cannot be specified"));
        let e = bad("mongodb://u:a:b-Unit-Secret-4@h/");
        assert!(
            e.problem
                .contains("must be percent-encoded: write : as %3A"),
            "{e}"
        );
        assert!(!e.to_string().contains("Unit-Secret-4"), "{e}");
    }

    #[test]
    fn uris_the_driver_takes_are_kept_as_written() {
        for uri in [
            "mongodb://127.0.0.1:27017",
            "mongodb://u:p%40ss@a:27017,b:27018/db?replicaSet=rs0&authSource=admin&w=majority",
            "mongodb://chaos:x@127.0.0.1:27017/?authMechanism=PLAIN&authSource=$external",
            // No DNS lookup at start: the SRV records are read when connecting.
            "mongodb+srv://alice:s3cr%40t@cluster0.example.net/db?retryWrites=true",
        ] {
            let k = KpisSettings::resolve(&ShowArgs::default(), &src(&[("MONGODB_URI", uri)], &[]))
                .unwrap();
            assert_eq!(k.mongo.uri, uri);
        }
    }

    #[test]
    fn partitions_are_sorted_and_unique() {
        let c = ConsumeSettings::resolve(
            &ConsumeArgs {
                partitions: Some("2, 0,2".into()),
                ..Default::default()
            },
            &src(&[], &[]),
        )
        .unwrap();
        assert_eq!(c.partitions, Some(vec![0, 2]));
    }

    #[test]
    fn kafka_security_defaults_to_plaintext() {
        let p = ProduceSettings::resolve(&ProduceArgs::default(), &src(&[], &[])).unwrap();
        assert_eq!(p.security, Security::plaintext());
    }

    #[test]
    fn sasl_settings_make_credentials_and_keep_the_password_secret() {
        let s = src(
            &[
                ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
                ("KAFKA_SASL_USERNAME", "alice"),
                ("KAFKA_SASL_PASSWORD", "Unit-Kafka-Pass-1"),
            ],
            &[],
        );
        let c = ConsumeSettings::resolve(&ConsumeArgs::default(), &s).unwrap();
        assert_eq!(c.security.protocol(), SecurityProtocol::SaslPlaintext);
        let sasl = c.security.sasl().unwrap();
        assert_eq!(
            (sasl.mechanism, sasl.username.as_str()),
            (SaslMechanism::ScramSha512, "alice")
        );
        assert_eq!(sasl.password(), "Unit-Kafka-Pass-1");
        assert!(!format!("{c:?}").contains("Unit-Kafka-Pass-1"));
        assert_eq!(redact::scrub("refused Unit-Kafka-Pass-1"), "refused ****");
        // A flag beats the variable.
        let args = StatusArgs {
            sasl_username: Some("bob".into()),
            ..Default::default()
        };
        let st = StatusSettings::resolve(&args, &s).unwrap();
        assert_eq!(st.security.sasl().unwrap().username, "bob");
    }

    #[test]
    fn security_combinations_that_cannot_work_are_refused_in_one_line() {
        let bad = |env: &[(&str, &str)]| {
            ProduceSettings::resolve(&ProduceArgs::default(), &src(env, &[]))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(&[("KAFKA_SECURITY_PROTOCOL", "TLS")]),
            "invalid setting KAFKA_SECURITY_PROTOCOL (from environment): must be PLAINTEXT, SSL, \
             SASL_PLAINTEXT or SASL_SSL (got \"TLS\")"
        );
        assert_eq!(
            bad(&[
                ("KAFKA_SECURITY_PROTOCOL", "SSL"),
                ("KAFKA_SASL_USERNAME", "alice")
            ]),
            "invalid setting KAFKA_SASL_USERNAME (from environment): needs \
             KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT, but it is SSL"
        );
        let e = bad(&[("KAFKA_SASL_PASSWORD", "Unit-Kafka-Pass-2")]);
        assert!(
            e.contains("KAFKA_SASL_PASSWORD (from environment): needs"),
            "{e}"
        );
        assert!(!e.contains("Unit-Kafka-Pass-2"), "{e}");
        assert_eq!(
            bad(&[("KAFKA_SSL_CA_LOCATION", "/tmp/ca.pem")]),
            "invalid setting KAFKA_SSL_CA_LOCATION (from environment): needs \
             KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, but it is PLAINTEXT"
        );
        assert_eq!(
            bad(&[("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")]),
            "invalid setting KAFKA_SASL_MECHANISM: SASL_SSL needs a SASL mechanism: PLAIN, \
             SCRAM-SHA-256 or SCRAM-SHA-512"
        );
        assert!(bad(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "GSSAPI")
        ])
        .contains("must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (got \"GSSAPI\")"));
        assert_eq!(
            bad(&[
                ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("KAFKA_SASL_MECHANISM", "PLAIN"),
                ("KAFKA_SASL_USERNAME", "alice"),
            ]),
            "invalid setting KAFKA_SASL_PASSWORD: SASL_SSL needs the SASL user's password"
        );
        assert_eq!(
            bad(&[
                ("KAFKA_SECURITY_PROTOCOL", "SSL"),
                ("KAFKA_SSL_KEY_LOCATION", "/tmp/key.pem")
            ]),
            "invalid setting KAFKA_SSL_KEY_LOCATION (from environment): a private key needs its \
             certificate (KAFKA_SSL_CERTIFICATE_LOCATION)"
        );
        let e = bad(&[
            ("KAFKA_SECURITY_PROTOCOL", "SSL"),
            ("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
        ]);
        assert!(
            e.starts_with(
                "invalid setting KAFKA_SSL_CA_LOCATION (from environment): cannot read \
                 /nonexistent/ca.pem"
            ),
            "{e}"
        );
    }
}
