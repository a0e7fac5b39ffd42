//! Driving the real loop over a case: the fake Kafka's fetches, the host, injected failures
//! and crashes, truncated logs.

use super::*;

/// The fake Kafka: what a fetch at `positions` might return. A few records per partition,
/// sometimes starting before the position (a compressed batch), sometimes a record of a
/// partition not asked for, interleaved across partitions in a random order; each partition's
/// next offset after its last record, or its end once read to it (past trailing offsets that
/// hold no record), or its end below the position when its log was truncated.
pub(super) struct CaseFetch<'c> {
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
pub(super) struct CaseHost<'c> {
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
/// from; now and then the coordinator refuses commits for a while; half the time commits are
/// answered only some steps after they started.
pub(super) fn arm(store: &FakeStore, rng: &mut Rng) {
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
    // The coordinator answers a commit at once, or only some steps later.
    w.commit_latency = if rng.bool() { 0 } else { rng.usize(1..4) };
}

/// The driver's configuration for the case over `partitions`.
pub(super) fn driver_config(case: &Case) -> DriverConfig {
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
pub(super) fn truncate(
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
pub(super) fn drive(
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
                committer.die_with_commit_in_flight();
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
