//! Consumer-group membership (issue 9) against the real broker: `metricsctl consume` processes
//! without `--partitions` join one group and split a three-partition topic while `metricsctl
//! produce` streams into it; members join, are killed, leave, are paused past the session
//! timeout, or wait on a slow window write (a proxy in front of the database holds it) while
//! the group moves on without them.
//!
//! Every check goes through an independent client: who owns what comes from Kafka's own
//! `kafka-consumer-groups --describe` (polled in the background for the whole test) and, for
//! sub-second timings, from a DescribeGroups probe written in `common` from Kafka's protocol
//! guide; what was sent comes from kcat; what was stored is read with the mongodb crate. The
//! rebalance times are printed (`cargo test --test group -- --nocapture` shows them).

mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod mongo_proxy;
    pub mod oracle;
    pub mod process;
    pub mod services;
}

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::kafka_tools::{create_topic, group_tool_describe, GroupToolView};
use common::kafka_wire::{describe_group_wire, WireGroup};
use common::kcat::kcat_read;
use common::mongo_proxy::{mongo_insert_pattern, HoldingProxy};
use common::oracle::check_windows_against_raw;
use common::process::{poll, signal, text, Background};
use common::services::Sandbox;
use mongodb::bson::doc;

/// Twelve servers: with Java's murmur2 partitioner every one of three partitions gets some
/// (3, 3 and 6 of them).
const SERVERS: &str = "s01,s02,s03,s04,s05,s06,s07,s08,s09,s10,s11,s12";
/// A report of 12 messages every 0.2 s: 60 messages/s, three windows a second.
const INTERVAL: &str = "0.2";
const WINDOW: usize = 20;
const PARTITIONS: [i32; 3] = [0, 1, 2];
/// The consumer's group timeouts (src/commands/consume.rs): a member silent this long is removed.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// A third of the session, as the consumer heartbeats.
const HEARTBEAT: Duration = Duration::from_millis(3_333);
/// How long a membership change may take to show before the test gives up.
const SETTLE_LIMIT: Duration = Duration::from_secs(45);
/// `--max-step-interval` of the members whose database the tests freeze or slow down. Well
/// past the session timeout plus a heartbeat (13.3 s), where the tests check that heartbeats
/// kept the stuck member in: a step that was already slow when the database froze counts
/// toward the limit, and on a loaded machine a step has taken several seconds.
const STUCK_STEP_LIMIT: Duration = Duration::from_secs(20);
/// Scenarios that run at once. Each has a producer, up to three consumers and Kafka's group
/// tool (a JVM) asked again and again; four at once on two cores starved the members so
/// much that steps took over 20 s and the timing claims measured the machine, not the code.
const SCENARIO_SLOTS: usize = 2;
/// How long Kafka's group tool may take to show a change the probe saw: a JVM per answer,
/// which on a loaded two-core machine has taken over 30 s to give its first one.
const TOOL_LIMIT: Duration = Duration::from_secs(120);

/// One `kafka-consumer-groups --describe` answer and when it was asked and answered.
struct ToolSnapshot {
    asked: Instant,
    answered: Instant,
    view: GroupToolView,
}

/// Kafka's group tool, run again and again in the background while the test acts.
struct ToolWatch {
    stop: Arc<AtomicBool>,
    snapshots: Arc<Mutex<Vec<ToolSnapshot>>>,
    thread: Option<JoinHandle<()>>,
}

impl ToolWatch {
    fn start(brokers: &str, group: &str) -> ToolWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let snapshots = Arc::new(Mutex::new(Vec::new()));
        let (brokers, group) = (brokers.to_string(), group.to_string());
        let thread = {
            let (stop, snapshots) = (stop.clone(), snapshots.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let asked = Instant::now();
                    let view = group_tool_describe(&brokers, &group);
                    let answered = Instant::now();
                    snapshots.lock().unwrap().push(ToolSnapshot {
                        asked,
                        answered,
                        view,
                    });
                    // A JVM per call: leave the two cores some room for the consumers.
                    let pause = Instant::now() + Duration::from_millis(700);
                    while Instant::now() < pause && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        };
        ToolWatch {
            stop,
            snapshots,
            thread: Some(thread),
        }
    }

    /// The first answer asked at or after `since` that satisfies `pred`: (answered, asked), both
    /// as time since `since`.
    fn first_after(
        &self,
        since: Instant,
        pred: impl Fn(&GroupToolView) -> bool,
    ) -> Option<(Duration, Duration)> {
        let snapshots = self.snapshots.lock().unwrap();
        snapshots
            .iter()
            .filter(|s| s.asked >= since)
            .find(|s| pred(&s.view))
            .map(|s| (s.answered - since, s.asked - since))
    }

    /// Waits until an answer asked at or after `since` satisfies `pred`; its timing.
    fn wait_for(
        &self,
        since: Instant,
        limit: Duration,
        what: &str,
        pred: impl Fn(&GroupToolView) -> bool,
    ) -> (Duration, Duration) {
        let found = poll(limit, Duration::from_millis(200), || {
            self.first_after(since, &pred)
        });
        found.unwrap_or_else(|| {
            panic!(
                "the group tool never showed {what} within {limit:?}; last answer:\n{}",
                self.last_output()
            )
        })
    }

    fn last_output(&self) -> String {
        self.snapshots
            .lock()
            .unwrap()
            .last()
            .map_or("(none yet)".into(), |s| s.view.output.clone())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ToolWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A consumer process and the member id the group gave it.
struct Member {
    process: Background,
    id: String,
}

/// One test's topic (three partitions), its producer streaming in, its consumer processes, and
/// the group tool watching. Fields drop in order: processes first, the sandbox (database and
/// topic) last.
struct Scenario {
    members: Vec<Member>,
    producer: Option<Background>,
    watch: ToolWatch,
    sb: Sandbox,
    _slot: ScenarioSlot,
}

/// One of the [`SCENARIO_SLOTS`]: taken before a scenario starts anything, given back when it
/// drops (after its processes and sandbox).
struct ScenarioSlot;

static SLOTS_TAKEN: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: std::sync::Condvar = std::sync::Condvar::new();

impl ScenarioSlot {
    fn take() -> ScenarioSlot {
        let mut taken = SLOTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        while *taken >= SCENARIO_SLOTS {
            taken = SLOT_FREED.wait(taken).unwrap_or_else(|e| e.into_inner());
        }
        *taken += 1;
        ScenarioSlot
    }
}

impl Drop for ScenarioSlot {
    fn drop(&mut self) {
        *SLOTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        SLOT_FREED.notify_one();
    }
}

/// The DescribeGroups probe's view (`None` while no coordinator answers). Every answer is
/// checked: no partition is assigned to two members at once.
fn probe(sb: &Sandbox) -> Option<WireGroup> {
    let g = describe_group_wire(&sb.brokers, &sb.group, &sb.topic).ok()?;
    for (p, owners) in g.owners() {
        assert!(
            owners.len() == 1,
            "partition {p} assigned to {owners:?} at once: {g:?}"
        );
    }
    Some(g)
}

/// A stable group of exactly `members`, each owning at least one partition, together owning
/// each partition once.
fn settled(g: &WireGroup, members: &BTreeSet<String>) -> bool {
    let owners = g.owners();
    g.state == "Stable"
        && g.member_ids().into_iter().collect::<BTreeSet<_>>() == *members
        && g.members.iter().all(|m| !m.partitions.is_empty())
        && PARTITIONS
            .iter()
            .all(|p| owners.get(p).is_some_and(|o| o.len() == 1))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Scenario {
    fn new(label: &str, streaming: bool) -> Scenario {
        let slot = ScenarioSlot::take();
        let sb = Sandbox::new(label);
        // The mode's default replication: 1 on the single node, 3 on the three-node cluster.
        create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
        let producer = streaming.then(|| {
            sb.spawn(
                "producer",
                &["produce", "--servers", SERVERS, "--interval", INTERVAL],
            )
        });
        Scenario {
            members: Vec::new(),
            producer,
            watch: ToolWatch::start(&sb.brokers, &sb.group),
            sb,
            _slot: slot,
        }
    }

    fn ids(&self) -> BTreeSet<String> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    /// Starts one more member and waits until the group is stable with it and the others, each
    /// owning a partition (with up to three members); returns how long that took.
    fn join(&mut self, name: &str) -> Duration {
        self.join_with(name, &[])
    }

    /// `join` with more flags for the consumer.
    fn join_with(&mut self, name: &str, extra: &[&str]) -> Duration {
        let before = self.ids();
        let started = Instant::now();
        let window = WINDOW.to_string();
        let mut args = vec!["consume", "--window-size", &window];
        args.extend_from_slice(extra);
        let process = self.sb.spawn(name, &args);
        let mut first_owned: Option<Duration> = None;
        let found = poll(SETTLE_LIMIT, Duration::from_millis(100), || {
            let g = probe(&self.sb)?;
            let ids: BTreeSet<String> = g.member_ids().into_iter().collect();
            let new: Vec<&String> = ids.difference(&before).collect();
            if new.len() != 1 || !before.is_subset(&ids) {
                return None;
            }
            let id = new[0].clone();
            if first_owned.is_none() && !g.partitions_of(&id).is_empty() {
                first_owned = Some(started.elapsed());
            }
            settled(&g, &ids).then_some(id)
        });
        let Some(id) = found else {
            panic!(
                "{name} did not settle into the group within {SETTLE_LIMIT:?}; group: {:?}; log \
                 tail:\n{}",
                probe(&self.sb),
                process.log_tail(20)
            );
        };
        let took = started.elapsed();
        let (tool_answered, tool_asked) = self.watch.wait_for(
            started,
            TOOL_LIMIT,
            &format!("{name} ({id}) owning a partition"),
            |v| v.owners().values().any(|o| *o == id),
        );
        eprintln!(
            "[{}] rebalance time, join of member {} ({name}): owns a partition after {:.2} s, \
             group stable with {} members after {:.2} s (DescribeGroups probe); the group tool \
             showed it in a describe asked at {:.1} s, answered at {:.1} s",
            self.sb.name,
            before.len() + 1,
            secs(first_owned.unwrap_or(took)),
            before.len() + 1,
            secs(took),
            secs(tool_asked),
            secs(tool_answered)
        );
        self.members.push(Member { process, id });
        took
    }

    fn member(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.process.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// Waits until member `gone` is out of the group and the partitions it owned (`owned`)
    /// belong to the remaining members, the group stable: the time from `since`, by the probe,
    /// and the group tool's (answered, asked) times.
    fn wait_moved(
        &self,
        since: Instant,
        gone: &str,
        owned: &[i32],
        what: &str,
    ) -> (Duration, (Duration, Duration)) {
        let remaining: BTreeSet<String> = self.ids().into_iter().filter(|i| i != gone).collect();
        let moved = poll(SETTLE_LIMIT, Duration::from_millis(100), || {
            let g = probe(&self.sb)?;
            settled(&g, &remaining).then(|| since.elapsed())
        })
        .unwrap_or_else(|| {
            panic!(
                "{what}: partitions {owned:?} of {gone} never moved to {remaining:?} within \
                 {SETTLE_LIMIT:?}; group: {:?}",
                probe(&self.sb)
            )
        });
        let tool = self.watch.wait_for(
            since,
            TOOL_LIMIT,
            &format!("partitions {owned:?} owned by members other than {gone}"),
            |v| {
                let owners = v.owners();
                owned
                    .iter()
                    .all(|p| owners.get(p).is_some_and(|o| o != gone))
            },
        );
        (moved, tool)
    }

    /// Stops the producer, waits until every member has counted all but its open window (the
    /// group tool: each member's lag below a window), stops every member with SIGTERM (each
    /// exits 0), then checks what was stored.
    fn finish(mut self) -> Outcome {
        if let Some(mut producer) = self.producer.take() {
            assert_eq!(
                producer.stop(Duration::from_secs(20)),
                Some(0),
                "producer exit"
            );
        }
        // Owners are taken as the tool shows them: a member that lost its membership (a
        // coordinator failing over) rejoins under a new id.
        let live = self.members.len();
        let caught_up = poll(Duration::from_secs(60), Duration::from_millis(500), || {
            let v = group_tool_describe(&self.sb.brokers, &self.sb.group);
            let owners: BTreeSet<String> = v.owners().into_values().collect();
            if v.rebalancing || v.rows.len() != PARTITIONS.len() || owners.len() != live {
                return None;
            }
            // Lag counts the copies the producer sent again too; they are dead letters, never
            // counted in a window.
            let mut lag: BTreeMap<String, i64> = BTreeMap::new();
            for r in &v.rows {
                let owner = r.consumer_id.clone()?;
                let copies = self
                    .sb
                    .db()
                    .collection::<mongodb::bson::Document>("dlq")
                    .count_documents(doc! {
                        "kafka.partition": r.partition,
                        "kafka.offset": {"$gte": r.committed.unwrap_or(0)},
                    })
                    .run()
                    .expect("count dead letters") as i64;
                *lag.entry(owner).or_default() += r.lag? - copies;
            }
            lag.values().all(|l| *l < WINDOW as i64).then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "the members never caught up to their open windows; group tool:\n{}",
                group_tool_describe(&self.sb.brokers, &self.sb.group).output
            )
        });
        for m in &self.members {
            signal(&m.process.child, "TERM");
        }
        for m in &mut self.members {
            let code = poll(Duration::from_secs(30), Duration::from_millis(50), || {
                m.process
                    .child
                    .try_wait()
                    .expect("try_wait")
                    .map(|s| s.code())
            })
            .unwrap_or_else(|| panic!("{} did not stop within 30 s of SIGTERM", m.process.name));
            assert_eq!(
                code,
                Some(0),
                "{} exit after SIGTERM; log tail:\n{}",
                m.process.name,
                m.process.log_tail(20)
            );
        }
        self.watch.halt();
        let snapshots = std::mem::take(&mut *self.watch.snapshots.lock().unwrap());
        for s in &snapshots {
            assert!(
                s.view.doubly_owned().is_empty(),
                "the group tool listed partitions {:?} under two members at once:\n{}",
                s.view.doubly_owned(),
                s.view.output
            );
        }
        let data = check_data(&self.sb);
        // Each member's partitions at the end: all but its open window is in stored windows.
        let mut tails: BTreeMap<String, i64> = BTreeMap::new();
        for (p, owner) in caught_up.owners() {
            *tails.entry(owner).or_default() += data.uncounted[&p];
        }
        for (owner, tail) in &tails {
            assert!(
                *tail < WINDOW as i64,
                "member {owner} ends with {tail} stored messages of its partitions in no window \
                 (more than an open window); log ends {:?}, windows cover up to {:?}",
                data.ends,
                data.covered
            );
        }
        // Offsets are committed only after the windows that cover them are stored.
        let fin = group_tool_describe(&self.sb.brokers, &self.sb.group);
        for p in PARTITIONS {
            let committed = fin.row(p).and_then(|r| r.committed).unwrap_or(0);
            assert!(
                committed <= data.covered[&p],
                "partition {p}: committed {committed} beyond the stored windows ({})",
                data.covered[&p]
            );
        }
        let logs: Vec<(String, usize)> = self
            .members
            .iter()
            .map(|m| {
                let stored = m
                    .process
                    .log_text()
                    .lines()
                    .filter(|l| l.contains(" stored: "))
                    .count();
                (m.process.name.clone(), stored)
            })
            .collect();
        eprintln!(
            "[{}] {} messages ({} copies sent again by the producer), {} windows; per \
             partition: log end {:?}, windows cover up to {:?}, open windows hold {:?}; windows \
             stored per process (its log): {:?}",
            self.sb.name,
            data.messages,
            data.duplicates,
            data.windows,
            data.ends,
            data.covered,
            data.uncounted,
            logs
        );
        Outcome {
            snapshots,
            logs,
            member_ids: self
                .members
                .iter()
                .map(|m| (m.process.name.clone(), ids_in_log(&m.process)))
                .collect(),
        }
    }
}

/// The member ids a consumer process logged ("joined as <id>"), to tell which process a member
/// id of the group tool's answers is.
fn ids_in_log(process: &Background) -> BTreeSet<String> {
    process
        .log_text()
        .lines()
        .filter_map(|l| l.split(" joined as ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect()
}

struct Outcome {
    snapshots: Vec<ToolSnapshot>,
    /// Windows each process logged as stored.
    logs: Vec<(String, usize)>,
    /// Process name -> the member ids it had, as its log says ("joined as ...").
    member_ids: Vec<(String, BTreeSet<String>)>,
}

impl Outcome {
    /// Members the group tool saw committing: a partition it owned in two consecutive answers
    /// whose committed offset advanced in between (only the owner commits, after storing a
    /// window).
    fn members_seen_working(&self) -> BTreeSet<String> {
        let mut working = BTreeSet::new();
        for pair in self.snapshots.windows(2) {
            let (a, b) = (&pair[0].view, &pair[1].view);
            for rb in &b.rows {
                let Some(ra) = a.row(rb.partition) else {
                    continue;
                };
                if let (Some(owner), Some(ca), Some(cb)) =
                    (rb.consumer_id.as_ref(), ra.committed, rb.committed)
                {
                    if ra.consumer_id.as_ref() == Some(owner) && cb > ca {
                        working.insert(owner.clone());
                    }
                }
            }
        }
        working
    }
}

/// What the topic and the database hold, checked against each other.
struct Data {
    messages: usize,
    duplicates: usize,
    windows: usize,
    /// Per partition: its log end offset (kcat).
    ends: BTreeMap<i32, i64>,
    /// Per partition: the windows cover every stored message at offsets `0..covered`.
    covered: BTreeMap<i32, i64>,
    /// Per partition: stored messages at `covered` and after, in no window.
    uncounted: BTreeMap<i32, i64>,
}

/// Every event kcat reads from the topic is in raw exactly once, from its first position; a
/// copy the producer sent again (a send retried after a broker failure) is a dead letter
/// `duplicate_message_uuid` and nothing else is dead-lettered; every window recomputes from raw
/// and no message is in two windows (`check_windows_against_raw`); and per partition the
/// windows cover a gapless run of the stored messages from offset 0.
fn check_data(sb: &Sandbox) -> Data {
    let records = kcat_read(&sb.brokers, &sb.topic);
    let mut ends: BTreeMap<i32, i64> = PARTITIONS.iter().map(|p| (*p, 0)).collect();
    let mut first_copy: HashMap<String, (i32, i64)> = HashMap::new();
    let mut copies: BTreeSet<(i32, i64)> = BTreeSet::new();
    for r in &records {
        let end = ends.entry(r.partition).or_default();
        assert_eq!(
            r.offset, *end,
            "partition {} offsets are gapless",
            r.partition
        );
        *end += 1;
        let uuid = common::messages::uuid_of(r.payload.as_deref().unwrap_or(""))
            .unwrap_or_else(|| panic!("no message_uuid at {}/{}", r.partition, r.offset));
        // kcat lists partition by partition in offset order, and a server's copies share its
        // partition: the first seen is the first copy.
        match first_copy.entry(uuid) {
            std::collections::hash_map::Entry::Occupied(_) => {
                copies.insert((r.partition, r.offset));
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((r.partition, r.offset));
            }
        }
    }
    for p in PARTITIONS {
        assert!(ends[&p] > 0, "partition {p} got no data: {ends:?}");
    }

    let raw = sb.docs("raw", doc! {}, doc! {});
    let mut stored: HashMap<String, (i32, i64)> = HashMap::new();
    let mut stored_offsets: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for d in &raw {
        let uuid = d.get_str("message_uuid").expect("message_uuid").to_string();
        let (_, partition, offset) = common::messages::kafka_position(d);
        assert!(
            stored.insert(uuid.clone(), (partition, offset)).is_none(),
            "{uuid} stored twice in raw"
        );
        stored_offsets.entry(partition).or_default().insert(offset);
    }
    assert_eq!(raw.len(), first_copy.len(), "raw holds every event once");
    assert!(
        stored == first_copy,
        "raw's uuids and positions differ from the first copies in the topic"
    );
    let dlq = sb.docs("dlq", doc! {}, doc! {});
    let mut lettered = BTreeSet::new();
    for d in &dlq {
        assert_eq!(
            d.get_str("reason_code").expect("reason_code"),
            "duplicate_message_uuid",
            "only copies are dead-lettered: {d}"
        );
        let (_, partition, offset) = common::messages::kafka_position(d);
        lettered.insert((partition, offset));
    }
    assert_eq!(
        lettered, copies,
        "the dead letters are exactly the copies the producer sent again"
    );

    let windows = check_windows_against_raw(sb, WINDOW);
    let mut spans: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for w in sb.docs("kpis", doc! {}, doc! {}) {
        let kafka = w.get_document("kafka").expect("kafka");
        assert_eq!(kafka.get_str("group").expect("kafka.group"), sb.group);
        for p in kafka.get_array("partitions").expect("kafka.partitions") {
            let p = p.as_document().expect("partition span");
            spans
                .entry(p.get_i32("partition").unwrap())
                .or_default()
                .push((
                    p.get_i64("first_offset").unwrap(),
                    p.get_i64("last_offset").unwrap(),
                ));
        }
    }
    let mut covered = BTreeMap::new();
    let mut uncounted = BTreeMap::new();
    for p in PARTITIONS {
        let mut list = spans.remove(&p).unwrap_or_default();
        list.sort_unstable();
        let offsets = stored_offsets.remove(&p).unwrap_or_default();
        let mut next = 0;
        for (first, last) in &list {
            let skipped: Vec<&i64> = offsets.range(next..*first).collect();
            assert!(
                skipped.is_empty(),
                "partition {p}: stored messages at offsets {skipped:?} are in no window while \
                 later ones are; spans {list:?}"
            );
            next = last + 1;
        }
        covered.insert(p, next);
        uncounted.insert(p, offsets.range(next..).count() as i64);
    }
    Data {
        messages: records.len(),
        duplicates: copies.len(),
        windows,
        ends,
        covered,
        uncounted,
    }
}

fn sleep(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}

#[test]
fn members_joining_one_by_one_split_the_partitions_and_count_every_message_once() {
    let mut s = Scenario::new("grpjoin", true);
    let first = s.join("a");
    assert_eq!(
        probe(&s.sb).unwrap().partitions_of(&s.members[0].id),
        PARTITIONS.to_vec(),
        "a lone member owns every partition"
    );
    sleep(4.0);
    let second = s.join("b");
    sleep(5.0);
    let third = s.join("c");
    let g = probe(&s.sb).unwrap();
    assert!(
        g.members.iter().all(|m| m.partitions.len() == 1),
        "three members, one partition each: {g:?}"
    );
    assert_eq!(
        (g.protocol_type.as_str(), g.protocol.as_str()),
        ("consumer", "range")
    );
    sleep(8.0);
    for d in [first, second, third] {
        assert!(
            d < Duration::from_secs(20),
            "a join settles within seconds: {d:?}"
        );
    }
    let outcome = s.finish();

    // Every member did part of the work: the group tool saw each one's committed offsets
    // advance on a partition it owned, and each process logged windows it stored.
    let working = outcome.members_seen_working();
    for (name, ids) in &outcome.member_ids {
        assert!(
            !working.is_disjoint(ids),
            "the group tool never saw {name} ({ids:?}) commit; it saw {working:?}"
        );
    }
    for (name, stored) in &outcome.logs {
        assert!(*stored > 0, "{name} stored no window");
    }
}

#[test]
fn a_killed_member_loses_its_partitions_after_the_session_timeout_a_leaving_one_at_once() {
    let mut s = Scenario::new("grpkill", true);
    s.join("a");
    s.join("b");
    s.join("c");
    sleep(3.0);

    // SIGKILL: no LeaveGroup; the coordinator waits for the session timeout.
    let b = s.member("b");
    let victim = s.members[b].id.clone();
    let owned = probe(&s.sb).unwrap().partitions_of(&victim);
    assert!(!owned.is_empty());
    let killed_at = Instant::now();
    s.members[b].process.child.kill().expect("SIGKILL");
    let _ = s.members[b].process.child.wait();
    let (kill_moved, (kill_tool, kill_tool_asked)) =
        s.wait_moved(killed_at, &victim, &owned, "after SIGKILL");
    eprintln!(
        "[{}] rebalance time, kill: partitions {owned:?} of the SIGKILLed member owned by the \
         others after {:.2} s (DescribeGroups probe); the group tool showed it in a describe \
         asked at {:.1} s, answered at {:.1} s (session timeout {} s, heartbeat {:.1} s)",
        s.sb.name,
        secs(kill_moved),
        secs(kill_tool_asked),
        secs(kill_tool),
        SESSION_TIMEOUT.as_secs(),
        secs(HEARTBEAT)
    );
    s.members.remove(b);
    // The coordinator noticed only once the session expired: at least the session timeout
    // after the victim's last heartbeat, which was at most one heartbeat interval before the
    // kill.
    assert!(
        kill_moved >= SESSION_TIMEOUT - HEARTBEAT - Duration::from_millis(500),
        "partitions moved {kill_moved:?} after SIGKILL: sooner than a session timeout allows"
    );
    assert!(
        kill_moved <= SESSION_TIMEOUT + 2 * HEARTBEAT + Duration::from_secs(8),
        "partitions moved only {kill_moved:?} after SIGKILL"
    );
    sleep(3.0);

    // SIGTERM: the member leaves the group, its partitions move at the next heartbeat of the
    // others, without waiting for a session timeout, and it exits 0.
    let c = s.member("c");
    let leaver = s.members[c].id.clone();
    let owned = probe(&s.sb).unwrap().partitions_of(&leaver);
    assert!(!owned.is_empty());
    let termed_at = Instant::now();
    // The probe watches the member list while the member stops: a member that leaves is
    // gone from the list once its LeaveGroup is answered, before it exits.
    let gone_at = Arc::new(Mutex::new(None::<Instant>));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (gone_at, watching) = (gone_at.clone(), watching.clone());
        let (brokers, group, topic) =
            (s.sb.brokers.clone(), s.sb.group.clone(), s.sb.topic.clone());
        let leaver = leaver.clone();
        std::thread::spawn(move || {
            while watching.load(Ordering::SeqCst) {
                if let Ok(g) = describe_group_wire(&brokers, &group, &topic) {
                    if !g.member_ids().contains(&leaver) {
                        *gone_at.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let code = s.members[c].process.stop(Duration::from_secs(20));
    let exited = termed_at.elapsed();
    let (term_moved, (term_tool, term_tool_asked)) =
        s.wait_moved(termed_at, &leaver, &owned, "after SIGTERM");
    watching.store(false, Ordering::SeqCst);
    let _ = watcher.join();
    let gone = gone_at
        .lock()
        .unwrap()
        .map(|at| at.saturating_duration_since(termed_at));
    eprintln!(
        "[{}] rebalance time, leave: partitions {owned:?} of the SIGTERMed member owned by the \
         others after {:.2} s (DescribeGroups probe; the process exited after {:.2} s); the \
         group tool showed it in a describe asked at {:.1} s, answered at {:.1} s",
        s.sb.name,
        secs(term_moved),
        secs(exited),
        secs(term_tool_asked),
        secs(term_tool)
    );
    assert_eq!(
        code,
        Some(0),
        "SIGTERM exit; log tail:\n{}",
        s.members[c].process.log_tail(20)
    );
    s.members.remove(c);
    // What tells a leave from a timeout is when the coordinator drops the member: at its
    // LeaveGroup (before the process exits), or, without one, a session timeout after its
    // last heartbeat, which is at least SESSION_TIMEOUT - HEARTBEAT (6.7 s) after the exit.
    // The bound sits well between the two (the probe polls every 50 ms), whatever the time
    // the others take to rejoin on a loaded machine.
    let gone = gone.expect("the leaver was still listed when its partitions had moved");
    eprintln!(
        "[{}] the SIGTERMed member was gone from the group {:.2} s after the signal ({:.2} s \
         after its exit)",
        s.sb.name,
        secs(gone),
        secs(gone.saturating_sub(exited))
    );
    assert!(
        gone.saturating_sub(exited) < SESSION_TIMEOUT - HEARTBEAT - Duration::from_millis(1_500),
        "the member that left was dropped {:?} after it exited, as late as a session timeout",
        gone.saturating_sub(exited)
    );
    // From its exit (the step in hand finished, however long the machine made it), a member
    // that left hands its partitions over sooner than a killed one loses them.
    assert!(
        term_moved.saturating_sub(exited) < kill_moved,
        "leaving is faster than being timed out: partitions moved {:.2} s after the leaver \
         exited, {:.2} s after the kill",
        secs(term_moved.saturating_sub(exited)),
        secs(kill_moved)
    );
    sleep(3.0);
    s.finish();
}

#[test]
fn a_member_paused_past_the_session_timeout_doubles_nothing() {
    let mut s = Scenario::new("grppause", true);
    s.join("a");
    s.join("b");
    s.join("c");
    sleep(3.0);

    let b = s.member("b");
    let paused = s.members[b].id.clone();
    let owned = probe(&s.sb).unwrap().partitions_of(&paused);
    let stopped_at = Instant::now();
    signal(&s.members[b].process.child, "STOP");
    let (moved, _) = s.wait_moved(stopped_at, &paused, &owned, "while b is stopped");
    eprintln!(
        "[{}] partitions {owned:?} of the SIGSTOPped member moved after {:.2} s",
        s.sb.name,
        secs(moved)
    );
    let resume_at = stopped_at + Duration::from_secs(15);
    std::thread::sleep(resume_at.saturating_duration_since(Instant::now()));
    signal(&s.members[b].process.child, "CONT");
    let resumed_at = Instant::now();

    // The fenced member rejoins under a new member id and gets a partition again.
    let others: BTreeSet<String> = s.ids().into_iter().filter(|i| *i != paused).collect();
    let rejoined = poll(SETTLE_LIMIT, Duration::from_millis(100), || {
        let g = probe(&s.sb)?;
        let ids: BTreeSet<String> = g.member_ids().into_iter().collect();
        let new: Vec<String> = ids.difference(&others).cloned().collect();
        (new.len() == 1 && others.is_subset(&ids) && settled(&g, &ids)).then(|| new[0].clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "b never rejoined after SIGCONT; group {:?}; its log tail:\n{}",
            probe(&s.sb),
            s.members[b].process.log_tail(30)
        )
    });
    eprintln!(
        "[{}] the resumed member rejoined as {rejoined} (it was {paused}) after {:.2} s",
        s.sb.name,
        secs(resumed_at.elapsed())
    );
    assert!(s.members[b].process.running(), "b runs on after SIGCONT");
    // What b did on waking, as it logs it (for the reader; the data checks below decide).
    let woke: Vec<String> = s.members[b]
        .process
        .log_text()
        .lines()
        .filter(|l| l.contains("fenced") || l.contains("cannot confirm") || l.contains("rejoin"))
        .map(|l| l.chars().take(200).collect())
        .collect();
    eprintln!("[{}] b's log on waking: {woke:#?}", s.sb.name);
    s.members[b].id = rejoined;
    sleep(6.0);
    s.finish();
}

#[test]
fn a_member_waiting_in_a_rebalance_stops_at_once_on_sigterm() {
    // A paused member holds the rebalance: the coordinator answers the others' JoinGroup only
    // when it rejoins or its session (10 s) runs out. A stop request must not wait for that.
    let mut s = Scenario::new("grpjointerm", false);
    s.join("a");
    let a = s.member("a");
    signal(&s.members[a].process.child, "STOP");
    let paused_at = Instant::now();
    let window = WINDOW.to_string();
    let mut b = s.sb.spawn("b", &["consume", "--window-size", &window]);
    let rebalancing = poll(Duration::from_secs(8), Duration::from_millis(50), || {
        probe(&s.sb).filter(|g| g.state == "PreparingRebalance")
    });
    assert!(
        rebalancing.is_some(),
        "b's join never started a rebalance; group {:?}; b's log:\n{}",
        probe(&s.sb),
        b.log_tail(20)
    );
    // b now waits in JoinGroup for the paused a.
    sleep(0.5);
    let waited = paused_at.elapsed();
    // The rebalance is still held by a (its session has not run out): b's stop must come
    // while it is. If this machine took a's whole session to get here, the test cannot tell
    // and says so.
    let holding = |g: &WireGroup| {
        g.state == "PreparingRebalance" && g.member_ids().contains(&s.members[a].id)
    };
    assert!(
        probe(&s.sb).is_some_and(|g| holding(&g)),
        "precondition: the rebalance held by the paused a ended before b was stopped ({:.1} s \
         after the pause); group {:?}",
        secs(waited),
        probe(&s.sb)
    );
    let asked = Instant::now();
    signal(&b.child, "TERM");
    let code = b.wait_exit(Duration::from_secs(30));
    let took = asked.elapsed();
    // b exited while the rebalance it waited in was still held by a: it did not wait for it.
    let after = poll(Duration::from_secs(5), Duration::from_millis(50), || {
        probe(&s.sb)
    });
    let still_held = after.as_ref().is_some_and(holding);
    eprintln!(
        "[{}] SIGTERM during a rebalance held by a paused member ({:.1} s into its 10 s session): \
         b exited with {code:?} after {:.2} s",
        s.sb.name,
        secs(waited),
        secs(took)
    );
    assert_eq!(code, Some(0), "b's exit; log:\n{}", b.log_tail(20));
    // Before, b waited out the paused member's session: the rebalance was over when it exited.
    assert!(
        still_held,
        "b stopped {:.2} s after SIGTERM, once the rebalance it waited in was over (group \
         {after:?}); log:\n{}",
        secs(took),
        b.log_tail(20)
    );
    let log = b.log_text();
    assert!(
        !log.contains("ERROR"),
        "a stop during a join is not an error:\n{log}"
    );
    signal(&s.members[a].process.child, "CONT");
}

#[test]
fn exit_when_idle_waits_for_partitions_a_dead_member_still_holds() {
    // b owns part of the topic; a, which owns the rest, freezes (as if killed while the group
    // still counts it). b must not call itself caught up and exit while a's partitions hold
    // unread messages: the coordinator removes a after its session timeout, and b, still
    // there, takes and reads them.
    let mut s = Scenario::new("grpidle", false);
    let produce = |sb: &Sandbox, reports: &str| {
        let out = sb.run(
            &[
                "produce",
                "--servers",
                SERVERS,
                "--count",
                reports,
                "--interval",
                "0",
            ],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "produce: {}", text(&out.stderr));
    };
    produce(&s.sb, "10");
    s.join("a");
    s.join_with("b", &["--exit-when-idle", "3"]);
    let a = s.member("a");
    let b = s.member("b");
    let a_owned = probe(&s.sb).unwrap().partitions_of(&s.members[a].id);
    assert!(!a_owned.is_empty(), "a owns part of the topic");
    signal(&s.members[a].process.child, "STOP");
    let stopped_at = Instant::now();
    produce(&s.sb, "10");
    let code = s.members[b].process.wait_exit(Duration::from_secs(90));
    let took = stopped_at.elapsed();
    signal(&s.members[a].process.child, "KILL");
    assert_eq!(
        code,
        Some(0),
        "b's exit; log:\n{}",
        s.members[b].process.log_tail(20)
    );
    let sent = kcat_read(&s.sb.brokers, &s.sb.topic).len() as u64;
    let stored = s.sb.count("raw");
    eprintln!(
        "[{}] a (partitions {a_owned:?}) frozen; b exited {:.1} s later; {stored} of {sent} \
         messages stored",
        s.sb.name,
        secs(took)
    );
    assert_eq!(sent, 240, "20 reports of 12 servers");
    assert_eq!(
        stored,
        sent,
        "b exited with the frozen member's partitions unread; b's log:\n{}",
        s.members[b].process.log_tail(30)
    );
}

#[test]
fn static_partitions_owned_by_a_live_member_are_refused_naming_it() {
    let mut s = Scenario::new("grpstatic", false);
    s.join("a");
    s.join("b");
    let ids = s.ids();
    let view = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        let v = group_tool_describe(&s.sb.brokers, &s.sb.group);
        let owners = v.owners();
        (owners.len() == 3 && owners.values().all(|o| ids.contains(o))).then_some(v)
    })
    .expect("the group tool shows both members' partitions");
    let owner = view.owners()[&2].clone();
    let other = s.ids().into_iter().find(|i| *i != owner).unwrap();

    let out = s.sb.run(
        &["consume", "--partitions", "2", "--exit-when-idle", "2"],
        Duration::from_secs(60),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(
        errors[0].contains(&owner) && !errors[0].contains(&other),
        "the error names the owner of partition 2 ({owner}), not {other}: {err}"
    );
    assert!(
        err.lines()
            .all(|l| l.starts_with("error:") || l.contains(" INFO ")),
        "nothing but the start banner and the error: {err}"
    );
    // The refused process did not disturb the group.
    let g = probe(&s.sb).unwrap();
    assert_eq!(g.member_ids().into_iter().collect::<BTreeSet<_>>(), s.ids());

    // Once the members have left, nobody owns partition 2 and the static consumer may read it.
    for m in &mut s.members {
        assert_eq!(m.process.stop(Duration::from_secs(20)), Some(0));
    }
    s.members.clear();
    // They left (LeaveGroup); should a leave be lost (a coordinator failing over), the
    // coordinator drops them after the session timeout.
    let empty = poll(
        SESSION_TIMEOUT + Duration::from_secs(20),
        Duration::from_millis(200),
        || probe(&s.sb).filter(|g| g.members.is_empty()),
    );
    assert!(empty.is_some(), "members still listed: {:?}", probe(&s.sb));
    let out = s.sb.run(
        &["consume", "--partitions", "2", "--exit-when-idle", "2"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// The windows stored so far: (stream, count).
fn windows_per_stream(sb: &Sandbox) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for w in sb.docs("kpis", doc! {}, doc! {}) {
        *per.entry(w.get_str("stream").unwrap_or("").to_string())
            .or_default() += 1;
    }
    per
}

// A window write that stalls in flight past a rebalance (a slow database, a network pause)
// lands after another member took the partitions. The member's ownership is checked by the
// coordinator at the commit, which comes between staging a window and publishing it: a window
// staged late is refused there and never published; a window published late was committed
// while the member still owned its partitions, and the next owner publishes it from the
// commit's marker (the same window, once). The member keeps heartbeating while its write is
// held, so it is the max step interval (STUCK_STEP_LIMIT) that takes it out of the group.
#[test]
fn a_member_whose_window_staging_stalls_past_a_rebalance_never_publishes_that_window() {
    window_write_stalls_past_a_rebalance("grpstage", "kpis_staged");
}

#[test]
fn a_member_whose_window_publication_stalls_past_a_rebalance_publishes_it_once() {
    window_write_stalls_past_a_rebalance("grppub", "kpis");
}

fn window_write_stalls_past_a_rebalance(label: &str, held_collection: &str) {
    let mut s = Scenario::new(label, true);
    let upstream = s.sb.database_address();
    let proxy = HoldingProxy::start(&upstream, mongo_insert_pattern(held_collection));
    let uri = format!("mongodb://{}/?directConnection=true", proxy.addr);
    let limit = STUCK_STEP_LIMIT.as_secs().to_string();
    s.join_with("a", &["--mongodb-uri", &uri, "--max-step-interval", &limit]);
    let a = s.members[0].id.clone();
    poll(Duration::from_secs(30), Duration::from_millis(100), || {
        (s.sb.count("kpis") >= 2).then_some(())
    })
    .expect("a stores windows through the proxy");
    let a_stream = windows_per_stream(&s.sb)
        .into_keys()
        .next()
        .expect("a's stream");
    proxy.hold(true);
    poll(Duration::from_secs(20), Duration::from_millis(20), || {
        (proxy.held() > 0).then_some(())
    })
    .expect("a's next window insert is held");
    let held_at = Instant::now();

    for name in ["b", "c"] {
        let process =
            s.sb.spawn(name, &["consume", "--window-size", &WINDOW.to_string()]);
        s.members.push(Member {
            process,
            id: String::new(),
        });
    }
    let others = poll(
        SETTLE_LIMIT + STUCK_STEP_LIMIT,
        Duration::from_millis(100),
        || {
            let g = probe(&s.sb)?;
            let ids: BTreeSet<String> = g.member_ids().into_iter().collect();
            (ids.len() == 2 && !ids.contains(&a) && settled(&g, &ids)).then_some(ids)
        },
    )
    .unwrap_or_else(|| panic!("b and c never took over from a: {:?}", probe(&s.sb)));
    eprintln!(
        "[{}] a (window write held) was dropped from the group and b, c own its partitions \
         after {:.2} s",
        s.sb.name,
        secs(held_at.elapsed())
    );
    let _ = others;
    // b and c count past a's held window (20 messages from a's last stored boundary).
    poll(Duration::from_secs(60), Duration::from_millis(200), || {
        let per = windows_per_stream(&s.sb);
        let theirs: Vec<usize> = per
            .iter()
            .filter(|(stream, _)| **stream != a_stream)
            .map(|(_, n)| *n)
            .collect();
        (theirs.len() == 2 && theirs.iter().all(|n| *n >= 2)).then_some(())
    })
    .unwrap_or_else(|| panic!("b and c stored no windows: {:?}", windows_per_stream(&s.sb)));
    let before = s.sb.count("kpis");
    proxy.hold(false);
    poll(Duration::from_secs(10), Duration::from_millis(20), || {
        (proxy.held() == 0).then_some(())
    })
    .expect("the held insert is released");
    sleep(3.0);
    eprintln!(
        "[{}] after the release: {} windows of a's stream (stored: {} before, {} after)",
        s.sb.name,
        windows_per_stream(&s.sb)
            .get(&a_stream)
            .copied()
            .unwrap_or(0),
        before,
        s.sb.count("kpis")
    );
    s.finish();
    drop(proxy);
}

/// Lines of `process`'s log that contain `needle`.
fn log_lines(process: &Background, needle: &str) -> Vec<String> {
    process
        .log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

// Issue 15, item 9. Member a's database stops answering (a proxy that only a goes through
// freezes: connections accepted, nothing answered, as a SIGSTOPped server behaves), while b's
// works; both share the one FerretDB, so exactly-once is checked in one place. a keeps
// heartbeating while stuck, so the session timeout never removes it; after the max step
// interval (STUCK_STEP_LIMIT) it leaves, b takes its partitions and stores them, and once the database
// answers a again it rejoins. Whatever a had in flight reaches the database late (the proxy
// forwards it on release): staged windows are never published (no commit), raw documents are
// recognised as replays.
#[test]
fn a_member_whose_database_freezes_leaves_after_the_max_step_interval_and_rejoins_after() {
    let mut s = Scenario::new("grpstuck", true);
    let proxy = HoldingProxy::start(&s.sb.database_address(), Vec::new());
    let uri = format!("mongodb://{}/?directConnection=true", proxy.addr);
    let limit = STUCK_STEP_LIMIT.as_secs().to_string();
    s.join_with("a", &["--mongodb-uri", &uri, "--max-step-interval", &limit]);
    s.join("b");
    let a = s.member("a");
    let a_id = s.members[a].id.clone();
    sleep(3.0);
    let owned = probe(&s.sb).unwrap().partitions_of(&a_id);
    assert!(!owned.is_empty(), "a owns partitions before the freeze");

    proxy.hold(true);
    let frozen_at = Instant::now();
    // Past the 10 s session timeout, a is still a member: its heartbeats go on.
    std::thread::sleep(
        (frozen_at + SESSION_TIMEOUT + HEARTBEAT).saturating_duration_since(Instant::now()),
    );
    let g = probe(&s.sb).expect("the coordinator answers");
    assert!(
        g.member_ids().contains(&a_id),
        "a was dropped from the group before its max step interval: {g:?}; log tail:\n{}",
        s.members[a].process.log_tail(20)
    );
    let (moved, _) = s.wait_moved(frozen_at, &a_id, &owned, "while a's database is frozen");
    // The write a was in when the database froze ended as an error, retried with backoff: the
    // driver's monitor gave up on the server and interrupted it.
    let retried: Vec<String> = log_lines(&s.members[a].process, "retrying in")
        .into_iter()
        .filter(|l| l.contains("ERROR mongodb"))
        .collect();
    assert!(
        !retried.is_empty(),
        "a logged no failed database call while frozen; log tail:\n{}",
        s.members[a].process.log_tail(30)
    );
    let left = log_lines(&s.members[a].process, "made no step for");
    assert_eq!(
        left.len(),
        1,
        "a says once why it left; log tail:\n{}",
        s.members[a].process.log_tail(30)
    );
    assert!(
        left[0].contains("ERROR") && left[0].contains("left the group"),
        "{}",
        left[0]
    );
    // The limit counts from a's last step, which may have begun a while before the freeze on
    // a loaded machine: the lower bound is that heartbeats kept a in past the session timeout
    // (checked above), and a's own figure is at least the limit.
    let no_step_for: f64 = left[0]
        .split("made no step for ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure in a's line: {}", left[0]));
    assert!(
        no_step_for >= secs(STUCK_STEP_LIMIT),
        "a left after {no_step_for} s without a step; the max step interval is {STUCK_STEP_LIMIT:?}"
    );
    assert!(
        moved >= SESSION_TIMEOUT + HEARTBEAT && moved < STUCK_STEP_LIMIT + Duration::from_secs(20),
        "a's partitions moved {:.1} s after the freeze; the max step interval is {:?}",
        secs(moved),
        STUCK_STEP_LIMIT
    );
    eprintln!(
        "FIGURE [{}] partitions {owned:?} of the member whose database froze moved to the \
         other {:.2} s after the freeze (--max-step-interval {}); a's line: {}",
        s.sb.name,
        secs(moved),
        limit,
        left[0]
    );
    // b stores a's partitions meanwhile: windows of a stream of b's.
    let before = s.sb.count("kpis");
    poll(Duration::from_secs(30), Duration::from_millis(200), || {
        (s.sb.count("kpis") >= before + 3).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "b stored no windows while a was out; b's log:\n{}",
            s.members[s.member("b")].process.log_tail(20)
        )
    });
    // While the database stays frozen, a stays out (it would only hold the partitions again).
    sleep(8.0);
    let g = probe(&s.sb).expect("the coordinator answers");
    assert_eq!(
        g.member_ids().len(),
        1,
        "a rejoined while its database was frozen: {g:?}"
    );

    proxy.hold(false);
    let thawed_at = Instant::now();
    let b_id = s.members[s.member("b")].id.clone();
    let rejoined = poll(SETTLE_LIMIT, Duration::from_millis(100), || {
        let g = probe(&s.sb)?;
        let ids: BTreeSet<String> = g.member_ids().into_iter().collect();
        (ids.len() == 2 && ids.contains(&b_id) && settled(&g, &ids))
            .then(|| ids.into_iter().find(|i| *i != b_id).unwrap())
    })
    .unwrap_or_else(|| {
        panic!(
            "a never rejoined once its database answered; group {:?}; its log tail:\n{}",
            probe(&s.sb),
            s.members[a].process.log_tail(30)
        )
    });
    eprintln!(
        "FIGURE [{}] a rejoined as {rejoined} {:.2} s after its database answered again",
        s.sb.name,
        secs(thawed_at.elapsed())
    );
    assert_eq!(
        log_lines(
            &s.members[a].process,
            "the database answers again; rejoining"
        )
        .len(),
        1
    );
    s.members[a].id = rejoined;
    sleep(6.0);
    s.finish();
    drop(proxy);
}

// Issue 15, item 8. Member a's raw-document writes are held (a slow database: the server
// answers its monitoring, the write just takes long) for 25 s, longer than the 10 s session
// timeout, less than a's max step interval (60 s); meanwhile b joins, so a rebalance is pending
// the whole time a's step waits. a's heartbeats go on until it has rejoined: it keeps its
// member id, and b joins once, into a group that rebalances once. (When the heartbeats
// stopped at the rebalance, the coordinator removed a after its session timeout; b then
// joined a group of one, and a second rebalance followed when a came back.)
#[test]
fn a_member_in_a_step_longer_than_the_session_keeps_its_membership_through_a_rebalance() {
    let mut s = Scenario::new("grpslow", true);
    let proxy = HoldingProxy::start(&s.sb.database_address(), mongo_insert_pattern("raw"));
    let uri = format!("mongodb://{}/?directConnection=true", proxy.addr);
    s.join_with("a", &["--mongodb-uri", &uri, "--max-step-interval", "60"]);
    let a_id = s.members[0].id.clone();
    poll(Duration::from_secs(30), Duration::from_millis(100), || {
        (s.sb.count("raw") >= 100).then_some(())
    })
    .expect("a stores through the proxy");
    proxy.hold(true);
    poll(Duration::from_secs(20), Duration::from_millis(20), || {
        (proxy.held() > 0).then_some(())
    })
    .expect("a's next raw insert is held");
    let held_at = Instant::now();
    let window = WINDOW.to_string();
    let b = s.sb.spawn("b", &["consume", "--window-size", &window]);
    s.members.push(Member {
        process: b,
        id: String::new(),
    });
    poll(Duration::from_secs(10), Duration::from_millis(50), || {
        probe(&s.sb).filter(|g| g.state == "PreparingRebalance")
    })
    .expect("b's join starts a rebalance");
    // Every answer while the write is held still lists a, and there are answers: a probe
    // that never got one would check nothing.
    let release_at = held_at + Duration::from_secs(25);
    let (mut asked, mut answered) = (0, 0);
    while Instant::now() < release_at {
        asked += 1;
        if let Some(g) = probe(&s.sb) {
            answered += 1;
            assert!(
                g.member_ids().contains(&a_id),
                "a was removed {:.1} s into its slow step: {g:?}; its log tail:\n{}",
                secs(held_at.elapsed()),
                s.members[0].process.log_tail(20)
            );
        }
        sleep(0.5);
    }
    assert!(
        answered * 2 >= asked,
        "the coordinator answered {answered} of {asked} probes while a's write was held"
    );
    proxy.hold(false);
    let released_at = Instant::now();
    let b_id = poll(SETTLE_LIMIT, Duration::from_millis(100), || {
        let g = probe(&s.sb)?;
        let ids: BTreeSet<String> = g.member_ids().into_iter().collect();
        (ids.len() == 2 && ids.contains(&a_id) && settled(&g, &ids))
            .then(|| ids.into_iter().find(|i| *i != a_id).unwrap())
    })
    .unwrap_or_else(|| {
        panic!(
            "the group never settled with a (same id) and b; group {:?}; a's log tail:\n{}",
            probe(&s.sb),
            s.members[0].process.log_tail(30)
        )
    });
    eprintln!(
        "FIGURE [{}] a's step held {:.1} s (session timeout {:?}): a kept member id {a_id}; the \
         group settled with b {:.2} s after the release",
        s.sb.name,
        secs(released_at - held_at),
        SESSION_TIMEOUT,
        secs(released_at.elapsed())
    );
    s.members[1].id = b_id;
    let a_log = &s.members[0].process;
    assert!(
        log_lines(a_log, "fenced").is_empty() && log_lines(a_log, "made no step").is_empty(),
        "a was fenced or left; log tail:\n{}",
        a_log.log_tail(30)
    );
    assert_eq!(
        ids_in_log(a_log),
        BTreeSet::from([a_id.clone()]),
        "a had one member id throughout"
    );
    // The coordinator reports the group stable once it has the leader's assignment; b logs
    // its join only after its own SyncGroup answer arrives, a moment later.
    let b_joins = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let joins = log_lines(&s.members[1].process, " joined as ");
        (!joins.is_empty()).then_some(joins)
    })
    .unwrap_or_default();
    assert_eq!(b_joins.len(), 1, "b joined once: {b_joins:#?}");
    sleep(4.0);
    let b_joins = log_lines(&s.members[1].process, " joined as ");
    assert_eq!(b_joins.len(), 1, "no second rebalance: {b_joins:#?}");
    s.finish();
    drop(proxy);
}
