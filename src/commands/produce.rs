//! `metricsctl produce`: simulate the fleet and send each report to Kafka.
//!
//! Reports start on a fixed schedule (a slow send does not stretch the period). Reports that
//! cannot be sent wait in a bounded outbox while the sender backs off; when the outbox is full
//! the oldest report is dropped and counted. Each report is retried until every one of its
//! messages is acknowledged by all in-sync replicas.

use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{error, info, warn};

use super::CommandError;
use crate::cli::ProduceArgs;
use reports::{Maker, Next, Reports, Unsent};

mod ids;
mod reports;
use crate::kafka::{KafkaError, KafkaProducer};
use crate::metric::MetricMessage;
use crate::outbox::Outbox;
use crate::retry::Backoff;
use crate::settings::{ProduceSettings, Sources};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// Reports kept while Kafka is unreachable: 1000 reports are about 2.8 hours at the default
/// 10 s interval, a few hundred KiB of memory.
pub const OUTBOX_REPORTS: usize = 1000;
/// Report intervals at least this long log every message sent at info.
const CHATTY_INTERVAL: Duration = Duration::from_secs(1);
/// How often a fast producer logs what it sent.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Payload bytes (keys and values) in one Produce request at most, taken from as many reports
/// as fit: a request waits one round trip for all in-sync replicas, so a fast producer fills
/// it, as librdkafka fills its 1 MB batches. Below the broker's default 1 MiB batch limit
/// (`max.message.bytes`) even when every message goes to one partition.
const SEND_BYTES: usize = 900 * 1024;

/// How long a producer with nothing to send waits for a report made ahead before it looks at
/// its stop flag and summary again.
const READY_WAIT: Duration = Duration::from_millis(100);

/// A report, or what is left of it to send.
struct PendingReport {
    number: u64,
    unsent: Vec<Unsent>,
}

/// Payload bytes waiting in the outbox.
fn unsent_bytes(outbox: &Outbox<PendingReport>) -> usize {
    outbox
        .iter()
        .flat_map(|r| &r.unsent)
        .map(Unsent::bytes)
        .sum()
}

#[derive(Default)]
struct Totals {
    reports: u64,
    sent: u64,
    failed_attempts: u64,
}

pub fn run(args: &ProduceArgs) -> Result<(), CommandError> {
    let settings = ProduceSettings::resolve(args, &Sources::load()?)?;
    let shutdown = Shutdown::install().map_err(CommandError::Failed)?;
    let _endpoint = super::serve_telemetry(&settings.telemetry, telemetry::producer())?;
    info!(
        "producing to topic {} on {} ({}; idempotent, compression {}): servers {}, a report every {} s{}",
        settings.topic,
        settings.brokers.join(","),
        settings.security.describe(),
        settings.compression,
        settings.servers.join(","),
        settings.interval.as_secs_f64(),
        settings
            .count
            .map_or(String::new(), |c| format!(", {c} reports"))
    );
    // Kafka calls are abandoned only once the drain period after a stop signal is over, so the
    // reports already made still go out when Kafka answers within it.
    let give_up = drain_deadline(&shutdown, settings.drain_timeout);
    let mut sender = Sender::new(
        KafkaProducer::new(
            settings.brokers.clone(),
            settings.topic.clone(),
            settings.compression,
            give_up.clone(),
        )
        .with_security(settings.security.clone()),
    );
    let (mut totals, mut outbox, fatal) = produce_loop(&settings, &mut sender, &shutdown);
    if fatal.is_none() && !outbox.is_empty() {
        drain(&mut sender, &mut outbox, &mut totals, &give_up, &settings);
    }
    let unsent: usize = outbox.iter().map(|r| r.unsent.len()).sum();
    info!(
        "producer stopped: {} reports made, {} messages sent, {} failed send attempts retried, \
         {} reports dropped (outbox full), {} messages unsent",
        totals.reports,
        totals.sent,
        totals.failed_attempts,
        outbox.dropped(),
        unsent
    );
    match fatal {
        Some(e) => Err(CommandError::Failed(e.to_string())),
        None => Ok(()),
    }
}

/// A flag raised `drain` after the first stop signal.
fn drain_deadline(shutdown: &Shutdown, drain: Duration) -> Shutdown {
    let give_up = Shutdown::default();
    let (watched, raised) = (shutdown.clone(), give_up.clone());
    let spawned = std::thread::Builder::new()
        .name("drain-deadline".into())
        .spawn(move || {
            while watched.sleep(Duration::from_secs(3600)) {}
            std::thread::sleep(drain);
            raised.request();
        });
    if spawned.is_err() {
        // Without the watcher, stop at once as before.
        return shutdown.clone();
    }
    give_up
}

/// After a stop signal: sends the reports already made until none is left or the drain period
/// is over, then says what stays unsent.
fn drain(
    sender: &mut Sender,
    outbox: &mut Outbox<PendingReport>,
    totals: &mut Totals,
    give_up: &Shutdown,
    settings: &ProduceSettings,
) {
    let waiting: usize = outbox.iter().map(|r| r.unsent.len()).sum();
    info!(
        "stopping: sending the {waiting} messages already made (up to {} s, --drain-timeout)",
        settings.drain_timeout.as_secs_f64()
    );
    let mut backoff = Backoff::standard();
    while !outbox.is_empty() && !give_up.requested() {
        let sent = sender.send_front(outbox, totals, false);
        report_outbox(outbox);
        if let Err(problem) = sent {
            if let SendError::Fatal(e) = problem {
                error!("{e}");
                break;
            }
            totals.failed_attempts += 1;
            let delay = backoff.next_delay();
            warn!(
                "{problem}; retrying in {:.1} s while draining",
                delay.as_secs_f64()
            );
            give_up.sleep(delay);
        }
    }
    let unsent: usize = outbox.iter().map(|r| r.unsent.len()).sum();
    if unsent > 0 {
        error!(
            "{unsent} messages of {} reports could not be sent within the drain period and are \
             lost (raise --drain-timeout, or check Kafka)",
            outbox.len()
        );
    }
}

/// Runs until the last report is sent, a stop request, or a Kafka error retrying cannot fix
/// (returned third).
fn produce_loop(
    settings: &ProduceSettings,
    sender: &mut Sender,
    shutdown: &Shutdown,
) -> (Totals, Outbox<PendingReport>, Option<KafkaError>) {
    let as_fast_as_possible = settings.interval.is_zero();
    let maker = Maker::new(&settings.servers, settings.seed);
    let mut reports = if as_fast_as_possible {
        match Reports::ahead(maker, settings.count, SEND_BYTES, shutdown.clone()) {
            Ok(reports) => reports,
            Err(e) => {
                warn!("cannot start a thread to make reports ahead ({e}); making them in turn");
                Reports::when_due(Maker::new(&settings.servers, settings.seed))
            }
        }
    } else {
        Reports::when_due(maker)
    };
    // Set when the reports made ahead ended before the count (a stop request).
    let mut no_more_reports = false;
    let mut outbox: Outbox<PendingReport> = Outbox::new(OUTBOX_REPORTS);
    let mut totals = Totals::default();
    let mut backoff = Backoff::standard();
    let mut next_send_at = Instant::now();
    let started = Instant::now();
    // One line per message suits a report every few seconds; faster than that, the lines cost
    // more than the sends, so they move to debug and a summary is logged every 10 s.
    let chatty = settings.interval >= CHATTY_INTERVAL;
    let mut summary_at = Instant::now() + SUMMARY_EVERY;
    let mut sent_at_summary = 0;
    // Payload bytes in the outbox: kept up to date here, recounted after each send.
    let mut waiting_bytes = 0;

    while !shutdown.requested() {
        let now = Instant::now();
        if !chatty && now >= summary_at {
            info!(
                "sent {} messages in the last {} s ({} in all, {} reports waiting)",
                totals.sent - sent_at_summary,
                SUMMARY_EVERY.as_secs(),
                totals.sent,
                outbox.len()
            );
            sent_at_summary = totals.sent;
            summary_at = now + SUMMARY_EVERY;
        }
        let more_to_make = !no_more_reports && settings.count.is_none_or(|c| totals.reports < c);
        // Report k starts at start + k * interval, whatever the previous sends cost.
        let due = started + settings.interval.saturating_mul(totals.reports as u32);
        // As fast as possible: reports are made until two requests' worth wait (the one sent
        // and the next, sealed while the first is on the wire) or the outbox is half full (for
        // fleets of a few servers), then sent.
        let make_now = more_to_make
            && if as_fast_as_possible {
                outbox.len() < OUTBOX_REPORTS / 2 && waiting_bytes < 2 * SEND_BYTES
            } else {
                now >= due
            };
        // Made ahead: with nothing to send, wait a moment for the next report; else take one
        // only if it is ready, and send what waits.
        let wait = if outbox.is_empty() {
            READY_WAIT
        } else {
            Duration::ZERO
        };
        let made = if make_now {
            match reports.next(wait) {
                Next::Made(unsent) => Some(unsent),
                Next::NotYet => None,
                Next::Done => {
                    no_more_reports = true;
                    None
                }
            }
        } else {
            None
        };
        let made_one = made.is_some();
        if let Some(unsent) = made {
            totals.reports += 1;
            let pending = PendingReport {
                number: totals.reports,
                unsent,
            };
            waiting_bytes += pending.unsent.iter().map(Unsent::bytes).sum::<usize>();
            if let Some(dropped) = outbox.push(pending) {
                waiting_bytes -= dropped.unsent.iter().map(Unsent::bytes).sum::<usize>();
                telemetry::producer().dropped(dropped.unsent.len());
                warn!(
                    "outbox full ({OUTBOX_REPORTS} reports): dropped report {} with {} unsent messages",
                    dropped.number,
                    dropped.unsent.len()
                );
            }
        }
        if (no_more_reports || !more_to_make) && outbox.is_empty() {
            break;
        }

        // A fast producer sends once a request's worth waits, the last report is made, or the
        // next is not ready yet.
        let send_now = !as_fast_as_possible || !made_one;
        if send_now && !outbox.is_empty() && Instant::now() >= next_send_at {
            let sent = sender.send_front(&mut outbox, &mut totals, chatty);
            waiting_bytes = unsent_bytes(&outbox);
            report_outbox(&outbox);
            match sent {
                Ok(()) => {
                    if backoff.failures() > 0 {
                        info!(
                            "kafka reachable again after {} failed attempts; {} reports waiting",
                            backoff.failures(),
                            outbox.len()
                        );
                    }
                    backoff.reset();
                }
                Err(SendError::Fatal(e)) => return (totals, outbox, Some(e)),
                Err(_) if shutdown.requested() => break,
                Err(problem) => {
                    totals.failed_attempts += 1;
                    let delay = backoff.next_delay();
                    error!(
                        "{problem}; retrying in {:.1} s ({} reports waiting)",
                        delay.as_secs_f64(),
                        outbox.len()
                    );
                    next_send_at = Instant::now() + delay;
                }
            }
            continue;
        }

        if as_fast_as_possible && make_now && outbox.is_empty() {
            continue; // `next` waited already
        }
        // Sleep until a report is due or a retry may go out, whichever comes first.
        let mut wake = Instant::now() + Duration::from_secs(1);
        if more_to_make && !as_fast_as_possible {
            wake = wake.min(due);
        }
        if !outbox.is_empty() {
            wake = wake.min(next_send_at);
        }
        shutdown.sleep(wake.saturating_duration_since(Instant::now()));
    }
    (totals, outbox, None)
}

/// Why a report was not sent whole.
enum SendError {
    /// Some messages were not acknowledged: back off and send them again.
    Retry(String),
    /// Retrying cannot help: the command stops.
    Fatal(KafkaError),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retry(problem) => f.write_str(problem),
            SendError::Fatal(e) => e.fmt(f),
        }
    }
}

/// The producer, and how many of the outbox's oldest messages its next request should carry.
struct Sender {
    producer: KafkaProducer,
    /// Messages refused by the last request, at the front of the outbox: the next request
    /// carries exactly these, so each partition's batch is the one the producer sealed and the
    /// broker recognises a copy it already stored. A request with other messages would make the
    /// producer give the batch up and start a new epoch, and a batch stored before the answer
    /// was lost would be stored twice.
    in_doubt: usize,
    /// Messages the producer sealed ahead while the last request was on the wire, now at the
    /// front of the outbox: the next request carries exactly these, so that it reuses their
    /// batches (more, from reports made since, would change the batches and seal them again).
    sealed_ahead: usize,
}

impl Sender {
    fn new(producer: KafkaProducer) -> Self {
        Sender {
            producer,
            in_doubt: 0,
            sealed_ahead: 0,
        }
    }

    /// Sends the oldest unsent messages, from as many reports as fit in one request
    /// ([`SEND_BYTES`]; always at least one message), or exactly those the last request left
    /// in doubt, or exactly those sealed ahead. The messages after them, up to a request's
    /// worth, are sealed ahead while the request is on the wire. Messages acknowledged are
    /// logged and removed and reports left with none are popped, so a partial failure re-sends
    /// only the others.
    fn send_front(
        &mut self,
        outbox: &mut Outbox<PendingReport>,
        totals: &mut Totals,
        chatty: bool,
    ) -> Result<(), SendError> {
        let most = match (self.in_doubt, self.sealed_ahead) {
            (0, 0) => usize::MAX,
            (0, ahead) => ahead,
            (in_doubt, _) => in_doubt,
        };
        self.sealed_ahead = 0;
        let Taken { from, records } = take_front(outbox, SEND_BYTES, most);
        if records.is_empty() {
            return Ok(());
        }
        let taken = records.len();
        let next = take_after(outbox, taken, SEND_BYTES);
        let next_count = next.len();
        let started = Instant::now();
        let outcomes = self.producer.send(records, next).map_err(|e| {
            telemetry::producer().send_failed(taken, started.elapsed());
            if e.is_fatal() {
                SendError::Fatal(e)
            } else {
                SendError::Retry(e.to_string())
            }
        })?;
        let level = if chatty {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        let (failed, failures) = settle(outbox, &from, outcomes, |m, report, d| {
            totals.sent += 1;
            log::log!(
                level,
                "sent {} to partition {} at offset {} (report {report}, cpu {:.2} %, mem {:.2} %, errors {})",
                m.server_id,
                d.partition,
                d.offset,
                m.metrics.cpu_percent,
                m.metrics.memory_percent,
                m.metrics.error_count
            );
        });
        self.in_doubt = failed;
        telemetry::producer().sent(taken, taken.saturating_sub(failed), started.elapsed());
        if failed == 0 {
            self.sealed_ahead = next_count;
            return Ok(());
        }
        let more = if failed > failures.len() {
            format!("; {} more", failed - failures.len())
        } else {
            String::new()
        };
        Err(SendError::Retry(format!(
            "kafka produce failed for {failed} messages ({}{more})",
            failures.join("; ")
        )))
    }
}

/// What waits in the outbox, for `/metrics`.
fn report_outbox(outbox: &Outbox<PendingReport>) {
    let unsent = outbox.iter().map(|r| r.unsent.len()).sum();
    telemetry::producer().outbox(outbox.len(), unsent);
}

/// The messages of one Produce request.
struct Taken {
    /// Where they come from: (report index in the outbox, messages from its front).
    from: Vec<(usize, usize)>,
    /// As (key, value) records, in outbox order.
    records: Vec<(Bytes, Bytes)>,
}

/// The oldest unsent messages, up to `budget` payload bytes (at least one) and `most` messages.
/// After [`settle`], the messages a request had refused are the oldest ones, in order.
fn take_front(outbox: &Outbox<PendingReport>, budget: usize, most: usize) -> Taken {
    let mut from: Vec<(usize, usize)> = Vec::new();
    let records = take(outbox, 0, budget, most, |i| match from.last_mut() {
        Some((report, n)) if *report == i => *n += 1,
        _ => from.push((i, 1)),
    });
    Taken { from, records }
}

/// The records of the unsent messages after the oldest `skip`, up to `budget` payload bytes:
/// the request after the one [`take_front`] took, if that one is stored whole.
fn take_after(outbox: &Outbox<PendingReport>, skip: usize, budget: usize) -> Vec<(Bytes, Bytes)> {
    take(outbox, skip, budget, usize::MAX, |_| {})
}

/// The unsent messages after the oldest `skip`, in outbox order, up to `budget` payload bytes
/// (at least one) and `most` messages, as records; `taken_from(report index)` hears of each.
fn take(
    outbox: &Outbox<PendingReport>,
    skip: usize,
    budget: usize,
    most: usize,
    mut taken_from: impl FnMut(usize),
) -> Vec<(Bytes, Bytes)> {
    let mut records = Vec::new();
    let mut bytes = 0;
    let unsent = outbox
        .iter()
        .enumerate()
        .flat_map(|(i, report)| report.unsent.iter().map(move |u| (i, u)));
    for (i, u) in unsent.skip(skip) {
        if records.len() == most || (!records.is_empty() && bytes + u.bytes() > budget) {
            break;
        }
        bytes += u.bytes();
        records.push((u.key.clone(), u.json.clone()));
        taken_from(i);
    }
    records
}

/// Applies the outcomes of the records [`take_front`] took, in order: each acknowledged
/// message is handed to `on_sent` (with its report's number) and removed, each refused one
/// stays where it was, ahead of its report's untaken messages; a message without an outcome
/// counts as refused, never as sent. Reports left empty at the front are popped. Returns how
/// many were refused and the first three reasons.
fn settle<D, E: std::fmt::Display>(
    outbox: &mut Outbox<PendingReport>,
    taken: &[(usize, usize)],
    outcomes: Vec<Result<D, E>>,
    mut on_sent: impl FnMut(&MetricMessage, u64, &D),
) -> (usize, Vec<String>) {
    let mut outcomes = outcomes.into_iter();
    let mut failures = Vec::new();
    let mut failed = 0;
    let mut taken = taken.iter().peekable();
    for (index, report) in outbox.iter_mut().enumerate() {
        let Some(&(_, n)) = taken.next_if(|t| t.0 == index) else {
            continue;
        };
        let rest = report.unsent.split_off(n.min(report.unsent.len()));
        let mut still_unsent = Vec::new();
        for u in report.unsent.drain(..) {
            match outcomes.next() {
                Some(Ok(d)) => on_sent(&u.message, report.number, &d),
                refused => {
                    let problem = match refused {
                        Some(Err(problem)) => problem.to_string(),
                        _ => "no answer for this message".to_string(),
                    };
                    failed += 1;
                    if failures.len() < 3 {
                        failures.push(format!(
                            "{} of report {}: {problem}",
                            u.message.server_id, report.number
                        ));
                    }
                    still_unsent.push(u);
                }
            }
        }
        still_unsent.extend(rest);
        report.unsent = still_unsent;
    }
    while outbox.front_mut().is_some_and(|r| r.unsent.is_empty()) {
        outbox.pop_front();
    }
    (failed, failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::now_utc;
    use crate::simulate::Fleet;

    /// The id the test outbox gives server `server`'s message of report `report`.
    fn rid(report: u64, server: u64) -> uuid::Uuid {
        uuid::Uuid::from_u128(u128::from(report) << 64 | u128::from(server))
    }

    /// An outbox of `reports` reports of the servers `s0..s{servers}`, numbered from 1; each
    /// message's id is [`rid`]`(report, server)`.
    fn outbox(reports: u64, servers: usize) -> Outbox<PendingReport> {
        let names: Vec<String> = (0..servers).map(|i| format!("s{i}")).collect();
        let mut fleet = Fleet::new(names, Some(7));
        let mut outbox = Outbox::new(OUTBOX_REPORTS);
        for number in 1..=reports {
            let mut i = 0;
            let report = fleet.report(now_utc(), || {
                i += 1;
                rid(number, i - 1)
            });
            outbox.push(PendingReport {
                number,
                unsent: Unsent::report(report, &[]),
            });
        }
        outbox
    }

    fn ids(outbox: &Outbox<PendingReport>) -> Vec<Vec<uuid::Uuid>> {
        outbox
            .iter()
            .map(|r| r.unsent.iter().map(|u| u.message.message_uuid).collect())
            .collect()
    }

    /// The records sealed ahead are the ones the next request takes once this one is stored:
    /// the messages right after it, in order, across reports, within the budget.
    #[test]
    fn the_next_request_is_the_messages_after_this_one_in_order() {
        let mut o = outbox(3, 4);
        let one = o.iter().next().unwrap().unsent[0].bytes();
        let Taken { from, records } = take_front(&o, 3 * one, usize::MAX);
        assert_eq!(records.len(), 3);
        // Five within the budget, from the last of report 1 into report 2.
        let next = take_after(&o, records.len(), 5 * one);
        let ids_of = |records: &[(Bytes, Bytes)]| -> Vec<uuid::Uuid> {
            records
                .iter()
                .map(|(_, v)| uuid_of(std::str::from_utf8(v).unwrap()).parse().unwrap())
                .collect()
        };
        let want = [rid(1, 3), rid(2, 0), rid(2, 1), rid(2, 2), rid(2, 3)];
        assert_eq!(ids_of(&next), want);
        // This request stored whole: the next takes exactly those, the same slices.
        settle(&mut o, &from, vec![Ok::<(), &str>(()); 3], |_, _, _| {});
        let t = take_front(&o, usize::MAX, next.len());
        assert_eq!(ids_of(&t.records), want);
        assert!(t
            .records
            .iter()
            .zip(&next)
            .all(|(a, b)| a.1.as_ptr() == b.1.as_ptr()));
        assert_eq!(t.from, [(0, 1), (1, 4)]);
        // Nothing after the last message.
        assert!(take_after(&o, 9, usize::MAX).is_empty());
        assert_eq!(take_after(&o, 8, usize::MAX).len(), 1);
    }

    #[test]
    fn a_request_takes_whole_reports_and_the_front_of_the_next_within_the_budget() {
        let o = outbox(3, 4);
        let one = o.iter().next().unwrap().unsent[0].bytes();
        // Room for six messages: report 1 whole, two of report 2.
        let t = take_front(&o, 6 * one + one / 2, usize::MAX);
        assert_eq!(t.from, [(0, 4), (1, 2)]);
        assert_eq!(t.records.len(), 6);
        assert_eq!(t.records[4].0, "s0");
        // A budget below one message still takes one.
        let t = take_front(&o, 1, usize::MAX);
        assert_eq!((t.from, t.records.len()), (vec![(0, 1)], 1));
        // Everything fits.
        assert_eq!(
            take_front(&o, usize::MAX, usize::MAX).from,
            [(0, 4), (1, 4), (2, 4)]
        );
    }

    #[test]
    fn acknowledged_messages_leave_and_refused_ones_stay_in_order() {
        let mut o = outbox(3, 3);
        let Taken { from, records } = take_front(&o, usize::MAX, usize::MAX);
        assert_eq!(records.len(), 9);
        // Report 1 fully stored, report 2's middle message refused, report 3's last refused.
        let outcomes: Vec<Result<u32, String>> = (0..9)
            .map(|i| {
                if i == 4 || i == 8 {
                    Err(format!("refused {i}"))
                } else {
                    Ok(i)
                }
            })
            .collect();
        let mut sent = Vec::new();
        let (failed, failures) = settle(&mut o, &from, outcomes, |m, report, d| {
            sent.push((m.message_uuid, report, *d))
        });
        assert_eq!(failed, 2);
        assert_eq!(
            failures,
            ["s1 of report 2: refused 4", "s2 of report 3: refused 8"]
        );
        assert_eq!(sent.len(), 7);
        assert_eq!(sent[3], (rid(2, 0), 2, 3));
        // Report 1 is gone; 2 and 3 keep only what was refused.
        assert_eq!(ids(&o), [vec![rid(2, 1)], vec![rid(3, 2)]]);
    }

    #[test]
    fn the_request_after_a_refusal_carries_exactly_the_refused_messages() {
        let mut o = outbox(2, 3);
        let Taken { from, .. } = take_front(&o, usize::MAX, usize::MAX);
        let outcomes: Vec<Result<(), String>> = (0..6)
            .map(|i| {
                if i == 1 || i == 4 {
                    Err("lost".into())
                } else {
                    Ok(())
                }
            })
            .collect();
        let (failed, _) = settle(&mut o, &from, outcomes, |_, _, _| {});
        assert_eq!(failed, 2);
        // A report made meanwhile waits behind them: the retry is the same two messages.
        let newer = outbox(3, 3).pop_front().unwrap();
        o.push(PendingReport { number: 3, ..newer });
        let t = take_front(&o, usize::MAX, failed);
        let ids: Vec<uuid::Uuid> = t
            .records
            .iter()
            .map(|(_, v)| uuid_of(std::str::from_utf8(v).unwrap()).parse().unwrap())
            .collect();
        assert_eq!(ids, [rid(1, 1), rid(2, 1)]);
        assert_eq!(t.from, [(0, 1), (1, 1)]);
    }

    fn uuid_of(json: &str) -> &str {
        let at = json.find("\"message_uuid\":\"").unwrap() + 16;
        &json[at..at + json[at..].find('"').unwrap()]
    }

    #[test]
    fn messages_not_taken_or_without_an_outcome_are_never_counted_as_sent() {
        let mut o = outbox(2, 3);
        let Taken { from, records } = take_front(&o, usize::MAX, usize::MAX);
        assert_eq!(records.len(), 6);
        // Only four answers for six records: the last two stay, as refused.
        let outcomes: Vec<Result<(), String>> = vec![Ok(()); 4];
        let mut sent = 0;
        let (failed, failures) = settle(&mut o, &from, outcomes, |_, _, _| sent += 1);
        assert_eq!((sent, failed), (4, 2));
        assert!(failures[0].contains("no answer"), "{failures:?}");
        assert_eq!(ids(&o), [vec![rid(2, 1), rid(2, 2)]]);

        // A request that took part of a report leaves the rest of it, behind what was refused.
        let mut o = outbox(1, 4);
        let from = take_front(&o, 1, usize::MAX).from;
        let (failed, _) = settle(&mut o, &from, vec![Err::<(), _>("x")], |_, _, _| {});
        assert_eq!(failed, 1);
        assert_eq!(ids(&o), [vec![rid(1, 0), rid(1, 1), rid(1, 2), rid(1, 3)]]);
        // A report emptied behind one that is not stays until the front clears.
        let mut o = outbox(2, 1);
        let from = take_front(&o, usize::MAX, usize::MAX).from;
        settle(&mut o, &from, vec![Err("x"), Ok(())], |_, _, _| {});
        assert_eq!(ids(&o), [vec![rid(1, 0)], Vec::new()]);
        let t = take_front(&o, usize::MAX, usize::MAX);
        assert_eq!((t.from, t.records.len()), (vec![(0, 1)], 1));
        settle(&mut o, &[(0, 1)], vec![Ok::<(), &str>(())], |_, _, _| {});
        assert!(o.is_empty());
    }
}
