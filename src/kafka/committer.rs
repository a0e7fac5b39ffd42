//! The engine's committer ([`OffsetCommitter`]) backed by the group's offsets in Kafka.
//!
//! Commits run on the [`CommitWorker`]'s thread, under the generation the member had when the
//! commit started. A commit is tried once (a failed one loses nothing: the next covers its offsets); a commit
//! refused for our generation is reported as [`SinkErrorKind::Fenced`], one that can never go
//! through (a static member whose place another process took) as
//! [`SinkErrorKind::Permanent`]. Reads (committed offsets, the logs' bounds) are retried until
//! they succeed.

use std::collections::HashMap;

use crate::engine::{Committed, OffsetCommitter, SinkError, SinkErrorKind};
use crate::retrying::{retry, GaveUp};
use crate::shutdown::Shutdown;
use crate::telemetry::{self, Service};

use super::{CommitJob, CommitWorker, GroupMember, KafkaAdmin, KafkaError, KafkaErrorKind};

/// [`OffsetCommitter`] over a [`KafkaAdmin`] (reads) and a [`CommitWorker`] (commits), for a
/// group member or a static consumer.
pub struct KafkaCommitter<'a> {
    source: &'a mut KafkaAdmin,
    commits: &'a mut CommitWorker,
    shutdown: &'a Shutdown,
    /// The group membership, when the consumer has one: its heartbeats may already know that
    /// a commit would be refused.
    member: Option<&'a GroupMember>,
}

impl<'a> KafkaCommitter<'a> {
    /// A committer through `source`'s connections.
    pub fn new(
        source: &'a mut KafkaAdmin,
        commits: &'a mut CommitWorker,
        shutdown: &'a Shutdown,
        member: Option<&'a GroupMember>,
    ) -> Self {
        KafkaCommitter {
            source,
            commits,
            shutdown,
            member,
        }
    }
}

/// A retried read given up.
fn gave_up(operation: &'static str, why: GaveUp) -> SinkError {
    match why {
        GaveUp::Permanent(m) => SinkError::new(operation, SinkErrorKind::Permanent, m),
        GaveUp::Stopped | GaveUp::Abandoned => {
            SinkError::new(operation, SinkErrorKind::Stopped, "stopped")
        }
    }
}

/// A commit's outcome as the engine reads it, counted for `/metrics`.
fn commit_outcome(
    offsets: &[(i32, i64)],
    outcome: Result<(), KafkaError>,
) -> Result<(), SinkError> {
    match &outcome {
        Ok(()) => {
            telemetry::consumer().service_outcome(Service::Kafka, true);
            telemetry::consumer().committed(offsets.iter().copied());
        }
        // A refusal for our generation is an answer, not an outage.
        Err(e) if e.is_fenced() => {}
        Err(_) => telemetry::consumer().service_outcome(Service::Kafka, false),
    }
    outcome.map_err(|e| {
        let kind = match e.kind {
            KafkaErrorKind::Fenced => SinkErrorKind::Fenced,
            KafkaErrorKind::Fatal => SinkErrorKind::Permanent,
            KafkaErrorKind::Retriable => SinkErrorKind::Failed,
        };
        SinkError::new("committing offsets", kind, e.to_string())
    })
}

impl OffsetCommitter for KafkaCommitter<'_> {
    fn start_commit(&mut self, offsets: &[(i32, i64)], marker: Option<&str>) {
        self.commits.start_commit(CommitJob {
            offsets: offsets.to_vec(),
            marker: marker.map(str::to_string),
            generation: self.source.generation.clone(),
            topic_id: self.source.topic_id,
            coordinator: self.source.cluster.coordinator().map(str::to_string),
        });
    }

    fn commit_outcome(&mut self, wait: bool) -> Option<Result<(), SinkError>> {
        let answer = self.commits.outcome(wait)?;
        Some(commit_outcome(&answer.offsets, answer.outcome))
    }

    fn committed(&mut self, partitions: &[i32]) -> Result<HashMap<i32, Committed>, SinkError> {
        if let Some(answer) = self.commits.outcome(true) {
            // Whoever reads the committed offsets now starts over from them.
            if let Err(e) = commit_outcome(&answer.offsets, answer.outcome) {
                log::info!("{e} (before reading the committed offsets again)");
            }
        }
        let source = &mut *self.source;
        retry("fetching committed offsets", self.shutdown, || {
            source.committed_offsets(partitions)
        })
        .inspect(|found| {
            telemetry::consumer().committed(found.iter().map(|(p, c)| (*p, c.offset)));
        })
        .map_err(|why| gave_up("fetching committed offsets", why))
    }

    fn log_start(&mut self, partitions: &[i32]) -> Result<HashMap<i32, i64>, SinkError> {
        let source = &mut *self.source;
        let bounds = retry("listing offsets", self.shutdown, || {
            source.offset_bounds(partitions)
        })
        .map_err(|why| gave_up("listing offsets", why))?;
        Ok(bounds.iter().map(|(p, (start, _))| (*p, *start)).collect())
    }

    fn must_rejoin(&self) -> bool {
        self.member.is_some_and(GroupMember::rejoin_needed)
    }
}
