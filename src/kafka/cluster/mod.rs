//! The cluster as the consumer sees it: which broker leads each partition of our topic, the
//! topic's id, the group's coordinator, and one connection per broker. Any connection that
//! fails is dropped and metadata is reloaded, which is how the consumer follows leader moves,
//! broker restarts and a topic that was deleted and created again.
//!
//! Here: metadata and calls to any broker, a given broker or an address; `pool` keeps the
//! connections, `coordinator` finds the group's coordinator and calls it.

mod coordinator;
mod pool;

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{GroupId, MetadataRequest, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use log::debug;
use uuid::Uuid;

use super::connection::{Connection, WireError};
use super::security::Security;
use super::{fail, fatal, from_wire, KafkaError};
use crate::shutdown::Shutdown;
pub use pool::ToOpen;

/// How long a request other than a fetch may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a fresh topic's partitions may take to get leaders after auto-creation, and the
/// longest a coordinator lookup waits out COORDINATOR_NOT_AVAILABLE (unless the cluster's
/// lookup limit is shorter: a group member's is its session timeout).
const LEADER_WAIT: Duration = Duration::from_secs(15);
/// How often a wait for connections being opened looks at the stop flag.
const OPEN_POLL: Duration = Duration::from_millis(50);

/// How a metadata problem says the topic is not there.
const MISSING: &str = " does not exist";

/// Where the topic lives now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Kafka's id of this incarnation of the topic: a topic deleted and created again under the
    /// same name is a new log with a new id.
    pub topic_id: Uuid,
    /// Per partition, the leader's broker id (None while no leader is elected) and its epoch.
    pub partitions: BTreeMap<i32, Leader>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leader {
    pub broker: Option<i32>,
    pub epoch: i32,
}

impl TopicMeta {
    pub fn partition_ids(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }
}

/// Whether a metadata request may create the topic (only at start, as the old client did; a
/// running consumer never re-creates a topic someone just deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCreate {
    Yes,
    No,
}

pub struct Cluster {
    bootstrap: Vec<String>,
    topic: String,
    /// Broker id -> `host:port`, from the last metadata answer.
    brokers: HashMap<i32, String>,
    /// Open connections by address.
    connections: HashMap<String, Connection>,
    coordinator: Option<String>,
    meta: Option<TopicMeta>,
    shutdown: Shutdown,
    /// How every connection is secured (plaintext unless `with_security` says otherwise).
    security: Security,
    /// The longest a lookup (a broker to ask, the coordinator) may take before it fails.
    lookup_limit: Duration,
    /// Per address, connections planned by `take_or_plan` that were not given back with `put`
    /// (they failed): when the last was planned and how many in a row.
    unreturned: HashMap<String, (Instant, u32)>,
}

impl Cluster {
    pub fn new(bootstrap: Vec<String>, topic: String, shutdown: Shutdown) -> Cluster {
        Cluster {
            bootstrap,
            topic,
            brokers: HashMap::new(),
            connections: HashMap::new(),
            coordinator: None,
            meta: None,
            shutdown,
            security: Security::plaintext(),
            lookup_limit: LEADER_WAIT,
            unreturned: HashMap::new(),
        }
    }

    /// Bounds how long finding a broker that answers, or the group's coordinator, may take: a
    /// group member's lookups must end within its session timeout, or the coordinator removes
    /// the member while it still looks.
    pub fn set_lookup_limit(&mut self, limit: Duration) {
        self.lookup_limit = limit.min(LEADER_WAIT);
    }

    /// Secures every connection this cluster opens from now on as `security` says.
    pub fn set_security(&mut self, security: Security) {
        self.security = security;
        self.connections.clear();
    }

    pub fn security(&self) -> &Security {
        &self.security
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    /// The metadata of the last successful refresh.
    pub fn meta(&self) -> Option<&TopicMeta> {
        self.meta.as_ref()
    }

    /// Reloads the topic's metadata. Right after a topic is created its partitions have no
    /// leader for a moment: that is waited out (up to `LEADER_WAIT`). A topic that does not
    /// exist is an error, unless `auto_create` asks the broker to create it.
    pub fn refresh(&mut self, auto_create: AutoCreate) -> Result<TopicMeta, KafkaError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let problem = match self.load_metadata(auto_create)? {
                Ok(meta) => {
                    self.meta = Some(meta.clone());
                    return Ok(meta);
                }
                Err(problem) => problem,
            };
            // A missing topic that we may not create will not appear by waiting here.
            let missing = problem.ends_with(MISSING);
            if missing && auto_create == AutoCreate::No {
                return Err(fail("metadata", problem));
            }
            if Instant::now() >= deadline || self.shutdown.requested() {
                return Err(fail("metadata", problem));
            }
            self.shutdown.sleep(Duration::from_millis(100));
        }
    }

    /// One Metadata request. The outer error: no broker answered; the inner one: the answer
    /// says the topic is not usable yet.
    fn load_metadata(
        &mut self,
        auto_create: AutoCreate,
    ) -> Result<Result<TopicMeta, String>, KafkaError> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(self.topic.clone())),
            ))]))
            .with_allow_auto_topic_creation(auto_create == AutoCreate::Yes);
        let response = self.call_any(&request)?;
        let brokers: HashMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        if !brokers.is_empty() {
            // Connections to brokers that left the cluster are of no further use.
            let live: Vec<&String> = brokers.values().collect();
            self.connections.retain(|addr, _| live.contains(&addr));
            self.brokers = brokers;
        }
        let Some(topic) = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == self.topic))
        else {
            return Ok(Err(format!(
                "the broker did not describe topic {}",
                self.topic
            )));
        };
        if let Some(e) = ResponseError::try_from_code(topic.error_code) {
            if e == ResponseError::TopicAuthorizationFailed {
                return Err(fatal(
                    "metadata",
                    format!(
                        "the brokers refused access to topic {} (TOPIC_AUTHORIZATION_FAILED): \
                         ask the cluster's operator for DESCRIBE, READ and WRITE on it",
                        self.topic
                    ),
                ));
            }
            return Ok(Err(match e {
                ResponseError::UnknownTopicOrPartition => format!("topic {}{MISSING}", self.topic),
                ResponseError::LeaderNotAvailable => {
                    format!("topic {} has partitions without a leader yet", self.topic)
                }
                other => format!("topic {}: {other}", self.topic),
            }));
        }
        if topic.partitions.is_empty() {
            return Ok(Err(format!("topic {} has no partitions yet", self.topic)));
        }
        let partitions: BTreeMap<i32, Leader> = topic
            .partitions
            .iter()
            .map(|p| {
                let broker = (p.leader_id.0 >= 0).then_some(p.leader_id.0);
                (
                    p.partition_index,
                    Leader {
                        broker,
                        epoch: p.leader_epoch,
                    },
                )
            })
            .collect();
        // A brand-new topic: wait until every partition has a leader. Later, a partition whose
        // leader died is simply skipped by fetches until the controller elects another.
        let fresh = self
            .meta
            .as_ref()
            .is_none_or(|m| m.topic_id != topic.topic_id);
        if fresh && partitions.values().any(|l| l.broker.is_none()) {
            return Ok(Err(format!(
                "topic {} has partitions without a leader yet",
                self.topic
            )));
        }
        Ok(Ok(TopicMeta {
            topic_id: topic.topic_id,
            partitions,
        }))
    }

    /// Sends a request to any broker that answers: first on the connections already open,
    /// then on new connections to every known and bootstrap broker at once, using whichever
    /// opens first. A broker that accepts connections and never answers (hung, or not a broker)
    /// then costs nothing while another one answers; asked one after the other, it would hold
    /// each lookup for the whole handshake timeout.
    pub fn call_any<R: Request>(&mut self, request: &R) -> Result<R::Response, KafkaError> {
        let mut failures = Vec::new();
        let open: Vec<String> = self.connections.keys().cloned().collect();
        for addr in &open {
            match self.call_addr(addr, request, REQUEST_TIMEOUT) {
                Ok(r) => return Ok(r),
                // Brokers of one cluster run one version and one security setup: asking the
                // next one cannot help.
                Err(e @ (WireError::TooOld(_) | WireError::Security(_))) => {
                    return Err(from_wire("metadata", e))
                }
                Err(e) => failures.push(e),
            }
            if self.shutdown.requested() {
                return Err(self.none_answered(&failures));
            }
        }
        let mut candidates: Vec<String> = Vec::new();
        for addr in self.brokers.values().chain(&self.bootstrap) {
            if !candidates.contains(addr) && !open.contains(addr) {
                candidates.push(addr.clone());
            }
        }
        // One thread per candidate opens a connection; each reports on the channel. Those not
        // waited for end on their own (connect and handshake timeouts) and drop what they open.
        let (opened, arrivals) = channel();
        for addr in &candidates {
            let opened = opened.clone();
            let addr = addr.clone();
            let security = self.security.clone();
            let spawned = std::thread::Builder::new()
                .name("kafka-open".into())
                .spawn(move || {
                    let result = Connection::open(&addr, &security);
                    let _ = opened.send((addr, result));
                });
            if let Err(e) = spawned {
                failures.push(WireError::Io(format!(
                    "cannot start a thread to connect: {e}"
                )));
            }
        }
        drop(opened);
        let deadline = Instant::now() + self.lookup_limit;
        loop {
            let arrival = match arrivals.recv_timeout(OPEN_POLL) {
                Ok(a) => a,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if self.shutdown.requested() || Instant::now() >= deadline {
                        let waiting = candidates.len().saturating_sub(failures.len());
                        failures.push(WireError::Io(format!(
                            "{waiting} broker(s) did not complete a handshake within {:.1} s",
                            self.lookup_limit.as_secs_f64()
                        )));
                        break;
                    }
                    continue;
                }
            };
            match arrival {
                (addr, Ok(mut connection)) => {
                    let answer = connection.call(request, REQUEST_TIMEOUT);
                    match answer {
                        Ok(r) => {
                            self.connections.insert(addr, connection);
                            // Connections that opened meanwhile serve the next calls.
                            while let Ok((addr, Ok(c))) = arrivals.try_recv() {
                                self.connections.insert(addr, c);
                            }
                            return Ok(r);
                        }
                        Err(e @ (WireError::TooOld(_) | WireError::Security(_))) => {
                            return Err(from_wire("metadata", e))
                        }
                        Err(e) => {
                            debug!("{addr} opened but failed the request: {e}");
                            if !e.breaks_connection() {
                                self.connections.insert(addr, connection);
                            }
                            failures.push(e);
                        }
                    }
                }
                (_, Err(e @ (WireError::TooOld(_) | WireError::Security(_)))) => {
                    return Err(from_wire("metadata", e))
                }
                (addr, Err(e)) => {
                    debug!("cannot open a connection to {addr}: {e}");
                    failures.push(e);
                }
            }
        }
        Err(self.none_answered(&failures))
    }

    fn none_answered(&self, failures: &[WireError]) -> KafkaError {
        fail(
            "metadata",
            format!(
                "no broker of {} answered ({})",
                self.bootstrap.join(","),
                failures
                    .last()
                    .map_or("none tried".into(), |e| e.to_string())
            ),
        )
    }

    /// Sends a request to one broker by id.
    pub fn call_broker<R: Request>(
        &mut self,
        broker: i32,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        let addr = self
            .brokers
            .get(&broker)
            .cloned()
            .ok_or_else(|| WireError::Io(format!("broker {broker} is not in the metadata")))?;
        self.call_addr(&addr, request, timeout)
    }

    /// Sends a request to `addr`, connecting first if needed; a failed connection is dropped so
    /// the next call reconnects.
    pub fn call_addr<R: Request>(
        &mut self,
        addr: &str,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        self.call_addr_interruptible(addr, request, timeout, &|| false)
    }

    fn call_addr_interruptible<R: Request>(
        &mut self,
        addr: &str,
        request: &R,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<R::Response, WireError> {
        let mut connection = match self.connections.remove(addr) {
            Some(c) => c,
            None => Connection::open(addr, &self.security)?,
        };
        let result = connection.call_interruptible(request, timeout, interrupted);
        if !result.as_ref().is_err_and(WireError::breaks_connection) {
            self.connections.insert(addr.to_string(), connection);
        }
        result
    }
}

/// A group id as the codecs want it.
pub fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

/// A topic name as the codecs want it.
pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}
