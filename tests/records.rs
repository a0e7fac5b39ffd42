//! Every record batch a Kafka broker (3.9 or 4.x) holds is read: plain and compressed batches
//! (gzip, snappy, lz4, zstd) mixed in one partition, a batch larger than the default fetch size,
//! transactions and their control records, and a topic deleted and created again. The records
//! are written by an independent producer (kcat), the batches' layout on disk is confirmed by
//! Kafka's own DumpLogSegments, and what the consumer stored is read back with the mongodb
//! crate and compared with what kcat reads from the topic.

mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod oracle;
    pub mod process;
    pub mod services;
}

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::kafka_tools::{
    create_topic, delete_topic_and_wait, log_batches, log_end_offsets, topic_id, LogBatch,
};
use common::kcat::{kcat_produce, kcat_read, KcatRecord};
use common::messages::{kafka_position, metric_line, uuid_of};
use common::oracle::check_windows_against_raw;
use common::process::{assert_ok, poll, text};
use common::services::Sandbox;
use mongodb::bson::{doc, Bson, Document};
use sha2::{Digest, Sha256};

const LIMIT: Duration = Duration::from_secs(120);
const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];

/// `consume --exit-when-idle 3` to completion, with `extra` flags; its log.
fn consume(sb: &Sandbox, extra: &[&str]) -> String {
    let mut args = vec!["consume", "--exit-when-idle", "3"];
    args.extend_from_slice(extra);
    let out = sb.run(&args, LIMIT);
    assert_ok(&out, "consume");
    text(&out.stderr)
}

/// The partition's batches on disk, from Kafka's own dump-log tool. The local services keep
/// every partition in `.local/kafka/<version>`: a partition not found there is a broken
/// precondition (services elsewhere, or a moved data directory), and the layout checks fail
/// loudly rather than pass unchecked.
fn local_log_batches(topic: &str, partition: i32) -> Vec<LogBatch> {
    log_batches(topic, partition).unwrap_or_else(|| {
        panic!(
            "no local Kafka log directory holds {topic}-{partition} (looked under {}): these \
             tests check the batches on disk and need the services of `make up`",
            common::kafka_tools::kafka_home().display()
        )
    })
}

/// Raw documents by message_uuid, each once (a second document with the same uuid fails).
fn raw_by_uuid(sb: &Sandbox) -> HashMap<String, Document> {
    let mut by_uuid = HashMap::new();
    for d in sb.docs("raw", doc! {}, doc! {}) {
        let uuid = d.get_str("message_uuid").unwrap().to_string();
        assert!(
            by_uuid.insert(uuid.clone(), d).is_none(),
            "{uuid} stored twice"
        );
    }
    by_uuid
}

/// Asserts every valid record kcat read is stored once, at kcat's position in the log
/// `topic_id`; returns the number of valid records.
fn assert_valid_stored_once_at_their_position(
    records: &[KcatRecord],
    raw: &HashMap<String, Document>,
    topic_id: &str,
) -> usize {
    let mut valid = 0;
    for r in records {
        let Some(uuid) = r.payload.as_deref().and_then(uuid_of) else {
            continue;
        };
        valid += 1;
        let d = raw
            .get(&uuid)
            .unwrap_or_else(|| panic!("{uuid} at {}/{} is not stored", r.partition, r.offset));
        assert_eq!(
            kafka_position(d),
            (topic_id.to_string(), r.partition, r.offset),
            "{uuid} stored with the position kcat reads it at"
        );
    }
    valid
}

/// Every offset of each partition, 0..end, is a record kcat shows or in a control batch: kcat
/// saw the whole log (read_committed hides only markers here).
fn assert_kcat_saw_every_offset(records: &[KcatRecord], batches: &BTreeMap<i32, Vec<LogBatch>>) {
    for (p, list) in batches {
        let shown: HashSet<i64> = records
            .iter()
            .filter(|r| r.partition == *p)
            .map(|r| r.offset)
            .collect();
        for b in list {
            for o in b.base_offset..=b.last_offset {
                assert_eq!(
                    shown.contains(&o),
                    !b.control,
                    "partition {p} offset {o} (batch {b:?}) in kcat's read"
                );
            }
        }
    }
}

/// The codec of the batch holding each (partition, offset).
fn codec_at(batches: &BTreeMap<i32, Vec<LogBatch>>) -> HashMap<(i32, i64), String> {
    let mut at = HashMap::new();
    for (p, list) in batches {
        for b in list {
            for o in b.base_offset..=b.last_offset {
                at.insert((*p, o), b.codec.clone());
            }
        }
    }
    at
}

#[test]
fn plain_and_every_codec_mixed_in_three_partitions_are_stored_once_and_windowed_exactly() {
    let sb = Sandbox::new("codecs");
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    const MALFORMED: &str = r#"{"server_id":"web01","metrics":{"cpu_percent":"#;
    // Per partition: 3 plain, then per codec a compressed batch of 6 and 2 plain after it. The
    // malformed message sits inside partition 1's lz4 batch. Partitions are written in parallel.
    std::thread::scope(|scope| {
        for p in 0..3i32 {
            let sb = &sb;
            scope.spawn(move || {
                let mut n = u64::try_from(p).unwrap() * 1000;
                let mut next = |k: usize| -> Vec<String> {
                    (0..k)
                        .map(|_| {
                            n += 1;
                            metric_line(&sb.name, n)
                        })
                        .collect()
                };
                kcat_produce(&sb.brokers, &sb.topic, p, None, &[], &next(3));
                for codec in CODECS {
                    let mut batch = next(6);
                    if p == 1 && codec == "lz4" {
                        batch.insert(3, MALFORMED.to_string());
                    }
                    kcat_produce(&sb.brokers, &sb.topic, p, Some(codec), &[], &batch);
                    kcat_produce(&sb.brokers, &sb.topic, p, None, &[], &next(2));
                }
            });
        }
    });

    // The log really holds compressed sets of several records in every codec, with plain
    // batches around them, in every partition.
    let mut batches = BTreeMap::new();
    for p in 0..3 {
        let list = local_log_batches(&sb.topic, p);
        for codec in CODECS {
            let sets: Vec<&LogBatch> = list.iter().filter(|b| b.codec == codec).collect();
            assert!(
                !sets.is_empty() && sets.iter().all(|b| b.count >= 6),
                "partition {p}: {codec} batches of several records: {list:?}"
            );
        }
        assert!(list.iter().filter(|b| b.codec == "none").count() >= 5);
        batches.insert(p, list);
    }

    let log = consume(&sb, &[]);

    let records = kcat_read(&sb.brokers, &sb.topic);
    assert_eq!(
        records.len(),
        3 * (3 + 4 * 8) + 1,
        "kcat reads every record"
    );
    assert_kcat_saw_every_offset(&records, &batches);
    let id = topic_id(&sb.brokers, &sb.topic);
    let raw = raw_by_uuid(&sb);
    let valid = assert_valid_stored_once_at_their_position(&records, &raw, &id);
    assert_eq!(valid, 105);
    assert_eq!(raw.len(), valid, "nothing else is stored: {log}");

    let malformed: Vec<&KcatRecord> = records
        .iter()
        .filter(|r| r.payload.as_deref() == Some(MALFORMED))
        .collect();
    assert_eq!(malformed.len(), 1);
    let bad = malformed[0];
    let dlq = sb.docs("dlq", doc! {}, doc! {});
    assert_eq!(dlq.len(), 1, "one dead letter: {dlq:?}");
    let letter = &dlq[0];
    assert_eq!(letter.get_str("reason_code").unwrap(), "invalid_json");
    assert!(!letter.get_str("reason").unwrap().is_empty());
    assert_eq!(letter.get_str("payload").unwrap(), MALFORMED);
    assert_eq!(
        kafka_position(letter),
        (id.clone(), bad.partition, bad.offset)
    );
    assert_eq!(
        letter.get_str("_id").unwrap(),
        format!("{}/{id}/{}/{}", sb.topic, bad.partition, bad.offset)
    );

    let windows = check_windows_against_raw(&sb, 20);
    assert_eq!(windows, valid / 20, "floor({valid} / 20) windows");
    // One run: every window's start and end are its messages' arrivals.
    common::oracle::check_one_run(&sb);

    // The figures: per codec, records written, stored and dead-lettered.
    let codecs = codec_at(&batches);
    let mut figures: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for r in &records {
        let codec = codecs
            .get(&(r.partition, r.offset))
            .cloned()
            .unwrap_or_else(|| "?".into());
        let f = figures.entry(codec).or_default();
        f.0 += 1;
        match r.payload.as_deref().and_then(uuid_of) {
            Some(uuid) if raw.contains_key(&uuid) => f.1 += 1,
            _ if r.offset == bad.offset && r.partition == bad.partition => f.2 += 1,
            _ => {}
        }
    }
    for (codec, (written, stored, dead)) in &figures {
        eprintln!(
            "FIGURE codecs: {codec:>6}: {written} records written, {stored} stored, {dead} dead-lettered"
        );
    }
    eprintln!(
        "FIGURE codecs: {} records in 3 partitions, {valid} stored, 1 dead-lettered, {windows} windows",
        records.len()
    );
}

/// A `payload_too_large` dead letter of `value`: its first 64 KiB, its length and SHA-256.
fn assert_too_large_letter(letter: &Document, value: &[u8]) {
    const HEAD: usize = 64 * 1024;
    assert_eq!(
        letter.get_str("reason_code"),
        Ok("payload_too_large"),
        "reason: {:?}",
        letter.get_str("reason")
    );
    assert_eq!(letter.get_bool("payload_truncated"), Ok(true));
    assert_eq!(letter.get_i64("payload_length"), Ok(value.len() as i64));
    let sha: String = Sha256::digest(value)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(letter.get_str("payload_sha256"), Ok(sha.as_str()));
    let kept = match letter.get("payload") {
        Some(Bson::String(s)) => s.as_bytes(),
        Some(Bson::Binary(b)) => &b.bytes[..],
        other => panic!("payload {:?}", other.map(|b| b.element_type())),
    };
    assert!(
        kept == &value[..HEAD],
        "the kept head is the value's first {HEAD} bytes"
    );
}

#[test]
fn batches_larger_than_the_fetch_size_are_read_and_the_partition_goes_on() {
    let sb = Sandbox::new("bigbatch");
    create_topic(
        &sb.brokers,
        &sb.topic,
        &[
            "--partitions",
            "1",
            "--config",
            "max.message.bytes=20971520",
        ],
    );
    let big_producer = ["-X", "message.max.bytes=25000000"];
    let mut n = 0u64;
    let mut next = |k: usize| -> Vec<String> {
        (0..k)
            .map(|_| {
                n += 1;
                metric_line(&sb.name, n)
            })
            .collect()
    };
    // A valid metric with a huge extra field: 6 MiB uncompressed, alone in a plain batch.
    let with_padding = |uuid: &str, padding: String| -> String {
        let mut v: serde_json::Value = serde_json::from_str(&metric_line(&sb.name, 0)).unwrap();
        v["message_uuid"] = uuid.into();
        v["padding"] = padding.into();
        v.to_string()
    };
    let plain_uuid = format!("{}-big-plain", sb.name);
    let plain = with_padding(&plain_uuid, "x".repeat(6 << 20));
    // And 9 MiB of random letters in a gzip batch, which compresses to about 6.7 MiB.
    let gzip_uuid = format!("{}-big-gzip", sb.name);
    let mut rng = fastrand::Rng::with_seed(6);
    let noise: String = (0..(9 << 20)).map(|_| rng.alphanumeric()).collect();
    let gzip = with_padding(&gzip_uuid, noise);

    kcat_produce(&sb.brokers, &sb.topic, 0, None, &[], &next(2));
    kcat_produce(
        &sb.brokers,
        &sb.topic,
        0,
        None,
        &big_producer,
        std::slice::from_ref(&plain),
    );
    kcat_produce(&sb.brokers, &sb.topic, 0, None, &[], &next(3));
    kcat_produce(
        &sb.brokers,
        &sb.topic,
        0,
        Some("gzip"),
        &big_producer,
        std::slice::from_ref(&gzip),
    );
    kcat_produce(&sb.brokers, &sb.topic, 0, None, &[], &next(3));

    let list = local_log_batches(&sb.topic, 0);
    let sizes: Vec<String> = list
        .iter()
        .map(|b| format!("{}..{} {}", b.base_offset, b.last_offset, b.codec))
        .collect();
    // kcat may split the small records into batches of any size; what matters is that each
    // big record is a batch of its own: offset 2 plain, offset 6 gzip.
    let alone = |offset: i64, codec: &str| {
        list.iter()
            .any(|b| b.base_offset == offset && b.last_offset == offset && b.codec == codec)
    };
    assert!(alone(2, "none") && alone(6, "gzip"), "{sizes:?}");

    let started = Instant::now();
    let log = consume(&sb, &[]);
    let took = started.elapsed();

    let records = kcat_read(&sb.brokers, &sb.topic);
    assert_eq!(records.len(), 10);
    let id = topic_id(&sb.brokers, &sb.topic);
    let raw = raw_by_uuid(&sb);
    let dlq = sb.docs("dlq", doc! {}, doc! {"kafka.offset": 1});
    let dead: HashMap<(String, i32, i64), &Document> =
        dlq.iter().map(|d| (kafka_position(d), d)).collect();
    // The exact fate of each big record, from the documented limits: a payload of at most
    // 8 MiB is stored whole (the 6 MiB plain one, its document far below 16 MiB); one over
    // 8 MiB is dead-lettered as payload_too_large (the 9 MiB gzip one, read whole from a
    // batch of 6.7 MiB) with its head, length and SHA-256. Every small record is stored.
    for r in &records {
        let payload = r.payload.as_deref().unwrap();
        let uuid = uuid_of(payload).unwrap();
        let key = (id.clone(), r.partition, r.offset);
        if uuid == gzip_uuid {
            assert_eq!(r.offset, 6, "the gzip record's offset");
            assert!(!raw.contains_key(&uuid), "{uuid} (9 MiB) stored:\n{log}");
            let letter = dead
                .get(&key)
                .unwrap_or_else(|| panic!("{uuid} (9 MiB) is not dead-lettered:\n{log}"));
            assert_too_large_letter(letter, gzip.as_bytes());
            eprintln!(
                "FIGURE bigbatch: {uuid} dead-lettered: {} ({})",
                letter.get_str("reason_code").unwrap(),
                letter.get_str("reason").unwrap()
            );
        } else {
            assert!(
                !dead.contains_key(&key),
                "offset {} ({uuid}) dead-lettered: {:?}\n{log}",
                r.offset,
                dead.get(&key)
            );
            let d = raw
                .get(&uuid)
                .unwrap_or_else(|| panic!("offset {} ({uuid}) is not stored:\n{log}", r.offset));
            assert_eq!(kafka_position(d), key, "{uuid} stored at its position");
        }
    }
    assert_eq!(
        (raw.len(), dlq.len()),
        (9, 1),
        "9 records stored, the 9 MiB one dead-lettered, nothing else"
    );
    match raw[&plain_uuid].get("padding") {
        Some(Bson::String(s)) => assert!(
            s.len() == 6 << 20 && s.bytes().all(|b| b == b'x'),
            "{plain_uuid}: padding of {} bytes stored, {} written",
            s.len(),
            6 << 20
        ),
        other => panic!(
            "{plain_uuid}: padding {:?}, a string of {} bytes written",
            other.map(|b| b.element_type()),
            6 << 20
        ),
    }
    eprintln!(
        "FIGURE bigbatch: {plain_uuid} stored whole ({} bytes of padding)",
        6 << 20
    );
    for small in 1..=8 {
        let uuid = format!("{}-{small}", sb.name);
        assert!(
            raw.contains_key(&uuid),
            "{uuid}, before or after the big batches, stored"
        );
    }
    eprintln!(
        "FIGURE bigbatch: 10 records (two batches of 6 MiB+, plain and gzip), {} stored, {} \
         dead-lettered, consumer run {:.1} s",
        raw.len(),
        dlq.len(),
        took.as_secs_f64()
    );
}

#[test]
fn transaction_markers_are_skipped_and_the_consumer_does_not_stall_on_them() {
    let sb = Sandbox::new("txn");
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    let mut n = 0u64;
    let mut next = |k: usize| -> Vec<String> {
        (0..k)
            .map(|_| {
                n += 1;
                metric_line(&sb.name, n)
            })
            .collect()
    };
    let txn = |label: &str| format!("transactional.id={}-{label}", sb.name);
    // Partition 0: plain, a committed transaction, plain. Partition 1: a transaction, its
    // marker the last offset of the log. Partition 2: an lz4-compressed transaction, then plain.
    kcat_produce(&sb.brokers, &sb.topic, 0, None, &[], &next(2));
    kcat_produce(
        &sb.brokers,
        &sb.topic,
        0,
        None,
        &["-X", &txn("p0")],
        &next(5),
    );
    kcat_produce(&sb.brokers, &sb.topic, 0, None, &[], &next(2));
    kcat_produce(
        &sb.brokers,
        &sb.topic,
        1,
        None,
        &["-X", &txn("p1")],
        &next(4),
    );
    kcat_produce(
        &sb.brokers,
        &sb.topic,
        2,
        Some("lz4"),
        &["-X", &txn("p2")],
        &next(3),
    );
    kcat_produce(&sb.brokers, &sb.topic, 2, None, &[], &next(1));

    // Each commit marker is written by the transaction coordinator after kcat returns: wait
    // for the log ends Kafka's own tool reports (records plus one marker per partition). Where
    // a marker lands relative to the plain records written after it depends on that timing.
    let ends = BTreeMap::from([(0, 10i64), (1, 5), (2, 5)]);
    let settled = poll(Duration::from_secs(30), Duration::from_millis(300), || {
        (log_end_offsets(&sb.brokers, &sb.topic) == ends).then_some(())
    });
    assert!(settled.is_some(), "log ends never reached {ends:?}");
    // The markers: the offsets kcat (read_committed, which never shows a marker) does not read.
    let before = kcat_read(&sb.brokers, &sb.topic);
    let markers: Vec<(i32, i64)> = ends
        .iter()
        .flat_map(|(p, end)| (0..*end).map(move |o| (*p, o)))
        .filter(|(p, o)| !before.iter().any(|r| r.partition == *p && r.offset == *o))
        .collect();
    assert_eq!(markers.len(), 3, "one marker per transaction: {markers:?}");
    let marker = |p: i32| markers.iter().find(|m| m.0 == p).map(|m| m.1);
    assert!(
        marker(0).is_some_and(|o| o >= 7),
        "after offsets 2..=6: {markers:?}"
    );
    assert_eq!(
        marker(1),
        Some(4),
        "the marker ends partition 1: {markers:?}"
    );
    assert!(
        marker(2).is_some_and(|o| o >= 3),
        "after offsets 0..=2: {markers:?}"
    );
    // And on disk: those offsets are control batches, and the
    // transactions' records are in transactional batches.
    let mut batches = BTreeMap::new();
    for p in 0..3 {
        let list = local_log_batches(&sb.topic, p);
        let control: Vec<(i32, i64)> = list
            .iter()
            .filter(|b| b.control)
            .map(|b| (p, b.base_offset))
            .collect();
        assert_eq!(control, vec![(p, marker(p).unwrap())], "{list:?}");
        assert!(list.iter().any(|b| b.transactional && !b.control));
        batches.insert(p, list);
    }

    let started = Instant::now();
    let log = consume(&sb, &["--window-size", "5"]);
    let took = started.elapsed();
    // Idle 3 s once caught up; a consumer stuck before a marker would never be caught up.
    assert!(took < Duration::from_secs(30), "took {took:?}: {log}");

    let records = kcat_read(&sb.brokers, &sb.topic);
    assert_kcat_saw_every_offset(&records, &batches);
    let id = topic_id(&sb.brokers, &sb.topic);
    let raw = raw_by_uuid(&sb);
    let valid = assert_valid_stored_once_at_their_position(&records, &raw, &id);
    assert_eq!(valid, 17);
    assert_eq!(raw.len(), valid);
    assert_eq!(sb.count("dlq"), 0, "markers are not dead-lettered: {log}");
    for (p, o) in &markers {
        let here = doc! {"kafka.partition": *p, "kafka.offset": *o};
        assert!(sb.docs("raw", here.clone(), doc! {}).is_empty());
        assert!(sb.docs("dlq", here, doc! {}).is_empty());
    }
    assert_eq!(check_windows_against_raw(&sb, 5), 3);
    common::oracle::check_one_run(&sb);
    assert!(
        log.contains("caught up"),
        "the consumer reached every log end: {log}"
    );
    eprintln!(
        "FIGURE txn: {} transactional and plain records, {} markers skipped, {valid} stored, 0 \
         dead-lettered, consumer run {:.1} s (3 s of it idle)",
        records.len(),
        markers.len(),
        took.as_secs_f64()
    );
}

/// The old log: 40 valid messages (partition 0: offsets 0..=20 with a malformed one at 15;
/// partition 1: 20) and the new log: 30 valid (partition 0: offsets 0..=20, malformed at 15
/// again, where the old log had one too; partition 1: 10).
struct Logs {
    tag_old: String,
    tag_new: String,
}

const BAD_OLD: &str = r#"{"server_id":"old-log","metrics":"#;
const BAD_NEW: &str = r#"{"server_id":"new-log","metrics":"#;

fn write_log(sb: &Sandbox, tag: &str, bad: &str, partition1: u64) {
    let p0: Vec<String> = (0..20u64)
        .map(|i| metric_line(tag, i))
        .enumerate()
        .flat_map(|(i, l)| {
            if i == 15 {
                vec![bad.to_string(), l]
            } else {
                vec![l]
            }
        })
        .collect();
    kcat_produce(&sb.brokers, &sb.topic, 0, Some("zstd"), &[], &p0);
    let p1: Vec<String> = (100..100 + partition1)
        .map(|i| metric_line(tag, i))
        .collect();
    kcat_produce(&sb.brokers, &sb.topic, 1, None, &[], &p1);
}

impl Logs {
    fn new(sb: &Sandbox) -> Logs {
        Logs {
            tag_old: format!("{}-old", sb.name),
            tag_new: format!("{}-new", sb.name),
        }
    }
    fn write_old(&self, sb: &Sandbox) {
        write_log(sb, &self.tag_old, BAD_OLD, 20);
    }
    fn write_new(&self, sb: &Sandbox) {
        write_log(sb, &self.tag_new, BAD_NEW, 10);
    }

    /// Both logs fully accounted for, each in its own incarnation.
    fn check(&self, sb: &Sandbox, old_id: &str, new_id: &str) {
        assert_ne!(old_id, new_id, "a re-created topic has a new id");
        let raw = raw_by_uuid(sb);
        assert_eq!(raw.len(), 70, "40 old and 30 new messages stored once");
        for (d, uuid) in raw
            .values()
            .map(|d| (d, d.get_str("message_uuid").unwrap()))
        {
            let (id, _, _) = kafka_position(d);
            if uuid.starts_with(&self.tag_old) {
                assert_eq!(id, old_id, "{uuid}");
            } else {
                assert!(uuid.starts_with(&self.tag_new), "{uuid}");
                assert_eq!(id, new_id, "{uuid}");
            }
        }
        let records = kcat_read(&sb.brokers, &sb.topic);
        assert_eq!(records.len(), 31, "the new log");
        assert_eq!(
            assert_valid_stored_once_at_their_position(&records, &raw, new_id),
            30
        );

        let dlq = sb.docs("dlq", doc! {}, doc! {});
        let ids: BTreeMap<String, &Document> = dlq
            .iter()
            .map(|d| (d.get_str("_id").unwrap().to_string(), d))
            .collect();
        assert_eq!(dlq.len(), 2, "two dead letters: {:?}", ids.keys());
        for (id, payload) in [(old_id, BAD_OLD), (new_id, BAD_NEW)] {
            let key = format!("{}/{id}/0/15", sb.topic);
            let letter = ids
                .get(&key)
                .unwrap_or_else(|| panic!("no dead letter {key}: {:?}", ids.keys()));
            assert_eq!(letter.get_str("payload").unwrap(), payload);
            assert_eq!(letter.get_str("reason_code").unwrap(), "invalid_json");
            assert_eq!(kafka_position(letter), (id.to_string(), 0, 15));
        }

        assert_eq!(check_windows_against_raw(sb, 20), 3);
        let per_log = |id: &str| sb.docs("kpis", doc! {"kafka.topic_id": id}, doc! {}).len();
        assert_eq!(per_log(old_id), 2, "the old log's windows");
        assert_eq!(per_log(new_id), 1, "floor(30 / 20) windows of the new log");
    }
}

#[test]
fn a_topic_deleted_and_recreated_while_the_consumer_is_stopped_is_read_from_its_start() {
    let sb = Sandbox::new("recreate_stopped");
    let logs = Logs::new(&sb);
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    logs.write_old(&sb);
    consume(&sb, &[]);
    assert_eq!(
        (sb.count("raw"), sb.count("dlq"), sb.count("kpis")),
        (40, 1, 2)
    );
    let old_id = topic_id(&sb.brokers, &sb.topic);

    delete_topic_and_wait(&sb.brokers, &sb.topic);
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    let new_id = topic_id(&sb.brokers, &sb.topic);
    logs.write_new(&sb);
    let log = consume(&sb, &[]);
    logs.check(&sb, &old_id, &new_id);
    assert!(
        log.contains("(30 stored, 0 replayed, 1 dead-lettered)"),
        "{log}"
    );
}

#[test]
fn a_topic_deleted_and_recreated_while_the_consumer_runs_is_followed() {
    let sb = Sandbox::new("recreate_running");
    let logs = Logs::new(&sb);
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    let mut consumer = sb.spawn("consume", &["consume"]);
    logs.write_old(&sb);
    let stored = |raw: u64, dlq: u64| {
        poll(LIMIT, Duration::from_millis(200), || {
            (sb.count("raw") == raw && sb.count("dlq") == dlq).then_some(())
        })
    };
    assert!(
        stored(40, 1).is_some(),
        "old log stored: {}",
        consumer.log_tail(30)
    );
    let old_id = topic_id(&sb.brokers, &sb.topic);

    let recreated = Instant::now();
    delete_topic_and_wait(&sb.brokers, &sb.topic);
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    let new_id = topic_id(&sb.brokers, &sb.topic);
    logs.write_new(&sb);
    let written = recreated.elapsed();
    assert!(
        stored(70, 2).is_some(),
        "new log stored: {}",
        consumer.log_tail(30)
    );
    let followed = recreated.elapsed();
    assert!(consumer.running(), "the consumer kept running");
    let code = consumer.stop(Duration::from_secs(15));
    let log = consumer.log_text();
    assert_eq!(
        code,
        Some(0),
        "exit code after SIGTERM: {}",
        consumer.log_tail(30)
    );
    assert!(log.contains("was re-created"), "{log}");
    logs.check(&sb, &old_id, &new_id);
    eprintln!(
        "FIGURE recreate: delete, re-create and write took {:.1} s; all 30 new messages stored \
         {:.1} s after the delete began",
        written.as_secs_f64(),
        followed.as_secs_f64()
    );
}
