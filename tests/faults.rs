//! Hostile brokers (issue 15, items 4, 10 and 12): a listener in the bootstrap list that
//! accepts connections and never answers, trickles its answers a byte every 100 ms, closes in
//! the middle of a frame, or answers with another request's correlation id
//! (`common/fault_proxy.rs`), in front of the real broker. The producer and a consumer group
//! must go on through the healthy broker without losing or doubling a message, the group must
//! form at once and stay stable, and the faulty listener must not be hammered.
//!
//! Quick versions run in `make test`; the 60 s stability run is `#[ignore]`d and runs in
//! `make chaos` (with `--ignored`). Figures print as `[faults] ...` lines.

mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod process;
    pub mod services;
}
#[path = "common/fault_proxy.rs"]
mod fault_proxy;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::kafka_tools::create_topic;
use common::kafka_wire::describe_group_wire;
use common::kcat::kcat_read;
use common::process::{poll, Background};
use common::services::Sandbox;
use fault_proxy::{Fault, FaultProxy};
use mongodb::bson::doc;

/// The servers of each report, one message each, keyed by the server id: 6 messages a report,
/// spread over the 3 partitions (`--servers 6` named one server "6": one partition only).
const SERVERS: &str = "web01,web02,db01,app01,cache01,db02";
/// How long a member may take from its start to its place in the group. The issue asks for 2 s
/// with a stalled first bootstrap broker (it measured 15.2 and 22.2 s); a debug build on a busy
/// shared machine gets some room, and the figure is printed either way.
const JOIN_LIMIT: Duration = Duration::from_secs(4);
/// The members' heartbeat interval: a third of the 10 s session.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(3334);
/// Requests per second the faulty listener may see on average over a run: a client that
/// retried it in a loop would send hundreds. Generous: a healthy client sends a few in total.
const REQUESTS_PER_SECOND_LIMIT: f64 = 2.0;
/// Connections per second to it, likewise.
const CONNECTIONS_PER_SECOND_LIMIT: f64 = 2.0;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The member id and generation of each "joined as" line of a consumer's log, in order.
fn joins(process: &Background) -> Vec<(String, i32)> {
    process
        .log_text()
        .lines()
        .filter_map(|l| {
            let rest = l.split(" joined as ").nth(1)?;
            let (id, rest) = rest.split_once(" (generation ")?;
            let generation = rest.split([',', ')']).next()?.parse().ok()?;
            Some((id.to_string(), generation))
        })
        .collect()
}

/// When a member got into the group, counted from its start.
#[derive(Debug)]
struct Joined {
    /// DescribeGroups first listed it: its JoinGroup reached the coordinator.
    listed: Duration,
    /// Its log said it joined: the generation completed, which waits for the members already
    /// in the group to rejoin (they learn of the rebalance at their next heartbeat, a third of
    /// the 10 s session).
    completed: Duration,
}

/// Starts a consumer of the group with `brokers` as its bootstrap list, the group having
/// `members_before` members, and waits until its log says it joined.
fn start_member(
    sb: &Sandbox,
    name: &str,
    brokers: &str,
    members_before: usize,
) -> (Background, Joined) {
    let started = Instant::now();
    let member = sb.spawn_with(
        name,
        &["consume", "--window-size", "20"],
        &[("KAFKA_BROKERS", brokers)],
    );
    let mut listed = None;
    let joined = poll(Duration::from_secs(60), Duration::from_millis(20), || {
        if listed.is_none()
            && describe_group_wire(&sb.brokers, &sb.group, &sb.topic)
                .is_ok_and(|g| g.members.len() > members_before)
        {
            listed = Some(started.elapsed());
        }
        (!joins(&member).is_empty()).then(|| started.elapsed())
    });
    let Some(completed) = joined else {
        panic!(
            "{name} did not join within 60 s; log tail:\n{}",
            member.log_tail(30)
        );
    };
    let listed = listed.unwrap_or(completed).min(completed);
    (member, Joined { listed, completed })
}

/// Every record of the topic stored once: as many raw documents as kcat reads records, no
/// `message_uuid` twice, nothing dead-lettered. Waits up to `limit` for the consumers to catch
/// up; returns the count.
fn all_stored_once(sb: &Sandbox, limit: Duration) -> usize {
    let records = kcat_read(&sb.brokers, &sb.topic);
    assert!(!records.is_empty(), "the producer sent nothing");
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() >= 2,
        "the records reach partitions {partitions:?} only: pick server ids that spread"
    );
    let caught_up = poll(limit, Duration::from_millis(250), || {
        (sb.count("raw") as usize >= records.len()).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "stored {} of {} records within {limit:?}",
        sb.count("raw"),
        records.len()
    );
    let raw = sb.docs("raw", doc! {}, doc! {});
    let uuids: BTreeSet<String> = raw
        .iter()
        .map(|d| d.get_str("message_uuid").expect("message_uuid").to_string())
        .collect();
    assert_eq!(raw.len(), records.len(), "raw holds every record once");
    assert_eq!(uuids.len(), raw.len(), "no message_uuid stored twice");
    assert_eq!(sb.count("dlq"), 0, "nothing dead-lettered");
    raw.len()
}

/// Asserts the faulty listener was not hammered, and prints what it saw.
fn check_rate(proxy: &FaultProxy, label: &str) -> (f64, f64) {
    let age = proxy.age();
    let requests = proxy.requests() as f64 / age;
    let connections = proxy.connections() as f64 / age;
    eprintln!(
        "[faults] {label}: the faulty listener saw {} connections and {} requests in {age:.1} s \
         ({connections:.2} connections/s, {requests:.2} requests/s; bounds \
         {CONNECTIONS_PER_SECOND_LIMIT} and {REQUESTS_PER_SECOND_LIMIT})",
        proxy.connections(),
        proxy.requests()
    );
    assert!(
        requests <= REQUESTS_PER_SECOND_LIMIT,
        "{label}: {}",
        proxy.summary()
    );
    assert!(
        connections <= CONNECTIONS_PER_SECOND_LIMIT,
        "{label}: {}",
        proxy.summary()
    );
    (connections, requests)
}

/// A silent listener first in KAFKA_BROKERS, the real broker second: a producer and two members
/// of one group. Each member must join within [`JOIN_LIMIT`] of its start, the group must reach
/// one generation and keep it for `hold` (no member logs another join; DescribeGroups shows the
/// same two members, Stable, at every probe), and every record must be stored once.
fn stalled_bootstrap_broker(label: &str, hold: Duration, reports: u32) {
    let sb = Sandbox::new(label);
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    let silent = FaultProxy::start(&sb.brokers, Fault::Silent);
    let brokers = format!("{},{}", silent.addr(), sb.brokers);
    let count = reports.to_string();
    let mut producer = sb.spawn_with(
        "producer",
        &[
            "produce",
            "--servers",
            SERVERS,
            "--interval",
            "0.2",
            "--count",
            &count,
        ],
        &[("KAFKA_BROKERS", &brokers)],
    );
    let (mut a, a_joined) = start_member(&sb, "a", &brokers, 0);
    let (mut b, b_joined) = start_member(&sb, "b", &brokers, 1);
    eprintln!(
        "[faults] {label}: with a silent listener first in KAFKA_BROKERS, member a was in the \
         group {:.2} s and joined {:.2} s after its start; member b was in the group {:.2} s and \
         joined {:.2} s after its start (its generation completes once a rejoins, at a's next \
         heartbeat)",
        secs(a_joined.listed),
        secs(a_joined.completed),
        secs(b_joined.listed),
        secs(b_joined.completed)
    );
    assert!(
        a_joined.completed <= JOIN_LIMIT,
        "a joined after {a_joined:?}"
    );
    assert!(
        b_joined.listed <= JOIN_LIMIT,
        "b in the group after {b_joined:?}"
    );
    assert!(
        b_joined.completed <= JOIN_LIMIT + HEARTBEAT_INTERVAL,
        "b joined after {b_joined:?}"
    );

    // The generation both hold once b's join completed (a rejoins at its next heartbeat).
    let settled = poll(Duration::from_secs(30), Duration::from_millis(100), || {
        let (ja, jb) = (joins(&a), joins(&b));
        let (last_a, last_b) = (ja.last()?, jb.last()?);
        (last_a.1 == last_b.1).then_some((last_a.1, ja.len(), jb.len()))
    });
    let Some((generation, joins_a, joins_b)) = settled else {
        panic!(
            "the two members never shared a generation: a {:?}, b {:?}",
            joins(&a),
            joins(&b)
        );
    };
    let stable_from = Instant::now();
    let members: BTreeSet<String> = [joins(&a), joins(&b)]
        .iter()
        .filter_map(|j| j.last().map(|(id, _)| id.clone()))
        .collect();
    let mut probes = 0;
    while stable_from.elapsed() < hold {
        if let Ok(g) = describe_group_wire(&sb.brokers, &sb.group, &sb.topic) {
            let ids: BTreeSet<String> = g.member_ids().into_iter().collect();
            assert!(
                g.state == "Stable" && ids == members,
                "the group left generation {generation} after {:.1} s: {g:?}; a:\n{}\nb:\n{}",
                secs(stable_from.elapsed()),
                a.log_tail(20),
                b.log_tail(20)
            );
            probes += 1;
        }
        assert!(a.running() && b.running(), "a member exited");
        std::thread::sleep(Duration::from_secs(2));
    }
    let rebalances = (joins(&a).len() - joins_a) + (joins(&b).len() - joins_b);
    eprintln!(
        "[faults] {label}: generation {generation} held {:.0} s ({probes} DescribeGroups probes, \
         all Stable with the same 2 members); joins after it: {rebalances}",
        secs(stable_from.elapsed())
    );
    assert_eq!(
        rebalances,
        0,
        "a:\n{}\nb:\n{}",
        a.log_tail(20),
        b.log_tail(20)
    );

    assert_eq!(
        producer.wait_exit(Duration::from_secs(120)),
        Some(0),
        "producer: {}",
        producer.log_tail(20)
    );
    let stored = all_stored_once(&sb, Duration::from_secs(60));
    eprintln!("[faults] {label}: {stored} records stored once");
    check_rate(&silent, label);
    for (name, member) in [("a", &mut a), ("b", &mut b)] {
        assert_eq!(member.stop(Duration::from_secs(30)), Some(0), "{name}");
        assert!(
            member.log_text().contains(" left as "),
            "{name} left the group cleanly:\n{}",
            member.log_tail(10)
        );
    }
}

#[test]
fn a_silent_first_bootstrap_broker_delays_no_join_and_loses_nothing() {
    stalled_bootstrap_broker("fault_silent_quick", Duration::from_secs(8), 40);
}

/// The run: the group stays in one generation for 60 s (`make chaos`).
#[test]
#[ignore]
fn chaos_a_silent_first_bootstrap_broker_keeps_the_group_stable_for_60_s() {
    stalled_bootstrap_broker("fault_silent_60s", Duration::from_secs(60), 400);
}

/// A faulty listener that does answer, but wrongly, first in KAFKA_BROKERS: the producer and a
/// consumer go on through the healthy broker, nothing lost or doubled, and the faulty one sees
/// a bounded rate of connections and requests.
fn answering_wrongly_first_in_the_bootstrap_list(label: &str, fault: Fault) {
    let sb = Sandbox::new(label);
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    let proxy = FaultProxy::start(&sb.brokers, fault);
    let brokers = format!("{},{}", proxy.addr(), sb.brokers);
    let started = Instant::now();
    let (mut consumer, joined) = start_member(&sb, "consumer", &brokers, 0);
    let joined = joined.completed;
    let producer = sb.spawn_with(
        "producer",
        &[
            "produce",
            "--servers",
            SERVERS,
            "--interval",
            "0.1",
            "--count",
            "50",
        ],
        &[("KAFKA_BROKERS", &brokers)],
    );
    let mut producer = producer;
    assert_eq!(
        producer.wait_exit(Duration::from_secs(120)),
        Some(0),
        "producer: {}",
        producer.log_tail(20)
    );
    let stored = all_stored_once(&sb, Duration::from_secs(60));
    eprintln!(
        "[faults] {label}: the consumer joined {:.2} s after its start; {stored} records stored \
         once in {:.1} s",
        secs(joined),
        secs(started.elapsed())
    );
    assert!(joined <= JOIN_LIMIT, "{label}: joined after {joined:?}");
    check_rate(&proxy, label);
    assert_eq!(consumer.stop(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_trickling_first_bootstrap_broker_is_passed_over() {
    answering_wrongly_first_in_the_bootstrap_list(
        "fault_trickle",
        Fault::Trickle(Duration::from_millis(100)),
    );
}

#[test]
fn a_first_bootstrap_broker_closing_mid_frame_is_passed_over() {
    answering_wrongly_first_in_the_bootstrap_list("fault_close", Fault::CloseMidFrame);
}

#[test]
fn a_first_bootstrap_broker_answering_another_request_is_passed_over() {
    answering_wrongly_first_in_the_bootstrap_list("fault_correlation", Fault::WrongCorrelationId);
}
