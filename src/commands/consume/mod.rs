//! `metricsctl consume`: Kafka -> validate -> raw store and tumbling windows -> KPI store.
//!
//! The exactly-once protocol and the loop that drives it are the engine's
//! ([`crate::engine`], its module doc writes the protocol out); this module only wires it:
//! start-up (the database, the topic, group membership or `--partitions`: `assignment`), the
//! adapters (MongoDB, Kafka's offsets, the fetch worker, the process), what happens between
//! rounds (a rebalance, a re-created topic, `--max-messages`, `--exit-when-idle`) and the log
//! lines.
//!
//! Fetching overlaps storing: while a batch is stored, a worker thread (`prefetch`) fetches
//! the next one at the positions the engine will hold after it, and the answer is used only if
//! the engine is at exactly those positions when it is taken.

mod assignment;
mod fetch;
mod host;
mod prefetch;
mod report;

use std::cell::Cell;
use std::time::{Duration, Instant};

use log::info;

use super::CommandError;
use crate::cli::ConsumeArgs;
use crate::engine::{
    Adapters, Driver, DriverConfig, Limits, LogId, Round, MAX_UNPUBLISHED_WINDOWS,
};
use crate::kafka::{CommitWorker, GroupMember, KafkaAdmin, KafkaCommitter, TopicInfo};
use crate::redact::redact_uri;
use crate::retrying::retry;
use crate::settings::{ConsumeSettings, SettingError, Sources, GROUP_SESSION_TIMEOUT};
use crate::shutdown::Shutdown;
use crate::store::{CollectionNames, MongoSink, Store};
use crate::telemetry;
use assignment::{assignment, group_timeouts, refuse_shared_partitions};
use fetch::KafkaFetch;
use host::ConsumerHost;

/// How often the throughput line is logged.
const THROUGHPUT_EVERY: Duration = Duration::from_secs(10);

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
        Err(CommandError::Stopped) => {
            info!("stopped before consuming anything");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let outcome = pipeline.run();
    pipeline.retire_engine();
    report::log_totals(&pipeline.driver);
    // Leaving hands our partitions to the other members at once instead of after the session
    // timeout.
    if let Some(member) = pipeline.member.as_mut() {
        member.leave();
    }
    match outcome {
        Ok(()) | Err(CommandError::Stopped) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The consumer's adapters and the driver.
struct Pipeline<'a> {
    settings: &'a ConsumeSettings,
    store: &'a Store,
    /// Looks up offsets and describes the group; the fetching is `fetch`'s, the commits are
    /// `commits`'.
    kafka: KafkaAdmin,
    /// The thread that commits the group's offsets while the loop stores on.
    commits: CommitWorker,
    /// The fetch worker, with connections of its own.
    fetch: KafkaFetch,
    shutdown: &'a Shutdown,
    /// Group membership; `None` with `--partitions` (static assignment).
    member: Option<GroupMember>,
    /// The topic's incarnation being read.
    topic: TopicInfo,
    /// The partitions this consumer reads: its assignment.
    assigned: Vec<i32>,
    /// The engine and the loop's state between fetches.
    driver: Driver,
    /// Set while the engine resumes: the store adapter gives nothing up for a rejoin then.
    resuming: Cell<bool>,
    /// When this member last received an assignment or read a record: the clock a member that
    /// owns only part of the topic waits on before it calls itself idle.
    last_progress: Instant,
}

/// The adapters of one driver call, borrowed from the pipeline's parts.
type ConsumerAdapters<'x, 'a> =
    Adapters<'x, KafkaFetch, MongoSink<'a>, KafkaCommitter<'a>, ConsumerHost<'a>>;

/// Builds the adapters over these parts and runs `f` with them.
#[allow(clippy::too_many_arguments)]
fn with_adapters<R>(
    store: &Store,
    shutdown: &Shutdown,
    kafka: &mut KafkaAdmin,
    commits: &mut CommitWorker,
    fetch: &mut KafkaFetch,
    member: Option<&GroupMember>,
    topic: &TopicInfo,
    resuming: &Cell<bool>,
    f: impl FnOnce(&mut ConsumerAdapters<'_, '_>) -> R,
) -> R {
    let topic_id = topic.topic_id.to_string();
    // A failing write is given up once the member must rejoin: the step's records are read
    // again by the partitions' next owner. Not while the engine resumes.
    let abandon = || !resuming.get() && member.is_some_and(GroupMember::rejoin_needed);
    let mut sink = MongoSink::new(store, shutdown, &topic_id, &abandon);
    let mut committer = KafkaCommitter::new(kafka, commits, shutdown, member);
    let mut host = ConsumerHost::new(shutdown, member, resuming);
    f(&mut Adapters {
        source: fetch,
        sink: &mut sink,
        committer: &mut committer,
        host: &mut host,
    })
}

impl<'a> Pipeline<'a> {
    /// Finds the topic, the indexes, this consumer's partitions and where each resumes.
    fn start(
        settings: &'a ConsumeSettings,
        store: &'a Store,
        shutdown: &'a Shutdown,
    ) -> Result<Self, CommandError> {
        let mut kafka = KafkaAdmin::new(
            settings.brokers.clone(),
            settings.topic.clone(),
            settings.group.clone(),
            shutdown.clone(),
        )
        .with_security(settings.security.clone());
        retry("database ping", shutdown, || store.ping())?;
        retry("creating indexes", shutdown, || store.ensure_indexes())?;
        let topic = retry("reading topic metadata", shutdown, || kafka.open())?;
        let mut member = match &settings.partitions {
            Some(_) => {
                refuse_shared_partitions(settings, &mut kafka, shutdown)?;
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
        let assigned = assignment(settings, &topic, member.as_mut(), &mut kafka, shutdown)?;
        let mut fetch =
            KafkaFetch::start(settings, shutdown, topic.clone()).map_err(CommandError::Failed)?;
        let mut commits = CommitWorker::start(
            settings.brokers.clone(),
            settings.topic.clone(),
            settings.group.clone(),
            settings.security.clone(),
            shutdown.clone(),
        )
        .map_err(|e| CommandError::Failed(format!("cannot start the commit thread: {e}")))?;
        let resuming = Cell::new(false);
        let config = DriverConfig {
            log: log_id(settings, &topic),
            group: settings.group.clone(),
            window_size: settings.window_size,
            servers_listed: settings.servers_per_window,
            limits: Limits::default(),
            member: member.is_some(),
            max_unpublished: MAX_UNPUBLISHED_WINDOWS,
        };
        let driver = with_adapters(
            store,
            shutdown,
            &mut kafka,
            &mut commits,
            &mut fetch,
            member.as_ref(),
            &topic,
            &resuming,
            |io| Driver::start(config, &assigned, io),
        )?;
        Ok(Pipeline {
            settings,
            store,
            kafka,
            commits,
            fetch,
            shutdown,
            member,
            topic,
            assigned,
            driver,
            resuming,
            last_progress: Instant::now(),
        })
    }

    /// Runs `f` on the driver with the adapters.
    fn drive<R>(&mut self, f: impl FnOnce(&mut Driver, &mut ConsumerAdapters<'_, '_>) -> R) -> R {
        let driver = &mut self.driver;
        with_adapters(
            self.store,
            self.shutdown,
            &mut self.kafka,
            &mut self.commits,
            &mut self.fetch,
            self.member.as_ref(),
            &self.topic,
            &self.resuming,
            |io| f(driver, io),
        )
    }

    /// Takes this consumer's partitions again (after a rebalance, a fencing, a re-created
    /// topic) and resumes the engine where the store and the group's offsets say.
    fn reassign(&mut self) -> Result<(), CommandError> {
        let settings = self.settings;
        self.assigned = assignment(
            settings,
            &self.topic,
            self.member.as_mut(),
            &mut self.kafka,
            self.shutdown,
        )?;
        self.last_progress = Instant::now();
        let log = log_id(settings, &self.topic);
        let assigned = self.assigned.clone();
        self.drive(|driver, io| driver.reassign(Some(log), &assigned, io))?;
        Ok(())
    }

    /// Ends the commits (the one in flight, then what still waits) and forgets the staged
    /// copies of the windows the engine published, before the consumer stops (best effort,
    /// given up for nothing).
    fn retire_engine(&mut self) {
        self.resuming.set(true);
        self.drive(|driver, io| {
            driver.finish(io);
            driver.retire(io.sink)
        });
        self.resuming.set(false);
    }

    /// The group is rebalancing, or this member lost its generation: the open window and the
    /// windows not committed are dropped (their messages are stored raw and will be counted
    /// by whoever owns their partitions next, from the committed offsets on), then the member
    /// rejoins.
    fn rebalance(&mut self) -> Result<(), CommandError> {
        let engine = self.driver.engine();
        info!(
            "group {}: rebalancing; dropping the open window of {} messages and {} window(s) \
             not committed (read again from the committed offsets by the partitions' next owner)",
            self.settings.group,
            engine.pending(),
            engine.unpublished()
        );
        self.kafka.set_generation(None);
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
    fn follow_new_log(&mut self, topic: TopicInfo) -> Result<(), CommandError> {
        let engine = self.driver.engine();
        log::warn!(
            "topic {} was re-created (id {} -> {}): reading the new log from its start; the open \
             window's {} messages and the {} window(s) not committed of the old log are stored \
             raw but will be in no window",
            self.settings.topic,
            self.topic.topic_id,
            topic.topic_id,
            engine.pending(),
            engine.unpublished()
        );
        self.kafka.follow(&topic);
        self.fetch.follow(topic.clone());
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
        let high_watermarks = self.driver.high_watermarks();
        settled
            && self
                .driver
                .engine()
                .positions()
                .iter()
                .all(|(p, at)| high_watermarks.get(p).is_none_or(|hw| at >= hw))
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

    fn run(&mut self) -> Result<(), CommandError> {
        let mut idle_since = Instant::now();
        let mut last_report = Instant::now();
        loop {
            self.stepped();
            if last_report.elapsed() >= THROUGHPUT_EVERY {
                report::log_throughput(
                    &mut self.driver,
                    last_report.elapsed(),
                    self.settings.window_size,
                );
                last_report = Instant::now();
            }
            if self.shutdown.requested() {
                return Err(CommandError::Stopped);
            }
            let read = self.driver.totals().counts.messages;
            let remaining = self
                .settings
                .max_messages
                .map(|max| max.saturating_sub(read));
            if remaining == Some(0) {
                info!("read {read} messages (--max-messages): stopping");
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
                    && self.driver.engine().unpublished() == 0
                {
                    info!(
                        "caught up and no new messages for {} s: stopping",
                        idle.as_secs_f64()
                    );
                    return Ok(());
                }
            }
            if self.driver.engine().positions().is_empty() {
                // No partition assigned: nothing to fetch until the group rebalances.
                if !self.shutdown.sleep(Duration::from_millis(500)) {
                    return Err(CommandError::Stopped);
                }
                continue;
            }
            match self.drive(|driver, io| driver.round(remaining, io))? {
                Round::Read { records } if records > 0 => {
                    idle_since = Instant::now();
                    self.last_progress = idle_since;
                }
                Round::Read { .. } | Round::Restarted | Round::Rejoin => {}
                // An outage is not idleness.
                Round::FetchFailed => idle_since = Instant::now(),
                Round::LogChanged => {
                    if let Some(topic) = self.fetch.take_new_topic() {
                        self.follow_new_log(topic)?;
                    }
                    idle_since = Instant::now();
                }
            }
        }
    }
}

/// The log of `topic`'s current incarnation.
fn log_id(settings: &ConsumeSettings, topic: &TopicInfo) -> LogId {
    LogId {
        topic: settings.topic.clone(),
        topic_id: topic.topic_id.to_string(),
    }
}
