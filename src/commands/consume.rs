//! `metricsctl consume`: Kafka -> validate -> raw store and tumbling windows -> KPI store.
//!
//! The exactly-once bookkeeping is the pure engine's (`crate::engine`); this file wires it to
//! Kafka and MongoDB and owns the loop: group membership and rebalances, fetching, a re-created
//! topic, idle exit, retries, logging. In short:
//! - the consumer owns its positions: it fetches at explicit offsets per partition;
//! - every KPI document records, per partition, the next offset to read once it is stored;
//! - the group's offsets are committed only at window boundaries, so the messages of the open
//!   window are read again after a restart and counted then; a group member's windows are
//!   staged, committed under its generation, and published only after the commit went through;
//! - a (re)start resumes each partition at the group's committed offset (with no commit, or
//!   one that may lag a window stored directly, after the group's furthest window);
//! - re-read messages hit the unique index on `message_uuid` and are recognised as replays
//!   (same Kafka position), so nothing is stored twice; a `message_uuid` stored from another
//!   position is a duplicate event and goes to the dead-letter collection.
//!
//! Fetching overlaps storing: while a batch is stored, a worker thread (`prefetch`) fetches
//! the next one at the positions the engine will hold after it, and the answer is used only if
//! the engine is at exactly those positions when it is taken.

mod prefetch;

use std::collections::HashMap;
use std::fmt::Display;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use uuid::Uuid;

use super::CommandError;
use crate::cli::ConsumeArgs;
use crate::engine::{
    Committed, Counts, DeadLetter, Engine, EngineConfig, EngineError, InsertOutcome, LastWindow,
    Limits, LogId, OffsetCommitter, Publication, RawRecord, SinkError, StepReport, StoreSink,
    StoredPosition, WindowOutcome, WindowRecord,
};
use crate::kafka::{
    Fetched, FetchedRecord, GroupMember, GroupTimeouts, KafkaError, KafkaSource, TopicInfo,
};
use crate::redact::redact_uri;
use crate::retry::Backoff;
use crate::settings::{ConsumeSettings, SettingError, Sources, GROUP_SESSION_TIMEOUT};
use crate::shutdown::Shutdown;
use crate::store::{CollectionNames, Store, StoreError};
use crate::telemetry::{self, Service};
use prefetch::{FetchRequest, Interrupted, Prefetcher};

/// Windows a consumer may hold staged while their commit keeps failing before it stops
/// reading (20,000 messages at the default window size).
const MAX_UNPUBLISHED_WINDOWS: usize = 1_000;

/// Group timeouts: a member silent for the session timeout is removed and its partitions
/// move; a member whose loop made no step for the max step interval leaves. As in Java's
/// consumer, a rebalance waits as long for the members to rejoin: a member in a step that is
/// slow but within bounds is not dropped from the rebalance.
fn group_timeouts(settings: &ConsumeSettings) -> GroupTimeouts {
    GroupTimeouts {
        session: GROUP_SESSION_TIMEOUT,
        rebalance: settings.max_step_interval,
        max_step_interval: settings.max_step_interval,
    }
}

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
    /// What the operator should check when the error stops the command.
    fn hint(&self) -> &'static str {
        ""
    }
    /// The service that failed, for the error counter and `/healthz`.
    fn service(&self) -> Service;
}

impl Retryable for KafkaError {
    fn permanent(&self) -> bool {
        self.is_fatal()
    }
    fn service(&self) -> Service {
        Service::Kafka
    }
}

impl Retryable for StoreError {
    fn permanent(&self) -> bool {
        self.permanent
    }
    fn service(&self) -> Service {
        Service::Database
    }
    fn hint(&self) -> &'static str {
        "; check MONGODB_URI (user, password, options)"
    }
}

/// Runs `op` until it succeeds, backing off between failures, logging each failure at ERROR and
/// the recovery at INFO. Gives up only on a stop request or a permanent error.
fn retry<T, E: Retryable>(
    what: &str,
    shutdown: &Shutdown,
    op: impl FnMut() -> Result<T, E>,
) -> Result<T, Stop> {
    retry_unless(what, shutdown, &|| false, op).map_err(|e| e.unwrap_or(Stop::Shutdown))
}

/// As [`retry`], and also gives up (`Err(None)`) when `abandon()` turns true after a failure.
fn retry_unless<T, E: Retryable>(
    what: &str,
    shutdown: &Shutdown,
    abandon: &dyn Fn() -> bool,
    mut op: impl FnMut() -> Result<T, E>,
) -> Result<T, Option<Stop>> {
    let mut backoff = Backoff::standard();
    let mut failing = None;
    loop {
        let outcome = op();
        if let Err(e) = &outcome {
            failing = Some(e.service());
            telemetry::consumer().service_outcome(e.service(), false);
        } else if let Some(service) = failing {
            telemetry::consumer().service_outcome(service, true);
        }
        match outcome {
            Ok(v) => {
                if backoff.failures() > 0 {
                    info!(
                        "{what}: recovered after {} failed attempts",
                        backoff.failures()
                    );
                }
                return Ok(v);
            }
            // A call given up because of the stop request is no failure to report.
            Err(_) if shutdown.requested() => return Err(Some(Stop::Shutdown)),
            Err(e) if e.permanent() => {
                return Err(Some(Stop::Fatal(CommandError::Failed(format!(
                    "{e}{}",
                    e.hint()
                )))))
            }
            Err(e) if abandon() => {
                warn!("{e}; {what}: given up, this member must rejoin its group first");
                return Err(None);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                error!("{e}; {what}: retrying in {:.1} s", delay.as_secs_f64());
                if !shutdown.sleep(delay) {
                    return Err(Some(Stop::Shutdown));
                }
            }
        }
    }
}

/// The engine's store, backed by MongoDB: every call is retried until it succeeds, so the
/// engine sees an error only when the consumer must stop (a stop request, a permanent
/// failure), or when a group member can no longer prove it owns its partitions.
struct MongoSink<'a> {
    store: &'a Store,
    shutdown: &'a Shutdown,
    member: Option<&'a mut GroupMember>,
    topic_id: &'a str,
    /// Give up a failing call once the member must rejoin (the group rebalances, or the member
    /// left after the max step interval): the step's records are read again by the partitions'
    /// next owner, and a rejoin does not wait for the database. Not while the engine resumes:
    /// a resume gives up nothing, and the loop rejoins right after it.
    abandon_on_rejoin: bool,
    /// Why the consumer must stop, when it must.
    stop: Option<Stop>,
}

impl MongoSink<'_> {
    fn retry<T>(
        &mut self,
        operation: &'static str,
        mut op: impl FnMut(&Store) -> Result<T, StoreError>,
    ) -> Result<T, SinkError> {
        let store = self.store;
        let member = self.member.as_deref().filter(|_| self.abandon_on_rejoin);
        let abandon = || member.is_some_and(GroupMember::rejoin_needed);
        let outcome = retry_unless(operation, self.shutdown, &abandon, || op(store));
        if outcome.is_ok() {
            telemetry::consumer().service_outcome(Service::Database, true);
        }
        outcome.map_err(|stop| {
            let detail = match &stop {
                None => "this member must rejoin its group; given up".to_string(),
                Some(Stop::Shutdown) => "stop requested".to_string(),
                Some(Stop::Fatal(CommandError::Failed(m))) => m.clone(),
                Some(Stop::Fatal(_)) => "fatal".to_string(),
            };
            self.stop = stop;
            SinkError { operation, detail }
        })
    }

    /// A write, each attempt's time observed.
    fn write<T>(
        &mut self,
        operation: &'static str,
        mut op: impl FnMut(&Store) -> Result<T, StoreError>,
    ) -> Result<T, SinkError> {
        self.retry(operation, |s| {
            let started = Instant::now();
            let outcome = op(s);
            telemetry::consumer().database_write(started.elapsed());
            outcome
        })
    }
}

impl StoreSink for MongoSink<'_> {
    fn insert_raw(&mut self, records: &[RawRecord<'_>]) -> Result<Vec<InsertOutcome>, SinkError> {
        self.write("storing raw metrics", |s| s.insert_raw(records))
    }

    fn stored_positions(
        &mut self,
        uuids: &[&str],
    ) -> Result<HashMap<String, StoredPosition>, SinkError> {
        let topic_id = self.topic_id.to_string();
        let mut found = self.retry("looking up duplicates", |s| s.stored_positions(uuids))?;
        // Raw documents stored before topic ids were recorded name none: they were read from
        // the log of their time, taken to be this one.
        for p in found.values_mut() {
            if p.topic_id.is_empty() {
                p.topic_id.clone_from(&topic_id);
            }
        }
        Ok(found)
    }

    fn insert_dead_letters(&mut self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        self.write("storing dead letters", |s| s.insert_dead_letters(letters))?;
        telemetry::consumer().dead_lettered(letters.iter().map(|l| l.code.as_str()));
        Ok(())
    }

    fn insert_windows(
        &mut self,
        windows: &[WindowRecord<'_>],
    ) -> Result<Vec<WindowOutcome>, SinkError> {
        self.write("storing KPI windows", |s| s.insert_windows(windows))
    }

    fn stage_windows(
        &mut self,
        token: &str,
        windows: &[WindowRecord<'_>],
    ) -> Result<(), SinkError> {
        // The commit that follows is the fence; a member whose heartbeats already learned of
        // a rebalance (or that it was fenced out) need not stage what it cannot commit. It
        // does not ask the coordinator here: an unreachable coordinator would hold the step,
        // and the commit asks anyway.
        if let Some(member) = self.member.as_deref_mut() {
            if member.rejoin_needed() {
                return Err(SinkError {
                    operation: "staging KPI windows",
                    detail: "this member no longer owns its partitions; rejoining".into(),
                });
            }
        }
        self.write("staging KPI windows", |s| s.stage_windows(token, windows))
    }

    fn publish_staged(&mut self, token: &str, through: i64) -> Result<usize, SinkError> {
        self.write("publishing staged KPI windows", |s| {
            s.publish_staged(token, through)
        })
    }

    fn drop_staged(&mut self, token: &str, through: i64) -> Result<(), SinkError> {
        self.write("forgetting published staged windows", |s| {
            s.drop_staged(token, through)
        })
    }

    fn last_window(&mut self, stream: &str) -> Result<Option<LastWindow>, SinkError> {
        self.retry("reading the last window", |s| s.last_window(stream))
    }

    fn furthest_positions(
        &mut self,
        topic_id: &str,
        group: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, SinkError> {
        self.retry("reading window positions", |s| {
            s.resume_positions(topic_id, group, partitions)
        })
    }
}

/// The engine's committer, backed by the group's offsets in Kafka. A commit is tried once (a
/// failed one loses nothing); a commit refused for our generation marks the member fenced.
struct KafkaCommitter<'a> {
    source: &'a mut KafkaSource,
    shutdown: &'a Shutdown,
    fenced: bool,
    stop: Option<Stop>,
}

impl OffsetCommitter for KafkaCommitter<'_> {
    fn commit(&mut self, offsets: &[(i32, i64)], marker: Option<&str>) -> Result<(), SinkError> {
        let outcome = self.source.commit(offsets, marker);
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
            self.fenced |= e.is_fenced();
            if e.is_fatal() {
                // A static member whose place another process took: it stops.
                self.stop = Some(Stop::Fatal(CommandError::Failed(e.to_string())));
            }
            SinkError {
                operation: "committing offsets",
                detail: e.to_string(),
            }
        })
    }

    fn committed(&mut self, partitions: &[i32]) -> Result<HashMap<i32, Committed>, SinkError> {
        let source = &mut *self.source;
        retry("fetching committed offsets", self.shutdown, || {
            source.committed_offsets(partitions)
        })
        .inspect(|found| {
            telemetry::consumer().committed(found.iter().map(|(p, c)| (*p, c.offset)));
        })
        .map_err(|stop| {
            self.stop = Some(stop);
            SinkError {
                operation: "fetching committed offsets",
                detail: "stopped".into(),
            }
        })
    }
}

#[derive(Default)]
struct Totals {
    counts: Counts,
    batches: u64,
}

/// The consumer's state between fetches.
struct Pipeline<'a> {
    settings: &'a ConsumeSettings,
    store: &'a Store,
    /// Commits, looks up offsets and describes the group; the fetching is `fetcher`'s.
    source: KafkaSource,
    /// The fetch worker, with connections of its own.
    fetcher: Prefetcher,
    shutdown: &'a Shutdown,
    /// Group membership; `None` with `--partitions` (static assignment).
    member: Option<GroupMember>,
    /// The topic's incarnation being read.
    topic: TopicInfo,
    /// The partitions this consumer reads: its assignment.
    assigned: Vec<i32>,
    /// Positions, the open window and the window numbers.
    engine: Engine,
    /// The latest high watermark seen per partition.
    high_watermarks: HashMap<i32, i64>,
    /// When this member last received an assignment or read a record: the clock a member that
    /// owns only part of the topic waits on before it calls itself idle.
    last_progress: Instant,
    totals: Totals,
    interval: Totals,
    committed: Option<Vec<(i32, i64)>>,
}

pub fn run(args: &ConsumeArgs) -> Result<(), CommandError> {
    let settings = ConsumeSettings::resolve(args, &Sources::load()?)?;
    let shutdown = Shutdown::install().map_err(CommandError::Failed)?;
    let _endpoint = super::serve_telemetry(&settings.telemetry, telemetry::consumer())?;
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
        "consuming topic {} as group {} from {} ({}) into {} database {} ({}, {}, {}); windows of {} messages",
        settings.topic,
        settings.group,
        settings.brokers.join(","),
        settings.security.describe(),
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
    pipeline.retire_engine();
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
    /// Finds the topic, the indexes, this consumer's partitions and where each resumes.
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
        )
        .with_security(settings.security.clone());
        retry("database ping", shutdown, || store.ping())?;
        retry("creating indexes", shutdown, || store.ensure_indexes())?;
        let topic = retry("reading topic metadata", shutdown, || source.open())?;
        let mut member = match &settings.partitions {
            Some(_) => {
                refuse_shared_partitions(settings, &mut source, shutdown)?;
                None
            }
            None => Some(
                GroupMember::new(
                    settings.brokers.clone(),
                    settings.topic.clone(),
                    settings.group.clone(),
                    group_timeouts(settings),
                    shutdown.clone(),
                )
                .with_security(settings.security.clone())
                .with_instance_id(settings.group_instance_id.clone()),
            ),
        };
        let assigned = assignment(settings, &topic, member.as_mut(), &mut source, shutdown)?;
        let engine = resume(
            settings,
            store,
            shutdown,
            &topic,
            &assigned,
            member.as_mut(),
            &mut source,
        )?;
        let fetcher = start_fetcher(settings, shutdown)?;
        Ok(Pipeline {
            settings,
            store,
            source,
            fetcher,
            shutdown,
            member,
            topic,
            assigned,
            engine,
            high_watermarks: HashMap::new(),
            last_progress: Instant::now(),
            totals: Totals::default(),
            interval: Totals::default(),
            committed: None,
        })
    }

    /// Takes this consumer's partitions again (after a rebalance, a fencing, a re-created
    /// topic) and resumes the engine where the store and the group's offsets say.
    fn reassign(&mut self) -> Result<(), Stop> {
        let settings = self.settings;
        self.assigned = assignment(
            settings,
            &self.topic,
            self.member.as_mut(),
            &mut self.source,
            self.shutdown,
        )?;
        self.last_progress = Instant::now();
        self.restart_engine()
    }

    /// A new engine over the current assignment, resumed from the store: after a failed step
    /// the open window may not match what is stored.
    fn restart_engine(&mut self) -> Result<(), Stop> {
        self.retire_engine();
        self.engine = resume(
            self.settings,
            self.store,
            self.shutdown,
            &self.topic,
            &self.assigned,
            self.member.as_mut(),
            &mut self.source,
        )?;
        self.high_watermarks.clear();
        Ok(())
    }

    /// Forgets the staged copies of the windows the engine published, before it is replaced
    /// or the consumer stops. Best effort: copies left behind are forgotten by whoever resumes
    /// these partitions next, from the last commit's marker.
    fn retire_engine(&mut self) {
        let topic_id = self.topic.topic_id.to_string();
        let mut sink = MongoSink {
            store: self.store,
            shutdown: self.shutdown,
            member: None,
            topic_id: &topic_id,
            abandon_on_rejoin: false,
            stop: None,
        };
        if let Err(e) = self.engine.forget_published(&mut sink) {
            debug!("{e}; the staged copies are forgotten by the next resume");
        }
    }

    /// The group is rebalancing, or this member lost its generation: the open window and the
    /// windows not committed are dropped (their messages are stored raw and will be counted
    /// by whoever owns their partitions next, from the committed offsets on), then the member
    /// rejoins.
    fn rebalance(&mut self) -> Result<(), Stop> {
        info!(
            "group {}: rebalancing; dropping the open window of {} messages and {} window(s) \
             not committed (read again from the committed offsets by the partitions' next owner)",
            self.settings.group,
            self.engine.pending(),
            self.engine.unpublished()
        );
        self.source.set_generation(None);
        telemetry::consumer().rebalancing();
        if self.member.as_ref().is_some_and(GroupMember::left_stalled) {
            // It left because it could not store: back in the group before the database
            // answers, it would take partitions only to hold them up again.
            let store = self.store;
            retry(
                "waiting for the database before rejoining",
                self.shutdown,
                || store.ping(),
            )?;
            info!(
                "group {}: the database answers again; rejoining",
                self.settings.group
            );
        }
        self.reassign()
    }

    /// The topic was deleted and created again while we read it: the old log is gone, so its
    /// open window can never be completed; the new log is read from its start.
    fn follow_new_log(&mut self, topic: TopicInfo) -> Result<(), Stop> {
        warn!(
            "topic {} was re-created (id {} -> {}): reading the new log from its start; the open \
             window's {} messages and the {} window(s) not committed of the old log are stored \
             raw but will be in no window",
            self.settings.topic,
            self.topic.topic_id,
            topic.topic_id,
            self.engine.pending(),
            self.engine.unpublished()
        );
        self.source.follow(&topic);
        self.topic = topic;
        if let Some(member) = self.member.as_ref() {
            // The new topic may have other partitions: the group leader assigns them afresh.
            member.request_rejoin();
            return Ok(());
        }
        self.reassign()
    }

    /// True when every position has reached its partition's high watermark, and no partition
    /// of the topic can still come to this member. A member that owns only part of the topic
    /// also waits until it has read nothing for a session timeout and two heartbeat intervals:
    /// another member that died (or froze) before our last progress, holding partitions with
    /// unread messages, is then removed by the coordinator (a session timeout after its last
    /// heartbeat) and our heartbeat has seen the rebalance that gives us its partitions (one
    /// interval), with one interval to spare. Measured from the assignment alone, a member that
    /// died later than that went unnoticed and its partitions stayed unread.
    fn caught_up(&self) -> bool {
        let own_everything = self.member.is_none()
            || self
                .topic
                .partitions
                .iter()
                .all(|p| self.assigned.contains(p));
        let settled = own_everything
            || self.last_progress.elapsed()
                >= GROUP_SESSION_TIMEOUT + 2 * group_timeouts(self.settings).heartbeat_interval();
        settled
            && self
                .engine
                .positions()
                .iter()
                .all(|(p, at)| self.high_watermarks.get(p).is_none_or(|hw| at >= hw))
    }

    fn rejoin_needed(&self) -> bool {
        self.member.as_ref().is_some_and(GroupMember::rejoin_needed)
    }

    /// Tells the heartbeat thread the loop is alive (see `--max-step-interval`).
    fn stepped(&self) {
        if let Some(member) = self.member.as_ref() {
            member.stepped();
        }
    }

    fn run(&mut self) -> Result<(), Stop> {
        let mut idle_since = Instant::now();
        let mut last_report = Instant::now();
        let mut backoff = Backoff::standard();
        loop {
            self.stepped();
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
                .map(|max| max.saturating_sub(self.totals.counts.messages));
            if remaining == Some(0) {
                info!(
                    "read {} messages (--max-messages): stopping",
                    self.totals.counts.messages
                );
                return Ok(());
            }
            // A pending rebalance may bring partitions with unread messages: it goes first.
            if self.rejoin_needed() {
                self.rebalance()?;
                idle_since = Instant::now();
                continue;
            }
            // Idle means caught up: every partition read to its high watermark, and nothing new
            // for the whole period since the last processing ended.
            if let Some(idle) = self.settings.exit_when_idle {
                // Windows still waiting for their commit are not caught up.
                if idle_since.elapsed() >= idle
                    && self.caught_up()
                    && self.engine.unpublished() == 0
                {
                    info!(
                        "caught up and no new messages for {} s: stopping",
                        idle.as_secs_f64()
                    );
                    return Ok(());
                }
            }
            if self.engine.positions().is_empty() {
                // No partition assigned: nothing to fetch until the group rebalances.
                if !self.shutdown.sleep(Duration::from_millis(500)) {
                    return Err(Stop::Shutdown);
                }
                continue;
            }

            let request = FetchRequest {
                topic: self.topic.clone(),
                positions: self
                    .engine
                    .positions()
                    .iter()
                    .map(|(p, o)| (*p, *o))
                    .collect(),
            };
            let answer = match self.fetcher.fetch(request.clone()) {
                Ok(answer) => answer,
                Err(Interrupted::Shutdown) => return Err(Stop::Shutdown),
                Err(Interrupted::WorkerLost) => {
                    return Err(Stop::Fatal(CommandError::Failed(
                        "the fetch worker stopped unexpectedly".into(),
                    )))
                }
            };
            let arrival = answer.arrival;
            let fetched = match answer.result {
                Ok(f) => {
                    telemetry::consumer().service_outcome(Service::Kafka, true);
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
                Err(e) if e.is_fatal() => {
                    return Err(Stop::Fatal(CommandError::Failed(e.to_string())))
                }
                Err(e) => {
                    telemetry::consumer().service_outcome(Service::Kafka, false);
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
                    telemetry::consumer().log_end(part.partition, hw);
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
            let last_batch = remaining.is_some_and(|n| records.len() as u64 >= n);
            if !last_batch {
                // While this batch is stored, fetch the next one from where it ends.
                self.fetcher
                    .prefetch(expected_next(&request, &next_offsets));
            }
            let had_records = !records.is_empty();
            if !self.process(&records, arrival)? {
                // The engine was restarted from the store: this fetch's positions are stale.
                continue;
            }
            if had_records {
                idle_since = Instant::now();
                self.last_progress = idle_since;
            } else if self.engine.unpublished() > 0 {
                // A quiet stream closes no window whose commit would cover the ones held.
                if self
                    .engine_call(|engine, sink, committer| engine.publish_pending(sink, committer))?
                    .is_none()
                {
                    continue;
                }
            }
            // Past control batches, compaction gaps and retention; not past what --max-messages
            // left unread.
            if !truncated {
                for (p, next) in next_offsets {
                    let at = self.engine.positions().get(&p).copied().unwrap_or(next);
                    if next < at {
                        self.log_truncated(p, at, next)?;
                    } else {
                        self.engine.advance_to(p, next);
                    }
                }
            }
        }
    }

    /// Hands fetched records to the engine in bounded steps. Returns false when a step failed
    /// and the engine was resumed from the store (or the member must rejoin first).
    fn process(
        &mut self,
        records: &[FetchedRecord],
        arrival: time::OffsetDateTime,
    ) -> Result<bool, Stop> {
        let mut rest = records;
        while !rest.is_empty() {
            // Every step commits what it completes: stopping between steps loses nothing, and
            // the rest of the batch is read again by the next run.
            if self.shutdown.requested() {
                info!(
                    "stopping after the step in hand; {} fetched messages left for the next run",
                    rest.len()
                );
                return Err(Stop::Shutdown);
            }
            if self.rejoin_needed() {
                return Ok(false);
            }
            if self.engine.unpublished() >= MAX_UNPUBLISHED_WINDOWS {
                // Commits keep failing while fetching works (the group's coordinator is
                // unavailable): read no further until the windows held can be published.
                if !self.publish_pending_until_done()? {
                    return Ok(false);
                }
                continue;
            }
            match self.engine_call(|engine, sink, committer| {
                engine.step(rest, arrival, sink, committer)
            })? {
                Some(report) => {
                    self.stepped();
                    rest = &rest[report.consumed..];
                }
                None => {
                    info!(
                        "{} fetched records are left unprocessed: read again from the \
                         committed offsets",
                        rest.len()
                    );
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Runs one engine call (a step, or the retry of a commit) with the store and the group's
    /// offsets, and accounts for its report. `Ok(None)`: it failed, and the engine was resumed
    /// from the store, or the member must rejoin first.
    fn engine_call<F>(&mut self, call: F) -> Result<Option<StepReport>, Stop>
    where
        F: FnOnce(
            &mut Engine,
            &mut MongoSink<'_>,
            &mut KafkaCommitter<'_>,
        ) -> Result<StepReport, EngineError>,
    {
        let topic_id = self.topic.topic_id.to_string();
        let mut sink = MongoSink {
            store: self.store,
            shutdown: self.shutdown,
            member: self.member.as_mut(),
            topic_id: &topic_id,
            abandon_on_rejoin: true,
            stop: None,
        };
        let mut committer = KafkaCommitter {
            source: &mut self.source,
            shutdown: self.shutdown,
            fenced: false,
            stop: None,
        };
        let started = Instant::now();
        let health = telemetry::consumer().health();
        health.step_started(started);
        let outcome = call(&mut self.engine, &mut sink, &mut committer);
        health.step_ended();
        if let Ok(report) = &outcome {
            let c = &report.counts;
            telemetry::consumer().step_done(
                started.elapsed(),
                c.messages,
                c.stored,
                c.replayed,
                c.windows,
            );
        }
        let stop = sink.stop.take().or(committer.stop.take());
        let fenced = committer.fenced;
        match outcome {
            Ok(report) => {
                self.account(&report, fenced);
                // A commit that can never go through ends the consumer, step done or not.
                if let Some(Stop::Fatal(e)) = stop {
                    return Err(Stop::Fatal(e));
                }
                Ok(Some(report))
            }
            Err(e) => {
                if let Some(stop) = stop {
                    return Err(stop);
                }
                if self.rejoin_needed() {
                    info!("{e}");
                    return Ok(None);
                }
                if let EngineError::Diverged { .. } = e {
                    error!("{e}; resuming from the store");
                } else {
                    warn!("{e}; resuming from the store");
                }
                self.restart_engine()?;
                Ok(None)
            }
        }
    }

    /// Adds a report to the totals and says what a failed commit means.
    fn account(&mut self, report: &StepReport, fenced: bool) {
        for t in [&mut self.totals, &mut self.interval] {
            t.counts.add(&report.counts);
            t.batches += u64::from(report.consumed > 0);
        }
        if let Some(c) = &report.committed {
            self.committed = Some(c.clone());
        }
        let Some(e) = &report.commit_error else {
            return;
        };
        let waiting = self.engine.unpublished();
        match (&self.member, fenced) {
            (Some(member), true) => {
                warn!(
                    "{e}; rejoining the group ({waiting} window(s) not committed are not \
                     published: the partitions' next owner counts their messages from the \
                     committed offsets)"
                );
                member.fenced();
            }
            (None, true) => error!(
                "{e}: the group has members, and Kafka takes no commit from a consumer outside \
                 it (--partitions); the windows are stored, and a restart resumes after them"
            ),
            (_, false) if waiting > 0 => {
                error!("{e}; {waiting} window(s) wait staged for a commit that goes through")
            }
            (_, false) => error!("{e}; the next window's commit will cover these offsets"),
        }
    }

    /// Retries the commit of the windows held until it goes through (true) or the member must
    /// rejoin (false), with backoff.
    fn publish_pending_until_done(&mut self) -> Result<bool, Stop> {
        let mut backoff = Backoff::standard();
        loop {
            // A commit refused again and again is no stuck loop: the coordinator answers.
            self.stepped();
            if self.shutdown.requested() {
                return Err(Stop::Shutdown);
            }
            match self
                .engine_call(|engine, sink, committer| engine.publish_pending(sink, committer))?
            {
                None => return Ok(false),
                Some(report) if report.commit_error.is_none() => return Ok(true),
                Some(_) if self.rejoin_needed() => return Ok(false),
                Some(_) => {
                    if !self.shutdown.sleep(backoff.next_delay()) {
                        return Err(Stop::Shutdown);
                    }
                }
            }
        }
    }

    /// A position past the log's end: the log was truncated under us (an unclean leader
    /// election, or records deleted by hand). What we counted there is gone from the log; the
    /// offsets from the new end on will hold new messages, so reading continues there.
    fn log_truncated(&mut self, partition: i32, at: i64, end: i64) -> Result<(), Stop> {
        error!(
            "partition {partition}: position {at} is past the log end {end} (the log was \
             truncated): {} offsets we counted are no longer in the log; continuing at {end}",
            at - end
        );
        self.restart_engine()?;
        if self.engine.rewind_to(partition, end) {
            // Committed now: a restart before the next window would resume at the old
            // position, past the records the log will hold from `end` on by then.
            let mut committer = KafkaCommitter {
                source: &mut self.source,
                shutdown: self.shutdown,
                fenced: false,
                stop: None,
            };
            if let Err(e) = self.engine.commit_positions(&mut committer) {
                error!(
                    "{e}; partition {partition} resumes at {at} if the consumer stops before \
                     its next window"
                );
            }
        }
        Ok(())
    }

    fn log_throughput(&mut self, elapsed: Duration) {
        let t = std::mem::take(&mut self.interval);
        let c = t.counts;
        info!(
            "throughput: {} messages in {:.1} s ({:.1} msg/s), {} steps, {} stored, {} replayed, \
             {} dead-lettered, {} windows; open window {}/{}",
            c.messages,
            elapsed.as_secs_f64(),
            c.messages as f64 / elapsed.as_secs_f64().max(1e-9),
            t.batches,
            c.stored,
            c.replayed,
            c.dead_lettered,
            c.windows,
            self.engine.pending(),
            self.settings.window_size
        );
    }

    fn log_totals(&self) {
        let t = &self.totals.counts;
        info!(
            "consumer stopped: {} messages read ({} stored, {} replayed, {} dead-lettered), \
             {} windows stored; the open window of {} messages is not stored and will be \
             recomputed on the next run; committed offsets: {}",
            t.messages,
            t.stored,
            t.replayed,
            t.dead_lettered,
            t.windows,
            self.engine.pending(),
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

/// The fetch worker, with a source of its own on the same brokers, topic and group.
fn start_fetcher(settings: &ConsumeSettings, shutdown: &Shutdown) -> Result<Prefetcher, Stop> {
    let mut source = KafkaSource::new(
        settings.brokers.clone(),
        settings.topic.clone(),
        settings.group.clone(),
        shutdown.clone(),
    )
    .with_security(settings.security.clone());
    let mut following = None;
    Prefetcher::start(shutdown.clone(), move |request: &FetchRequest| {
        // The log to read is the main thread's: it follows a re-created topic.
        if following != Some(request.topic.topic_id) {
            source.follow(&request.topic);
            following = Some(request.topic.topic_id);
        }
        source.fetch(&request.positions)
    })
    .map_err(|e| {
        Stop::Fatal(CommandError::Failed(format!(
            "cannot start the fetch thread: {e}"
        )))
    })
}

/// The positions the engine holds once a fetch's batch is processed and the positions are
/// advanced: each partition that answered at its `next_offset` (never back), the others where
/// they were. The next fetch is made there ahead of time.
fn expected_next(fetched: &FetchRequest, next_offsets: &[(i32, i64)]) -> FetchRequest {
    let next: HashMap<i32, i64> = next_offsets.iter().copied().collect();
    FetchRequest {
        topic: fetched.topic.clone(),
        positions: fetched
            .positions
            .iter()
            .map(|(p, at)| (*p, next.get(p).map_or(*at, |n| (*n).max(*at))))
            .collect(),
    }
}

/// This consumer's partitions of `topic`: its share from the group (joining it), or the
/// `--partitions` named.
fn assignment(
    settings: &ConsumeSettings,
    topic: &TopicInfo,
    member: Option<&mut GroupMember>,
    source: &mut KafkaSource,
    shutdown: &Shutdown,
) -> Result<Vec<i32>, Stop> {
    if let Some(member) = member {
        let partitions = retry("joining the consumer group", shutdown, || member.join())?;
        source.set_generation(member.generation());
        telemetry::consumer().assigned(&partitions, member.generation().map(|g| g.id));
        if partitions.is_empty() {
            info!(
                "no partition assigned: the group has more members than topic {} has \
                 partitions; waiting for a rebalance",
                settings.topic
            );
        }
        return Ok(partitions);
    }
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
    telemetry::consumer().assigned(&wanted, None);
    Ok(wanted)
}

/// An engine over `partitions` of `topic`, resumed from the store and the group's offsets.
fn resume(
    settings: &ConsumeSettings,
    store: &Store,
    shutdown: &Shutdown,
    topic: &TopicInfo,
    partitions: &[i32],
    member: Option<&mut GroupMember>,
    source: &mut KafkaSource,
) -> Result<Engine, Stop> {
    let bounds = retry("listing offsets", shutdown, || {
        source.offset_bounds(partitions)
    })?;
    let log_start: HashMap<i32, i64> = bounds.iter().map(|(p, (start, _))| (*p, *start)).collect();
    let topic_id = topic.topic_id.to_string();
    let config = EngineConfig {
        log: LogId {
            topic: settings.topic.clone(),
            topic_id: topic_id.clone(),
        },
        group: settings.group.clone(),
        partitions: partitions.to_vec(),
        window_size: settings.window_size,
        servers_listed: settings.servers_per_window,
        limits: Limits::default(),
        // A group member's partitions can move while one of its writes is on its way: its
        // windows count only once the group accepted their commit. A static consumer's cannot
        // move, and Kafka refuses its commits while the group has members: it stores directly.
        publication: if member.is_some() {
            Publication::AfterCommit {
                token: Uuid::new_v4().simple().to_string(),
            }
        } else {
            Publication::Direct
        },
    };
    let mut sink = MongoSink {
        store,
        shutdown,
        member,
        topic_id: &topic_id,
        abandon_on_rejoin: false,
        stop: None,
    };
    let mut committer = KafkaCommitter {
        source,
        shutdown,
        fenced: false,
        stop: None,
    };
    match Engine::resume(config, &log_start, &mut sink, &mut committer) {
        Ok(engine) => Ok(engine),
        Err(e) => Err(sink
            .stop
            .take()
            .or(committer.stop.take())
            .unwrap_or_else(|| Stop::Fatal(CommandError::Failed(e.to_string())))),
    }
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
