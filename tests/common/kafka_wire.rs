//! The tests' one Kafka wire client: a few requests made with the `kafka-protocol` codecs over
//! a blocking `TcpStream`, for what kcat and Kafka's own tools cannot do from a test (a produce
//! whose acknowledged offsets are checked, a topic created by metadata and deleted without a
//! JVM, committing and fetching a group's offsets, a group described cheaply enough to poll
//! every 100 ms). Written here, independent of the program's own
//! client in `src/kafka`, so a test that uses it does not check our code against itself.
//!
//! Every request goes out at a version that Kafka 3.9 and 4.x both accept: 4.0 removed the oldest
//! versions of most requests (KIP-896; DeleteTopics v0, Produce v0-v2, OffsetCommit v0-v1, ...).
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{GroupId, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// The versions used, each accepted by Kafka 3.9 and 4.4 (and the first flexible one of its
/// request, so every field is encoded the modern way).
const METADATA_VERSION: i16 = 12;
const PRODUCE_VERSION: i16 = 9;
const DELETE_TOPICS_VERSION: i16 = 4;
const FIND_COORDINATOR_VERSION: i16 = 3;
const DESCRIBE_GROUPS_VERSION: i16 = 5;
const OFFSET_COMMIT_VERSION: i16 = 8;
const OFFSET_FETCH_VERSION: i16 = 7;

const TIMEOUT: Duration = Duration::from_secs(10);

fn wire_error(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// A connection to one broker.
pub struct Conn {
    stream: TcpStream,
    correlation_id: i32,
}

impl Conn {
    pub fn connect(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(Conn {
            stream,
            correlation_id: 0,
        })
    }

    /// The first broker of a comma-separated list that accepts a connection.
    pub fn any(brokers: &str) -> std::io::Result<Conn> {
        let mut last = std::io::Error::other("no broker given");
        for broker in brokers.split(',') {
            match Conn::connect(broker.trim()) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sends one request at `version` and reads its response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> std::io::Result<R::Response> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("metricsctl-tests")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| wire_error("encoding a request header", e))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| wire_error("encoding a request", e))?;
        let len = i32::try_from(buf.len()).map_err(|e| wire_error("request size", e))?;
        self.stream.write_all(&len.to_be_bytes())?;
        self.stream.write_all(&buf)?;

        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len =
            usize::try_from(i32::from_be_bytes(len)).map_err(|e| wire_error("response size", e))?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(
            &mut body,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(|e| wire_error("decoding a response header", e))?;
        if header.correlation_id != self.correlation_id {
            return Err(std::io::Error::other(format!(
                "response to request {} while waiting for {}",
                header.correlation_id, self.correlation_id
            )));
        }
        R::Response::decode(&mut body, version).map_err(|e| wire_error("decoding a response", e))
    }
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// The metadata of one topic; `create`: the broker creates it if it does not exist
/// (`auto.create.topics.enable`, as a producer's first metadata request does).
pub fn metadata(brokers: &str, topic: &str, create: bool) -> std::io::Result<MetadataResponse> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ]))
        .with_allow_auto_topic_creation(create);
    Conn::any(brokers)?.call(&request, METADATA_VERSION)
}

/// Where a topic's partitions are led: partition -> leader's address.
pub type Leaders = BTreeMap<i32, String>;

/// The leaders of every partition of `topic`, once each partition has one; `None` while the
/// topic is unknown or a partition has no leader (just created, a leader moving).
pub fn leaders(brokers: &str, topic: &str, create: bool) -> Option<Leaders> {
    let meta = metadata(brokers, topic, create).ok()?;
    let t = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))?;
    if t.error_code != 0 || t.partitions.is_empty() {
        return None;
    }
    let mut leaders = Leaders::new();
    for p in &t.partitions {
        let broker = meta.brokers.iter().find(|b| b.node_id == p.leader_id)?;
        if p.error_code != 0 {
            return None;
        }
        leaders.insert(
            p.partition_index,
            format!("{}:{}", broker.host.as_str(), broker.port),
        );
    }
    Some(leaders)
}

/// Creates `topic` the way a producer does, by asking for its metadata (the broker's
/// `num.partitions`, replication factor and configs), and waits up to 30 s until every partition
/// has a leader; returns the leaders. An existing topic is only looked up.
pub fn ensure_topic(brokers: &str, topic: &str) -> Leaders {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(leaders) = leaders(brokers, topic, true) {
            return leaders;
        }
        assert!(Instant::now() < deadline, "topic {topic} never got leaders");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A record to write: its key and its value, each possibly absent (null).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Writes `records` (key, value) to one partition as one uncompressed batch with acks=all, and
/// returns the offset the leader gave the first of them. An error code is an `Err`.
#[allow(clippy::type_complexity)] // (key, value) pairs read best as they are.
pub fn produce(
    brokers: &str,
    topic: &str,
    partition: i32,
    records: &[KeyValue],
) -> std::io::Result<i64> {
    let leaders = ensure_topic(brokers, topic);
    let leader = leaders.get(&partition).ok_or_else(|| {
        std::io::Error::other(format!("topic {topic} has no partition {partition}"))
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| wire_error("encoding a record batch", e))?;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(TIMEOUT.as_millis() as i32)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch.freeze()))])]);
    let response = Conn::connect(leader)?.call(&request, PRODUCE_VERSION)?;
    let answer = response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == partition)
        .ok_or_else(|| std::io::Error::other("the produce response lacks the partition"))?;
    if answer.error_code != 0 {
        return Err(std::io::Error::other(format!(
            "produce to {topic}/{partition}: error code {}",
            answer.error_code
        )));
    }
    Ok(answer.base_offset)
}

/// Deletes a topic (DeleteTopics v4; v0 is gone from Kafka 4) and waits up to 10 s for the
/// deletion to be done. A topic that does not exist is no error.
pub fn delete_topic(brokers: &str, topic: &str) -> std::io::Result<()> {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![topic_name(topic)])
        .with_timeout_ms(TIMEOUT.as_millis() as i32);
    let response = Conn::any(brokers)?.call(&request, DELETE_TOPICS_VERSION)?;
    for r in &response.responses {
        // 3: UNKNOWN_TOPIC_OR_PARTITION, already gone.
        if r.error_code != 0 && r.error_code != 3 {
            return Err(std::io::Error::other(format!(
                "deleting {topic}: error code {}",
                r.error_code
            )));
        }
    }
    Ok(())
}

/// FindCoordinator for `group`, asked of each broker in turn until one answers (a node may be
/// down). An error code in the answer is the caller's to read.
fn find_coordinator(brokers: &str, group: &str) -> std::io::Result<FindCoordinatorResponse> {
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let mut last = std::io::Error::other("no broker given");
    for broker in brokers.split(',') {
        match Conn::connect(broker.trim())
            .and_then(|mut c| c.call(&request, FIND_COORDINATOR_VERSION))
        {
            Ok(found) => return Ok(found),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A connection to the coordinator of `group`, waiting up to 30 s while the offsets topic is
/// being created.
fn coordinator(brokers: &str, group: &str) -> std::io::Result<Conn> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = find_coordinator(brokers, group)?;
        if found.error_code == 0 {
            return Conn::connect(&format!("{}:{}", found.host.as_str(), found.port));
        }
        // 15: COORDINATOR_NOT_AVAILABLE while the offsets topic is being created.
        if found.error_code != 15 || Instant::now() >= deadline {
            return Err(std::io::Error::other(format!(
                "FindCoordinator for {group}: error code {}",
                found.error_code
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Commits `offsets` (partition, next offset) of `topic` for `group`, as a client outside any
/// group generation does (generation -1, no member id). An error code is an `Err`.
pub fn commit_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> std::io::Result<()> {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                            .with_committed_leader_epoch(-1)
                    })
                    .collect(),
            )]);
    let response = coordinator(brokers, group)?.call(&request, OFFSET_COMMIT_VERSION)?;
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(std::io::Error::other(format!(
                    "commit {topic}/{}: error code {}",
                    p.partition_index, p.error_code
                )));
            }
        }
    }
    Ok(())
}

/// The offsets `group` committed for these partitions of `topic`: (partition, offset), -1 for
/// none.
pub fn fetch_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> std::io::Result<Vec<(i32, i64)>> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(partitions.to_vec())]));
    let response = coordinator(brokers, group)?.call(&request, OFFSET_FETCH_VERSION)?;
    if response.error_code != 0 {
        return Err(std::io::Error::other(format!(
            "OffsetFetch for {group}: error code {}",
            response.error_code
        )));
    }
    let mut offsets = Vec::new();
    for t in response
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
    {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(std::io::Error::other(format!(
                    "OffsetFetch {topic}/{}: error code {}",
                    p.partition_index, p.error_code
                )));
            }
            offsets.push((p.partition_index, p.committed_offset));
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// A live member of a group as DescribeGroups answers: its ids and its partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMember {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub partitions: Vec<i32>,
}

/// A group as its coordinator describes it: state (`Stable`, `PreparingRebalance`, ...) and
/// members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGroup {
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<WireMember>,
}

impl WireGroup {
    /// The members' ids, sorted.
    pub fn member_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.members.iter().map(|m| m.member_id.clone()).collect();
        ids.sort();
        ids
    }

    /// The owners of each partition (more than one would be a broken assignment).
    pub fn owners(&self) -> BTreeMap<i32, Vec<String>> {
        let mut owners: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for m in &self.members {
            for p in &m.partitions {
                owners.entry(*p).or_default().push(m.member_id.clone());
            }
        }
        owners
    }

    /// The partitions of `topic` assigned to one member (none for an unknown member).
    pub fn partitions_of(&self, member_id: &str) -> Vec<i32> {
        self.members
            .iter()
            .find(|m| m.member_id == member_id)
            .map(|m| m.partitions.clone())
            .unwrap_or_default()
    }
}

/// Describes `group` (FindCoordinator v3, then DescribeGroups v5 at its coordinator) with each
/// member's partitions of `topic`. One attempt: `Err` when no broker answers or the answer is
/// an error code (COORDINATOR_NOT_AVAILABLE included), for callers that poll.
pub fn describe_group_wire(brokers: &str, group: &str, topic: &str) -> std::io::Result<WireGroup> {
    let found = find_coordinator(brokers, group)?;
    if found.error_code != 0 {
        return Err(std::io::Error::other(format!(
            "FindCoordinator error {}",
            found.error_code
        )));
    }
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let response = Conn::connect(&format!("{}:{}", found.host.as_str(), found.port))?
        .call(&request, DESCRIBE_GROUPS_VERSION)?;
    let [described] = response.groups.as_slice() else {
        return Err(std::io::Error::other(format!(
            "{} groups described",
            response.groups.len()
        )));
    };
    if described.error_code != 0 {
        return Err(std::io::Error::other(format!(
            "DescribeGroups error {}",
            described.error_code
        )));
    }
    let mut members = Vec::new();
    for m in &described.members {
        members.push(WireMember {
            member_id: m.member_id.as_str().to_string(),
            client_id: m.client_id.as_str().to_string(),
            host: m.client_host.as_str().to_string(),
            partitions: decode_consumer_assignment(&m.member_assignment, topic)?,
        });
    }
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    Ok(WireGroup {
        state: described.group_state.as_str().to_string(),
        protocol_type: described.protocol_type.as_str().to_string(),
        protocol: described.protocol_data.as_str().to_string(),
        members,
    })
}

/// A member's assignment as the group's leader wrote it (the consumer protocol: version,
/// then topics with their partitions, then user data): the partitions of `topic`, sorted.
/// Empty bytes: no assignment yet. Decoded here from Kafka's protocol guide, not with
/// `kafka-protocol`: the program writes these bytes with that crate's codec, and a defect in
/// it would cancel out.
fn decode_consumer_assignment(bytes: &[u8], topic: &str) -> std::io::Result<Vec<i32>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = AssignmentReader { buf: bytes };
    let _version = r.i16()?;
    let mut partitions = Vec::new();
    for _ in 0..r.i32()?.max(0) {
        let name = r.string()?;
        for _ in 0..r.i32()?.max(0) {
            let p = r.i32()?;
            if name == topic {
                partitions.push(p);
            }
        }
    }
    partitions.sort_unstable();
    Ok(partitions)
}

/// Big-endian fields read off the front of an assignment.
struct AssignmentReader<'a> {
    buf: &'a [u8],
}

impl AssignmentReader<'_> {
    fn take<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let Some((head, rest)) = self.buf.split_first_chunk::<N>() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short consumer-protocol assignment",
            ));
        };
        self.buf = rest;
        Ok(*head)
    }

    fn i16(&mut self) -> std::io::Result<i16> {
        self.take().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> std::io::Result<i32> {
        self.take().map(i32::from_be_bytes)
    }

    /// A string: its i16 length (-1: null, read as empty), then its bytes.
    fn string(&mut self) -> std::io::Result<String> {
        let n = usize::try_from(self.i16()?).unwrap_or(0);
        if self.buf.len() < n {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short consumer-protocol assignment",
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(String::from_utf8_lossy(head).into_owned())
    }
}
