//! The invariants I1-I3 (see `main.rs`) checked against the whole topic as kcat reads it, byte
//! for byte, and the stores as the mongodb crate reads them; the figures of a run; and the
//! checker's own test: tampered stores must be reported.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::common::kcat::{kcat_read_bytes, KcatBytes};
use crate::common::messages::kafka_position;
use crate::common::oracle::check_windows_against_raw;
use crate::common::services::Sandbox;
use crate::harness::{Chaos, WINDOW};

/// What a dead letter keeps of a payload too large to store.
const HEAD_BYTES: usize = 64 * 1024;
/// Fields of a raw document that are the pipeline's, not the message's.
const OURS: [&str; 4] = ["_id", "timestamp", "received_at", "kafka"];

/// What a record of the topic must become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Passes validation: stored once per `message_uuid`; other copies are duplicates.
    Valid,
    /// Dead-lettered with this reason code.
    Dead(&'static str),
    /// Valid, but a field name the database may refuse (FerretDB refuses some that MongoDB
    /// takes): stored unchanged, or dead-lettered as `rejected_by_database`.
    ValidOrRefused,
}

/// What a scenario's stores hold, counted while they are checked.
#[derive(Debug, Default)]
pub struct Figures {
    pub records: usize,
    pub valid_records: usize,
    pub invalid_records: usize,
    pub stored: usize,
    pub duplicates_stored: usize,
    pub duplicate_events: usize,
    pub refused: usize,
    pub lost: usize,
    pub windowed: usize,
    pub windows: usize,
    pub open: usize,
    pub streams: usize,
    pub dead_lettered: usize,
    pub by_reason: BTreeMap<String, usize>,
    pub notes: Vec<String>,
}

/// BSON as read back, as JSON: integers as integers, doubles as numbers.
fn bson_json(b: &Bson) -> Value {
    match b {
        Bson::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(a) => Value::Array(a.iter().map(bson_json).collect()),
        Bson::Document(d) => Value::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), bson_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Bson::Boolean(x) => Value::Bool(*x),
        Bson::Null => Value::Null,
        Bson::Int32(i) => json!(i),
        Bson::Int64(i) => json!(i),
        other => json!(format!("unexpected BSON {other:?}")),
    }
}

/// The message's own fields are in the raw document unchanged, and nothing else but ours.
fn fields_unchanged(payload: &Map<String, Value>, d: &Document) -> Result<(), String> {
    for (k, v) in payload {
        if OURS.contains(&k.as_str()) {
            continue;
        }
        match d.get(k) {
            None => return Err(format!("field {k:?} missing")),
            Some(b) if bson_json(b) != *v => {
                let shown = |s: String| s.chars().take(200).collect::<String>();
                return Err(format!(
                    "field {k:?}: sent {}, stored {}",
                    shown(v.to_string()),
                    shown(bson_json(b).to_string())
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = d
        .keys()
        .find(|k| !OURS.contains(&k.as_str()) && !payload.contains_key(*k))
    {
        return Err(format!("field {extra:?} was not in the message"));
    }
    Ok(())
}

fn payload_bytes(letter: &Document) -> Option<Vec<u8>> {
    match letter.get("payload")? {
        Bson::String(s) => Some(s.as_bytes().to_vec()),
        Bson::Binary(b) => Some(b.bytes.clone()),
        _ => None,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The dead letter holds the record's payload: whole, or its head with its length and hash.
fn payload_kept(letter: &Document, value: &Option<Vec<u8>>, code: &str) -> Result<(), String> {
    let Some(v) = value else {
        return match letter.get("payload") {
            Some(Bson::Null) | None => Ok(()),
            other => Err(format!("a record without value has payload {other:?}")),
        };
    };
    let kept = payload_bytes(letter).ok_or("no payload")?;
    if code == "payload_too_large" {
        if letter.get_bool("payload_truncated") != Ok(true) {
            return Err("payload_truncated is not true".into());
        }
        if letter.get_i64("payload_length") != Ok(v.len() as i64) {
            return Err(format!(
                "payload_length {:?}, the value has {} bytes",
                letter.get("payload_length"),
                v.len()
            ));
        }
        if letter.get_str("payload_sha256") != Ok(sha256_hex(v).as_str()) {
            return Err("payload_sha256 is not the value's".into());
        }
        if kept != v[..HEAD_BYTES.min(v.len())] {
            return Err(format!(
                "kept {} bytes that are not the value's first {HEAD_BYTES}",
                kept.len()
            ));
        }
    } else if kept != *v {
        return Err(format!(
            "payload of {} bytes is not the record's {} bytes",
            kept.len(),
            v.len()
        ));
    }
    Ok(())
}

/// The `message_uuid` of a record that is a JSON object with one.
fn record_uuid(r: &KcatBytes) -> Option<String> {
    let v: Value = serde_json::from_slice(r.value.as_deref()?).ok()?;
    v.get("message_uuid")?.as_str().map(String::from)
}

/// Checks I1, I2 and I3 against the whole topic as kcat reads it; returns the figures.
pub fn check_stores(sb: &Sandbox, id: &str, expect: &dyn Fn(&KcatBytes) -> Expect) -> Figures {
    let records = kcat_read_bytes(&sb.brokers, &sb.topic);
    let by_position: HashMap<(i32, i64), &KcatBytes> = records
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let expected: HashMap<(i32, i64), Expect> = records
        .iter()
        .map(|r| ((r.partition, r.offset), expect(r)))
        .collect();
    let mut f = Figures {
        records: records.len(),
        ..Figures::default()
    };
    f.valid_records = expected
        .values()
        .filter(|e| !matches!(e, Expect::Dead(_)))
        .count();
    f.invalid_records = records.len() - f.valid_records;
    let mut problems: Vec<String> = Vec::new();

    // I1: raw documents.
    let raw = sb.docs("raw", doc! {}, doc! {});
    f.stored = raw.len();
    let mut stored_at: HashMap<String, (i32, i64)> = HashMap::new();
    let mut raw_positions: HashSet<(i32, i64)> = HashSet::new();
    for d in &raw {
        let (tid, p, o) = kafka_position(d);
        let uuid = d.get_str("message_uuid").unwrap_or("<none>").to_string();
        let at = format!("raw {uuid} from {p}/{o}");
        if tid != id {
            problems.push(format!("{at}: topic id {tid}, the topic's is {id}"));
        }
        if d.get_document("kafka").and_then(|k| k.get_str("topic")) != Ok(sb.topic.as_str()) {
            problems.push(format!("{at}: kafka.topic is not {}", sb.topic));
        }
        let Some(r) = by_position.get(&(p, o)) else {
            problems.push(format!("{at}: kcat reads no record there"));
            continue;
        };
        if let e @ Expect::Dead(_) = expected[&(p, o)] {
            problems.push(format!(
                "{at}: stored, but it must be dead-lettered ({e:?})"
            ));
        }
        match serde_json::from_slice::<Value>(r.value.as_deref().unwrap_or_default()) {
            Ok(Value::Object(fields)) => {
                if fields.get("message_uuid").and_then(Value::as_str) != Some(uuid.as_str()) {
                    problems.push(format!("{at}: the record there has another message_uuid"));
                }
                if let Err(e) = fields_unchanged(&fields, d) {
                    problems.push(format!("{at}: {e}"));
                }
            }
            _ => problems.push(format!("{at}: the record there is no JSON object")),
        }
        if let Some(first) = stored_at.insert(uuid.clone(), (p, o)) {
            f.duplicates_stored += 1;
            problems.push(format!("{at}: also stored from {}/{}", first.0, first.1));
        }
        raw_positions.insert((p, o));
    }

    // I3: dead letters.
    let dlq = sb.docs("dlq", doc! {}, doc! {});
    f.dead_lettered = dlq.len();
    let mut dead_positions: HashSet<(i32, i64)> = HashSet::new();
    for l in &dlq {
        let (tid, p, o) = kafka_position(l);
        let code = l.get_str("reason_code").unwrap_or("<none>").to_string();
        *f.by_reason.entry(code.clone()).or_default() += 1;
        let at = format!("dead letter {p}/{o} ({code})");
        let want_id = format!("{}/{tid}/{p}/{o}", sb.topic);
        if l.get_str("_id") != Ok(want_id.as_str()) || tid != id {
            problems.push(format!(
                "{at}: _id {:?}, expected {want_id} with topic id {id}",
                l.get("_id")
            ));
        }
        if l.get_str("reason").map_or(true, str::is_empty) {
            problems.push(format!("{at}: no reason"));
        }
        if !dead_positions.insert((p, o)) {
            problems.push(format!("{at}: dead-lettered twice"));
        }
        if raw_positions.contains(&(p, o)) {
            problems.push(format!("{at}: also stored raw"));
        }
        let Some(r) = by_position.get(&(p, o)) else {
            problems.push(format!("{at}: kcat reads no record there"));
            continue;
        };
        match expected[&(p, o)] {
            Expect::Dead(want) if want != code => {
                problems.push(format!("{at}: expected {want}"));
            }
            Expect::Dead(_) => {}
            e @ (Expect::Valid | Expect::ValidOrRefused) => {
                if code == "duplicate_message_uuid" {
                    f.duplicate_events += 1;
                    let uuid = record_uuid(r).unwrap_or_default();
                    let named = l.get_document("duplicate_of").ok().map(|d| {
                        (
                            d.get_i32("partition").unwrap_or(-1),
                            d.get_i64("offset").unwrap_or(-1),
                        )
                    });
                    match stored_at.get(&uuid) {
                        Some(first) if *first != (p, o) && named == Some(*first) => {}
                        first => problems.push(format!(
                            "{at}: {uuid} is stored from {first:?}, the letter names {named:?}"
                        )),
                    }
                } else if code == "rejected_by_database" && e == Expect::ValidOrRefused {
                    f.refused += 1;
                } else {
                    problems.push(format!("{at}: the record is valid"));
                }
            }
        }
        if let Err(e) = payload_kept(l, &r.value, &code) {
            problems.push(format!("{at}: {e}"));
        }
    }

    // Every record has exactly one fate; every valid message_uuid is stored.
    for r in &records {
        let pos = (r.partition, r.offset);
        if !raw_positions.contains(&pos) && !dead_positions.contains(&pos) {
            f.lost += 1;
            problems.push(format!(
                "record {}/{} ({:?}) neither stored nor dead-lettered",
                r.partition, r.offset, expected[&pos]
            ));
        }
        if expected[&pos] == Expect::Valid {
            match record_uuid(r) {
                Some(uuid) if stored_at.contains_key(&uuid) => {}
                Some(uuid) => problems.push(format!(
                    "valid {uuid} ({}/{}) not stored",
                    r.partition, r.offset
                )),
                // The scenario called it valid: a record without a message_uuid is not.
                None => problems.push(format!(
                    "record {}/{} is expected valid but has no message_uuid",
                    r.partition, r.offset
                )),
            }
        }
    }

    // I2: windows. Their KPIs, spans and counts against raw (panics on a mismatch) ...
    f.windows = check_windows_against_raw(sb, WINDOW);
    let windows = sb.docs("kpis", doc! {}, doc! {"stream": 1, "seq": 1});
    let mut ids = HashSet::new();
    let mut seqs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut counted: HashSet<(i32, i64)> = HashSet::new();
    let mut furthest: HashMap<i32, i64> = HashMap::new();
    for w in &windows {
        let wid = format!("{:?}", w.get("_id"));
        if !ids.insert(wid.clone()) {
            problems.push(format!("window {wid} twice"));
        }
        let stream = w.get_str("stream").unwrap_or_default().to_string();
        let seq = w.get_i64("seq").unwrap_or(-1);
        if w.get_str("_id") != Ok(format!("{stream}#{seq}").as_str()) {
            problems.push(format!("window {wid}: not {stream}#{seq}"));
        }
        seqs.entry(stream).or_default().push(seq);
        f.windowed += w.get_i32("message_count").unwrap_or(0) as usize;
        let kafka = w.get_document("kafka").expect("window kafka");
        for p in kafka.get_array("partitions").expect("partitions") {
            let p = p.as_document().expect("partition");
            let partition = p.get_i32("partition").expect("partition");
            let (first, last) = (
                p.get_i64("first_offset").expect("first_offset"),
                p.get_i64("last_offset").expect("last_offset"),
            );
            for o in first..=last {
                if raw_positions.contains(&(partition, o)) {
                    counted.insert((partition, o));
                }
            }
        }
        for n in kafka.get_array("next_offsets").expect("next_offsets") {
            let n = n.as_document().expect("next offset");
            let (p, o) = (
                n.get_i32("partition").expect("partition"),
                n.get_i64("offset").expect("offset"),
            );
            let e = furthest.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
    }
    f.streams = seqs.len();
    for (stream, list) in &seqs {
        let distinct: BTreeSet<i64> = list.iter().copied().collect();
        if distinct.len() != list.len() {
            problems.push(format!("stream {stream}: a sequence number twice"));
        }
        let expected_seqs: BTreeSet<i64> = (0..list.len() as i64).collect();
        if distinct != expected_seqs {
            f.notes.push(format!(
                "stream {stream}: sequence numbers {:?}..{:?} with gaps",
                distinct.first(),
                distinct.last()
            ));
        }
    }
    if f.windowed != counted.len() {
        problems.push(format!(
            "windows count {} messages, their spans hold {} stored ones",
            f.windowed,
            counted.len()
        ));
    }
    // ... and what no window counts is the open window: past every window's end.
    let mut open: Vec<(i32, i64)> = raw_positions.difference(&counted).copied().collect();
    open.sort_unstable();
    f.open = open.len();
    for (p, o) in &open {
        if *o < furthest.get(p).copied().unwrap_or(0) {
            problems.push(format!(
                "message {p}/{o} is in no window, but windows go on to offset {} of partition {p}",
                furthest[p]
            ));
        }
    }
    if f.open >= WINDOW * f.streams.max(1) {
        problems.push(format!(
            "{} stored messages are in no window ({} streams)",
            f.open, f.streams
        ));
    }
    assert!(
        problems.is_empty(),
        "{} invariant violations in {} (first 30):\n{}",
        problems.len(),
        sb.name,
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    f
}

/// Every record the producer writes is a valid metric.
pub fn all_valid(_: &KcatBytes) -> Expect {
    Expect::Valid
}

/// The invariant checks are not vacuous: a stored message removed, a dead letter's reason
/// changed, a window stored twice under another number are each reported (then undone).
pub fn checker_notices_tampering(c: &Chaos, expect: &dyn Fn(&KcatBytes) -> Expect) {
    let fails = |what: &str| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_stores(&c.sb, &c.topic_id(), expect)
        }));
        assert!(outcome.is_err(), "the checks missed {what}");
    };
    eprintln!("checker self-test: three invariant violations are expected to be reported next");
    let raw = c.sb.db().collection::<Document>("raw");
    let victim = raw.find_one(doc! {}).run().unwrap().unwrap();
    raw.delete_one(doc! {"_id": victim.get("_id").unwrap()})
        .run()
        .unwrap();
    fails("a lost message");
    raw.insert_one(victim).run().unwrap();

    let dlq = c.sb.db().collection::<Document>("dlq");
    let letter = dlq
        .find_one(doc! {"reason_code": "bad_metrics"})
        .run()
        .unwrap()
        .unwrap();
    let filter = doc! {"_id": letter.get("_id").unwrap()};
    dlq.update_one(
        filter.clone(),
        doc! {"$set": {"reason_code": "bad_timestamp"}},
    )
    .run()
    .unwrap();
    fails("a wrong reason code");
    dlq.update_one(filter, doc! {"$set": {"reason_code": "bad_metrics"}})
        .run()
        .unwrap();

    let kpis = c.sb.db().collection::<Document>("kpis");
    let mut window = kpis
        .find_one(doc! {})
        .sort(doc! {"seq": -1})
        .run()
        .unwrap()
        .unwrap();
    let seq = window.get_i64("seq").unwrap() + 1;
    let stream = window.get_str("stream").unwrap().to_string();
    window.insert("seq", seq);
    window.insert("_id", format!("{stream}#{seq}"));
    kpis.insert_one(&window).run().unwrap();
    fails("a window counted twice");
    kpis.delete_one(doc! {"_id": format!("{stream}#{seq}")})
        .run()
        .unwrap();
    check_stores(&c.sb, &c.topic_id(), expect);
}
