//! What the outage scenarios share: the raw collection sampled every 100 ms (it dates the
//! consumer's recovery), the services brought back, and the producer's closing totals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::kcat::partition_leaders;
use crate::common::outages::{mongo_answers, services_up};
use crate::common::process::{poll, unix_now};
use crate::common::services::{services, Sandbox};
use crate::harness::{fast_count, Chaos};

/// The raw collection's document count, sampled every 100 ms by a thread: (unix time, count).
pub struct RawSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<(f64, u64)>>,
}

impl RawSampler {
    /// Starts sampling the sandbox's raw collection.
    pub fn start(sb: &Sandbox) -> RawSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let db = sb.db();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(n) = fast_count(&db, "raw") {
                    samples.push((unix_now(), n));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        RawSampler { stop, handle }
    }

    /// Stops sampling; the samples, oldest first.
    pub fn finish(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler")
    }
}

/// Seconds from `after` to the first sample that shows a store made after it: more documents
/// than the baseline (the last sample before `after`, or with `baseline_after` the first one
/// after it, for a database that was down: what it held is only known once it answers).
pub fn first_store_after(samples: &[(f64, u64)], after: f64, baseline_after: bool) -> Option<f64> {
    let baseline = if baseline_after {
        samples.iter().find(|s| s.0 >= after)?.1
    } else {
        samples
            .iter()
            .take_while(|s| s.0 < after)
            .last()
            .map_or(0, |s| s.1)
    };
    samples
        .iter()
        .find(|s| s.0 >= after && s.1 > baseline)
        .map(|s| s.0 - after)
}

/// Brings the services back and returns when the topic's partitions have leaders again (as
/// kcat sees the metadata) and the database answers, in unix seconds.
pub fn bring_back(c: &Chaos) -> (f64, f64) {
    let up = std::thread::spawn(services_up);
    let brokers = c.sb.brokers.clone();
    let topic = c.sb.topic.clone();
    let kafka = std::thread::spawn(move || {
        poll(Duration::from_secs(300), Duration::from_millis(100), || {
            let leaders = partition_leaders(&brokers, &topic)?;
            (!leaders.is_empty() && leaders.values().all(|l| *l >= 0)).then(unix_now)
        })
    });
    let (_, plain_uri) = services();
    let mongo = poll(Duration::from_secs(300), Duration::from_millis(100), || {
        mongo_answers(&plain_uri).then(unix_now)
    });
    up.join().expect("services up");
    let kafka = kafka.join().expect("kafka poll");
    (
        kafka.expect("the topic has leaders again"),
        mongo.expect("the database answers again"),
    )
}

/// True when something listens on one of these `host:port` addresses.
pub fn listening(addresses: &str) -> bool {
    addresses.split(',').any(|a| {
        a.parse()
            .map(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
            .unwrap_or(false)
    })
}

/// The totals the producer run `name` logged when it stopped (after "producer stopped: ").
pub fn producer_summary_from(c: &Chaos, name: &str) -> String {
    c.ended
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| {
            e.output.lines().find_map(|l| {
                l.split_once("producer stopped: ")
                    .map(|(_, s)| s.to_string())
            })
        })
        .unwrap_or_default()
}
