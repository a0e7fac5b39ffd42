//! `metricsctl consume`: Kafka -> validate -> raw store and tumbling windows -> KPI store.
//!
//! Exactly-once windows without transactions:
//! - the consumer owns its positions: it fetches at explicit offsets per partition;
//! - every KPI document records, per partition, the next offset to read once it is stored;
//! - a restart resumes from the later of the group's committed offsets and the positions in
//!   the last stored window of this consumer's stream (topic, group, partition set);
//! - the group's offsets are committed only at window boundaries, after the window is stored,
//!   so the messages of the open window are read again after a restart and counted then;
//! - re-read messages hit the unique index on `message_uuid` and are recognised as replays
//!   (same Kafka position), so nothing is stored twice; a `message_uuid` stored from another
//!   position is a duplicate event and goes to the dead-letter collection.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use time::OffsetDateTime;

use super::{now_utc, CommandError};
use crate::cli::ConsumeArgs;
use crate::kafka::{
    Fetched, FetchedRecord, GroupMember, GroupTimeouts, KafkaError, KafkaSource, TopicInfo,
};
use crate::metric::{validate_record, Rejection, RejectionCode, ValidMetric};
use crate::redact::redact_uri;
use crate::retry::Backoff;
use crate::settings::{ConsumeSettings, SettingError, Sources};
use crate::shutdown::Shutdown;
use crate::store::{
    CollectionNames, DeadLetter, InsertOutcome, Position, RawRecord, Store, StoreError,
    StoredPosition, WindowRecord,
};
use crate::window::{KpiWindow, TumblingWindows, WindowMessage};

/// The most messages one processing step holds.
const STEP_MESSAGES: usize = 2_000;
/// The most payload bytes one processing step holds (a single larger message is a step alone).
const STEP_BYTES: usize = 4 * 1024 * 1024;

/// Splits fetched records into steps of at most `STEP_MESSAGES` messages and `STEP_BYTES`.
fn steps(records: &[FetchedRecord]) -> Vec<&[FetchedRecord]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, r) in records.iter().enumerate() {
        let size = r.value.as_ref().map_or(0, Vec::len);
        if i > start && (i - start >= STEP_MESSAGES || bytes + size > STEP_BYTES) {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// Group timeouts: a member silent for `session` is removed and its partitions move; members
/// get `rebalance` to rejoin during a rebalance.
const GROUP_TIMEOUTS: GroupTimeouts = GroupTimeouts {
    session: Duration::from_secs(10),
    rebalance: Duration::from_secs(30),
};

/// How often the throughput line is logged.
const THROUGHPUT_EVERY: Duration = Duration::from_secs(10);

/// Why a loop stopped before finishing what it held.
enum Stop {
    Shutdown,
    Fatal(CommandError),
}

/// Errors that retrying cannot fix end the command instead of looping forever.
trait Retryable: Display {
    fn permanent(&self) -> bool {
        false
    }
}

impl Retryable for KafkaError {}

impl Retryable for StoreError {
    fn permanent(&self) -> bool {
        self.permanent
    }
}

/// Runs `op` until it succeeds, backing off between failures, logging each failure at ERROR and
/// the recovery at INFO. Gives up only on a stop request or a permanent error.
fn retry<T, E: Retryable>(
    what: &str,
    shutdown: &Shutdown,
    mut op: impl FnMut() -> Result<T, E>,
) -> Result<T, Stop> {
    let mut backoff = Backoff::standard();
    loop {
        match op() {
            Ok(v) => {
                if backoff.failures() > 0 {
                    info!(
                        "{what}: recovered after {} failed attempts",
                        backoff.failures()
                    );
                }
                return Ok(v);
            }
            Err(e) if e.permanent() => {
                return Err(Stop::Fatal(CommandError::Failed(format!(
                    "{e}; check MONGODB_URI (user, password, options)"
                ))))
            }
            Err(e) => {
                let delay = backoff.next_delay();
                error!("{e}; {what}: retrying in {:.1} s", delay.as_secs_f64());
                if !shutdown.sleep(delay) {
                    return Err(Stop::Shutdown);
                }
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    messages: u64,
    stored: u64,
    replayed: u64,
    dead_lettered: u64,
    windows: u64,
    batches: u64,
}

/// The consumer's state between batches.
struct Pipeline<'a> {
    settings: &'a ConsumeSettings,
    store: &'a Store,
    source: KafkaSource,
    shutdown: &'a Shutdown,
    /// Group membership; `None` with `--partitions` (static assignment).
    member: Option<GroupMember>,
    /// The topic's incarnation being read, and its id as documents record it.
    topic: TopicInfo,
    topic_id: String,
    /// The partitions this consumer reads: its assignment.
    assigned: Vec<i32>,
    stream: String,
    /// Next offset to read per partition.
    positions: BTreeMap<i32, i64>,
    /// The latest high watermark seen per partition.
    high_watermarks: HashMap<i32, i64>,
    windows: TumblingWindows,
    next_seq: i64,
    totals: Counters,
    interval: Counters,
    committed: Option<Vec<(i32, i64)>>,
}

pub fn run(args: &ConsumeArgs) -> Result<(), CommandError> {
    let settings = ConsumeSettings::resolve(args, &Sources::load()?)?;
    let shutdown = Shutdown::install().map_err(CommandError::Failed)?;
    let names = CollectionNames {
        raw: settings.raw_collection.clone(),
        kpi: settings.kpi_collection.clone(),
        dlq: settings.dlq_collection.clone(),
    };
    let store = Store::open(&settings.mongo, &names).map_err(|e| {
        CommandError::Setting(SettingError {
            setting: "MONGODB_URI".into(),
            problem: e.detail.clone(),
        })
    })?;
    info!(
        "consuming topic {} as group {} from {} into {} database {} ({}, {}, {}); windows of {} messages",
        settings.topic,
        settings.group,
        settings.brokers.join(","),
        redact_uri(&settings.mongo.uri),
        settings.mongo.database,
        names.raw,
        names.kpi,
        names.dlq,
        settings.window_size
    );
    let mut pipeline = match Pipeline::start(&settings, &store, &shutdown) {
        Ok(p) => p,
        Err(Stop::Shutdown) => {
            info!("stopped before consuming anything");
            return Ok(());
        }
        Err(Stop::Fatal(e)) => return Err(e),
    };
    let outcome = pipeline.run();
    pipeline.log_totals();
    // Leaving hands our partitions to the other members at once instead of after the session
    // timeout.
    if let Some(member) = pipeline.member.as_mut() {
        member.leave();
    }
    match outcome {
        Ok(()) | Err(Stop::Shutdown) => Ok(()),
        Err(Stop::Fatal(e)) => Err(e),
    }
}

impl<'a> Pipeline<'a> {
    /// Finds the topic, the indexes and where to resume.
    fn start(
        settings: &'a ConsumeSettings,
        store: &'a Store,
        shutdown: &'a Shutdown,
    ) -> Result<Self, Stop> {
        let mut source = KafkaSource::new(
            settings.brokers.clone(),
            settings.topic.clone(),
            settings.group.clone(),
            shutdown.clone(),
        );
        retry("database ping", shutdown, || store.ping())?;
        retry("creating indexes", shutdown, || store.ensure_indexes())?;
        let topic = retry("reading topic metadata", shutdown, || source.open())?;
        let member = match &settings.partitions {
            Some(_) => {
                refuse_shared_partitions(settings, &mut source, shutdown)?;
                None
            }
            None => Some(GroupMember::new(
                settings.brokers.clone(),
                settings.topic.clone(),
                settings.group.clone(),
                GROUP_TIMEOUTS,
                shutdown.clone(),
            )),
        };
        let mut pipeline = Pipeline {
            settings,
            store,
            source,
            shutdown,
            member,
            topic: topic.clone(),
            topic_id: String::new(),
            assigned: Vec::new(),
            stream: String::new(),
            positions: BTreeMap::new(),
            high_watermarks: HashMap::new(),
            windows: TumblingWindows::new(settings.window_size),
            next_seq: 0,
            totals: Counters::default(),
            interval: Counters::default(),
            committed: None,
        };
        pipeline.assign(topic)?;
        Ok(pipeline)
    }

    /// Takes this consumer's partitions of `topic`: by joining the group (its share of the
    /// partitions), or the `--partitions` named, then finds where each resumes.
    fn assign(&mut self, topic: TopicInfo) -> Result<(), Stop> {
        let settings = self.settings;
        let shutdown = self.shutdown;
        let assigned = match self.member.as_mut() {
            Some(member) => {
                let partitions = retry("joining the consumer group", shutdown, || member.join())?;
                self.source.set_generation(member.generation());
                partitions
            }
            None => {
                let wanted = settings.partitions.clone().unwrap_or_default();
                if let Some(missing) = wanted.iter().find(|p| !topic.partitions.contains(p)) {
                    return Err(Stop::Fatal(CommandError::Setting(SettingError {
                        setting: "--partitions (KAFKA_PARTITIONS)".into(),
                        problem: format!(
                            "topic {} has no partition {missing} (it has {}); name existing partitions",
                            settings.topic,
                            join(&topic.partitions)
                        ),
                    })));
                }
                wanted
            }
        };
        self.topic = topic;
        self.assigned = assigned;
        self.begin_log()
    }

    /// The group is rebalancing, or this member lost its generation: the open window is
    /// dropped (its messages are stored raw and will be counted by whoever owns their
    /// partitions next, from the last stored window on), then the member rejoins.
    fn rebalance(&mut self) -> Result<(), Stop> {
        info!(
            "group {}: rebalancing; dropping the open window of {} messages (read again from \
             the last stored window by the partitions' next owner)",
            self.settings.group,
            self.windows.pending()
        );
        self.source.set_generation(None);
        let topic = self.topic.clone();
        self.assign(topic)
    }

    /// Starts reading one incarnation of the topic: its partitions, its window stream, and for
    /// each partition the later of the group's committed offset and the last stored window's
    /// position, else the log's start.
    fn begin_log(&mut self) -> Result<(), Stop> {
        let settings = self.settings;
        let shutdown = self.shutdown;
        let partitions = self.assigned.clone();
        self.topic_id = self.topic.topic_id.to_string();
        // The topic id makes a re-created topic a new stream: its windows, positions and dead
        // letters never collide with the old log's.
        self.stream = format!(
            "{}/{}/{}/{}",
            settings.topic,
            self.topic_id,
            settings.group,
            join(&partitions)
        );
        let store = self.store;
        let stream = self.stream.clone();
        let topic_id = self.topic_id.clone();
        let last = retry("reading the last window", shutdown, || {
            store.last_window(&stream)
        })?;
        // Windows of other streams (other members, earlier assignments) may have covered these
        // partitions too; resume after the furthest of them.
        let stored = retry("reading window positions", shutdown, || {
            store.resume_positions(&topic_id, &settings.group, &partitions)
        })?;
        let source = &mut self.source;
        let committed = retry("fetching committed offsets", shutdown, || {
            source.committed_offsets(&partitions)
        })?;
        let bounds = retry("listing offsets", shutdown, || {
            source.offset_bounds(&partitions)
        })?;

        self.positions.clear();
        self.high_watermarks.clear();
        for &p in &partitions {
            let from_window = stored.get(&p).copied();
            let from_group = committed.get(&p).copied();
            let (earliest, latest) = bounds.get(&p).copied().unwrap_or((0, 0));
            let mut at = from_window.max(from_group).unwrap_or(earliest);
            if at < earliest {
                warn!(
                    "partition {p}: offsets {at}..{earliest} were deleted by retention before being read; starting at {earliest}"
                );
                at = earliest;
            }
            info!(
                "partition {p}: starting at offset {at} (committed {}, last window {}, log {earliest}..{latest})",
                from_group.map_or("none".into(), |o| o.to_string()),
                from_window.map_or("none".into(), |o| o.to_string()),
            );
            self.positions.insert(p, at);
            self.high_watermarks.insert(p, latest);
        }
        self.next_seq = last.as_ref().map_or(0, |l| l.seq + 1);
        if self.member.is_some() && partitions.is_empty() {
            info!(
                "no partition assigned: the group has more members than topic {} has partitions; \
                 waiting for a rebalance",
                settings.topic
            );
        }
        self.windows = TumblingWindows::new(settings.window_size);
        Ok(())
    }

    /// The topic was deleted and created again while we read it: the old log is gone, so its
    /// open window can never be completed; the new log is read from its start.
    fn follow_new_log(&mut self, topic: TopicInfo) -> Result<(), Stop> {
        warn!(
            "topic {} was re-created (id {} -> {}): reading the new log from its start; the open \
             window's {} messages of the old log are stored raw but will be in no window",
            self.settings.topic,
            self.topic_id,
            topic.topic_id,
            self.windows.pending()
        );
        self.source.follow(&topic);
        if let Some(member) = self.member.as_ref() {
            // The new topic may have other partitions: the group leader assigns them afresh.
            member.request_rejoin();
            self.topic = topic;
            return Ok(());
        }
        self.assign(topic)
    }

    /// True when every position has reached its partition's high watermark.
    fn caught_up(&self) -> bool {
        self.positions
            .iter()
            .all(|(p, at)| self.high_watermarks.get(p).is_none_or(|hw| at >= hw))
    }

    fn run(&mut self) -> Result<(), Stop> {
        let mut idle_since = Instant::now();
        let mut last_report = Instant::now();
        let mut backoff = Backoff::standard();
        loop {
            if last_report.elapsed() >= THROUGHPUT_EVERY {
                self.log_throughput(last_report.elapsed());
                last_report = Instant::now();
            }
            if self.shutdown.requested() {
                return Err(Stop::Shutdown);
            }
            let remaining = self
                .settings
                .max_messages
                .map(|max| max.saturating_sub(self.totals.messages));
            if remaining == Some(0) {
                info!(
                    "read {} messages (--max-messages): stopping",
                    self.totals.messages
                );
                return Ok(());
            }
            // Idle means caught up: every partition read to its high watermark, and nothing new
            // for the whole period since the last processing ended.
            if let Some(idle) = self.settings.exit_when_idle {
                if idle_since.elapsed() >= idle && self.caught_up() {
                    info!(
                        "caught up and no new messages for {} s: stopping",
                        idle.as_secs_f64()
                    );
                    return Ok(());
                }
            }

            if self.member.as_ref().is_some_and(GroupMember::rejoin_needed) {
                self.rebalance()?;
                idle_since = Instant::now();
                continue;
            }
            if self.positions.is_empty() {
                // No partition assigned: nothing to fetch until the group rebalances.
                if !self.shutdown.sleep(Duration::from_millis(500)) {
                    return Err(Stop::Shutdown);
                }
                continue;
            }
            let request: Vec<(i32, i64)> = self.positions.iter().map(|(p, o)| (*p, *o)).collect();
            let fetched = match self.source.fetch(&request) {
                Ok(f) => {
                    if backoff.failures() > 0 {
                        info!(
                            "kafka fetch: recovered after {} failed attempts",
                            backoff.failures()
                        );
                        backoff.reset();
                    }
                    f
                }
                Err(_) if self.shutdown.requested() => return Err(Stop::Shutdown),
                Err(e) => {
                    let delay = backoff.next_delay();
                    error!(
                        "{e}; retrying in {:.1} s (no offset advanced)",
                        delay.as_secs_f64()
                    );
                    if !self.shutdown.sleep(delay) {
                        return Err(Stop::Shutdown);
                    }
                    // An outage is not idleness.
                    idle_since = Instant::now();
                    continue;
                }
            };
            let arrival = now_utc();
            let parts = match fetched {
                Fetched::Data(parts) => parts,
                Fetched::TopicChanged(topic) => {
                    self.follow_new_log(topic)?;
                    idle_since = Instant::now();
                    continue;
                }
            };

            let mut records: Vec<FetchedRecord> = Vec::new();
            let mut next_offsets: Vec<(i32, i64)> = Vec::new();
            for part in parts {
                if let Some(hw) = part.high_watermark {
                    self.high_watermarks.insert(part.partition, hw);
                }
                next_offsets.push((part.partition, part.next_offset));
                records.extend(part.records);
            }
            let truncated = match remaining {
                Some(n) if (records.len() as u64) > n => {
                    records.truncate(usize::try_from(n).unwrap_or(usize::MAX));
                    true
                }
                _ => false,
            };
            // Bounded steps: whatever one fetch returned, a step stores and commits at most
            // STEP_MESSAGES messages or STEP_BYTES of payload, so a consumer killed often still
            // advances and memory stays flat.
            for step in steps(&records) {
                if self.member.as_ref().is_some_and(GroupMember::rejoin_needed) {
                    break;
                }
                self.process(step, arrival)?;
            }
            if !records.is_empty() {
                idle_since = Instant::now();
            }
            // Past control batches, compaction gaps and resets; not past what --max-messages
            // left unread.
            if !truncated {
                for (p, next) in next_offsets {
                    self.positions.insert(p, next);
                }
            }
        }
    }

    /// Stores one fetched batch: raw documents, dead letters, then the windows it closes, then
    /// the offsets those windows cover.
    fn process(&mut self, messages: &[FetchedRecord], arrival: OffsetDateTime) -> Result<(), Stop> {
        let topic = self.settings.topic.as_str();
        let topic_id = self.topic_id.as_str();
        let position = |m: &FetchedRecord| Position {
            topic,
            topic_id,
            partition: m.partition,
            offset: m.offset,
        };
        let mut verdicts: Vec<Result<ValidMetric, Rejection>> = messages
            .iter()
            .map(|m| validate_record(m.value.as_deref()))
            .collect();
        let mut duplicate_of: HashMap<usize, StoredPosition> = HashMap::new();

        // 1. Raw documents, one unordered insert for the whole batch.
        let valid: Vec<usize> = (0..messages.len())
            .filter(|i| verdicts[*i].is_ok())
            .collect();
        let outcomes = {
            let records: Vec<RawRecord> = valid
                .iter()
                .filter_map(|&i| {
                    verdicts[i].as_ref().ok().map(|message| RawRecord {
                        message,
                        position: position(&messages[i]),
                        received_at: arrival,
                    })
                })
                .collect();
            retry("storing raw metrics", self.shutdown, || {
                self.store.insert_raw(&records)
            })?
        };

        // 2. Already stored: a replay of the same position, or a duplicate event.
        let already: Vec<usize> = valid
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == InsertOutcome::AlreadyStored)
            .map(|(i, _)| *i)
            .collect();
        let mut replayed = 0;
        if !already.is_empty() {
            let uuids: Vec<&str> = already
                .iter()
                .filter_map(|&i| verdicts[i].as_ref().ok().map(|v| v.message_uuid.as_str()))
                .collect();
            let stored = retry("looking up duplicates", self.shutdown, || {
                self.store.stored_positions(&uuids)
            })?;
            for &i in &already {
                let Ok(v) = &verdicts[i] else { continue };
                let here = position(&messages[i]);
                match stored.get(&v.message_uuid) {
                    Some(first) if !first.is(&here) => {
                        duplicate_of.insert(i, first.clone());
                        verdicts[i] = Err(Rejection::duplicate());
                    }
                    _ => replayed += 1,
                }
            }
        }
        for (&i, outcome) in valid.iter().zip(&outcomes) {
            if let InsertOutcome::Refused(why) = outcome {
                verdicts[i] = Err(Rejection::new(
                    RejectionCode::RejectedByDatabase,
                    format!("the database refused the document: {why}"),
                ));
            }
        }

        // 3. Dead letters, also in one write.
        let letters: Vec<DeadLetter> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let r = v.as_ref().err()?;
                Some(DeadLetter {
                    code: r.code,
                    reason: &r.reason,
                    payload: messages[i].value.as_deref(),
                    position: position(&messages[i]),
                    received_at: arrival,
                    duplicate_of: duplicate_of.get(&i).cloned(),
                })
            })
            .collect();
        retry("storing dead letters", self.shutdown, || {
            self.store.insert_dead_letters(&letters)
        })?;
        for l in &letters {
            warn!(
                "dead-lettered partition {} offset {}: {}",
                l.position.partition, l.position.offset, l.reason
            );
        }
        let dead = letters.len() as u64;

        // 4. Windows, in consumption order; each records where a restart resumes.
        let mut cursor = self.positions.clone();
        let mut closed: Vec<(KpiWindow, Vec<(i32, i64)>)> = Vec::new();
        for (m, verdict) in messages.iter().zip(&verdicts) {
            cursor.insert(m.partition, m.offset + 1);
            let Ok(v) = verdict else { continue };
            debug!(
                "partition {} offset {}: {} counted",
                m.partition, m.offset, v.server_id
            );
            let member = WindowMessage {
                server_id: v.server_id.clone(),
                timestamp: v.timestamp,
                metrics: v.metrics,
                partition: m.partition,
                offset: m.offset,
            };
            if let Some(w) = self.windows.push(member, arrival) {
                closed.push((w, cursor.iter().map(|(p, o)| (*p, *o)).collect()));
            }
        }
        let stored_now = outcomes
            .iter()
            .filter(|o| **o == InsertOutcome::Inserted)
            .count() as u64;
        let n = messages.len() as u64;
        for c in [&mut self.totals, &mut self.interval] {
            c.messages += n;
            c.stored += stored_now;
            c.replayed += replayed;
            c.dead_lettered += dead;
            c.batches += 1;
        }

        // A member stores windows only while the coordinator still counts it as the owner of
        // its partitions: after a pause past the session timeout another member may already
        // be counting them. The raw documents and dead letters above are idempotent.
        if !closed.is_empty() {
            if let Some(member) = self.member.as_mut() {
                if !member.still_owner() {
                    member.request_rejoin();
                    return Ok(());
                }
            }
        }
        let records: Vec<WindowRecord> = closed
            .iter()
            .zip(self.next_seq..)
            .map(|((window, next_offsets), seq)| WindowRecord {
                window,
                stream: &self.stream,
                seq,
                topic,
                topic_id,
                group: &self.settings.group,
                next_offsets,
            })
            .collect();
        let new = retry("storing KPI windows", self.shutdown, || {
            self.store.insert_windows(&records)
        })?;
        for (record, new) in records.iter().zip(new) {
            log_window(record, new);
        }
        let stored_windows = records.len();
        drop(records);
        self.next_seq += stored_windows as i64;
        self.totals.windows += stored_windows as u64;
        self.interval.windows += stored_windows as u64;
        self.positions = cursor;

        // 5. Commit what the stored windows cover. A failed commit loses nothing: the positions
        //    are in the last window, which a restart reads.
        if let Some((_, next_offsets)) = closed.last() {
            match self.source.commit(next_offsets) {
                Ok(()) => self.committed = Some(next_offsets.clone()),
                Err(e) if e.fenced => {
                    warn!("{e}; rejoining the group (the stored windows stand)");
                    if let Some(member) = self.member.as_ref() {
                        member.fenced();
                    }
                }
                Err(e) => error!("{e}; the next window's commit will cover these offsets"),
            }
        }
        Ok(())
    }

    fn log_throughput(&mut self, elapsed: Duration) {
        let c = std::mem::take(&mut self.interval);
        info!(
            "throughput: {} messages in {:.1} s ({:.1} msg/s), {} batches, {} stored, {} replayed, \
             {} dead-lettered, {} windows; open window {}/{}",
            c.messages,
            elapsed.as_secs_f64(),
            c.messages as f64 / elapsed.as_secs_f64().max(1e-9),
            c.batches,
            c.stored,
            c.replayed,
            c.dead_lettered,
            c.windows,
            self.windows.pending(),
            self.settings.window_size
        );
    }

    fn log_totals(&self) {
        let t = &self.totals;
        info!(
            "consumer stopped: {} messages read ({} stored, {} replayed, {} dead-lettered), \
             {} windows stored; the open window of {} messages is not stored and will be \
             recomputed on the next run; committed offsets: {}",
            t.messages,
            t.stored,
            t.replayed,
            t.dead_lettered,
            t.windows,
            self.windows.pending(),
            self.committed
                .as_ref()
                .map_or("unchanged".to_string(), |c| {
                    c.iter()
                        .map(|(p, o)| format!("{p}:{o}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
        );
    }
}

fn log_window(r: &WindowRecord, new: bool) {
    let w = r.window;
    if !new {
        info!(
            "window {} was already stored (replayed after a restart)",
            r.id()
        );
        return;
    }
    info!(
        "window {} stored: {} messages in {:.1} s ({}), cpu {:.2} %, mem {:.2} %, disk {:.2} MB/s, \
         net {:.2} Mbps, errors {}, alerts {}",
        r.seq,
        w.message_count,
        w.duration_s,
        w.messages_per_second
            .map_or("rate n/a".to_string(), |r| format!("{r:.2} msg/s")),
        w.totals.avg_cpu_percent,
        w.totals.avg_memory_percent,
        w.totals.avg_disk_io_mbps,
        w.totals.avg_network_mbps,
        w.totals.total_error_count,
        w.alerts.len()
    );
}

/// `--partitions` reads outside group membership: refuse partitions a live member of the same
/// group owns, since both would read and window them.
fn refuse_shared_partitions(
    settings: &ConsumeSettings,
    source: &mut KafkaSource,
    shutdown: &Shutdown,
) -> Result<(), Stop> {
    let wanted = settings.partitions.clone().unwrap_or_default();
    let (_, members) = retry("describing the consumer group", shutdown, || {
        source.group_members()
    })?;
    for m in &members {
        let shared: Vec<i32> = m
            .partitions
            .iter()
            .copied()
            .filter(|p| wanted.contains(p))
            .collect();
        if !shared.is_empty() {
            return Err(Stop::Fatal(CommandError::Setting(SettingError {
                setting: "--partitions (KAFKA_PARTITIONS)".into(),
                problem: format!(
                    "partition(s) {} of topic {} are read by live member {} (client {}, host {}) \
                     of group {}; use another group, or drop --partitions to join the group",
                    join(&shared),
                    settings.topic,
                    m.member_id,
                    m.client_id,
                    m.host,
                    settings.group
                ),
            })));
        }
    }
    Ok(())
}

fn join(partitions: &[i32]) -> String {
    partitions
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
