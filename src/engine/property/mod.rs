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
//!
//! `generate` makes the cases, `drive` runs the real driver over them with failures injected,
//! `checks` holds the invariants.

mod checks;
mod drive;
mod generate;

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
use checks::check;
use drive::drive;
use generate::{generate, Case, Made};

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

/// What a case exercised, summed over all cases to show the schedule reaches every path.
#[derive(Default)]
struct Coverage {
    crashes: usize,
    /// Failed calls the driver recovered from without being replaced.
    recovered: usize,
    /// Cases whose windows ended up in more than one stream.
    several_streams: usize,
    commit_errors_survived: usize,
    /// Raw inserts made while a commit was in flight.
    stored_during_commit: usize,
    truncations: usize,
    steps: Counts,
    crashed_in: BTreeMap<&'static str, usize>,
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
    coverage.stored_during_commit += world.stored_during_commit;
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
        "{} crashes ({:?}); {:?}; {} raw inserts while a commit was in flight",
        coverage.crashes, coverage.crashed_in, coverage.steps, coverage.stored_during_commit
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
        coverage.stored_during_commit > 100,
        "too few steps stored while a commit was in flight: {}",
        coverage.stored_during_commit
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
