//! `metricsctl produce`: simulate the fleet and send each report to Kafka.
//!
//! Reports start on a fixed schedule (a slow send does not stretch the period). Reports that
//! cannot be sent wait in a bounded outbox while the sender backs off; when the outbox is full
//! the oldest report is dropped and counted. Each report is retried until every one of its
//! messages is acknowledged by all in-sync replicas.

use std::time::{Duration, Instant};

use log::{error, info, warn};
use uuid::Uuid;

use super::{now_utc, CommandError};
use crate::cli::ProduceArgs;
use crate::kafka::{KafkaError, KafkaProducer};
use crate::metric::MetricMessage;
use crate::outbox::Outbox;
use crate::retry::Backoff;
use crate::settings::{ProduceSettings, Sources};
use crate::shutdown::Shutdown;
use crate::simulate::Fleet;

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

/// A report, or what is left of it to send.
struct PendingReport {
    number: u64,
    unsent: Vec<Unsent>,
}

/// A message of a report and its JSON, made once when the report is made.
struct Unsent {
    message: MetricMessage,
    json: String,
}

impl Unsent {
    fn new(message: MetricMessage) -> Self {
        let json = message.to_json();
        Unsent { message, json }
    }

    fn bytes(&self) -> usize {
        self.message.server_id.len() + self.json.len()
    }
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
    info!(
        "producing to topic {} on {} (idempotent, compression {}): servers {}, a report every {} s{}",
        settings.topic,
        settings.brokers.join(","),
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
    let mut producer = KafkaProducer::new(
        settings.brokers.clone(),
        settings.topic.clone(),
        settings.compression,
        give_up.clone(),
    );
    let (mut totals, mut outbox, fatal) = produce_loop(&settings, &mut producer, &shutdown);
    if fatal.is_none() && !outbox.is_empty() {
        drain(&mut producer, &mut outbox, &mut totals, &give_up, &settings);
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
    producer: &mut KafkaProducer,
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
        if let Err(problem) = send_front(producer, outbox, totals, false) {
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
    producer: &mut KafkaProducer,
    shutdown: &Shutdown,
) -> (Totals, Outbox<PendingReport>, Option<KafkaError>) {
    let mut fleet = Fleet::new(settings.servers.clone(), settings.seed);
    let mut outbox: Outbox<PendingReport> = Outbox::new(OUTBOX_REPORTS);
    let mut totals = Totals::default();
    let mut backoff = Backoff::standard();
    let mut next_send_at = Instant::now();
    let started = Instant::now();
    let as_fast_as_possible = settings.interval.is_zero();
    // One line per message suits a report every few seconds; faster than that, the lines cost
    // more than the sends, so they move to debug and a summary is logged every 10 s.
    let chatty = settings.interval >= CHATTY_INTERVAL;
    let mut summary_at = Instant::now() + SUMMARY_EVERY;
    let mut sent_at_summary = 0;

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
        let more_to_make = settings.count.is_none_or(|c| totals.reports < c);
        // Report k starts at start + k * interval, whatever the previous sends cost.
        let due = started + settings.interval.saturating_mul(totals.reports as u32);
        // As fast as possible: reports are made until one request's worth waits (or the
        // outbox is half full, for fleets of a few servers), then sent together.
        let make_now = more_to_make
            && if as_fast_as_possible {
                outbox.len() < OUTBOX_REPORTS / 2 && unsent_bytes(&outbox) < SEND_BYTES
            } else {
                now >= due
            };
        if make_now {
            totals.reports += 1;
            let report = fleet.report(now_utc(), || Uuid::new_v4().to_string());
            let pending = PendingReport {
                number: totals.reports,
                unsent: report.into_iter().map(Unsent::new).collect(),
            };
            if let Some(dropped) = outbox.push(pending) {
                warn!(
                    "outbox full ({OUTBOX_REPORTS} reports): dropped report {} with {} unsent messages",
                    dropped.number,
                    dropped.unsent.len()
                );
            }
        }
        if !more_to_make && outbox.is_empty() {
            break;
        }

        // A fast producer sends once a request's worth waits or the last report is made.
        let send_now = !as_fast_as_possible || !make_now;
        if send_now && !outbox.is_empty() && Instant::now() >= next_send_at {
            match send_front(producer, &mut outbox, &mut totals, chatty) {
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

/// Sends the oldest unsent messages, from as many reports as fit in one request
/// ([`SEND_BYTES`]; always at least one message). Messages acknowledged are logged and removed
/// and reports left with none are popped, so a partial failure re-sends only the others.
fn send_front(
    producer: &mut KafkaProducer,
    outbox: &mut Outbox<PendingReport>,
    totals: &mut Totals,
    chatty: bool,
) -> Result<(), SendError> {
    // (report index in the outbox, messages taken from its front)
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut records: Vec<(String, String)> = Vec::new();
    let mut bytes = 0;
    'reports: for (i, report) in outbox.iter().enumerate() {
        let mut n = 0;
        for u in &report.unsent {
            if !records.is_empty() && bytes + u.bytes() > SEND_BYTES {
                if n > 0 {
                    taken.push((i, n));
                }
                break 'reports;
            }
            bytes += u.bytes();
            records.push((u.message.server_id.clone(), u.json.clone()));
            n += 1;
        }
        if n > 0 {
            taken.push((i, n));
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    let mut outcomes = producer
        .send(records)
        .map_err(|e| {
            if e.is_fatal() {
                SendError::Fatal(e)
            } else {
                SendError::Retry(e.to_string())
            }
        })?
        .into_iter();
    let level = if chatty {
        log::Level::Info
    } else {
        log::Level::Debug
    };
    let mut failures = Vec::new();
    let mut failed = 0;
    let mut reports = outbox.iter_mut();
    let mut index = 0;
    for (i, n) in taken {
        // `nth` counts from where the previous report was taken.
        let Some(report) = reports.by_ref().nth(i - index) else {
            break;
        };
        index = i + 1;
        let rest = report.unsent.split_off(n);
        let mut still_unsent = Vec::new();
        for (u, outcome) in report.unsent.drain(..).zip(outcomes.by_ref()) {
            match outcome {
                Ok(d) => {
                    totals.sent += 1;
                    let m = &u.message;
                    log::log!(
                        level,
                        "sent {} to partition {} at offset {} (report {}, cpu {:.2} %, mem {:.2} %, errors {})",
                        m.server_id,
                        d.partition,
                        d.offset,
                        report.number,
                        m.metrics.cpu_percent,
                        m.metrics.memory_percent,
                        m.metrics.error_count
                    );
                }
                Err(problem) => {
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
    drop(reports);
    while outbox.front_mut().is_some_and(|r| r.unsent.is_empty()) {
        outbox.pop_front();
    }
    if failed == 0 {
        Ok(())
    } else {
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
