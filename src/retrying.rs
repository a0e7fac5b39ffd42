//! The adapters' retry loop: a call into Kafka or MongoDB that fails for a transient reason is
//! made again with [`Backoff`] until it succeeds, so the loops above see an error only when
//! retrying cannot help (a stop request, a permanent failure, a reason to give up). Not core:
//! it sleeps on the shutdown flag and counts failures for `/metrics` and `/healthz`.

use std::fmt::Display;

use log::{error, info, warn};

use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use crate::telemetry::{self, Service};

/// An adapter's error as the retry loop sees it.
pub trait Retryable: Display {
    /// Retrying cannot fix it.
    fn permanent(&self) -> bool;
    /// What the operator should check when the error stops the command.
    fn hint(&self) -> &'static str {
        ""
    }
    /// The service that failed, for the error counter and `/healthz`.
    fn service(&self) -> Service;
}

/// Why a retried call was given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaveUp {
    /// A stop was requested.
    Stopped,
    /// Retrying cannot fix it: the error and what to check, for the operator.
    Permanent(String),
    /// The caller's reason to abandon the call turned true (the member must rejoin).
    Abandoned,
}

/// Runs `op` until it succeeds, backing off between failures, logging each failure at ERROR and
/// the recovery at INFO. Gives up only on a stop request or a permanent error.
pub fn retry<T, E: Retryable>(
    what: &str,
    shutdown: &Shutdown,
    op: impl FnMut() -> Result<T, E>,
) -> Result<T, GaveUp> {
    retry_unless(what, shutdown, &|| false, op)
}

/// As [`retry`], and also gives up ([`GaveUp::Abandoned`]) when `abandon()` turns true after a
/// failure.
pub fn retry_unless<T, E: Retryable>(
    what: &str,
    shutdown: &Shutdown,
    abandon: &dyn Fn() -> bool,
    mut op: impl FnMut() -> Result<T, E>,
) -> Result<T, GaveUp> {
    let mut backoff = Backoff::standard();
    let mut failing = None;
    loop {
        let outcome = op();
        if let Err(e) = &outcome {
            failing = Some(e.service());
            telemetry::consumer().service_outcome(e.service(), false);
        } else if let Some(service) = failing {
            telemetry::consumer().service_outcome(service, true);
        }
        match outcome {
            Ok(v) => {
                if backoff.failures() > 0 {
                    info!(
                        "{what}: recovered after {} failed attempts",
                        backoff.failures()
                    );
                }
                return Ok(v);
            }
            // A call given up because of the stop request is no failure to report.
            Err(_) if shutdown.requested() => return Err(GaveUp::Stopped),
            Err(e) if e.permanent() => return Err(GaveUp::Permanent(format!("{e}{}", e.hint()))),
            Err(e) if abandon() => {
                warn!("{e}; {what}: given up, this member must rejoin its group first");
                return Err(GaveUp::Abandoned);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                error!("{e}; {what}: retrying in {:.1} s", delay.as_secs_f64());
                if !shutdown.sleep(delay) {
                    return Err(GaveUp::Stopped);
                }
            }
        }
    }
}
