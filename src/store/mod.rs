//! The MongoDB adapter, the only folder that imports the `mongodb` driver (settings check a URI
//! with its parser through [`uri_refusal`]): it turns the engine's
//! records into documents (`documents`), writes them in batches (`writes`, `staging`), retries
//! what is transient (`sink`, the engine's [`StoreSink`](crate::engine::StoreSink)), and reads
//! windows back for `status`, `kpis` and a resuming engine (`reads`).
//!
//! Idempotency lives in the database: raw documents are unique by `message_uuid`, dead letters
//! and KPI windows have deterministic `_id`s, so replaying a batch after a crash or a retry
//! stores nothing twice.

mod documents;
mod errors;
mod reads;
mod setup;
mod sink;
mod staging;
#[cfg(test)]
mod tests;
mod transcode;
mod writes;

pub use errors::{StoreError, StoreErrorKind};
pub use setup::uri_refusal;
pub use sink::MongoSink;

use documents::*;
use errors::*;
#[cfg(test)]
use reads::*;
use staging::*;
use writes::*;

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use mongodb::bson::{
    doc, oid::ObjectId, rawdoc, spec::BinarySubtype, Binary, Bson, DateTime, Document, RawBson,
    RawDocumentBuf,
};
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::sync::{Client, Collection, Database};
use mongodb::IndexModel;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::engine::{
    staged_marker, DeadLetter, DeadPayload, InsertOutcome, LastWindow, Position, RawRecord,
    StoredPosition, WindowOutcome, WindowRecord,
};
use crate::redact;
use crate::settings::MongoSettings;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// How long to look for a reachable server before an operation fails.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the driver's monitor checks the server, each check answering within the connect
/// timeout. The driver has no socket or operation timeout of its own (3.x: `socketTimeoutMS` is
/// not supported, `maxTimeMS` is enforced by a server that runs): a check that times out marks
/// the server unknown and interrupts the operations waiting on it. So an operation on a server
/// that stopped answering (frozen, SIGSTOPped, a dead link) fails within about this interval
/// plus the connect timeout (10 s) and is retried with backoff like any other failure; the
/// driver's default interval (10 s) would let it wait 15 s.
const SERVER_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Collection names of one pipeline.
#[derive(Debug, Clone)]
pub struct CollectionNames {
    pub raw: String,
    pub kpi: String,
    pub dlq: String,
}

pub struct Store {
    database: Database,
    raw: Collection<Document>,
    /// The raw collection for inserts: documents written as BSON bytes, not as trees.
    raw_bytes: Collection<RawDocumentBuf>,
    kpi: Collection<Document>,
    /// Windows of group members between staging and publication (`engine::Publication`):
    /// `{kpi}_staged`.
    staged: Collection<Document>,
    dlq: Collection<Document>,
}
