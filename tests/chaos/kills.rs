//! Kills and restarts: the consumer ended again and again at random moments, by SIGKILL or
//! SIGTERM, during a backlog or while the producer streams; after a last run to idle, the
//! stores hold every message once.

use std::time::Duration;

use crate::common::kafka_tools::create_topic;
use crate::common::kcat::kcat_read;
use crate::common::process::poll;
use crate::harness::{fleet, run_to_idle, sleep, Chaos};
use crate::invariants::{all_valid, Figures};
use crate::runs::End;

/// The signal that ends each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Kill,
    Term,
}

/// Starts the consumer `kills` times and ends each run at a random moment with `sig`: a
/// quarter of the moments fall in the start (connecting, joining the group, resuming), the
/// others while it works: for a backlog of `backlog` records at random points of its progress
/// (0–30 ms after it stored past a random target), while streaming a random 0–4 s after it
/// stored something. Once the backlog is all handled, the moments are random times.
pub fn kill_loop(c: &mut Chaos, sig: Sig, kills: usize, backlog: Option<u64>, args: &[&str]) {
    let mut targets: Vec<u64> = match backlog {
        Some(n) => (0..kills)
            .map(|_| c.rng.u64(n * 3 / 100..n * 95 / 100))
            .collect(),
        None => Vec::new(),
    };
    targets.sort_unstable();
    let mut during = 0;
    for i in 0..kills {
        let mut p = c.spawn(&format!("consume-{i:02}"), args);
        let before = c.progress();
        let done = backlog.is_some_and(|n| before >= n);
        if done {
            sleep(c.rng.f64() * 2.5);
        } else if c.rng.u8(0..4) == 0 {
            // In the start: a random moment of its first 2.5 s, but no later than its first
            // store of a backlog. Left to run for the whole pause, a consumer that rejoins at
            // once (after a SIGTERM it left the group) handles thousands of records, and a few
            // such runs empty the backlog before most ends were sent.
            let pause = Duration::from_secs_f64(c.rng.f64() * 2.5);
            if backlog.is_some() {
                let _ = poll(pause, Duration::from_millis(20), || {
                    (c.progress() > before).then_some(())
                });
            } else {
                std::thread::sleep(pause);
            }
        } else {
            // This run must store something new first: it is at work, not starting.
            let target = targets.get(i).copied().unwrap_or(0).max(before + 1);
            let reached = poll(Duration::from_secs(180), Duration::from_millis(20), || {
                assert!(p.running(), "{} ended by itself:\n{}", p.name, p.tail(30));
                (c.progress() >= target).then_some(())
            });
            assert!(
                reached.is_some(),
                "{}: no progress to {target} records in 180 s (at {}):\n{}",
                p.name,
                c.progress(),
                p.tail(30)
            );
            sleep(if backlog.is_some() {
                c.rng.f64() * 0.03
            } else {
                c.rng.f64() * 4.0
            });
        }
        c.end(
            p,
            match sig {
                Sig::Kill => End::Kill,
                Sig::Term => End::Term,
            },
        );
        c.restarts += 1;
        // Counted once the run is over, so a record stored between the look and the signal
        // cannot make a kill that came after the backlog count as one during it.
        if backlog.is_some_and(|n| c.progress() < n) {
            during += 1;
        }
    }
    if let Some(n) = backlog {
        c.notes.push(format!(
            "{during} of {kills} {sig:?}s landed before the {n} records were all handled"
        ));
        // The scenario is about ends that interrupt work: kills that all came once the backlog
        // was handled would prove nothing. At least one of a few, and half of many (the last
        // targets lie near the end of the backlog, and a quarter of the runs are ended after a
        // random pause, which may come after it).
        let needed = if kills >= 10 { kills / 2 } else { 1 };
        assert!(
            during >= needed,
            "only {during} of {kills} {sig:?}s landed before the {n} records were all handled \
             (at least {needed} must): the scenario did not interrupt the consumer at work"
        );
    }
}

/// A backlog of `reports` × 10 messages, then `kills` runs of the consumer ended by `sig` at
/// random moments, then a run to idle; checks the invariants.
pub fn backlog_scenario(
    label: &str,
    sig: Sig,
    kills: usize,
    reports: u32,
    args: &[&str],
) -> Figures {
    let mut c = Chaos::new(label);
    create_topic(&c.sb.brokers, &c.sb.topic, &["--partitions", "3"]);
    c.produce("produce", reports, "0");
    let total = kcat_read(&c.sb.brokers, &c.sb.topic).len() as u64;
    let mut consume = vec!["consume"];
    consume.extend_from_slice(args);
    kill_loop(&mut c, sig, kills, Some(total), &consume);
    run_to_idle(&mut c, "consume-last", &consume);
    c.finish(&all_valid)
}

/// The producer sends ten messages every 0.1 s while `kills` consumer runs are ended by `sig`
/// at random moments; then the producer is stopped (SIGTERM) and a run goes to idle.
pub fn streaming_scenario(label: &str, sig: Sig, kills: usize) -> Figures {
    let mut c = Chaos::new(label);
    create_topic(&c.sb.brokers, &c.sb.topic, &["--partitions", "3"]);
    let producer = c.spawn(
        "produce",
        &["produce", "--interval", "0.1", "--servers", &fleet()],
    );
    kill_loop(&mut c, sig, kills, None, &["consume"]);
    c.end(producer, End::Term);
    run_to_idle(&mut c, "consume-last", &["consume"]);
    c.finish(&all_valid)
}

/// The fast version in `make test`: three SIGKILLs in a 3,000-message backlog.
pub fn three_sigkills_during_a_quick_backlog() {
    // Static partitions: a restart need not wait for the killed member's session to expire.
    let f = backlog_scenario(
        "quick_sigkill_backlog",
        Sig::Kill,
        3,
        300,
        &["--partitions", "0,1,2"],
    );
    assert_eq!(f.stored + f.duplicate_events, f.records);
}
