//! One run of the binary in a scenario: in the background, its stdout and stderr in files, its
//! peak memory watched; how it is to end ([`End`]) and what is kept of it once it has
//! ([`Ended`]).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::common::process::{line_time, signal_pid, text};
use crate::common::rss::{watch_peak_rss, PeakRss};
use crate::common::services::Sandbox;

/// A run of the binary in the background, its stdout in `<dir>/<name>.out`, its stderr in
/// `<dir>/<name>.log`. SIGKILLed when dropped if still running.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub out: PathBuf,
    pub rss: PeakRss,
    pub status: Option<ExitStatus>,
    pub started: Instant,
}

impl Proc {
    /// Starts `metricsctl ARGS...` with the sandbox's settings.
    pub fn spawn(sb: &Sandbox, name: &str, args: &[&str]) -> Proc {
        Proc::spawn_env(sb, name, args, &[])
    }

    /// The same with environment variables set on top of the sandbox's.
    pub fn spawn_env(sb: &Sandbox, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = sb.dir.join(format!("{name}.log"));
        let out = sb.dir.join(format!("{name}.out"));
        let child = sb
            .command(args)
            .envs(env.iter().copied())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn metricsctl");
        let rss = watch_peak_rss(child.id());
        Proc {
            name: name.to_string(),
            child,
            log,
            out,
            rss,
            status: None,
            started: Instant::now(),
        }
    }

    /// True while the process runs (its exit status is kept once it ended).
    pub fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.is_none()
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything the process wrote, stdout then stderr.
    pub fn output(&self) -> String {
        let out = std::fs::read(&self.out).unwrap_or_default();
        let err = std::fs::read(&self.log).unwrap_or_default();
        format!("{}{}", text(&out), text(&err))
    }

    /// The last `n` lines of its stderr, each cut at 400 characters, for assertion messages.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.chars().take(400).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends a signal (`KILL`, `TERM`, ...), its peak memory read just before; it must still run.
    pub fn signal(&mut self, name: &str) {
        assert!(
            self.running(),
            "{} ended before the {name}: {:?}\n{}",
            self.name,
            self.status,
            self.tail(30)
        );
        self.rss.sample();
        signal_pid(self.child.id(), name);
    }

    /// Waits up to `limit` for the exit (SIGKILLed and reported past it).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        while self.running() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {limit:?}; log tail:\n{}",
                    self.name,
                    self.tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.status.expect("exited")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a run is ended, and so what its exit must be (I4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// SIGKILL: ended by signal 9.
    Kill,
    /// SIGTERM: exit code 0 within 60 s.
    Term,
    /// It exits by itself (`--exit-when-idle`, `--count`) with code 0 within the limit.
    Exit(Duration),
}

/// A finished run, kept for the output checks at the end.
pub struct Ended {
    pub name: String,
    pub output: String,
    pub peak_kib: u64,
    pub consumer: bool,
    /// From the start to the exit.
    pub secs: f64,
    /// From the signal to the exit.
    pub stop_secs: Option<f64>,
    /// From the consumer's first log line to its first "starting at offset" (connecting,
    /// joining the group, resuming from the store), as its log dates them.
    pub startup_secs: Option<f64>,
}

/// Seconds from a log's first line to its first line containing `to`.
pub fn log_span(log: &str, to: &str) -> Option<f64> {
    let start = log.lines().find_map(line_time)?;
    let end = log.lines().find(|l| l.contains(to)).and_then(line_time)?;
    Some(end - start)
}
