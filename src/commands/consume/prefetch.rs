//! The fetch worker: while the main thread stores one batch, a thread fetches the next one, so
//! Kafka's time and the database's overlap instead of adding up.
//!
//! The fetch is speculative, and cannot break exactly-once. The main thread asks for the
//! positions it expects to hold once the batch in hand is processed; the worker answers with
//! that fetch, tagged with the request. The answer is used only when its request still equals
//! where the engine stands when the main thread takes it. Anything that moved the positions
//! otherwise (a restart from the store after a failed step, a rebalance, a truncated log,
//! `--max-messages`, a re-created topic) leaves a stale answer: it is dropped unread and the
//! engine's positions are fetched again. A prefetch can cost one wasted fetch, never a skipped
//! or doubled offset: the engine only ever processes what was read at its own positions.
//!
//! At most one request is outstanding and at most one answer waits in a channel of capacity 1,
//! so at most two fetched batches are in memory: the one being stored and the next.
//!
//! The worker owns its own connections (the main thread keeps those that commit, list offsets
//! and run the group protocol) and writes nothing anywhere: on exit it is dropped without
//! waiting for a fetch the broker may hold for its maximum wait.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use log::debug;
use time::OffsetDateTime;

use crate::commands::now_utc;
use crate::kafka::{Fetched, KafkaError, TopicInfo};
use crate::shutdown::Shutdown;

/// How often a wait for the worker looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// What to fetch: the log and the exact `(partition, offset)` positions, sorted by partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub topic: TopicInfo,
    pub positions: Vec<(i32, i64)>,
}

/// A fetch's outcome and when it came back (the arrival time of its records).
#[derive(Debug)]
pub struct FetchAnswer {
    pub result: Result<Fetched, KafkaError>,
    pub arrival: OffsetDateTime,
}

/// Why no answer came.
#[derive(Debug, PartialEq, Eq)]
pub enum Interrupted {
    /// A stop was requested while waiting.
    Shutdown,
    /// The worker thread ended (it panicked).
    WorkerLost,
}

/// The main thread's handle on the fetch worker.
pub struct Prefetcher {
    /// `None` once dropping: the worker ends when it sees the channel closed.
    requests: Option<SyncSender<FetchRequest>>,
    answers: Receiver<(FetchRequest, FetchAnswer)>,
    /// A request was sent and its answer not taken yet.
    outstanding: bool,
    worker: Option<JoinHandle<()>>,
    shutdown: Shutdown,
}

impl Prefetcher {
    /// Starts the worker thread; `fetch` runs on it, one request at a time.
    pub fn start<F>(shutdown: Shutdown, mut fetch: F) -> std::io::Result<Prefetcher>
    where
        F: FnMut(&FetchRequest) -> Result<Fetched, KafkaError> + Send + 'static,
    {
        let (requests, inbox) = sync_channel::<FetchRequest>(1);
        let (outbox, answers) = sync_channel::<(FetchRequest, FetchAnswer)>(1);
        let worker = std::thread::Builder::new()
            .name("fetch".into())
            .spawn(move || {
                while let Ok(request) = inbox.recv() {
                    let result = fetch(&request);
                    let answer = FetchAnswer {
                        result,
                        arrival: now_utc(),
                    };
                    if outbox.send((request, answer)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Prefetcher {
            requests: Some(requests),
            answers,
            outstanding: false,
            worker: Some(worker),
            shutdown,
        })
    }

    /// Starts fetching `request` in the background, unless a fetch is already under way.
    pub fn prefetch(&mut self, request: FetchRequest) {
        if self.outstanding {
            return;
        }
        // A worker that is gone is found out by the next `fetch`.
        self.outstanding = self.send(request).is_ok();
    }

    /// The fetch at exactly `request`: the prefetched answer when it was made for it, else a
    /// fresh fetch (after the answer under way, stale, is dropped). Waits until the answer
    /// comes, or a stop is requested.
    pub fn fetch(&mut self, request: FetchRequest) -> Result<FetchAnswer, Interrupted> {
        if self.outstanding {
            let (asked, answer) = self.receive()?;
            if asked == request {
                return Ok(answer);
            }
            debug!(
                "dropping a prefetched answer for positions {:?}: the consumer is at {:?}",
                asked.positions, request.positions
            );
        }
        self.send(request)?;
        self.outstanding = true;
        self.receive().map(|(_, answer)| answer)
    }

    fn send(&self, request: FetchRequest) -> Result<(), Interrupted> {
        let requests = self.requests.as_ref().ok_or(Interrupted::WorkerLost)?;
        // Capacity 1 and at most one request outstanding: the channel is never full.
        match requests.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                Err(Interrupted::WorkerLost)
            }
        }
    }

    fn receive(&mut self) -> Result<(FetchRequest, FetchAnswer), Interrupted> {
        loop {
            match self.answers.recv_timeout(STOP_CHECK) {
                Ok(answer) => {
                    self.outstanding = false;
                    return Ok(answer);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.shutdown.requested() {
                        return Err(Interrupted::Shutdown);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.outstanding = false;
                    return Err(Interrupted::WorkerLost);
                }
            }
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the request channel ends the worker after the fetch in hand. It holds only
        // its own connections and answers to no one any more, so it is not waited for.
        self.requests = None;
        if let Some(worker) = self.worker.take() {
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::PartitionData;
    use std::sync::{Arc, Mutex};
    use uuid::Uuid;

    fn topic() -> TopicInfo {
        TopicInfo {
            topic_id: Uuid::from_u128(7),
            partitions: vec![0, 1],
        }
    }

    fn at(positions: &[(i32, i64)]) -> FetchRequest {
        FetchRequest {
            topic: topic(),
            positions: positions.to_vec(),
        }
    }

    /// A fake fetch that records what it was asked and answers each partition's position as
    /// its next offset plus one.
    type Asked = Arc<Mutex<Vec<FetchRequest>>>;

    fn recording() -> (
        Asked,
        impl FnMut(&FetchRequest) -> Result<Fetched, KafkaError> + Send + 'static,
    ) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let fetch = move |r: &FetchRequest| {
            log.lock().unwrap().push(r.clone());
            Ok(Fetched::Data(
                r.positions
                    .iter()
                    .map(|(p, o)| PartitionData {
                        partition: *p,
                        records: Vec::new(),
                        next_offset: o + 1,
                        high_watermark: Some(o + 1),
                    })
                    .collect(),
            ))
        };
        (asked, fetch)
    }

    fn next_offsets(answer: FetchAnswer) -> Vec<(i32, i64)> {
        match answer.result {
            Ok(Fetched::Data(parts)) => {
                parts.iter().map(|d| (d.partition, d.next_offset)).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_prefetch_made_for_the_positions_held_is_used_without_a_second_fetch() {
        let (asked, fetch) = recording();
        let mut p = Prefetcher::start(Shutdown::default(), fetch).unwrap();
        assert_eq!(next_offsets(p.fetch(at(&[(0, 5)])).unwrap()), [(0, 6)]);
        p.prefetch(at(&[(0, 6)]));
        assert_eq!(next_offsets(p.fetch(at(&[(0, 6)])).unwrap()), [(0, 7)]);
        assert_eq!(asked.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_prefetch_for_other_positions_is_dropped_and_the_positions_fetched_again() {
        let (asked, fetch) = recording();
        let mut p = Prefetcher::start(Shutdown::default(), fetch).unwrap();
        // Expected to be at 10, but the engine restarted from the store at 4.
        p.prefetch(at(&[(0, 10), (1, 3)]));
        assert_eq!(
            next_offsets(p.fetch(at(&[(0, 4), (1, 3)])).unwrap()),
            [(0, 5), (1, 4)]
        );
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[1].positions, [(0, 4), (1, 3)]);
    }

    #[test]
    fn a_prefetch_for_another_log_is_dropped() {
        let (asked, fetch) = recording();
        let mut p = Prefetcher::start(Shutdown::default(), fetch).unwrap();
        p.prefetch(at(&[(0, 0)]));
        let mut new_log = at(&[(0, 0)]);
        new_log.topic.topic_id = Uuid::from_u128(8);
        p.fetch(new_log.clone()).unwrap();
        assert_eq!(*asked.lock().unwrap(), [at(&[(0, 0)]), new_log]);
    }

    #[test]
    fn only_one_fetch_is_outstanding() {
        let (asked, fetch) = recording();
        let mut p = Prefetcher::start(Shutdown::default(), fetch).unwrap();
        p.prefetch(at(&[(0, 1)]));
        p.prefetch(at(&[(0, 2)]));
        assert_eq!(next_offsets(p.fetch(at(&[(0, 1)])).unwrap()), [(0, 2)]);
        assert_eq!(asked.lock().unwrap().len(), 1);
    }

    #[test]
    fn fetch_errors_are_answered_as_they_are() {
        let mut p = Prefetcher::start(Shutdown::default(), |_: &FetchRequest| {
            Err(KafkaError {
                operation: "fetch",
                detail: "broker down".into(),
                kind: crate::kafka::KafkaErrorKind::Retriable,
            })
        })
        .unwrap();
        p.prefetch(at(&[(0, 1)]));
        let e = p.fetch(at(&[(0, 1)])).unwrap().result.unwrap_err();
        assert_eq!(e.detail, "broker down");
    }

    #[test]
    fn a_stop_request_ends_the_wait_for_a_slow_fetch() {
        let shutdown = Shutdown::default();
        let mut p = Prefetcher::start(shutdown.clone(), |_: &FetchRequest| {
            std::thread::sleep(Duration::from_secs(30));
            Ok(Fetched::Data(Vec::new()))
        })
        .unwrap();
        let stopper = shutdown.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stopper.request();
        });
        // A wait that ignored the request would get the fetch's answer, after 30 s.
        assert_eq!(p.fetch(at(&[(0, 1)])).unwrap_err(), Interrupted::Shutdown);
        drop(p);
    }

    #[test]
    fn a_worker_that_panicked_is_reported() {
        let mut p = Prefetcher::start(
            Shutdown::default(),
            |_: &FetchRequest| -> Result<Fetched, KafkaError> { panic!("bug in fetch") },
        )
        .unwrap();
        assert_eq!(p.fetch(at(&[(0, 1)])).unwrap_err(), Interrupted::WorkerLost);
        assert_eq!(p.fetch(at(&[(0, 1)])).unwrap_err(), Interrupted::WorkerLost);
    }
}
