//! The engine's store ([`StoreSink`]) backed by MongoDB. Like Vector's sinks, it owns its
//! retries: a transient failure is retried with backoff until the call succeeds, so the engine
//! sees an error only when the consumer must stop (a stop request, a failure retrying cannot
//! fix) or when a group member must rejoin before it writes more.

use std::collections::HashMap;
use std::time::Instant;

use crate::engine::{
    DeadLetter, InsertOutcome, LastWindow, RawRecord, SinkError, SinkErrorKind, StoreSink,
    StoredPosition, WindowOutcome, WindowRecord,
};
use crate::retrying::{retry_unless, GaveUp};
use crate::shutdown::Shutdown;
use crate::telemetry::{self, Service};

use super::{Store, StoreError};

/// [`StoreSink`] over a [`Store`].
pub struct MongoSink<'a> {
    store: &'a Store,
    shutdown: &'a Shutdown,
    /// The id of the log read, for raw documents stored before ids were recorded.
    topic_id: &'a str,
    /// True when a failing call should be given up: the member must rejoin (the group
    /// rebalances, or it left after the max step interval). The step's records are then read
    /// again by the partitions' next owner, and a rejoin does not wait for the database.
    abandon: &'a dyn Fn() -> bool,
}

impl<'a> MongoSink<'a> {
    /// A sink that retries every transient failure until it succeeds, gives up on a stop
    /// request or a permanent failure, and on a failure while `abandon()` is true.
    pub fn new(
        store: &'a Store,
        shutdown: &'a Shutdown,
        topic_id: &'a str,
        abandon: &'a dyn Fn() -> bool,
    ) -> Self {
        MongoSink {
            store,
            shutdown,
            topic_id,
            abandon,
        }
    }

    fn retry<T>(
        &mut self,
        operation: &'static str,
        mut op: impl FnMut(&Store) -> Result<T, StoreError>,
    ) -> Result<T, SinkError> {
        let store = self.store;
        let outcome = retry_unless(operation, self.shutdown, self.abandon, || op(store));
        if outcome.is_ok() {
            telemetry::consumer().service_outcome(Service::Database, true);
        }
        outcome.map_err(|gave_up| match gave_up {
            GaveUp::Abandoned => SinkError::new(
                operation,
                SinkErrorKind::Rejoin,
                "this member must rejoin its group; given up",
            ),
            GaveUp::Stopped => SinkError::new(operation, SinkErrorKind::Stopped, "stop requested"),
            GaveUp::Permanent(m) => SinkError::new(operation, SinkErrorKind::Permanent, m),
        })
    }

    /// A write, each attempt's time observed.
    fn write<T>(
        &mut self,
        operation: &'static str,
        mut op: impl FnMut(&Store) -> Result<T, StoreError>,
    ) -> Result<T, SinkError> {
        self.retry(operation, |s| {
            let started = Instant::now();
            let outcome = op(s);
            telemetry::consumer().database_write(started.elapsed());
            outcome
        })
    }
}

impl StoreSink for MongoSink<'_> {
    fn insert_raw(&mut self, records: &[RawRecord<'_>]) -> Result<Vec<InsertOutcome>, SinkError> {
        self.write("storing raw metrics", |s| s.insert_raw(records))
    }

    fn stored_positions(
        &mut self,
        uuids: &[&str],
    ) -> Result<HashMap<String, StoredPosition>, SinkError> {
        let topic_id = self.topic_id.to_string();
        let mut found = self.retry("looking up duplicates", |s| s.stored_positions(uuids))?;
        // Raw documents of the legacy format without topic ids name none: they were read from
        // the log of their time, taken to be this one.
        for p in found.values_mut() {
            if p.topic_id.is_empty() {
                p.topic_id.clone_from(&topic_id);
            }
        }
        Ok(found)
    }

    fn insert_dead_letters(&mut self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        self.write("storing dead letters", |s| s.insert_dead_letters(letters))?;
        telemetry::consumer().dead_lettered(letters.iter().map(|l| l.code.as_str()));
        Ok(())
    }

    fn insert_windows(
        &mut self,
        windows: &[WindowRecord<'_>],
    ) -> Result<Vec<WindowOutcome>, SinkError> {
        self.write("storing KPI windows", |s| s.insert_windows(windows))
    }

    fn stage_windows(
        &mut self,
        token: &str,
        windows: &[WindowRecord<'_>],
    ) -> Result<(), SinkError> {
        self.write("staging KPI windows", |s| s.stage_windows(token, windows))
    }

    fn publish_staged(&mut self, token: &str, through: i64) -> Result<usize, SinkError> {
        self.write("publishing staged KPI windows", |s| {
            s.publish_staged(token, through)
        })
    }

    fn forget_staged(&mut self, token: &str, through: i64) -> Result<(), SinkError> {
        self.write("forgetting staged windows", |s| {
            s.forget_staged(token, through)
        })
    }

    fn last_window(&mut self, stream: &str) -> Result<Option<LastWindow>, SinkError> {
        self.retry("reading the last window", |s| s.last_window(stream))
    }

    fn furthest_positions(
        &mut self,
        topic_id: &str,
        group: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, SinkError> {
        self.retry("reading window positions", |s| {
            s.furthest_positions(topic_id, group, partitions)
        })
    }
}
