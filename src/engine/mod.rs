//! The consumer's exactly-once protocol as a pure engine: records in, writes out through two
//! small traits ([`StoreSink`], [`OffsetCommitter`]), no Kafka, no MongoDB, no clock.
//!
//! Exactly-once windows without transactions:
//! - the consumer owns its positions: the caller fetches at [`Engine::positions`];
//! - every KPI window records, per partition, the next offset to read once it is stored;
//! - the group's offsets are committed only at window boundaries, so the messages of the open
//!   window are read again after a restart and counted then;
//! - a group member ([`Publication::AfterCommit`]) stages its windows, commits under its
//!   generation with a marker naming the last one, and publishes them only after the commit
//!   went through: the coordinator's refusal of a fenced member's commit is the fence, so a
//!   write that reaches the database after a rebalance never adds a window; a resumed engine
//!   first publishes the staged windows the committed markers name;
//! - a consumer nobody can take partitions from ([`Publication::Direct`], static assignment)
//!   stores its windows, then commits;
//! - a restart ([`Engine::resume`]) resumes at the group's commit where it carries a marker
//!   (no window lies past it), else at the later of the commit and the furthest stored window
//!   of the group on this log (a direct window may lie past a lost commit);
//! - re-read messages hit the unique index on `message_uuid` and are recognised as replays
//!   (same log and position), so nothing is stored twice; a `message_uuid` stored from another
//!   position, or from another log of the same name, is a duplicate event and is dead-lettered.
//!
//! Every write is idempotent by a unique key, so the process may die after any sink call: a
//! fresh engine resumed from what the store and the group hold repeats the unfinished step
//! and ends where an uninterrupted run would have. The property test in `property.rs` checks
//! exactly that with a crash injected between any two sink calls.

mod sink;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod property;
#[cfg(test)]
mod tests;

pub use sink::{
    parse_marker, staged_marker, window_id, Committed, DeadLetter, DeadLetterCode, DeadPayload,
    InsertOutcome, LastWindow, OffsetCommitter, Position, Publication, RawRecord, SinkError,
    StoreSink, StoredPosition, WindowOutcome, WindowRecord,
};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroUsize;

use log::{debug, info, warn};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::metric::{validate_record, Rejection, RejectionCode, ValidMetric};
use crate::window::{KpiWindow, TumblingWindows, WindowMessage};

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

/// The outcome of a commit a step tried: `None` when it had nothing to commit, else the
/// offsets committed or why the commit failed.
type CommitOutcome = Option<Result<Vec<(i32, i64)>, SinkError>>;

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
    /// The offsets committed for the group, if the step closed a window and the commit
    /// succeeded.
    pub committed: Option<Vec<(i32, i64)>>,
    /// The commit failed: nothing is lost (a restart resumes from the stored window), and the
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
    /// failed, e.g. Kafka was unreachable); the next commit that does covers them.
    unpublished: Vec<ClosedWindow>,
    /// The last window published whose staged copy (and those before it) is not forgotten
    /// yet, and how many such windows there are.
    published_staged: Option<i64>,
    published_staged_count: usize,
    /// A step failed part-way: the open window and the window numbers may not match the store.
    poisoned: bool,
}

impl Engine {
    /// Builds the engine where the last run left off: per partition the group's committed
    /// offset when it carries a marker (its committer published only behind its commits);
    /// else the later of the commit and the furthest stored window's next offset (this
    /// stream's last window and any window of the group on this log:
    /// [`StoreSink::furthest_positions`]); else `log_start` (the log's first offset, 0 when
    /// missing). A position below `log_start` (records deleted by retention before being read)
    /// moves up to it, with a warning.
    ///
    /// First, the staged windows the committed offsets' markers name are published, and their
    /// staged copies forgotten: their commit went through, so they are the group's windows,
    /// whoever staged them.
    pub fn resume<S, C>(
        mut config: EngineConfig,
        log_start: &HashMap<i32, i64>,
        store: &mut S,
        committer: &mut C,
    ) -> Result<Engine, EngineError>
    where
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
    {
        config.partitions.sort_unstable();
        config.partitions.dedup();
        let stream = stream_name(&config.log, &config.group, &config.partitions);
        let committed = committer.committed(&config.partitions)?;
        let mut markers: BTreeMap<&str, i64> = BTreeMap::new();
        for (token, seq) in committed
            .values()
            .filter_map(|c| parse_marker(c.marker.as_deref()?))
        {
            let through = markers.entry(token).or_insert(seq);
            *through = (*through).max(seq);
        }
        for (token, through) in markers {
            let published = store.publish_staged(token, through)?;
            store.drop_staged(token, through)?;
            if published > 0 {
                info!(
                    "published {published} staged window(s) of {token} up to {through}: their offsets were committed, their publication had not finished"
                );
            }
        }
        let last = store.last_window(&stream)?;
        // A commit with a marker was made by a consumer that publishes its windows only after
        // their commit: no window lies past it, and it alone says where the partition stands
        // (even below a window, after a log truncation). A commit without one (a consumer that
        // stores directly, or the version before markers) may have been lost after its window
        // was stored, and a partition without a commit may have windows all the same (Kafka
        // expires the offsets of a group idle for a week): those resume after the group's
        // furthest window on this log too.
        let authoritative = |p: &i32| committed.get(p).is_some_and(|c| c.marker.is_some());
        let unsure: Vec<i32> = config
            .partitions
            .iter()
            .copied()
            .filter(|p| !authoritative(p))
            .collect();
        let furthest = if unsure.is_empty() {
            HashMap::new()
        } else {
            store.furthest_positions(&config.log.topic_id, &config.group, &unsure)?
        };

        let mut positions = BTreeMap::new();
        for &p in &config.partitions {
            let from_window = if authoritative(&p) {
                None
            } else {
                last.as_ref()
                    .and_then(|l| l.next_offsets.get(&p).copied())
                    .max(furthest.get(&p).copied())
            };
            let from_group = committed.get(&p).map(|c| c.offset);
            let start = log_start.get(&p).copied().unwrap_or(0);
            let mut at = from_window.max(from_group).unwrap_or(start);
            if at < start {
                warn!(
                    "partition {p}: offsets {at}..{start} were deleted by retention before being read; starting at {start}"
                );
                at = start;
            }
            info!(
                "partition {p}: starting at offset {at} (committed {}, last window {})",
                from_group.map_or("none".into(), |o| o.to_string()),
                from_window.map_or("none".into(), |o| o.to_string()),
            );
            positions.insert(p, at);
        }
        let next_seq = last.as_ref().map_or(0, |l| l.seq.saturating_add(1));
        Ok(Engine {
            windows: TumblingWindows::new(config.window_size)
                .listing_servers(config.servers_listed),
            config,
            stream,
            positions,
            next_seq,
            unpublished: Vec::new(),
            published_staged: None,
            published_staged_count: 0,
            poisoned: false,
        })
    }

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
        if self.windows.pending() > 0 || !self.unpublished.is_empty() || self.poisoned {
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

    /// Commits the current positions, with no window to publish: after
    /// [`Engine::rewind_to`], so that a restart before the next window does not resume at the
    /// old position, past the new records the truncated log now holds there. A staging engine
    /// marks the commit (with no window, `#-1`) so that the commit alone counts.
    pub fn commit_positions<C>(&mut self, committer: &mut C) -> Result<(), SinkError>
    where
        C: OffsetCommitter + ?Sized,
    {
        let offsets: Vec<(i32, i64)> = self.positions.iter().map(|(p, o)| (*p, *o)).collect();
        let marker = match &self.config.publication {
            Publication::Direct => None,
            Publication::AfterCommit { token } => Some(staged_marker(token, -1)),
        };
        committer.commit(&offsets, marker.as_deref())
    }

    /// Processes one step: the first [`step_len`] records of `records` (consumption order;
    /// within a partition, increasing offsets). `arrival` is when they were fetched; it times
    /// the windows and stamps the documents.
    ///
    /// In order: validates each record once; stores the valid ones raw (one unordered insert);
    /// tells replays from duplicate events among those already stored; stores dead letters
    /// (one insert); counts the valid messages into the tumbling windows; stores the windows
    /// this step closed; advances the positions; commits the last closed window's next
    /// offsets. Records below their partition's position, or of a partition this consumer
    /// does not read, are skipped.
    ///
    /// On error nothing is advanced and the engine is poisoned: drop it and [`Engine::resume`]
    /// a new one (the real sinks only fail on a stop request or a permanent failure).
    pub fn step<S, C>(
        &mut self,
        records: &[Record],
        arrival: OffsetDateTime,
        store: &mut S,
        committer: &mut C,
    ) -> Result<StepReport, EngineError>
    where
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
    {
        if self.poisoned {
            return Err(EngineError::Poisoned);
        }
        let chunk = &records[..step_len(records, &self.config.limits)];
        // Poison first: an early return from `apply` leaves it set. The open window has taken
        // messages whose windows may or may not be stored.
        self.poisoned = true;
        let report = self.apply(chunk, arrival, store, committer)?;
        self.poisoned = false;
        Ok(report)
    }

    fn apply<S, C>(
        &mut self,
        chunk: &[Record],
        arrival: OffsetDateTime,
        store: &mut S,
        committer: &mut C,
    ) -> Result<StepReport, EngineError>
    where
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
    {
        let limits = self.config.limits;
        let log = &self.config.log;
        let position = |r: &Record| Position {
            topic: &log.topic,
            topic_id: &log.topic_id,
            partition: r.partition,
            offset: r.offset,
        };

        // Which records are new: past their partition's position, in order. A fetch may hand
        // back records before the offset asked for (a compressed batch starts where it
        // starts); those were consumed already.
        let mut end_positions = self.positions.clone();
        let mut admitted: Vec<&Record> = Vec::with_capacity(chunk.len());
        for r in chunk {
            if let Some(next) = end_positions.get_mut(&r.partition) {
                if r.offset >= *next {
                    *next = r.offset.saturating_add(1);
                    admitted.push(r);
                }
            }
        }
        let skipped = (chunk.len() - admitted.len()) as u64;

        // 1. Each record judged once.
        let mut fates: Vec<Fate> = admitted.iter().map(|r| judge(r, &limits)).collect();

        // 2. Raw documents, one unordered insert for the whole step.
        let valid: Vec<usize> = (0..fates.len())
            .filter(|&i| matches!(fates[i], Fate::Valid(_)))
            .collect();
        let outcomes = if valid.is_empty() {
            Vec::new()
        } else {
            let records: Vec<RawRecord> = valid
                .iter()
                .filter_map(|&i| match &fates[i] {
                    Fate::Valid(message) => Some(RawRecord {
                        message,
                        position: position(admitted[i]),
                        received_at: arrival,
                    }),
                    Fate::Dead(_) => None,
                })
                .collect();
            store.insert_raw(&records)?
        };
        same_length("raw insert", outcomes.len(), valid.len())?;

        // 3. Already stored: a replay of the same position, or a duplicate event.
        let already: Vec<usize> = valid
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == InsertOutcome::AlreadyStored)
            .map(|(&i, _)| i)
            .collect();
        let mut replayed = 0u64;
        if !already.is_empty() {
            let stored = {
                let uuids: Vec<&str> = already
                    .iter()
                    .filter_map(|&i| match &fates[i] {
                        Fate::Valid(v) => Some(v.message_uuid.as_str()),
                        Fate::Dead(_) => None,
                    })
                    .collect();
                store.stored_positions(&uuids)?
            };
            for &i in &already {
                let Fate::Valid(v) = &fates[i] else { continue };
                let here = position(admitted[i]);
                match stored.get(&v.message_uuid) {
                    Some(first) if !here.is(first) => {
                        fates[i] = Fate::Dead(Death::duplicate(first.clone()));
                    }
                    Some(_) => replayed += 1,
                    None => {
                        // Stored a moment ago, gone now (deleted by someone else). It was
                        // stored, so it is counted, as a replay would be.
                        warn!(
                            "partition {} offset {}: message_uuid {} was reported stored but cannot be found",
                            here.partition, here.offset, v.message_uuid
                        );
                        replayed += 1;
                    }
                }
            }
        }
        let mut stored_now = 0u64;
        for (&i, outcome) in valid.iter().zip(&outcomes) {
            match outcome {
                InsertOutcome::Inserted => stored_now += 1,
                InsertOutcome::AlreadyStored => {}
                InsertOutcome::Refused(why) => {
                    fates[i] = Fate::Dead(Death::rejected(Rejection::new(
                        RejectionCode::RejectedByDatabase,
                        format!("the database refused the document: {why}"),
                    )));
                }
            }
        }

        // 4. Dead letters, also in one write.
        let dead = {
            let letters: Vec<DeadLetter> = fates
                .iter()
                .zip(&admitted)
                .filter_map(|(fate, r)| match fate {
                    Fate::Dead(d) => Some(d.letter(r, position(r), arrival)),
                    Fate::Valid(_) => None,
                })
                .collect();
            if !letters.is_empty() {
                store.insert_dead_letters(&letters)?;
            }
            for l in &letters {
                warn!(
                    "dead-lettered partition {} offset {} ({}): {}",
                    l.position.partition,
                    l.position.offset,
                    l.code.as_str(),
                    l.reason
                );
            }
            letters.len() as u64
        };

        // 5. Windows, in consumption order; each records where a restart resumes: one past
        //    every record consumed before the message that closed it, on every partition.
        let mut at = self.positions.clone();
        let mut closed: Vec<(KpiWindow, Vec<(i32, i64)>)> = Vec::new();
        for (r, fate) in admitted.iter().zip(&fates) {
            at.insert(r.partition, r.offset.saturating_add(1));
            let Fate::Valid(v) = fate else { continue };
            debug!(
                "partition {} offset {}: {} counted",
                r.partition, r.offset, v.server_id
            );
            let member = WindowMessage {
                server_id: v.server_id.clone(),
                timestamp: v.timestamp,
                metrics: v.metrics,
                partition: r.partition,
                offset: r.offset,
            };
            if let Some(w) = self.windows.push(member, arrival) {
                closed.push((w, at.iter().map(|(p, o)| (*p, *o)).collect()));
            }
        }

        // 6. The windows closed in this step: stored, or (group members) staged.
        let records: Vec<WindowRecord> = closed
            .iter()
            .zip(self.next_seq..)
            .map(|((window, next_offsets), seq)| WindowRecord {
                window,
                stream: &self.stream,
                seq,
                topic: &log.topic,
                topic_id: &log.topic_id,
                group: &self.config.group,
                next_offsets,
            })
            .collect();
        let window_outcomes = match (&self.config.publication, records.is_empty()) {
            (_, true) => Vec::new(),
            (Publication::Direct, false) => store.insert_windows(&records)?,
            (Publication::AfterCommit { token }, false) => {
                store.stage_windows(token, &records)?;
                vec![WindowOutcome::Inserted; records.len()]
            }
        };
        drop(records);
        same_length("window insert", window_outcomes.len(), closed.len())?;
        if self.config.publication == Publication::Direct
            && window_outcomes.contains(&WindowOutcome::AlreadyStored)
        {
            // A fresh engine resumes after the last stored window, so it never meets one of
            // its own windows stored already, unless someone else writes this stream.
            self.check_last_window(store, &closed)?;
        }

        // 7. All writes succeeded: advance.
        let mut windows = Vec::with_capacity(closed.len());
        for ((window, next_offsets), (seq, outcome)) in closed
            .into_iter()
            .zip((self.next_seq..).zip(window_outcomes))
        {
            windows.push(ClosedWindow {
                id: window_id(&self.stream, seq),
                seq,
                window,
                next_offsets,
                new: outcome == WindowOutcome::Inserted,
            });
        }
        self.next_seq += windows.len() as i64;
        self.positions = end_positions;

        // 8. Commit what the windows cover. Stored directly, a failed commit loses nothing:
        //    the positions are in the last window, which a restart reads. Staged, the windows
        //    wait for a commit that goes through, and are published after it.
        let mut committed = None;
        let mut commit_error = None;
        let windows = match self.config.publication.clone() {
            Publication::Direct => {
                if let Some(last) = windows.last() {
                    match committer.commit(&last.next_offsets, None) {
                        Ok(()) => committed = Some(last.next_offsets.clone()),
                        // Reported to the caller, which knows what the failure means (a lost
                        // connection, or a group member fenced out) and says so once.
                        Err(e) => commit_error = Some(e),
                    }
                }
                windows
            }
            Publication::AfterCommit { token } => {
                self.unpublished.extend(windows);
                let (published, outcome) = self.commit_and_publish(&token, store, committer)?;
                match outcome {
                    Some(Ok(offsets)) => committed = Some(offsets),
                    Some(Err(e)) => commit_error = Some(e),
                    None => {}
                }
                published
            }
        };
        windows.iter().for_each(log_window);

        Ok(StepReport {
            consumed: chunk.len(),
            counts: Counts {
                messages: admitted.len() as u64,
                stored: stored_now,
                replayed,
                dead_lettered: dead,
                windows: windows.iter().filter(|w| w.new).count() as u64,
                skipped,
            },
            windows,
            committed,
            commit_error,
        })
    }

    /// Commits the offsets the staged windows end at, with the marker of the last one, and
    /// publishes them once the commit went through. Returns the windows published and the
    /// commit's outcome (`None`: no window waits). A refused commit leaves them staged: a
    /// member fenced out never publishes them (the partitions' next owner counts their
    /// messages from the committed offsets), and after another failure the next commit that
    /// goes through covers them.
    fn commit_and_publish<S, C>(
        &mut self,
        token: &str,
        store: &mut S,
        committer: &mut C,
    ) -> Result<(Vec<ClosedWindow>, CommitOutcome), EngineError>
    where
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
    {
        let Some(last) = self.unpublished.last() else {
            return Ok((Vec::new(), None));
        };
        let offsets = last.next_offsets.clone();
        let marker = staged_marker(token, last.seq);
        match committer.commit(&offsets, Some(&marker)) {
            Ok(()) => Ok((self.publish(store)?, Some(Ok(offsets)))),
            Err(e) => Ok((Vec::new(), Some(Err(e)))),
        }
    }

    /// Windows staged whose commit has not gone through yet.
    pub fn unpublished(&self) -> usize {
        self.unpublished.len()
    }

    /// Forgets the staged copies of the windows this engine published. Called in batches
    /// while it runs and when it is retired (a rebalance, a stop); copies a killed engine left
    /// are forgotten by whoever resumes its partitions, from its commit's marker.
    pub fn forget_published<S: StoreSink + ?Sized>(
        &mut self,
        store: &mut S,
    ) -> Result<(), EngineError> {
        if let (Publication::AfterCommit { token }, Some(through)) =
            (&self.config.publication, self.published_staged)
        {
            store.drop_staged(token, through)?;
            self.published_staged = None;
            self.published_staged_count = 0;
        }
        Ok(())
    }

    /// Tries again the commit of the windows staged since the last commit that went through,
    /// and publishes them if it goes through now: called when no step comes to do it (the
    /// stream went quiet, the run is about to end) or before reading more while too many
    /// wait. The report's `committed` and `commit_error` say how it went; `consumed` is 0.
    pub fn publish_pending<S, C>(
        &mut self,
        store: &mut S,
        committer: &mut C,
    ) -> Result<StepReport, EngineError>
    where
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
    {
        if self.poisoned {
            return Err(EngineError::Poisoned);
        }
        let Publication::AfterCommit { token } = self.config.publication.clone() else {
            return Ok(StepReport::empty());
        };
        self.poisoned = true;
        let (windows, outcome) = self.commit_and_publish(&token, store, committer)?;
        self.poisoned = false;
        windows.iter().for_each(log_window);
        let mut report = StepReport::empty();
        report.counts.windows = windows.iter().filter(|w| w.new).count() as u64;
        report.windows = windows;
        match outcome {
            Some(Ok(offsets)) => report.committed = Some(offsets),
            Some(Err(e)) => report.commit_error = Some(e),
            None => {}
        }
        Ok(report)
    }

    /// Publishes the staged windows whose commit just went through, in order (their staged
    /// copies are forgotten in batches, [`Engine::forget_published`]). One already stored was published by a member that resumed these
    /// partitions from the commit's marker: the same window, from the same staged copy.
    fn publish<S: StoreSink + ?Sized>(
        &mut self,
        store: &mut S,
    ) -> Result<Vec<ClosedWindow>, EngineError> {
        let Some(through) = self.unpublished.last().map(|w| w.seq) else {
            return Ok(Vec::new());
        };
        let outcomes = {
            let records: Vec<WindowRecord> = self
                .unpublished
                .iter()
                .map(|w| WindowRecord {
                    window: &w.window,
                    stream: &self.stream,
                    seq: w.seq,
                    topic: &self.config.log.topic,
                    topic_id: &self.config.log.topic_id,
                    group: &self.config.group,
                    next_offsets: &w.next_offsets,
                })
                .collect();
            store.insert_windows(&records)?
        };
        same_length("window insert", outcomes.len(), self.unpublished.len())?;
        // Their staged copies are forgotten in batches: on FerretDB a delete costs about as
        // much as inserting a step's windows, whatever it deletes.
        self.published_staged = Some(through);
        self.published_staged_count += outcomes.len();
        if self.published_staged_count >= FORGET_STAGED_EVERY {
            self.forget_published(store)?;
        }
        Ok(self
            .unpublished
            .drain(..)
            .zip(outcomes)
            .map(|(mut w, outcome)| {
                w.new = outcome == WindowOutcome::Inserted;
                w
            })
            .collect())
    }

    /// Some window of this step was already stored: accept it only if the stream's last
    /// stored window is this step's last one and ends at the same offsets, so what follows
    /// continues where the store says.
    fn check_last_window<S: StoreSink + ?Sized>(
        &self,
        store: &mut S,
        closed: &[(KpiWindow, Vec<(i32, i64)>)],
    ) -> Result<(), EngineError> {
        let seq = self.next_seq + closed.len() as i64 - 1;
        let ours: BTreeMap<i32, i64> = closed
            .last()
            .map(|(_, offsets)| offsets.iter().copied().collect())
            .unwrap_or_default();
        match store.last_window(&self.stream)? {
            Some(last) if last.seq == seq && last.next_offsets == ours => Ok(()),
            Some(last) => Err(EngineError::Diverged {
                stream: self.stream.clone(),
                detail: format!(
                    "window {seq} ends at {ours:?} here, the stored last window {} ends at {:?}",
                    last.seq, last.next_offsets
                ),
            }),
            None => Err(EngineError::Diverged {
                stream: self.stream.clone(),
                detail: format!("window {seq} was reported stored but the stream has none"),
            }),
        }
    }
}

/// What a step decided about one record.
enum Fate {
    /// Valid: stored raw now, or already stored from this position.
    Valid(ValidMetric),
    /// Dead-lettered.
    Dead(Death),
}

/// Why a record is dead-lettered, and what of its payload is kept.
struct Death {
    code: DeadLetterCode,
    reason: String,
    kept: Kept,
    duplicate_of: Option<StoredPosition>,
}

enum Kept {
    /// The value as it is (none for a record without value).
    Whole,
    /// The first `head` bytes; `len` and `sha256` describe the whole payload.
    Truncated {
        head: usize,
        len: usize,
        sha256: String,
    },
}

impl Death {
    fn rejected(r: Rejection) -> Self {
        Death {
            code: DeadLetterCode::Rejected(r.code),
            reason: r.reason,
            kept: Kept::Whole,
            duplicate_of: None,
        }
    }

    fn duplicate(first: StoredPosition) -> Self {
        // The reason stays the documented constant; `duplicate_of` says where the first copy is.
        let reason = Rejection::duplicate().reason;
        Death {
            code: DeadLetterCode::Rejected(RejectionCode::DuplicateMessageUuid),
            reason,
            kept: Kept::Whole,
            duplicate_of: Some(first),
        }
    }

    fn letter<'a>(
        &'a self,
        record: &'a Record,
        position: Position<'a>,
        received_at: OffsetDateTime,
    ) -> DeadLetter<'a> {
        let payload = match (&self.kept, record.value.as_deref()) {
            (_, None) => DeadPayload::Missing,
            (Kept::Whole, Some(bytes)) => DeadPayload::Whole(bytes),
            (Kept::Truncated { head, len, sha256 }, Some(bytes)) => DeadPayload::Truncated {
                head: bytes.get(..*head).unwrap_or(bytes),
                len: *len,
                sha256,
            },
        };
        DeadLetter {
            code: self.code,
            reason: &self.reason,
            payload,
            position,
            received_at,
            duplicate_of: self.duplicate_of.as_ref(),
        }
    }
}

/// The verdict on one record that needs no database: too large, or what validation says
/// (a record without value is refused there as `no_value`).
fn judge(record: &Record, limits: &Limits) -> Fate {
    let value = record.value.as_deref();
    if let Some(o) = &record.oversized {
        let head = head_len(value.unwrap_or_default(), limits.head_bytes);
        let size = if o.complete {
            format!("payload of {} bytes", o.len)
        } else {
            format!("payload of more than {} bytes (read that far)", o.len)
        };
        return Fate::Dead(Death {
            code: DeadLetterCode::PayloadTooLarge,
            reason: format!(
                "{size} is larger than the {} bytes stored raw; kept its first {head} bytes and the SHA-256 of what was read",
                limits.payload_bytes
            ),
            kept: Kept::Truncated {
                head,
                len: usize::try_from(o.len).unwrap_or(usize::MAX),
                sha256: o.sha256.clone(),
            },
            duplicate_of: None,
        });
    }
    if let Some(payload) = value.filter(|p| p.len() > limits.payload_bytes) {
        let head = head_len(payload, limits.head_bytes);
        return Fate::Dead(Death {
            code: DeadLetterCode::PayloadTooLarge,
            reason: format!(
                "payload of {} bytes is larger than the {} bytes stored raw; kept its first {head} bytes and its SHA-256",
                payload.len(),
                limits.payload_bytes
            ),
            kept: Kept::Truncated {
                head,
                len: payload.len(),
                sha256: sha256_hex(payload),
            },
            duplicate_of: None,
        });
    }
    match validate_record(value) {
        Ok(v) => Fate::Valid(v),
        Err(r) => Fate::Dead(Death::rejected(r)),
    }
}

/// How many leading bytes of an oversized payload to keep: at most `max`, cut back to a
/// character boundary when the payload is UTF-8, so the kept head is still readable text.
fn head_len(payload: &[u8], max: usize) -> usize {
    let head = &payload[..max.min(payload.len())];
    match std::str::from_utf8(head) {
        Ok(_) => head.len(),
        // Only the last character is cut: keep what comes before it.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        // Not UTF-8 anyway: it is kept as binary, byte for byte.
        Err(_) => head.len(),
    }
}

/// Lowercase hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut hex, b| {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// A sink must answer one outcome per document; anything else would pair outcomes with the
/// wrong records.
fn same_length(operation: &'static str, got: usize, sent: usize) -> Result<(), EngineError> {
    if got == sent {
        Ok(())
    } else {
        Err(EngineError::Sink(SinkError {
            operation,
            detail: format!("{got} outcomes for {sent} documents"),
        }))
    }
}

fn log_window(w: &ClosedWindow) {
    if !w.new {
        info!("window {} was already stored (replayed)", w.id);
        return;
    }
    let k = &w.window;
    info!(
        "window {} stored: {} messages in {:.1} s ({}), cpu {:.2} %, mem {:.2} %, disk {:.2} MB/s, \
         net {:.2} Mbps, errors {}, alerts {}",
        w.seq,
        k.message_count,
        k.duration_s,
        k.messages_per_second
            .map_or("rate n/a".to_string(), |r| format!("{r:.2} msg/s")),
        k.totals.avg_cpu_percent,
        k.totals.avg_memory_percent,
        k.totals.avg_disk_io_mbps,
        k.totals.avg_network_mbps,
        k.totals.total_error_count,
        k.alerts.len() + k.alerts_omitted
    );
}
