//! The consumer's reads: one topic at positions the caller owns, from each partition's leader,
//! recognising a re-created topic. The group's offsets, commits and `status`'s reads are
//! [`super::KafkaAdmin`]'s.
//!
//! Here: the fetch rounds (a thread per leader, a leader that answers late holding back only
//! its own partitions, a pause after rounds without progress); `answer` turns each
//! partition's answer into data.

mod answer;

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use log::{debug, error, warn};
use uuid::Uuid;

use super::admin::{KafkaAdmin, TopicInfo};
use super::cluster::{AutoCreate, ToOpen, TopicMeta};
use super::connection::{Connection, WireError};
use super::fetch::{fetch_from, FetchPosition, PartitionAnswer};
use super::security::Security;
use super::unreadable::Suspects;
use super::{fail, from_wire, KafkaError};
use crate::shutdown::Shutdown;

/// How long the broker may hold a fetch that finds no new data.
pub const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// The first and the longest pause after a fetch round that came back at once without
/// progress (every partition leaderless, or answering an error): doubled each such round, so
/// that a broken partition costs a request now and then, not a storm of them. At most 1 s, as
/// every other retry toward Kafka ([`crate::retry::Backoff::standard`]): just after a cluster
/// came back, partitions answer errors until their leaders are elected, and a 5 s cap let the
/// consumer sleep 1.6-3.2 s while records were already waiting (`tests/cluster.rs`).
const NO_PROGRESS_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const NO_PROGRESS_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Bytes asked per partition and fetch; a batch larger than this is still returned whole when
/// it is the first of the response, and otherwise the size is doubled up to the limit. The
/// consumer fetches the next batch while it stores one (two batches in memory), and storing
/// takes far longer than fetching: 1 MiB (Kafka's default `max.message.bytes`, so a batch of
/// a default topic always fits) keeps a few steps of work ready without holding more.
pub const FETCH_PARTITION_BYTES: i32 = 1024 * 1024;
/// Above Kafka's largest configurable batch in practice (`max.message.bytes` is an int, but
/// brokers cap requests at `socket.request.max.bytes`, 100 MiB by default).
pub const FETCH_PARTITION_BYTES_LIMIT: i32 = 128 * 1024 * 1024;
/// How long a fetch round waits for the leaders past the broker's own wait: a leader that has
/// not answered by then is left to answer later, and its partitions skip the rounds until it
/// does, so one hung broker does not hold the partitions of the others.
const ROUND_GRACE: Duration = Duration::from_secs(2);

/// How often a fetch round looks for the leaders' answers.
const ROUND_POLL: Duration = Duration::from_millis(5);

/// A fetch to one leader: the connection it runs on comes back with the answer.
type LeaderAnswer = (Option<Connection>, Result<Vec<PartitionAnswer>, WireError>);

/// A fetch to one leader that outlived its round: its thread still runs.
struct LateFetch {
    positions: Vec<FetchPosition>,
    answer: Receiver<LeaderAnswer>,
}

/// What one partition gave in one fetch: the engine's type, filled here.
pub type PartitionData = crate::engine::PartitionFetch;

/// The outcome of one fetch round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Data (possibly none) for the partitions that answered.
    Data(Vec<PartitionData>),
    /// The topic was deleted and created again: a new log, read from its start.
    TopicChanged(TopicInfo),
}

/// Reads a topic at positions the caller owns.
pub struct KafkaSource {
    /// The connections, and the log being read; out-of-range answers list offsets through it.
    admin: KafkaAdmin,
    /// Per-partition fetch size, grown for batches larger than the default.
    fetch_bytes: HashMap<i32, i32>,
    /// Fetch rounds in a row that came back at once without progress.
    rounds_without_progress: u32,
    /// Per leader, a fetch that did not answer within its round.
    late: HashMap<i32, LateFetch>,
    /// Batches found unreadable once, fetched again before they are passed over.
    suspects: Suspects,
}

impl KafkaSource {
    pub fn new(brokers: Vec<String>, topic: String, group: String, shutdown: Shutdown) -> Self {
        KafkaSource {
            admin: KafkaAdmin::new(brokers, topic, group, shutdown),
            fetch_bytes: HashMap::new(),
            rounds_without_progress: 0,
            late: HashMap::new(),
            suspects: Suspects::default(),
        }
    }

    /// Secures every connection to the brokers as `security` says (TLS, SASL).
    pub fn with_security(mut self, security: Security) -> Self {
        self.admin = self.admin.with_security(security);
        self
    }

    /// Adopts the log a `Fetched::TopicChanged` announced.
    pub fn follow(&mut self, info: &TopicInfo) {
        self.admin.follow(info);
        self.fetch_bytes.clear();
        self.suspects.clear();
    }

    /// Fetches from each `(partition, offset)`, from each partition's leader at once; the
    /// broker waits up to `FETCH_MAX_WAIT` for data. Partitions whose leader is unknown or
    /// failed are left out of this round (their position stays) and metadata is reloaded.
    pub fn fetch(&mut self, positions: &[(i32, i64)]) -> Result<Fetched, KafkaError> {
        let started = Instant::now();
        let meta = match self.admin.cluster.meta() {
            Some(m) => m.clone(),
            None => self.admin.cluster.refresh(AutoCreate::No)?,
        };
        let topic_id = meta.topic_id;
        if let Some(changed) = self.changed(&meta) {
            return Ok(Fetched::TopicChanged(changed));
        }

        let mut by_leader: BTreeMap<i32, Vec<FetchPosition>> = BTreeMap::new();
        let mut refresh = false;
        for (p, o) in positions {
            if self.suspects.held(*p, started) {
                // Waits before fetching a batch found unreadable again.
                continue;
            }
            match meta.partitions.get(p).and_then(|l| l.broker) {
                Some(leader) => by_leader.entry(leader).or_default().push(FetchPosition {
                    partition: *p,
                    offset: *o,
                    max_bytes: self
                        .fetch_bytes
                        .get(p)
                        .copied()
                        .unwrap_or(FETCH_PARTITION_BYTES),
                }),
                None => refresh = true,
            }
        }

        // One thread per leader, each with its own connection: a leader that holds its fetch
        // for FETCH_MAX_WAIT does not delay the data another one has, and one that does not
        // answer at all holds only its own partitions (see `collect`).
        let mut results: Vec<(Vec<FetchPosition>, LeaderAnswer)> = Vec::new();
        let mut running: Vec<(i32, Vec<FetchPosition>, Receiver<LeaderAnswer>)> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        for (leader, ps) in by_leader {
            match self.late_answer(leader, &ps) {
                Late::StillWaiting => continue,
                Late::Answered(answer) => {
                    results.push((ps, *answer));
                    continue;
                }
                Late::None => {}
            }
            match self.admin.cluster.take_or_plan(leader) {
                Ok(connection) => {
                    running.push((leader, ps.clone(), spawn_fetch(connection, topic_id, ps)))
                }
                Err(e @ (WireError::TooOld(_) | WireError::Security(_))) => {
                    return Err(from_wire("fetch", e))
                }
                Err(e) => {
                    failures.push(format!("broker {leader}: {e}"));
                    refresh = true;
                }
            }
        }
        // The round ends when every leader answered, or at `round_ends` once at least one
        // did: with nothing else to process, waiting on costs nothing (and a slow answer, a
        // large batch expanding on a busy machine, is not taken for a hung leader).
        let round_ends = started + FETCH_MAX_WAIT + ROUND_GRACE;
        let mut pending = running;
        loop {
            pending.retain(|(leader, ps, answer)| match answer.try_recv() {
                Ok(a) => {
                    results.push((ps.clone(), a));
                    false
                }
                Err(TryRecvError::Empty) => true,
                // The thread panicked: its connection is gone with it.
                Err(TryRecvError::Disconnected) => {
                    failures.push(format!("broker {leader}: the fetch thread failed"));
                    refresh = true;
                    false
                }
            });
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= round_ends && !(results.is_empty() && failures.is_empty()) {
                for (leader, ps, answer) in pending {
                    debug!(
                        "broker {leader} did not answer a fetch within {:?}; partitions {:?} \
                         skip the rounds until it does",
                        FETCH_MAX_WAIT + ROUND_GRACE,
                        ps.iter().map(|p| p.partition).collect::<Vec<_>>()
                    );
                    self.late.insert(
                        leader,
                        LateFetch {
                            positions: ps,
                            answer,
                        },
                    );
                }
                break;
            }
            std::thread::sleep(ROUND_POLL);
        }

        let mut data = Vec::new();
        let asked: HashMap<i32, i64> = positions.iter().copied().collect();
        for (ps, (connection, result)) in results {
            match result {
                Ok(answers) => {
                    if let Some(c) = connection {
                        self.admin.cluster.put(c);
                    }
                    for answer in answers {
                        // An answer for a partition not asked about is not ours to read.
                        let Some(&at) = asked.get(&answer.partition) else {
                            warn!(
                                "a fetch answer names partition {}, which was not asked for; \
                                 ignored",
                                answer.partition
                            );
                            continue;
                        };
                        match self.take_answer(answer, at) {
                            Ok(Some(d)) => data.push(d),
                            Ok(None) => refresh = true,
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e @ (WireError::TooOld(_) | WireError::Security(_))) => {
                    return Err(from_wire("fetch", e))
                }
                Err(e) => {
                    // A protocol error leaves the stream in an unknown state too: drop it.
                    drop(connection);
                    let names: Vec<String> = ps.iter().map(|p| p.partition.to_string()).collect();
                    failures.push(format!("partitions {}: {e}", names.join(",")));
                    refresh = true;
                }
            }
        }

        if refresh {
            match self.admin.cluster.refresh(AutoCreate::No) {
                Ok(meta) => {
                    if let Some(changed) = self.changed(&meta) {
                        return Ok(Fetched::TopicChanged(changed));
                    }
                }
                Err(e) if data.is_empty() => return Err(e),
                Err(_) => {}
            }
        }
        if data.is_empty() && !failures.is_empty() {
            return Err(fail("fetch", failures.join("; ")));
        }
        data.sort_by_key(|d| d.partition);
        let progress = data
            .iter()
            .any(|d| !d.records.is_empty() || asked.get(&d.partition) != Some(&d.next_offset));
        self.back_off_without_progress(progress, started.elapsed());
        Ok(Fetched::Data(data))
    }

    /// What became of an earlier round's fetch to `leader` that was still running: its
    /// answer is used when it was asked at exactly the positions asked now (partitions whose
    /// leader was late keep their positions, so it usually was); else it is dropped and its
    /// connection kept.
    fn late_answer(&mut self, leader: i32, positions: &[FetchPosition]) -> Late {
        let Some(late) = self.late.get(&leader) else {
            return Late::None;
        };
        match late.answer.try_recv() {
            Err(TryRecvError::Empty) => Late::StillWaiting,
            Err(TryRecvError::Disconnected) => {
                self.late.remove(&leader);
                Late::None
            }
            Ok((connection, result)) => {
                let asked_then = self.late.remove(&leader).map(|l| l.positions);
                if asked_then.as_deref() == Some(positions) {
                    return Late::Answered(Box::new((connection, result)));
                }
                if let (Some(c), Ok(_)) = (connection, &result) {
                    self.admin.cluster.put(c);
                }
                Late::None
            }
        }
    }

    /// A round that brought no record and moved no position, and came back well before the
    /// broker's wait was up, met an error or no leader rather than an idle log: the next one
    /// waits, longer each time, until a round makes progress.
    fn back_off_without_progress(&mut self, progress: bool, took: Duration) {
        if progress || took >= FETCH_MAX_WAIT / 2 {
            self.rounds_without_progress = 0;
            return;
        }
        let pause = no_progress_pause(self.rounds_without_progress);
        self.rounds_without_progress = self.rounds_without_progress.saturating_add(1);
        debug!(
            "fetch round {} without progress in {took:?}; next in {pause:?}",
            self.rounds_without_progress
        );
        self.admin.shutdown.sleep(pause);
    }
}

/// What an earlier round's fetch to a leader left for this round.
enum Late {
    /// No fetch of an earlier round runs for this leader.
    None,
    /// It still runs: the leader's partitions skip this round.
    StillWaiting,
    /// It answered, at the positions asked now.
    Answered(Box<LeaderAnswer>),
}

/// Runs one leader's fetch on a thread of its own, opening the connection there if need be;
/// the answer arrives on the receiver.
fn spawn_fetch(
    connection: ToOpen,
    topic_id: Uuid,
    positions: Vec<FetchPosition>,
) -> Receiver<LeaderAnswer> {
    let (send, receive) = sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("fetch-leader".into())
        .spawn(move || {
            let answer = match connection.open() {
                Ok(mut c) => {
                    let result = fetch_from(&mut c, topic_id, &positions, FETCH_MAX_WAIT);
                    (Some(c), result)
                }
                Err(e) => (None, Err(e)),
            };
            // Nobody waits any more when the source was dropped meanwhile.
            let _ = send.send(answer);
        });
    if let Err(e) = spawned {
        warn!("cannot start a fetch thread ({e}); this leader's partitions skip a round");
    }
    receive
}

/// The pause after the `rounds`+1-th fetch round in a row without progress: doubled each
/// round, from [`NO_PROGRESS_BACKOFF_FIRST`] up to [`NO_PROGRESS_BACKOFF_MAX`].
fn no_progress_pause(rounds: u32) -> Duration {
    NO_PROGRESS_BACKOFF_FIRST
        .saturating_mul(1 << rounds.min(10))
        .min(NO_PROGRESS_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_fetch_holds_only_its_leader_and_its_answer_serves_the_same_positions() {
        let mut source = KafkaSource::new(
            vec!["127.0.0.1:9".into()],
            "t".into(),
            "g".into(),
            Shutdown::default(),
        );
        let at = |offset| {
            vec![FetchPosition {
                partition: 0,
                offset,
                max_bytes: FETCH_PARTITION_BYTES,
            }]
        };
        let (answer, late) = sync_channel(1);
        source.late.insert(
            1,
            LateFetch {
                positions: at(5),
                answer: late,
            },
        );
        assert!(matches!(source.late_answer(1, &at(5)), Late::StillWaiting));
        assert!(matches!(source.late_answer(2, &at(5)), Late::None));
        let (addr, _) = super::super::connection_tests::fake_broker(Vec::new());
        let connection = Connection::open(&addr, &Security::plaintext()).unwrap();
        answer.send((Some(connection), Ok(Vec::new()))).unwrap();
        assert!(matches!(source.late_answer(1, &at(5)), Late::Answered(_)));
        assert!(source.late.is_empty());

        // Answered for positions the consumer no longer holds: dropped, a new fetch is made.
        let (answer, late) = sync_channel(1);
        source.late.insert(
            1,
            LateFetch {
                positions: at(5),
                answer: late,
            },
        );
        let connection = Connection::open(&addr, &Security::plaintext()).unwrap();
        answer.send((Some(connection), Ok(Vec::new()))).unwrap();
        assert!(matches!(source.late_answer(1, &at(9)), Late::None));
        assert!(source.late.is_empty());
    }

    #[test]
    fn rounds_without_progress_back_off_doubling_up_to_one_second() {
        let pauses: Vec<u128> = (0..7).map(|r| no_progress_pause(r).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(no_progress_pause(u32::MAX), NO_PROGRESS_BACKOFF_MAX);
    }
}
