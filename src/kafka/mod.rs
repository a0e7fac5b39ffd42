//! The Kafka adapter: our own Kafka client, the only module that imports `kafka-protocol`.
//!
//! Requests and responses are `kafka-protocol`'s codecs, generated from Kafka's own message
//! schemas; this module only moves them over blocking sockets and decides what to send where:
//! - `connection`: one socket to one broker, opened with ApiVersions (`versions` picks the
//!   version of every request from both sides' ranges), secured as `security` says: TLS
//!   through rustls (`tls`, configured from the PEM files by `tls_config`), SASL PLAIN or
//!   SCRAM (`sasl`, `scram`);
//! - `cluster`: metadata, the leader of each partition, the group's coordinator, a connection
//!   per broker;
//! - `producer`: idempotent Produce with record batches v2 in any codec;
//! - `fetch`: Fetch; `records`: the decoding of what it returns (`batch` reads one record
//!   batch as a stream, `decompress` expands it);
//! - `source`: the consumer's reads; `admin`: the topic's metadata and the group's side
//!   (`offsets`: the logs' bounds, committed offsets and commits; the committer over them);
//!   `group`: group membership.
//!
//! The project started on the `kafka` crate (kafka-rust); it is gone because it cannot keep
//! the product's promise: it speaks Produce v0 and Fetch v0 (Kafka 4.0 removed Produce v0-v2),
//! reads no lz4 or zstd, drops messages next to compressed sets, has no group membership, no
//! TLS through rustls and no SASL.

mod admin;
mod batch;
mod cluster;
mod commit_worker;
mod committer;
mod connection;
#[cfg(test)]
mod connection_tests;
pub mod decode_limits;
mod decompress;
mod fetch;
mod group;
mod offsets;
mod producer;
mod records;
mod sasl;
mod scram;
pub mod security;
mod source;
mod tls;
mod tls_config;
mod unreadable;
mod versions;

use std::fmt;

pub use admin::{KafkaAdmin, MemberInfo, TopicInfo};
pub use commit_worker::{CommitJob, CommitWorker};
pub use committer::KafkaCommitter;
pub use group::{Generation, GroupMember, GroupTimeouts};
pub use producer::{Compression, Delivery, KafkaProducer};
pub use records::{decode_records, DecodedRecords, FetchedRecord};
pub use security::{SaslCredentials, SaslMechanism, Security, SecurityProtocol, TlsFiles};
pub use source::{Fetched, KafkaSource, PartitionData};

/// What a failed call into Kafka means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaErrorKind {
    /// The broker is down, moving or busy: back off and try again.
    Retriable,
    /// The group coordinator refused our generation: this member was fenced out of the group
    /// (or the group is rebalancing) and must rejoin before it stores or commits more.
    Fenced,
    /// Retrying cannot help (a broker too old for our versions, access refused, a batch the
    /// broker will never take): the command stops with exit code 1.
    Fatal,
}

/// A failed call into Kafka, written for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaError {
    pub operation: &'static str,
    pub detail: String,
    pub kind: KafkaErrorKind,
}

impl KafkaError {
    pub fn is_fatal(&self) -> bool {
        self.kind == KafkaErrorKind::Fatal
    }

    pub fn is_fenced(&self) -> bool {
        self.kind == KafkaErrorKind::Fenced
    }
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kafka {} failed: {}", self.operation, self.detail)
    }
}

impl std::error::Error for KafkaError {}

impl crate::retrying::Retryable for KafkaError {
    fn permanent(&self) -> bool {
        self.is_fatal()
    }
    fn service(&self) -> crate::telemetry::Service {
        crate::telemetry::Service::Kafka
    }
}

/// A retriable failure of `operation`.
pub(crate) fn fail(operation: &'static str, detail: impl Into<String>) -> KafkaError {
    KafkaError {
        operation,
        detail: detail.into(),
        kind: KafkaErrorKind::Retriable,
    }
}

/// A failure of `operation` that retrying cannot fix.
pub(crate) fn fatal(operation: &'static str, detail: impl Into<String>) -> KafkaError {
    KafkaError {
        operation,
        detail: detail.into(),
        kind: KafkaErrorKind::Fatal,
    }
}

/// A failed exchange with a broker as the caller sees it: a broker too old for us, or a
/// connection that cannot be secured as configured, is fatal; anything else is retried.
pub(crate) fn from_wire(operation: &'static str, e: connection::WireError) -> KafkaError {
    match e {
        connection::WireError::TooOld(old) => fatal(operation, old.to_string()),
        connection::WireError::Security(why) => fatal("connection", why),
        other => fail(operation, other.to_string()),
    }
}

/// The partition for a key, as Java's default partitioner computes it (murmur2 of the key,
/// made positive, modulo the partition count), so metricsctl and Java or librdkafka
/// (`murmur2_random`) producers agree on where a server's metrics go.
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
}
