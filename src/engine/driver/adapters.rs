//! What the driver asks of the world around it: a source of records ([`FetchSource`]) and the
//! process ([`Host`]); the store and the group's offsets are the engine's traits
//! ([`super::super::StoreSink`], [`super::super::OffsetCommitter`]).

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::super::{Record, StepReport};

/// What one partition gave in one fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFetch {
    /// The partition.
    pub partition: i32,
    /// Its records in offset order; a batch may start before the offset asked for.
    pub records: Vec<Record>,
    /// Where the next fetch of this partition starts once these records are processed: past
    /// control batches and compaction gaps, or below the position when the log was truncated.
    pub next_offset: i64,
    /// The offset after the last record the partition holds, when the source said so.
    pub high_watermark: Option<i64>,
}

/// The outcome of one fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// Data (possibly none) for the partitions that answered, received at `arrival`.
    Data {
        /// Per partition that answered.
        parts: Vec<PartitionFetch>,
        /// When the answer came: it times the windows and stamps the documents.
        arrival: OffsetDateTime,
    },
    /// Nothing was read: the fetch failed, and the source reported it and waited its backoff.
    Failed,
    /// The log changed under the consumer (a topic deleted and created again): the caller
    /// takes its partitions of the new log again.
    LogChanged,
}

/// Why the driver stopped: a stop request, or what retrying cannot fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverError {
    /// A stop was requested (SIGINT/SIGTERM); everything completed is stored and committed.
    Stopped,
    /// What retrying cannot fix, written for the operator.
    Fatal(String),
}

/// Where records come from (Kafka in production). The source retries and backs off itself.
pub trait FetchSource {
    /// Fetches from each partition at its position.
    fn fetch(&mut self, positions: &BTreeMap<i32, i64>) -> Result<Fetch, DriverError>;

    /// The next fetch will most likely be at `positions` (where the engine stands once the
    /// last answer is processed): a source may fetch there while the answer is stored. The
    /// default fetches nothing ahead.
    fn prefetch(&mut self, _positions: &BTreeMap<i32, i64>) {}
}

/// What the driver needs from the process around it.
pub trait Host {
    /// A stop was requested.
    fn stop_requested(&self) -> bool;
    /// This consumer must rejoin its group before it stores more (a rebalance, or fenced).
    fn rejoin_needed(&self) -> bool;
    /// The group refused a commit for this member's generation: it must rejoin.
    fn fenced(&mut self);
    /// The loop is alive (the group's max step interval is measured from the last call).
    fn stepped(&mut self);
    /// Waits `delay`; false if a stop was requested meanwhile.
    fn sleep(&mut self, delay: Duration) -> bool;
    /// A staging token no other engine ever used ([`super::super::Publication::AfterCommit`]).
    fn new_token(&mut self) -> String;
    /// The engine is being resumed (`true`) or the resume is over (`false`): a resume gives
    /// nothing up for a rejoin (the loop rejoins right after it), so the adapters' calls should
    /// not be abandoned meanwhile.
    fn resuming(&mut self, _on: bool) {}
    /// The engine was resumed from the store: its work starts afresh (progress, for a health
    /// check that counts failed steps as none).
    fn resumed(&mut self) {}
    /// A step (or a commit retry) begins.
    fn step_started(&mut self) {}
    /// It ended, with its report if it succeeded.
    fn step_ended(&mut self, _report: Option<&StepReport>) {}
}

/// Borrowed adapters, passed to every call.
pub struct Adapters<'a, F: ?Sized, S: ?Sized, C: ?Sized, H: ?Sized> {
    /// Where records come from.
    pub source: &'a mut F,
    /// Where they are stored.
    pub sink: &'a mut S,
    /// Where offsets are committed.
    pub committer: &'a mut C,
    /// The process around the loop.
    pub host: &'a mut H,
}
