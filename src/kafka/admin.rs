//! The topic's metadata and the group's side in Kafka, without fetching: what `status` reads
//! (the topic, the logs' bounds, the committed offsets, the group's members) and what a
//! consumer's main thread needs besides (opening the topic, committing). The offsets and
//! commits themselves are in `offsets`; fetching is [`super::KafkaSource`]'s.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::DescribeGroupsRequest;
use uuid::Uuid;

use super::cluster::{group_id, AutoCreate, Cluster, TopicMeta};
use super::group::{decode_assignment, Generation};
use super::security::Security;
use super::{fail, KafkaError};
use crate::shutdown::Shutdown;

/// Which log the consumer reads: the topic's current incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub topic_id: Uuid,
    pub partitions: Vec<i32>,
}

impl From<&TopicMeta> for TopicInfo {
    fn from(meta: &TopicMeta) -> Self {
        TopicInfo {
            topic_id: meta.topic_id,
            partitions: meta.partition_ids(),
        }
    }
}

/// One topic and one group in Kafka: metadata, offsets, commits and the group's description.
pub struct KafkaAdmin {
    pub(super) cluster: Cluster,
    pub(super) group: String,
    pub(super) shutdown: Shutdown,
    /// The log being read, once known.
    pub(super) topic_id: Option<Uuid>,
    /// The member's generation when the consumer is a group member; commits carry it so that
    /// a member fenced out of the group cannot commit.
    pub(super) generation: Option<Generation>,
}

impl KafkaAdmin {
    pub fn new(brokers: Vec<String>, topic: String, group: String, shutdown: Shutdown) -> Self {
        KafkaAdmin {
            cluster: Cluster::new(brokers, topic, shutdown.clone()),
            group,
            shutdown,
            topic_id: None,
            generation: None,
        }
    }

    /// Secures every connection to the brokers as `security` says (TLS, SASL).
    pub fn with_security(mut self, security: Security) -> Self {
        self.cluster.set_security(security);
        self
    }

    /// The topic's id and partitions, creating the topic where the broker allows it (as a
    /// consumer started before its producer expects). Fixes the log the offsets belong to.
    pub fn open(&mut self) -> Result<TopicInfo, KafkaError> {
        let meta = self.cluster.refresh(AutoCreate::Yes)?;
        self.topic_id = Some(meta.topic_id);
        Ok(TopicInfo::from(&meta))
    }

    /// The topic's id and partitions, without creating it: an error when it does not exist.
    pub fn inspect(&mut self) -> Result<TopicInfo, KafkaError> {
        let meta = self.cluster.refresh(AutoCreate::No)?;
        self.topic_id = Some(meta.topic_id);
        Ok(TopicInfo::from(&meta))
    }

    /// Adopts the log a `Fetched::TopicChanged` announced.
    pub fn follow(&mut self, info: &TopicInfo) {
        self.topic_id = Some(info.topic_id);
    }

    /// The group's state and live members (with their partitions of our topic).
    pub fn group_members(&mut self) -> Result<(String, Vec<MemberInfo>), KafkaError> {
        let topic = self.cluster.topic().to_string();
        describe_group(&mut self.cluster, &self.group, &topic)
    }
}

/// A live member of a group, as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// Its partitions of our topic.
    pub partitions: Vec<i32>,
}

/// The group's state (`Stable`, `Empty`, `PreparingRebalance`, ...) and live members.
fn describe_group(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
) -> Result<(String, Vec<MemberInfo>), KafkaError> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let response = cluster.call_coordinator(group, &request, Duration::from_secs(10))?;
    let Some(described) = response.groups.into_iter().next() else {
        return Err(fail(
            "describe-group",
            format!("no answer for group {group}"),
        ));
    };
    if let Some(e) = ResponseError::try_from_code(described.error_code) {
        return Err(fail("describe-group", format!("group {group}: {e}")));
    }
    let members = described
        .members
        .iter()
        .map(|m| MemberInfo {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            partitions: decode_assignment(&m.member_assignment, topic),
        })
        .collect();
    Ok((described.group_state.to_string(), members))
}
