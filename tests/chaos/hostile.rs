//! Hostile input: every kind of record a consumer can be sent (no value, not UTF-8, not JSON,
//! not an object, each field missing or wrong, names a database refuses, huge values, copies
//! of stored messages) mixed among valid messages on three partitions, each with the fate it
//! must meet (stored once, or dead-lettered once with its reason).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::common::kafka_tools::create_topic;
use crate::common::kcat::kcat_send_values;
use crate::common::messages::metric_line;
use crate::harness::{rerun_changes_nothing, run_to_idle, Chaos, MIB, TOO_LARGE};
use crate::invariants::{checker_notices_tampering, Expect};
use crate::kills::{kill_loop, Sig};

/// A valid message as a JSON object.
pub fn valid(tag: &str, n: u64) -> Map<String, Value> {
    match serde_json::from_str(&metric_line(tag, n)).expect("metric line") {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// A message's bytes as a record's value.
pub fn bytes(m: &Map<String, Value>) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(m).expect("json"))
}

/// `depth` arrays, one inside the other, around a number.
fn nested_arrays(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Kinds of hostile input that are not copies of other records: (value, expected fate).
/// `i` makes each instance's `message_uuid` unique.
fn hostile(kind: usize, tag: &str, i: u64) -> (Option<Vec<u8>>, Expect) {
    use Expect::{Dead, Valid, ValidOrRefused};
    let with = |f: &dyn Fn(&mut Map<String, Value>)| {
        let mut m = valid(tag, i);
        f(&mut m);
        bytes(&m)
    };
    let raw = |s: &str| Some(s.as_bytes().to_vec());
    let metric = |k: &'static str, v: Value| {
        with(&move |m| {
            m["metrics"][k] = v.clone();
        })
    };
    let drop_field = |k: &'static str| {
        with(&move |m| {
            m.remove(k);
        })
    };
    match kind {
        0 => (None, Dead("no_value")),
        1 => (Some(Vec::new()), Dead("invalid_json")),
        2 => (Some(vec![0xff, 0xfe, 0x00, 0x01]), Dead("not_utf8")),
        3 => {
            let mut v = b"{\"server_id\": \"web".to_vec();
            v.extend_from_slice(&[0xc3, 0x28]);
            v.extend_from_slice(b"\"}");
            (Some(v), Dead("not_utf8"))
        }
        4 => (Some(vec![0xc0, 0xaf, b'{', b'}']), Dead("not_utf8")),
        5 => (raw("{\"server_id\": "), Dead("invalid_json")),
        6 => (raw("{\"server_id\": \"web01\",}"), Dead("invalid_json")),
        7 => (raw("{}{}"), Dead("invalid_json")),
        8 => (raw("NaN"), Dead("invalid_json")),
        9 => {
            let line = String::from_utf8(with(&|_| {}).unwrap()).unwrap();
            let broken = line.replacen("\"cpu_percent\":", "\"cpu_percent\":NaN,\"x\":", 1);
            (raw(&broken), Dead("invalid_json"))
        }
        10 => {
            let line = String::from_utf8(with(&|_| {}).unwrap()).unwrap();
            let broken = line.replacen("\"cpu_percent\":", "\"cpu_percent\":1e999,\"x\":", 1);
            (raw(&broken), Dead("invalid_json"))
        }
        11 => (raw(&nested_arrays(5000)), Dead("invalid_json")),
        12 => {
            let mut v = "\u{feff}".as_bytes().to_vec();
            v.extend(with(&|_| {}).unwrap());
            (Some(v), Dead("invalid_json"))
        }
        13 => (raw(" \n\t "), Dead("invalid_json")),
        14 => (raw("[1, 2, 3]"), Dead("not_an_object")),
        15 => (raw("\"a string\""), Dead("not_an_object")),
        16 => (raw("42"), Dead("not_an_object")),
        17 => (raw("null"), Dead("not_an_object")),
        18 => (raw("true"), Dead("not_an_object")),
        19 => (drop_field("server_id"), Dead("bad_server_id")),
        20 => (
            with(&|m| {
                m.insert("server_id".into(), json!(""));
            }),
            Dead("bad_server_id"),
        ),
        21 => (
            with(&|m| {
                m.insert("server_id".into(), json!("   "));
            }),
            Dead("bad_server_id"),
        ),
        22 => (
            with(&|m| {
                m.insert("server_id".into(), json!(17));
            }),
            Dead("bad_server_id"),
        ),
        23 => (
            with(&|m| {
                m.insert("server_id".into(), Value::Null);
            }),
            Dead("bad_server_id"),
        ),
        24 => (
            with(&|m| {
                m.insert("timestamp_utc".into(), json!("ayer"));
            }),
            Dead("bad_timestamp"),
        ),
        25 => (drop_field("timestamp_utc"), Dead("bad_timestamp")),
        26 => (
            with(&|m| {
                m.insert("timestamp_utc".into(), json!(1_700_000_000));
            }),
            Dead("bad_timestamp"),
        ),
        27 => (
            with(&|m| {
                m.insert("timestamp_utc".into(), json!("2026-13-45T99:00:00Z"));
            }),
            Dead("bad_timestamp"),
        ),
        28 => (drop_field("metrics"), Dead("bad_metrics")),
        29 => (
            with(&|m| {
                m.insert("metrics".into(), json!("high"));
            }),
            Dead("bad_metrics"),
        ),
        30 => (metric("cpu_percent", json!(150.0)), Dead("bad_metrics")),
        31 => (metric("cpu_percent", json!(-1)), Dead("bad_metrics")),
        32 => (
            metric("memory_percent", json!(100.0001)),
            Dead("bad_metrics"),
        ),
        33 => (metric("disk_io_mbps", json!(-0.5)), Dead("bad_metrics")),
        34 => (metric("error_count", json!(1.5)), Dead("bad_metrics")),
        35 => (metric("error_count", json!(-1)), Dead("bad_metrics")),
        36 => (metric("network_mbps", json!("fast")), Dead("bad_metrics")),
        37 => (
            with(&|m| {
                m["metrics"].as_object_mut().unwrap().remove("cpu_percent");
            }),
            Dead("bad_metrics"),
        ),
        38 => (metric("memory_percent", Value::Null), Dead("bad_metrics")),
        39 => (drop_field("message_uuid"), Dead("bad_message_uuid")),
        40 => (
            with(&|m| {
                m.insert("message_uuid".into(), json!(""));
            }),
            Dead("bad_message_uuid"),
        ),
        41 => (
            with(&|m| {
                m.insert("message_uuid".into(), json!(12345));
            }),
            Dead("bad_message_uuid"),
        ),
        // Valid, and odd: kept as they are.
        42 => (
            with(&|m| {
                m.insert(
                    "server_id".into(),
                    json!("サーバー-01 🚀 \"quoted\" \\ back"),
                );
                m.insert("timestamp_utc".into(), json!("2026-11-22T18:00:00.5"));
                m.insert("extra".into(), json!({"nested": [1, 2.5, null, true, {"deep": "x\u{0}y"}], "big": 5_000_000_000i64, "tiny": 1e-300}));
                m["metrics"]["cpu_percent"] = json!(100);
                m["metrics"]["memory_percent"] = json!(0);
            }),
            Valid,
        ),
        // The pipeline's own names in a message: `_id` is ours, the others are overwritten.
        43 => (
            with(&|m| {
                m.insert("_id".into(), json!("not-an-object-id"));
                m.insert("kafka".into(), json!({"topic": "spoofed"}));
                m.insert("received_at".into(), json!(0));
            }),
            Valid,
        ),
        // Field names a database may refuse.
        44 => (
            with(&|m| {
                m.insert("$where".into(), json!("1 == 1"));
            }),
            ValidOrRefused,
        ),
        45 => (
            with(&|m| {
                m.insert("dotted.name".into(), json!(1));
            }),
            ValidOrRefused,
        ),
        46 => (
            with(&|m| {
                m.insert(
                    "deep".into(),
                    serde_json::from_str(&nested_arrays(120)).unwrap(),
                );
            }),
            ValidOrRefused,
        ),
        // Field names BSON cannot hold (a NUL), at the top and deep inside arrays.
        47 => (
            with(&|m| {
                m.insert("bad\u{0}name".into(), json!(1));
            }),
            Dead("bad_field_name"),
        ),
        48 => (
            with(&|m| {
                m.insert(
                    "nested".into(),
                    json!([[{"in\u{0}side": 1}], {"ok": [[{"x\u{0}": 2}]]}]),
                );
            }),
            Dead("bad_field_name"),
        ),
        // A server id too long to list in a window.
        49 => (
            with(&|m| {
                m.insert("server_id".into(), json!("s".repeat(300)));
            }),
            Dead("bad_server_id"),
        ),
        _ => unreachable!("kind {kind}"),
    }
}

const HOSTILE_KINDS: usize = 50;

/// A record's value as kcat writes and reads it (`None`: no value).
type RecordValue = Option<Vec<u8>>;

/// The large values: a valid message with a `size`-byte field, an unterminated JSON string
/// of `size` bytes, and a valid message too large to store (`too_large` bytes); with `bomb`,
/// also a 7 MB message that is 44 MB as BSON (3.5 million zeros in an array).
fn large_values(
    tag: &str,
    size: usize,
    too_large: usize,
    bomb: bool,
) -> Vec<(Option<Vec<u8>>, Expect)> {
    let mut big = valid(tag, 900_001);
    big.insert("blob".into(), json!("b".repeat(size)));
    let mut broken = b"{\"server_id\": \"web01\", \"blob\": \"".to_vec();
    broken.resize(size, b'x');
    let mut huge = valid(tag, 900_002);
    huge.insert("blob".into(), json!("h".repeat(too_large)));
    let mut values = vec![
        (bytes(&big), Expect::Valid),
        (Some(broken), Expect::Dead("invalid_json")),
        (bytes(&huge), Expect::Dead("payload_too_large")),
    ];
    if bomb {
        let mut zeros = valid(tag, 900_003);
        zeros.insert("zeros".into(), json!(vec![0u8; 3_500_000]));
        values.push((bytes(&zeros), Expect::Dead("rejected_by_database")));
    }
    values
}

/// `valid` valid messages and one hostile record for every nine valid ones (10 %), every kind
/// at least once when there are enough, plus copies of stored messages (the same bytes, or the
/// same `message_uuid` with other values) on any partition, plus `large`; spread over three
/// partitions at random. Returns the records per partition and the fate of each value.
fn hostile_mix(
    c: &mut Chaos,
    tag: &str,
    valid_count: u64,
    large: Vec<(Option<Vec<u8>>, Expect)>,
) -> (Vec<Vec<RecordValue>>, HashMap<RecordValue, Expect>) {
    let hostile_count = valid_count / 9;
    let originals: Vec<Map<String, Value>> = (0..valid_count).map(|n| valid(tag, n)).collect();
    let mut items: Vec<(Option<Vec<u8>>, Expect)> = originals
        .iter()
        .map(|m| (bytes(m), Expect::Valid))
        .collect();
    for h in 0..hostile_count {
        // Every kind in turn, then a copy of a valid message: the same bytes, or the same
        // message_uuid with another value.
        let k = (h as usize) % (HOSTILE_KINDS + 2);
        let original = &originals[c.rng.usize(0..originals.len())];
        let item = if k == HOSTILE_KINDS {
            (bytes(original), Expect::Valid)
        } else if k == HOSTILE_KINDS + 1 {
            let mut m = original.clone();
            m["metrics"]["cpu_percent"] = json!(1.25);
            (bytes(&m), Expect::Valid)
        } else {
            hostile(k, tag, 100_000 + h)
        };
        items.push(item);
    }
    items.extend(large);
    c.rng.shuffle(&mut items);
    let mut fates = HashMap::new();
    let mut partitions = vec![Vec::new(), Vec::new(), Vec::new()];
    for (value, fate) in items {
        if let Some(previous) = fates.insert(value.clone(), fate) {
            assert_eq!(previous, fate, "one value, two fates");
        }
        partitions[c.rng.usize(0..3)].push(value);
    }
    (partitions, fates)
}

/// Writes each partition's records with kcat, in order.
fn send_mix(c: &Chaos, partitions: &[Vec<Option<Vec<u8>>>]) {
    for (p, values) in partitions.iter().enumerate() {
        kcat_send_values(&c.sb.brokers, &c.sb.topic, p as i32, values);
    }
}

/// The scenario's topic: three partitions that take values up to 25 MiB.
pub fn hostile_topic(c: &Chaos) {
    create_topic(
        &c.sb.brokers,
        &c.sb.topic,
        &[
            "--partitions",
            "3",
            "--config",
            "max.message.bytes=26214400",
        ],
    );
}

/// The fast version in `make test`: 468 valid messages, 52 hostile records (every kind once,
/// and both kinds of copies), 3 MiB values and one too large to store; then a run that changes
/// nothing, and the checker's self-test on the stores.
pub fn quick_mix() {
    let mut c = Chaos::new("quick_hostile");
    hostile_topic(&c);
    let large = large_values("qh", 3 * MIB, TOO_LARGE + MIB, false);
    // 52 hostile records: every kind once, and both kinds of copies.
    let (partitions, fates) = hostile_mix(&mut c, "qh", 468, large);
    send_mix(&c, &partitions);
    run_to_idle(&mut c, "consume", &["consume"]);
    let f = c.finish(&|r| fates[&r.value]);
    for code in [
        "no_value",
        "not_utf8",
        "invalid_json",
        "not_an_object",
        "bad_server_id",
        "bad_timestamp",
        "bad_metrics",
        "bad_message_uuid",
        "duplicate_message_uuid",
        "payload_too_large",
    ] {
        assert!(
            f.by_reason.contains_key(code),
            "no {code} in {:?}",
            f.by_reason
        );
    }
    rerun_changes_nothing(&mut c, &["consume"]);
    c.check_outputs();
    checker_notices_tampering(&c, &|r| fates[&r.value]);
}

/// 2,700 valid messages, 300 hostile records, 3 MiB and 20 MiB values and a BSON bomb; one
/// consumer run SIGKILLed at a random moment of the backlog.
pub fn long_mix_with_a_kill() {
    let mut c = Chaos::new("hostile_input");
    hostile_topic(&c);
    let large = large_values("ch", 3 * MIB, 20 * MIB, true);
    let (partitions, fates) = hostile_mix(&mut c, "ch", 2700, large);
    send_mix(&c, &partitions);
    // One run SIGKILLed at a random moment, then a run to idle, then one that changes nothing.
    let total = partitions.iter().map(Vec::len).sum::<usize>() as u64;
    kill_loop(&mut c, Sig::Kill, 1, Some(total), &["consume"]);
    run_to_idle(&mut c, "consume-last", &["consume"]);
    let f = c.finish(&|r| fates[&r.value]);
    assert!(
        f.by_reason.contains_key("payload_too_large"),
        "{:?}",
        f.by_reason
    );
    rerun_changes_nothing(&mut c, &["consume"]);
}
