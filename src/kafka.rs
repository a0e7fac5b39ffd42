//! The Kafka adapter: the only file that imports the `kafka` crate (kafka-rust 0.10).
//!
//! The crate shapes this file. It never reconnects a pooled connection that failed, never
//! retries a produce or a fetch, freezes a producer's partition table, can panic on some broker
//! failures, can spin when offset-commit retries run out, and its sockets time out only after
//! 120 s. So every call runs on a short-lived worker thread that owns the client and is waited
//! for with a deadline: a panic or a stall there costs a rebuilt client, never the caller's
//! data, and never blocks shutdown. Any failure drops the client; the next call builds a fresh
//! one and reloads metadata, which is how this adapter reconnects.

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kafka::client::{
    CommitOffset, FetchGroupOffset, FetchOffset, FetchPartition, GroupOffsetStorage, KafkaClient,
    ProduceMessage, RequiredAcks,
};

use crate::shutdown::Shutdown;

/// How long the broker may wait for data before answering an empty fetch.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// How long the broker may wait for all in-sync replicas before failing a produce.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for one call into the crate, beyond which the worker is abandoned.
const CALL_DEADLINE: Duration = Duration::from_secs(20);
/// How long a fresh client waits for the topic's partitions to have leaders (the first
/// metadata requests after a broker start or a topic's auto-creation answer "not available").
const METADATA_WAIT: Duration = Duration::from_secs(15);
/// Bytes fetched per partition and request; v0 fetches need a limit above the largest message
/// (the broker's default `message.max.bytes` is about 1 MiB).
pub const FETCH_MAX_BYTES_PER_PARTITION: i32 = 2 * 1024 * 1024;
/// The per-partition fetch size is doubled for a message larger than the default, up to this.
pub const FETCH_MAX_BYTES_LIMIT: i32 = 64 * 1024 * 1024;

/// A failed call into Kafka, written for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaError {
    pub operation: &'static str,
    pub detail: String,
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kafka {} failed: {}", self.operation, self.detail)
    }
}

impl std::error::Error for KafkaError {}

/// A client for one topic that survives broker restarts by being rebuilt after any failure.
struct Link {
    brokers: Vec<String>,
    topic: String,
    client: Option<KafkaClient>,
    /// A stop request abandons the call in flight instead of waiting out its deadline.
    shutdown: Shutdown,
}

impl Link {
    fn new(brokers: Vec<String>, topic: String, shutdown: Shutdown) -> Self {
        Link {
            brokers,
            topic,
            client: None,
            shutdown,
        }
    }

    /// Runs `op` with a connected client on a worker thread, within `CALL_DEADLINE`.
    fn call<T, F>(&mut self, operation: &'static str, op: F) -> Result<T, KafkaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut KafkaClient, &str) -> Result<T, String> + Send + 'static,
    {
        let fail = |detail: String| KafkaError { operation, detail };
        let existing = self.client.take();
        let brokers = self.brokers.clone();
        let topic = self.topic.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("kafka-{operation}"))
            .spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(move || {
                    let mut client = match existing {
                        Some(c) => c,
                        None => connect(brokers, &topic)?,
                    };
                    let result = op(&mut client, &topic);
                    Ok::<_, String>((client, result))
                }));
                // The receiver may have given up on us; nothing to do then.
                let _ = tx.send(outcome);
            })
            .map_err(|e| fail(format!("cannot start a worker thread: {e}")))?;

        let deadline = Instant::now() + CALL_DEADLINE;
        let answer = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Err(mpsc::RecvTimeoutError::Timeout)
                    if Instant::now() < deadline && !self.shutdown.requested() => {}
                other => break other,
            }
        };
        match answer {
            Ok(Ok(Ok((client, Ok(value))))) => {
                self.client = Some(client);
                Ok(value)
            }
            // The client may hold a broken connection the crate would keep reusing: drop it.
            Ok(Ok(Ok((_client, Err(detail))))) => Err(fail(detail)),
            Ok(Ok(Err(detail))) => Err(fail(detail)),
            Ok(Err(panic)) => Err(fail(format!(
                "the kafka client panicked ({}); it will be rebuilt",
                panic_text(&panic)
            ))),
            Err(_) if self.shutdown.requested() => Err(fail("abandoned: stop requested".into())),
            Err(_) => Err(fail(format!(
                "no answer within {} s; the client will be rebuilt",
                CALL_DEADLINE.as_secs()
            ))),
        }
    }
}

/// Builds a client and loads the topic's metadata (auto-creating the topic where the broker
/// allows it), waiting until every partition has a leader.
fn connect(brokers: Vec<String>, topic: &str) -> Result<KafkaClient, String> {
    let mut client = KafkaClient::new(brokers.clone());
    client.set_client_id("metricsctl".into());
    client.set_group_offset_storage(Some(GroupOffsetStorage::Kafka));
    // Bounded retries inside the crate, so a call returns well within CALL_DEADLINE.
    client.set_retry_max_attempts(5);
    client.set_retry_backoff_time(Duration::from_millis(200));
    client.set_fetch_min_bytes(1);
    client.set_fetch_max_bytes_per_partition(FETCH_MAX_BYTES_PER_PARTITION);
    client
        .set_fetch_max_wait_time(FETCH_MAX_WAIT)
        .map_err(|e| e.to_string())?;

    let deadline = Instant::now() + METADATA_WAIT;
    loop {
        // An unreachable broker fails at once: the caller's backoff paces the retries.
        client
            .load_metadata(&[topic])
            .map_err(|e| format!("no broker of {} answered ({e})", brokers.join(",")))?;
        let problem = match client.topics().partitions(topic) {
            Some(ps) if !ps.is_empty() && ps.iter().all(|p| p.leader().is_some()) => {
                return Ok(client)
            }
            Some(_) => format!("topic {topic} has partitions without a leader yet"),
            None => format!("topic {topic} does not exist yet"),
        };
        if Instant::now() >= deadline {
            return Err(problem);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// The partition for a key, as Java's default partitioner computes it (murmur2 of the key,
/// made positive, modulo the partition count), so metricsctl and Java or librdkafka
/// (`murmur2_random`) producers agree on where a server's metrics go. The `kafka` crate's own
/// default partitioner uses XxHash32 instead, which would disagree with them.
pub fn partition_for_key(key: &[u8], partition_count: u32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as u32 % partition_count.max(1)) as i32
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Where Kafka stored one produced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// Sends keyed records to one topic, acknowledged by all in-sync replicas.
pub struct KafkaProducer {
    link: Link,
}

impl KafkaProducer {
    pub fn new(brokers: Vec<String>, topic: String, shutdown: Shutdown) -> Self {
        KafkaProducer {
            link: Link::new(brokers, topic, shutdown),
        }
    }

    /// Sends `(key, value)` records in one request per leader. Each record gets its own
    /// outcome: a partition that failed does not hide the others that succeeded, so the caller
    /// re-sends only what was not stored.
    pub fn send(
        &mut self,
        records: Vec<(String, String)>,
    ) -> Result<Vec<Result<Delivery, String>>, KafkaError> {
        self.link.call("produce", move |client, topic| {
            let partition_count = client
                .topics()
                .partitions(topic)
                .map(|p| p.len() as u32)
                .ok_or_else(|| format!("topic {topic} is unknown"))?;
            let partitions: Vec<i32> = records
                .iter()
                .map(|(key, _)| partition_for_key(key.as_bytes(), partition_count))
                .collect();
            let messages: Vec<ProduceMessage> = records
                .iter()
                .zip(&partitions)
                .map(|((key, value), &p)| {
                    ProduceMessage::new(topic, p, Some(key.as_bytes()), Some(value.as_bytes()))
                })
                .collect();
            let confirms = client
                .produce_messages(RequiredAcks::All, ACK_TIMEOUT, messages)
                .map_err(|e| e.to_string())?;
            let mut base: HashMap<i32, Result<i64, String>> = HashMap::new();
            for confirm in confirms {
                for pc in confirm.partition_confirms {
                    base.insert(pc.partition, pc.offset.map_err(|code| format!("{code:?}")));
                }
            }
            // Records of one partition are appended in order from the confirmed base offset.
            let mut next_in_partition: HashMap<i32, i64> = HashMap::new();
            Ok(partitions
                .iter()
                .map(|p| match base.get(p) {
                    Some(Ok(first)) => {
                        let k = next_in_partition.entry(*p).or_insert(0);
                        let offset = first + *k;
                        *k += 1;
                        Ok(Delivery {
                            partition: *p,
                            offset,
                        })
                    }
                    Some(Err(code)) => Err(format!("partition {p}: {code}")),
                    None => Err(format!("partition {p}: no acknowledgement")),
                })
                .collect())
        })
    }
}

/// One message read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    pub partition: i32,
    pub offset: i64,
    pub value: Vec<u8>,
}

/// What one fetch returned for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    pub partition: i32,
    /// Messages at or after the requested offset, in offset order.
    pub messages: Vec<FetchedMessage>,
    /// The offset after the last message the broker has for this partition.
    pub high_watermark: i64,
    /// A partition-level error (e.g. `OffsetOutOfRange`).
    pub error: Option<String>,
}

impl PartitionBatch {
    /// The broker has data at the requested position but returned none: the next message is
    /// larger than the bytes requested.
    pub fn stuck_below(&self, requested: i64) -> bool {
        self.error.is_none() && self.messages.is_empty() && self.high_watermark > requested
    }
}

/// Reads a topic at positions the caller owns, and keeps a group's offsets in Kafka.
pub struct KafkaSource {
    link: Link,
    group: String,
}

impl KafkaSource {
    pub fn new(brokers: Vec<String>, topic: String, group: String, shutdown: Shutdown) -> Self {
        KafkaSource {
            link: Link::new(brokers, topic, shutdown),
            group,
        }
    }

    /// The topic's partitions (auto-creating the topic if the broker allows it).
    pub fn partitions(&mut self) -> Result<Vec<i32>, KafkaError> {
        self.link.call("metadata", |client, topic| {
            let mut ids: Vec<i32> = client
                .topics()
                .partitions(topic)
                .map(|ps| ps.iter().map(|p| p.id()).collect())
                .unwrap_or_default();
            ids.sort_unstable();
            Ok(ids)
        })
    }

    /// The earliest and the latest offset of each partition.
    pub fn offset_bounds(&mut self) -> Result<HashMap<i32, (i64, i64)>, KafkaError> {
        self.link.call("list-offsets", |client, topic| {
            let earliest = client
                .fetch_topic_offsets(topic, FetchOffset::Earliest)
                .map_err(|e| e.to_string())?;
            let latest = client
                .fetch_topic_offsets(topic, FetchOffset::Latest)
                .map_err(|e| e.to_string())?;
            let latest: HashMap<i32, i64> = latest
                .into_iter()
                .map(|p| (p.partition, p.offset))
                .collect();
            Ok(earliest
                .into_iter()
                .map(|p| {
                    (
                        p.partition,
                        (
                            p.offset,
                            latest.get(&p.partition).copied().unwrap_or(p.offset),
                        ),
                    )
                })
                .collect())
        })
    }

    /// The group's committed offsets; partitions without one are absent.
    pub fn committed_offsets(
        &mut self,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, KafkaError> {
        let group = self.group.clone();
        let partitions = partitions.to_vec();
        self.link.call("offset-fetch", move |client, topic| {
            let wanted: Vec<FetchGroupOffset> = partitions
                .iter()
                .map(|p| FetchGroupOffset::new(topic, *p))
                .collect();
            let offsets = client
                .fetch_group_offsets(&group, &wanted)
                .map_err(|e| e.to_string())?;
            Ok(offsets
                .into_values()
                .flatten()
                .filter(|po| po.offset >= 0)
                .map(|po| (po.partition, po.offset))
                .collect())
        })
    }

    /// Commits `(partition, next offset to read)` pairs for the group.
    pub fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), KafkaError> {
        let group = self.group.clone();
        let offsets = offsets.to_vec();
        self.link.call("offset-commit", move |client, topic| {
            let commits: Vec<CommitOffset> = offsets
                .iter()
                .map(|(p, o)| CommitOffset::new(topic, *p, *o))
                .collect();
            client
                .commit_offsets(&group, &commits)
                .map_err(|e| e.to_string())
        })
    }

    /// Fetches from each `(partition, offset, max_bytes)`; waits up to 0.5 s for data.
    pub fn fetch(
        &mut self,
        positions: &[(i32, i64, i32)],
    ) -> Result<Vec<PartitionBatch>, KafkaError> {
        let positions = positions.to_vec();
        self.link.call("fetch", move |client, topic| {
            let requests: Vec<FetchPartition> = positions
                .iter()
                .map(|(p, o, max)| FetchPartition::new(topic, *p, *o).with_max_bytes(*max))
                .collect();
            let wanted: HashMap<i32, i64> = positions.iter().map(|(p, o, _)| (*p, *o)).collect();
            let responses = client
                .fetch_messages(&requests)
                .map_err(|e| e.to_string())?;
            let mut batches = Vec::new();
            for response in &responses {
                for t in response.topics() {
                    for p in t.partitions() {
                        let from = wanted.get(&p.partition()).copied().unwrap_or(0);
                        batches.push(match p.data() {
                            Ok(data) => PartitionBatch {
                                partition: p.partition(),
                                messages: data
                                    .messages()
                                    .iter()
                                    // A compressed set may start before the requested offset.
                                    .filter(|m| m.offset >= from)
                                    .map(|m| FetchedMessage {
                                        partition: p.partition(),
                                        offset: m.offset,
                                        value: m.value.to_vec(),
                                    })
                                    .collect(),
                                high_watermark: data.highwatermark_offset(),
                                error: None,
                            },
                            Err(e) => PartitionBatch {
                                partition: p.partition(),
                                messages: Vec::new(),
                                high_watermark: -1,
                                error: Some(e.to_string()),
                            },
                        });
                    }
                }
            }
            batches.sort_by_key(|b| b.partition);
            Ok(batches)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_implementation() {
        // The vectors of Kafka's own UtilsTest.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn keys_map_to_stable_partitions() {
        let p = partition_for_key(b"web01", 3);
        assert!((0..3).contains(&p));
        assert_eq!(p, partition_for_key(b"web01", 3));
        assert_eq!(partition_for_key(b"anything", 1), 0);
        let fleet: Vec<i32> = ["web01", "web02", "db01", "app01", "cache01"]
            .iter()
            .map(|k| partition_for_key(k.as_bytes(), 3))
            .collect();
        // Java's partitioner puts the default fleet on partitions 0 and 1 of 3.
        assert_eq!(fleet, [0, 1, 0, 1, 0]);
    }

    #[test]
    fn a_partition_is_stuck_when_data_exists_but_none_fits() {
        let b = PartitionBatch {
            partition: 0,
            messages: vec![],
            high_watermark: 10,
            error: None,
        };
        assert!(b.stuck_below(4));
        assert!(!b.stuck_below(10));
    }
}
