//! The database frozen (issue 15, items 3 and 9, with the real database): two members of one
//! group, FerretDB SIGSTOPped for 35 s, longer than their --max-step-interval (15 s). A hung
//! database is an error that is retried (the driver's monitor gives up on it and interrupts the
//! call), never a thread stuck for ever; both members, stuck, leave the group (the partitions
//! have nowhere better to go, but nobody holds them), wait for the database, rejoin once it
//! answers, and everything is stored exactly once.

use std::time::{Duration, Instant};

use crate::common::kafka_tools::create_topic;
use crate::common::kcat::kcat_read;
use crate::common::outages::{ferretdb_pid, lock_services};
use crate::common::process::{poll, signal_pid};
use crate::harness::Chaos;
use crate::invariants::all_valid;
use crate::runs::End;

/// SIGCONTs FerretDB when dropped, also when the test panicked while it was stopped.
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// FerretDB SIGSTOPped for 35 s when a random fifth to half of the backlog is handled.
pub fn frozen_35s_under_two_members() {
    let mut c = Chaos::exclusive("database_frozen_35s");
    create_topic(&c.sb.brokers, &c.sb.topic, &["--partitions", "3"]);
    c.produce("produce", 2000, "0");
    let total = kcat_read(&c.sb.brokers, &c.sb.topic).len() as u64;
    let args = [
        "consume",
        "--exit-when-idle",
        "10",
        "--max-step-interval",
        "15",
    ];
    let mut a = c.spawn("consume-a", &args);
    let mut b = c.spawn("consume-b", &args);
    let at = c.rng.u64(total / 5..total / 2);
    let reached = poll(Duration::from_secs(180), Duration::from_millis(5), || {
        (c.progress() >= at).then_some(())
    });
    assert!(reached.is_some(), "no progress to {at}:\n{}", a.tail(20));
    let handled = c.progress();
    // Held while the database is stopped: another run's `services.sh up` waits.
    let lock = lock_services();
    let pid = ferretdb_pid().expect("FerretDB runs");
    signal_pid(pid, "STOP");
    let thaw = Thaw(pid);
    let stopped_at = Instant::now();
    let left = poll(Duration::from_secs(35), Duration::from_millis(200), || {
        (a.log_text().contains("made no step for") && b.log_text().contains("made no step for"))
            .then(|| stopped_at.elapsed())
    });
    let both_left = left.unwrap_or_else(|| {
        panic!(
            "the members did not both leave within 35 s of the freeze:\n{}\n{}",
            a.tail(20),
            b.tail(20)
        )
    });
    std::thread::sleep(
        (stopped_at + Duration::from_secs(35)).saturating_duration_since(Instant::now()),
    );
    assert!(
        a.running() && b.running(),
        "both members wait for the database"
    );
    for p in [&a, &b] {
        let log = p.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR mongodb") && l.contains("retrying in")),
            "{}: a failed database call logged and retried while frozen:\n{}",
            p.name,
            p.tail(20)
        );
    }
    drop(thaw);
    let thawed_at = Instant::now();
    drop(lock);
    let rejoined = poll(Duration::from_secs(60), Duration::from_millis(200), || {
        (a.log_text()
            .contains("the database answers again; rejoining")
            && b.log_text()
                .contains("the database answers again; rejoining"))
        .then(|| thawed_at.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "the members did not rejoin:\n{}\n{}",
            a.tail(20),
            b.tail(20)
        )
    });
    c.recovery.push(format!(
        "FerretDB (pid {pid}) SIGSTOPped for 35 s when {handled} of {total} records were \
         handled; both members (--max-step-interval 15) had left the group {:.1} s after the \
         stop, and both rejoined within {:.1} s of SIGCONT",
        both_left.as_secs_f64(),
        rejoined.as_secs_f64()
    ));
    c.end(a, End::Exit(Duration::from_secs(600)));
    c.end(b, End::Exit(Duration::from_secs(600)));
    c.finish(&all_valid);
}
