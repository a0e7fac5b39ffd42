//! The three-node cluster as its tests see it: that it runs, and which node coordinates a
//! consumer group, predicted the way Kafka places a group (for the tests that kill, or must
//! spare, the coordinator).
#![allow(dead_code)]

use std::time::Duration;

use crate::common::kafka_tools::elect_preferred_leaders;
use crate::common::kcat::partition_leaders;
use crate::common::outages::kafka_nodes;
use crate::common::process::poll;

/// Fails the test unless the local services run the three-node cluster.
pub fn require_cluster() {
    assert_eq!(
        kafka_nodes(),
        3,
        "these tests need the three-node cluster: make test-cluster (or make up BROKERS=3)"
    );
}

/// Partitions of `__consumer_offsets` on the cluster (`scripts/kafka/cluster.properties`).
const OFFSETS_PARTITIONS: i32 = 3;

/// Java's `String.hashCode`, which Kafka uses to place a group on a partition of its offsets
/// topic (the leader of that partition is the group's coordinator).
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The node coordinating `group`: the leader of `__consumer_offsets` partition
/// `abs(hash) % 3`, as kcat reads the cluster's metadata through `brokers`. The offsets
/// topic's leaders are first moved to their preferred replicas, so that the controller's
/// periodic leader rebalance does not move the coordinator during the test (it did once in CI,
/// 23 s into a test whose victim had to be any node but the coordinator: the earlier tests
/// had restarted nodes).
pub fn predicted_coordinator(brokers: &str, group: &str) -> u32 {
    elect_preferred_leaders(brokers, "__consumer_offsets");
    let hash = java_string_hash(group);
    let partition = if hash == i32::MIN { 0 } else { hash.abs() } % OFFSETS_PARTITIONS;
    let leaders = poll(Duration::from_secs(30), Duration::from_millis(500), || {
        partition_leaders(brokers, "__consumer_offsets")
            .filter(|l| l.get(&partition).is_some_and(|n| *n > 0))
    })
    .expect("the offsets topic has leaders");
    u32::try_from(leaders[&partition]).expect("a node id")
}
