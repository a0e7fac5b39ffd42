//! The database down: FerretDB SIGKILLed for 15 s in the middle of a 20,000-message backlog,
//! then started again; the consumer is not restarted, logs the outage and its recovery, and
//! stores every message once.

use std::time::Duration;

use crate::common::kafka_tools::create_topic;
use crate::common::kcat::kcat_read;
use crate::common::outages::{kill_ferretdb, lock_services};
use crate::common::process::{poll, unix_now};
use crate::harness::{sleep, Chaos};
use crate::invariants::all_valid;
use crate::outage::{bring_back, first_store_after, listening, RawSampler};
use crate::runs::End;

/// FerretDB SIGKILLed for 15 s when a random fifth to half of the backlog is handled.
pub fn killed_15s_mid_batch() {
    let mut c = Chaos::exclusive("database_down_15s");
    create_topic(&c.sb.brokers, &c.sb.topic, &["--partitions", "3"]);
    c.produce("produce", 2000, "0");
    let total = kcat_read(&c.sb.brokers, &c.sb.topic).len() as u64;
    let sampler = RawSampler::start(&c.sb);
    let mut consumer = c.spawn("consume", &["consume", "--exit-when-idle", "10"]);
    let at = c.rng.u64(total / 5..total / 2);
    let reached = poll(Duration::from_secs(180), Duration::from_millis(5), || {
        (c.progress() >= at).then_some(())
    });
    assert!(
        reached.is_some(),
        "no progress to {at}:\n{}",
        consumer.tail(20)
    );
    let handled_at_kill = c.progress();
    // Held while the database is down: another run's `services.sh up` waits.
    let lock = lock_services();
    let pid = kill_ferretdb();
    let killed_at = unix_now();
    sleep(killed_at + 15.0 - unix_now());
    if listening(&c.sb.database_address()) {
        c.notes
            .push("the database was started again by someone else during the outage".into());
    }
    drop(lock);
    assert!(
        consumer.running(),
        "the consumer ended while the database was down:\n{}",
        consumer.tail(30)
    );
    let restart_at = unix_now();
    let (_, answered_at) = bring_back(&c);
    c.end(consumer, End::Exit(Duration::from_secs(600)));
    // The whole log, once the consumer has ended: its recovery line comes after a backoff.
    let log_during = c.ended.last().unwrap().output.clone();
    let samples = sampler.finish();
    // Most of the backlog was left when the database went down: stores come after it answers.
    let stored = first_store_after(&samples, answered_at, true)
        .expect("no store dated after the database answered again");
    c.recovery.push(format!(
        "FerretDB (pid {pid}) SIGKILLed when {handled_at_kill} of {total} records were \
         handled, for {:.0} s; it answered {:.1} s after the restart began; the consumer's first \
         store {stored:+.1} s after that",
        restart_at - killed_at,
        answered_at - restart_at
    ));
    assert!(
        log_during.contains("ERROR") && log_during.contains("recovered"),
        "the consumer logs the outage and its recovery"
    );
    c.finish(&all_valid);
}
