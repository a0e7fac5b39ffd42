//! One step: a bounded run of records validated, stored raw or dead-lettered, counted into
//! windows, the windows closed stored (or staged), the positions advanced and the windows'
//! offsets committed in the background.
use std::collections::BTreeMap;

use log::{debug, warn};
use time::OffsetDateTime;

use super::publish::log_window;
use super::verdict::{judge, Death, Fate};
use super::{
    same_length, step_len, window_id, ClosedWindow, Counts, DeadLetter, Engine, EngineError,
    InsertOutcome, OffsetCommitter, Position, Publication, RawRecord, Record, SinkError,
    SinkErrorKind, StepReport, StoreSink, WindowOutcome, WindowRecord,
};
use crate::metric::{Rejection, RejectionCode};
use crate::window::{KpiWindow, WindowMessage};

impl Engine {
    /// Processes one step: the first [`step_len`] records of `records` (consumption order;
    /// within a partition, increasing offsets). `arrival` is when they were fetched; it times
    /// the windows and stamps the documents.
    ///
    /// In order: validates each record once; stores the valid ones raw (one unordered insert);
    /// tells replays from duplicate events among those already stored; stores dead letters
    /// (one insert); counts the valid messages into the tumbling windows; stores the windows
    /// this step closed; advances the positions; takes the outcome of the commit in flight
    /// (publishing the staged windows it covers) and starts the commit of the last closed
    /// window's next offsets once none is in flight. Records below their partition's
    /// position, or of a partition this consumer does not read, are skipped.
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
                // The commit that follows is the fence; a member that already knows it will
                // be refused stages nothing it cannot commit.
                if committer.must_rejoin() {
                    return Err(EngineError::Sink(SinkError::new(
                        "staging KPI windows",
                        SinkErrorKind::Rejoin,
                        "this member no longer owns its partitions; rejoining",
                    )));
                }
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

        // 8. Commit what the windows cover, in the background: the next steps store on while
        //    the coordinator answers, and this one takes the outcome of the commit an earlier
        //    step started. Stored directly, a failed commit loses nothing: the positions are
        //    in the last window, which a restart reads. Staged, the windows wait for a commit
        //    that goes through, and are published after it.
        let mut windows = match &self.config.publication {
            Publication::Direct => {
                if let Some(last) = windows.last() {
                    self.uncommitted = Some(last.next_offsets.clone());
                }
                windows
            }
            Publication::AfterCommit { .. } => {
                self.unpublished.extend(windows);
                Vec::new()
            }
        };
        let (published, outcome) = self.settle_commits(store, committer, false)?;
        windows.extend(published);
        let (committed, commit_error) = match outcome {
            Some(Ok(offsets)) => (Some(offsets), None),
            // Reported to the caller, which knows what the failure means (a lost connection,
            // or a group member fenced out) and says so once.
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
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
