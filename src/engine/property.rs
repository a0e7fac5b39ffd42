//! The exactly-once property, checked the way sled and TigerBeetle check theirs: a seeded
//! random log, a fake Kafka handing out random fetch chunks, and the real loop ([`Driver`])
//! over fake store and group offsets; failures injected after a random number of sink calls
//! (in the middle of a write, between two writes, after a step): a crash replaces the process
//! by a fresh driver resumed from what the fakes hold, a single failed call is the driver's to
//! recover from, a coordinator refuses commits for a while, a partition's log is truncated
//! under the consumer; again and again until the whole log is consumed. Then the invariants,
//! on what is stored:
//!
//! - I1: every valid `message_uuid` is stored raw exactly once, from one of its positions,
//!   with its fields as received;
//! - I2: every window holds exactly `window_size` stored messages within its offset spans, no
//!   stored message is in two windows, and those in none are the last engine's open window, at
//!   the end of their partitions (or were read past a truncation's cut); with one stream and
//!   no truncation, the windows are also numbered 0..n and window k counts exactly the raw
//!   messages between window k-1's next offsets and its own. In half the cases engines take
//!   turns over random shares of the partitions (each share its own stream), as group members
//!   do across rebalances; half the cases stage their windows and publish them after the
//!   commit, and go on after a failed commit;
//! - I3: every invalid record and every other occurrence of a stored `message_uuid` is
//!   dead-lettered exactly once, with its reason code (and, for a duplicate, where the stored
//!   copy is);
//! - every commit is the boundary of a window stored before it (or, after a truncation, the
//!   positions alone), and commits never go back (except to a truncated log's new end);
//! - backpressure: no more windows wait staged past their commit than the loop's limit plus
//!   what one step closes, and the log is consumed (a truncated partition read to its new
//!   end).
//!
//! What each record should become comes from the generator, which says what it made (a valid
//! metric and its `message_uuid`, or the reason code it will be refused with): the checks never
//! ask `metric::validate`, so a defect in validation fails them too.
//!
//! Every run checks the fixed seeds 0..300 and a few fresh random ones (printed, so a failure
//! replays). A failing case prints its seed; `ENGINE_SEED=<seed> cargo test --lib
//! engine::property` runs that one alone.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::rc::Rc;

use fastrand::Rng;
use serde_json::Value;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::fake::{FakeCommitter, FakeStore, Partial, World};
use super::*;
use crate::window::PartitionSpan;

/// The fixed seeds, 0..CASES, checked by every run.
const CASES: u64 = 300;
/// Fresh random seeds checked by every run on top of the fixed ones, so that runs try new cases.
const FRESH_CASES: usize = 20;
/// Fetch rounds after which a case has failed to finish (every round with no crash progresses).
const MAX_ROUNDS: usize = 20_000;
const T0: OffsetDateTime = datetime!(2026-11-22 18:00:00 UTC);
const TOPIC: &str = "metrics";
const TOPIC_ID: &str = "0b9f3c1e-7d1a-4c55-9d4e-3f1f7a2b6c10";
const GROUP: &str = "kpi";
/// Raw documents of this server are refused by the fake store, like a schema validator.
const REFUSED: &str = "refused01";
const SERVERS: [&str; 4] = ["web01", "web02", "db01", "app01"];

/// What the generator made a record to be: the oracle the invariants are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Made {
    /// A valid metric with this `message_uuid`, which the store takes.
    Valid(String),
    /// A valid metric of the server the fake store refuses ([`REFUSED`]).
    Refused,
    /// Refused before it reaches the store, with this reason code.
    Invalid(&'static str),
}

/// One generated world: a log per partition and the engine's settings.
struct Case {
    partitions: Vec<i32>,
    logs: BTreeMap<i32, Vec<Record>>,
    /// What the fake Kafka serves: `logs` until a truncation cuts a partition's end off (then
    /// `logs` keeps what was read, the oracle).
    live: BTreeMap<i32, Vec<Record>>,
    /// What each record (partition, offset) was made to be.
    made: HashMap<(i32, i64), Made>,
    log_start: HashMap<i32, i64>,
    /// Where a caught-up consumer stands: past the last record and any offsets after it that
    /// hold no record (transaction markers), which a fetch reports as its next offset.
    ends: BTreeMap<i32, i64>,
    window_size: usize,
    limits: Limits,
    partial: Partial,
    /// Windows staged and published after their commit, as group members do.
    staged: bool,
    /// Engines take turns over random subsets of the partitions, as group members do across
    /// rebalances (each subset is its own window stream); the last one reads them all.
    shares: bool,
    /// A partition's log is truncated under the consumer once in a while.
    truncate: bool,
    /// Windows held past a failing commit before the loop stops reading.
    max_unpublished: usize,
}

impl Case {
    /// The configuration of the `incarnation`th engine of the case over `partitions`: a
    /// staging engine's token is its own.
    fn config(&self, incarnation: usize, partitions: &[i32]) -> EngineConfig {
        EngineConfig {
            log: LogId {
                topic: TOPIC.into(),
                topic_id: TOPIC_ID.into(),
            },
            group: GROUP.into(),
            partitions: partitions.to_vec(),
            window_size: NonZeroUsize::new(self.window_size).unwrap(),
            servers_listed: crate::window::MAX_LISTED,
            limits: self.limits,
            publication: if self.staged {
                Publication::AfterCommit {
                    token: format!("engine{incarnation}"),
                }
            } else {
                Publication::Direct
            },
        }
    }
}

fn metric_json(rng: &mut Rng, server: &str, uuid: &str) -> Value {
    // Some readings cross the alert thresholds.
    let hot = rng.u8(..5) == 0;
    serde_json::json!({
        "server_id": server,
        "timestamp_utc": format!("2026-11-22T18:{:02}:{:02}.{:06}+00:00",
            rng.u8(..60), rng.u8(..60), rng.u32(..1_000_000)),
        "metrics": {
            "cpu_percent": if hot { 95.5 } else { f64::from(rng.u8(..90)) + 0.25 },
            "memory_percent": f64::from(rng.u8(..=100)),
            "disk_io_mbps": rng.f64() * 500.0,
            "network_mbps": rng.f64() * 1000.0,
            "error_count": rng.i64(0..5)
        },
        "message_uuid": uuid,
        "extra": {"rack": rng.u8(..9)}
    })
}

fn uuid(rng: &mut Rng) -> String {
    uuid::Uuid::from_u128(rng.u128(..)).to_string()
}

/// A random payload of a random kind, and what it was made to be; valid ones are remembered
/// (with their `message_uuid`) so later records can repeat them (the same event produced twice).
fn payload(
    rng: &mut Rng,
    limits: &Limits,
    produced: &mut Vec<(Vec<u8>, String)>,
) -> (Option<Vec<u8>>, Made) {
    let server = SERVERS[rng.usize(..SERVERS.len())];
    let roll = rng.u8(..100);
    let (bytes, made) = match roll {
        0..=59 => {
            let id = uuid(rng);
            let p = metric_json(rng, server, &id).to_string().into_bytes();
            produced.push((p.clone(), id.clone()));
            (p, Made::Valid(id))
        }
        60..=69 if !produced.is_empty() => {
            let (p, id) = produced[rng.usize(..produced.len())].clone();
            (p, Made::Valid(id))
        }
        60..=69 => (b"[]".to_vec(), Made::Invalid("not_an_object")),
        70..=73 => (vec![b'{', 0xff, 0xfe, b'}'], Made::Invalid("not_utf8")),
        74..=77 => (
            br#"{"server_id": "web01", "metrics": {"#.to_vec(),
            Made::Invalid("invalid_json"),
        ),
        78..=82 => {
            let mut v = {
                let id = uuid(rng);
                metric_json(rng, server, &id)
            };
            let (field, code) = [
                ("server_id", "bad_server_id"),
                ("timestamp_utc", "bad_timestamp"),
                ("metrics", "bad_metrics"),
                ("message_uuid", "bad_message_uuid"),
            ][rng.usize(..4)];
            v.as_object_mut().unwrap().remove(field);
            (v.to_string().into_bytes(), Made::Invalid(code))
        }
        83..=86 => return (None, Made::Invalid("no_value")),
        87..=92 => {
            // Large: valid JSON padded (size is judged before validity), or junk, sometimes
            // multi-byte text so the kept head must not split a character. Exactly at the limit
            // now and then: that one is still stored (or refused for what it is).
            let target = if rng.u8(..4) == 0 {
                limits.payload_bytes
            } else {
                limits.payload_bytes + 1 + rng.usize(..limits.payload_bytes)
            };
            let (mut bytes, within_limit) = match rng.u8(..3) {
                0 => {
                    let id = uuid(rng);
                    let mut v = metric_json(rng, server, &id);
                    v["pad"] = Value::String(String::new());
                    let base = v.to_string().len();
                    v["pad"] = Value::String("x".repeat(target.saturating_sub(base)));
                    let p = v.to_string().into_bytes();
                    // A strict prefix of a JSON object is not JSON: a cut one is invalid.
                    let made = if p.len() <= target {
                        Made::Valid(id.clone())
                    } else {
                        Made::Invalid("invalid_json")
                    };
                    if p.len() <= limits.payload_bytes {
                        produced.push((p.clone(), id));
                    }
                    (p, made)
                }
                1 => {
                    // "é€" is 5 bytes: a cut after 0 or 2 of them keeps whole characters
                    // (text, but not JSON), any other cut splits one (not UTF-8).
                    let made = if matches!(target % 5, 0 | 2) {
                        Made::Invalid("invalid_json")
                    } else {
                        Made::Invalid("not_utf8")
                    };
                    ("é€".repeat(target / 5 + 1).into_bytes(), made)
                }
                _ => {
                    let junk: Vec<u8> = (0..target).map(|_| rng.u8(..)).collect();
                    // Random bytes are all but never UTF-8; std's decoder says which.
                    let made = if std::str::from_utf8(&junk).is_err() {
                        Made::Invalid("not_utf8")
                    } else {
                        Made::Invalid("invalid_json")
                    };
                    (junk, made)
                }
            };
            bytes.truncate(target);
            let made = if bytes.len() > limits.payload_bytes {
                Made::Invalid("payload_too_large")
            } else {
                within_limit
            };
            (bytes, made)
        }
        _ => {
            let id = uuid(rng);
            (
                metric_json(rng, REFUSED, &id).to_string().into_bytes(),
                Made::Refused,
            )
        }
    };
    (Some(bytes), made)
}

fn generate(rng: &mut Rng) -> Case {
    let mut all = vec![0, 1, 2, 3];
    rng.shuffle(&mut all);
    let mut partitions = all[..rng.usize(1..=3)].to_vec();
    partitions.sort_unstable();
    let limits = Limits {
        step_messages: rng.usize(1..=12),
        step_bytes: rng.usize(200..=3_000),
        payload_bytes: 600,
        head_bytes: rng.usize(1..=80),
    };
    let mut produced = Vec::new();
    let mut logs = BTreeMap::new();
    let mut made = HashMap::new();
    let mut log_start = HashMap::new();
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        let start = rng.i64(0..4);
        let mut offset = start;
        let mut log = Vec::new();
        for _ in 0..rng.usize(0..=40) {
            let (value, what) = payload(rng, &limits, &mut produced);
            made.insert((p, offset), what);
            log.push(Record {
                partition: p,
                offset,
                value,
                oversized: None,
            });
            // Gaps: compacted records, transaction markers.
            offset += 1 + if rng.u8(..8) == 0 { rng.i64(1..4) } else { 0 };
        }
        let end = log.last().map_or(start, |r: &Record| r.offset + 1) + rng.i64(0..3);
        log_start.insert(p, start);
        ends.insert(p, end);
        logs.insert(p, log);
    }
    Case {
        partitions,
        live: logs.clone(),
        logs,
        made,
        log_start,
        ends,
        window_size: rng.usize(1..=7),
        limits,
        partial: if rng.bool() {
            Partial::Prefix
        } else {
            Partial::Subset
        },
        staged: rng.bool(),
        shares: rng.bool(),
        truncate: rng.u8(..3) == 0,
        max_unpublished: rng.usize(1..=3),
    }
}

/// The fake Kafka: what a fetch at `positions` might return. A few records per partition,
/// sometimes starting before the position (a compressed batch), sometimes a record of a
/// partition not asked for, interleaved across partitions in a random order; each partition's
/// next offset after its last record, or its end once read to it (past trailing offsets that
/// hold no record), or its end below the position when its log was truncated.
struct CaseFetch<'c> {
    case: &'c Case,
    rng: &'c mut Rng,
    clock: &'c mut OffsetDateTime,
    /// Per partition, the offset after the last record any fetch handed out.
    handed_out: &'c mut BTreeMap<i32, i64>,
}

impl FetchSource for CaseFetch<'_> {
    fn fetch(&mut self, positions: &BTreeMap<i32, i64>) -> Result<Fetch, DriverError> {
        let (case, rng) = (self.case, &mut *self.rng);
        *self.clock += Duration::milliseconds(rng.i64(0..1_500));
        let mut lists: Vec<Vec<Record>> = Vec::new();
        let mut parts = Vec::new();
        for (p, &at) in positions {
            let log = &case.live[p];
            let end = case.ends[p];
            let from = log.partition_point(|r| r.offset < at);
            let back = if rng.u8(..6) == 0 {
                rng.usize(..=from.min(3))
            } else {
                0
            };
            let to = (from + rng.usize(..=10)).min(log.len());
            let records = log[from - back..to].to_vec();
            let next_offset = if at > end || to == log.len() {
                end
            } else {
                records.last().map_or(at, |r| r.offset + 1).max(at)
            };
            if let Some(last) = records.last() {
                let seen = self.handed_out.entry(*p).or_insert(0);
                *seen = (*seen).max(last.offset + 1);
            }
            lists.push(records);
            parts.push(PartitionFetch {
                partition: *p,
                records: Vec::new(),
                next_offset,
                high_watermark: Some(end),
            });
        }
        if rng.u8(..20) == 0 {
            lists.push(vec![Record {
                partition: 99,
                offset: 0,
                value: Some(b"not ours".to_vec()),
                oversized: None,
            }]);
        }
        // The engine takes records in any interleaving of the partitions: the first part
        // carries them all.
        let mut out = Vec::new();
        let mut cursors = vec![0; lists.len()];
        loop {
            let open: Vec<usize> = (0..lists.len())
                .filter(|&i| cursors[i] < lists[i].len())
                .collect();
            if open.is_empty() {
                break;
            }
            let i = open[rng.usize(..open.len())];
            out.push(lists[i][cursors[i]].clone());
            cursors[i] += 1;
        }
        if let Some(first) = parts.first_mut() {
            first.records = out;
        }
        Ok(Fetch::Data {
            parts,
            arrival: *self.clock,
        })
    }
}

/// The fake process around the loop: never asked to rejoin, a new token per engine, and
/// dead once a crash (not a single failed call) was injected: it stops where it is, as a
/// killed process would, instead of retrying a commit that can never answer.
struct CaseHost<'c> {
    tokens: &'c mut usize,
    world: &'c RefCell<World>,
}

impl CaseHost<'_> {
    fn dead(&self) -> bool {
        self.world.borrow().killed
    }
}

impl Host for CaseHost<'_> {
    fn stop_requested(&self) -> bool {
        self.dead()
    }
    fn rejoin_needed(&self) -> bool {
        false
    }
    fn fenced(&mut self) {}
    fn stepped(&mut self) {}
    fn sleep(&mut self, _delay: std::time::Duration) -> bool {
        !self.dead()
    }
    fn new_token(&mut self) -> String {
        *self.tokens += 1;
        format!("engine{}", self.tokens)
    }
}

/// Sink calls until the next injected failure: often a few (inside the next step or two),
/// sometimes none at all (a run that gets to the end). Half the failures are crashes (every
/// call fails until the process is replaced), half a single failed call the loop recovers
/// from; now and then the coordinator refuses commits for a while.
fn arm(store: &FakeStore, rng: &mut Rng) {
    let mut w = store.world();
    w.budget = if rng.u8(..5) == 0 {
        None
    } else {
        Some(rng.usize(..15))
    };
    w.crash_once = rng.bool();
    w.killed = false;
    if rng.u8(..8) == 0 {
        w.commit_outage = rng.usize(1..60);
    }
}

/// What a case exercised, summed over all cases to show the schedule reaches every path.
#[derive(Default)]
struct Coverage {
    crashes: usize,
    /// Failed calls the driver recovered from without being replaced.
    recovered: usize,
    /// Cases whose windows ended up in more than one stream.
    several_streams: usize,
    commit_errors_survived: usize,
    truncations: usize,
    steps: Counts,
    crashed_in: BTreeMap<&'static str, usize>,
}

/// The driver's configuration for the case over `partitions`.
fn driver_config(case: &Case) -> DriverConfig {
    DriverConfig {
        log: LogId {
            topic: TOPIC.into(),
            topic_id: TOPIC_ID.into(),
        },
        group: GROUP.into(),
        window_size: NonZeroUsize::new(case.window_size).unwrap(),
        servers_listed: crate::window::MAX_LISTED,
        limits: case.limits,
        member: case.staged,
        max_unpublished: case.max_unpublished,
    }
}

/// Truncates a partition's log under the consumer, as an unclean leader election does: the
/// records from a random offset below the driver's position on are gone (they were all read,
/// and nothing past the position was ever handed out, so the oracle's log is what was read).
fn truncate(
    case: &mut Case,
    driver: &Driver,
    handed_out: &BTreeMap<i32, i64>,
    rng: &mut Rng,
    world: &mut World,
) -> bool {
    let candidates: Vec<(i32, i64)> = driver
        .engine()
        .positions()
        .iter()
        .filter(|(p, at)| {
            **at > case.log_start[p]
                && handed_out.get(p).is_none_or(|h| h <= at)
                && !world.truncated.contains_key(p)
        })
        .map(|(p, at)| (*p, *at))
        .collect();
    if candidates.is_empty() {
        return false;
    }
    let (p, at) = candidates[rng.usize(..candidates.len())];
    let cut = rng.i64(case.log_start[&p]..at);
    // The oracle's log: what was read. The fetches': what is left.
    case.logs.get_mut(&p).unwrap().retain(|r| r.offset < at);
    case.live.get_mut(&p).unwrap().retain(|r| r.offset < cut);
    case.ends.insert(p, cut);
    world.truncated.insert(p, cut);
    true
}

/// Drives the real loop ([`Driver`]) over the case until the log is consumed, with failures
/// injected at random: a crash replaces the process (a fresh driver resumed from what the
/// store and the group hold), a single failed call is the driver's to recover from. Returns
/// the last engine's open window.
fn drive(
    case: &mut Case,
    rng: &mut Rng,
    store: &mut FakeStore,
    committer: &mut FakeCommitter,
    coverage: &mut Coverage,
) -> Result<usize, String> {
    let mut driver: Option<Driver> = None;
    let mut tokens = 0;
    let mut clock = T0;
    let mut handed_out: BTreeMap<i32, i64> = BTreeMap::new();
    arm(store, rng);
    for _ in 0..MAX_ROUNDS {
        let crashes_before: usize = store.world().crashed_in.values().sum();
        let failed_commits = store.world().failed_commits;
        let world = Rc::clone(&store.0);
        let mut host = CaseHost {
            tokens: &mut tokens,
            world: &world,
        };
        let mut source = CaseFetch {
            case,
            rng,
            clock: &mut clock,
            handed_out: &mut handed_out,
        };
        let mut io = Adapters {
            source: &mut source,
            sink: &mut *store,
            committer: &mut *committer,
            host: &mut host,
        };
        let outcome = match driver.as_mut() {
            None => {
                // A share of the partitions, or all of them (always, once the log is
                // consumed: that engine ends the case).
                let mut share = case.partitions.clone();
                if case.shares && io.source.rng.bool() {
                    io.source.rng.shuffle(&mut share);
                    share.truncate(io.source.rng.usize(1..=share.len()));
                    share.sort_unstable();
                }
                Driver::start(driver_config(case), &share, &mut io).map(|d| {
                    driver = Some(d);
                    None
                })
            }
            Some(d) => {
                let e = d.engine();
                if e.positions().iter().all(|(p, at)| case.ends[p] == *at) {
                    if e.unpublished() == 0 {
                        coverage.steps.add(&d.totals().counts);
                        if e.positions().len() == case.partitions.len() {
                            return Ok(e.pending());
                        }
                        // This share is read: a rebalance hands the partitions out again.
                        driver = None;
                        continue;
                    }
                    // Caught up with windows whose commit failed: the consumer retries it
                    // while the stream is quiet.
                    d.round(None, &mut io).map(Some)
                } else {
                    d.round(None, &mut io).map(Some)
                }
            }
        };
        let crashed = store.world().crashed_in.values().sum::<usize>() > crashes_before;
        match outcome {
            Err(_) => {
                // The process died: a fresh one resumes from what is stored.
                if let Some(d) = driver.take() {
                    coverage.steps.add(&d.totals().counts);
                }
                coverage.crashes += 1;
                arm(store, rng);
            }
            Ok(round) => {
                if crashed {
                    coverage.recovered += 1;
                    arm(store, rng);
                }
                coverage.commit_errors_survived += store.world().failed_commits - failed_commits;
                if let Some(Round::Read { .. }) = round {
                    let d = driver.as_ref().expect("a driver ran the round");
                    if case.truncate && rng.u8(..10) == 0 {
                        let mut world = store.world();
                        if truncate(case, d, &handed_out, rng, &mut world) {
                            coverage.truncations += 1;
                        }
                    }
                }
            }
        }
        if let Some(d) = &driver {
            let held = d.engine().unpublished();
            let bound = case.max_unpublished + case.limits.step_messages;
            if held > bound {
                return Err(format!(
                    "backpressure: {held} windows held, at most {bound}"
                ));
            }
        }
    }
    let state = driver.as_ref().map(|d| {
        let e = d.engine();
        (
            e.positions().clone(),
            e.unpublished(),
            e.pending(),
            e.is_poisoned(),
        )
    });
    let w = store.world();
    Err(format!(
        "not consumed after {MAX_ROUNDS} rounds: driver {state:?}, log ends {:?}, truncated {:?}, \
         budget {:?}, commit outage {}",
        case.ends, w.truncated, w.budget, w.commit_outage
    ))
}

fn dead_id(p: i32, offset: i64) -> String {
    format!("{TOPIC}/{TOPIC_ID}/{p}/{offset}")
}

/// The invariants, on what the fakes hold once the log is consumed.
fn check(case: &Case, world: &World, pending: usize) -> Result<(), String> {
    // What each record should have become.
    let mut expected_dead: BTreeMap<String, (&str, &Record, Option<StoredPosition>)> =
        BTreeMap::new();
    let mut occurrences: HashMap<String, Vec<&Record>> = HashMap::new();
    for r in case.logs.values().flatten() {
        let id = dead_id(r.partition, r.offset);
        // The generator's word, never `metric::validate`'s.
        let code = match &case.made[&(r.partition, r.offset)] {
            Made::Invalid(code) => *code,
            Made::Refused => "rejected_by_database",
            Made::Valid(uuid) => {
                occurrences.entry(uuid.clone()).or_default().push(r);
                continue;
            }
        };
        expected_dead.insert(id, (code, r, None));
    }

    // I1: one raw document per valid message_uuid, from one of its positions, as received.
    if world.raw.len() != occurrences.len() {
        return Err(format!(
            "I1: {} raw documents for {} valid message_uuids",
            world.raw.len(),
            occurrences.len()
        ));
    }
    for (uuid, occ) in &occurrences {
        let Some(stored) = world.raw.get(uuid) else {
            return Err(format!("I1: {uuid} is not stored raw"));
        };
        let pos = &stored.position;
        let Some(first) = occ
            .iter()
            .find(|r| r.partition == pos.partition && r.offset == pos.offset)
        else {
            return Err(format!(
                "I1: {uuid} stored from {pos}, not one of its positions"
            ));
        };
        if pos.topic != TOPIC || pos.topic_id != TOPIC_ID {
            return Err(format!("I1: {uuid} stored with position {pos}"));
        }
        let received: Value = serde_json::from_slice(first.value.as_deref().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        if Value::Object(stored.fields.clone()) != received {
            return Err(format!("I1: {uuid} stored with changed fields"));
        }
        // One server applying inserts in order stores the first occurrence of a partition.
        if case.partial == Partial::Prefix
            && occ
                .iter()
                .any(|r| r.partition == pos.partition && r.offset < pos.offset)
        {
            return Err(format!(
                "I1: {uuid} stored from {pos}, not its first occurrence"
            ));
        }
        for r in occ
            .iter()
            .filter(|r| !(r.partition == pos.partition && r.offset == pos.offset))
        {
            expected_dead.insert(
                dead_id(r.partition, r.offset),
                ("duplicate_message_uuid", r, Some(pos.clone())),
            );
        }
    }

    // I3: every other record dead-lettered once, with its code and its payload.
    let missing: Vec<&String> = expected_dead
        .keys()
        .filter(|id| !world.dead.contains_key(*id))
        .collect();
    let unexpected: Vec<&String> = world
        .dead
        .keys()
        .filter(|id| !expected_dead.contains_key(*id))
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(format!(
            "I3: dead letters missing {missing:?}, not expected {unexpected:?}"
        ));
    }
    for (id, (code, record, duplicate_of)) in &expected_dead {
        let d = &world.dead[id];
        if d.code != *code {
            return Err(format!(
                "I3: {id} dead-lettered as {}, expected {code}",
                d.code
            ));
        }
        if d.duplicate_of != *duplicate_of {
            return Err(format!(
                "I3: {id} duplicate of {:?}, expected {duplicate_of:?}",
                d.duplicate_of
            ));
        }
        let full = record.value.as_deref();
        let kept_right = match (full, &d.payload, &d.truncated) {
            (None, None, None) => true,
            (Some(v), Some(kept), None) => v.len() <= case.limits.payload_bytes && kept == v,
            (Some(v), Some(kept), Some((len, sha))) => {
                v.len() > case.limits.payload_bytes
                    && kept.len() <= case.limits.head_bytes
                    && kept.len() + 3 >= case.limits.head_bytes.min(v.len())
                    && v.starts_with(kept)
                    && *len == v.len()
                    && *sha == sha256_hex(v)
            }
            _ => false,
        };
        if !kept_right {
            return Err(format!(
                "I3: {id} kept {:?} / {:?}",
                d.payload.as_ref().map(Vec::len),
                d.truncated
            ));
        }
    }

    // I2: windows partition the raw messages in consumption order.
    check_spans(case, world, pending)?;
    if !world.truncated.is_empty() {
        // Windows went on from a lower offset after the truncation: checked by their spans.
        return commits_and_replays(world);
    }
    let stream = stream_name(
        &case.config(0, &case.partitions).log,
        GROUP,
        &case.partitions,
    );
    let windows = world.stream_windows(&stream);
    if windows.len() != world.windows.len() {
        if case.shares {
            // Several streams: their windows were checked by their spans.
            return commits_and_replays(world);
        }
        return Err("I2: windows of another stream".into());
    }
    let mut prev: BTreeMap<i32, i64> = case
        .partitions
        .iter()
        .map(|p| (*p, case.log_start[p]))
        .collect();
    let counted = |from: &BTreeMap<i32, i64>, to: Option<&BTreeMap<i32, i64>>| -> Vec<(i32, i64)> {
        let mut v: Vec<(i32, i64)> = world
            .raw
            .values()
            .map(|s| (s.position.partition, s.position.offset))
            .filter(|(p, o)| *o >= from[p] && to.is_none_or(|to| *o < to[p]))
            .collect();
        v.sort_unstable();
        v
    };
    for (i, w) in windows.iter().enumerate() {
        if w.seq != i as i64 || w.topic_id != TOPIC_ID {
            return Err(format!(
                "I2: window {i} stored as seq {} of {}",
                w.seq, w.topic_id
            ));
        }
        let next: BTreeMap<i32, i64> = w.next_offsets.iter().copied().collect();
        if next.keys().ne(prev.keys()) || next.iter().any(|(p, o)| *o < prev[p]) {
            return Err(format!("I2: window {i} ends at {next:?} before {prev:?}"));
        }
        let members = counted(&prev, Some(&next));
        if w.window.message_count != case.window_size || members.len() != case.window_size {
            return Err(format!(
                "I2: window {i} of {} messages covers {} stored ones ({prev:?}..{next:?})",
                w.window.message_count,
                members.len()
            ));
        }
        let mut spans: Vec<PartitionSpan> = Vec::new();
        for (p, o) in &members {
            match spans.last_mut() {
                Some(s) if s.partition == *p => {
                    s.last_offset = *o;
                    s.message_count += 1;
                }
                _ => spans.push(PartitionSpan {
                    partition: *p,
                    first_offset: *o,
                    last_offset: *o,
                    message_count: 1,
                }),
            }
        }
        if spans != w.window.partitions {
            return Err(format!(
                "I2: window {i} spans {:?}, its messages are {spans:?}",
                w.window.partitions
            ));
        }
        prev = next;
    }
    let open = counted(&prev, None);
    if open.len() >= case.window_size || open.len() != pending {
        return Err(format!(
            "I2: {} stored messages after the last window, the engine holds {pending}",
            open.len()
        ));
    }

    commits_and_replays(world)
}

/// Commits were checked as they happened; no window was computed twice.
fn commits_and_replays(world: &World) -> Result<(), String> {
    if let Some(v) = world.violations.first() {
        return Err(format!("commit: {v}"));
    }
    if world.window_replays != 0 {
        return Err(format!("{} windows computed twice", world.window_replays));
    }
    Ok(())
}

/// I2 by offset spans, whatever the streams: every window holds `window_size` stored messages
/// within its spans, no stored message lies in two windows, and those in none are the last
/// engine's open window, at the end of their partitions.
fn check_spans(case: &Case, world: &World, pending: usize) -> Result<(), String> {
    let stored: BTreeSet<(i32, i64)> = world
        .raw
        .values()
        .map(|s| (s.position.partition, s.position.offset))
        .collect();
    let mut counted: BTreeMap<(i32, i64), &str> = BTreeMap::new();
    for (id, w) in &world.windows {
        let mut members = 0;
        for span in &w.window.partitions {
            for &(p, o) in stored
                .range((span.partition, span.first_offset)..=(span.partition, span.last_offset))
            {
                members += 1;
                if let Some(other) = counted.insert((p, o), id) {
                    return Err(format!(
                        "I2: partition {p} offset {o} in windows {other} and {id}"
                    ));
                }
            }
        }
        if members != case.window_size || w.window.message_count != case.window_size {
            return Err(format!(
                "I2: window {id} of {} messages spans {members} stored ones",
                w.window.message_count
            ));
        }
    }
    // Records read past a truncation's cut, dropped with the open window, are in no window.
    let truncated = |(p, o): &(i32, i64)| world.truncated.get(p).is_some_and(|cut| o >= cut);
    let uncounted: Vec<&(i32, i64)> = stored
        .iter()
        .filter(|m| !counted.contains_key(*m) && !truncated(m))
        .collect();
    if uncounted.len() != pending {
        return Err(format!(
            "I2: {} stored messages in no window, the last engine holds {pending}",
            uncounted.len()
        ));
    }
    if let Some((p, o)) = uncounted
        .iter()
        .find(|(p, o)| counted.keys().any(|(cp, co)| cp == p && co > o))
    {
        return Err(format!(
            "I2: partition {p} offset {o} is in no window, but later ones are"
        ));
    }
    Ok(())
}

fn run_case(seed: u64, coverage: &mut Coverage) -> Result<(), String> {
    let mut rng = Rng::with_seed(seed);
    let mut case = generate(&mut rng);
    let mut world = World::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    world.refuse_server = Some(REFUSED.into());
    world.partial = case.partial;
    world.log_start = case.log_start.clone();
    if case.staged {
        world.max_held = Some(case.max_unpublished + case.limits.step_messages);
    }
    let (mut store, mut committer) = world.shared();
    let pending = drive(&mut case, &mut rng, &mut store, &mut committer, coverage)?;
    let world = store.world();
    for (op, n) in &world.crashed_in {
        *coverage.crashed_in.entry(op).or_default() += n;
    }
    let streams: BTreeSet<&str> = world.windows.values().map(|w| w.stream.as_str()).collect();
    coverage.several_streams += usize::from(streams.len() > 1);
    check(&case, &world, pending)
}

#[test]
fn exactly_once_survives_a_crash_between_any_two_writes() {
    let seeds: Vec<u64> = match std::env::var("ENGINE_SEED") {
        Ok(s) => vec![s.parse().expect("ENGINE_SEED is a number")],
        Err(_) => {
            // The fixed seeds, then fresh ones from a randomly seeded generator.
            let fresh: Vec<u64> = (0..FRESH_CASES).map(|_| fastrand::u64(CASES..)).collect();
            eprintln!(
                "engine::property: fixed seeds 0..{CASES} and fresh seeds {fresh:?} \
                 (ENGINE_SEED=<seed> cargo test --lib engine::property replays one)"
            );
            (0..CASES).chain(fresh).collect()
        }
    };
    let single = seeds.len() == 1;
    let mut coverage = Coverage::default();
    for seed in seeds {
        if let Err(e) = run_case(seed, &mut coverage) {
            panic!(
                "seed {seed}: {e}\n(rerun: ENGINE_SEED={seed} cargo test --lib engine::property)"
            );
        }
    }
    eprintln!(
        "{} crashes ({:?}); {:?}",
        coverage.crashes, coverage.crashed_in, coverage.steps
    );
    if single {
        return;
    }
    // The schedule must reach every path, or passing proves nothing.
    let c = &coverage.steps;
    assert!(
        c.stored > 0 && c.replayed > 0 && c.dead_lettered > 0,
        "{c:?}"
    );
    assert!(c.windows > 0 && c.skipped > 0, "{c:?}");
    assert!(
        coverage.several_streams > 30,
        "too few cases took turns over shares of the partitions: {}",
        coverage.several_streams
    );
    assert!(
        coverage.truncations > 10 && coverage.recovered > 30,
        "too few truncations ({}) or failures recovered in-process ({})",
        coverage.truncations,
        coverage.recovered
    );
    assert!(
        coverage.commit_errors_survived > 10,
        "too few runs went on after a failed commit: {}",
        coverage.commit_errors_survived
    );
    for op in [
        "raw insert",
        "raw lookup",
        "dead-letter insert",
        "window insert",
        "window lookup",
        "offset commit",
        "offset fetch",
        "window staging",
        "staged publication",
        "staged forget",
        "window scan",
    ] {
        assert!(
            coverage.crashed_in.get(op).is_some_and(|n| *n > 10),
            "too few crashes in {op}: {:?}",
            coverage.crashed_in
        );
    }
}
