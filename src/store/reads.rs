//! What `status`, `kpis` and a resuming engine read back: the last windows of a stream, the
//! furthest positions of a group, dead letters, windows as JSON.

use super::*;

impl Store {
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
    pub fn furthest_positions(
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

/// BSON read back to plain JSON for people and programs: dates as RFC 3339 strings.
pub(super) fn to_json(b: Bson) -> Value {
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
