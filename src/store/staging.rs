//! Group members' windows between their commit and their publication: staged under a token,
//! published in order once the commit that names them went through, then forgotten.
//!
//! A step's windows are staged as one document: their KPI documents as BSON, one after
//! another, compressed with zstd. FerretDB's cost follows the bytes it is sent (in a trial of
//! 2,000 windows of 20 listed servers each, one compressed document per step took a sixth of
//! the time of a document per window, to stage and to delete), and the database never looks
//! inside a staged window until it is published.

use std::io::Read;

use super::*;

/// A staged document holds windows of at most this many BSON bytes before compression (one
/// window larger than this is staged alone). A step's windows, at most about a hundred, fit
/// in one unless they list very many servers with long names.
const STAGED_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// The most a staged document may unpack to: a chunk, or one window up to the database's
/// document limit, with room to spare. Anything larger is not ours, and is refused before it
/// fills memory.
const STAGED_UNPACKED_MAX: usize = 32 * 1024 * 1024;
/// zstd's level for staged windows: the fastest, as they are read back only after a crash.
const STAGED_ZSTD_LEVEL: i32 = 1;
/// The field of a staged document that holds its windows ([`STAGED_CHUNK_BYTES`]).
const STAGED_WINDOWS: &str = "bson_zstd";
/// The field that held the one window of a staged document before windows were staged in
/// chunks (`1500b90` and earlier). Still read, so that an upgrade publishes what the
/// earlier version staged.
const STAGED_WINDOW_UNCOMPRESSED: &str = "window";

impl Store {
    /// Stages windows under `token` (`engine::Publication::AfterCommit`): each the KPI
    /// document it will be, kept in a compressed chunk (the database does not look inside it
    /// until it is published). A chunk staged already (a retried call) is left as it is.
    pub fn stage_windows(&self, token: &str, records: &[WindowRecord]) -> Result<(), StoreError> {
        let staged_at = date(OffsetDateTime::now_utc());
        let windows = records
            .iter()
            .map(|r| {
                RawDocumentBuf::from_document(&window_document(r, staged_at))
                    .map(|bson| (r.seq, bson))
                    .map_err(|e| StoreError {
                        operation: "staging windows",
                        detail: format!("window {} cannot be written as BSON: {e}", r.id()),
                        kind: StoreErrorKind::Permanent,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let docs = chunked(&windows, STAGED_CHUNK_BYTES)
            .iter()
            .map(|chunk| chunk.document(token, staged_at))
            .collect::<Result<Vec<_>, _>>()?;
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
            .find(doc! {"token": token, "$or": [
                {"first_seq": {"$lte": through}},
                {"first_seq": {"$exists": false}, "seq": {"$lte": through}},
            ]})
            .sort(doc! {"seq": 1})
            .run()
            .map_err(read_error)?
            .collect::<Result<_, _>>()
            .map_err(read_error)?;
        let mut windows = Vec::new();
        for d in &staged {
            windows.extend(
                unpack_staged(d)?
                    .into_iter()
                    .filter(|w| int(w.get("seq")).is_some_and(|seq| seq <= through)),
            );
        }
        let ids: Vec<&str> = windows
            .iter()
            .filter_map(|w| w.get_str("_id").ok())
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
        let docs: Vec<Document> = windows
            .into_iter()
            .filter(|w| w.get_str("_id").is_ok_and(|id| !published.contains(id)))
            .map(|mut w| {
                w.insert("computed_at", now);
                w
            })
            .collect();
        if docs.is_empty() {
            return Ok(0);
        }
        let outcomes = self.insert_window_documents(docs)?;
        Ok(outcomes
            .iter()
            .filter(|o| **o == WindowOutcome::Inserted)
            .count())
    }

    /// Forgets the windows staged under `token` up to `through` (they are published): the
    /// staged documents whose last window is at or before it.
    pub fn forget_staged(&self, token: &str, through: i64) -> Result<(), StoreError> {
        self.staged
            .delete_many(doc! {"token": token, "seq": {"$lte": through}})
            .run()
            .map(|_| ())
            .map_err(|e| store_error("forgetting staged windows", &e))
    }
}

/// Windows (`seq`, KPI document) in chunks of at most `limit` BSON bytes, or of one window.
fn chunked(windows: &[(i64, RawDocumentBuf)], limit: usize) -> Vec<StagedChunk> {
    let mut chunks = Vec::new();
    let mut chunk = StagedChunk::default();
    for (seq, window) in windows {
        if chunk.count > 0 && chunk.bson.len() + window.as_bytes().len() > limit {
            chunks.push(std::mem::take(&mut chunk));
        }
        chunk.add(*seq, window.as_bytes());
    }
    if chunk.count > 0 {
        chunks.push(chunk);
    }
    chunks
}

/// Windows on their way into one staged document.
#[derive(Debug, Default)]
struct StagedChunk {
    first_seq: i64,
    last_seq: i64,
    count: usize,
    /// Their KPI documents as BSON, one after another.
    bson: Vec<u8>,
}

impl StagedChunk {
    fn add(&mut self, seq: i64, window: &[u8]) {
        if self.count == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
        self.count += 1;
        self.bson.extend_from_slice(window);
    }

    /// The staged document: `_id` names its first window, `seq` its last (what
    /// [`Store::forget_staged`] compares, so a chunk goes only once all of it is published).
    fn document(&self, token: &str, staged_at: DateTime) -> Result<Document, StoreError> {
        let packed =
            zstd::bulk::compress(&self.bson, STAGED_ZSTD_LEVEL).map_err(|e| StoreError {
                operation: "staging windows",
                detail: format!(
                    "windows {} to {} cannot be compressed: {e}",
                    self.first_seq, self.last_seq
                ),
                kind: StoreErrorKind::Permanent,
            })?;
        Ok(doc! {
            "_id": staged_marker(token, self.first_seq),
            "token": token,
            "first_seq": self.first_seq,
            "seq": self.last_seq,
            "windows": self.count as i64,
            "staged_at": staged_at,
            STAGED_WINDOWS: Binary { subtype: BinarySubtype::Generic, bytes: packed },
        })
    }
}

/// The KPI documents a staged document holds, in order: a chunk's, or the one window of the
/// format before chunks.
fn unpack_staged(staged: &Document) -> Result<Vec<Document>, StoreError> {
    let refused = |why: String| StoreError {
        operation: "reading staged windows",
        detail: format!(
            "staged document {} {why}",
            staged.get_str("_id").unwrap_or("?")
        ),
        kind: StoreErrorKind::Permanent,
    };
    let binary = |field: &str| match staged.get(field) {
        Some(Bson::Binary(b)) => Some(&b.bytes),
        _ => None,
    };
    let bson = if let Some(packed) = binary(STAGED_WINDOWS) {
        let mut bson = Vec::new();
        zstd::stream::read::Decoder::new(&packed[..])
            .and_then(|d| {
                d.take(STAGED_UNPACKED_MAX as u64 + 1)
                    .read_to_end(&mut bson)
            })
            .map_err(|e| refused(format!("is not zstd: {e}")))?;
        if bson.len() > STAGED_UNPACKED_MAX {
            return Err(refused(format!(
                "unpacks to over {STAGED_UNPACKED_MAX} bytes: not staged by metricsctl"
            )));
        }
        bson
    } else if let Some(window) = binary(STAGED_WINDOW_UNCOMPRESSED) {
        window.clone()
    } else {
        return Err(refused("holds no window".to_string()));
    };
    let mut windows = Vec::new();
    let mut rest = &bson[..];
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n >= 5 && n <= rest.len())
            .ok_or_else(|| refused("holds a cut or malformed BSON document".to_string()))?;
        let window = RawDocumentBuf::from_bytes(rest[..len].to_vec())
            .and_then(|raw| raw.to_document())
            .map_err(|e| refused(format!("holds a window that is not a BSON document: {e}")))?;
        windows.push(window);
        rest = &rest[len..];
    }
    Ok(windows)
}

/// Where group members stage their windows before publication: `{kpi}_staged`.
pub(super) fn staged_collection(kpi: &str) -> String {
    format!("{kpi}_staged")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(seq: i64, filler: usize) -> (i64, RawDocumentBuf) {
        let d = doc! {"_id": format!("stream#{seq}"), "seq": seq, "filler": "x".repeat(filler)};
        (seq, RawDocumentBuf::from_document(&d).unwrap())
    }

    fn documents(windows: &[(i64, RawDocumentBuf)]) -> Vec<Document> {
        windows
            .iter()
            .map(|(_, w)| w.to_document().unwrap())
            .collect()
    }

    fn staged_at() -> DateTime {
        DateTime::from_millis(1_764_800_000_000)
    }

    #[test]
    fn a_steps_windows_are_staged_as_one_chunk_named_by_its_first_and_last() {
        let windows: Vec<_> = (7..10).map(|seq| window(seq, 100)).collect();
        let chunks = chunked(&windows, STAGED_CHUNK_BYTES);
        assert_eq!(chunks.len(), 1);
        let staged = chunks[0].document("tok", staged_at()).unwrap();
        assert_eq!(staged.get_str("_id").unwrap(), "tok#7");
        assert_eq!(staged.get_str("token").unwrap(), "tok");
        assert_eq!(staged.get_i64("first_seq").unwrap(), 7);
        assert_eq!(
            staged.get_i64("seq").unwrap(),
            9,
            "forgotten once its last is published"
        );
        assert_eq!(staged.get_i64("windows").unwrap(), 3);
        assert_eq!(unpack_staged(&staged).unwrap(), documents(&windows));
    }

    #[test]
    fn windows_repeat_field_names_so_a_chunk_compresses_well() {
        let windows: Vec<_> = (0..100).map(|seq| window(seq, 3_000)).collect();
        let staged = chunked(&windows, STAGED_CHUNK_BYTES)[0]
            .document("tok", staged_at())
            .unwrap();
        let bson: usize = windows.iter().map(|(_, w)| w.as_bytes().len()).sum();
        let packed = RawDocumentBuf::from_document(&staged)
            .unwrap()
            .as_bytes()
            .len();
        assert!(packed * 20 < bson, "{packed} bytes staged for {bson}");
    }

    #[test]
    fn chunks_end_at_the_byte_limit_and_a_larger_window_is_staged_alone() {
        let windows = vec![
            window(1, 300),
            window(2, 300),
            window(3, 300),
            window(4, 2_000),
            window(5, 10),
        ];
        let chunks = chunked(&windows, 1_000);
        let spans: Vec<(i64, i64, usize)> = chunks
            .iter()
            .map(|c| (c.first_seq, c.last_seq, c.count))
            .collect();
        assert_eq!(spans, [(1, 2, 2), (3, 3, 1), (4, 4, 1), (5, 5, 1)]);
        assert!(chunks.iter().all(|c| c.count == 1 || c.bson.len() <= 1_000));
        let unpacked: Vec<Document> = chunks
            .iter()
            .flat_map(|c| unpack_staged(&c.document("tok", staged_at()).unwrap()).unwrap())
            .collect();
        assert_eq!(unpacked, documents(&windows));
    }

    #[test]
    fn a_window_staged_by_the_format_before_chunks_is_still_read() {
        let (_, w) = window(4, 50);
        let legacy = doc! {
            "_id": "tok#4", "token": "tok", "seq": 4i64, "window_id": "stream#4",
            "staged_at": staged_at(),
            STAGED_WINDOW_UNCOMPRESSED: Binary { subtype: BinarySubtype::Generic, bytes: w.as_bytes().to_vec() },
        };
        assert_eq!(
            unpack_staged(&legacy).unwrap(),
            vec![w.to_document().unwrap()]
        );
    }

    #[test]
    fn a_staged_document_that_is_not_ours_is_refused_without_filling_memory() {
        let staged = |bytes: Vec<u8>| {
            doc! {"_id": "tok#1", STAGED_WINDOWS: Binary { subtype: BinarySubtype::Generic, bytes }}
        };
        let refusal = |d: Document| unpack_staged(&d).unwrap_err().to_string();
        // 64 MiB of zeros packs into a few KiB: a bomb, stopped at the bound.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
        assert!(bomb.len() < 64 << 10);
        let why = refusal(staged(bomb));
        assert!(
            why.contains("tok#1") && why.contains("unpacks to over"),
            "{why}"
        );
        assert!(refusal(staged(b"not zstd".to_vec())).contains("is not zstd"));
        let (_, w) = window(1, 10);
        let cut = zstd::bulk::compress(&w.as_bytes()[..w.as_bytes().len() - 3], 1).unwrap();
        assert!(refusal(staged(cut)).contains("cut or malformed"));
        let negative = zstd::bulk::compress(&(-20i32).to_le_bytes(), 1).unwrap();
        assert!(refusal(staged(negative)).contains("cut or malformed"));
        let mut bad = w.as_bytes().to_vec();
        let last = bad.len() - 1;
        bad[last] = 7; // not the document's closing 0
        let why = refusal(staged(zstd::bulk::compress(&bad, 1).unwrap()));
        assert!(why.contains("not a BSON document"), "{why}");
        let why = refusal(doc! {"_id": "tok#1", "token": "tok"});
        assert!(why.contains("holds no window"), "{why}");
    }
}
