//! The engine's writes: raw metrics, dead letters and KPI windows, in batches, each idempotent
//! by a unique key.

use super::*;

impl Store {
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
    pub(super) fn insert_window_documents(
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
                                kind: StoreErrorKind::Transient,
                            })
                        }
                        None => return Err(store_error("KPI insert", &e)),
                    }
                }
            }
        }
        Ok(outcomes)
    }
}

/// One unordered `insert_many`, with the outcome of each document: a duplicate key or a
/// refusal of one document does not stop the others from being stored.
pub(super) fn insert_unordered<T: Serialize + Send + Sync, D: Borrow<T>>(
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
pub(super) fn refusals_are_errors(
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
            kind: StoreErrorKind::Transient,
        }),
        None => Ok(()),
    }
}
