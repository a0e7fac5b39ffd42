//! Group members' windows between their commit and their publication: staged under a token,
//! published in order once the commit that names them went through, then forgotten.

use super::*;

impl Store {
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
                        kind: StoreErrorKind::Permanent,
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
                    kind: StoreErrorKind::Permanent,
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
    pub fn forget_staged(&self, token: &str, through: i64) -> Result<(), StoreError> {
        self.staged
            .delete_many(doc! {"token": token, "seq": {"$lte": through}})
            .run()
            .map(|_| ())
            .map_err(|e| store_error("forgetting staged windows", &e))
    }
}

/// Where group members stage their windows before publication: `{kpi}_staged`.
pub(super) fn staged_collection(kpi: &str) -> String {
    format!("{kpi}_staged")
}
