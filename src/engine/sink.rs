//! What the engine writes and the two small traits it writes through.
//!
//! The records here are plain data borrowed from the engine's step; the MongoDB adapter turns
//! them into documents and the Kafka adapter turns a commit into an OffsetCommit request. Every
//! identity that contains a Kafka position also contains the topic id, because a topic deleted
//! and recreated under the same name is a new log whose offsets start again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use time::OffsetDateTime;

use crate::metric::{RejectionCode, ValidMetric};
use crate::window::KpiWindow;

/// Where a record was read: one offset of one partition of one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position<'a> {
    /// The topic's name.
    pub topic: &'a str,
    /// The topic's Kafka id (a UUID string): tells two logs of the same name apart.
    pub topic_id: &'a str,
    /// The partition within the topic.
    pub partition: i32,
    /// The record's offset within the partition.
    pub offset: i64,
}

impl Position<'_> {
    /// Whether a stored position is this one: same log (name and id), partition and offset.
    pub fn is(&self, stored: &StoredPosition) -> bool {
        self.topic == stored.topic
            && self.topic_id == stored.topic_id
            && self.partition == stored.partition
            && self.offset == stored.offset
    }

    /// An owned copy, for a position that must outlive the step.
    pub fn to_stored(&self) -> StoredPosition {
        StoredPosition {
            topic: self.topic.to_string(),
            topic_id: self.topic_id.to_string(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// A position read back from the store: where a `message_uuid` was first stored from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoredPosition {
    /// The topic's name.
    pub topic: String,
    /// The topic's Kafka id; empty for a document of the legacy format without topic ids,
    /// which therefore never matches a position read now.
    pub topic_id: String,
    /// The partition within the topic.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
}

impl fmt::Display for StoredPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.topic, self.topic_id, self.partition, self.offset
        )
    }
}

/// A valid message and where it was read, to be stored raw (unique by `message_uuid`).
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The validated message; `message.fields` is the payload's JSON object as received.
    pub message: &'a ValidMetric,
    /// Where it was read; goes in the document's `kafka` sub-document with the topic id.
    pub position: Position<'a>,
    /// When the step that read it began (passed in by the caller).
    pub received_at: OffsetDateTime,
}

/// What happened to one document of an unordered raw insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The document is stored now.
    Inserted,
    /// A document with this `message_uuid` already exists (a duplicate-key error), stored from
    /// this position (a replay) or from another one (a duplicate event).
    AlreadyStored,
    /// The database refused the document for another reason; the text says why.
    Refused(String),
}

/// Why a record was dead-lettered, as stored in the dead-letter collection's `reason_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterCode {
    /// Validation refused the record (`no_value` for a record without value), a duplicate
    /// `message_uuid`, or a database refusal.
    Rejected(RejectionCode),
    /// The payload is larger than [`super::MAX_PAYLOAD_BYTES`]: storing it would risk a
    /// document over MongoDB's 16 MiB limit, so only its head and its digest are kept.
    PayloadTooLarge,
}

impl DeadLetterCode {
    /// The stable code programs read.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterCode::Rejected(code) => code.as_str(),
            DeadLetterCode::PayloadTooLarge => "payload_too_large",
        }
    }
}

/// The payload a dead letter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadPayload<'a> {
    /// The record had no value.
    Missing,
    /// The whole payload, byte for byte.
    Whole(&'a [u8]),
    /// An oversized payload: its first bytes, its full length and the SHA-256 of all of it.
    Truncated {
        /// The first bytes (cut back to a character boundary when the payload is UTF-8).
        head: &'a [u8],
        /// The payload's full length in bytes.
        len: usize,
        /// The SHA-256 of the whole payload, lowercase hex.
        sha256: &'a str,
    },
}

/// A record that could not be stored as a metric, kept with why and where. Its `_id` is its
/// position, so storing it again after a crash changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter<'a> {
    /// The stable reason code.
    pub code: DeadLetterCode,
    /// The reason written for people.
    pub reason: &'a str,
    /// What is kept of the payload.
    pub payload: DeadPayload<'a>,
    /// Where the record was read.
    pub position: Position<'a>,
    /// When the step that read it began.
    pub received_at: OffsetDateTime,
    /// For a duplicate event: where the stored copy was read.
    pub duplicate_of: Option<&'a StoredPosition>,
}

impl DeadLetter<'_> {
    /// `{topic}/{topic_id}/{partition}/{offset}`: one dead letter per record of one log.
    pub fn id(&self) -> String {
        let p = &self.position;
        format!("{}/{}/{}/{}", p.topic, p.topic_id, p.partition, p.offset)
    }
}

/// One KPI window with the bookkeeping that makes it exactly-once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowRecord<'a> {
    /// The KPIs.
    pub window: &'a KpiWindow,
    /// The window stream: `{topic}/{topic_id}/{group}/{partitions}`.
    pub stream: &'a str,
    /// The window's number within its stream, from 0; with `stream` it makes the `_id`.
    pub seq: i64,
    /// The topic's name.
    pub topic: &'a str,
    /// The topic's Kafka id.
    pub topic_id: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// Per partition, the next offset to read once this window is stored: where a restart
    /// resumes, and what the group commits.
    pub next_offsets: &'a [(i32, i64)],
}

impl WindowRecord<'_> {
    /// `{stream}#{seq}`: the same window recomputed after a replay gets the same id, so it
    /// cannot be stored twice.
    pub fn id(&self) -> String {
        window_id(self.stream, self.seq)
    }
}

/// The `_id` of window `seq` of `stream`.
pub fn window_id(stream: &str, seq: i64) -> String {
    format!("{stream}#{seq}")
}

/// What happened to one window of a window insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowOutcome {
    /// Stored now.
    Inserted,
    /// A window with this `_id` was already stored; the stored one is kept.
    AlreadyStored,
}

/// The last stored window of a stream: where a restart resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWindow {
    /// Its number within the stream.
    pub seq: i64,
    /// Its next offset per partition.
    pub next_offsets: BTreeMap<i32, i64>,
}

/// What a failed sink or committer call means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// A stop was requested while the call waited: the consumer stops.
    Stopped,
    /// The consumer must rejoin its group before it writes more (a rebalance began, or it
    /// left the group); the adapter gave the call up for it.
    Rejoin,
    /// The group refused a commit for this member's generation: it was fenced out.
    Fenced,
    /// Retrying cannot fix it (refused credentials, a static member whose place another
    /// process took): the consumer stops, and `detail` is what the operator reads.
    Permanent,
    /// The call failed and may succeed if made again (the real adapters retry these
    /// themselves; a lost commit answer, or a crash in the fakes).
    Failed,
}

/// A sink or committer call that failed. The real adapters retry transient failures
/// themselves, so an error here means a stop request, a rejoin, a fencing, a failure that
/// retrying cannot fix, or a commit (tried once) that did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    /// What was being done, e.g. `raw insert`.
    pub operation: &'static str,
    /// What the failure means for the loop.
    pub kind: SinkErrorKind,
    /// What went wrong, written for the operator (no secrets).
    pub detail: String,
}

impl SinkError {
    /// A failure of `kind`.
    pub fn new(operation: &'static str, kind: SinkErrorKind, detail: impl Into<String>) -> Self {
        SinkError {
            operation,
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.operation, self.detail)
    }
}

impl std::error::Error for SinkError {}

/// Where raw metrics, dead letters and KPI windows are stored (MongoDB in production).
///
/// The engine stays correct if the process dies during or after any of these calls: every
/// write is idempotent by a unique key, so it only has to be repeated.
pub trait StoreSink {
    /// Stores valid messages with one unordered insert, unique by `message_uuid`; one outcome
    /// per record, in order. A duplicate or a refusal of one record does not stop the others.
    fn insert_raw(&mut self, records: &[RawRecord<'_>]) -> Result<Vec<InsertOutcome>, SinkError>;

    /// Where each of these `message_uuid`s was stored from, for those stored.
    fn stored_positions(
        &mut self,
        uuids: &[&str],
    ) -> Result<HashMap<String, StoredPosition>, SinkError>;

    /// Stores dead letters, idempotent by `_id` ([`DeadLetter::id`]): one already stored is
    /// left as it is.
    fn insert_dead_letters(&mut self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError>;

    /// Stores windows, idempotent by `_id` ([`WindowRecord::id`]); one outcome per window, in
    /// order.
    ///
    /// The windows come in `seq` order and must be stored in that order: if the call fails,
    /// the windows stored must be a prefix of `windows` (an ordered insert that treats a
    /// duplicate `_id` as already stored and carries on after it). A restart resumes after the
    /// stored window with the highest `seq`; a gap below it would lose the missing window's
    /// messages.
    fn insert_windows(
        &mut self,
        windows: &[WindowRecord<'_>],
    ) -> Result<Vec<WindowOutcome>, SinkError>;

    /// The stored window of `stream` with the highest `seq`, if any.
    fn last_window(&mut self, stream: &str) -> Result<Option<LastWindow>, SinkError>;

    /// Per partition of `partitions`, the furthest next offset any stored window of this
    /// group on this log recorded, whichever stream stored it: where a partition resumes when
    /// the group holds no commit for it (a first start, offsets expired in Kafka), or when a
    /// window can lie past the commit (stored directly, its commit lost). It reads every
    /// window of the group, so the engine asks only then.
    fn furthest_positions(
        &mut self,
        topic_id: &str,
        group: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, SinkError>;

    /// Stages windows under `token`, idempotent for a repeated call (an engine's token is its
    /// own, and it stages each window once, so only a retry repeats one): kept where a later
    /// [`StoreSink::publish_staged`] finds them, and not KPI windows yet. Group members stage
    /// their windows before the commit that fences them ([`Publication::AfterCommit`]).
    fn stage_windows(&mut self, token: &str, windows: &[WindowRecord<'_>])
        -> Result<(), SinkError>;

    /// Publishes, in `seq` order, the windows staged under `token` with `seq` up to `through`
    /// that are not stored as KPI windows yet (an ordered insert, as
    /// [`StoreSink::insert_windows`]); returns how many it stored now. Used on resume for the
    /// windows a committed marker names: their commit succeeded, so they are the group's.
    fn publish_staged(&mut self, token: &str, through: i64) -> Result<usize, SinkError>;

    /// Forgets the windows staged under `token` with `seq` up to `through`: they are published.
    /// A store that keeps a call's windows together may keep a group until all of it is
    /// published; [`StoreSink::publish_staged`] skips those already published.
    fn forget_staged(&mut self, token: &str, through: i64) -> Result<(), SinkError>;
}

/// How a consumer's windows become KPI windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// Stored, then their offsets committed: for a consumer that nobody else can take
    /// partitions from (static assignment), so a window written late is still its own.
    Direct,
    /// For a group member, whose partitions a rebalance can hand to another member while one
    /// of its writes is still on its way to the database. Its windows are staged under
    /// `token`, then their offsets are committed under the member's generation with a marker
    /// `{token}#{seq}` (the coordinator refuses the commit of a member it has fenced out), and
    /// only then stored as KPI windows. A window whose commit was refused is never published;
    /// one whose commit went through but whose publication did not is published by whoever
    /// resumes the partitions next, from the marker. `token` must be unique to the engine.
    AfterCommit {
        /// This engine's staging token.
        token: String,
    },
}

/// A partition's committed offset, with the marker of the staged window it ends, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to read.
    pub offset: i64,
    /// `{token}#{seq}` ([`Publication::AfterCommit`]): the last window the commit covers.
    pub marker: Option<String>,
}

/// `{token}#{seq}`: the marker a commit carries for the last window it covers.
pub fn staged_marker(token: &str, seq: i64) -> String {
    format!("{token}#{seq}")
}

/// The token and `seq` of a marker, if it is one. A `seq` of -1 names no window: a commit of
/// positions alone (after a log truncation), by a consumer that publishes after committing.
pub fn parse_marker(marker: &str) -> Option<(&str, i64)> {
    let (token, seq) = marker.rsplit_once('#')?;
    let seq = seq.parse().ok()?;
    (!token.is_empty() && seq >= -1).then_some((token, seq))
}

/// The consumer group's committed offsets and the log's bounds (Kafka in production). The
/// committer knows the group and the topic.
///
/// Commits run in the background: a step starts one and goes on storing while the coordinator
/// answers (an offset commit waits, as an `acks=all` write does, for every in-sync replica of
/// the offsets topic, which after a broker's death can take the controller's session timeout),
/// and a later step takes its outcome. At most one commit is in flight, so commits reach the
/// group in the order they were started.
pub trait OffsetCommitter {
    /// Starts committing, per partition, the next offset to read, with `marker` (the staged
    /// window they end, [`Publication::AfterCommit`]) on every partition, and returns at once.
    /// Only once the outcome of the commit started before was taken
    /// ([`OffsetCommitter::commit_outcome`] answered `Some`).
    fn start_commit(&mut self, offsets: &[(i32, i64)], marker: Option<&str>);

    /// The outcome of the commit started last, taken: `None` while it is in flight (with
    /// `wait`, only when no commit was started), or once its outcome was taken already. With
    /// `wait`, blocks until it has one.
    fn commit_outcome(&mut self, wait: bool) -> Option<Result<(), SinkError>>;

    /// Commits and waits for the outcome.
    fn commit(&mut self, offsets: &[(i32, i64)], marker: Option<&str>) -> Result<(), SinkError> {
        self.start_commit(offsets, marker);
        self.commit_outcome(true).unwrap_or_else(|| {
            Err(SinkError::new(
                "committing offsets",
                SinkErrorKind::Failed,
                "the commit ended without an outcome",
            ))
        })
    }

    /// The group's committed next offset of each of these partitions, for those committed. A
    /// commit in flight ends first and its outcome is dropped: whoever reads the committed
    /// offsets starts over from them, so a commit landing after the read could not be told
    /// from one that moved the group under it.
    fn committed(&mut self, partitions: &[i32]) -> Result<HashMap<i32, Committed>, SinkError>;

    /// The first offset each partition's log still holds (records below it were deleted by
    /// retention): where a partition with nothing committed or stored starts.
    fn log_start(&mut self, partitions: &[i32]) -> Result<HashMap<i32, i64>, SinkError>;

    /// True when a commit now would be refused for certain: the member already learned that
    /// the group rebalances or fenced it out. The engine then stages nothing it cannot
    /// commit. It must not ask the coordinator: an unreachable one would hold the step, and
    /// the commit asks anyway. The default knows nothing.
    fn must_rejoin(&self) -> bool {
        false
    }
}
