//! `metricsctl kpis`: the stored KPI windows read back: `show` lists them (a table, JSON lines,
//! sparklines), `plot` draws them as an SVG file.

mod plot;
mod show;

pub use plot::plot;
pub use show::show;

use super::{database_hint, diagnose, CommandError};
use crate::redact::redact_uri;
use crate::settings::{MongoSettings, SettingError};
use crate::store::{CollectionNames, Store, StoreError};

/// A reader of the KPI collection; a URI the driver refuses is a setting error (exit 2).
fn open_store(mongo: &MongoSettings, kpi_collection: &str) -> Result<Store, CommandError> {
    let names = CollectionNames {
        raw: String::new(),
        kpi: kpi_collection.to_string(),
        dlq: String::new(),
    };
    Store::open(mongo, &names).map_err(|e| {
        CommandError::Setting(SettingError {
            setting: "MONGODB_URI".into(),
            problem: e.detail,
        })
    })
}

/// A failed read as the line the user sees: what failed and what to check.
fn read_failure(mongo: &MongoSettings) -> impl Fn(StoreError) -> CommandError + '_ {
    move |e: StoreError| {
        let hint = database_hint(diagnose(&e), &redact_uri(&mongo.uri));
        CommandError::Failed(format!("{e}; {hint}"))
    }
}

/// What both commands print for an empty collection (and exit 0): there is nothing wrong,
/// only nothing yet.
fn no_windows_yet(mongo: &MongoSettings, kpi_collection: &str) -> String {
    format!(
        "No KPI windows yet in {}.{kpi_collection}: run `metricsctl consume` first.",
        mongo.database
    )
}
