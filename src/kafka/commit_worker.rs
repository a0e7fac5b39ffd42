//! Offset commits on a thread of their own, over connections of their own to the group's
//! coordinator, so that the consume loop goes on storing while a commit waits for its answer.
//! After a broker's death an offset commit waits, as an `acks=all` write does, until the
//! controller drops the dead node from the offsets topic's in-sync replicas (its broker
//! session timeout, about 9 s); fetching and storing the partitions whose leaders live need
//! not wait with it. Java's consumer commits asynchronously for the same reason.
//!
//! One commit at a time, in the order they were started: the thread takes them from a queue
//! the engine never fills past one ([`crate::engine::OffsetCommitter`]).
//!
//! After a commit failed for a reason that may pass (no coordinator, a dead broker), the next
//! one waits out a backoff first. The engine starts a new commit at the next step, and steps
//! come as fast as records do: without it, a dead coordinator drew about five failed commits a
//! second from each member, each a lookup and an ERROR line.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Instant;

use log::debug;
use uuid::Uuid;

use super::{fail, Generation, KafkaAdmin, KafkaError, KafkaErrorKind, Security};
use crate::retry::Backoff;
use crate::shutdown::Shutdown;

/// One commit: what to commit, and the member and log it is committed for, as they were when
/// it started.
pub struct CommitJob {
    pub offsets: Vec<(i32, i64)>,
    pub marker: Option<String>,
    /// The member's generation (`None`: a commit outside group membership).
    pub generation: Option<Generation>,
    /// The id of the topic's incarnation being read.
    pub topic_id: Option<Uuid>,
    /// The group's coordinator as the consumer's other client knows it: the thread's first
    /// commit goes there instead of looking it up through the bootstrap brokers again.
    pub coordinator: Option<String>,
}

/// How a commit ended: the offsets it committed (or tried to), and the outcome.
pub struct CommitAnswer {
    pub offsets: Vec<(i32, i64)>,
    pub outcome: Result<(), KafkaError>,
}

/// The thread that commits, and the commit it has in hand.
pub struct CommitWorker {
    jobs: Option<Sender<CommitJob>>,
    outcomes: Receiver<Result<(), KafkaError>>,
    thread: Option<JoinHandle<()>>,
    /// The offsets of the commit handed over whose outcome was not taken yet.
    in_flight: Option<Vec<(i32, i64)>>,
}

impl CommitWorker {
    /// Starts the thread, with a cluster client of its own for `group`'s commits on `topic`.
    pub fn start(
        brokers: Vec<String>,
        topic: String,
        group: String,
        security: Security,
        shutdown: Shutdown,
    ) -> std::io::Result<CommitWorker> {
        let (jobs, queue) = mpsc::channel::<CommitJob>();
        let (answers, outcomes) = mpsc::channel();
        let mut admin =
            KafkaAdmin::new(brokers, topic, group, shutdown.clone()).with_security(security);
        let thread = std::thread::Builder::new()
            .name("offset-commits".into())
            .spawn(move || {
                // Until the thread knew a coordinator once: after a failure it looks the
                // coordinator up itself, so another client's stale answer cannot hold it.
                let mut adopting = true;
                let mut backoff = Backoff::standard();
                let mut not_before: Option<Instant> = None;
                for job in queue {
                    if let Some(at) = not_before.take() {
                        let wait = at.saturating_duration_since(Instant::now());
                        debug!("offset commit: waiting {wait:?} after the last failure");
                        // A stop request cuts the wait short: a run's last commit goes at once.
                        shutdown.sleep(wait);
                    }
                    if let (true, Some(addr)) = (adopting, &job.coordinator) {
                        admin.cluster.adopt_coordinator(addr);
                    }
                    adopting &= admin.cluster.coordinator().is_none();
                    admin.generation = job.generation;
                    admin.topic_id = job.topic_id;
                    let started = Instant::now();
                    let outcome = admin.commit(&job.offsets, job.marker.as_deref());
                    debug!(
                        "offset commit of {:?}: {} after {:.2} s",
                        job.offsets,
                        if outcome.is_ok() { "done" } else { "failed" },
                        started.elapsed().as_secs_f64()
                    );
                    adopting &= admin.cluster.coordinator().is_none();
                    match &outcome {
                        Ok(()) => backoff.reset(),
                        // A fenced member's next commit belongs to its next generation.
                        Err(e) if e.kind == KafkaErrorKind::Retriable => {
                            not_before = Some(Instant::now() + backoff.next_delay());
                        }
                        Err(_) => {}
                    }
                    if answers.send(outcome).is_err() {
                        break;
                    }
                }
            })?;
        Ok(CommitWorker {
            jobs: Some(jobs),
            outcomes,
            thread: Some(thread),
            in_flight: None,
        })
    }

    /// Hands a commit to the thread. The caller takes the outcome of the one before first.
    pub fn start_commit(&mut self, job: CommitJob) {
        self.in_flight = Some(job.offsets.clone());
        // A thread that is gone answers nothing: `outcome` then reports it.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    /// The outcome of the commit in flight, taken, with the offsets it committed: `None` when
    /// none is, or (without `wait`) while it has none yet.
    pub fn outcome(&mut self, wait: bool) -> Option<CommitAnswer> {
        self.in_flight.as_ref()?;
        let answer = if wait {
            self.outcomes.recv().ok()
        } else {
            match self.outcomes.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => None,
            }
        };
        let offsets = self.in_flight.take().unwrap_or_default();
        let outcome =
            answer.unwrap_or_else(|| Err(fail("offset-commit", "the commit thread ended")));
        Some(CommitAnswer { offsets, outcome })
    }
}

impl Drop for CommitWorker {
    /// Closes the queue and waits for the commit in hand, bounded by the commit's own
    /// deadlines.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
