//! The driver's fetch source: the fetch worker ([`Prefetcher`]) at the engine's positions, its
//! failures retried with backoff here (an outage is logged once per attempt, never handed to
//! the driver as records).

use std::collections::BTreeMap;

use log::{error, info};

use super::prefetch::{FetchRequest, Interrupted, Prefetcher};
use crate::engine::{DriverError, Fetch, FetchSource};
use crate::kafka::{Fetched, KafkaSource, TopicInfo};
use crate::retry::Backoff;
use crate::settings::ConsumeSettings;
use crate::shutdown::Shutdown;
use crate::telemetry::{self, Service};

/// [`FetchSource`] over the fetch worker.
pub struct KafkaFetch {
    fetcher: Prefetcher,
    shutdown: Shutdown,
    /// The log read; the main thread follows a re-created topic and tells the worker.
    topic: TopicInfo,
    backoff: Backoff,
    /// The new log, once a fetch found the topic re-created.
    new_topic: Option<TopicInfo>,
}

impl KafkaFetch {
    /// Starts the fetch worker, with connections of its own to the same brokers (the main
    /// thread's [`crate::kafka::KafkaAdmin`] commits and describes the group, never fetches).
    pub fn start(
        settings: &ConsumeSettings,
        shutdown: &Shutdown,
        topic: TopicInfo,
    ) -> Result<KafkaFetch, String> {
        let mut source = KafkaSource::new(
            settings.brokers.clone(),
            settings.topic.clone(),
            settings.group.clone(),
            shutdown.clone(),
        )
        .with_security(settings.security.clone());
        let mut following = None;
        let fetcher = Prefetcher::start(shutdown.clone(), move |request: &FetchRequest| {
            // The log to read is the main thread's: it follows a re-created topic.
            if following != Some(request.topic.topic_id) {
                source.follow(&request.topic);
                following = Some(request.topic.topic_id);
            }
            source.fetch(&request.positions)
        })
        .map_err(|e| format!("cannot start the fetch thread: {e}"))?;
        Ok(KafkaFetch {
            fetcher,
            shutdown: shutdown.clone(),
            topic,
            backoff: Backoff::standard(),
            new_topic: None,
        })
    }

    /// Reads `topic` from now on.
    pub fn follow(&mut self, topic: TopicInfo) {
        self.topic = topic;
    }

    /// The re-created topic a fetch found ([`Fetch::LogChanged`]), once.
    pub fn take_new_topic(&mut self) -> Option<TopicInfo> {
        self.new_topic.take()
    }

    fn request(&self, positions: &BTreeMap<i32, i64>) -> FetchRequest {
        FetchRequest {
            topic: self.topic.clone(),
            positions: positions.iter().map(|(p, o)| (*p, *o)).collect(),
        }
    }
}

impl FetchSource for KafkaFetch {
    fn fetch(&mut self, positions: &BTreeMap<i32, i64>) -> Result<Fetch, DriverError> {
        let answer = match self.fetcher.fetch(self.request(positions)) {
            Ok(answer) => answer,
            Err(Interrupted::Shutdown) => return Err(DriverError::Stopped),
            Err(Interrupted::WorkerLost) => {
                return Err(DriverError::Fatal(
                    "the fetch worker stopped unexpectedly".into(),
                ))
            }
        };
        match answer.result {
            Ok(fetched) => {
                telemetry::consumer().service_outcome(Service::Kafka, true);
                if self.backoff.failures() > 0 {
                    info!(
                        "kafka fetch: recovered after {} failed attempts",
                        self.backoff.failures()
                    );
                    self.backoff.reset();
                }
                match fetched {
                    Fetched::Data(parts) => {
                        for part in &parts {
                            if let Some(hw) = part.high_watermark {
                                telemetry::consumer().log_end(part.partition, hw);
                            }
                        }
                        Ok(Fetch::Data {
                            parts,
                            arrival: answer.arrival,
                        })
                    }
                    Fetched::TopicChanged(topic) => {
                        self.new_topic = Some(topic);
                        Ok(Fetch::LogChanged)
                    }
                }
            }
            Err(_) if self.shutdown.requested() => Err(DriverError::Stopped),
            Err(e) if e.is_fatal() => Err(DriverError::Fatal(e.to_string())),
            Err(e) => {
                telemetry::consumer().service_outcome(Service::Kafka, false);
                let delay = self.backoff.next_delay();
                error!(
                    "{e}; retrying in {:.1} s (no offset advanced)",
                    delay.as_secs_f64()
                );
                if !self.shutdown.sleep(delay) {
                    return Err(DriverError::Stopped);
                }
                Ok(Fetch::Failed)
            }
        }
    }

    fn prefetch(&mut self, positions: &BTreeMap<i32, i64>) {
        let request = self.request(positions);
        self.fetcher.prefetch(request);
    }
}
