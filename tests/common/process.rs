//! Processes the tests start: the binary run to completion ([`Sandbox::run`]) or in the
//! background ([`Background`]), any tool run with a time limit ([`run_tool`]), signals, and
//! polling for something to happen within a limit.
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::services::Sandbox;

/// Waits up to `limit` for a child with piped output to finish; past it the child is killed and
/// the test fails, showing what it wrote.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "metricsctl did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal (`STOP`, `CONT`, `KILL`, `TERM`, ...) to a process by pid with `kill`.
pub fn signal_pid(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Sends a signal (`STOP`, `CONT`, `KILL`, `TERM`, ...) to a child process.
pub fn signal(child: &Child, name: &str) {
    signal_pid(child.id(), name);
}

/// Sends SIGTERM to a child process.
pub fn terminate(child: &Child) {
    signal(child, "TERM");
}

/// Bytes a process wrote, as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a run succeeded, showing its output if not.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A `metricsctl` process running in the background, its log (stderr) in a file so it can never
/// block on a full pipe. Killed when dropped if still running (a failed test leaves nothing).
pub struct Background {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Sandbox {
    /// Runs the binary to completion within `limit`, returning its output.
    pub fn run(&self, args: &[&str], limit: Duration) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn metricsctl");
        wait_with_limit(child, limit)
    }

    /// Starts the binary in the background; its stderr goes to `<dir>/<name>.log`.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Background {
        self.spawn_with(name, args, &[])
    }

    /// [`Sandbox::spawn`] with more environment variables (a log filter, say).
    pub fn spawn_with(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Background {
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .command(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn metricsctl");
        Background {
            child,
            log,
            name: name.to_string(),
        }
    }
}

impl Background {
    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last `n` lines, for assertion messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, then waits up to `limit` for the exit; returns the exit code (None: a signal).
    pub fn stop(&mut self, limit: Duration) -> Option<i32> {
        terminate(&self.child);
        self.wait_exit(limit)
    }

    /// Waits up to `limit` for the process to end by itself (killed and reported past it);
    /// returns the exit code (None: a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not stop within {limit:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `probe` every `every` until it returns `Some`, or `limit` passes (then `None`).
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// The time stamp that starts a log line, in unix seconds.
pub fn line_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let t =
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// Seconds since the Unix epoch, with sub-millisecond precision.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Runs a command to completion within `limit` (killed and reported past it).
pub fn run_tool(mut command: Command, input: Option<&[u8]>, limit: Duration) -> Output {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{command:?}");
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    // Output is drained by threads so a large answer (a whole topic) cannot block the child.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write to the tool's stdin");
    }
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_reader.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {limit:?}; stderr:\n{}",
                text(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}
