//! The consumer's exactly-once protocol as a pure engine and the loop that drives it: records
//! in, writes out through small traits ([`FetchSource`], [`StoreSink`], [`OffsetCommitter`],
//! [`Host`]), no Kafka, no MongoDB, no clock. This is the one place the protocol is written
//! out; the adapters and `commands::consume` only wire it.
//!
//! Exactly-once windows without transactions:
//! - the consumer owns its positions: the driver ([`Driver`]) fetches at
//!   [`Engine::positions`], hands the records to the engine in bounded steps, and moves a
//!   position past offsets that hold no record only after the step before succeeded;
//! - every KPI window records, per partition, the next offset to read once it is stored;
//! - the group's offsets are committed only at window boundaries, so the messages of the open
//!   window are read again after a restart and counted then;
//! - a group member ([`Publication::AfterCommit`]) stages its windows, commits under its
//!   generation with a marker naming the last one, and publishes them only after the commit
//!   went through (the commit runs while the next steps store; one at a time, in order): the coordinator's refusal of a fenced member's commit is the fence, so a
//!   write that reaches the database after a rebalance never adds a window; a resumed engine
//!   first publishes the staged windows the committed markers name;
//! - a consumer nobody can take partitions from ([`Publication::Direct`], static assignment)
//!   stores its windows, then commits;
//! - a restart ([`Engine::resume`]) resumes at the group's commit where it carries a marker
//!   (no window lies past it), else at the later of the commit and the furthest stored window
//!   of the group on this log (a direct window may lie past a lost commit);
//! - re-read messages hit the unique index on `message_uuid` and are recognised as replays
//!   (same log and position), so nothing is stored twice; a `message_uuid` stored from another
//!   position, or from another log of the same name, is a duplicate event and is dead-lettered;
//! - a position past its partition's end means the log was truncated under the consumer: the
//!   driver resumes a fresh engine, moves the position back to the new end and commits it, so
//!   the records the log will hold there are read;
//! - while commits fail, staged windows wait for a commit that goes through; once
//!   [`DriverConfig::max_unpublished`] wait, the driver reads no further and retries the commit
//!   with backoff; a stream gone quiet closes no window, so the driver retries it then too;
//! - a failed step poisons the engine; the driver resumes a fresh one from the store, unless a
//!   stop was requested, the failure is permanent (the consumer stops) or the member must
//!   rejoin its group first.
//!
//! Every write is idempotent by a unique key, so the process may die after any sink call: a
//! fresh engine resumed from what the store and the group hold repeats the unfinished step
//! and ends where an uninterrupted run would have. The property test in `property/` checks
//! exactly that, driving the real [`Driver`] over fakes with a crash injected between any two
//! sink calls.

mod driver;
mod publish;
mod resume;
mod sink;
mod step;
mod verdict;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod property;
#[cfg(test)]
mod tests;

pub use driver::{
    expected_next, Adapters, Driver, DriverConfig, DriverError, Fetch, FetchSource, Host,
    PartitionFetch, Round, Totals, MAX_UNPUBLISHED_WINDOWS,
};
pub use sink::{
    parse_marker, staged_marker, window_id, Committed, DeadLetter, DeadLetterCode, DeadPayload,
    InsertOutcome, LastWindow, OffsetCommitter, Position, Publication, RawRecord, SinkError,
    SinkErrorKind, StoreSink, StoredPosition, WindowOutcome, WindowRecord,
};
pub use verdict::hex;
#[cfg(test)]
use verdict::{head_len, sha256_hex};

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;

use log::debug;

use crate::window::{KpiWindow, TumblingWindows};

/// At most this many records in one step: one raw insert, one dead-letter insert.
pub const MAX_STEP_MESSAGES: usize = 2_000;
/// At most this many payload bytes in one step (a single larger record still makes a step).
pub const MAX_STEP_BYTES: usize = 4 * 1024 * 1024;
/// Windows published before their staged copies are forgotten in one delete.
pub const FORGET_STAGED_EVERY: usize = 500;
/// A payload larger than this is dead-lettered as `payload_too_large` without being parsed:
/// stored raw (as BSON, with our fields around it) it could exceed MongoDB's 16 MiB document
/// limit, and a document the database refuses would stop the consumer at that offset forever.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
/// How much of an oversized payload its dead letter keeps: enough to see what it was.
pub const DEAD_LETTER_HEAD_BYTES: usize = 64 * 1024;

/// One record as read from a partition of one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset within the partition.
    pub offset: i64,
    /// Its value; `None` for a record without value (a tombstone), dead-lettered as
    /// `no_value`. Only the value's head when `oversized` is set.
    pub value: Option<Vec<u8>>,
    /// Set when the value was too large to be read whole (the Kafka side stops keeping a value
    /// past [`MAX_PAYLOAD_BYTES`]): it is dead-lettered as `payload_too_large` with `value` as
    /// its head.
    pub oversized: Option<Oversized>,
}

/// What is known of a value too large to be kept: its length and digest as far as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    /// Bytes read: the whole value when `complete`.
    pub len: u64,
    /// Lowercase hex SHA-256 of the bytes read.
    pub sha256: String,
    /// The value was read to its end (else reading stopped: corrupt or past the expansion
    /// limit of its batch).
    pub complete: bool,
}

/// The identity of one Kafka log: a topic deleted and recreated under the same name has a new
/// id, and is a new log whose offsets mean nothing for the old one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogId {
    /// The topic's name.
    pub topic: String,
    /// The topic's Kafka id, a UUID string.
    pub topic_id: String,
}

/// The bounds the engine works within. [`Limits::default`] is what production uses; tests
/// shrink them so the rules show up in small data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Records per step ([`MAX_STEP_MESSAGES`]).
    pub step_messages: usize,
    /// Payload bytes per step ([`MAX_STEP_BYTES`]).
    pub step_bytes: usize,
    /// The largest payload stored raw ([`MAX_PAYLOAD_BYTES`]).
    pub payload_bytes: usize,
    /// What a dead letter keeps of an oversized payload ([`DEAD_LETTER_HEAD_BYTES`]).
    pub head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            step_messages: MAX_STEP_MESSAGES,
            step_bytes: MAX_STEP_BYTES,
            payload_bytes: MAX_PAYLOAD_BYTES,
            head_bytes: DEAD_LETTER_HEAD_BYTES,
        }
    }
}

/// What one consumer is: which log, as which group, over which partitions, in windows of what
/// size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The log consumed.
    pub log: LogId,
    /// The consumer group: its committed offsets are the other half of where to resume.
    pub group: String,
    /// The partitions this consumer reads (sorted and deduplicated by [`Engine::resume`]).
    pub partitions: Vec<i32>,
    /// Valid messages per KPI window.
    pub window_size: NonZeroUsize,
    /// How many servers a window lists with their own KPIs (at most `window::MAX_LISTED`).
    pub servers_listed: usize,
    /// Step and payload bounds.
    pub limits: Limits,
    /// How windows become KPI windows: stored directly, or staged and published once their
    /// commit went through (group members).
    pub publication: Publication,
}

/// `{topic}/{topic_id}/{group}/{partitions}`: the consumer's window stream. Windows are
/// numbered within it, and a restart looks for its last window by it. `partitions` is written
/// as given, comma-separated; [`Engine::resume`] passes them sorted.
pub fn stream_name(log: &LogId, group: &str, partitions: &[i32]) -> String {
    let list = partitions
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    format!("{}/{}/{group}/{list}", log.topic, log.topic_id)
}

/// How many records from the front of `records` make the next step: at most
/// `limits.step_messages` records and `limits.step_bytes` payload bytes, but at least one
/// record (an oversized one makes a step of its own), and 0 only for no records.
pub fn step_len(records: &[Record], limits: &Limits) -> usize {
    let mut bytes = 0usize;
    for (i, r) in records.iter().enumerate() {
        if i >= limits.step_messages.max(1) {
            return i;
        }
        bytes = bytes.saturating_add(r.value.as_ref().map_or(0, Vec::len));
        if i > 0 && bytes > limits.step_bytes {
            return i;
        }
    }
    records.len()
}

/// Counters of one step, for logging; [`Counts::add`] sums them into totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records consumed (past the position of their partition).
    pub messages: u64,
    /// Valid messages stored raw now.
    pub stored: u64,
    /// Valid messages already stored from the same position: a re-read after a restart.
    pub replayed: u64,
    /// Records dead-lettered (invalid, duplicate events, refused, no value, too large).
    pub dead_lettered: u64,
    /// KPI windows stored now.
    pub windows: u64,
    /// Records ignored: below their partition's position (already consumed) or of a
    /// partition this consumer does not read.
    pub skipped: u64,
}

impl Counts {
    /// Adds `other` to these counters.
    pub fn add(&mut self, other: &Counts) {
        self.messages += other.messages;
        self.stored += other.stored;
        self.replayed += other.replayed;
        self.dead_lettered += other.dead_lettered;
        self.windows += other.windows;
        self.skipped += other.skipped;
    }
}

/// A window closed by a step and stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    /// Its `_id`, `{stream}#{seq}`.
    pub id: String,
    /// Its number within the stream.
    pub seq: i64,
    /// The KPIs.
    pub window: KpiWindow,
    /// Per partition, where a restart after this window resumes.
    pub next_offsets: Vec<(i32, i64)>,
    /// False if it was already stored (the stored copy was checked to end at the same offsets).
    pub new: bool,
}

/// The outcome of a commit a step took: `None` when none ended, else the offsets committed
/// or why the commit failed.
type CommitOutcome = Option<Result<Vec<(i32, i64)>, SinkError>>;

/// A commit started and not answered yet: what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    /// The offsets it commits.
    offsets: Vec<(i32, i64)>,
    /// The last staged window it covers ([`Publication::AfterCommit`]).
    through: Option<i64>,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// How many records from the front of the input this step took; hand the rest to the
    /// next step.
    pub consumed: usize,
    /// Counters for logging.
    pub counts: Counts,
    /// The windows this step stored as KPI windows, in order: those it closed, or, staged
    /// ([`Publication::AfterCommit`]), those its commit made publishable (with any earlier
    /// ones whose commit had failed).
    pub windows: Vec<ClosedWindow>,
    /// The offsets committed for the group, if a commit went through during the step (one
    /// started by an earlier step: commits run while the steps go on).
    pub committed: Option<Vec<(i32, i64)>>,
    /// A commit failed: nothing is lost (a restart resumes from the stored window), and the
    /// next window's commit covers these offsets.
    pub commit_error: Option<SinkError>,
}

impl StepReport {
    /// A report of no work: nothing consumed, counted, stored or committed.
    fn empty() -> StepReport {
        StepReport {
            consumed: 0,
            counts: Counts::default(),
            windows: Vec::new(),
            committed: None,
            commit_error: None,
        }
    }
}

/// Why a step or a resume failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// A sink call failed. Some of the step's writes may be stored; the engine is poisoned.
    Sink(SinkError),
    /// An earlier step failed, so this engine's in-memory state (open window, window numbers)
    /// may no longer match the store. Resume a new engine.
    Poisoned,
    /// A window of this stream was already stored with other offsets than this engine
    /// computed: another consumer writes the same stream, or the store lost windows. The
    /// engine is poisoned; a resumed engine continues after the stored window.
    Diverged {
        /// The stream.
        stream: String,
        /// What differs.
        detail: String,
    },
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Sink(e) => write!(f, "{e}"),
            EngineError::Poisoned => {
                write!(
                    f,
                    "an earlier step failed; resume the consumer from the store"
                )
            }
            EngineError::Diverged { stream, detail } => {
                write!(
                    f,
                    "window stream {stream} diverged from this consumer: {detail}"
                )
            }
        }
    }
}

impl std::error::Error for EngineError {}

impl From<SinkError> for EngineError {
    fn from(e: SinkError) -> Self {
        EngineError::Sink(e)
    }
}

/// The consumer's state between steps: positions, the open window, the next window number.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    stream: String,
    /// Next offset to read per partition; advanced only after a step's writes succeeded.
    positions: BTreeMap<i32, i64>,
    windows: TumblingWindows,
    next_seq: i64,
    /// [`Publication::AfterCommit`]: windows staged whose commit has not gone through yet (it
    /// is in flight, or it failed, e.g. Kafka was unreachable); the next commit that does
    /// covers them.
    unpublished: Vec<ClosedWindow>,
    /// [`Publication::Direct`]: the offsets of the last window stored, until a commit of them
    /// starts.
    uncommitted: Option<Vec<(i32, i64)>>,
    /// The commit started and not answered yet.
    in_flight: Option<InFlight>,
    /// The last window published whose staged copy (and those before it) is not forgotten
    /// yet, and how many such windows there are.
    published_staged: Option<i64>,
    published_staged_count: usize,
    /// A step failed part-way: the open window and the window numbers may not match the store.
    poisoned: bool,
}

impl Engine {
    /// The window stream, `{topic}/{topic_id}/{group}/{partitions}`.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The configuration, with partitions sorted.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Next offset to read per partition: where the caller fetches, and, compared with the
    /// log's end, whether the consumer has caught up.
    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    /// Valid messages in the open window; they are not stored if the run ends now, and are
    /// read and counted again by the next run.
    pub fn pending(&self) -> usize {
        self.windows.pending()
    }

    /// The number the next stored window gets.
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// Whether a step failed; a poisoned engine refuses further steps.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Moves a partition's position forward to `offset`, past offsets that hold nothing to
    /// read: control batches and compaction gaps after the last record a fetch returned, or
    /// records deleted by retention (the caller says which, and warns for the latter). Only
    /// forward: moving back would count offsets twice. Returns whether the position moved.
    pub fn advance_to(&mut self, partition: i32, offset: i64) -> bool {
        match self.positions.get_mut(&partition) {
            Some(at) if offset > *at => {
                debug!("partition {partition}: position {at} -> {offset} (no records between)");
                *at = offset;
                true
            }
            _ => false,
        }
    }

    /// Moves a partition's position back to `offset`, for a log truncated below it (what was
    /// counted there is gone from the log, and new records will take those offsets). Only on a
    /// freshly resumed engine: with messages in the open window, moving back could count them
    /// twice. Returns whether the position moved.
    pub fn rewind_to(&mut self, partition: i32, offset: i64) -> bool {
        if self.windows.pending() > 0
            || !self.unpublished.is_empty()
            || self.in_flight.is_some()
            || self.poisoned
        {
            return false;
        }
        match self.positions.get_mut(&partition) {
            Some(at) if offset < *at => {
                *at = offset;
                true
            }
            _ => false,
        }
    }

    /// Windows staged whose commit has not gone through yet.
    pub fn unpublished(&self) -> usize {
        self.unpublished.len()
    }

    /// Whether a commit was started and its outcome not taken yet.
    pub fn commit_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }
}

/// A sink must answer one outcome per document; anything else would pair outcomes with the
/// wrong records.
fn same_length(operation: &'static str, got: usize, sent: usize) -> Result<(), EngineError> {
    if got == sent {
        Ok(())
    } else {
        Err(EngineError::Sink(SinkError::new(
            operation,
            SinkErrorKind::Failed,
            format!("{got} outcomes for {sent} documents"),
        )))
    }
}
