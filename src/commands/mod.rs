//! One file per command: each wires the pure core to the Kafka and MongoDB adapters and owns
//! its loop.

pub mod consume;
pub mod kpis;
pub mod produce;
pub mod status;

use crate::settings::SettingError;

/// How a command ends badly: a wrong setting (exit 2), a failure at run time (exit 1), or a
/// health check that found trouble and has printed it (exit 1).
#[derive(Debug)]
pub enum CommandError {
    Setting(SettingError),
    Failed(String),
    Unhealthy,
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
