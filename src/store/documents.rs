//! The document schemas: how a raw metric, a dead letter and a KPI window are written as BSON.

use super::*;

/// MongoDB's largest document.
pub(super) const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

pub(super) fn int(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

pub(super) fn date(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub(super) fn kafka_position(p: &Position) -> Document {
    doc! {"topic": p.topic, "topic_id": p.topic_id, "partition": p.partition, "offset": p.offset}
}

/// Room kept in a raw document for our own fields (`_id`, `timestamp`, `received_at`, `kafka`).
pub(super) const OWN_FIELDS_BYTES: usize = 4 * 1024;

/// The message's own fields as received, then `timestamp`, `received_at` and `kafka`, written
/// as BSON straight from the payload's JSON text; or why the database could not store it.
pub(super) fn raw_document(r: &RawRecord) -> Result<RawDocumentBuf, String> {
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
pub(super) fn payload_bson(bytes: &[u8]) -> (Bson, &'static str) {
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

pub(super) fn dead_letter_document(l: &DeadLetter) -> Document {
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

pub(super) fn window_document(r: &WindowRecord, stored_at: DateTime) -> Document {
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
    // sorted lookup (`furthest_positions`).
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
