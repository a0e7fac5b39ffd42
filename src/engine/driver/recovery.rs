//! Starting over: a fresh engine resumed from the store and the group's offsets, after a
//! failed step or when logs were truncated under the consumer.

use log::error;

use super::super::{
    Engine, EngineConfig, EngineError, OffsetCommitter, Publication, SinkErrorKind, StoreSink,
};
use super::{Adapters, Driver, DriverConfig, DriverError, FetchSource, Host};

impl Driver {
    /// Positions past their logs' ends: the logs were truncated under us (an unclean leader
    /// election, or records deleted by hand). What we counted there is gone from the logs; the
    /// offsets from each new end on will hold new messages, so reading continues there. All
    /// truncated partitions are rewound by one fresh engine and one commit (at most to where
    /// this fetch's `ends` say each partition answered): one at a time, a consumer that resumes
    /// after its furthest windows would move each back up while it rewinds the next.
    pub(super) fn logs_truncated<F, S, C, H>(
        &mut self,
        truncated: &[Truncation],
        ends: &[(i32, i64)],
        io: &mut Adapters<'_, F, S, C, H>,
    ) -> Result<(), DriverError>
    where
        F: FetchSource + ?Sized,
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
        H: Host + ?Sized,
    {
        for t in truncated {
            error!(
                "partition {}: position {} is past the log end {} (the log was truncated): {} \
                 offsets we counted are no longer in the log; continuing at {}",
                t.partition,
                t.at,
                t.end,
                t.at - t.end,
                t.end
            );
        }
        self.restart(io)?;
        // The fresh engine may stand past other partitions' ends too (a window stored past a
        // truncation): every partition of this fetch goes back to at most where it answered.
        let mut rewound = false;
        for &(partition, end) in ends {
            rewound |= self.engine.rewind_to(partition, end);
        }
        if rewound {
            // Committed now: a restart before the next window would resume at the old
            // positions, past the records the logs will hold from their ends on by then.
            if let Err(e) = self.engine.commit_positions(io.committer) {
                for t in truncated {
                    error!(
                        "{e}; partition {} resumes at {} if the consumer stops before its next \
                         window",
                        t.partition, t.at
                    );
                }
            }
        }
        Ok(())
    }
}

/// A partition whose position lies past its log's end.
pub(super) struct Truncation {
    pub(super) partition: i32,
    /// The position.
    pub(super) at: i64,
    /// The log's end.
    pub(super) end: i64,
}

/// An engine over `partitions`, resumed from the store and the group's offsets. A group
/// member's engine stages under a token of its own.
pub(super) fn resume<F, S, C, H>(
    config: &DriverConfig,
    partitions: &[i32],
    io: &mut Adapters<'_, F, S, C, H>,
) -> Result<Engine, DriverError>
where
    F: FetchSource + ?Sized,
    S: StoreSink + ?Sized,
    C: OffsetCommitter + ?Sized,
    H: Host + ?Sized,
{
    let log_start = io
        .committer
        .log_start(partitions)
        .map_err(|e| resume_failed(EngineError::Sink(e)))?;
    let engine_config = EngineConfig {
        log: config.log.clone(),
        group: config.group.clone(),
        partitions: partitions.to_vec(),
        window_size: config.window_size,
        servers_listed: config.servers_listed,
        limits: config.limits,
        // A group member's partitions can move while one of its writes is on its way: its
        // windows count only once the group accepted their commit. A static consumer's cannot
        // move, and Kafka refuses its commits while the group has members: it stores directly.
        publication: if config.member {
            Publication::AfterCommit {
                token: io.host.new_token(),
            }
        } else {
            Publication::Direct
        },
    };
    Engine::resume(engine_config, &log_start, io.sink, io.committer).map_err(resume_failed)
}

/// A resume that failed stops the consumer: the real adapters retry everything transient.
pub(super) fn resume_failed(e: EngineError) -> DriverError {
    match e {
        EngineError::Sink(s) if s.kind == SinkErrorKind::Stopped => DriverError::Stopped,
        EngineError::Sink(s) if s.kind == SinkErrorKind::Permanent => DriverError::Fatal(s.detail),
        other => DriverError::Fatal(other.to_string()),
    }
}
