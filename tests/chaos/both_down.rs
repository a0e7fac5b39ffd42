//! Both services down at start: Kafka and FerretDB SIGKILLed before the consumer and a
//! producer start; both wait (logging what they wait for), and once the services are back
//! every report made is sent and every message stored once.

use std::time::Duration;

use crate::common::kafka_tools::create_topic;
use crate::common::outages::{kill_all_kafka, kill_ferretdb, lock_services};
use crate::common::process::unix_now;
use crate::harness::{fleet, sleep, Chaos};
use crate::invariants::all_valid;
use crate::outage::{bring_back, first_store_after, listening, producer_summary_from, RawSampler};
use crate::runs::End;

/// Both services SIGKILLed, the consumer and a producer started, 20 s of waiting, then both
/// services brought back.
pub fn both_down_at_start() {
    let mut c = Chaos::exclusive("both_down_at_start");
    create_topic(&c.sb.brokers, &c.sb.topic, &["--partitions", "3"]);
    c.produce("produce-before", 200, "0");
    // Held while the services are down: another run's `services.sh up` waits.
    let lock = lock_services();
    let kafka = kill_all_kafka();
    let ferret = kill_ferretdb();
    let down_at = unix_now();
    let sampler = RawSampler::start(&c.sb);
    let mut consumer = c.spawn("consume", &["consume", "--exit-when-idle", "10"]);
    let mut producer = c.spawn(
        "produce-during",
        &[
            "produce",
            "--interval",
            "0.05",
            "--count",
            "300",
            "--servers",
            &fleet(),
        ],
    );
    sleep(20.0);
    assert!(
        consumer.running(),
        "the consumer gave up:\n{}",
        consumer.tail(30)
    );
    assert!(
        producer.running(),
        "the producer gave up:\n{}",
        producer.tail(30)
    );
    let waiting_log = consumer.log_text();
    assert!(
        waiting_log.contains("ERROR") && waiting_log.contains("retrying in"),
        "the consumer logs what it waits for:\n{}",
        consumer.tail(20)
    );
    if listening(&c.sb.brokers) || listening(&c.sb.database_address()) {
        c.notes
            .push("a service was started again by someone else during the outage".into());
    }
    drop(lock);
    let restart_at = unix_now();
    let (kafka_at, mongo_at) = bring_back(&c);
    let answered_at = kafka_at.max(mongo_at);
    c.end(producer, End::Exit(Duration::from_secs(300)));
    c.end(consumer, End::Exit(Duration::from_secs(600)));
    let samples = sampler.finish();
    // Nothing could be stored while the database was down: every store comes after.
    let stored = first_store_after(&samples, answered_at, true)
        .expect("no store dated after both services answered again");
    let summary = producer_summary_from(&c, "produce-during");
    c.recovery.push(format!(
        "Kafka (pids {kafka:?}) and FerretDB (pid {ferret}) SIGKILLed; consumer and producer \
         started with both down and waited {:.0} s; Kafka's topic had leaders {:.1} s and the \
         database answered {:.1} s after the restart began; the consumer's first store \
         {stored:+.1} s after both answered; producer: {summary}",
        restart_at - down_at,
        kafka_at - restart_at,
        mongo_at - restart_at
    ));
    assert!(
        summary.contains("0 reports dropped (outbox full), 0 messages unsent"),
        "every report made was sent: {summary}"
    );
    c.finish(&all_valid);
}
