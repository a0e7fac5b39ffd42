//! How closed windows become KPI windows: stored directly and committed, or staged,
//! committed with a marker and published once the commit went through; and forgetting the
//! staged copies of published windows.
use log::info;

use super::{
    same_length, staged_marker, ClosedWindow, CommitOutcome, Engine, EngineError, OffsetCommitter,
    Publication, SinkError, StepReport, StoreSink, WindowOutcome, WindowRecord,
    FORGET_STAGED_EVERY,
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

    /// Commits the offsets the staged windows end at, with the marker of the last one, and
    /// publishes them once the commit went through. Returns the windows published and the
    /// commit's outcome (`None`: no window waits). A refused commit leaves them staged: a
    /// member fenced out never publishes them (the partitions' next owner counts their
    /// messages from the committed offsets), and after another failure the next commit that
    /// goes through covers them.
    pub(super) fn commit_and_publish<S, C>(
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
    /// copies are forgotten in batches, [`Engine::forget_staged`]). One already stored was published by a member that resumed these
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
            self.forget_staged(store)?;
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
