//! The group's offsets in Kafka and the logs' bounds, on [`KafkaAdmin`]: ListOffsets,
//! OffsetFetch and OffsetCommit (labelled with the topic's id and the staged window's marker).
//! The engine's committer ([`super::KafkaCommitter`]) commits through these.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    BrokerId, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;
use log::{debug, warn};

use super::admin::KafkaAdmin;
use super::cluster::{group_id, topic_name, AutoCreate, REQUEST_TIMEOUT};
use super::connection::WireError;
use super::group::Generation;
use super::{fail, fatal, from_wire, KafkaError, KafkaErrorKind};
use crate::engine::Committed;

/// How long the coordinator may take to load a group after a restart or a move.
const COORDINATOR_WAIT: Duration = Duration::from_secs(10);

impl KafkaAdmin {
    /// The earliest and the latest offset of each of these partitions.
    pub fn offset_bounds(
        &mut self,
        partitions: &[i32],
    ) -> Result<HashMap<i32, (i64, i64)>, KafkaError> {
        let earliest = self.list_offsets(partitions, -2)?;
        let latest = self.list_offsets(partitions, -1)?;
        Ok(earliest
            .into_iter()
            .filter_map(|(p, e)| latest.get(&p).map(|&l| (p, (e, l))))
            .collect())
    }

    /// ListOffsets at `timestamp` (-2 earliest, -1 latest) from each partition's leader.
    pub(super) fn list_offsets(
        &mut self,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<HashMap<i32, i64>, KafkaError> {
        // The metadata is reloaded when it is of another log than the one followed, or lacks a
        // leader we need: a consumer's main thread never fetches, so nothing else refreshes it.
        let meta = match self.cluster.meta() {
            Some(m) if self.topic_id.is_none_or(|id| id == m.topic_id) => m.clone(),
            _ => self.cluster.refresh(AutoCreate::No)?,
        };
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in partitions {
            let Some(leader) = meta.partitions.get(p).and_then(|l| l.broker) else {
                let _ = self.cluster.refresh(AutoCreate::No);
                return Err(fail("list-offsets", format!("partition {p} has no leader")));
            };
            by_leader.entry(leader).or_default().push(*p);
        }
        let mut found = HashMap::new();
        for (leader, ps) in by_leader {
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic_name(self.cluster.topic()))
                    .with_partitions(
                        ps.iter()
                            .map(|p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(*p)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    )]);
            let response = self
                .cluster
                .call_broker(leader, &request, REQUEST_TIMEOUT)
                .map_err(|e| self.lost(e, "list-offsets"))?;
            for t in response.topics {
                for p in t.partitions {
                    if let Some(e) = ResponseError::try_from_code(p.error_code) {
                        self.cluster.disconnect_all();
                        let _ = self.cluster.refresh(AutoCreate::No);
                        return Err(fail(
                            "list-offsets",
                            format!("partition {}: {e}", p.partition_index),
                        ));
                    }
                    if ps.contains(&p.partition_index) {
                        found.insert(p.partition_index, p.offset);
                    }
                }
            }
            // A partition left out of the answer is an error for it, never offset 0.
            if let Some(missing) = ps.iter().find(|p| !found.contains_key(p)) {
                return Err(fail(
                    "list-offsets",
                    format!("partition {missing} is missing from broker {leader}'s answer"),
                ));
            }
        }
        Ok(found)
    }

    /// A failed exchange: reload metadata so the next call goes to the current leader.
    pub(super) fn lost(&mut self, e: WireError, operation: &'static str) -> KafkaError {
        let _ = self.cluster.refresh(AutoCreate::No);
        from_wire(operation, e)
    }

    /// The group's committed offsets for this log, with their markers; partitions without one
    /// are absent. An offset committed for another incarnation of the topic (its id is kept in
    /// the commit's metadata) is ignored: it points into a log that no longer exists.
    pub fn committed_offsets(
        &mut self,
        partitions: &[i32],
    ) -> Result<HashMap<i32, Committed>, KafkaError> {
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id(&self.group))
            .with_require_stable(true)
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name(self.cluster.topic()))
                .with_partition_indexes(partitions.to_vec())]));
        let this_log = self.topic_id.map(|id| id.to_string());
        let deadline = Instant::now() + COORDINATOR_WAIT;
        loop {
            let response = self
                .cluster
                .call_coordinator(&self.group, &request, REQUEST_TIMEOUT)?;
            let mut problem = ResponseError::try_from_code(response.error_code);
            let mut found = HashMap::new();
            for t in &response.topics {
                for p in &t.partitions {
                    if let Some(e) = ResponseError::try_from_code(p.error_code) {
                        problem = Some(e);
                        continue;
                    }
                    let (label, marker) =
                        parse_commit_metadata(p.metadata.as_ref().map_or("", |m| m.as_str()));
                    let other_log = !label.is_empty() && Some(label) != this_log.as_deref();
                    if p.committed_offset >= 0 && !other_log {
                        found.insert(
                            p.partition_index,
                            Committed {
                                offset: p.committed_offset,
                                marker: marker.map(str::to_string),
                            },
                        );
                    } else if other_log {
                        warn!(
                            "partition {}: the group's committed offset {} belongs to an earlier \
                             topic of the same name (id {label}); ignored",
                            p.partition_index, p.committed_offset
                        );
                    }
                }
            }
            match problem {
                None => return Ok(found),
                Some(e) => self.coordinator_trouble("offset-fetch", e, deadline)?,
            }
        }
    }

    /// A retriable coordinator error waits a moment (the coordinator is loading or moved);
    /// anything else, or running out of time, is returned.
    fn coordinator_trouble(
        &mut self,
        operation: &'static str,
        e: ResponseError,
        deadline: Instant,
    ) -> Result<(), KafkaError> {
        let retriable = matches!(
            e,
            ResponseError::CoordinatorLoadInProgress
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::NotCoordinator
                | ResponseError::UnstableOffsetCommit
                | ResponseError::RequestTimedOut
        );
        if matches!(
            e,
            ResponseError::CoordinatorNotAvailable | ResponseError::NotCoordinator
        ) {
            self.cluster.forget_coordinator();
        }
        if !retriable || Instant::now() >= deadline || self.shutdown.requested() {
            return Err(fail(operation, format!("group {}: {e}", self.group)));
        }
        debug!(
            "{operation}: group {}: {e}; asking again in 0.2 s",
            self.group
        );
        self.shutdown.sleep(Duration::from_millis(200));
        Ok(())
    }

    /// Commits from now on carry this generation (`None`: commits outside group membership).
    pub fn set_generation(&mut self, generation: Option<Generation>) {
        self.generation = generation;
    }

    /// Commits `(partition, next offset to read)` pairs for the group, labelled with the
    /// topic's id and `marker` (the staged window they end). A refusal of our generation is
    /// returned as [`KafkaErrorKind::Fenced`].
    pub fn commit(
        &mut self,
        offsets: &[(i32, i64)],
        marker: Option<&str>,
    ) -> Result<(), KafkaError> {
        let label = commit_metadata(
            &self.topic_id.map(|id| id.to_string()).unwrap_or_default(),
            marker,
        );
        let (generation_id, member_id, instance_id) = match &self.generation {
            Some(g) => (g.id, g.member_id.clone(), g.instance_id.clone()),
            None => (-1, String::new(), None),
        };
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id_or_member_epoch(generation_id)
            .with_member_id(StrBytes::from_string(member_id))
            .with_group_instance_id(instance_id.clone().map(StrBytes::from_string))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic_name(self.cluster.topic()))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                                .with_committed_metadata(Some(StrBytes::from_string(label.clone())))
                        })
                        .collect(),
                )]);
        let deadline = Instant::now() + COORDINATOR_WAIT;
        loop {
            let response = self
                .cluster
                .call_coordinator(&self.group, &request, REQUEST_TIMEOUT)?;
            let problem = response
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .find_map(|p| ResponseError::try_from_code(p.error_code));
            match problem {
                None => return Ok(()),
                // Another process took this static member's place: stopping is the only
                // answer (rejoining would fence the other in turn).
                Some(ResponseError::FencedInstanceId) if instance_id.is_some() => {
                    return Err(fatal(
                        "offset-commit",
                        format!(
                            "group {}: another consumer joined with group instance id {:?} and \
                             took this member's place (FENCED_INSTANCE_ID); give each consumer \
                             its own --group-instance-id (KAFKA_GROUP_INSTANCE_ID)",
                            self.group,
                            instance_id.as_deref().unwrap_or_default()
                        ),
                    ))
                }
                Some(
                    e @ (ResponseError::IllegalGeneration
                    | ResponseError::UnknownMemberId
                    | ResponseError::RebalanceInProgress
                    | ResponseError::FencedInstanceId),
                ) => {
                    let mut refused = fail(
                        "offset-commit",
                        format!("group {} refused this member's commit ({e})", self.group),
                    );
                    refused.kind = KafkaErrorKind::Fenced;
                    return Err(refused);
                }
                Some(e) => self.coordinator_trouble("offset-commit", e, deadline)?,
            }
        }
    }
}

/// A commit's metadata: the topic id (which log the offset belongs to), then, after a space,
/// the marker of the staged window the offset ends, when there is one.
pub(super) fn commit_metadata(topic_id: &str, marker: Option<&str>) -> String {
    match marker {
        Some(m) => format!("{topic_id} {m}"),
        None => topic_id.to_string(),
    }
}

/// The topic id and the marker of a commit's metadata ([`commit_metadata`]); metadata of the
/// legacy unmarked format (a consumer that stores its windows directly) is the topic id alone.
pub(super) fn parse_commit_metadata(metadata: &str) -> (&str, Option<&str>) {
    match metadata.split_once(' ') {
        Some((topic_id, marker)) => (topic_id, Some(marker).filter(|m| !m.is_empty())),
        None => (metadata, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_metadata_carries_the_topic_id_and_the_marker() {
        let id = "6f1d0a52-0000-4000-8000-000000000001";
        assert_eq!(commit_metadata(id, None), id);
        let with = commit_metadata(id, Some("0a1b#17"));
        assert_eq!(parse_commit_metadata(&with), (id, Some("0a1b#17")));
        // The legacy unmarked format, or another client's: the whole text is the label.
        assert_eq!(parse_commit_metadata(id), (id, None));
        assert_eq!(parse_commit_metadata(""), ("", None));
    }
}
