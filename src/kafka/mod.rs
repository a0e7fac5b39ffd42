//! The Kafka adapter: the only module that imports the `kafka` and `kafka-protocol` crates.
//!
//! Two crates, each where it is correct:
//! - `producer` keeps the `kafka` crate (kafka-rust) for producing: it writes keyed messages with
//!   acks from all in-sync replicas, which is all the producer needs.
//! - the consumer speaks the Kafka protocol itself, with `kafka-protocol`'s generated codecs over
//!   a blocking `TcpStream` (`wire`): Metadata v12 (leaders and topic ids, `cluster`), Fetch v12
//!   with record batches v2 in every codec a 3.9 broker holds (`fetch`), ListOffsets and the
//!   group's offsets (`source`). The `kafka` crate cannot do that part: it speaks Fetch v0 only,
//!   cannot read lz4 or zstd, drops plain messages that precede a compressed set in one
//!   response, and never refreshes metadata after a leader moves.

mod cluster;
mod fetch;
mod group;
mod producer;
mod source;
mod wire;

use std::fmt;

pub use fetch::FetchedRecord;
pub use group::{Generation, GroupMember, GroupTimeouts, MemberInfo};
pub use producer::{Delivery, KafkaProducer};
pub use source::{Fetched, KafkaSource, PartitionData, TopicInfo};

/// A failed call into Kafka, written for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaError {
    pub operation: &'static str,
    pub detail: String,
    /// The group coordinator refused our generation: this member was fenced out of the group
    /// (or the group is rebalancing) and must rejoin before it stores or commits more.
    pub fenced: bool,
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kafka {} failed: {}", self.operation, self.detail)
    }
}

impl std::error::Error for KafkaError {}

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
