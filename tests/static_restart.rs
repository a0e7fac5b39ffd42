//! `make chaos`: a static member (KIP-345, `--group-instance-id`) SIGKILLed and started again
//! at once with the same instance id, five times in a row (each member in turn, so the group's
//! leader too), while two other members read and a producer writes to a 3-partition topic.
//! Each restart is measured, restart to the restarted process's first store (its `/metrics`,
//! polled every 20 ms; the target: at most 1 s, where a dynamic member waited 11.4 s on
//! average in the last `make chaos` before static membership), and must move nothing:
//!
//! - the other members' generation, rebalance count and partitions (their `/metrics`) do not
//!   change, and their logs show no rebalance;
//! - the coordinator, asked with DescribeGroups every 100 ms through the tests' own wire client,
//!   answers `Stable` throughout; afterwards it lists the same member ids for the others and a
//!   new one for the restarted instance (the coordinator replaced it);
//! - the group's records in `__consumer_offsets`, as Kafka's own console consumer prints them
//!   with its group-metadata formatter, never name a generation past the settled one;
//!
//! and at the end every record kcat reads from the topic is stored exactly once, nothing is
//! dead-lettered, and the windows hold each message once. The figures go to stderr as
//! `FIGURE` lines and to `target/chaos/static_restart.txt`.

mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod oracle;
    pub mod process;
    pub mod scrape;
    pub mod services;
}
mod static_group;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::GroupId;
use kafka_protocol::protocol::StrBytes;

use common::kafka_tools::kafka_tool;
use common::kafka_wire::{self, Conn};
use common::kcat::kcat_read;
use common::messages::{kafka_position, uuid_of};
use common::oracle::check_windows_against_raw;
use common::process::{poll, text, unix_now};
use common::services::{repo_root, Sandbox};
use static_group::{messages_sent, three_members, GroupView, Member, SERVERS, SESSION};

/// Kills and restarts.
const REPEATS: usize = 5;
/// The target for restart to first store.
const TARGET: Duration = Duration::from_secs(1);

/// The group as its coordinator answers DescribeGroups: its state and each member's id by
/// instance id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    state: String,
    members: BTreeMap<String, String>,
}

/// FindCoordinator v3 on any broker, then DescribeGroups v5 (the first version with instance
/// ids, answered by Kafka 3.9 and 4.x) on the coordinator.
fn describe(brokers: &str, group: &str) -> std::io::Result<Described> {
    let find = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let found = Conn::any(brokers)?.call(&find, 3)?;
    if found.error_code != 0 {
        return Err(std::io::Error::other(format!(
            "FindCoordinator: error code {}",
            found.error_code
        )));
    }
    let mut coordinator = Conn::connect(&format!("{}:{}", found.host.as_str(), found.port))?;
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let answer = coordinator.call(&request, 5)?;
    let g = answer
        .groups
        .first()
        .ok_or_else(|| std::io::Error::other("DescribeGroups answered no group"))?;
    if g.error_code != 0 {
        return Err(std::io::Error::other(format!(
            "DescribeGroups: error code {}",
            g.error_code
        )));
    }
    Ok(Described {
        state: g.group_state.to_string(),
        members: g
            .members
            .iter()
            .map(|m| {
                let instance = m.group_instance_id.as_ref().map_or("", |i| i.as_str());
                (instance.to_string(), m.member_id.to_string())
            })
            .collect(),
    })
}

/// DescribeGroups every 100 ms on a thread until stopped: the states answered, in order
/// (an error answers as `error: ...`).
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Watcher {
    fn start(brokers: &str, group: &str) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let (brokers, group) = (brokers.to_string(), group.to_string());
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                seen.push(match describe(&brokers, &group) {
                    Ok(d) => d.state,
                    Err(e) => format!("error: {e}"),
                });
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        Watcher { stop, thread }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the DescribeGroups watcher")
    }
}

/// The partition of `__consumer_offsets` that holds `group`, as Kafka places it: the absolute
/// value of Java's `String.hashCode` (0 for `i32::MIN`) modulo the topic's partitions.
fn offsets_partition(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

/// The group's generations as the coordinator recorded them before `until_ms` (its
/// GroupMetadata records in `__consumer_offsets`, each stamped with the time the group's state
/// last changed, read by Kafka's console consumer with its group-metadata formatter), oldest
/// first. Later records are left out: once the members stop, the coordinator drops them after
/// the session timeout, which is a new generation of an empty group.
fn recorded_generations(brokers: &str, group: &str, until_ms: i64) -> Vec<i64> {
    let meta = kafka_wire::metadata(brokers, "__consumer_offsets", false)
        .expect("metadata of __consumer_offsets");
    let count = meta
        .topics
        .first()
        .map(|t| t.partitions.len())
        .filter(|n| *n > 0)
        .expect("__consumer_offsets has partitions");
    let partition = offsets_partition(group, i32::try_from(count).expect("partition count"));
    let out = kafka_tool(&[
        "console-consumer",
        "--bootstrap-server",
        brokers,
        "--topic",
        "__consumer_offsets",
        "--partition",
        &partition.to_string(),
        "--offset",
        "earliest",
        "--formatter",
        "org.apache.kafka.tools.consumer.GroupMetadataMessageFormatter",
        "--timeout-ms",
        "15000",
    ]);
    let stdout = text(&out.stdout);
    // The formatter writes one JSON object a record, not always a line each: read a stream.
    let generations: Vec<i64> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<serde_json::Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("the formatter's output is no JSON ({e})")))
        .filter(|v| v["key"]["data"]["group"].as_str() == Some(group))
        .filter_map(|v| {
            // A tombstone (the group deleted) has no value.
            let data = &v.get("value").filter(|v| !v.is_null())?["data"];
            let stamp = data["currentStateTimestamp"].as_i64().unwrap_or(i64::MIN);
            let generation = data["generation"]
                .as_i64()
                .unwrap_or_else(|| panic!("no generation in: {v}"));
            (stamp < until_ms).then_some(generation)
        })
        .collect();
    assert!(
        !generations.is_empty(),
        "Kafka's console consumer printed no record of group {group} from partition \
         {partition} of __consumer_offsets; stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    generations
}

/// One kill and restart, as measured.
struct Restart {
    victim: String,
    leader: bool,
    joined: Duration,
    first_read: Duration,
    first_store: Duration,
    generation_after: Option<i64>,
    describes: usize,
}

#[test]
#[ignore = "make chaos: five SIGKILLs and restarts of a static member, about 2 min"]
fn chaos_static_member_sigkilled_and_restarted_5_times_without_a_rebalance() {
    let started = Instant::now();
    let sb = Sandbox::new("static_restart");
    let (mut members, generation) = three_members(&sb);
    // Each log and where its rebalance-free part begins: what the first members logged up to
    // here is the group forming; the restarted processes' logs are read whole.
    let mut logs: Vec<(std::path::PathBuf, usize)> = members
        .iter()
        .map(|m| (m.proc.log.clone(), m.proc.log_text().len()))
        .collect();
    let mut producer = sb.spawn(
        "produce",
        &["produce", "--servers", SERVERS, "--interval", "0.1"],
    );
    let mut figures = vec![format!(
        "scenario static_restart: 3 static members of one group on a 3-partition topic, a \
         report of 12 servers every 0.1 s; settled in generation {generation}"
    )];

    let mut restarts = Vec::new();
    for run in 1..=REPEATS {
        let victim = (run - 1) % members.len();
        // The victim is working: it stored since it (re)started.
        let working = poll(Duration::from_secs(60), Duration::from_millis(100), || {
            (members[victim].gauge("messages_stored_total")? > 0).then_some(())
        });
        assert!(
            working.is_some(),
            "{} stored nothing; log:\n{}",
            members[victim].id,
            members[victim].proc.log_tail(20)
        );
        std::thread::sleep(Duration::from_secs(1));
        let others: Vec<usize> = (0..members.len()).filter(|i| *i != victim).collect();
        let views = |members: &[Member]| -> Vec<(String, Option<GroupView>)> {
            others
                .iter()
                .map(|i| (members[*i].id.clone(), members[*i].group_view()))
                .collect()
        };
        let before = views(&members);
        let described_before = describe(&sb.brokers, &sb.group).expect("DescribeGroups");
        assert_eq!(described_before.state, "Stable", "{described_before:?}");
        assert_eq!(described_before.members.len(), 3, "{described_before:?}");

        let watcher = Watcher::start(&sb.brokers, &sb.group);
        let m = &mut members[victim];
        let leader = m.is_leader();
        m.proc.child.kill().expect("SIGKILL");
        let _ = m.proc.child.wait();
        let restarted = Instant::now();
        let log_name = format!("{}-restart{run}", m.id);
        m.restart(&sb, &log_name);
        logs.push((m.proc.log.clone(), 0));
        let (mut joined, mut first_read) = (None, None);
        let first_store = poll(Duration::from_secs(60), Duration::from_millis(20), || {
            if joined.is_none() && m.gauge("group_generation").is_some_and(|g| g >= 0) {
                joined = Some(restarted.elapsed());
            }
            // Records read again up to the last window are replayed, not stored.
            if first_read.is_none() && m.gauge("messages_read_total").is_some_and(|n| n > 0) {
                first_read = Some(restarted.elapsed());
            }
            (m.gauge("messages_stored_total")? > 0).then(|| restarted.elapsed())
        })
        .unwrap_or_else(|| panic!("no store after the restart; log:\n{}", m.proc.log_tail(30)));
        let generation_after = m.gauge("group_generation");
        // A rebalance the restart set off would show within a heartbeat or two (3 s apart).
        std::thread::sleep(Duration::from_secs(2));
        let states = watcher.finish();
        let r = Restart {
            victim: members[victim].id.clone(),
            leader,
            joined: joined.unwrap_or(first_store),
            first_read: first_read.unwrap_or(first_store),
            first_store,
            generation_after,
            describes: states.len(),
        };
        let line = format!(
            "FIGURE static_restart run {run}: {} ({}) SIGKILLed and restarted: joined {:.2} s, \
             first record read {:.2} s, first store {:.2} s after the restart; its generation \
             {generation} before, {} \
             after; the others' (generation, rebalances, partitions) {}; DescribeGroups \
             answered {} times: {}",
            r.victim,
            if r.leader { "leader" } else { "follower" },
            r.joined.as_secs_f64(),
            r.first_read.as_secs_f64(),
            r.first_store.as_secs_f64(),
            r.generation_after
                .map_or("none".to_string(), |g| g.to_string()),
            before
                .iter()
                .map(|(id, v)| format!("{id} {v:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.describes,
            summarize(&states),
        );
        eprintln!("{line}");
        figures.push(line);

        let after = views(&members);
        assert_eq!(before, after, "the other members saw a rebalance");
        assert_eq!(
            r.generation_after,
            Some(generation),
            "the restarted member rejoined another generation"
        );
        assert!(
            states.iter().all(|s| s == "Stable"),
            "the coordinator left Stable during the restart: {states:?}"
        );
        assert!(
            r.describes >= 5,
            "DescribeGroups answered {} times",
            r.describes
        );
        let described = describe(&sb.brokers, &sb.group).expect("DescribeGroups");
        for i in &others {
            let id = &members[*i].id;
            assert_eq!(
                described.members.get(id),
                described_before.members.get(id),
                "{id}'s member id changed: {described:?}"
            );
        }
        assert_ne!(
            described.members.get(&r.victim),
            described_before.members.get(&r.victim),
            "the restarted member kept its old member id: the coordinator did not replace it"
        );
        assert_eq!(described.members.len(), 3, "{described:?}");
        assert!(
            r.first_store < SESSION / 2,
            "first store {:?} after the restart: the session timeout was waited out",
            r.first_store
        );
        restarts.push(r);
    }

    // Every record the producer wrote is stored once; no duplicate was dead-lettered.
    assert_eq!(producer.stop(Duration::from_secs(60)), Some(0));
    let sent = messages_sent(&producer);
    let records = kcat_read(&sb.brokers, &sb.topic);
    assert_eq!(
        records.len() as u64,
        sent,
        "the topic holds other than what the producer sent"
    );
    let all = poll(Duration::from_secs(120), Duration::from_millis(250), || {
        (sb.count("raw") >= sent).then_some(())
    });
    assert!(all.is_some(), "stored {} of {sent}", sb.count("raw"));
    let stopping_ms = (unix_now() * 1000.0) as i64;
    for m in &mut members {
        assert_eq!(
            m.proc.stop(Duration::from_secs(60)),
            Some(0),
            "{}",
            m.proc.log_tail(10)
        );
    }
    let raw = sb.docs("raw", mongodb::bson::doc! {}, mongodb::bson::doc! {});
    let mut stored: HashMap<String, (i32, i64)> = HashMap::new();
    for d in &raw {
        let uuid = d.get_str("message_uuid").expect("message_uuid").to_string();
        let (_, partition, offset) = kafka_position(d);
        assert!(
            stored.insert(uuid.clone(), (partition, offset)).is_none(),
            "{uuid} stored twice"
        );
    }
    for r in &records {
        let uuid = r
            .payload
            .as_deref()
            .and_then(uuid_of)
            .unwrap_or_else(|| panic!("record {}/{} without a uuid", r.partition, r.offset));
        assert_eq!(
            stored.get(&uuid),
            Some(&(r.partition, r.offset)),
            "{uuid} is not stored from where kcat reads it"
        );
    }
    assert_eq!(
        raw.len(),
        records.len(),
        "raw documents that no record explains"
    );
    assert_eq!(sb.count("dlq"), 0, "dead letters");
    let windows = check_windows_against_raw(&sb, 20);

    // No member logged a rebalance after the group formed.
    for (path, from) in &logs {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        let rebalanced: Vec<&str> = log
            .get(*from..)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("rebalancing"))
            .collect();
        assert!(
            rebalanced.is_empty(),
            "{} logged a rebalance: {rebalanced:?}",
            path.display()
        );
    }

    // The coordinator's own record, read by Kafka's tool: no generation past the settled one.
    let recorded = recorded_generations(&sb.brokers, &sb.group, stopping_ms);
    let last = *recorded.last().expect("a record");
    let at_settled = recorded.iter().filter(|g| **g == generation).count();
    let line = format!(
        "FIGURE static_restart: __consumer_offsets holds {} GroupMetadata records of the group \
         until the members stopped (Kafka's console consumer), generations {recorded:?}: \
         {at_settled} at the settled generation {generation}, the last {last}",
        recorded.len()
    );
    eprintln!("{line}");
    figures.push(line);
    assert!(
        recorded.iter().all(|g| *g <= generation),
        "the coordinator recorded a generation past {generation}: {recorded:?}"
    );
    assert_eq!(last, generation, "{recorded:?}");

    let secs: Vec<f64> = restarts
        .iter()
        .map(|r| r.first_store.as_secs_f64())
        .collect();
    let mut sorted = secs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let line = format!(
        "FIGURE static_restart: restart to first store {} s (median {median:.2} s, at most \
         {:.2} s; target {} s, met {} of {}); the others' generation unchanged in every run; \
         {sent} records, {} stored once, 0 dead-lettered, {windows} windows; {:.0} s",
        secs.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        sorted.last().copied().unwrap_or_default(),
        TARGET.as_secs(),
        secs.iter().filter(|s| **s <= TARGET.as_secs_f64()).count(),
        secs.len(),
        raw.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("{line}");
    figures.push(line);
    let dir = repo_root().join("target/chaos");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("static_restart.txt"), figures.join("\n") + "\n");
    assert!(
        median <= TARGET.as_secs_f64(),
        "restart to first store: median {median:.2} s, over the target of {TARGET:?}"
    );
}

/// `Stable ×37`, or the runs of states in order when more than one was seen.
fn summarize(states: &[String]) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for s in states {
        match runs.last_mut() {
            Some((last, n)) if last == s => *n += 1,
            _ => runs.push((s.clone(), 1)),
        }
    }
    runs.iter()
        .map(|(s, n)| format!("{s} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
