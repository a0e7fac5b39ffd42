//! Settings: each value comes from its flag, else its environment variable, else `.env`, else a
//! default; it is validated once here, so commands receive typed values they can trust. A value
//! that cannot be valid is a `SettingError`, which `main` turns into one line and exit code 2.
//!
//! Here: the sources ([`Sources`]: environment, `.env`), the defaults and [`SettingError`].
//! `commands` resolves each command's settings from its flags; `kafka`, `mongo` and `telemetry`
//! check the values of their kind; `values` holds the parsers of plain numbers, spans and lists.

mod commands;
mod kafka;
mod mongo;
mod telemetry;
#[cfg(test)]
mod tests;
mod values;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::redact;

pub use commands::{
    ConsumeSettings, KpisSettings, PlotSettings, PlotWindows, ProduceSettings, StatusSettings,
};
pub use mongo::MongoSettings;
pub use telemetry::TelemetrySettings;

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
