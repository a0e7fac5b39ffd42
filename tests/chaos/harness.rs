//! What every scenario shares: [`Chaos`], one scenario's sandbox (its database reached with a
//! user and password, I4), its runs of the binary, its random choices (`CHAOS_SEED` replays
//! them) and its figures; the settings every scenario uses; the last run to idle.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson, Document};

use crate::common::kafka_tools::topic_id;
use crate::common::kcat::KcatBytes;
use crate::common::outages::{wait_for_no_other_tests, ServicesRestorer};
use crate::common::services::{repo_root, Sandbox};
use crate::invariants::{check_stores, Expect, Figures};
use crate::runs::{log_span, End, Ended, Proc};

/// Valid messages per window (the default `--window-size`).
pub const WINDOW: usize = 20;
/// The database user and password every consumer connects with (I4).
pub const USER: &str = "chaos";
pub const PASSWORD: &str = "Chaos-Secret-7f3a9";
/// Where "too large to store" starts: a dead letter keeps only the head of such a payload.
pub const TOO_LARGE: usize = 8 * 1024 * 1024;
pub const MIB: usize = 1024 * 1024;

/// Ten servers: their keys land on all three partitions of a topic.
pub fn fleet() -> String {
    (1..=10)
        .map(|i| format!("srv{i:02}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sleeps `secs` seconds (none when negative).
pub fn sleep(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
}

/// The services' URI with [`USER`] and [`PASSWORD`] (FerretDB without authentication, as `make
/// up` runs it, accepts any with PLAIN), so that every scenario checks that no output holds the
/// password. Services whose URI holds credentials already, or is not `mongodb://`, break that
/// precondition: the scenario says so instead of leaving the check out.
fn secret_uri(base: &str) -> String {
    let rest = base
        .strip_prefix("mongodb://")
        .filter(|rest| !rest.contains('@'))
        .unwrap_or_else(|| {
            panic!(
                "the services' MONGODB_URI already holds credentials or is not mongodb://: the \
                 fault suite needs the services of `make up` (FerretDB without authentication)"
            )
        });
    let (hosts, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let tail = tail.strip_prefix('/').unwrap_or(tail);
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let mut options = vec!["authMechanism=PLAIN", "authSource=$external"];
    options.extend(query.split('&').filter(|o| !o.is_empty()));
    format!(
        "mongodb://{USER}:{PASSWORD}@{hosts}/{path}?{}",
        options.join("&")
    )
}

/// One scenario: its sandbox, its runs, its random choices and its figures.
pub struct Chaos {
    /// Brings the services back before the sandbox is cleaned up (fields drop in order).
    pub restorer: Option<ServicesRestorer>,
    pub sb: Sandbox,
    pub label: String,
    pub seed: u64,
    pub rng: fastrand::Rng,
    pub ended: Vec<Ended>,
    pub restarts: usize,
    pub started: Instant,
    pub recovery: Vec<String>,
    pub notes: Vec<String>,
    pub topic_id: std::sync::OnceLock<String>,
}

impl Chaos {
    /// A scenario named `label` (its figures: `target/chaos/<label>.txt`), its seed from
    /// `CHAOS_SEED` or drawn and printed.
    pub fn new(label: &str) -> Chaos {
        let mut sb = Sandbox::new(label);
        sb.mongodb_uri = secret_uri(&sb.mongodb_uri);
        let seed = std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        eprintln!(
            "chaos {label}: seed {seed} (CHAOS_SEED={seed} replays it), logs in {}",
            sb.dir.display()
        );
        Chaos {
            restorer: None,
            sb,
            label: label.to_string(),
            seed,
            rng: fastrand::Rng::with_seed(seed),
            ended: Vec::new(),
            restarts: 0,
            started: Instant::now(),
            recovery: Vec::new(),
            notes: Vec::new(),
            topic_id: std::sync::OnceLock::new(),
        }
    }

    /// For scenarios that stop a shared service: waits until no one else runs tests, and
    /// brings every service back when the scenario ends, whatever happens.
    pub fn exclusive(label: &str) -> Chaos {
        let limit = std::env::var("CHAOS_WAIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1800);
        wait_for_no_other_tests(Duration::from_secs(5), Duration::from_secs(limit));
        let mut c = Chaos::new(label);
        c.restorer = Some(ServicesRestorer);
        c
    }

    /// Starts a run of the binary, named `name` in the figures and the logs.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        Proc::spawn(&self.sb, name, args)
    }

    /// Ends a run the way `how` says and checks its exit (I4).
    pub fn end(&mut self, mut p: Proc, how: End) {
        let signalled = Instant::now();
        let status = match how {
            End::Kill => {
                p.signal("KILL");
                p.wait(Duration::from_secs(10))
            }
            End::Term => {
                p.signal("TERM");
                p.wait(Duration::from_secs(60))
            }
            End::Exit(limit) => p.wait(limit),
        };
        let stop_secs = (!matches!(how, End::Exit(_))).then(|| signalled.elapsed().as_secs_f64());
        let expected = match how {
            End::Kill => status.signal() == Some(9),
            End::Term | End::Exit(_) => status.code() == Some(0),
        };
        assert!(
            expected,
            "{}: {how:?} ended with {status:?}; log tail:\n{}",
            p.name,
            p.tail(40)
        );
        if how == End::Term {
            let log = p.log_text();
            assert!(
                log.contains(" stopped:") || log.contains("stopped before"),
                "{} logged no totals after SIGTERM:\n{}",
                p.name,
                p.tail(20)
            );
        }
        let consumer = p.name.starts_with("consume");
        self.ended.push(Ended {
            name: p.name.clone(),
            output: p.output(),
            peak_kib: p.rss.finish(),
            consumer,
            secs: p.started.elapsed().as_secs_f64(),
            stop_secs,
            startup_secs: log_span(&p.log_text(), "starting at offset"),
        });
    }

    /// `metricsctl produce` to completion: `reports` reports of the ten servers.
    pub fn produce(&mut self, name: &str, reports: u32, interval: &str) {
        let seed = self.rng.u64(..).to_string();
        let p = self.spawn(
            name,
            &[
                "produce",
                "--interval",
                interval,
                "--count",
                &reports.to_string(),
                "--servers",
                &fleet(),
                "--seed",
                &seed,
            ],
        );
        self.end(p, End::Exit(Duration::from_secs(600)));
    }

    /// A collection's document count; `None` when the database does not answer.
    pub fn count(&self, collection: &str) -> Option<u64> {
        fast_count(&self.sb.db(), collection)
    }

    /// Documents in raw, dlq and kpis, counted one by one (`count_documents`, not the
    /// statistics [`fast_count`] reads) and for sure: a count that fails fails the test, so two
    /// failed counts cannot compare equal.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.sb.count("raw"),
            self.sb.count("dlq"),
            self.sb.count("kpis"),
        )
    }

    /// Records handled so far: stored or dead-lettered.
    pub fn progress(&self) -> u64 {
        self.count("raw").unwrap_or(0) + self.count("dlq").unwrap_or(0)
    }

    /// The highest peak RSS of the consumer runs so far, in MiB.
    pub fn peak_consumer_mib(&self) -> f64 {
        self.ended
            .iter()
            .filter(|e| e.consumer)
            .map(|e| e.peak_kib)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    }

    /// I4: no output holds the password, none a panic; the consumers show the redacted URI.
    pub fn check_outputs(&self) {
        for e in &self.ended {
            assert!(
                !e.output.contains(PASSWORD),
                "{}: the database password is in the output",
                e.name
            );
            assert!(
                !e.output.contains("panicked"),
                "{} panicked:\n{}",
                e.name,
                e.output
            );
        }
        let redacted = format!("{USER}:****@");
        assert!(
            self.ended
                .iter()
                .filter(|e| e.consumer)
                .any(|e| e.output.contains(&redacted)),
            "no consumer logged the redacted URI ({redacted})"
        );
    }

    /// Copies the runs' logs to `target/chaos/<label>/` (the sandbox's are removed with it).
    pub fn keep_logs(&self) {
        let dir = repo_root().join("target/chaos").join(&self.label);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(entries) = std::fs::read_dir(&self.sb.dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(e.path(), dir.join(e.file_name()));
                }
            }
        }
    }

    /// The topic's id, as Kafka's own tool describes it (once: the tool is a JVM).
    pub fn topic_id(&self) -> String {
        self.topic_id
            .get_or_init(|| topic_id(&self.sb.brokers, &self.sb.topic))
            .clone()
    }

    /// The invariants, then the figures written to `target/chaos/<label>.txt`.
    pub fn finish(&mut self, expect: &dyn Fn(&KcatBytes) -> Expect) -> Figures {
        self.check_outputs();
        let f = check_stores(&self.sb, &self.topic_id(), expect);
        let mut lines = vec![format!(
            "scenario {}: seed {}, {:.0} s; records {} (valid {}, invalid {}); stored {}, \
             duplicates stored {}, lost {}; windowed {} in {} windows (open window {}, streams \
             {}); dead-lettered {} (duplicate events {}, refused by the database {}); restarts \
             {}; peak consumer RSS {:.1} MiB",
            self.label,
            self.seed,
            self.started.elapsed().as_secs_f64(),
            f.records,
            f.valid_records,
            f.invalid_records,
            f.stored,
            f.duplicates_stored,
            f.lost,
            f.windowed,
            f.windows,
            f.open,
            f.streams,
            f.dead_lettered,
            f.duplicate_events,
            f.refused,
            self.restarts,
            self.peak_consumer_mib(),
        )];
        if !f.by_reason.is_empty() {
            lines.push(format!(
                "  dead letters by reason: {}",
                f.by_reason
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let consumers: Vec<&Ended> = self.ended.iter().filter(|e| e.consumer).collect();
        if !consumers.is_empty() {
            let stops: Vec<f64> = consumers.iter().filter_map(|e| e.stop_secs).collect();
            let startups: Vec<f64> = consumers.iter().filter_map(|e| e.startup_secs).collect();
            lines.push(format!(
                "  consumer runs: {}, {:.1} s on average; start to first position: {}; signal \
                 to exit: {}",
                consumers.len(),
                consumers.iter().map(|e| e.secs).sum::<f64>() / consumers.len() as f64,
                average_and_most(&startups),
                average_and_most(&stops),
            ));
        }
        for r in &self.recovery {
            lines.push(format!("  recovery: {r}"));
        }
        for n in self.notes.iter().chain(&f.notes) {
            lines.push(format!("  note: {n}"));
        }
        let report = lines.join("\n");
        eprintln!("FIGURES {report}");
        let dir = repo_root().join("target/chaos");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{}.txt", self.label)), report + "\n");
        self.keep_logs();
        f
    }
}

/// Seconds on average and at most, for the figures ("-" for none).
fn average_and_most(secs: &[f64]) -> String {
    if secs.is_empty() {
        return "-".to_string();
    }
    format!(
        "{:.2} s on average, {:.2} s at most",
        secs.iter().sum::<f64>() / secs.len() as f64,
        secs.iter().copied().fold(0.0, f64::max)
    )
}

/// A collection's document count from `collStats` (FerretDB answers it at once, where
/// `count_documents` scans every document: seconds for a few ten thousand raw documents,
/// slowing the consumer under test when polled); `count_documents` where it is not answered.
pub fn fast_count(db: &mongodb::sync::Database, collection: &str) -> Option<u64> {
    if let Ok(stats) = db.run_command(doc! {"collStats": collection}).run() {
        match stats.get("count") {
            Some(Bson::Int32(n)) => return Some(*n as u64),
            Some(Bson::Int64(n)) => return Some(*n as u64),
            Some(Bson::Double(n)) => return Some(*n as u64),
            _ => {}
        }
    }
    db.collection::<Document>(collection)
        .count_documents(doc! {})
        .run()
        .ok()
}

/// The last run: to idle (caught up to the high watermarks and nothing new for 5 s), within
/// 2 min for the fast versions (`quick_*`, in `make test`), 10 min for the others.
pub fn run_to_idle(c: &mut Chaos, name: &str, args: &[&str]) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--exit-when-idle", "5"]);
    let p = c.spawn(name, &all);
    let limit = if c.label.starts_with("quick_") {
        120
    } else {
        600
    };
    c.end(p, End::Exit(Duration::from_secs(limit)));
}

/// A second run to idle changes nothing in the stores.
pub fn rerun_changes_nothing(c: &mut Chaos, args: &[&str]) {
    let before = c.counts();
    run_to_idle(c, "consume-again", args);
    let after = c.counts();
    assert_eq!(
        before, after,
        "a second run changed the stores (raw, dlq, kpis)"
    );
    let log = &c.ended.last().unwrap().output;
    assert!(
        log.contains("(0 stored, "),
        "the second run stored nothing new:\n{log}"
    );
}
