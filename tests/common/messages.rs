//! The messages tests write and the fields they read back: a valid metric line with a known
//! `message_uuid`, a payload's `message_uuid`, where a stored document came from, numbers at a
//! dotted path, and the tolerance stored means are compared with.
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use mongodb::bson::{Bson, Document};

/// A valid metric message, its `message_uuid` `{tag}-{n}`, on one line.
pub fn metric_line(tag: &str, n: u64) -> String {
    let servers = ["web01", "web02", "db01", "app01", "cache01"];
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    serde_json::json!({
        "server_id": servers[(n % 5) as usize],
        "timestamp_utc": timestamp,
        "metrics": {
            "cpu_percent": ((n * 37) % 1000) as f64 / 10.0,
            "memory_percent": ((n * 53) % 1000) as f64 / 10.0,
            "disk_io_mbps": (n % 17) as f64 * 1.25,
            "network_mbps": (n % 23) as f64 * 2.5,
            "error_count": n % 4,
        },
        "message_uuid": format!("{tag}-{n}"),
    })
    .to_string()
}

/// The `message_uuid` of a payload, if it is a JSON object with one.
pub fn uuid_of(payload: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    v.get("message_uuid")?.as_str().map(String::from)
}

/// Where a raw document or a dead letter came from: (topic id, partition, offset).
pub fn kafka_position(d: &Document) -> (String, i32, i64) {
    let k = d.get_document("kafka").expect("kafka position");
    (
        k.get_str("topic_id").expect("kafka.topic_id").to_string(),
        k.get_i32("partition").expect("kafka.partition"),
        k.get_i64("offset").expect("kafka.offset"),
    )
}

/// A number at a dotted path of a document.
pub fn f64_of(d: &Document, path: &str) -> f64 {
    let mut cur = Bson::Document(d.clone());
    for key in path.split('.') {
        cur = cur
            .as_document()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or(Bson::Null);
    }
    match cur {
        Bson::Double(f) => f,
        Bson::Int32(i) => f64::from(i),
        Bson::Int64(i) => i as f64,
        other => panic!("{path} is not a number: {other:?}"),
    }
}

/// Equal up to rounding: the relative difference of a mean computed twice in another order.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}
