//! Poison messages the suite found (see RELIABILITY.md): each is one record no database can
//! store as it is, between valid ones. The pipeline must dead-letter it, with the reason it
//! names for that kind, and go on; before a947aa3 the consumer retried such a record forever or
//! exited 1, and every restart did the same. They run in `make test`.

use std::collections::HashSet;
use std::time::Duration;

use mongodb::bson::doc;
use serde_json::json;

use crate::common::kcat::kcat_send_values;
use crate::harness::{Chaos, MIB, TOO_LARGE, WINDOW};
use crate::hostile::{bytes, hostile_topic, valid};
use crate::invariants::{Expect, Figures};
use crate::runs::End;

/// 30 valid messages, the poison records, 20 valid ones on partition 0 of a topic that takes
/// 25 MiB values; a run to idle within `limit` must handle all and exit 0. Returns
/// the figures and the consumer's peak RSS in MiB.
fn poison_scenario(
    label: &str,
    poison: Vec<Vec<u8>>,
    expect: Expect,
    limit: u64,
) -> (Figures, f64) {
    let mut c = Chaos::new(label);
    hostile_topic(&c);
    let mut values: Vec<Option<Vec<u8>>> = (0..30).map(|n| bytes(&valid(label, n))).collect();
    let poisoned: HashSet<Vec<u8>> = poison.iter().cloned().collect();
    values.extend(poison.into_iter().map(Some));
    values.extend((30..50).map(|n| bytes(&valid(label, n))));
    kcat_send_values(&c.sb.brokers, &c.sb.topic, 0, &values);
    let p = c.spawn("consume", &["consume", "--exit-when-idle", "5"]);
    c.end(p, End::Exit(Duration::from_secs(limit)));
    let figures = c.finish(&|r| match &r.value {
        Some(v) if poisoned.contains(v) => expect,
        _ => Expect::Valid,
    });
    (figures, c.peak_consumer_mib())
}

/// A field name with a NUL byte, at the top and deep in arrays: dead-lettered as
/// bad_field_name.
pub fn field_name_with_a_nul_byte() {
    // JSON allows "\u0000" in a name; a BSON field name cannot hold it, so the driver refuses
    // the whole insert before sending it (found by this suite: "cstrings cannot contain null
    // bytes", retried forever; now refused at validation as bad_field_name).
    let mut m = valid("nul", 1000);
    m.insert("bad\u{0}name".into(), json!(1));
    // The same name deep inside arrays of arrays, where a search that stops at the first level
    // of an array would not look.
    let mut deep = valid("nul", 1001);
    deep.insert("deep".into(), json!([[[{"bad\u{0}name": 1}]]]));
    poison_scenario(
        "poison_nul_field_name",
        vec![bytes(&m).unwrap(), bytes(&deep).unwrap()],
        Expect::Dead("bad_field_name"),
        60,
    );
}

/// A 7 MB payload that is 44 MB as BSON: dead-lettered as rejected_by_database, with a bounded
/// peak memory.
pub fn document_over_16_mib() {
    // 7 MB of JSON (3.5 million zeros in an array) is 44 MB as BSON, past MongoDB's 16 MiB
    // document limit (found by this suite: exit 1, "insert document must be within 16777216
    // bytes ... check MONGODB_URI" on every restart; now that document alone is refused).
    let mut m = valid("bson", 1000);
    m.insert("zeros".into(), json!(vec![0u8; 3_500_000]));
    let v = bytes(&m).unwrap();
    assert!(v.len() < TOO_LARGE, "{} bytes", v.len());
    let (figures, peak_mib) = poison_scenario(
        "poison_bson_over_16_mib",
        vec![v],
        Expect::Dead("rejected_by_database"),
        120,
    );
    assert_eq!(figures.by_reason.get("rejected_by_database"), Some(&1));
    // The payload is read once, without a tree of values, and its BSON stops growing at the
    // 16 MiB limit: the consumer holds a few copies of 7 MB, not a tree per zero (before: a
    // peak of about 750 MiB, a `serde_json::Value` and a `Bson` per array element).
    eprintln!("FIGURE poison_bson_over_16_mib: consumer peak RSS {peak_mib:.1} MiB");
    assert!(
        peak_mib < 160.0,
        "consumer peak RSS {peak_mib:.1} MiB on one 7 MB message"
    );
}

/// Twenty 1 MiB server ids: each dead-lettered as bad_server_id, no KPI document refused.
pub fn long_server_ids() {
    // Twenty valid messages with distinct 1 MiB server ids: the window's per-server list (and
    // its alerts) hold each id, 40 MB in all (found by this suite: exit 1 at the KPI insert, "check
    // MONGODB_URI", and every restart recomputes the same window).
    let mut c = Chaos::new("poison_long_server_ids");
    hostile_topic(&c);
    let values: Vec<Option<Vec<u8>>> = (0..WINDOW as u64)
        .map(|n| {
            let mut m = valid("longid", n);
            m.insert(
                "server_id".into(),
                json!(format!("s{n:02}-{}", "x".repeat(MIB))),
            );
            m["metrics"]["cpu_percent"] = json!(95.0);
            bytes(&m)
        })
        .collect();
    kcat_send_values(&c.sb.brokers, &c.sb.topic, 0, &values);
    let p = c.spawn("consume", &["consume", "--exit-when-idle", "5"]);
    c.end(p, End::Exit(Duration::from_secs(120)));
    c.check_outputs();
    // A server id is a name, not a payload: ids over 256 characters are refused at validation,
    // each dead-lettered with its reason, and the consumer goes on (it exited 0 when idle).
    assert_eq!(c.count("raw"), Some(0), "no over-long server id stored");
    let letters = c.sb.docs("dlq", doc! {}, doc! {});
    assert_eq!(letters.len(), WINDOW, "every one dead-lettered once");
    assert!(letters
        .iter()
        .all(|d| d.get_str("reason_code") == Ok("bad_server_id")));
}
