//! The loop that drives the engine: fetch at the engine's positions, hand the records over in
//! bounded steps, move positions past what holds no record, notice a truncated log, hold back
//! while too many windows wait for their commit, publish when the stream goes quiet, and
//! resume a fresh engine from the store after a failed step.
//!
//! It is generic over where records come from ([`FetchSource`]), where they are written
//! ([`StoreSink`]), where offsets are committed ([`OffsetCommitter`]) and the process around it
//! ([`Host`]: stop requests, group membership, sleeping): the consumer passes Kafka and MongoDB,
//! the property test passes fakes, so every decision made here is under its crash test.
//!
//! Here: the loop's rounds and steps; `adapters` holds the traits it drives through,
//! `recovery` the resume of a fresh engine (after a failed step, or over truncated logs).

mod adapters;
mod recovery;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::ops::ControlFlow;

use log::{error, info, warn};
use time::OffsetDateTime;

use super::{
    Counts, Engine, EngineError, Limits, LogId, OffsetCommitter, Record, SinkErrorKind, StepReport,
    StoreSink,
};
use crate::retry::Backoff;
pub use adapters::{Adapters, DriverError, Fetch, FetchSource, Host, PartitionFetch};
use recovery::{resume, Truncation};

/// Windows a consumer may hold staged while their commit keeps failing before it stops
/// reading (20,000 messages at the default window size).
pub const MAX_UNPUBLISHED_WINDOWS: usize = 1_000;

/// What the driver runs: the consumer's log, group, partitions and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// The log consumed.
    pub log: LogId,
    /// The consumer group.
    pub group: String,
    /// Valid messages per KPI window.
    pub window_size: NonZeroUsize,
    /// How many servers a window lists with their own KPIs.
    pub servers_listed: usize,
    /// Step and payload bounds.
    pub limits: Limits,
    /// A group member, whose partitions a rebalance can move while one of its writes is on its
    /// way: its windows are staged and published after their commit. Otherwise (static
    /// assignment) they are stored directly, then committed.
    pub member: bool,
    /// Windows held staged while their commit fails before reading stops
    /// ([`MAX_UNPUBLISHED_WINDOWS`]).
    pub max_unpublished: usize,
}

/// Counters summed over steps, for the throughput and final lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// What the steps counted.
    pub counts: Counts,
    /// Steps that took records.
    pub batches: u64,
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// The fetch was processed: `records` records (0 when the stream is quiet).
    Read {
        /// Records fetched and handed to the engine.
        records: usize,
    },
    /// The fetch failed; nothing moved.
    FetchFailed,
    /// A step failed and the engine was resumed from the store: the fetch's positions are
    /// stale, fetch again.
    Restarted,
    /// The consumer must rejoin its group first.
    Rejoin,
    /// The log changed: take the partitions of the new one ([`Driver::reassign`]).
    LogChanged,
}

/// The engine and everything the loop keeps between fetches.
#[derive(Debug)]
pub struct Driver {
    config: DriverConfig,
    partitions: Vec<i32>,
    engine: Engine,
    /// The latest high watermark seen per partition.
    high_watermarks: HashMap<i32, i64>,
    totals: Totals,
    interval: Totals,
    committed: Option<Vec<(i32, i64)>>,
}

impl Driver {
    /// A driver over `partitions`, its engine resumed from what the store and the group hold.
    pub fn start<F, S, C, H>(
        config: DriverConfig,
        partitions: &[i32],
        io: &mut Adapters<'_, F, S, C, H>,
    ) -> Result<Driver, DriverError>
    where
        F: FetchSource + ?Sized,
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
        H: Host + ?Sized,
    {
        io.host.resuming(true);
        let engine = resume(&config, partitions, io);
        io.host.resuming(false);
        if engine.is_ok() {
            io.host.resumed();
        }
        Ok(Driver {
            engine: engine?,
            config,
            partitions: partitions.to_vec(),
            high_watermarks: HashMap::new(),
            totals: Totals::default(),
            interval: Totals::default(),
            committed: None,
        })
    }

    /// The engine, to read its positions and what it holds.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What all steps counted since the start.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// What the steps counted since the last call.
    pub fn take_interval(&mut self) -> Totals {
        std::mem::take(&mut self.interval)
    }

    /// The offsets last committed, if any commit went through.
    pub fn committed(&self) -> Option<&[(i32, i64)]> {
        self.committed.as_deref()
    }

    /// The latest high watermark seen per partition.
    pub fn high_watermarks(&self) -> &HashMap<i32, i64> {
        &self.high_watermarks
    }

    /// Takes `partitions` (after a rebalance, a fencing, a re-created topic, or with `log`
    /// changed) and resumes a fresh engine over them.
    pub fn reassign<F, S, C, H>(
        &mut self,
        log: Option<LogId>,
        partitions: &[i32],
        io: &mut Adapters<'_, F, S, C, H>,
    ) -> Result<(), DriverError>
    where
        F: FetchSource + ?Sized,
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
        H: Host + ?Sized,
    {
        if let Some(log) = log {
            self.config.log = log;
        }
        self.partitions = partitions.to_vec();
        self.restart(io)
    }

    /// A new engine over the current partitions, resumed from the store: after a failed step
    /// the open window may not match what is stored.
    pub fn restart<F, S, C, H>(
        &mut self,
        io: &mut Adapters<'_, F, S, C, H>,
    ) -> Result<(), DriverError>
    where
        F: FetchSource + ?Sized,
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
        H: Host + ?Sized,
    {
        io.host.resuming(true);
        self.retire(io.sink);
        let engine = resume(&self.config, &self.partitions, io);
        io.host.resuming(false);
        self.engine = engine?;
        io.host.resumed();
        self.high_watermarks.clear();
        Ok(())
    }

    /// Ends the commits before the consumer stops: waits for the one in flight and, if it went
    /// through, commits what still waits, publishing what they cover. Once: a commit that
    /// fails is left to the next run, which resumes from the store and the group.
    pub fn finish<F, S, C, H>(&mut self, io: &mut Adapters<'_, F, S, C, H>)
    where
        F: FetchSource + ?Sized,
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
        H: Host + ?Sized,
    {
        // A poisoned engine's windows are left to the next run's resume, which publishes what
        // the group's commit covers.
        if self.engine.is_poisoned()
            || (!self.engine.commit_in_flight() && self.engine.unpublished() == 0)
        {
            return;
        }
        match self.engine.publish_pending(io.sink, io.committer, true) {
            Ok(report) => {
                if let Err(e) = self.account(&report, io.host) {
                    log::debug!("{e:?}");
                }
            }
            Err(e) => warn!("{e}; the next run resumes from what is committed and stored"),
        }
    }

    /// Forgets the staged copies of the windows the engine published, before it is replaced
    /// or the consumer stops. Best effort: copies left behind are forgotten by whoever resumes
    /// these partitions next, from the last commit's marker.
    pub fn retire<S: StoreSink + ?Sized>(&mut self, sink: &mut S) {
        if let Err(e) = self.engine.forget_staged(sink) {
            log::debug!("{e}; the staged copies are forgotten by the next resume");
        }
    }

    /// One fetch and everything it leads to. `budget`: how many more records the run may read
    /// (`--max-messages`); records past it are left for the next run, and the positions of
    /// their partitions are not moved past them.
    pub fn round<F, S, C, H>(
        &mut self,
        budget: Option<u64>,
        io: &mut Adapters<'_, F, S, C, H>,
    ) -> Result<Round, DriverError>
    where
        F: FetchSource + ?Sized,
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
        H: Host + ?Sized,
    {
        let positions = self.engine.positions().clone();
        let (parts, arrival) = match io.source.fetch(&positions)? {
            Fetch::Data { parts, arrival } => (parts, arrival),
            Fetch::Failed => return Ok(Round::FetchFailed),
            Fetch::LogChanged => return Ok(Round::LogChanged),
        };
        let mut records: Vec<Record> = Vec::new();
        let mut next_offsets: Vec<(i32, i64)> = Vec::new();
        for part in parts {
            if let Some(hw) = part.high_watermark {
                self.high_watermarks.insert(part.partition, hw);
            }
            next_offsets.push((part.partition, part.next_offset));
            records.extend(part.records);
        }
        let cut = match budget {
            Some(n) if (records.len() as u64) > n => {
                records.truncate(usize::try_from(n).unwrap_or(usize::MAX));
                true
            }
            _ => false,
        };
        let last_batch = budget.is_some_and(|n| records.len() as u64 >= n);
        if !last_batch {
            // While this batch is stored, the next one can be fetched from where it ends.
            io.source
                .prefetch(&expected_next(&positions, &next_offsets));
        }
        if let ControlFlow::Break(round) = self.process(&records, arrival, io)? {
            return Ok(round);
        }
        if records.is_empty() && (self.engine.unpublished() > 0 || self.engine.commit_in_flight()) {
            // A quiet stream makes no step to take a commit's outcome or to start the commit
            // of the windows held.
            let publish = |e: &mut Engine, s: &mut S, c: &mut C| e.publish_pending(s, c, false);
            if let ControlFlow::Break(round) = self.call(publish, io)? {
                return Ok(round);
            }
        }
        // Past control batches, compaction gaps and retention; not past what the budget left
        // unread.
        if !cut {
            let positions = self.engine.positions();
            let truncated: Vec<Truncation> = next_offsets
                .iter()
                .filter_map(|&(partition, end)| {
                    let at = *positions.get(&partition)?;
                    (end < at).then_some(Truncation { partition, at, end })
                })
                .collect();
            if !truncated.is_empty() {
                // The engine is resumed from the store: the other partitions' next offsets lie
                // past records it has not read again yet, so none is advanced.
                self.logs_truncated(&truncated, &next_offsets, io)?;
                return Ok(Round::Restarted);
            }
            for (p, next) in next_offsets {
                self.engine.advance_to(p, next);
            }
        }
        Ok(Round::Read {
            records: records.len(),
        })
    }

    /// Hands fetched records to the engine in bounded steps; breaks with the round's outcome
    /// when a step failed (the engine was resumed, or the member must rejoin first).
    fn process<F, S, C, H>(
        &mut self,
        records: &[Record],
        arrival: OffsetDateTime,
        io: &mut Adapters<'_, F, S, C, H>,
    ) -> Result<ControlFlow<Round>, DriverError>
    where
        F: FetchSource + ?Sized,
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
        H: Host + ?Sized,
    {
        let mut rest = records;
        while !rest.is_empty() {
            // Every step commits what it completes: stopping between steps loses nothing, and
            // the rest of the batch is read again by the next run.
            if io.host.stop_requested() {
                info!(
                    "stopping after the step in hand; {} fetched messages left for the next run",
                    rest.len()
                );
                return Err(DriverError::Stopped);
            }
            if io.host.rejoin_needed() {
                return Ok(ControlFlow::Break(Round::Rejoin));
            }
            if self.engine.unpublished() >= self.config.max_unpublished {
                // Commits keep failing while fetching works (the group's coordinator is
                // unavailable): read no further until the windows held can be published.
                if let ControlFlow::Break(round) = self.publish_pending_until_done(io)? {
                    return Ok(ControlFlow::Break(round));
                }
                continue;
            }
            let step = |e: &mut Engine, s: &mut S, c: &mut C| e.step(rest, arrival, s, c);
            match self.call(step, io)? {
                ControlFlow::Continue(report) => {
                    io.host.stepped();
                    rest = &rest[report.consumed..];
                }
                ControlFlow::Break(round) => {
                    info!(
                        "{} fetched records are left unprocessed: read again from the \
                         committed offsets",
                        rest.len()
                    );
                    return Ok(ControlFlow::Break(round));
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Runs one engine call (a step, or the retry of a commit) and accounts for its report.
    /// Breaks when it failed: the engine was resumed from the store, or the member must rejoin
    /// first.
    fn call<F, S, C, H>(
        &mut self,
        call: impl FnOnce(&mut Engine, &mut S, &mut C) -> Result<StepReport, EngineError>,
        io: &mut Adapters<'_, F, S, C, H>,
    ) -> Result<ControlFlow<Round, StepReport>, DriverError>
    where
        F: FetchSource + ?Sized,
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
        H: Host + ?Sized,
    {
        io.host.step_started();
        let outcome = call(&mut self.engine, io.sink, io.committer);
        io.host.step_ended(outcome.as_ref().ok());
        match outcome {
            Ok(report) => {
                self.account(&report, io.host)?;
                Ok(ControlFlow::Continue(report))
            }
            Err(e) => {
                if let EngineError::Sink(s) = &e {
                    match &s.kind {
                        SinkErrorKind::Stopped => return Err(DriverError::Stopped),
                        SinkErrorKind::Permanent => {
                            return Err(DriverError::Fatal(s.detail.clone()))
                        }
                        _ => {}
                    }
                }
                if io.host.rejoin_needed() {
                    info!("{e}");
                    return Ok(ControlFlow::Break(Round::Rejoin));
                }
                if let EngineError::Diverged { .. } = e {
                    error!("{e}; resuming from the store");
                } else {
                    warn!("{e}; resuming from the store");
                }
                self.restart(io)?;
                Ok(ControlFlow::Break(Round::Restarted))
            }
        }
    }

    /// Adds a report to the totals and says what a failed commit means; a commit that can
    /// never go through ends the consumer.
    fn account<H: Host + ?Sized>(
        &mut self,
        report: &StepReport,
        host: &mut H,
    ) -> Result<(), DriverError> {
        for t in [&mut self.totals, &mut self.interval] {
            t.counts.add(&report.counts);
            t.batches += u64::from(report.consumed > 0);
        }
        if let Some(c) = &report.committed {
            self.committed = Some(c.clone());
        }
        let Some(e) = &report.commit_error else {
            return Ok(());
        };
        let waiting = self.engine.unpublished();
        match (self.config.member, &e.kind) {
            (true, SinkErrorKind::Fenced) => {
                warn!(
                    "{e}; rejoining the group ({waiting} window(s) not committed are not \
                     published: the partitions' next owner counts their messages from the \
                     committed offsets)"
                );
                host.fenced();
            }
            (false, SinkErrorKind::Fenced) => error!(
                "{e}: the group has members, and Kafka takes no commit from a consumer outside \
                 it (--partitions); the windows are stored, and a restart resumes after them"
            ),
            _ if waiting > 0 => {
                error!("{e}; {waiting} window(s) wait staged for a commit that goes through")
            }
            _ => error!("{e}; the next window's commit will cover these offsets"),
        }
        match &e.kind {
            // A static member whose place another process took: it stops.
            SinkErrorKind::Permanent => Err(DriverError::Fatal(e.detail.clone())),
            _ => Ok(()),
        }
    }

    /// Retries the commit of the windows held until it goes through, with backoff; breaks
    /// when the member must rejoin or the engine was resumed.
    pub fn publish_pending_until_done<F, S, C, H>(
        &mut self,
        io: &mut Adapters<'_, F, S, C, H>,
    ) -> Result<ControlFlow<Round>, DriverError>
    where
        F: FetchSource + ?Sized,
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
        H: Host + ?Sized,
    {
        let mut backoff = Backoff::standard();
        loop {
            // A commit refused again and again is no stuck loop: the coordinator answers.
            io.host.stepped();
            if io.host.stop_requested() {
                return Err(DriverError::Stopped);
            }
            let publish = |e: &mut Engine, s: &mut S, c: &mut C| e.publish_pending(s, c, true);
            match self.call(publish, io)? {
                ControlFlow::Break(round) => return Ok(ControlFlow::Break(round)),
                ControlFlow::Continue(report) if report.commit_error.is_none() => {
                    return Ok(ControlFlow::Continue(()))
                }
                ControlFlow::Continue(_) if io.host.rejoin_needed() => {
                    return Ok(ControlFlow::Break(Round::Rejoin))
                }
                ControlFlow::Continue(_) => {
                    if !io.host.sleep(backoff.next_delay()) {
                        return Err(DriverError::Stopped);
                    }
                }
            }
        }
    }
}

/// The positions the engine holds once a fetch's batch is processed and the positions are
/// advanced: each partition that answered at its `next_offset` (never back), the others where
/// they were.
pub fn expected_next(
    fetched: &BTreeMap<i32, i64>,
    next_offsets: &[(i32, i64)],
) -> BTreeMap<i32, i64> {
    let next: HashMap<i32, i64> = next_offsets.iter().copied().collect();
    fetched
        .iter()
        .map(|(p, at)| (*p, next.get(p).map_or(*at, |n| (*n).max(*at))))
        .collect()
}
