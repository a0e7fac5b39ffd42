//! `/readyz` and `/healthz` against real trouble, one cause of a 503 at a time:
//!
//! - the database stopped (this checkout's FerretDB SIGKILLed, then started again by
//!   `scripts/services.sh up`) past `--health-threshold`: "database unreachable";
//! - a step stuck past `--max-step-interval` (FerretDB frozen with SIGSTOP under a consumer of
//!   `--partitions`, which has no group to leave and so keeps its step): "a step has been
//!   running";
//! - the same for a group member, which leaves its group, fails its step and rejoins while the
//!   database is frozen: "no step has succeeded", without a 200 in between;
//! - Kafka unreachable past `--health-threshold` (a bootstrap address nobody listens on, until a
//!   forwarder to the real broker opens there): "kafka unreachable";
//!
//! and `/readyz` 503 before the first assignment. The tests that stop or freeze the database
//! wait until no other test run uses the services; the tests of this binary take turns.

mod common {
    pub mod kafka_wire;
    pub mod outages;
    pub mod process;
    pub mod scrape;
    pub mod services;
}

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::outages::{ferretdb_pid, wait_for_no_other_tests};
use common::outages::{kill_ferretdb, lock_services, services_up, ServicesRestorer};
use common::process::poll;
use common::process::Background;
use common::scrape::{free_port, http_get};
use common::services::Sandbox;

/// One test of this binary at a time: each one takes the database away or needs it there.
static TURN: Mutex<()> = Mutex::new(());

fn my_turn() -> MutexGuard<'static, ()> {
    // A test that failed holding the turn leaves nothing behind that the next one minds.
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

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

/// A consumer started with `args` (after `consume`), and a reader of its log for assertion
/// messages.
fn consumer(sb: &Sandbox, args: &[&str]) -> (Background, impl Fn() -> String) {
    let consumer = sb.spawn("consume", &[&["consume"], args].concat());
    let log_file = consumer.log.clone();
    (consumer, move || {
        std::fs::read_to_string(&log_file).unwrap_or_default()
    })
}

/// A producer sending a report every 0.2 s, which keeps the consumer stepping; returned once
/// the consumer stored something.
fn storing(sb: &Sandbox, log: &dyn Fn() -> String) -> Background {
    let producer = sb.spawn("produce", &["produce", "--interval", "0.2"]);
    let stored = poll(Duration::from_secs(60), Duration::from_millis(250), || {
        (sb.count("raw") > 0).then_some(())
    });
    assert!(stored.is_some(), "nothing stored; log:\n{}", log());
    producer
}

/// The smallest max step interval taken (above the 10 s session timeout).
const STUCK_STEP_SECS: u64 = 11;

/// A consumer (`mode`: `--partitions ...`, or nothing for a group member) serving its endpoint
/// on a free port, with the max step interval [`STUCK_STEP_SECS`] and an outage limit the tests
/// never reach (so only a stuck step can turn `/healthz`), ready, storing a producer's reports
/// and healthy for 2 s. Returns the sandbox (drop it last), the endpoint's address, the two
/// processes and the consumer's log.
fn storing_with_a_step_limit(
    label: &str,
    mode: &[&str],
) -> (Sandbox, String, Background, Background, impl Fn() -> String) {
    let sb = Sandbox::new(label);
    common::kafka_wire::ensure_topic(&sb.brokers, &sb.topic);
    let addr = format!("127.0.0.1:{}", free_port());
    let step = STUCK_STEP_SECS.to_string();
    let mut args = mode.to_vec();
    args.extend([
        "--metrics-addr",
        &addr,
        "--max-step-interval",
        &step,
        "--health-threshold",
        "600",
    ]);
    let (consumer, log) = consumer(&sb, &args);
    wait_for(&addr, "/readyz", 200, Duration::from_secs(120), &log);
    let producer = storing(&sb, &log);
    healthy_for(&addr, Duration::from_secs(2), &log);
    (sb, addr, consumer, producer, log)
}

/// Waits for `/healthz` to answer 200 again after the trouble ended at `since`, and says when.
fn healthy_again(addr: &str, since: Instant, after: &str, log: &dyn Fn() -> String) {
    wait_for(addr, "/healthz", 200, Duration::from_secs(120), log);
    eprintln!(
        "FIGURE healthz: 200 {:.1} s after {after}",
        since.elapsed().as_secs_f64()
    );
}

/// Stops each process with SIGTERM; each must exit 0.
fn stop_all(processes: &mut [&mut Background]) {
    for p in processes {
        let code = p.stop(Duration::from_secs(120));
        assert_eq!(code, Some(0), "{}: log:\n{}", p.name, p.log_tail(20));
    }
}

/// `/healthz` answers 200 for all of `span` (idle or progressing, past the thresholds).
fn healthy_for(addr: &str, span: Duration, log: &dyn Fn() -> String) {
    let until = Instant::now() + span;
    while Instant::now() < until {
        assert_eq!(status(addr, "/healthz"), Some(200), "log:\n{}", log());
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn readyz_waits_for_the_first_assignment_and_healthz_turns_503_while_the_database_is_stopped() {
    let _turn = my_turn();
    wait_for_no_other_tests(Duration::from_secs(3), Duration::from_secs(1800));
    let sb = Sandbox::new("health_down");
    common::kafka_wire::ensure_topic(&sb.brokers, &sb.topic);
    let addr = format!("127.0.0.1:{}", free_port());
    const THRESHOLD_SECS: u64 = 3;
    let threshold = THRESHOLD_SECS.to_string();

    // Not ready before the first assignment: the database does not answer the first ping.
    let frozen = Frozen::freeze();
    let (mut consumer, log) = consumer(
        &sb,
        &["--metrics-addr", &addr, "--health-threshold", &threshold],
    );
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

    // Storing, stop the database under it.
    let mut producer = storing(&sb, &log);
    healthy_for(&addr, Duration::from_secs(THRESHOLD_SECS + 2), &log);

    // Restorer first, lock second: on a panic the lock goes first, then `up` can take it.
    let restorer = ServicesRestorer;
    let lock = lock_services();
    kill_ferretdb();
    let stopped_at = Instant::now();
    let body = wait_for(&addr, "/healthz", 503, Duration::from_secs(60), &log);
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_secs(THRESHOLD_SECS),
        "503 after {took:?}, before the threshold of {THRESHOLD_SECS} s"
    );
    // The step in hand is nowhere near the max step interval (300 s): the outage is the cause.
    assert!(
        body.starts_with("database unreachable for") && body.contains("threshold 3 s"),
        "{body}"
    );
    eprintln!(
        "FIGURE healthz: 503 {:.1} s after FerretDB was stopped ({})",
        took.as_secs_f64(),
        body.trim()
    );
    drop(lock);
    services_up();
    drop(restorer);
    healthy_again(&addr, Instant::now(), "FerretDB answered again", &log);
    stop_all(&mut [&mut producer, &mut consumer]);
}

#[test]
fn healthz_turns_503_while_a_step_is_stuck_past_the_max_step_interval() {
    let _turn = my_turn();
    wait_for_no_other_tests(Duration::from_secs(3), Duration::from_secs(1800));
    let (_sb, addr, mut consumer, mut producer, log) =
        storing_with_a_step_limit("health_stuck", &["--partitions", "0,1,2"]);

    // Frozen, the database neither answers nor refuses: the next step waits in its write.
    let frozen = Frozen::freeze();
    let frozen_at = Instant::now();
    let body = wait_for(&addr, "/healthz", 503, Duration::from_secs(90), &log);
    let took = frozen_at.elapsed();
    // A step that began just before the freeze is stuck from its start: half a second of room.
    assert!(
        took >= Duration::from_millis(STUCK_STEP_SECS * 1000 - 500),
        "503 after {took:?}, before the max step interval of {STUCK_STEP_SECS} s"
    );
    assert!(
        body.starts_with("a step has been running for") && body.contains("the limit is 11 s"),
        "{body}"
    );
    eprintln!(
        "FIGURE healthz: 503 {:.1} s after FerretDB froze ({})",
        took.as_secs_f64(),
        body.trim()
    );
    // Stuck it stays: the step is still in hand while the database is frozen.
    std::thread::sleep(Duration::from_secs(2));
    let still = http_get(&addr, "/healthz");
    assert!(
        still
            .as_ref()
            .is_some_and(|(s, b)| *s == 503 && b.starts_with("a step has been running")),
        "{still:?}"
    );
    drop(frozen);
    healthy_again(&addr, Instant::now(), "the thaw", &log);
    stop_all(&mut [&mut producer, &mut consumer]);
}

// A group member stuck on its database leaves its group after the max step interval; the
// step in hand then fails (the member no longer owns its partitions) and the member rejoins,
// its resume waiting on the frozen database. None of that is progress: `/healthz` stays 503
// from the first time it turned until the database answers again (it answered 200 between the
// failed step and the thaw before).
#[test]
fn healthz_of_a_member_that_left_its_group_stuck_on_the_database_stays_503_until_the_thaw() {
    let _turn = my_turn();
    wait_for_no_other_tests(Duration::from_secs(3), Duration::from_secs(1800));
    let (_sb, addr, mut consumer, mut producer, log) =
        storing_with_a_step_limit("health_left", &[]);

    let frozen = Frozen::freeze();
    let frozen_at = Instant::now();
    wait_for(&addr, "/healthz", 503, Duration::from_secs(90), &log);
    // Until the member has left and its step in hand has failed, and 5 s past that, every
    // answer is 503.
    let left_at = Instant::now() + Duration::from_secs(120);
    let mut failed_at: Option<Instant> = None;
    let mut last = String::new();
    while failed_at.is_none_or(|t| t.elapsed() < Duration::from_secs(5)) {
        assert!(
            Instant::now() < left_at,
            "the member never left its group and failed its step while the database was \
             frozen; log:\n{}",
            log()
        );
        let answer = http_get(&addr, "/healthz");
        assert!(
            answer.as_ref().is_some_and(|(s, _)| *s == 503),
            "/healthz answered {answer:?} {:.1} s after the freeze, the database still frozen; \
             log:\n{}",
            frozen_at.elapsed().as_secs_f64(),
            log()
        );
        last = answer.map(|(_, b)| b).unwrap_or_default();
        if failed_at.is_none() {
            let text = log();
            let after_leaving = text.split("left the group").nth(1).unwrap_or("");
            if after_leaving.contains("no longer owns its partitions")
                || after_leaving.contains("must rejoin its group")
            {
                failed_at = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        last.starts_with("no step has succeeded for") && last.contains("the limit is 11 s"),
        "{last}"
    );
    eprintln!(
        "FIGURE healthz: 503 throughout, {:.1} s after the freeze the member had left and \
         failed its step ({})",
        frozen_at.elapsed().as_secs_f64(),
        last.trim()
    );
    drop(frozen);
    healthy_again(&addr, Instant::now(), "the thaw", &log);
    stop_all(&mut [&mut producer, &mut consumer]);
}

/// A plain TCP forwarder on `listen` to `upstream`, until dropped: Kafka reachable again at
/// the address the consumer was given (its answers name the real broker, which the consumer
/// then reaches directly).
struct Forwarder {
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(listen: &str, upstream: &str) -> Forwarder {
        let listener = TcpListener::bind(listen).expect("bind the forwarder's port");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Forwarder { stop }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn healthz_turns_503_while_kafka_is_unreachable_and_readyz_waits_for_it() {
    let _turn = my_turn();
    let sb = Sandbox::new("health_kafka");
    common::kafka_wire::ensure_topic(&sb.brokers, &sb.topic);
    let addr = format!("127.0.0.1:{}", free_port());
    // Nobody listens there yet: every connection is refused.
    let bootstrap = format!("127.0.0.1:{}", free_port());
    const THRESHOLD_SECS: u64 = 3;
    let (mut consumer, log) = consumer(
        &sb,
        &[
            "--brokers",
            &bootstrap,
            "--metrics-addr",
            &addr,
            "--health-threshold",
            &THRESHOLD_SECS.to_string(),
        ],
    );
    let started = Instant::now();
    let body = wait_for(&addr, "/healthz", 503, Duration::from_secs(60), &log);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(THRESHOLD_SECS),
        "503 after {took:?}, before the threshold of {THRESHOLD_SECS} s"
    );
    assert!(
        body.starts_with("kafka unreachable for") && body.contains("threshold 3 s"),
        "{body}"
    );
    let ready = http_get(&addr, "/readyz");
    assert!(
        ready
            .as_ref()
            .is_some_and(|(s, b)| *s == 503 && b.contains("starting")),
        "not ready before Kafka answered: {ready:?}"
    );
    eprintln!(
        "FIGURE healthz: 503 {:.1} s after the consumer started without Kafka ({})",
        took.as_secs_f64(),
        body.trim()
    );

    let upstream = sb.brokers.split(',').next().expect("a broker").to_string();
    let _forwarder = Forwarder::start(&bootstrap, &upstream);
    let opened = Instant::now();
    wait_for(&addr, "/readyz", 200, Duration::from_secs(120), &log);
    healthy_again(&addr, opened, "Kafka could be reached (and ready)", &log);
    stop_all(&mut [&mut consumer]);
}
