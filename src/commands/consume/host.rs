//! What the driver needs from the consumer process: the stop flag, the group membership (its
//! heartbeats say when to rejoin; the loop tells it it is alive), fresh staging tokens, and the
//! step telemetry.

use std::cell::Cell;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::engine::{Host, StepReport};
use crate::kafka::GroupMember;
use crate::shutdown::Shutdown;
use crate::telemetry;

/// [`Host`] for `metricsctl consume`.
pub struct ConsumerHost<'a> {
    shutdown: &'a Shutdown,
    member: Option<&'a GroupMember>,
    /// Shared with the store adapter: while set, its calls are not abandoned for a rejoin.
    resuming: &'a Cell<bool>,
    /// When the step in hand began.
    started: Option<Instant>,
}

impl<'a> ConsumerHost<'a> {
    /// The host of a consumer, a group member or not.
    pub fn new(
        shutdown: &'a Shutdown,
        member: Option<&'a GroupMember>,
        resuming: &'a Cell<bool>,
    ) -> Self {
        ConsumerHost {
            shutdown,
            member,
            resuming,
            started: None,
        }
    }
}

impl Host for ConsumerHost<'_> {
    fn stop_requested(&self) -> bool {
        self.shutdown.requested()
    }

    fn rejoin_needed(&self) -> bool {
        self.member.is_some_and(GroupMember::rejoin_needed)
    }

    fn fenced(&mut self) {
        if let Some(member) = self.member {
            member.fenced();
        }
    }

    fn stepped(&mut self) {
        if let Some(member) = self.member {
            member.stepped();
        }
    }

    fn sleep(&mut self, delay: Duration) -> bool {
        self.shutdown.sleep(delay)
    }

    fn new_token(&mut self) -> String {
        Uuid::new_v4().simple().to_string()
    }

    fn resuming(&mut self, on: bool) {
        self.resuming.set(on);
    }

    fn resumed(&mut self) {
        telemetry::consumer().health().step_ended();
    }

    fn step_started(&mut self) {
        let now = Instant::now();
        telemetry::consumer().health().step_started(now);
        self.started = Some(now);
    }

    fn step_ended(&mut self, report: Option<&StepReport>) {
        match report {
            Some(_) => telemetry::consumer().health().step_ended(),
            None => telemetry::consumer().health().step_failed(),
        }
        if let (Some(report), Some(started)) = (report, self.started.take()) {
            let c = &report.counts;
            telemetry::consumer().step_done(
                started.elapsed(),
                c.messages,
                c.stored,
                c.replayed,
                c.windows,
            );
        }
    }
}
