//! Where the producer's reports come from, as records ready to send.
//!
//! A paced producer (`--interval` above 0) makes each report when it is due, so that its
//! `timestamp_utc` is the moment it was made. A producer running as fast as it can
//! (`--interval 0`) makes them ahead, on a thread of its own: making the next request's
//! reports (the fleet's values, ids, JSON: about half of its work) then overlaps sending the
//! last request and waiting for the broker's answer, instead of following it. The thread runs
//! at most one request's worth of reports ahead, so it holds about as much memory as one
//! request.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;

use super::ids::RandomIds;
use crate::commands::now_utc;
use crate::metric::MetricMessage;
use crate::shutdown::Shutdown;
use crate::simulate::Fleet;

/// A message of a report and its record (key and JSON), made once when the report is made;
/// `Bytes`, so that each request takes them without a copy.
pub(super) struct Unsent {
    pub message: MetricMessage,
    pub key: Bytes,
    pub json: Bytes,
}

impl Unsent {
    /// A report's messages as records. Their JSON is written into one buffer that every record
    /// shares a slice of, and each key is the fleet's own copy of the server's name: a message
    /// costs no allocation of its own here (a request's thousands of them freed together made
    /// the allocator a third of the producer's time).
    pub fn report(messages: Vec<MetricMessage>, keys: &[Bytes]) -> Vec<Unsent> {
        let mut json =
            Vec::with_capacity(messages.iter().map(MetricMessage::json_len_estimate).sum());
        let mut ends = Vec::with_capacity(messages.len());
        for message in &messages {
            message.write_json(&mut json);
            ends.push(json.len());
        }
        let json = Bytes::from(json);
        let mut start = 0;
        messages
            .into_iter()
            .zip(ends)
            .enumerate()
            .map(|(i, (message, end))| {
                let key = match keys.get(i) {
                    Some(key) if key[..] == *message.server_id.as_bytes() => key.clone(),
                    _ => Bytes::copy_from_slice(message.server_id.as_bytes()),
                };
                let record = json.slice(start..end);
                start = end;
                Unsent {
                    message,
                    key,
                    json: record,
                }
            })
            .collect()
    }

    /// Key and payload bytes.
    pub fn bytes(&self) -> usize {
        self.key.len() + self.json.len()
    }
}

/// What [`Reports::next`] found.
pub(super) enum Next {
    Made(Vec<Unsent>),
    /// None ready within the wait (made ahead only).
    NotYet,
    /// No more will come: the count was reached or the maker stopped.
    Done,
}

/// The fleet's reports, made when asked for or ahead of time.
pub(super) enum Reports {
    WhenDue(Maker),
    Ahead {
        made: Option<Receiver<Vec<Unsent>>>,
        thread: Option<JoinHandle<()>>,
    },
}

/// Makes one report at a time: the fleet, its message ids and its record keys.
pub(super) struct Maker {
    fleet: Fleet,
    ids: RandomIds,
    /// The fleet reports its servers in this order.
    keys: Vec<Bytes>,
}

impl Maker {
    pub fn new(servers: &[String], seed: Option<u64>) -> Self {
        Maker {
            fleet: Fleet::new(servers.to_vec(), seed),
            ids: RandomIds::new(),
            keys: servers.iter().map(|s| Bytes::from(s.clone())).collect(),
        }
    }

    fn make(&mut self) -> Vec<Unsent> {
        let ids = &mut self.ids;
        Unsent::report(self.fleet.report(now_utc(), || ids.next_id()), &self.keys)
    }
}

impl Reports {
    /// Reports made when [`Reports::next`] is called.
    pub fn when_due(maker: Maker) -> Self {
        Reports::WhenDue(maker)
    }

    /// `count` reports (endless without one) made ahead on a thread, at most about
    /// `ahead_bytes` of records ahead of the caller, until the count, a stop request, or the
    /// value is dropped.
    pub fn ahead(
        mut maker: Maker,
        count: Option<u64>,
        ahead_bytes: usize,
        shutdown: Shutdown,
    ) -> std::io::Result<Self> {
        let report_bytes = maker.keys.len().max(1) * 300;
        let (send, made) = mpsc::sync_channel((ahead_bytes / report_bytes).clamp(1, 512));
        let thread = thread::Builder::new()
            .name("reports".into())
            .spawn(move || make_ahead(&mut maker, count, &send, &shutdown))?;
        Ok(Reports::Ahead {
            made: Some(made),
            thread: Some(thread),
        })
    }

    /// The next report: made now, or the oldest made ahead, waiting at most `wait` for it.
    pub fn next(&mut self, wait: Duration) -> Next {
        match self {
            Reports::WhenDue(maker) => Next::Made(maker.make()),
            Reports::Ahead { made: None, .. } => Next::Done,
            Reports::Ahead {
                made: Some(made), ..
            } => match made.recv_timeout(wait) {
                Ok(report) => Next::Made(report),
                Err(RecvTimeoutError::Timeout) => Next::NotYet,
                Err(RecvTimeoutError::Disconnected) => Next::Done,
            },
        }
    }
}

fn make_ahead(
    maker: &mut Maker,
    count: Option<u64>,
    send: &SyncSender<Vec<Unsent>>,
    shutdown: &Shutdown,
) {
    let mut made = 0;
    while count.is_none_or(|c| made < c) && !shutdown.requested() {
        // Fails once the producer is gone: nothing more to make.
        if send.send(maker.make()).is_err() {
            return;
        }
        made += 1;
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        if let Reports::Ahead { made, thread } = self {
            // The receiver first: a maker blocked on a full channel then wakes and ends.
            drop(made.take());
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    fn uuids(report: &[Unsent]) -> Vec<uuid::Uuid> {
        report.iter().map(|u| u.message.message_uuid).collect()
    }

    #[test]
    fn made_ahead_the_reports_are_the_count_in_fleet_order_then_done() {
        let fleet = servers(3);
        let mut reports =
            Reports::ahead(Maker::new(&fleet, Some(5)), Some(4), 1, Shutdown::default()).unwrap();
        let mut all = Vec::new();
        for _ in 0..4 {
            match reports.next(Duration::from_secs(10)) {
                Next::Made(report) => {
                    let keys: Vec<&[u8]> = report.iter().map(|u| &u.key[..]).collect();
                    assert_eq!(keys, [b"s0", b"s1", b"s2"]);
                    for u in &report {
                        assert_eq!(u.json, u.message.to_json().as_bytes());
                    }
                    all.extend(uuids(&report));
                }
                _ => panic!("a report was expected"),
            }
        }
        assert!(matches!(reports.next(Duration::from_secs(10)), Next::Done));
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 12, "every message id distinct");
    }

    #[test]
    fn an_endless_maker_ends_when_the_reports_are_dropped_or_a_stop_is_requested() {
        let fleet = servers(2);
        let reports =
            Reports::ahead(Maker::new(&fleet, None), None, 1, Shutdown::default()).unwrap();
        drop(reports); // joins the thread: the test would hang if it did not end
        let shutdown = Shutdown::default();
        let mut reports =
            Reports::ahead(Maker::new(&fleet, None), None, 1, shutdown.clone()).unwrap();
        shutdown.request();
        // At most the reports already in the channel and one in the making, then done.
        let mut left = 0;
        while let Next::Made(_) = reports.next(Duration::from_secs(10)) {
            left += 1;
            assert!(left <= 3, "the maker went on after the stop request");
        }
    }

    #[test]
    fn made_when_due_a_report_comes_at_once_each_time() {
        let mut reports = Reports::when_due(Maker::new(&servers(2), Some(1)));
        for _ in 0..3 {
            assert!(matches!(reports.next(Duration::ZERO), Next::Made(r) if r.len() == 2));
        }
    }
}
