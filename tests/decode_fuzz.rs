//! A seeded fuzz test of everything we decode from the network: realistic answers (Fetch with
//! record batches, Metadata, JoinGroup, SyncGroup, ApiVersions, ListOffsets, OffsetFetch,
//! Produce) and the consumer-protocol bytes another member writes, each mutated (bit flips,
//! truncation, lengths and counts set to 0, -1, 2^31-1 or a five-byte varint, offsets set to
//! the i64 extremes, bytes inserted and removed) and fed to the decoding paths the client uses.
//!
//! Nothing may panic or abort, and a counting allocator checks that no single allocation
//! exceeds [`ALLOCATION_CAP`]: a count from the wire never sizes memory. `DECODE_FUZZ_CASES`
//! sets the number of cases (default 3,000; `make chaos` runs 100,000), `DECODE_FUZZ_SEED` the
//! seed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, SupportedFeatureKey};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, ConsumerProtocolAssignment,
    ConsumerProtocolSubscription, FetchResponse, JoinGroupResponse, ListOffsetsResponse,
    MetadataResponse, OffsetFetchResponse, ProduceResponse, ProducerId, SyncGroupResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use metricsctl::kafka::decode_limits::{decode_consumer_protocol, decode_response};
use metricsctl::kafka::decode_records;

/// No single allocation may be larger: the largest fixed buffer on these paths is a zstd
/// window (at most 32 MiB, src/kafka/decompress.rs).
const ALLOCATION_CAP: usize = 48 * 1024 * 1024;

/// The system allocator, recording the largest single allocation asked of it.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as above; `ptr` came from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn encoded<M: Encodable>(m: &M, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version).expect("encode");
    buf.freeze()
}

/// Consumer-protocol bytes: a version, then the message at that version.
fn with_version<M: Encodable>(m: &M, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&version.to_be_bytes());
    m.encode(&mut buf, version).expect("encode");
    buf.freeze()
}

fn metric_json(n: i64) -> Bytes {
    Bytes::from(format!(
        r#"{{"server_id":"web0{}","timestamp_utc":"2026-12-03T02:00:00Z","metrics":{{"cpu_percent":{n}.5,"memory_percent":40.0,"disk_io_mbps":1.0,"network_mbps":2.0,"error_count":0}},"message_uuid":"u-{n}"}}"#,
        n % 5
    ))
}

/// Record batches as a broker stores them: one per codec, back to back.
fn batches(base: i64) -> Bytes {
    let mut buf = BytesMut::new();
    let mut offset = base;
    for compression in [
        Compression::None,
        Compression::Zstd,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
    ] {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 7,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: offset + i,
                sequence: (offset + i) as i32,
                timestamp: 1_764_727_200_000 + i,
                key: Some(Bytes::from_static(b"web01")),
                value: Some(metric_json(offset + i)),
                headers: Default::default(),
            })
            .collect();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode batch");
        offset += 3;
    }
    buf.freeze()
}

fn subscription(version: i16) -> Bytes {
    let s = ConsumerProtocolSubscription::default()
        .with_topics(vec![str("system-metrics-topic")])
        .with_user_data(Some(Bytes::from_static(b"user")))
        .with_owned_partitions(vec![OwnedTopic::default()
            .with_topic(TopicName(str("system-metrics-topic")))
            .with_partitions(vec![0, 1, 2])])
        .with_generation_id(4)
        .with_rack_id(Some(str("rack-a")));
    with_version(&s, version)
}

fn assignment(version: i16) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
        AssignedTopic::default()
            .with_topic(TopicName(str("system-metrics-topic")))
            .with_partitions(vec![0, 2]),
    ]);
    with_version(&a, version)
}

/// What a seed is decoded as.
#[derive(Clone, Copy, Debug)]
enum Target {
    Answer(ApiKey, i16),
    Subscription,
    Assignment,
    /// A partition's record batches, their checksums made right again after the mutation, so
    /// the mutation reaches the records inside.
    Records,
}

/// Realistic answers and member bytes, each with what it is.
fn seeds() -> Vec<(Target, Bytes)> {
    let topic_id = uuid::Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0001);
    let fetch = FetchResponse::default()
        .with_session_id(0)
        .with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(str("")))
            .with_topic_id(topic_id)
            .with_partitions(vec![
                PartitionData::default()
                    .with_partition_index(0)
                    .with_high_watermark(15)
                    .with_last_stable_offset(15)
                    .with_log_start_offset(0)
                    .with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(1))
                            .with_leader_epoch(3),
                    )
                    .with_records(Some(batches(0))),
                PartitionData::default()
                    .with_partition_index(1)
                    .with_high_watermark(120)
                    .with_aborted_transactions(Some(vec![AbortedTransaction::default()
                        .with_producer_id(ProducerId(7))
                        .with_first_offset(100)]))
                    .with_records(Some(batches(105))),
            ])]);
    let metadata = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(str("127.0.0.1"))
            .with_port(29092)])
        .with_cluster_id(Some(str("cluster-1")))
        .with_controller_id(BrokerId(1))
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(str("system-metrics-topic"))))
            .with_topic_id(topic_id)
            .with_partitions(
                (0..3)
                    .map(|p| {
                        MetadataResponsePartition::default()
                            .with_partition_index(p)
                            .with_leader_id(BrokerId(1))
                            .with_replica_nodes(vec![BrokerId(1)])
                            .with_isr_nodes(vec![BrokerId(1)])
                    })
                    .collect(),
            )]);
    let join = JoinGroupResponse::default()
        .with_generation_id(4)
        .with_protocol_type(Some(str("consumer")))
        .with_protocol_name(Some(str("range")))
        .with_leader(str("metricsctl-a"))
        .with_member_id(str("metricsctl-a"))
        .with_members(vec![
            JoinGroupResponseMember::default()
                .with_member_id(str("metricsctl-a"))
                .with_metadata(subscription(0)),
            JoinGroupResponseMember::default()
                .with_member_id(str("metricsctl-b"))
                .with_metadata(subscription(3)),
        ]);
    let sync = SyncGroupResponse::default()
        .with_protocol_type(Some(str("consumer")))
        .with_protocol_name(Some(str("range")))
        .with_assignment(assignment(0));
    let api_versions = ApiVersionsResponse::default()
        .with_api_keys(
            (0..20)
                .map(|k| {
                    ApiVersion::default()
                        .with_api_key(k)
                        .with_min_version(0)
                        .with_max_version(k % 13)
                })
                .collect(),
        )
        .with_supported_features(vec![SupportedFeatureKey::default()
            .with_name(str("metadata.version"))
            .with_min_version(1)
            .with_max_version(27)]);
    let list_offsets =
        ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
            .with_name(TopicName(str("system-metrics-topic")))
            .with_partitions(vec![ListOffsetsPartitionResponse::default()
                .with_partition_index(0)
                .with_offset(42)
                .with_timestamp(-1)])]);
    let offset_fetch =
        OffsetFetchResponse::default().with_topics(vec![OffsetFetchResponseTopic::default()
            .with_name(TopicName(str("system-metrics-topic")))
            .with_partitions(vec![OffsetFetchResponsePartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)
                .with_metadata(Some(str("")))])]);
    let produce = ProduceResponse::default()
        .with_responses(vec![TopicProduceResponse::default()
            .with_name(TopicName(str("system-metrics-topic")))
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(0)
                .with_base_offset(42)
                .with_record_errors(vec![BatchIndexAndErrorMessage::default()
                    .with_batch_index(0)
                    .with_batch_index_error_message(Some(str("bad")))])])])
        .with_node_endpoints(vec![NodeEndpoint::default()
            .with_node_id(BrokerId(1))
            .with_host(str("127.0.0.1"))
            .with_port(29092)]);

    let mut seeds = vec![
        (Target::Answer(ApiKey::Fetch, 13), encoded(&fetch, 13)),
        (Target::Answer(ApiKey::Metadata, 12), encoded(&metadata, 12)),
        (Target::Answer(ApiKey::Metadata, 13), encoded(&metadata, 13)),
        (Target::Answer(ApiKey::JoinGroup, 7), encoded(&join, 7)),
        (Target::Answer(ApiKey::SyncGroup, 5), encoded(&sync, 5)),
        (
            Target::Answer(ApiKey::ApiVersions, 3),
            encoded(&api_versions, 3),
        ),
        (
            Target::Answer(ApiKey::ApiVersions, 0),
            encoded(&api_versions, 0),
        ),
        (
            Target::Answer(ApiKey::ListOffsets, 7),
            encoded(&list_offsets, 7),
        ),
        (
            Target::Answer(ApiKey::OffsetFetch, 7),
            encoded(&offset_fetch, 7),
        ),
        (Target::Answer(ApiKey::Produce, 12), encoded(&produce, 12)),
        (Target::Answer(ApiKey::Produce, 8), encoded(&produce, 8)),
        (Target::Answer(ApiKey::Produce, 3), encoded(&produce, 3)),
    ];
    seeds.push((Target::Records, batches(0)));
    for v in 0..=3 {
        seeds.push((Target::Subscription, subscription(v)));
        seeds.push((Target::Assignment, assignment(v)));
    }
    seeds
}

/// Decodes `bytes` as `target` the way the client does; for a Fetch answer, its records too.
/// Whether the whole went through.
fn decode(target: Target, bytes: &Bytes, fetch_offset: i64) -> bool {
    let mut b = bytes.clone();
    match target {
        Target::Answer(ApiKey::Fetch, v) => {
            match decode_response::<FetchResponse>(ApiKey::Fetch as i16, v, &mut b) {
                Ok(r) => {
                    for t in &r.responses {
                        for p in &t.partitions {
                            if let Some(records) = &p.records {
                                let _ = decode_records(p.partition_index, fetch_offset, records);
                            }
                        }
                    }
                    true
                }
                Err(_) => false,
            }
        }
        Target::Answer(api, v) => {
            fn go<R: Decodable>(api: ApiKey, v: i16, b: &mut Bytes) -> bool {
                decode_response::<R>(api as i16, v, b).is_ok()
            }
            match api {
                ApiKey::Metadata => go::<MetadataResponse>(api, v, &mut b),
                ApiKey::JoinGroup => go::<JoinGroupResponse>(api, v, &mut b),
                ApiKey::SyncGroup => go::<SyncGroupResponse>(api, v, &mut b),
                ApiKey::ApiVersions => go::<ApiVersionsResponse>(api, v, &mut b),
                ApiKey::ListOffsets => go::<ListOffsetsResponse>(api, v, &mut b),
                ApiKey::OffsetFetch => go::<OffsetFetchResponse>(api, v, &mut b),
                ApiKey::Produce => go::<ProduceResponse>(api, v, &mut b),
                other => panic!("no decoder for {other:?}"),
            }
        }
        Target::Records => {
            let d = decode_records(0, fetch_offset, bytes);
            d.unreadable.is_empty() && !d.truncated
        }
        Target::Subscription | Target::Assignment => {
            if b.len() < 2 {
                return false;
            }
            let version = i16::from_be_bytes([b[0], b[1]]);
            let mut rest = b.slice(2..);
            if matches!(target, Target::Subscription) {
                decode_consumer_protocol::<ConsumerProtocolSubscription>(false, version, &mut rest)
                    .is_ok()
            } else {
                decode_consumer_protocol::<ConsumerProtocolAssignment>(true, version, &mut rest)
                    .is_ok()
            }
        }
    }
}

/// The batches of `data` with each CRC-32C computed again (a producer that writes hostile
/// records writes right checksums).
fn with_right_checksums(data: Bytes) -> Bytes {
    let mut b = data.to_vec();
    let mut at = 0;
    while at + 61 <= b.len() {
        let len = i32::from_be_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]);
        let Ok(len) = usize::try_from(len) else { break };
        let end = at + 12 + len;
        if len < 49 || end > b.len() {
            break;
        }
        let crc = crc32c::crc32c(&b[at + 21..end]);
        b[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
    Bytes::from(b)
}

/// Values a hostile peer puts in a length or a count.
const WIDE: [[u8; 4]; 4] = [
    [0, 0, 0, 0],
    [0xff, 0xff, 0xff, 0xff],
    [0x7f, 0xff, 0xff, 0xff],
    [0x00, 0x10, 0x00, 0x00],
];
const VARINTS: [&[u8]; 4] = [
    &[0x00],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0x07],
    &[0x80, 0x80, 0x80, 0x40],
];

/// One to three mutations of `seed`.
fn mutate(rng: &mut fastrand::Rng, seed: &Bytes) -> Bytes {
    let mut b = seed.to_vec();
    for _ in 0..rng.usize(1..=3) {
        if b.is_empty() {
            break;
        }
        let at = rng.usize(..b.len());
        match rng.u8(..8) {
            0 => {
                for _ in 0..rng.usize(1..=8) {
                    let i = rng.usize(..b.len());
                    b[i] ^= 1 << rng.u8(..8);
                }
            }
            1 => b.truncate(at),
            2 => {
                let v = WIDE[rng.usize(..WIDE.len())];
                let end = (at + 4).min(b.len());
                b[at..end].copy_from_slice(&v[..end - at]);
            }
            3 => {
                let v = if rng.bool() {
                    [0xff, 0xff]
                } else {
                    [0x7f, 0xff]
                };
                let end = (at + 2).min(b.len());
                b[at..end].copy_from_slice(&v[..end - at]);
            }
            4 => {
                let v = VARINTS[rng.usize(..VARINTS.len())];
                let end = (at + v.len()).min(b.len());
                b[at..end].copy_from_slice(&v[..end - at]);
            }
            5 => {
                let v = if rng.bool() { i64::MAX } else { i64::MIN }.to_be_bytes();
                let end = (at + 8).min(b.len());
                b[at..end].copy_from_slice(&v[..end - at]);
            }
            6 => {
                let n = rng.usize(1..=8);
                let junk: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                b.splice(at..at, junk);
            }
            _ => {
                let end = (at + rng.usize(1..=8)).min(b.len());
                b.drain(at..end);
            }
        }
    }
    Bytes::from(b)
}

#[test]
fn mutated_answers_and_member_bytes_never_panic_or_allocate_by_a_wire_count() {
    let cases: u64 = std::env::var("DECODE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let seed: u64 = std::env::var("DECODE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x15_15_15);
    let seeds = seeds();
    // Every unmutated seed decodes: the checks refuse nothing a broker or member really sends.
    for (target, bytes) in &seeds {
        assert!(decode(*target, bytes, 0), "{target:?} does not decode");
    }
    let before = LARGEST.load(Ordering::Relaxed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut decoded = 0u64;
    for case in 0..cases {
        let (target, original) = &seeds[rng.usize(..seeds.len())];
        let mut input = mutate(&mut rng, original);
        if matches!(target, Target::Records) {
            input = with_right_checksums(input);
        }
        let fetch_offset = match rng.u8(..4) {
            0 => i64::MAX,
            1 => i64::MIN,
            _ => rng.i64(0..130),
        };
        let result = std::panic::catch_unwind(|| decode(*target, &input, fetch_offset));
        match result {
            Ok(true) => decoded += 1,
            Ok(false) => {}
            Err(_) => panic!(
                "case {case} (DECODE_FUZZ_SEED={seed}) panicked: {target:?} of {} bytes, \
                 fetch offset {fetch_offset}",
                input.len()
            ),
        }
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    eprintln!(
        "decode fuzz: {cases} cases (seed {seed}), {decoded} decoded whole after mutation, \
         largest single allocation {largest} bytes (before the cases: {before})"
    );
    assert!(
        largest <= ALLOCATION_CAP,
        "an allocation of {largest} bytes, over the cap of {ALLOCATION_CAP}"
    );
}
