//! How closed windows become KPI windows: stored directly and committed, or staged,
//! committed with a marker and published once the commit went through; the commit in flight
//! while the steps go on; and forgetting the staged copies of published windows.
use log::info;

use super::{
    same_length, staged_marker, ClosedWindow, CommitOutcome, Engine, EngineError, InFlight,
    OffsetCommitter, Publication, SinkError, SinkErrorKind, StepReport, StoreSink, WindowOutcome,
    WindowRecord, FORGET_STAGED_EVERY,
};

impl Engine {
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

    /// Takes the outcome of the commit in flight once it has one (with `wait`, waits for it)
    /// and publishes the staged windows it covers if it went through. Returns the windows
    /// published and the commit's outcome (`None`: no commit ended). A refused commit leaves
    /// its windows staged: a member fenced out never publishes them (the partitions' next
    /// owner counts their messages from the committed offsets), and after another failure the
    /// next commit that goes through covers them.
    pub(super) fn take_commit_outcome<S, C>(
        &mut self,
        store: &mut S,
        committer: &mut C,
        wait: bool,
    ) -> Result<(Vec<ClosedWindow>, CommitOutcome), EngineError>
    where
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
    {
        let Some(flight) = &self.in_flight else {
            return Ok((Vec::new(), None));
        };
        let answer = match committer.commit_outcome(wait) {
            None if !wait => return Ok((Vec::new(), None)),
            Some(answer) => answer,
            None => Err(SinkError::new(
                "committing offsets",
                SinkErrorKind::Failed,
                "the commit ended without an outcome",
            )),
        };
        let through = flight.through;
        let offsets = flight.offsets.clone();
        self.in_flight = None;
        match answer {
            Ok(()) => {
                let published = match through {
                    Some(seq) => self.publish(store, seq)?,
                    None => Vec::new(),
                };
                Ok((published, Some(Ok(offsets))))
            }
            Err(e) => Ok((Vec::new(), Some(Err(e)))),
        }
    }

    /// Takes the outcome of the commit in flight, if it has one, then starts the commit of what
    /// waits and takes its outcome too if it already has one. Not after a refusal for the
    /// member's generation or a permanent failure (the member rejoins or stops first), nor,
    /// with `wait`, after any failure (the caller backs off first). With `wait`, waits for
    /// each outcome: then nothing is left in flight. Returns the windows published and the last
    /// outcome taken.
    pub(super) fn settle_commits<S, C>(
        &mut self,
        store: &mut S,
        committer: &mut C,
        wait: bool,
    ) -> Result<(Vec<ClosedWindow>, CommitOutcome), EngineError>
    where
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
    {
        let (mut published, earlier) = self.take_commit_outcome(store, committer, wait)?;
        if let Some(Err(e)) = &earlier {
            // A step tries again at once, as it would have committed anyway: after an outage
            // the commit in flight failed while no step could take its outcome.
            if wait || matches!(e.kind, SinkErrorKind::Fenced | SinkErrorKind::Permanent) {
                return Ok((published, earlier));
            }
        }
        self.start_waiting_commit(committer);
        let (more, outcome) = self.take_commit_outcome(store, committer, wait)?;
        published.extend(more);
        Ok((published, outcome.or(earlier)))
    }

    /// Starts the commit of what waits for one, unless a commit is in flight: the offsets the
    /// staged windows end at, with the marker of the last one, or (stored directly) the last
    /// stored window's offsets.
    pub(super) fn start_waiting_commit<C: OffsetCommitter + ?Sized>(&mut self, committer: &mut C) {
        if self.in_flight.is_some() {
            return;
        }
        match &self.config.publication {
            Publication::Direct => {
                if let Some(offsets) = self.uncommitted.take() {
                    committer.start_commit(&offsets, None);
                    self.in_flight = Some(InFlight {
                        offsets,
                        through: None,
                    });
                }
            }
            Publication::AfterCommit { token } => {
                if let Some(last) = self.unpublished.last() {
                    committer
                        .start_commit(&last.next_offsets, Some(&staged_marker(token, last.seq)));
                    self.in_flight = Some(InFlight {
                        offsets: last.next_offsets.clone(),
                        through: Some(last.seq),
                    });
                }
            }
        }
    }

    /// Forgets the staged copies of the windows this engine published. Called in batches
    /// while it runs and when it is retired (a rebalance, a stop); copies a killed engine left
    /// are forgotten by whoever resumes its partitions, from its commit's marker.
    pub fn forget_staged<S: StoreSink + ?Sized>(
        &mut self,
        store: &mut S,
    ) -> Result<(), EngineError> {
        if let (Publication::AfterCommit { token }, Some(through)) =
            (&self.config.publication, self.published_staged)
        {
            store.forget_staged(token, through)?;
            self.published_staged = None;
            self.published_staged_count = 0;
        }
        Ok(())
    }

    /// Moves the commits on when no step comes to do it (the stream went quiet, too many
    /// windows wait, the run is about to end): [`Engine::settle_commits`]. The report's
    /// `committed` and `commit_error` say how the last commit taken ended; `consumed` is 0.
    pub fn publish_pending<S, C>(
        &mut self,
        store: &mut S,
        committer: &mut C,
        wait: bool,
    ) -> Result<StepReport, EngineError>
    where
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
    {
        if self.poisoned {
            return Err(EngineError::Poisoned);
        }
        self.poisoned = true;
        let (windows, outcome) = self.settle_commits(store, committer, wait)?;
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

    /// Publishes the staged windows up to `through`, whose commit just went through, in order
    /// (their staged copies are forgotten in batches, [`Engine::forget_staged`]). One already
    /// stored was published by a member that resumed these partitions from the commit's
    /// marker: the same window, from the same staged copy.
    fn publish<S: StoreSink + ?Sized>(
        &mut self,
        store: &mut S,
        through: i64,
    ) -> Result<Vec<ClosedWindow>, EngineError> {
        let covered = self.unpublished.partition_point(|w| w.seq <= through);
        if covered == 0 {
            return Ok(Vec::new());
        }
        let outcomes = {
            let records: Vec<WindowRecord> = self.unpublished[..covered]
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
        same_length("window insert", outcomes.len(), covered)?;
        // Their staged copies are forgotten in batches: on FerretDB a delete costs about as
        // much as inserting a step's windows, whatever it deletes.
        self.published_staged = Some(through);
        self.published_staged_count += outcomes.len();
        if self.published_staged_count >= FORGET_STAGED_EVERY {
            self.forget_staged(store)?;
        }
        Ok(self
            .unpublished
            .drain(..covered)
            .zip(outcomes)
            .map(|(mut w, outcome)| {
                w.new = outcome == WindowOutcome::Inserted;
                w
            })
            .collect())
    }
}

pub(super) fn log_window(w: &ClosedWindow) {
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
