//! `/readyz` and `/healthz` against a real outage: FerretDB frozen with SIGSTOP (this
//! checkout's own, from .local/run/ferretdb.pid) before the consumer connects and while it
//! stores, then thawed with SIGCONT. Alone in its test binary, and it waits until no other
//! test run uses the services: a frozen database would stall other tests.

mod common {
    pub mod kafka_wire;
    pub mod outages;
    pub mod process;
    pub mod scrape;
    pub mod services;
}

use std::process::Command;
use std::time::{Duration, Instant};

use common::outages::{ferretdb_pid, wait_for_no_other_tests};
use common::process::poll;
use common::scrape::{free_port, http_get};
use common::services::Sandbox;

/// FerretDB frozen while this lives; thawed when dropped, also when the test panics.
struct Frozen(u32);

impl Frozen {
    fn freeze() -> Frozen {
        let pid = ferretdb_pid().expect("FerretDB's pid file (.local/run/ferretdb.pid)");
        signal(pid, "STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok || std::thread::panicking(), "kill -{name} {pid}");
}

fn status(addr: &str, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(s, _)| s)
}

/// Polls `path` until it answers `want`; returns the body, or panics with the log.
fn wait_for(
    addr: &str,
    path: &str,
    want: u16,
    limit: Duration,
    log: &dyn Fn() -> String,
) -> String {
    poll(limit, Duration::from_millis(200), || {
        http_get(addr, path)
            .filter(|(s, _)| *s == want)
            .map(|(_, b)| b)
    })
    .unwrap_or_else(|| {
        panic!(
            "{path} did not answer {want} within {limit:?} (last: {:?}); log tail:\n{}",
            http_get(addr, path),
            log()
        )
    })
}

#[test]
fn healthz_and_readyz_follow_a_frozen_database() {
    wait_for_no_other_tests(Duration::from_secs(3), Duration::from_secs(1800));
    let sb = Sandbox::new("health");
    common::kafka_wire::ensure_topic(&sb.brokers, &sb.topic);
    let addr = format!("127.0.0.1:{}", free_port());
    const THRESHOLD_SECS: u64 = 3;
    let threshold = THRESHOLD_SECS.to_string();

    // Not ready before the first assignment: the database does not answer the first ping.
    let frozen = Frozen::freeze();
    let consumer = sb.spawn(
        "consume",
        &[
            "consume",
            "--metrics-addr",
            &addr,
            "--health-threshold",
            &threshold,
        ],
    );
    let log = || consumer.log_tail(20);
    let body = wait_for(&addr, "/readyz", 503, Duration::from_secs(30), &log);
    assert!(body.contains("starting"), "{body}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        status(&addr, "/readyz"),
        Some(503),
        "still frozen: still not ready"
    );
    drop(frozen);
    wait_for(&addr, "/readyz", 200, Duration::from_secs(120), &log);
    wait_for(&addr, "/healthz", 200, Duration::from_secs(60), &log);

    // Storing: a report every 0.2 s keeps the consumer stepping; freeze the database under it.
    let mut producer = sb.spawn("produce", &["produce", "--interval", "0.2"]);
    let stored = poll(Duration::from_secs(60), Duration::from_millis(250), || {
        (sb.count("raw") > 0).then_some(())
    });
    assert!(stored.is_some(), "nothing stored; log:\n{}", log());
    // Idle or progressing, it stays healthy past the threshold.
    let healthy_until = Instant::now() + Duration::from_secs(THRESHOLD_SECS + 2);
    while Instant::now() < healthy_until {
        assert_eq!(status(&addr, "/healthz"), Some(200), "log:\n{}", log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let frozen = Frozen::freeze();
    let frozen_at = Instant::now();
    let body = wait_for(&addr, "/healthz", 503, Duration::from_secs(60), &log);
    let took = frozen_at.elapsed();
    assert!(
        took >= Duration::from_secs(THRESHOLD_SECS),
        "503 after {took:?}, before the threshold of {THRESHOLD_SECS} s"
    );
    assert!(
        body.contains("step has been running") || body.contains("database unreachable"),
        "{body}"
    );
    eprintln!(
        "healthz: 503 {:.1} s after the freeze ({body:?})",
        took.as_secs_f64()
    );
    drop(frozen);
    let thawed = Instant::now();
    wait_for(&addr, "/healthz", 200, Duration::from_secs(120), &log);
    eprintln!(
        "healthz: 200 {:.1} s after the thaw",
        thawed.elapsed().as_secs_f64()
    );

    assert_eq!(producer.stop(Duration::from_secs(60)), Some(0));
    let mut consumer = consumer;
    let _ = &mut consumer;
    assert_eq!(
        consumer.stop(Duration::from_secs(120)),
        Some(0),
        "log:\n{}",
        consumer.log_tail(20)
    );
}
