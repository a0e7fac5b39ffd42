//! Consumer-group membership with Kafka's classic group protocol: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat and LeaveGroup, with protocol type `consumer`, the `range` assignor and
//! the standard consumer-protocol encoding, so Kafka's own tools show our members, their client
//! id and host, and their partitions.
//!
//! The rebalance protocol is eager: on every rebalance each member gives up all its partitions
//! and receives a new assignment. A heartbeat thread keeps the membership alive and raises a
//! flag when the group rebalances or the coordinator has fenced this member out; the consume
//! loop checks that flag between steps and before it stores a window.
//!
//! Liveness is Java's: the heartbeats go on while a rebalance is pending, until the member has
//! rejoined (a step stuck on a slow write does not get the member removed), and the member
//! leaves the group when its loop made no step for the max step interval (its partitions then
//! move to a member that works; it rejoins once the loop runs again).
//!
//! Here: joining, syncing and leaving; `heartbeat` is the heartbeat thread,
//! `consumer_protocol` the subscription and assignment bytes and the `range` assignor. The
//! group's description (`status`, `--partitions`) is [`super::KafkaAdmin::group_members`].

mod consumer_protocol;
mod heartbeat;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest};
use kafka_protocol::protocol::{Request, StrBytes};
use log::{debug, info, warn};

use super::cluster::{group_id, AutoCreate, Cluster};
use super::security::Security;
use super::{fail, fatal, KafkaError};
use crate::shutdown::Shutdown;
pub(super) use consumer_protocol::decode_assignment;
use consumer_protocol::{
    encode_assignment, encode_subscription, range_assign, subscribes_to, ASSIGNOR, PROTOCOL_TYPE,
};
use heartbeat::Heartbeats;

/// How long the member may go without a heartbeat before the coordinator removes it, how
/// long a rebalance may wait for members to rejoin, and how long the member's loop may go
/// without a step before the member leaves the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTimeouts {
    pub session: Duration,
    pub rebalance: Duration,
    pub max_step_interval: Duration,
}

impl GroupTimeouts {
    /// A third of the session, as Kafka's clients do, so two lost heartbeats are survivable.
    pub fn heartbeat_interval(&self) -> Duration {
        self.session / 3
    }
}

/// This member's place in the group after a completed join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub id: i32,
    pub member_id: String,
    /// A static member's `group.instance.id` (KIP-345), sent with every group request.
    pub instance_id: Option<String>,
}

/// What the heartbeat thread and the consume loop share.
#[derive(Debug)]
pub(super) struct State {
    generation: Option<Generation>,
    /// The group is rebalancing, or this member was fenced: rejoin before storing more.
    rejoin: bool,
    /// When the consume loop last reported a step ([`GroupMember::stepped`]).
    last_step: Instant,
    /// The heartbeat thread left the group because the loop made no step for the max step
    /// interval; cleared by the next join.
    left_stalled: bool,
    /// Another process joined with this member's instance id and took its place: this one
    /// must stop, not rejoin (rejoining would fence the other in turn).
    instance_fenced: bool,
}

/// A member of one consumer group, subscribed to one topic.
pub struct GroupMember {
    cluster: Cluster,
    group: String,
    topic: String,
    timeouts: GroupTimeouts,
    /// `Some`: a static member (KIP-345).
    instance_id: Option<String>,
    state: Arc<Mutex<State>>,
    stop_heartbeats: Arc<AtomicBool>,
    heartbeats: Option<JoinHandle<()>>,
    shutdown: Shutdown,
}

impl GroupMember {
    pub fn new(
        brokers: Vec<String>,
        topic: String,
        group: String,
        timeouts: GroupTimeouts,
        shutdown: Shutdown,
    ) -> Self {
        let mut cluster = Cluster::new(brokers, topic.clone(), shutdown.clone());
        // A lookup longer than the session would get the member removed while it looks.
        cluster.set_lookup_limit(timeouts.session);
        GroupMember {
            cluster,
            group,
            topic,
            timeouts,
            instance_id: None,
            state: Arc::new(Mutex::new(State {
                generation: None,
                rejoin: true,
                last_step: Instant::now(),
                left_stalled: false,
                instance_fenced: false,
            })),
            stop_heartbeats: Arc::new(AtomicBool::new(false)),
            heartbeats: None,
            shutdown,
        }
    }

    /// Secures every connection to the brokers as `security` says (TLS, SASL).
    pub fn with_security(mut self, security: Security) -> Self {
        self.cluster.set_security(security);
        self
    }

    /// Joins as a static member with this `group.instance.id` (KIP-345): a restart with the
    /// same id within the session timeout takes the member's place and partitions back
    /// without a rebalance, and stopping sends no LeaveGroup.
    pub fn with_instance_id(mut self, instance_id: Option<String>) -> Self {
        self.instance_id = instance_id;
        self
    }

    /// The error a member fenced by another process with its instance id stops with.
    fn instance_fenced_error(&self) -> KafkaError {
        fatal(
            "join-group",
            format!(
                "group {}: another consumer joined with group instance id {:?} and took this \
                 member's place (FENCED_INSTANCE_ID); give each consumer its own \
                 --group-instance-id (KAFKA_GROUP_INSTANCE_ID)",
                self.group,
                self.instance_id.as_deref().unwrap_or_default()
            ),
        )
    }

    /// The current generation, if this member holds one.
    pub fn generation(&self) -> Option<Generation> {
        lock(&self.state).generation.clone()
    }

    /// True when the member must rejoin: the group is rebalancing or this member was fenced.
    pub fn rejoin_needed(&self) -> bool {
        lock(&self.state).rejoin
    }

    /// The consume loop made a step (or came round without one to make): the member is
    /// working, and keeps its membership.
    pub fn stepped(&self) {
        lock(&self.state).last_step = Instant::now();
    }

    /// True when the member left the group because its loop made no step for the max step
    /// interval: it should rejoin only once what held the loop (the database) answers again.
    pub fn left_stalled(&self) -> bool {
        lock(&self.state).left_stalled
    }

    /// Asks for a rejoin before anything more is stored (the member could not confirm it still
    /// owns its partitions, or the topic changed).
    pub fn request_rejoin(&self) {
        lock(&self.state).rejoin = true;
    }

    /// Called when a commit was refused for our generation: the member was fenced out.
    pub fn fenced(&self) {
        let mut s = lock(&self.state);
        s.rejoin = true;
        s.generation = None;
    }

    /// Joins (or rejoins) the group and returns this member's partitions of the topic. Blocks
    /// through the rebalance; the heartbeat thread runs once the member holds a generation.
    pub fn join(&mut self) -> Result<Vec<i32>, KafkaError> {
        self.stop_heartbeat_thread();
        if lock(&self.state).instance_fenced {
            return Err(self.instance_fenced_error());
        }
        let mut member_id = lock(&self.state)
            .generation
            .as_ref()
            .map(|g| g.member_id.clone())
            .unwrap_or_default();
        let started = Instant::now();
        loop {
            if self.shutdown.requested() {
                return Err(fail("join-group", "stop requested"));
            }
            let joined = match self.join_once(&member_id)? {
                JoinOutcome::Joined(j) => j,
                JoinOutcome::Retry { member_id: m } => {
                    member_id = m;
                    continue;
                }
            };
            member_id = joined.member_id.clone();
            // A static leader rejoining a stable group keeps the group's assignment (KIP-814).
            let assignments = if joined.leader == joined.member_id && !joined.skip_assignment {
                self.assign(&joined.members)?
            } else {
                Vec::new()
            };
            let generation = Generation {
                id: joined.generation,
                member_id: joined.member_id.clone(),
                instance_id: self.instance_id.clone(),
            };
            match self.sync(&generation, assignments)? {
                Some(partitions) => {
                    {
                        let mut s = lock(&self.state);
                        s.generation = Some(generation.clone());
                        s.rejoin = false;
                        s.left_stalled = false;
                        s.last_step = Instant::now();
                    }
                    self.start_heartbeat_thread();
                    info!(
                        "group {}: joined as {} (generation {}, {}), partitions [{}] after {:.1} s",
                        self.group,
                        generation.member_id,
                        generation.id,
                        if joined.leader == joined.member_id {
                            format!("leader of {} members", joined.members.len())
                        } else {
                            "follower".to_string()
                        },
                        partitions
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(partitions);
                }
                // The group moved on while we synced: join again.
                None => continue,
            }
        }
    }

    fn join_once(&mut self, member_id: &str) -> Result<JoinOutcome, KafkaError> {
        let request = JoinGroupRequest::default()
            .with_group_id(group_id(&self.group))
            .with_session_timeout_ms(millis(self.timeouts.session))
            .with_rebalance_timeout_ms(millis(self.timeouts.rebalance))
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_group_instance_id(self.instance_id.clone().map(StrBytes::from_string))
            .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(ASSIGNOR))
                .with_metadata(encode_subscription(&self.topic))]);
        let response = self.call_during_rebalance(&request)?;
        match ResponseError::try_from_code(response.error_code) {
            None => Ok(JoinOutcome::Joined(Joined {
                generation: response.generation_id,
                leader: response.leader.to_string(),
                member_id: response.member_id.to_string(),
                skip_assignment: response.skip_assignment,
                members: response
                    .members
                    .iter()
                    .map(|m| (m.member_id.to_string(), m.metadata.clone()))
                    .collect(),
            })),
            // Since KIP-394 a first join is answered with the member id to join with.
            Some(ResponseError::MemberIdRequired) => Ok(JoinOutcome::Retry {
                member_id: response.member_id.to_string(),
            }),
            Some(ResponseError::UnknownMemberId) => Ok(JoinOutcome::Retry {
                member_id: String::new(),
            }),
            Some(ResponseError::FencedInstanceId) => {
                lock(&self.state).instance_fenced = true;
                Err(self.instance_fenced_error())
            }
            Some(e) => {
                self.coordinator_trouble(e);
                if e.is_retriable() || e == ResponseError::RebalanceInProgress {
                    self.shutdown.sleep(Duration::from_millis(200));
                    Ok(JoinOutcome::Retry {
                        member_id: member_id.to_string(),
                    })
                } else {
                    Err(fail("join-group", format!("group {}: {e}", self.group)))
                }
            }
        }
    }

    /// The leader's `range` assignment: partitions in order, split into contiguous ranges over
    /// the members sorted by id, the first ones taking one more when they do not divide evenly.
    fn assign(&mut self, members: &[(String, Bytes)]) -> Result<Vec<(String, Bytes)>, KafkaError> {
        let meta = self.cluster.refresh(AutoCreate::No)?;
        let subscribed: Vec<&str> = members
            .iter()
            .filter(|(_, metadata)| subscribes_to(metadata, &self.topic))
            .map(|(id, _)| id.as_str())
            .collect();
        let plan = range_assign(&meta.partition_ids(), &subscribed);
        Ok(members
            .iter()
            .map(|(id, _)| {
                let mine = plan
                    .iter()
                    .find(|(m, _)| m == id)
                    .map(|(_, ps)| ps.clone())
                    .unwrap_or_default();
                (id.clone(), encode_assignment(&self.topic, &mine))
            })
            .collect())
    }

    /// SyncGroup: `Some(partitions)` once the assignment arrived, `None` when the group is
    /// rebalancing again and the member must rejoin.
    fn sync(
        &mut self,
        generation: &Generation,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Option<Vec<i32>>, KafkaError> {
        let request = SyncGroupRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(generation.id)
            .with_member_id(StrBytes::from_string(generation.member_id.clone()))
            .with_group_instance_id(generation.instance_id.clone().map(StrBytes::from_string))
            .with_protocol_type(Some(StrBytes::from_static_str(PROTOCOL_TYPE)))
            .with_protocol_name(Some(StrBytes::from_static_str(ASSIGNOR)))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(id, bytes)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_assignment(bytes)
                    })
                    .collect(),
            );
        let response = self.call_during_rebalance(&request)?;
        match ResponseError::try_from_code(response.error_code) {
            None => Ok(Some(decode_assignment(&response.assignment, &self.topic))),
            Some(
                e @ (ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId),
            ) => {
                debug!("group {}: sync answered {e}; rejoining", self.group);
                Ok(None)
            }
            Some(ResponseError::FencedInstanceId) => {
                lock(&self.state).instance_fenced = true;
                Err(self.instance_fenced_error())
            }
            Some(e) => {
                self.coordinator_trouble(e);
                if e.is_retriable() {
                    Ok(None)
                } else {
                    Err(fail("sync-group", format!("group {}: {e}", self.group)))
                }
            }
        }
    }

    /// A JoinGroup or SyncGroup: the coordinator holds it until every member rejoined (or the
    /// rebalance timeout passed), and a stop request does not wait for that.
    fn call_during_rebalance<R: Request>(
        &mut self,
        request: &R,
    ) -> Result<R::Response, KafkaError> {
        let timeout = self.timeouts.rebalance + Duration::from_secs(5);
        let shutdown = self.shutdown.clone();
        self.cluster
            .call_coordinator_interruptible(&self.group, request, timeout, &|| shutdown.requested())
    }

    fn coordinator_trouble(&mut self, e: ResponseError) {
        if matches!(
            e,
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
        ) {
            self.cluster.forget_coordinator();
        }
    }

    fn start_heartbeat_thread(&mut self) {
        let stop = Arc::new(AtomicBool::new(false));
        self.stop_heartbeats = stop.clone();
        let mut cluster = Cluster::new(
            self.cluster.bootstrap().to_vec(),
            self.topic.clone(),
            self.shutdown.clone(),
        );
        cluster.set_security(self.cluster.security().clone());
        cluster.set_lookup_limit(self.timeouts.session);
        let heartbeats = Heartbeats {
            cluster,
            group: self.group.clone(),
            state: self.state.clone(),
            timeouts: self.timeouts,
            stop,
        };
        let spawned = std::thread::Builder::new()
            .name("group-heartbeat".into())
            .spawn(move || heartbeats.run());
        match spawned {
            Ok(handle) => self.heartbeats = Some(handle),
            Err(e) => warn!("cannot start the heartbeat thread ({e}); the member may be removed"),
        }
    }

    fn stop_heartbeat_thread(&mut self) {
        self.stop_heartbeats.store(true, Ordering::SeqCst);
        if let Some(handle) = self.heartbeats.take() {
            let _ = handle.join();
        }
    }

    /// Leaves the group so its partitions move to the other members at once, instead of after
    /// the session timeout. A static member does not leave (as Kafka's Java consumer does
    /// not): its partitions wait for it through a restart within the session timeout, so a
    /// rolling restart moves nothing.
    pub fn leave(&mut self) {
        self.stop_heartbeat_thread();
        let Some(generation) = lock(&self.state).generation.take() else {
            return;
        };
        if let Some(instance) = &self.instance_id {
            info!(
                "group {}: static member {instance:?} stops without leaving: its partitions \
                 stay assigned for the session timeout ({} s), and a restart within it resumes \
                 them without a rebalance",
                self.group,
                self.timeouts.session.as_secs()
            );
            return;
        }
        match leave_group(
            &mut self.cluster,
            &self.group,
            &generation,
            "the consumer is stopping",
        ) {
            Ok(()) => info!("group {}: left as {}", self.group, generation.member_id),
            Err(e) => warn!(
                "group {}: {e}; the coordinator will drop the member after its session timeout",
                self.group
            ),
        }
    }
}

/// LeaveGroup for `generation`'s member. A failed call is tried once more on a fresh
/// connection to a coordinator looked up again: the one we held may be to a broker that
/// restarted since (its socket closed), or no longer the coordinator.
pub(super) fn leave_group(
    cluster: &mut Cluster,
    group: &str,
    generation: &Generation,
    reason: &'static str,
) -> Result<(), String> {
    let request = LeaveGroupRequest::default()
        .with_group_id(group_id(group))
        .with_members(vec![MemberIdentity::default()
            .with_member_id(StrBytes::from_string(generation.member_id.clone()))
            .with_group_instance_id(generation.instance_id.clone().map(StrBytes::from_string))
            .with_reason(Some(StrBytes::from_static_str(reason)))]);
    let mut failure = String::new();
    for _ in 0..2 {
        match cluster.call_coordinator(group, &request, Duration::from_secs(5)) {
            Ok(r) => match ResponseError::try_from_code(r.error_code) {
                None => return Ok(()),
                Some(
                    e @ (ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable),
                ) => failure = format!("leaving answered {e}"),
                Some(e) => return Err(format!("leaving answered {e}")),
            },
            Err(e) => failure = format!("cannot leave ({e})"),
        }
        cluster.forget_coordinator();
    }
    Err(failure)
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.stop_heartbeat_thread();
    }
}

struct Joined {
    generation: i32,
    leader: String,
    member_id: String,
    /// The coordinator keeps the current assignment: the leader computes none (v9+).
    skip_assignment: bool,
    members: Vec<(String, Bytes)>,
}

enum JoinOutcome {
    Joined(Joined),
    Retry { member_id: String },
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    state.lock().unwrap_or_else(|p| p.into_inner())
}
