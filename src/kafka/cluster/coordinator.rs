//! The group's coordinator: found through any broker, kept until it fails or moves.

use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::{Request, StrBytes};

use super::super::{fail, fatal, from_wire, KafkaError};
use super::Cluster;

impl Cluster {
    /// Sends a request to the group's coordinator, finding it first; a coordinator that moved or
    /// failed is looked up again on the next call.
    pub fn call_coordinator<R: Request>(
        &mut self,
        group: &str,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, KafkaError> {
        self.call_coordinator_interruptible(group, request, timeout, &|| false)
    }

    /// As [`Cluster::call_coordinator`], giving up the wait when `interrupted()` turns true.
    pub fn call_coordinator_interruptible<R: Request>(
        &mut self,
        group: &str,
        request: &R,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<R::Response, KafkaError> {
        let addr = match &self.coordinator {
            Some(a) => a.clone(),
            None => {
                let a = self.find_coordinator(group)?;
                self.coordinator = Some(a.clone());
                a
            }
        };
        self.call_addr_interruptible(&addr, request, timeout, interrupted)
            .map_err(|e| {
                self.coordinator = None;
                from_wire("group coordinator", e)
            })
    }

    /// Forgets the coordinator (after NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE).
    pub fn forget_coordinator(&mut self) {
        self.coordinator = None;
    }

    /// The group's coordinator, once a lookup found it.
    pub fn coordinator(&self) -> Option<&str> {
        self.coordinator.as_deref()
    }

    /// Takes the coordinator another client of the same process found, unless this one knows
    /// one: a lookup asks every bootstrap broker at once, a faulty one too.
    pub fn adopt_coordinator(&mut self, addr: &str) {
        if self.coordinator.is_none() {
            self.coordinator = Some(addr.to_string());
        }
    }

    /// Asks any broker for the group's coordinator. A new group, or one whose coordinator just
    /// moved, answers COORDINATOR_NOT_AVAILABLE for a moment while the offsets topic's
    /// partition loads: that is waited out (up to `LEADER_WAIT`) rather than reported.
    fn find_coordinator(&mut self, group: &str) -> Result<String, KafkaError> {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let deadline = Instant::now() + self.lookup_limit;
        loop {
            let response = self.call_any(&request)?;
            match ResponseError::try_from_code(response.error_code) {
                None => return Ok(format!("{}:{}", response.host.as_str(), response.port)),
                Some(ResponseError::GroupAuthorizationFailed) => {
                    return Err(fatal(
                        "find-coordinator",
                        format!(
                            "the brokers refused access to group {group} \
                             (GROUP_AUTHORIZATION_FAILED): ask the cluster's operator for READ \
                             on it, or use a group you may join"
                        ),
                    ))
                }
                Some(e)
                    if e.is_retriable()
                        && Instant::now() < deadline
                        && self.shutdown.sleep(Duration::from_millis(100)) => {}
                Some(e) => {
                    return Err(fail(
                        "find-coordinator",
                        format!("no coordinator for group {group} ({e})"),
                    ))
                }
            }
        }
    }
}
