//! Kafka down: every node SIGKILLed for 20 s or 90 s while the producer and the consumer run,
//! then started again; neither process is restarted, both go on, and every message is stored
//! once.

use std::time::Duration;

use crate::common::kafka_tools::create_topic;
use crate::common::kcat::kcat_read;
use crate::common::outages::{kill_all_kafka, lock_services};
use crate::common::process::{poll, unix_now};
use crate::harness::{fleet, sleep, Chaos};
use crate::invariants::{all_valid, Figures};
use crate::outage::{bring_back, first_store_after, listening, producer_summary_from, RawSampler};
use crate::runs::End;

/// Kafka (every node) SIGKILLed for `down` while the producer and the consumer run; neither is
/// restarted. Recovery: after the brokers answer, the producer's first record appended and the
/// consumer's first store.
pub fn kafka_outage(label: &str, down: f64) -> Figures {
    let mut c = Chaos::exclusive(label);
    create_topic(
        &c.sb.brokers,
        &c.sb.topic,
        &[
            "--partitions",
            "3",
            "--config",
            "message.timestamp.type=LogAppendTime",
        ],
    );
    let sampler = RawSampler::start(&c.sb);
    let mut consumer = c.spawn("consume", &["consume"]);
    // 50 messages a second; the producer's outbox (1,000 reports) holds 200 s of them.
    let mut producer = c.spawn(
        "produce",
        &["produce", "--interval", "0.2", "--servers", &fleet()],
    );
    let warm = poll(Duration::from_secs(120), Duration::from_millis(100), || {
        (c.progress() >= 300).then_some(())
    });
    assert!(
        warm.is_some(),
        "no traffic before the outage:\n{}",
        consumer.tail(20)
    );

    // Held while Kafka is down: another run's `services.sh up` waits instead of starting it.
    let lock = lock_services();
    let pids = kill_all_kafka();
    let killed_at = unix_now();
    sleep(killed_at + down - unix_now());
    if listening(&c.sb.brokers) {
        c.notes
            .push("Kafka was started again by someone else during the outage".into());
    }
    drop(lock);
    assert!(
        consumer.running(),
        "the consumer ended during the outage:\n{}",
        consumer.tail(30)
    );
    assert!(
        producer.running(),
        "the producer ended during the outage:\n{}",
        producer.tail(30)
    );
    let restart_at = unix_now();
    let (answered_at, _) = bring_back(&c);
    // Both work again without a restart: the consumer stores again (what the producer sent
    // meanwhile shows in its totals when it stops).
    let before = c.count("raw").unwrap_or(0);
    let working = poll(Duration::from_secs(180), Duration::from_millis(200), || {
        (c.count("raw")? > before + 100).then_some(())
    });
    assert!(
        working.is_some(),
        "the consumer stored nothing after the outage:\n{}",
        consumer.tail(30)
    );
    sleep(20.0);
    assert!(
        consumer.running() && producer.running(),
        "a process ended after the outage"
    );
    c.end(producer, End::Term);
    let total = kcat_read(&c.sb.brokers, &c.sb.topic).len() as u64;
    let drained = poll(Duration::from_secs(300), Duration::from_millis(200), || {
        (c.progress() >= total).then_some(())
    });
    assert!(
        drained.is_some(),
        "the consumer did not catch up: {} of {total} records\n{}",
        c.progress(),
        consumer.tail(30)
    );
    c.end(consumer, End::Term);
    let consumer_log = c.ended.last().unwrap().output.clone();
    let samples = sampler.finish();

    let records = kcat_read(&c.sb.brokers, &c.sb.topic);
    let appended = records
        .iter()
        .map(|r| r.timestamp_ms as f64 / 1000.0)
        .filter(|t| *t > killed_at)
        .fold(f64::INFINITY, f64::min);
    let stored = first_store_after(&samples, answered_at, false)
        .expect("no store dated after Kafka answered again");
    let summary = producer_summary_from(&c, "produce");
    c.recovery.push(format!(
        "{} Kafka node(s) (pids {pids:?}) SIGKILLed for {down:.0} s; restarted {:.1} s after \
         the kill; the topic had leaders again {:.1} s after the restart began; after that: \
         producer's first append {:+.1} s, consumer's first store {:+.1} s; producer: {summary}",
        pids.len(),
        restart_at - killed_at,
        answered_at - restart_at,
        appended - answered_at,
        stored
    ));
    assert!(
        consumer_log.contains("ERROR") && consumer_log.contains("recovered"),
        "the consumer logs the outage and its recovery"
    );
    assert!(
        summary.contains("0 reports dropped (outbox full), 0 messages unsent"),
        "every report made was sent: {summary}"
    );
    c.finish(&all_valid)
}
