//! `metricsctl produce` against the real broker: every message stored exactly once where Java's
//! partitioner puts it, in every codec, and still exactly once when the broker stored a batch
//! but the producer never heard (idempotence: a retried batch is never stored twice). And what
//! the producer (and the consumer, and `status`) do when a broker is too old for them or refuses
//! the topic: exit 1 at once with one line that says why.
//!
//! Independent witnesses: kcat (librdkafka) reads what was stored and, for the partitioner,
//! writes the same keys with its `murmur2_random` partitioner; Kafka's own DumpLogSegments shows
//! the batches on disk (codec, producer id, sequence numbers). Faults come from
//! `common/kafka_proxy.rs`: a proxy in front of the broker that loses Produce responses, and a
//! fake broker that answers ApiVersions and Metadata as a test needs.

mod common {
    pub mod kafka_proxy;
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod process;
    pub mod services;
}

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::kafka_proxy::{
    FakeBroker, FakeBrokerSpec, Fault, KafkaProxy, API_VERSIONS, FETCH, PRODUCE,
};
use common::kafka_tools::{create_topic, kafka_tool};
use common::kcat::kcat_read;
use common::process::{assert_ok, run_tool, text, wait_with_limit};
use common::services::{repo_root, Sandbox};
use kafka_protocol::messages::ApiKey;

/// Eight servers, so that every one of the three partitions gets some (Java's partitioner puts
/// the default five on partitions 0 and 1 only).
const SERVERS: &str = "web01,web02,db01,app01,cache01,cache02,api01,mail01";
const SERVER_COUNT: usize = 8;
const REPORTS: usize = 5;
const PARTITIONS: i32 = 3;
/// A produce run of a few dozen messages takes well under a second; this is for a loaded box.
const PRODUCE_LIMIT: Duration = Duration::from_secs(120);
/// What "exits at once" may take against a fake broker, startup included (measured: well under
/// a second).
const FAIL_FAST_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Java's partitioner, written here from Kafka's source (Utils.murmur2, Utils.toPositive,
// BuiltInPartitioner.partitionForKey), checked against Kafka's own test vectors below.

fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let length = data.len();
    let mut h = SEED ^ length as u32;
    let whole = length / 4;
    for i in 0..whole {
        let b = &data[i * 4..i * 4 + 4];
        let mut k = u32::from(b[0])
            | (u32::from(b[1]) << 8)
            | (u32::from(b[2]) << 16)
            | (u32::from(b[3]) << 24);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = &data[whole * 4..];
    // Java's switch falls through from case 3 to case 1.
    if rest.len() == 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn java_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_written_here_matches_kafkas_own_test_vectors() {
    // clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
    let cases: [(&str, i32); 6] = [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        ("abc", 479470107),
    ];
    for (key, expected) in cases {
        assert_eq!(murmur2(key.as_bytes()), expected, "murmur2({key:?})");
    }
}

// ---------------------------------------------------------------------------------------------
// Running the producer, reading the topic back.

/// `produce --count 5 --interval 0` of the eight servers through `brokers`, with `extra` flags,
/// to completion; asserts exit 0.
fn produce(sb: &Sandbox, brokers: &str, extra: &[&str]) -> Output {
    produce_every(sb, brokers, "0", extra)
}

/// `produce` of [`REPORTS`] reports of [`SERVERS`], one every `interval` seconds.
fn produce_every(sb: &Sandbox, brokers: &str, interval: &str, extra: &[&str]) -> Output {
    let count = REPORTS.to_string();
    let mut args = vec![
        "produce",
        "--brokers",
        brokers,
        "--servers",
        SERVERS,
        "--count",
        &count,
        "--interval",
        interval,
    ];
    args.extend_from_slice(extra);
    let out = sb.run(&args, PRODUCE_LIMIT);
    assert_ok(&out, &format!("metricsctl {}", args.join(" ")));
    out
}

/// One record as kcat reads it, with its key.
#[derive(Debug, Clone)]
struct Record {
    partition: i32,
    offset: i64,
    key: Option<String>,
    payload: String,
}

/// Every record of `topic`, each partition from its start to its end, read by kcat straight from
/// the broker (never through a proxy), sorted by partition and offset.
fn kcat_read_keyed(brokers: &str, topic: &str) -> Vec<Record> {
    kcat_read(brokers, topic)
        .into_iter()
        .map(|r| Record {
            partition: r.partition,
            offset: r.offset,
            key: r.key,
            payload: r.payload.unwrap_or_default(),
        })
        .collect()
}

/// The topic holds exactly `expected` messages, each `message_uuid` once, each keyed by its
/// `server_id`, in the partition Java's partitioner picks for that key, at offsets 0, 1, 2, ...
/// of its partition with no gap. `context` (the producer's log, the proxy's counters) goes into
/// every failure message. Returns the partition each server's messages are in.
fn assert_stored_exactly_once(
    records: &[Record],
    expected: usize,
    context: &str,
) -> BTreeMap<String, i32> {
    // The first 100 records: enough to see a doubled batch without drowning the message.
    let listing = || {
        let mut lines: Vec<String> = records
            .iter()
            .take(100)
            .map(|r| {
                format!(
                    "{}/{} {:?} {:.120}",
                    r.partition, r.offset, r.key, r.payload
                )
            })
            .collect();
        if records.len() > 100 {
            lines.push(format!("... and {} more", records.len() - 100));
        }
        lines.join("\n")
    };
    assert_eq!(
        records.len(),
        expected,
        "messages stored (kcat's read):\n{}\n--- context:\n{context}",
        listing()
    );
    let mut uuids = HashSet::new();
    let mut partition_of = BTreeMap::new();
    for r in records {
        let v: serde_json::Value = serde_json::from_str(&r.payload).unwrap_or_else(|e| {
            panic!(
                "{}/{}: not JSON ({e}): {:.200}",
                r.partition, r.offset, r.payload
            )
        });
        let uuid = v["message_uuid"].as_str().unwrap_or_else(|| {
            panic!(
                "{}/{}: no message_uuid: {}",
                r.partition, r.offset, r.payload
            )
        });
        assert!(
            uuids.insert(uuid.to_string()),
            "message_uuid {uuid} stored twice (again at {}/{}):\n{}\n--- context:\n{context}",
            r.partition,
            r.offset,
            listing()
        );
        let server = v["server_id"].as_str().expect("server_id");
        assert_eq!(
            r.key.as_deref(),
            Some(server),
            "{}/{}: the key is the server_id",
            r.partition,
            r.offset
        );
        assert_eq!(
            r.partition,
            java_partition(server, PARTITIONS),
            "{server}: the partition Java's murmur2 partitioner picks"
        );
        partition_of.insert(server.to_string(), r.partition);
    }
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r.offset);
    }
    for (p, offsets) in &by_partition {
        let consecutive: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, &consecutive,
            "partition {p}: offsets from 0 with no gap (a gap is a batch stored twice and \
             removed, or a record lost)\n--- context:\n{context}"
        );
    }
    partition_of
}

/// A fresh topic of three partitions for the sandbox.
fn three_partitions(sb: &Sandbox) {
    create_topic(
        &sb.brokers,
        &sb.topic,
        &["--partitions", &PARTITIONS.to_string()],
    );
}

/// The producer's stderr, for failure messages.
fn log_of(out: &Output) -> String {
    format!("producer log:\n{}", text(&out.stderr))
}

// ---------------------------------------------------------------------------------------------
// Batches on disk, by Kafka's own DumpLogSegments.

/// The producer fields of one record batch on disk.
#[derive(Debug, Clone)]
struct Dumped {
    base_offset: i64,
    count: i64,
    magic: i64,
    codec: String,
    producer_id: i64,
    producer_epoch: i64,
    base_sequence: i64,
    last_sequence: i64,
}

/// The folders a local broker keeps partitions in: `.local/kafka/VERSION/data` (one node),
/// `.local/kafka/VERSION/cluster/node-N/data` (three), and the same without VERSION (the layout
/// before Kafka versions were kept side by side).
fn local_data_dirs() -> Vec<std::path::PathBuf> {
    let kafka = repo_root().join(".local/kafka");
    let children = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut homes = vec![kafka.clone()];
    homes.extend(children(&kafka).into_iter().filter(|p| p.is_dir()));
    let mut dirs = Vec::new();
    for home in homes {
        dirs.push(home.join("data"));
        for node in children(&home.join("cluster")) {
            dirs.push(node.join("data"));
        }
    }
    dirs
}

/// Each partition's batches, from one run of Kafka's `dump-log` over every segment of the
/// topic, wherever the local broker keeps it. Topic names are unique, so one folder holds
/// `<topic>-<p>`, or with three nodes one per replica: then the leader's (`cluster/node-<id>`)
/// is read, since a follower out of the in-sync set may lag.
fn dump_batches(sb: &Sandbox) -> BTreeMap<i32, Vec<Dumped>> {
    let topic = &sb.topic;
    let dirs = local_data_dirs();
    let leaders = common::kcat::partition_leaders(&sb.brokers, topic).unwrap_or_default();
    let mut files = Vec::new();
    for p in 0..PARTITIONS {
        let replicas: Vec<std::path::PathBuf> = dirs
            .iter()
            .map(|d| d.join(format!("{topic}-{p}")))
            .filter(|d| d.is_dir())
            .collect();
        let leader = leaders.get(&p).map(|id| format!("node-{id}"));
        let dir = match replicas.as_slice() {
            [only] => only,
            _ => replicas
                .iter()
                .find(|d| {
                    leader
                        .as_deref()
                        .is_some_and(|node| d.components().any(|c| c.as_os_str() == node))
                })
                .unwrap_or_else(|| {
                    panic!(
                        "no local folder holds {topic}-{p}'s leader replica ({leader:?}; is the \
                         broker local?): {replicas:?} of {dirs:?}"
                    )
                }),
        };
        let mut segments: Vec<String> = std::fs::read_dir(dir)
            .expect("partition folder")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .map(|p| p.display().to_string())
            .collect();
        segments.sort();
        files.extend(segments);
    }
    let out = kafka_tool(&["dump-log", "--files", &files.join(",")]);
    assert_ok(&out, "kafka-dump-log");
    let mut batches: BTreeMap<i32, Vec<Dumped>> = BTreeMap::new();
    let mut partition = -1;
    for line in text(&out.stdout).lines() {
        // "Dumping <dir>/<topic>-<p>/<segment>.log" starts each file.
        if let Some(path) = line.strip_prefix("Dumping ") {
            let dir = std::path::Path::new(path.trim())
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|d| d.to_str())
                .unwrap_or_default();
            partition = dir
                .rsplit_once('-')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(-1);
            continue;
        }
        if !line.starts_with("baseOffset:") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| -> &str {
            words
                .iter()
                .position(|w| *w == name)
                .and_then(|i| words.get(i + 1))
                .copied()
                .unwrap_or_else(|| panic!("no {name} in: {line}"))
        };
        let number = |name: &str| -> i64 {
            field(name)
                .parse()
                .unwrap_or_else(|_| panic!("{name} in: {line}"))
        };
        batches.entry(partition).or_default().push(Dumped {
            base_offset: number("baseOffset:"),
            count: number("count:"),
            magic: number("magic:"),
            codec: field("compresscodec:").to_string(),
            producer_id: number("producerId:"),
            producer_epoch: number("producerEpoch:"),
            base_sequence: number("baseSequence:"),
            last_sequence: number("lastSequence:"),
        });
    }
    batches
}

/// The batches are those of one idempotent producer in `codec`: record batches v2, a producer
/// id, and per partition sequence numbers from 0 with no gap and no repeat (a new producer
/// epoch starts again at 0). Returns the number of records in the batches.
fn assert_idempotent_batches(sb: &Sandbox, codec: &str, context: &str) -> i64 {
    let batches = dump_batches(sb);
    assert_eq!(
        batches.len(),
        PARTITIONS as usize,
        "every partition holds batches: {batches:#?}\n--- context:\n{context}"
    );
    let mut records = 0;
    for (p, list) in &batches {
        let mut previous: Option<&Dumped> = None;
        let mut records_before = 0;
        for b in list {
            let about = format!(
                "partition {p}, batch {b:?} (the one before: {previous:?}; {} batches)\n\
                 --- context:\n{context}",
                list.len()
            );
            assert_eq!(b.magic, 2, "record batch v2; {about}");
            assert_eq!(b.codec, codec, "the batch's codec; {about}");
            assert!(
                b.producer_id >= 0,
                "an idempotent producer's batch; {about}"
            );
            let expected_sequence = match previous {
                Some(prev)
                    if (prev.producer_id, prev.producer_epoch)
                        == (b.producer_id, b.producer_epoch) =>
                {
                    prev.last_sequence + 1
                }
                _ => 0,
            };
            assert_eq!(
                b.base_sequence, expected_sequence,
                "sequence numbers follow on, from 0 in each producer epoch; {about}"
            );
            assert_eq!(
                b.last_sequence - b.base_sequence + 1,
                b.count,
                "one sequence number per record; {about}"
            );
            assert_eq!(
                b.base_offset, records_before,
                "the batches fill the log from offset 0 with no gap; {about}"
            );
            records_before += b.count;
            records += b.count;
            previous = Some(b);
        }
    }
    records
}

// ---------------------------------------------------------------------------------------------
// Round trip and codecs against the broker itself.

#[test]
fn every_message_is_stored_once_keyed_by_server_in_javas_partition() {
    let sb = Sandbox::new("prod_roundtrip");
    three_partitions(&sb);
    let out = produce(&sb, &sb.brokers, &[]);
    let records = kcat_read_keyed(&sb.brokers, &sb.topic);
    let ours = assert_stored_exactly_once(&records, REPORTS * SERVER_COUNT, &log_of(&out));
    let on_disk = assert_idempotent_batches(&sb, "none", &log_of(&out));
    assert_eq!(
        on_disk,
        records.len() as i64,
        "records in the batches on disk"
    );
    assert_eq!(
        ours.len(),
        SERVER_COUNT,
        "every server's messages: {ours:?}"
    );
    let used: HashSet<i32> = ours.values().copied().collect();
    assert_eq!(
        used.len(),
        3,
        "the eight servers use all three partitions (else the check is weak): {ours:?}"
    );

    // librdkafka's murmur2_random partitioner (Java's) puts the same keys in the same
    // partitions of a topic of the same size.
    let other = Sandbox::new("prod_roundtrip_kcat");
    three_partitions(&other);
    let mut c = Command::new("kcat");
    c.args(["-b", &other.brokers, "-P", "-t", &other.topic, "-K", ":"])
        .args(["-X", "partitioner=murmur2_random"]);
    let input: String = SERVERS.split(',').map(|s| format!("{s}:{s}\n")).collect();
    assert_ok(
        &run_tool(c, Some(input.as_bytes()), Duration::from_secs(60)),
        "kcat -P -X partitioner=murmur2_random",
    );
    let theirs: BTreeMap<String, i32> = kcat_read_keyed(&other.brokers, &other.topic)
        .into_iter()
        .map(|r| (r.key.expect("kcat wrote keys"), r.partition))
        .collect();
    assert_eq!(
        ours, theirs,
        "metricsctl's partitions vs librdkafka's murmur2_random"
    );
}

/// Produces in `codec`, reads it all back with kcat, and checks with Kafka's DumpLogSegments
/// that every batch on disk carries that codec (and is an idempotent producer's).
fn round_trip_in(codec: &str) {
    let sb = Sandbox::new(&format!("prod_codec_{codec}"));
    three_partitions(&sb);
    let out = produce(&sb, &sb.brokers, &["--compression", codec]);
    let records = kcat_read_keyed(&sb.brokers, &sb.topic);
    assert_stored_exactly_once(&records, REPORTS * SERVER_COUNT, &log_of(&out));
    let on_disk = assert_idempotent_batches(&sb, codec, &log_of(&out));
    assert_eq!(
        on_disk,
        records.len() as i64,
        "records in the batches on disk"
    );
}

#[test]
fn gzip_batches_are_stored_and_read_back() {
    round_trip_in("gzip");
}

#[test]
fn snappy_batches_are_stored_and_read_back() {
    round_trip_in("snappy");
}

#[test]
fn lz4_batches_are_stored_and_read_back() {
    round_trip_in("lz4");
}

#[test]
fn zstd_batches_are_stored_and_read_back() {
    round_trip_in("zstd");
}

// ---------------------------------------------------------------------------------------------
// Idempotence: responses lost after the broker stored the batch.

/// Produces through a proxy whose `fault` loses the first Produce responses, then checks that
/// the fault fired (as many times as it says), that the producer retried, and that nothing is
/// stored twice.
fn retried_batches_are_stored_once(label: &str, codec: Option<&str>, fault: Fault) -> Duration {
    retried_batches_are_stored_once_every(label, "0", codec, fault)
}

/// [`retried_batches_are_stored_once`] with a report every `interval` seconds.
fn retried_batches_are_stored_once_every(
    label: &str,
    interval: &str,
    codec: Option<&str>,
    fault: Fault,
) -> Duration {
    let sb = Sandbox::new(label);
    three_partitions(&sb);
    let proxy = KafkaProxy::start(&sb.brokers);
    proxy.set_fault(fault);
    let mut extra = Vec::new();
    if let Some(codec) = codec {
        extra.extend_from_slice(&["--compression", codec]);
    }
    let started = Instant::now();
    let out = produce_every(&sb, &proxy.addr(), interval, &extra);
    let took = started.elapsed();
    let context = format!("{}\n{}", proxy.summary(), log_of(&out));
    assert!(
        proxy.rewrite_failures().is_empty(),
        "the proxy rewrote every Metadata response; {context}"
    );
    let (lost, expected) = match fault {
        Fault::DropProduceResponses(n) => (proxy.dropped(), u64::from(n)),
        Fault::WithholdProduceResponses(n) => (proxy.withheld(), u64::from(n)),
        Fault::None => (0, 0),
    };
    assert_eq!(
        lost, expected,
        "the fault fired exactly as set (else this test proves nothing); {context}"
    );
    assert!(
        proxy.requests(PRODUCE) > expected,
        "the lost Produce requests were retried; {context}"
    );
    let records = kcat_read_keyed(&sb.brokers, &sb.topic);
    assert_stored_exactly_once(&records, REPORTS * SERVER_COUNT, &context);
    let in_batches = assert_idempotent_batches(&sb, codec.unwrap_or("none"), &context);
    assert_eq!(
        in_batches,
        records.len() as i64,
        "records in the batches on disk"
    );
    took
}

/// Paced: while the first request waits for its answer, later reports fall due and wait in the
/// outbox behind its messages. The retry must carry the batch in doubt alone: a request with
/// more messages makes a different batch for the partition, and the copy the broker already
/// stored would be stored again under a new epoch.
#[test]
fn a_paced_producer_retries_the_batch_in_doubt_alone_and_stores_it_once() {
    retried_batches_are_stored_once_every(
        "prod_idem_paced",
        "0.2",
        None,
        Fault::WithholdProduceResponses(1),
    );
}

#[test]
fn a_dropped_produce_response_is_retried_and_stored_once() {
    retried_batches_are_stored_once("prod_idem_none", None, Fault::DropProduceResponses(1));
}

#[test]
fn a_dropped_produce_response_is_retried_and_stored_once_in_gzip() {
    retried_batches_are_stored_once(
        "prod_idem_gzip",
        Some("gzip"),
        Fault::DropProduceResponses(1),
    );
}

#[test]
fn a_dropped_produce_response_is_retried_and_stored_once_in_snappy() {
    retried_batches_are_stored_once(
        "prod_idem_snappy",
        Some("snappy"),
        Fault::DropProduceResponses(1),
    );
}

#[test]
fn a_dropped_produce_response_is_retried_and_stored_once_in_lz4() {
    retried_batches_are_stored_once("prod_idem_lz4", Some("lz4"), Fault::DropProduceResponses(1));
}

#[test]
fn a_dropped_produce_response_is_retried_and_stored_once_in_zstd() {
    retried_batches_are_stored_once(
        "prod_idem_zstd",
        Some("zstd"),
        Fault::DropProduceResponses(1),
    );
}

#[test]
fn three_dropped_responses_in_a_row_are_retried_and_stored_once() {
    retried_batches_are_stored_once(
        "prod_idem_drop3",
        Some("lz4"),
        Fault::DropProduceResponses(3),
    );
}

/// Responses lost after many batches went through: sequence numbers well past 0 on every
/// partition, a batch per report in flight.
#[test]
fn responses_dropped_mid_stream_are_retried_and_stored_once() {
    // About 16 MB of messages: some 18 requests of up to 900 KiB, so the fault fires mid-stream.
    const MANY: usize = 6000;
    let sb = Sandbox::new("prod_idem_midstream");
    three_partitions(&sb);
    let proxy = KafkaProxy::start(&sb.brokers);
    let count = MANY.to_string();
    let args = [
        "produce",
        "--brokers",
        &proxy.addr(),
        "--servers",
        SERVERS,
        "--count",
        &count,
        "--interval",
        "0",
        "--compression",
        "gzip",
    ];
    let mut producer = sb.spawn("produce", &args);
    let going = common::process::poll(PRODUCE_LIMIT, Duration::from_millis(5), || {
        (proxy.requests(PRODUCE) >= 5).then_some(())
    });
    proxy.set_fault(Fault::DropProduceResponses(2));
    let code = producer.wait_exit(PRODUCE_LIMIT);
    let context = format!(
        "{}\nproducer log tail:\n{}",
        proxy.summary(),
        producer.log_tail(30)
    );
    assert!(going.is_some(), "the producer got going; {context}");
    assert_eq!(code, Some(0), "exit code; {context}");
    assert_eq!(
        proxy.dropped(),
        2,
        "the fault fired mid-stream (the producer had not finished); {context}"
    );
    let records = kcat_read_keyed(&sb.brokers, &sb.topic);
    assert_stored_exactly_once(&records, MANY * SERVER_COUNT, &context);
    let in_batches = assert_idempotent_batches(&sb, "gzip", &context);
    assert_eq!(
        in_batches,
        records.len() as i64,
        "records in the batches on disk"
    );
}

#[test]
fn a_produce_response_that_never_comes_times_out_and_is_stored_once() {
    let took = retried_batches_are_stored_once(
        "prod_idem_timeout",
        None,
        Fault::WithholdProduceResponses(1),
    );
    eprintln!(
        "FIGURE producer: a withheld Produce response cost {:.1} s (request timeout and retry)",
        took.as_secs_f64()
    );
}

/// Kafka's own console producer (Java) through `proxy`: 30 keyed messages, acks=all, idempotent
/// or not.
fn java_produce_through(proxy: &KafkaProxy, topic: &str, idempotent: bool) {
    let mut c = Command::new("bash");
    c.arg(repo_root().join("scripts/kafka-tool.sh"))
        .args(["console-producer", "--bootstrap-server", &proxy.addr()])
        .args(["--topic", topic])
        .args([
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ])
        .args(["--producer-property", "acks=all"])
        .args([
            "--producer-property",
            &format!("enable.idempotence={idempotent}"),
        ]);
    let input: String = (0..30)
        .map(|i| format!("k{}:message {i}\n", i % 7))
        .collect();
    let out = run_tool(c, Some(input.as_bytes()), Duration::from_secs(120));
    assert_ok(&out, "kafka-console-producer through the proxy");
    assert_eq!(proxy.dropped(), 1, "{}", proxy.summary());
    assert!(proxy.requests(PRODUCE) >= 2, "{}", proxy.summary());
    assert!(proxy.rewrite_failures().is_empty(), "{}", proxy.summary());
}

/// The harness itself, with independent clients; a failure here is the harness's, not
/// metricsctl's. A dropped response really is a batch the broker stored: Kafka's own Java
/// producer, not idempotent, stores it twice, and idempotent, once. kcat then reads through the
/// proxy, and its Fetch requests arrive there: the rewritten Metadata kept it on the proxy.
/// (kcat cannot be the producer here: it exits as soon as its only broker connection drops.)
#[test]
fn the_proxy_drops_responses_to_batches_the_broker_stored() {
    let plain = Sandbox::new("prod_proxy_plain");
    three_partitions(&plain);
    let proxy = KafkaProxy::start(&plain.brokers);
    proxy.set_fault(Fault::DropProduceResponses(1));
    java_produce_through(&proxy, &plain.topic, false);
    let twice = kcat_read_keyed(&plain.brokers, &plain.topic);
    assert!(
        twice.len() > 30,
        "without idempotence the retried batch is stored again: {} records; {}",
        twice.len(),
        proxy.summary()
    );

    let sb = Sandbox::new("prod_proxy_idem");
    three_partitions(&sb);
    let proxy = KafkaProxy::start(&sb.brokers);
    proxy.set_fault(Fault::DropProduceResponses(1));
    java_produce_through(&proxy, &sb.topic, true);
    let direct = kcat_read_keyed(&sb.brokers, &sb.topic);
    let payloads: HashSet<&str> = direct.iter().map(|r| r.payload.as_str()).collect();
    assert_eq!(
        (direct.len(), payloads.len()),
        (30, 30),
        "each message once: {}: {direct:#?}",
        proxy.summary()
    );

    let fetches = proxy.requests(FETCH);
    let proxied = kcat_read_keyed(&proxy.addr(), &sb.topic);
    assert_eq!(
        proxied.len(),
        30,
        "kcat through the proxy: {}",
        proxy.summary()
    );
    assert!(
        proxy.requests(FETCH) > fetches,
        "kcat fetched through the proxy, not from the broker it learned: {}",
        proxy.summary()
    );
}

// ---------------------------------------------------------------------------------------------
// Brokers the client cannot work with: exit 1 at once, with one line that says why.

/// Runs the binary against a fake broker; it must end within [`FAIL_FAST_LIMIT`] (it is killed
/// and the test fails with its output otherwise).
fn run_fast(sb: &Sandbox, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let child = sb
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn metricsctl");
    let out = wait_with_limit(child, FAIL_FAST_LIMIT);
    (out, started.elapsed())
}

/// Lines at ERROR level (`<time> ERROR ...`) or the final `error: ...`.
fn error_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.split_whitespace().nth(1) == Some("ERROR"))
        .map(String::from)
        .collect()
}

/// Exit code 1 and exactly one error line, containing every one of `needles` (and at least one
/// of `any_of`, when given); returns the line.
fn assert_one_error_line(
    out: &Output,
    needles: &[&str],
    any_of: &[&str],
    fake: &FakeBroker,
) -> String {
    let stderr = text(&out.stderr);
    let context = format!("{}\nstderr:\n{stderr}", fake.summary());
    assert_eq!(out.status.code(), Some(1), "exit code; {context}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "one error line; {context}");
    let line = &lines[0];
    for n in needles {
        assert!(line.contains(n), "the error line names {n:?}; {context}");
    }
    let lower = line.to_lowercase();
    assert!(
        any_of.is_empty() || any_of.iter().any(|w| lower.contains(&w.to_lowercase())),
        "the error line says one of {any_of:?}; {context}"
    );
    line.clone()
}

#[test]
fn produce_refuses_a_broker_without_produce_v3_at_once() {
    let sb = Sandbox::new("prod_too_old");
    let fake = FakeBroker::start(FakeBrokerSpec {
        versions: vec![(ApiKey::Produce, 0, 2)],
        partitions: PARTITIONS,
        ..FakeBrokerSpec::default()
    });
    let (out, took) = run_fast(&sb, &["produce", "--count", "1", "--brokers", &fake.addr()]);
    let line = assert_one_error_line(&out, &["Produce", &fake.addr(), "v0", "v2"], &[], &fake);
    assert_eq!(
        fake.requests(PRODUCE),
        0,
        "no Produce at a version the broker does not have; {}",
        fake.summary()
    );
    assert!(
        fake.requests(API_VERSIONS) <= 4,
        "a handful of connections, no retry loop; {}\n{}",
        fake.summary(),
        text(&out.stderr)
    );
    eprintln!("FIGURE produce vs a Produce v0-v2 broker: exit 1 in {took:?}: {line}");
}

/// A broker with only Metadata and Fetch v0-v3, as Kafka 0.11 had them.
fn ancient_broker() -> FakeBroker {
    FakeBroker::start(FakeBrokerSpec {
        versions: vec![(ApiKey::Metadata, 0, 3), (ApiKey::Fetch, 0, 3)],
        partitions: PARTITIONS,
        ..FakeBrokerSpec::default()
    })
}

#[test]
fn status_refuses_a_broker_without_our_metadata_version_at_once() {
    let sb = Sandbox::new("status_too_old");
    let fake = ancient_broker();
    let (out, took) = run_fast(&sb, &["status", "--brokers", &fake.addr()]);
    let line = assert_one_error_line(&out, &["Metadata", &fake.addr(), "v0", "v3"], &[], &fake);
    assert!(fake.requests(API_VERSIONS) <= 4, "{}", fake.summary());
    eprintln!("FIGURE status vs a Metadata v0-v3 broker: exit 1 in {took:?}: {line}");
}

#[test]
fn consume_refuses_a_broker_without_our_fetch_and_metadata_versions_at_once() {
    let sb = Sandbox::new("consume_too_old");
    let fake = ancient_broker();
    let (out, took) = run_fast(&sb, &["consume", "--brokers", &fake.addr()]);
    let line = assert_one_error_line(
        &out,
        &[&fake.addr(), "v0", "v3"],
        &["Metadata", "Fetch"],
        &fake,
    );
    assert!(fake.requests(API_VERSIONS) <= 4, "{}", fake.summary());
    assert_eq!(sb.count("raw"), 0, "nothing stored");
    eprintln!("FIGURE consume vs a Metadata/Fetch v0-v3 broker: exit 1 in {took:?}: {line}");
}

#[test]
fn produce_stops_when_the_topic_is_not_authorized() {
    let (fake, line, took) = refused_produce(
        "prod_denied",
        FakeBrokerSpec {
            topic_error: 29, // TOPIC_AUTHORIZATION_FAILED
            ..FakeBrokerSpec::default()
        },
        true,
    );
    assert_eq!(fake.requests(PRODUCE), 0, "{}", fake.summary());
    eprintln!("FIGURE produce vs a topic not authorized: exit 1 in {took:?}: {line}");
}

/// The usual ACL setup: the topic may be described (Metadata answers) but not written, so the
/// refusal comes in the Produce response.
#[test]
fn produce_stops_when_the_broker_refuses_the_write() {
    let (fake, line, took) = refused_produce(
        "prod_write_denied",
        FakeBrokerSpec {
            produce_error: Some(29), // TOPIC_AUTHORIZATION_FAILED
            ..FakeBrokerSpec::default()
        },
        true,
    );
    assert!(
        fake.requests(PRODUCE) <= 1,
        "a refused write is not retried; {}",
        fake.summary()
    );
    eprintln!("FIGURE produce vs a write refused: exit 1 in {took:?}: {line}");
}

/// An idempotent producer needs a producer id; a cluster that refuses one (no IDEMPOTENT_WRITE
/// for this client) is a setting for a human, not something to retry.
#[test]
fn produce_stops_when_the_broker_refuses_a_producer_id() {
    let (fake, line, took) = refused_produce(
        "prod_pid_denied",
        FakeBrokerSpec {
            init_producer_id_error: 31, // CLUSTER_AUTHORIZATION_FAILED
            ..FakeBrokerSpec::default()
        },
        false,
    );
    assert_eq!(fake.requests(PRODUCE), 0, "{}", fake.summary());
    eprintln!("FIGURE produce vs a producer id refused: exit 1 in {took:?}: {line}");
}

/// `produce --count 1` against a fake broker answering as `spec` says (on [`PARTITIONS`]
/// partitions): exit 1 with one error line that speaks of a refusal (and names the topic, when
/// `names_topic`). Returns the broker, the line and how long the run took.
fn refused_produce(
    label: &str,
    spec: FakeBrokerSpec,
    names_topic: bool,
) -> (FakeBroker, String, Duration) {
    let sb = Sandbox::new(label);
    let fake = FakeBroker::start(FakeBrokerSpec {
        partitions: PARTITIONS,
        ..spec
    });
    let (out, took) = run_fast(&sb, &["produce", "--count", "1", "--brokers", &fake.addr()]);
    let topic: &[&str] = if names_topic { &[&sb.topic] } else { &[] };
    let line = assert_one_error_line(
        &out,
        topic,
        &["authoriz", "refus", "denied", "access"],
        &fake,
    );
    (fake, line, took)
}
