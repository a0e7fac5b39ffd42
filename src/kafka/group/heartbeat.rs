//! The heartbeat thread: keeps a member's generation alive, raises the rejoin flag when the
//! group rebalances or fences the member, and leaves the group for a loop that made no step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::HeartbeatRequest;
use kafka_protocol::protocol::StrBytes;
use log::{error, info, warn};

use super::super::cluster::{group_id, Cluster};
use super::{leave_group, lock, Generation, GroupTimeouts, State};

/// The heartbeat thread: one Heartbeat a third of the session while the member holds a
/// generation, also while a rebalance is pending (until the member has rejoined, which stops
/// this thread); LeaveGroup when the consume loop made no step for the max step interval.
pub(super) struct Heartbeats {
    /// Connections of its own: a heartbeat never waits behind the loop's calls.
    pub(super) cluster: Cluster,
    pub(super) group: String,
    pub(super) state: Arc<Mutex<State>>,
    pub(super) timeouts: GroupTimeouts,
    pub(super) stop: Arc<AtomicBool>,
}

impl Heartbeats {
    pub(super) fn run(mut self) {
        let interval = self.timeouts.heartbeat_interval();
        while !self.stop.load(Ordering::SeqCst) {
            let (generation, since_step) = {
                let s = lock(&self.state);
                (s.generation.clone(), s.last_step.elapsed())
            };
            // Fenced out (or left): nothing to keep alive until the next join.
            let Some(generation) = generation else {
                return;
            };
            if since_step > self.timeouts.max_step_interval {
                self.leave_stalled(&generation, since_step);
                return;
            }
            match heartbeat(&mut self.cluster, &self.group, &generation) {
                Ok(()) => {}
                Err(HeartbeatError::Rejoin(RejoinReason::InstanceFenced)) => {
                    error!(
                        "group {}: another consumer joined with this member's group instance id \
                         and took its place; stopping",
                        self.group
                    );
                    let mut s = lock(&self.state);
                    s.rejoin = true;
                    s.instance_fenced = true;
                    s.generation = None;
                    return;
                }
                Err(HeartbeatError::Rejoin(why)) => {
                    let mut s = lock(&self.state);
                    // A pending rebalance answers every heartbeat until the member rejoined:
                    // said once.
                    if !s.rejoin || why.fenced() {
                        info!("group {}: {why}; the member will rejoin", self.group);
                    }
                    s.rejoin = true;
                    if why.fenced() {
                        s.generation = None;
                    }
                }
                Err(HeartbeatError::Unreachable(e)) => {
                    warn!("group {}: heartbeat failed ({e}); retrying", self.group);
                }
            }
            let until = Instant::now() + interval;
            while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Java's `max.poll.interval.ms`: a member whose loop is stuck (on a database that hangs)
    /// would keep its partitions for as long as its heartbeats go on, and nobody would process
    /// them. It leaves instead, so they move to a member that works; the windows it staged and
    /// did not commit are never published (the commit is the fence).
    fn leave_stalled(&mut self, generation: &Generation, since_step: Duration) {
        {
            let mut s = lock(&self.state);
            s.generation = None;
            s.rejoin = true;
            s.left_stalled = true;
        }
        let outcome = leave_group(
            &mut self.cluster,
            &self.group,
            generation,
            "the consume loop made no step for the max step interval",
        );
        let what = match outcome {
            Ok(()) => "left the group so that its partitions move to another member".to_string(),
            Err(e) => format!(
                "{e}: the coordinator moves its partitions after the session timeout instead"
            ),
        };
        error!(
            "group {}: member {} made no step for {:.1} s (more than --max-step-interval {} s; \
             is the database answering?): {what}; it rejoins once its loop runs again",
            self.group,
            generation.member_id,
            since_step.as_secs_f64(),
            self.timeouts.max_step_interval.as_secs_f64()
        );
    }
}

/// Why a heartbeat asks the member to rejoin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RejoinReason {
    Rebalancing,
    Fenced(ResponseError),
    /// Another process holds this member's instance id: stop, never rejoin.
    InstanceFenced,
}

impl RejoinReason {
    fn fenced(self) -> bool {
        matches!(self, RejoinReason::Fenced(_))
    }
}

impl std::fmt::Display for RejoinReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejoinReason::Rebalancing => f.write_str("the group is rebalancing"),
            RejoinReason::Fenced(e) => write!(f, "this member was fenced out of the group ({e})"),
            RejoinReason::InstanceFenced => {
                f.write_str("another consumer took this member's group instance id")
            }
        }
    }
}

pub(super) enum HeartbeatError {
    Rejoin(RejoinReason),
    Unreachable(String),
}

pub(super) fn heartbeat(
    cluster: &mut Cluster,
    group: &str,
    generation: &Generation,
) -> Result<(), HeartbeatError> {
    let request = HeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(generation.id)
        .with_member_id(StrBytes::from_string(generation.member_id.clone()))
        .with_group_instance_id(generation.instance_id.clone().map(StrBytes::from_string));
    let response = cluster
        .call_coordinator(group, &request, Duration::from_secs(5))
        .map_err(|e| HeartbeatError::Unreachable(e.to_string()))?;
    match ResponseError::try_from_code(response.error_code) {
        None => Ok(()),
        Some(ResponseError::RebalanceInProgress) => {
            Err(HeartbeatError::Rejoin(RejoinReason::Rebalancing))
        }
        Some(ResponseError::FencedInstanceId) if generation.instance_id.is_some() => {
            Err(HeartbeatError::Rejoin(RejoinReason::InstanceFenced))
        }
        Some(
            e @ (ResponseError::UnknownMemberId
            | ResponseError::IllegalGeneration
            | ResponseError::FencedInstanceId),
        ) => Err(HeartbeatError::Rejoin(RejoinReason::Fenced(e))),
        Some(e) => {
            if matches!(
                e,
                ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
            ) {
                cluster.forget_coordinator();
            }
            Err(HeartbeatError::Unreachable(e.to_string()))
        }
    }
}
