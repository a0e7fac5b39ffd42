//! The producer: the only file that imports the `kafka` crate (kafka-rust 0.10).
//!
//! The crate shapes this file. It never reconnects a pooled connection that failed, never
//! retries a produce, freezes a producer's partition table, can panic on some broker failures,
//! and its sockets time out only after 120 s. So every call runs on a short-lived worker thread
//! that owns the client and is waited for with a deadline: a panic or a stall there costs a
//! rebuilt client, never the caller's data, and never blocks shutdown. Any failure, including
//! a partition-level one such as NOT_LEADER_FOR_PARTITION after a leader moved, drops the
//! client; the next call builds a fresh one and reloads metadata, which is how this adapter
//! reconnects and follows the cluster.
//!
//! A worker that missed its deadline cannot be stopped, only abandoned. A link keeps at most
//! one abandoned worker: a new call first waits (within its own deadline) for it to return, and
//! fails as "busy" if it does not, instead of starting another thread; so an outage that stalls
//! every call does not pile up threads and sockets at each retry.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kafka::client::{KafkaClient, ProduceMessage, RequiredAcks};

use super::{partition_for_key, KafkaError};
use crate::shutdown::Shutdown;

/// How long the broker may wait for all in-sync replicas before failing a produce.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for one call into the crate, beyond which the worker is abandoned.
const CALL_DEADLINE: Duration = Duration::from_secs(20);
/// How long a fresh client waits for the topic's partitions to have leaders (the first
/// metadata requests after a broker start or a topic's auto-creation answer "not available").
const METADATA_WAIT: Duration = Duration::from_secs(15);

/// Builds a connected client for a topic (`connect` below; a stub in tests).
type Connect = fn(Vec<String>, &str) -> Result<KafkaClient, String>;

/// What a worker sends back: the client and the call's result, the connect failure, or the
/// panic it caught.
type Outcome<T> = std::thread::Result<Result<(KafkaClient, Result<T, String>), String>>;

/// A worker that missed its deadline and may still be running inside the crate.
struct Abandoned {
    operation: &'static str,
    since: Instant,
    /// Tells when the worker ends: it sends, or hangs up, once its outcome is dropped.
    done: mpsc::Receiver<()>,
}

/// A client for one topic that survives broker restarts by being rebuilt after any failure.
struct Link {
    brokers: Vec<String>,
    topic: String,
    client: Option<KafkaClient>,
    /// A stop request abandons the call in flight instead of waiting out its deadline.
    shutdown: Shutdown,
    connect: Connect,
    deadline: Duration,
    /// The one abandoned worker this link may have; no call starts while it runs.
    abandoned: Option<Abandoned>,
}

impl Link {
    fn new(brokers: Vec<String>, topic: String, shutdown: Shutdown) -> Self {
        Link {
            brokers,
            topic,
            client: None,
            shutdown,
            connect,
            deadline: CALL_DEADLINE,
            abandoned: None,
        }
    }

    /// Runs `op` with a connected client on a worker thread, within the link's deadline. While
    /// an abandoned worker still runs, no worker starts: the call waits for it instead, and
    /// fails as busy when the deadline passes first.
    fn call<T, F>(&mut self, operation: &'static str, op: F) -> Result<T, KafkaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut KafkaClient, &str) -> Result<T, String> + Send + 'static,
    {
        let fail = |detail: String| KafkaError {
            operation,
            detail,
            fenced: false,
        };
        let deadline = Instant::now() + self.deadline;
        if let Some(stuck) = self.abandoned.take() {
            if !self.wait_until_over(&stuck, deadline) {
                let detail = format!(
                    "busy: the {} call abandoned {:.0} s ago still waits for the broker; no new \
                     call starts until it returns (the kafka crate's sockets give up after 120 s)",
                    stuck.operation,
                    stuck.since.elapsed().as_secs_f64()
                );
                self.abandoned = Some(stuck);
                return Err(fail(detail));
            }
            // It returned; its client, whatever state it was in, went with it.
        }
        let existing = self.client.take();
        let brokers = self.brokers.clone();
        let topic = self.topic.clone();
        let connect = self.connect;
        let (tx, rx) = mpsc::channel::<Outcome<T>>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("kafka-{operation}"))
            .spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(move || {
                    let mut client = match existing {
                        Some(c) => c,
                        None => connect(brokers, &topic)?,
                    };
                    let result = op(&mut client, &topic);
                    Ok::<_, String>((client, result))
                }));
                // The receiver may have given up on us; nothing to do then. The outcome (and
                // the client in it) is dropped before `done` says the worker is over.
                let _ = tx.send(outcome);
                let _ = done_tx.send(());
            })
            .map_err(|e| fail(format!("cannot start a worker thread: {e}")))?;

        let answer = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Err(mpsc::RecvTimeoutError::Timeout)
                    if Instant::now() < deadline && !self.shutdown.requested() => {}
                other => break other,
            }
        };
        if matches!(answer, Err(mpsc::RecvTimeoutError::Timeout)) {
            self.abandoned = Some(Abandoned {
                operation,
                since: Instant::now(),
                done: done_rx,
            });
        }
        match answer {
            Ok(Ok(Ok((client, Ok(value))))) => {
                self.client = Some(client);
                Ok(value)
            }
            // The client may hold a broken connection the crate would keep reusing: drop it.
            Ok(Ok(Ok((_client, Err(detail))))) => Err(fail(detail)),
            Ok(Ok(Err(detail))) => Err(fail(detail)),
            Ok(Err(panic)) => Err(fail(format!(
                "the kafka client panicked ({}); it will be rebuilt",
                panic_text(&panic)
            ))),
            Err(_) if self.shutdown.requested() => Err(fail("abandoned: stop requested".into())),
            Err(_) => Err(fail(format!(
                "no answer within {} s; the client will be rebuilt",
                self.deadline.as_secs_f64()
            ))),
        }
    }

    /// Waits until the abandoned worker is over, the deadline passes or a stop is requested;
    /// true when it is over.
    fn wait_until_over(&self, stuck: &Abandoned, deadline: Instant) -> bool {
        loop {
            match stuck.done.recv_timeout(Duration::from_millis(100)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline || self.shutdown.requested() {
                        return false;
                    }
                }
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return true,
            }
        }
    }
}

/// Builds a client and loads the topic's metadata (auto-creating the topic where the broker
/// allows it), waiting until every partition has a leader.
fn connect(brokers: Vec<String>, topic: &str) -> Result<KafkaClient, String> {
    let mut client = KafkaClient::new(brokers.clone());
    client.set_client_id(super::wire::CLIENT_ID.into());
    // Bounded retries inside the crate, so a call returns well within CALL_DEADLINE.
    client.set_retry_max_attempts(5);
    client.set_retry_backoff_time(Duration::from_millis(200));

    let deadline = Instant::now() + METADATA_WAIT;
    loop {
        // An unreachable broker fails at once: the caller's backoff paces the retries.
        client
            .load_metadata(&[topic])
            .map_err(|e| format!("no broker of {} answered ({e})", brokers.join(",")))?;
        let problem = match client.topics().partitions(topic) {
            Some(ps) if !ps.is_empty() && ps.iter().all(|p| p.leader().is_some()) => {
                return Ok(client)
            }
            Some(_) => format!("topic {topic} has partitions without a leader yet"),
            None => format!("topic {topic} does not exist yet"),
        };
        if Instant::now() >= deadline {
            return Err(problem);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Where Kafka stored one produced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// Sends keyed records to one topic, acknowledged by all in-sync replicas.
pub struct KafkaProducer {
    link: Link,
}

impl KafkaProducer {
    pub fn new(brokers: Vec<String>, topic: String, shutdown: Shutdown) -> Self {
        KafkaProducer {
            link: Link::new(brokers, topic, shutdown),
        }
    }

    /// Sends `(key, value)` records in one request per leader. Each record gets its own
    /// outcome: a partition that failed does not hide the others that succeeded, so the caller
    /// re-sends only what was not stored.
    pub fn send(
        &mut self,
        records: Vec<(String, String)>,
    ) -> Result<Vec<Result<Delivery, String>>, KafkaError> {
        let outcomes = self.link.call("produce", move |client, topic| {
            let partition_count = client
                .topics()
                .partitions(topic)
                .map(|p| p.len() as u32)
                .ok_or_else(|| format!("topic {topic} is unknown"))?;
            let partitions: Vec<i32> = records
                .iter()
                .map(|(key, _)| partition_for_key(key.as_bytes(), partition_count))
                .collect();
            let messages: Vec<ProduceMessage> = records
                .iter()
                .zip(&partitions)
                .map(|((key, value), &p)| {
                    ProduceMessage::new(topic, p, Some(key.as_bytes()), Some(value.as_bytes()))
                })
                .collect();
            let confirms = client
                .produce_messages(RequiredAcks::All, ACK_TIMEOUT, messages)
                .map_err(|e| e.to_string())?;
            let mut base: HashMap<i32, Result<i64, String>> = HashMap::new();
            for confirm in confirms {
                for pc in confirm.partition_confirms {
                    base.insert(pc.partition, pc.offset.map_err(|code| format!("{code:?}")));
                }
            }
            // Records of one partition are appended in order from the confirmed base offset.
            let mut next_in_partition: HashMap<i32, i64> = HashMap::new();
            Ok(partitions
                .iter()
                .map(|p| match base.get(p) {
                    Some(Ok(first)) => {
                        let k = next_in_partition.entry(*p).or_insert(0);
                        let offset = first + *k;
                        *k += 1;
                        Ok(Delivery {
                            partition: *p,
                            offset,
                        })
                    }
                    Some(Err(code)) => Err(format!("partition {p}: {code}")),
                    None => Err(format!("partition {p}: no acknowledgement")),
                })
                .collect::<Vec<_>>())
        })?;
        // A partition-level failure (NOT_LEADER_FOR_PARTITION after a leader moved, an unknown
        // partition after the topic grew) means the client's metadata is stale: rebuild it.
        if outcomes.iter().any(Result::is_err) {
            self.link.client = None;
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A client that is never used for I/O: the calls below do not touch it.
    fn no_network(_: Vec<String>, _: &str) -> Result<KafkaClient, String> {
        Ok(KafkaClient::new(vec!["127.0.0.1:9".into()]))
    }

    fn test_link(deadline: Duration) -> Link {
        let mut link = Link::new(vec!["127.0.0.1:9".into()], "t".into(), Shutdown::default());
        link.connect = no_network;
        link.deadline = deadline;
        link
    }

    #[test]
    fn a_link_leaves_at_most_one_abandoned_call_behind() {
        let mut link = test_link(Duration::from_millis(300));
        let started = Arc::new(AtomicUsize::new(0));
        let counting = |result: i32| {
            let s = started.clone();
            move |_: &mut KafkaClient, _: &str| {
                s.fetch_add(1, Ordering::SeqCst);
                Ok(result)
            }
        };

        // The first call hangs past its deadline, as a call into a stalled broker does.
        let (release, hang) = mpsc::channel::<()>();
        let s = started.clone();
        let e = link
            .call("produce", move |_, _| {
                s.fetch_add(1, Ordering::SeqCst);
                let _ = hang.recv();
                Ok(0)
            })
            .unwrap_err();
        assert!(e.detail.contains("no answer within 0.3 s"), "{e}");

        // While it hangs, every retry waits out its own deadline and fails as busy, starting
        // no worker.
        for _ in 0..3 {
            let t = Instant::now();
            let e = link.call("produce", counting(1)).unwrap_err();
            assert!(
                e.detail.starts_with("busy: the produce call abandoned"),
                "{e}"
            );
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "one worker, however many retries"
        );

        // A call waiting for the abandoned one goes ahead as soon as it returns.
        let mut link = Link {
            deadline: Duration::from_secs(10),
            ..link
        };
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            release.send(()).unwrap();
        });
        let t = Instant::now();
        assert_eq!(link.call("produce", counting(42)).unwrap(), 42);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        releaser.join().unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert!(link.abandoned.is_none());
    }

    #[test]
    fn a_stop_request_ends_the_wait_for_an_abandoned_call() {
        let mut link = test_link(Duration::from_millis(100));
        let (_release, hang) = mpsc::channel::<()>();
        let e = link
            .call("produce", move |_, _| {
                let _ = hang.recv();
                Ok(())
            })
            .unwrap_err();
        assert!(e.detail.contains("no answer"), "{e}");
        link.deadline = Duration::from_secs(30);
        link.shutdown.request();
        let t = Instant::now();
        let e = link.call("produce", |_, _| Ok(())).unwrap_err();
        assert!(e.detail.starts_with("busy"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn calls_within_the_deadline_keep_their_client_and_abandon_nothing() {
        let mut link = test_link(Duration::from_secs(5));
        for i in 0..3 {
            assert_eq!(link.call("produce", move |_, _| Ok(i)).unwrap(), i);
            assert!(link.client.is_some() && link.abandoned.is_none());
        }
        let e = link
            .call::<(), _>("produce", |_, _| Err("NotLeaderForPartition".into()))
            .unwrap_err();
        assert_eq!(e.detail, "NotLeaderForPartition");
        assert!(link.client.is_none(), "a failed call drops the client");
        assert!(link.abandoned.is_none());
    }
}
