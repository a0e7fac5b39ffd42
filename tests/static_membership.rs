//! Static membership (KIP-345, `--group-instance-id`): a member SIGKILLed and restarted with
//! the same instance id takes its place back without a rebalance (the other members' group
//! generation and rebalance count do not move, as their `/metrics` show), nothing is lost or
//! stored twice; a second process with an instance id in use fences the first (exit 1, one
//! line); SIGTERM sends no LeaveGroup, so the partitions wait for a restart within the session
//! timeout.

mod common {
    pub mod kafka_wire;
    pub mod process;
    pub mod scrape;
    pub mod services;
}
mod static_group;

use std::time::{Duration, Instant};

use common::process::{assert_ok, poll};
use common::scrape::http_get;
use common::services::Sandbox;
use static_group::{messages_sent, three_members, Member, SERVERS, SESSION};

#[test]
fn a_killed_static_member_restarts_without_a_rebalance_and_nothing_is_lost_or_doubled() {
    let sb = Sandbox::new("static_kill");
    let (mut members, generation) = three_members(&sb);
    // The leader is the member whose restart used to cost a rebalance (before JoinGroup v9):
    // it is the one killed.
    let leader = members
        .iter()
        .position(Member::is_leader)
        .expect("a leader among the members");
    let mut c = members.remove(leader);
    let (a, b) = (&members[0], &members[1]);
    eprintln!("killing the leader, {}", c.id);
    let before: Vec<_> = [a, b].iter().map(|m| m.group_view()).collect();

    let mut producer = sb.spawn(
        "produce",
        &["produce", "--servers", SERVERS, "--interval", "0.1"],
    );
    let flowing = poll(Duration::from_secs(60), Duration::from_millis(100), || {
        (c.gauge("messages_stored_total")? > 0).then_some(())
    });
    assert!(
        flowing.is_some(),
        "c stored nothing; log:\n{}",
        c.proc.log_tail(20)
    );

    c.proc.child.kill().expect("SIGKILL c");
    let _ = c.proc.child.wait();
    let restarted = Instant::now();
    let restarted_log = format!("{}-restarted", c.id);
    c.restart(&sb, &restarted_log);
    let first_store = poll(Duration::from_secs(30), Duration::from_millis(20), || {
        (c.gauge("messages_stored_total")? > 0).then(|| restarted.elapsed())
    })
    .unwrap_or_else(|| panic!("no store after the restart; log:\n{}", c.proc.log_tail(30)));
    eprintln!(
        "static member restart: first store {:.2} s after the restart (session timeout {} s)",
        first_store.as_secs_f64(),
        SESSION.as_secs()
    );
    // Generous on a loaded machine; far below the session timeout a dynamic member waits out.
    assert!(
        first_store < Duration::from_secs(8),
        "first store after {first_store:?}"
    );
    assert_eq!(
        c.gauge("group_generation"),
        Some(generation),
        "c rejoined the same generation"
    );
    let after: Vec<_> = [a, b].iter().map(|m| m.group_view()).collect();
    assert_eq!(before, after, "the other members saw a rebalance");

    // Everything the producer had acknowledged is stored once, nothing dead-lettered.
    assert_eq!(producer.stop(Duration::from_secs(60)), Some(0));
    let sent = messages_sent(&producer);
    let all = poll(Duration::from_secs(120), Duration::from_millis(250), || {
        (sb.count("raw") >= sent).then_some(())
    });
    assert!(all.is_some(), "stored {} of {sent}", sb.count("raw"));
    assert_eq!(sb.count("raw"), sent);
    assert_eq!(sb.count("dlq"), 0, "a duplicate was dead-lettered");
    let after: Vec<_> = [a, b].iter().map(|m| m.group_view()).collect();
    assert_eq!(before, after, "a rebalance happened later");
    members.push(c);
    for m in members {
        let mut p = m.proc;
        assert_eq!(
            p.stop(Duration::from_secs(60)),
            Some(0),
            "{}",
            p.log_tail(10)
        );
    }
    // No window counts a message twice: windows hold distinct offsets, so the windows of a
    // partition hold at most what it holds.
    let windows = sb.count("kpis");
    assert!(
        windows * 20 <= sent,
        "{windows} windows of 20 from {sent} messages"
    );
}

#[test]
fn a_second_process_with_the_same_instance_id_fences_the_first() {
    let sb = Sandbox::new("static_dup");
    common::kafka_wire::ensure_topic(&sb.brokers, &sb.topic);
    let mut first = Member::start(&sb, "same");
    let generation = poll(Duration::from_secs(60), Duration::from_millis(200), || {
        first.gauge("group_generation").filter(|g| *g >= 0)
    })
    .expect("the first member joined");
    let second = Member::start(&sb, "same");
    let code = first.proc.wait_exit(SESSION * 3);
    assert_eq!(code, Some(1), "log:\n{}", first.proc.log_tail(20));
    let log = first.proc.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {errors:?}");
    assert!(
        errors[0].contains("FENCED_INSTANCE_ID") && errors[0].contains("--group-instance-id"),
        "{}",
        errors[0]
    );
    // The other one keeps working, in the same generation.
    assert_eq!(http_get(&second.addr, "/readyz").map(|r| r.0), Some(200));
    assert_eq!(second.gauge("group_generation"), Some(generation));
    assert_eq!(second.gauge("assigned_partitions"), Some(3));
    assert_ok(
        &sb.run(
            &["produce", "--count", "4", "--interval", "0"],
            Duration::from_secs(60),
        ),
        "produce",
    );
    let stored = poll(Duration::from_secs(60), Duration::from_millis(200), || {
        (second.gauge("messages_stored_total")? >= 20).then_some(())
    });
    assert!(
        stored.is_some(),
        "the second did not store; log:\n{}",
        second.proc.log_tail(20)
    );
}

#[test]
fn sigterm_keeps_a_static_members_partitions_until_the_session_timeout() {
    let sb = Sandbox::new("static_term");
    common::kafka_wire::ensure_topic(&sb.brokers, &sb.topic);
    let mut stays = Member::start(&sb, "stays");
    let mut goes = Member::start(&sb, "goes");
    // Two members of three partitions: one holds two.
    let generation = poll(Duration::from_secs(120), Duration::from_millis(200), || {
        let (g1, _, p1) = stays.group_view()?;
        let (g2, _, p2) = goes.group_view()?;
        (g1 == g2 && g1 >= 0 && p1 + p2 == 3).then_some(g1)
    })
    .expect("the group settled");
    std::thread::sleep(Duration::from_secs(2));
    let view = stays.group_view();
    let goes_partitions = goes.gauge("assigned_partitions");

    let stopped = Instant::now();
    assert_eq!(goes.proc.stop(Duration::from_secs(60)), Some(0));
    assert!(goes.proc.log_text().contains("stops without leaving"));
    // Half the session later, nothing moved.
    while stopped.elapsed() < SESSION / 2 {
        assert_eq!(
            stays.group_view(),
            view,
            "a rebalance within the session timeout"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    goes.restart(&sb, "goes-restarted");
    let back = poll(Duration::from_secs(30), Duration::from_millis(50), || {
        goes.gauge("group_generation").filter(|g| *g >= 0)
    });
    assert_eq!(
        back,
        Some(generation),
        "the restart resumed in the same generation"
    );
    assert_eq!(goes.gauge("assigned_partitions"), goes_partitions);
    assert_eq!(stays.group_view(), view, "the restart moved nothing");

    // Stopped for good: after the session timeout the partitions move to the one left.
    assert_eq!(goes.proc.stop(Duration::from_secs(60)), Some(0));
    let moved = poll(SESSION * 6, Duration::from_millis(250), || {
        (stays.gauge("assigned_partitions")? == 3).then_some(())
    });
    assert!(moved.is_some(), "log:\n{}", stays.proc.log_tail(20));
    assert_eq!(stays.proc.stop(Duration::from_secs(60)), Some(0));
}
