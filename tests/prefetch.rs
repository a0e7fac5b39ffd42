//! The consumer fetches the next batch while it stores the current one. A fetch made ahead is
//! used only at exactly the positions it was made for: a stop, a restart or a rebalance while
//! one is under way loses nothing and doubles nothing. Against the real broker and database.

mod common {
    pub mod kafka_wire;
    pub mod messages;
    pub mod mongo_proxy;
    pub mod oracle;
    pub mod process;
    pub mod services;
}

use std::time::Duration;

use common::mongo_proxy::{mongo_insert_pattern, HoldingProxy};
use common::oracle::check_windows_against_raw;
use common::process::{assert_ok, poll, terminate, text, Background};
use common::services::Sandbox;

const LIMIT: Duration = Duration::from_secs(120);
const WINDOW: usize = 20;

/// Produces `reports` reports of a fleet of `servers`: `reports * servers` messages.
fn produce_fleet(sb: &Sandbox, servers: usize, reports: u32) -> u64 {
    let fleet: Vec<String> = (0..servers).map(|i| format!("srv{i:04}")).collect();
    let out = sb.run(
        &[
            "produce",
            "--servers",
            &fleet.join(","),
            "--count",
            &reports.to_string(),
            "--interval",
            "0",
            "--seed",
            "5",
        ],
        LIMIT,
    );
    assert_ok(&out, "produce");
    servers as u64 * u64::from(reports)
}

/// Waits until at least `n` windows are stored.
fn wait_for_windows(sb: &Sandbox, n: u64, process: &Background) {
    poll(LIMIT, Duration::from_millis(20), || {
        (sb.count("kpis") >= n).then_some(())
    })
    .unwrap_or_else(|| panic!("no {n} windows stored; log:\n{}", process.log_tail(30)));
}

/// The size of the open window a consumer's last line reports.
fn open_window(log: &str) -> usize {
    let tail = log
        .rsplit_once("the open window of ")
        .unwrap_or_else(|| panic!("no totals line in:\n{log}"))
        .1;
    tail.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no open window size in:\n{log}"))
}

/// A last consumer reads the rest to idle; then every message is stored once, none is
/// dead-lettered as a duplicate, and every message but the open window's is in exactly one
/// correct window.
fn finish_and_check(sb: &Sandbox, total: u64) {
    let out = sb.run(&["consume", "--exit-when-idle", "3"], LIMIT);
    assert_ok(&out, "the last consume");
    let log = text(&out.stderr);
    assert_eq!(sb.count("raw"), total, "{log}");
    assert_eq!(
        sb.count("dlq"),
        0,
        "nothing read twice from another position: {log}"
    );
    let windows = check_windows_against_raw(sb, WINDOW);
    assert_eq!(
        windows * WINDOW + open_window(&log),
        total as usize,
        "every message in one window or in the open one: {log}"
    );
}

#[test]
fn sigterm_during_a_backlog_stops_after_the_step_in_hand_and_the_next_run_finishes_it() {
    let sb = Sandbox::new("pfterm");
    // 8,000 messages: one fetch holds them all, and they make four steps of 2,000.
    let total = produce_fleet(&sb, 1000, 8);
    // The stop must come while steps of the fetched batch remain. Timed by watching the
    // database (a poll racing the steps), it may come after the last one on a loaded machine;
    // so a proxy in front of the database holds the first step's raw insert, and SIGTERM is
    // sent while that insert is held: the first step is the one in hand, three are left.
    let upstream = sb.database_address();
    let proxy = HoldingProxy::start(&upstream, mongo_insert_pattern("raw"));
    proxy.hold(true);
    let uri = format!("mongodb://{}/?directConnection=true", proxy.addr);
    let mut first = sb.spawn("first", &["consume", "--mongodb-uri", &uri]);
    poll(LIMIT, Duration::from_millis(20), || {
        (proxy.held() > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("no raw insert was held: {}", first.log_tail(30)));
    terminate(&first.child);
    proxy.hold(false);
    assert_eq!(first.wait_exit(LIMIT), Some(0), "{}", first.log_tail(30));
    drop(proxy);
    let log = first.log_text();
    // The stop comes after the first step: the steps left of the fetched batch are not begun.
    assert!(
        log.contains("stopping after the step in hand"),
        "{}",
        first.log_tail(30)
    );
    let stored = sb.count("raw");
    assert!(
        stored > 0 && stored < total,
        "{stored} of {total} stored: {}",
        first.log_tail(30)
    );
    finish_and_check(&sb, total);
}

#[test]
fn a_member_joining_during_a_backlog_costs_a_fetch_not_a_message() {
    let sb = Sandbox::new("pfjoin");
    let total = produce_fleet(&sb, 1000, 20);
    // The first member reads ahead of what it stores; the second one's arrival moves its
    // positions, so what it fetched ahead for its old assignment must not be used.
    let mut a = sb.spawn("a", &["consume", "--exit-when-idle", "5"]);
    wait_for_windows(&sb, 1, &a);
    let mut b = sb.spawn("b", &["consume", "--exit-when-idle", "5"]);
    assert_eq!(a.wait_exit(LIMIT), Some(0), "{}", a.log_tail(30));
    assert_eq!(b.wait_exit(LIMIT), Some(0), "{}", b.log_tail(30));
    assert!(
        a.log_text().contains("rebalancing"),
        "the second member's arrival rebalanced the first: {}",
        a.log_tail(30)
    );
    finish_and_check(&sb, total);
}
