//! The consumer protocol's bytes (the subscription and the assignment every Kafka tool reads)
//! and the `range` assignor the group's leader runs.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::super::cluster::topic_name;
use super::super::decode_limits::decode_consumer_protocol;

/// The consumer-protocol version of our subscription and assignment bytes (any Kafka tool
/// reads version 0).
pub(super) const CONSUMER_PROTOCOL_VERSION: i16 = 0;
pub const PROTOCOL_TYPE: &str = "consumer";
pub const ASSIGNOR: &str = "range";

/// Range assignment of `partitions` over `members`: contiguous runs, sorted member ids, the
/// first `partitions % members` members taking one extra.
pub fn range_assign(partitions: &[i32], members: &[&str]) -> Vec<(String, Vec<i32>)> {
    let mut partitions = partitions.to_vec();
    partitions.sort_unstable();
    let mut members: Vec<&str> = members.to_vec();
    members.sort_unstable();
    members.dedup();
    if members.is_empty() {
        return Vec::new();
    }
    let per = partitions.len() / members.len();
    let extra = partitions.len() % members.len();
    let mut next = 0;
    members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let n = per + usize::from(i < extra);
            let mine = partitions[next..next + n].to_vec();
            next += n;
            (m.to_string(), mine)
        })
        .collect()
}

/// The consumer-protocol subscription: a version, then the subscribed topics.
pub fn encode_subscription(topic: &str) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_string(topic.to_string())]);
    with_version(|buf| subscription.encode(buf, CONSUMER_PROTOCOL_VERSION))
}

pub(super) fn subscribes_to(metadata: &Bytes, topic: &str) -> bool {
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return false;
    }
    let version = buf.get_i16();
    // Another member's bytes: checked before they size anything.
    decode_consumer_protocol::<ConsumerProtocolSubscription>(false, version, &mut buf)
        .map(|s| s.topics.iter().any(|t| t.as_str() == topic))
        .unwrap_or(false)
}

/// The consumer-protocol assignment of `partitions` of `topic`.
pub fn encode_assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
        AssignedTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(partitions.to_vec()),
    ]);
    with_version(|buf| assignment.encode(buf, CONSUMER_PROTOCOL_VERSION))
}

/// Our topic's partitions in an assignment (empty bytes: no partitions).
pub fn decode_assignment(bytes: &Bytes, topic: &str) -> Vec<i32> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16();
    let mut partitions: Vec<i32> =
        decode_consumer_protocol::<ConsumerProtocolAssignment>(true, version, &mut buf)
            .map(|a| {
                a.assigned_partitions
                    .into_iter()
                    .filter(|t| t.topic.0.as_str() == topic)
                    .flat_map(|t| t.partitions)
                    .collect()
            })
            .unwrap_or_default();
    partitions.sort_unstable();
    partitions
}

fn with_version<E>(encode: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(CONSUMER_PROTOCOL_VERSION);
    // Encoding plain strings and integers into a growable buffer cannot fail.
    let _ = encode(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_splits_contiguously_first_members_take_the_rest() {
        let plan = range_assign(&[2, 0, 1], &["b", "a"]);
        assert_eq!(
            plan,
            vec![("a".to_string(), vec![0, 1]), ("b".to_string(), vec![2])]
        );
        let plan = range_assign(&[0, 1, 2], &["a", "b", "c", "d"]);
        assert_eq!(plan[3], ("d".to_string(), vec![]));
        assert!(range_assign(&[0], &[]).is_empty());
    }

    #[test]
    fn consumer_protocol_bytes_round_trip() {
        let s = encode_subscription("metrics");
        assert!(subscribes_to(&s, "metrics"));
        assert!(!subscribes_to(&s, "other"));
        // Version 0 header, then an array of one string.
        assert_eq!(&s[..2], &[0, 0]);
        let a = encode_assignment("metrics", &[2, 0]);
        assert_eq!(decode_assignment(&a, "metrics"), vec![0, 2]);
        assert!(decode_assignment(&a, "other").is_empty());
        assert!(decode_assignment(&Bytes::new(), "metrics").is_empty());
    }
}
