//! The MongoDB adapter: the only file that imports `mongodb`. It turns the pipeline's records
//! into documents, writes them in batches, and reads KPI windows back as JSON.
//!
//! Idempotency lives in the database: raw documents are unique by `message_uuid`, dead letters
//! and KPI windows have deterministic `_id`s, so replaying a batch after a crash or a retry
//! stores nothing twice.

mod transcode;

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

/// A failed database operation, with secrets scrubbed, written for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub operation: &'static str,
    pub detail: String,
    /// The settings are wrong (bad URI option, authentication): retrying will not help.
    pub permanent: bool,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mongodb {} failed: {}", self.operation, self.detail)
    }
}

impl std::error::Error for StoreError {}

fn store_error(operation: &'static str, e: &DriverError) -> StoreError {
    let permanent = matches!(
        e.kind.as_ref(),
        ErrorKind::InvalidArgument { .. }
            | ErrorKind::Authentication { .. }
            | ErrorKind::InvalidTlsConfig { .. }
    );
    let text = match e.kind.as_ref() {
        ErrorKind::ServerSelection { message, .. } => server_selection(message),
        // The kind alone: the error's labels and source add nothing for the operator.
        kind => kind.to_string(),
    };
    StoreError {
        operation,
        // The driver's message may quote the connection string; never let a password through.
        detail: redact::scrub(&first_line(&text)),
        permanent,
    }
}

/// A server-selection failure in one short line: each server and why it did not answer,
/// instead of the driver's whole topology description.
fn server_selection(message: &str) -> String {
    let head = message.split(". Topology:").next().unwrap_or(message);
    let servers: Vec<String> = message
        .split("{ Address: ")
        .skip(1)
        .map(|server| {
            let address = server.split(',').next().unwrap_or_default().trim();
            let why = server
                .split_once("Error: ")
                .map(|(_, e)| e.trim_start_matches("Kind: "))
                .and_then(|e| e.split(", labels:").next())
                .or_else(|| {
                    server
                        .split_once("Type: ")
                        .and_then(|(_, t)| t.split([',', '}']).next())
                })
                .unwrap_or("no answer");
            format!("{address}: {}", why.trim())
        })
        .collect();
    if servers.is_empty() {
        head.to_string()
    } else {
        format!("{head} ({})", servers.join("; "))
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

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

impl Store {
    /// Parses the URI and prepares a client; no network traffic yet except the DNS lookups of a
    /// `mongodb+srv://` URI. An invalid URI is a permanent error.
    pub fn open(settings: &MongoSettings, names: &CollectionNames) -> Result<Store, StoreError> {
        let mut options = ClientOptions::parse(&settings.uri)
            .run()
            .map_err(|e| store_error("connection-string parsing", &e))?;
        options.app_name = Some("metricsctl".into());
        // Fail fast by default; a timeout written in the URI wins.
        options
            .server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        options
            .connect_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        options.heartbeat_freq.get_or_insert(SERVER_CHECK_INTERVAL);
        let client = Client::with_options(options).map_err(|e| store_error("connect", &e))?;
        let database = client.database(&settings.database);
        Ok(Store {
            raw: database.collection(&names.raw),
            raw_bytes: database.collection(&names.raw),
            kpi: database.collection(&names.kpi),
            staged: database.collection(&staged_collection(&names.kpi)),
            dlq: database.collection(&names.dlq),
            database,
        })
    }

    /// Round-trips to the server.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.database
            .run_command(doc! {"ping": 1})
            .run()
            .map(|_| ())
            .map_err(|e| store_error("ping", &e))
    }

    /// The unique index that makes raw storage idempotent, and the index a restart uses to
    /// find its stream's last window.
    pub fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = IndexOptions::builder()
            .unique(true)
            .name("message_uuid_unique".to_string())
            .build();
        self.raw
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"message_uuid": 1})
                    .options(unique)
                    .build(),
            )
            .run()
            .map_err(|e| store_error("create raw index", &e))?;
        self.kpi
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"stream": 1, "seq": -1})
                    .build(),
            )
            .run()
            .map_err(|e| store_error("create KPI index", &e))?;
        // A restart finds the furthest window of its group on its log among these alone.
        self.kpi
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"kafka.topic_id": 1, "kafka.group": 1})
                    .build(),
            )
            .run()
            .map_err(|e| store_error("create KPI index", &e))?;
        // `kpis show` sorts and `--follow` polls by the time windows were stored.
        self.kpi
            .create_index(IndexModel::builder().keys(doc! {"computed_at": 1}).build())
            .run()
            .map_err(|e| store_error("create KPI index", &e))?;
        // Publication reads and forgets one engine's staged windows up to a number.
        self.staged
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"token": 1, "seq": 1})
                    .build(),
            )
            .run()
            .map_err(|e| store_error("create staged-window index", &e))?;
        Ok(())
    }

    /// Stores a batch of raw messages with one unordered `insert_many`. Duplicates and refused
    /// documents are reported per record; the rest are stored whatever happens to those. A
    /// message whose document would be over the database's size limit (a small JSON payload can
    /// grow past 16 MiB as BSON: an array of a million zeros) is refused before it is sent, so
    /// it is dead-lettered and the rest stored.
    pub fn insert_raw(&self, records: &[RawRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
        let built: Vec<Result<RawDocumentBuf, String>> = records.iter().map(raw_document).collect();
        let fitting: Vec<&RawDocumentBuf> = built.iter().filter_map(|d| d.as_ref().ok()).collect();
        let mut stored = insert_unordered(&self.raw_bytes, fitting, "raw insert")?.into_iter();
        Ok(built
            .into_iter()
            .map(|d| match d {
                Err(why) => InsertOutcome::Refused(why),
                Ok(_) => stored.next().unwrap_or(InsertOutcome::Inserted),
            })
            .collect())
    }

    /// Where each of these `message_uuid`s was first read, for those stored.
    pub fn stored_positions(
        &self,
        uuids: &[&str],
    ) -> Result<HashMap<String, StoredPosition>, StoreError> {
        let mut found = HashMap::new();
        if uuids.is_empty() {
            return Ok(found);
        }
        let cursor = self
            .raw
            .find(doc! {"message_uuid": {"$in": uuids.to_vec()}})
            .projection(doc! {"message_uuid": 1, "kafka": 1})
            .run()
            .map_err(|e| store_error("raw lookup", &e))?;
        for d in cursor {
            let d = d.map_err(|e| store_error("raw lookup", &e))?;
            let (Ok(uuid), Ok(kafka)) = (d.get_str("message_uuid"), d.get_document("kafka")) else {
                continue;
            };
            found.insert(
                uuid.to_string(),
                StoredPosition {
                    topic: kafka.get_str("topic").unwrap_or_default().to_string(),
                    topic_id: kafka.get_str("topic_id").unwrap_or_default().to_string(),
                    partition: int(kafka.get("partition")).unwrap_or(-1) as i32,
                    offset: int(kafka.get("offset")).unwrap_or(-1),
                },
            );
        }
        Ok(found)
    }

    /// Stores dead letters; one already stored for the same position is left as it is.
    pub fn insert_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), StoreError> {
        let docs = letters.iter().map(dead_letter_document).collect();
        let outcomes = insert_unordered(&self.dlq, docs, "dead-letter insert")?;
        refusals_are_errors(&outcomes, "dead-letter insert")
    }

    /// Stores KPI windows in order, each new or already stored (a replay after a restart).
    /// Ordered, so that a failure leaves a prefix stored: a restart resumes after the last
    /// stored window of a stream, and a gap before it would lose a window's messages.
    pub fn insert_windows(
        &self,
        records: &[WindowRecord],
    ) -> Result<Vec<WindowOutcome>, StoreError> {
        // Stamped at each attempt, not when the window closed: `kpis show --follow` reads
        // windows by this time, and one stamped long before a delayed insert would slip behind
        // its cursor.
        let stored_at = date(OffsetDateTime::now_utc());
        let docs = records
            .iter()
            .map(|r| window_document(r, stored_at))
            .collect();
        self.insert_window_documents(docs)
    }

    /// The ordered insert of [`Store::insert_windows`], of documents already built.
    fn insert_window_documents(
        &self,
        docs: Vec<Document>,
    ) -> Result<Vec<WindowOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(docs.len());
        let mut rest = &docs[..];
        while !rest.is_empty() {
            match self.kpi.insert_many(rest).ordered(true).run() {
                Ok(_) => {
                    outcomes.extend(rest.iter().map(|_| WindowOutcome::Inserted));
                    break;
                }
                Err(e) => {
                    // An ordered insert stops at its first failure: the ones before it are in.
                    let first = match e.kind.as_ref() {
                        ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                            failure
                                .write_errors
                                .iter()
                                .flatten()
                                .min_by_key(|w| w.index)
                        }
                        _ => None,
                    };
                    match first {
                        Some(we) if we.code == DUPLICATE_KEY && we.index < rest.len() => {
                            outcomes.extend((0..we.index).map(|_| WindowOutcome::Inserted));
                            outcomes.push(WindowOutcome::AlreadyStored);
                            rest = &rest[we.index + 1..];
                        }
                        Some(we) => {
                            return Err(StoreError {
                                operation: "KPI insert",
                                detail: redact::scrub(&format!(
                                    "{} (code {})",
                                    we.message, we.code
                                )),
                                permanent: false,
                            })
                        }
                        None => return Err(store_error("KPI insert", &e)),
                    }
                }
            }
        }
        Ok(outcomes)
    }

    /// Stages windows under `token` (`engine::Publication::AfterCommit`): each the KPI
    /// document it will be, kept as BSON bytes (the database does not look inside it until it
    /// is published). One staged already (a retried call) is left as it is.
    pub fn stage_windows(&self, token: &str, records: &[WindowRecord]) -> Result<(), StoreError> {
        let staged_at = date(OffsetDateTime::now_utc());
        let docs = records
            .iter()
            .map(|r| {
                let window = RawDocumentBuf::from_document(&window_document(r, staged_at))
                    .map_err(|e| StoreError {
                        operation: "staging windows",
                        detail: format!("window {} cannot be written as BSON: {e}", r.id()),
                        permanent: true,
                    })?;
                Ok(doc! {
                    "_id": staged_marker(token, r.seq),
                    "token": token,
                    "seq": r.seq,
                    "window_id": r.id(),
                    "staged_at": staged_at,
                    "window": Binary { subtype: BinarySubtype::Generic, bytes: window.into_bytes() },
                })
            })
            .collect::<Result<Vec<Document>, StoreError>>()?;
        let outcomes = insert_unordered(&self.staged, docs, "staging windows")?;
        refusals_are_errors(&outcomes, "staging windows")
    }

    /// Publishes the windows staged under `token` up to `through`, in order, each stamped
    /// `computed_at` now; returns how many were stored now (the others were published
    /// already: those are looked up first, since most staged copies a resume finds are of
    /// published windows, forgotten in batches).
    pub fn publish_staged(&self, token: &str, through: i64) -> Result<usize, StoreError> {
        let read_error = |e: DriverError| store_error("reading staged windows", &e);
        let staged: Vec<Document> = self
            .staged
            .find(doc! {"token": token, "seq": {"$lte": through}})
            .sort(doc! {"seq": 1})
            .run()
            .map_err(read_error)?
            .collect::<Result<_, _>>()
            .map_err(read_error)?;
        let ids: Vec<&str> = staged
            .iter()
            .filter_map(|d| d.get_str("window_id").ok())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let mut published = std::collections::HashSet::new();
        let cursor = self
            .kpi
            .find(doc! {"_id": {"$in": &ids}})
            .projection(doc! {"_id": 1})
            .run()
            .map_err(read_error)?;
        for window in cursor {
            if let Ok(id) = window.map_err(read_error)?.get_str("_id") {
                published.insert(id.to_string());
            }
        }
        let now = date(OffsetDateTime::now_utc());
        let mut docs = Vec::new();
        for staged in staged.iter().filter(|d| {
            d.get_str("window_id")
                .is_ok_and(|id| !published.contains(id))
        }) {
            let bytes = match staged.get("window") {
                Some(Bson::Binary(b)) => b.bytes.clone(),
                _ => Vec::new(),
            };
            let mut window = RawDocumentBuf::from_bytes(bytes)
                .and_then(|raw| raw.to_document())
                .map_err(|e| StoreError {
                    operation: "reading staged windows",
                    detail: format!(
                        "staged window {} is not a BSON document: {e}",
                        staged.get_str("_id").unwrap_or("?")
                    ),
                    permanent: true,
                })?;
            window.insert("computed_at", now);
            docs.push(window);
        }
        if docs.is_empty() {
            return Ok(0);
        }
        let outcomes = self.insert_window_documents(docs)?;
        Ok(outcomes
            .iter()
            .filter(|o| **o == WindowOutcome::Inserted)
            .count())
    }

    /// Forgets the windows staged under `token` up to `through` (they are published).
    pub fn drop_staged(&self, token: &str, through: i64) -> Result<(), StoreError> {
        self.staged
            .delete_many(doc! {"token": token, "seq": {"$lte": through}})
            .run()
            .map(|_| ())
            .map_err(|e| store_error("forgetting staged windows", &e))
    }

    /// The last stored window of a stream, if any.
    pub fn last_window(&self, stream: &str) -> Result<Option<LastWindow>, StoreError> {
        let found = self
            .kpi
            .find_one(doc! {"stream": stream})
            .sort(doc! {"seq": -1})
            .projection(doc! {"seq": 1, "kafka.next_offsets": 1})
            .run()
            .map_err(|e| store_error("KPI lookup", &e))?;
        Ok(found.map(|d| {
            let seq = int(d.get("seq")).unwrap_or(0);
            let next_offsets = d
                .get_document("kafka")
                .ok()
                .and_then(|k| k.get_array("next_offsets").ok())
                .map(|arr| {
                    arr.iter()
                        .filter_map(|b| b.as_document())
                        .filter_map(|o| {
                            Some((int(o.get("partition"))? as i32, int(o.get("offset"))?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            LastWindow { seq, next_offsets }
        }))
    }

    /// Per partition, the furthest position any stored window of this group on this log
    /// recorded, whichever member stored it: a partition that moved between members resumes
    /// after every window already counted, even when the commit that followed it was lost.
    pub fn resume_positions(
        &self,
        topic_id: &str,
        group: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, StoreError> {
        // One pass over the group's windows on this log, not one sorted query per partition:
        // the sort is on a field name that depends on the partition, which no index can serve
        // for every partition, so each of those queries read the whole collection.
        let cursor = self
            .kpi
            .find(doc! {"kafka.topic_id": topic_id, "kafka.group": group})
            .projection(doc! {"kafka.resume": 1, "_id": 0})
            .run()
            .map_err(|e| store_error("KPI lookup", &e))?;
        let mut found: HashMap<i32, i64> = HashMap::new();
        for d in cursor {
            let d = d.map_err(|e| store_error("KPI lookup", &e))?;
            let Some(resume) = d
                .get_document("kafka")
                .ok()
                .and_then(|k| k.get_document("resume").ok())
            else {
                continue;
            };
            for p in partitions {
                if let Some(offset) = int(resume.get(format!("p{p}"))) {
                    let best = found.entry(*p).or_insert(offset);
                    *best = (*best).max(offset);
                }
            }
        }
        Ok(found)
    }

    /// When the latest window covering `partition` of this log and group was stored.
    pub fn last_window_at(
        &self,
        topic_id: &str,
        group: &str,
        partition: i32,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let found = self
            .kpi
            .find_one(doc! {
                "kafka.topic_id": topic_id,
                "kafka.group": group,
                "kafka.partitions.partition": partition,
            })
            .sort(doc! {"computed_at": -1})
            .projection(doc! {"computed_at": 1})
            .run()
            .map_err(|e| store_error("KPI lookup", &e))?;
        Ok(found
            .and_then(|d| d.get_datetime("computed_at").ok().copied())
            .and_then(|t| {
                OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(t.timestamp_millis()) * 1_000_000,
                )
                .ok()
            }))
    }

    /// Dead letters of `topic` received at or after `since`.
    pub fn dead_letters_since(
        &self,
        topic: &str,
        since: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.dlq
            .count_documents(doc! {"kafka.topic": topic, "received_at": {"$gte": date(since)}})
            .run()
            .map_err(|e| store_error("dead-letter count", &e))
    }

    /// The latest `limit` windows, newest first, as JSON with dates in RFC 3339.
    pub fn latest_windows(&self, limit: usize) -> Result<Vec<Value>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read_windows(doc! {}, doc! {"computed_at": -1, "seq": -1}, Some(limit))
    }

    /// Windows computed at or after `since`, oldest first (for `kpis show --follow`).
    pub fn windows_since(&self, since: OffsetDateTime) -> Result<Vec<Value>, StoreError> {
        let filter = doc! {"computed_at": {"$gte": date(since)}};
        self.read_windows(filter, doc! {"computed_at": 1, "seq": 1}, None)
    }

    /// Windows whose `window_end` is at or after `since`, at most the `limit` latest, oldest
    /// first (for `kpis plot --since`). Not indexed: a picture is drawn now and then, and an
    /// index would cost every window write.
    pub fn windows_ended_since(
        &self,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let filter = doc! {"window_end": {"$gte": date(since)}};
        let mut windows =
            self.read_windows(filter, doc! {"window_end": -1, "seq": -1}, Some(limit))?;
        windows.reverse();
        Ok(windows)
    }

    fn read_windows(
        &self,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
    ) -> Result<Vec<Value>, StoreError> {
        let read_error = |e: DriverError| store_error("KPI read", &e);
        let mut find = self.kpi.find(filter).sort(sort);
        if let Some(limit) = limit {
            find = find.limit(limit);
        }
        find.run()
            .map_err(read_error)?
            .map(|d| d.map(|d| to_json(Bson::Document(d))).map_err(read_error))
            .collect()
    }
}

/// One unordered `insert_many`, with the outcome of each document: a duplicate key or a
/// refusal of one document does not stop the others from being stored.
fn insert_unordered<T: Serialize + Send + Sync, D: Borrow<T>>(
    collection: &Collection<T>,
    docs: Vec<D>,
    operation: &'static str,
) -> Result<Vec<InsertOutcome>, StoreError> {
    let mut outcomes = vec![InsertOutcome::Inserted; docs.len()];
    if docs.is_empty() {
        return Ok(outcomes);
    }
    match collection.insert_many(docs).ordered(false).run() {
        Ok(_) => Ok(outcomes),
        Err(e) => match e.kind.as_ref() {
            ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                for we in failure.write_errors.iter().flatten() {
                    if let Some(slot) = outcomes.get_mut(we.index) {
                        *slot = if we.code == DUPLICATE_KEY {
                            InsertOutcome::AlreadyStored
                        } else {
                            InsertOutcome::Refused(format!("{} (code {})", we.message, we.code))
                        };
                    }
                }
                Ok(outcomes)
            }
            _ => Err(store_error(operation, &e)),
        },
    }
}

/// Our own documents (dead letters, windows) are never expected to be refused.
fn refusals_are_errors(
    outcomes: &[InsertOutcome],
    operation: &'static str,
) -> Result<(), StoreError> {
    match outcomes.iter().find_map(|o| match o {
        InsertOutcome::Refused(why) => Some(why),
        _ => None,
    }) {
        Some(why) => Err(StoreError {
            operation,
            detail: redact::scrub(why),
            permanent: false,
        }),
        None => Ok(()),
    }
}

/// MongoDB's largest document.
const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

fn int(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

fn date(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn kafka_position(p: &Position) -> Document {
    doc! {"topic": p.topic, "topic_id": p.topic_id, "partition": p.partition, "offset": p.offset}
}

/// Room kept in a raw document for our own fields (`_id`, `timestamp`, `received_at`, `kafka`).
const OWN_FIELDS_BYTES: usize = 4 * 1024;

/// The message's own fields as received, then `timestamp`, `received_at` and `kafka`, written
/// as BSON straight from the payload's JSON text; or why the database could not store it.
fn raw_document(r: &RawRecord) -> Result<RawDocumentBuf, String> {
    let too_large = || {
        format!(
            "the stored document would be over MongoDB's limit of {MAX_DOCUMENT_BYTES} bytes \
             (its JSON grows as BSON)"
        )
    };
    let budget = Cell::new(MAX_DOCUMENT_BYTES - OWN_FIELDS_BYTES);
    // Written as bytes directly: a `Document` converted per message would be built twice.
    let p = &r.position;
    let kafka = rawdoc! {"topic": p.topic, "topic_id": p.topic_id, "partition": p.partition, "offset": p.offset};
    // Our fields; a message field of the same name is replaced in place (and `_id` dropped),
    // so no name appears twice.
    let mut ours: Vec<(&str, Option<RawBson>)> = vec![
        (
            "timestamp",
            Some(RawBson::DateTime(date(r.message.timestamp))),
        ),
        ("received_at", Some(RawBson::DateTime(date(r.received_at)))),
        ("kafka", Some(RawBson::Document(kafka))),
    ];
    let mut d = RawDocumentBuf::new();
    // Our own `_id`: a message carrying one must not collide with another's.
    d.append("_id", ObjectId::new());
    for (name, json) in &r.message.fields {
        if name == "_id" {
            continue;
        }
        if let Some((_, value)) = ours.iter_mut().find(|(n, _)| n == name) {
            if let Some(value) = value.take() {
                d.append(name, value);
            }
            continue;
        }
        if name.contains('\0') {
            return Err(format!("field name {name:?} holds a NUL character"));
        }
        let value = transcode::json_to_bson(json, &budget).map_err(|e| match e {
            transcode::TranscodeError::TooLarge => too_large(),
            transcode::TranscodeError::NulInName => {
                format!("a field name inside {name:?} holds a NUL character")
            }
            transcode::TranscodeError::Json(why) => format!("field {name:?}: {why}"),
        })?;
        d.append(name, value);
    }
    for (name, value) in ours {
        if let Some(value) = value {
            d.append(name, value);
        }
    }
    if d.as_bytes().len() > MAX_DOCUMENT_BYTES {
        return Err(too_large());
    }
    Ok(d)
}

/// The payload as a string when it is UTF-8, else as binary.
fn payload_bson(bytes: &[u8]) -> (Bson, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Bson::String(text.to_string()), "utf8"),
        Err(_) => (
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: bytes.to_vec(),
            }),
            "binary",
        ),
    }
}

fn dead_letter_document(l: &DeadLetter) -> Document {
    let (payload, encoding) = match l.payload {
        DeadPayload::Missing => (Bson::Null, "none"),
        DeadPayload::Whole(bytes) | DeadPayload::Truncated { head: bytes, .. } => {
            payload_bson(bytes)
        }
    };
    let mut d = doc! {
        // The topic id keeps a re-created topic's offsets apart from the old log's.
        "_id": l.id(),
        "reason": l.reason,
        "reason_code": l.code.as_str(),
        "payload": payload,
        "payload_encoding": encoding,
        "kafka": kafka_position(&l.position),
        "received_at": date(l.received_at),
    };
    if let DeadPayload::Truncated { len, sha256, .. } = l.payload {
        // Too large to store whole: the head, with what identifies the whole.
        d.insert("payload_truncated", true);
        d.insert("payload_length", len as i64);
        d.insert("payload_sha256", sha256);
    }
    if let Some(first) = l.duplicate_of {
        d.insert(
            "duplicate_of",
            doc! {
                "topic": first.topic.as_str(),
                "topic_id": first.topic_id.as_str(),
                "partition": first.partition,
                "offset": first.offset,
            },
        );
    }
    d
}

/// Where group members stage their windows before publication: `{kpi}_staged`.
fn staged_collection(kpi: &str) -> String {
    format!("{kpi}_staged")
}

fn window_document(r: &WindowRecord, stored_at: DateTime) -> Document {
    let w = r.window;
    let averages = |a: &crate::window::Averages| {
        doc! {
            "avg_cpu_percent": a.avg_cpu_percent,
            "avg_memory_percent": a.avg_memory_percent,
            "avg_disk_io_mbps": a.avg_disk_io_mbps,
            "avg_network_mbps": a.avg_network_mbps,
            "total_error_count": a.total_error_count,
        }
    };
    let mut kpis = averages(&w.totals);
    kpis.insert(
        "messages_per_second",
        w.messages_per_second.map_or(Bson::Null, Bson::Double),
    );
    kpis.insert("max_cpu_percent", w.max_cpu_percent);
    kpis.insert("max_memory_percent", w.max_memory_percent);
    let servers: Vec<Document> = w
        .servers
        .iter()
        .map(|s| {
            let mut d = doc! {"server_id": &s.server_id, "message_count": s.message_count as i32};
            d.extend(averages(&s.kpis));
            d
        })
        .collect();
    let alerts: Vec<Document> = w
        .alerts
        .iter()
        .map(|a| {
            doc! {"server_id": &a.server_id, "metric": a.metric, "value": a.value, "timestamp": date(a.timestamp)}
        })
        .collect();
    let partitions: Vec<Document> = w
        .partitions
        .iter()
        .map(|p| {
            doc! {
                "partition": p.partition,
                "first_offset": p.first_offset,
                "last_offset": p.last_offset,
                "message_count": p.message_count as i32,
            }
        })
        .collect();
    let next_offsets: Vec<Document> = r
        .next_offsets
        .iter()
        .map(|(p, o)| doc! {"partition": *p, "offset": *o})
        .collect();
    // The same positions keyed by partition, so "the furthest window of partition p" is one
    // sorted lookup (`resume_positions`).
    let resume: Document = r
        .next_offsets
        .iter()
        .map(|(p, o)| (format!("p{p}"), Bson::Int64(*o)))
        .collect();
    doc! {
        "_id": r.id(),
        "computed_at": stored_at,
        "window_start": date(w.start),
        "window_end": date(w.end),
        "window_duration_s": w.duration_s,
        "message_count": w.message_count as i32,
        "kpis": kpis,
        "servers": servers,
        "servers_omitted": w.servers_omitted as i64,
        "alerts": alerts,
        "alerts_omitted": w.alerts_omitted as i64,
        "event_time": {"first": date(w.first_event), "last": date(w.last_event)},
        "kafka": {
            "topic": r.topic,
            "topic_id": r.topic_id,
            "group": r.group,
            "partitions": partitions,
            "next_offsets": next_offsets,
            "resume": resume,
        },
        "stream": r.stream,
        "seq": r.seq,
    }
}

/// BSON read back to plain JSON for people and programs: dates as RFC 3339 strings.
fn to_json(b: Bson) -> Value {
    match b {
        Bson::DateTime(d) => Value::String(
            d.try_to_rfc3339_string()
                .unwrap_or_else(|_| d.timestamp_millis().to_string()),
        ),
        Bson::Document(d) => Value::Object(
            d.into_iter()
                .map(|(k, v)| (k, to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Bson::Array(a) => Value::Array(a.into_iter().map(to_json).collect()),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Double(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        other => other.into_relaxed_extjson(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_selection_failures_fit_on_one_short_line() {
        let driver = "No available servers. Topology: { Type: Unknown, Servers: [ { Address: \
            127.0.0.1:27999, Type: Unknown, Error: Kind: I/O error: Connection refused (os error \
            111), labels: {\"RetryableError\"}, source: None, server response: None } ] }";
        assert_eq!(
            server_selection(driver),
            "No available servers (127.0.0.1:27999: I/O error: Connection refused (os error 111))"
        );
        let two = "Server selection timeout: None of the available servers suitable. Topology: { \
            Type: ReplicaSetNoPrimary, Servers: [ { Address: a:27017, Type: RsSecondary }, { \
            Address: b:27017, Type: Unknown, Error: Kind: timed out, labels: {} } ] }";
        assert_eq!(
            server_selection(two),
            "Server selection timeout: None of the available servers suitable (a:27017: \
             RsSecondary; b:27017: timed out)"
        );
        assert_eq!(server_selection("no topology here"), "no topology here");
    }

    fn raw_of(payload: &str) -> Result<Document, String> {
        let message = crate::metric::validate(payload.as_bytes()).unwrap();
        let record = RawRecord {
            message: &message,
            position: Position {
                topic: "t",
                topic_id: "id",
                partition: 2,
                offset: 7,
            },
            received_at: time::macros::datetime!(2026-11-22 18:00:01 UTC),
        };
        raw_document(&record).map(|d| d.to_document().unwrap())
    }

    const METRIC: &str = r#""server_id":"web01","timestamp_utc":"2026-11-22T18:00:00+00:00","metrics":{"cpu_percent":1,"memory_percent":2.5,"disk_io_mbps":3,"network_mbps":4,"error_count":0},"message_uuid":"u""#;

    #[test]
    fn a_raw_document_is_the_message_as_received_then_our_fields() {
        let d = raw_of(&format!(r#"{{{METRIC},"extra":{{"list":[1,2.5,"x"]}}}}"#)).unwrap();
        let names: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "_id",
                "server_id",
                "timestamp_utc",
                "metrics",
                "message_uuid",
                "extra",
                "timestamp",
                "received_at",
                "kafka"
            ]
        );
        assert_eq!(
            d.get("metrics")
                .unwrap()
                .as_document()
                .unwrap()
                .get("cpu_percent"),
            Some(&Bson::Int32(1))
        );
        assert_eq!(d.get_document("kafka").unwrap().get_i64("offset"), Ok(7));
    }

    #[test]
    fn message_fields_named_like_ours_are_replaced_in_place_never_doubled() {
        let d = raw_of(&format!(
            r#"{{"kafka":{{"topic":"spoofed"}},{METRIC},"_id":"mine","received_at":0}}"#
        ))
        .unwrap();
        let names: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "_id",
                "kafka",
                "server_id",
                "timestamp_utc",
                "metrics",
                "message_uuid",
                "received_at",
                "timestamp"
            ]
        );
        assert!(d.get_object_id("_id").is_ok());
        assert_eq!(d.get_document("kafka").unwrap().get_str("topic"), Ok("t"));
        assert!(d.get_datetime("received_at").is_ok());
    }

    #[test]
    fn a_message_whose_bson_would_exceed_the_limit_is_refused_with_a_reason() {
        let zeros = format!("[{}0]", "0,".repeat(1_500_000));
        let why = raw_of(&format!(r#"{{{METRIC},"zeros":{zeros}}}"#)).unwrap_err();
        assert!(why.contains("16777216"), "{why}");
    }

    #[test]
    fn dates_read_back_as_rfc3339() {
        let t = time::macros::datetime!(2026-11-22 18:00:00.123 UTC);
        assert_eq!(
            to_json(Bson::DateTime(date(t))),
            Value::String("2026-11-22T18:00:00.123Z".into())
        );
    }
}
