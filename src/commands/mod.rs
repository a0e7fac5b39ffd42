//! One file per command: each wires the pure core to the Kafka and MongoDB adapters and owns
//! its loop.

pub mod consume;
pub mod kpis;
pub mod produce;
pub mod status;

use crate::settings::{SettingError, TelemetrySettings};
use crate::store::StoreError;
use crate::telemetry::{self, Exposed, MetricsServer};

/// How a command ends before its work is done: a wrong setting (exit 2), a failure at run time
/// (exit 1), a health check that found trouble and has printed it (exit 1), or a stop request
/// (exit 0). The text of each is written for the user, here and in the layers' errors it is
/// made from, and printed once by `main`.
#[derive(Debug)]
pub enum CommandError {
    /// A setting is wrong: exit 2.
    Setting(SettingError),
    /// The command failed at run time: exit 1.
    Failed(String),
    /// A health check found trouble and printed it: exit 1.
    Unhealthy,
    /// SIGINT or SIGTERM: the command stopped after the work in hand; exit 0.
    Stopped,
}

impl From<crate::engine::DriverError> for CommandError {
    fn from(e: crate::engine::DriverError) -> Self {
        match e {
            crate::engine::DriverError::Stopped => CommandError::Stopped,
            crate::engine::DriverError::Fatal(message) => CommandError::Failed(message),
        }
    }
}

impl From<crate::retrying::GaveUp> for CommandError {
    fn from(e: crate::retrying::GaveUp) -> Self {
        match e {
            crate::retrying::GaveUp::Stopped => CommandError::Stopped,
            crate::retrying::GaveUp::Permanent(message) => CommandError::Failed(message),
            // Only calls made with a reason to abandon them give up for it.
            crate::retrying::GaveUp::Abandoned => CommandError::Failed("given up".into()),
        }
    }
}

impl From<SettingError> for CommandError {
    fn from(e: SettingError) -> Self {
        CommandError::Setting(e)
    }
}

/// The current instant in UTC; the only clock the commands read for event and window times.
pub(crate) fn now_utc() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// What a failed database call says the operator should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatabaseTrouble {
    /// The server answered and refused the credentials.
    Credentials,
    /// Retrying cannot help, and it is not the credentials: an option such as TLS.
    Settings,
    /// No answer (server selection timed out, connection refused, DNS): maybe it is down.
    Unreachable,
}

/// Sorts a database failure by what can fix it. A `StoreError` keeps the driver's message, not
/// its `ErrorKind`; the driver writes an authentication error (`ErrorKind::Authentication`) as
/// "<MECHANISM> failure: <reason>" (SCRAM, PLAIN, MONGODB-X509, MONGODB-AWS, GSSAPI,
/// MONGODB-OIDC) and the store marks it, like a bad option, as permanent.
pub(crate) fn diagnose(e: &StoreError) -> DatabaseTrouble {
    if !e.is_permanent() {
        return DatabaseTrouble::Unreachable;
    }
    let detail = e.detail.to_ascii_lowercase();
    if detail.contains("authentication") || detail.contains(" failure: ") {
        DatabaseTrouble::Credentials
    } else {
        DatabaseTrouble::Settings
    }
}

/// The second half of the error line: what to check. `uri` must already be redacted.
pub(crate) fn database_hint(trouble: DatabaseTrouble, uri: &str) -> String {
    match trouble {
        DatabaseTrouble::Credentials => format!(
            "the server at {uri} refused the credentials: check the user and password in \
             MONGODB_URI (and authSource / authMechanism)"
        ),
        DatabaseTrouble::Settings => {
            format!("check the options of MONGODB_URI ({uri}), such as TLS")
        }
        DatabaseTrouble::Unreachable => {
            format!("is MongoDB running at {uri}? (`make up` starts a local one)")
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` when `--metrics-addr` asks for it; an address
/// that cannot be listened on (taken, not this machine's) is a setting error (exit 2). The
/// endpoint stops when the returned value is dropped.
pub(crate) fn serve_telemetry(
    settings: &TelemetrySettings,
    exposed: &'static dyn Exposed,
) -> Result<Option<MetricsServer>, CommandError> {
    let Some(addr) = settings.metrics_addr else {
        return Ok(None);
    };
    telemetry::serve(addr, exposed, settings.health_threshold)
        .map(Some)
        .map_err(|problem| {
            CommandError::Setting(SettingError {
                setting: "--metrics-addr (METRICS_ADDR)".into(),
                problem: format!("{problem}; pick a free port or another address"),
            })
        })
}
